"""The rebuild's progress line: events read of total, rate, time left; in place on a terminal, throttled lines
elsewhere."""

from __future__ import annotations

import io

from projections.__main__ import ProgressLine
from projections.adapters.rebuild import RebuildProgress


def test_progress_line_reports_count_rate_and_time_left() -> None:
    p = RebuildProgress(read=2_500, total=10_000, seconds=5.0)
    assert p.line() == "replaying: 2,500 of 10,000 events (25%), 500 events/s, about 15 s left"


def test_total_never_shows_below_what_was_read() -> None:
    # the broker's listed end offsets can undercount; the line must not claim 120%
    assert RebuildProgress(read=1_200, total=1_000, seconds=1.0).line().startswith(
        "replaying: 1,200 of 1,200 events (100%)")
    assert "time left unknown" in RebuildProgress(read=0, total=10, seconds=0.0).line()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_updated_in_place() -> None:
    out = _Tty()
    line = ProgressLine(out)
    line.update(RebuildProgress(1, 3, 1.0))
    line.update(RebuildProgress(2, 3, 2.0))
    line.say("rebuilt")
    text = out.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 2 and text.endswith("rebuilt\n")


def test_a_log_gets_throttled_lines() -> None:
    out = io.StringIO()
    line = ProgressLine(out, interval=3600)
    line.update(RebuildProgress(1, 3, 1.0))
    line.update(RebuildProgress(2, 3, 2.0))
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
