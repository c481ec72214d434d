"""The lean decode of envelopes (``tally_shared.records``)."""

from __future__ import annotations

import random

import orjson

from tally_shared import content, records
from tally_shared.content import NUL_REPLACEMENT as NUL


def test_needs_clean_says_what_the_substring_search_says() -> None:
    rnd = random.Random(11)
    pieces = [b"a", b"\\", b"u", b"0", b"\\u0000", b"\\\\", b'\\"', b"x"]
    for _ in range(20_000):
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 80)))
        assert content.needs_clean(raw) == (b"\\u0000" in raw), raw
    # past the backslashes scanned one by one, the rest is searched whole
    many = b'\\"' * (content._ESCAPES_SCANNED + 3)
    assert not content.needs_clean(many)
    assert content.needs_clean(many + b"\\u0000")
    assert content.needs_clean(b"\\\\u0000")  # an escaped backslash before u0000: cleaned too, as before (a no-op)


def test_a_nul_in_a_trace_event_is_replaced() -> None:
    raw = orjson.dumps({"id": "7b1f3a52-1d7c-4c55-9f4e-0d6f1f0e1a11", "type": "TraceIngested", "version": 1,
                        "occurred_at": "2026-01-01T00:00:00+00:00", "project": "p", "key": "t",
                        "payload": {"trace_id": "t", "trace": {"id": "t", "input": 'say "hi"\n\x00'},
                                    "observations": []}})
    assert records.decode_event(raw).payload["trace"]["input"] == f'say "hi"\n{NUL}'
