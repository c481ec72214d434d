"""The stack's supervisor, with stand-in processes: a process that dies is started again after a backoff that
doubles, each exit and each recovery is announced, and a deliberate stop stays stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tally_cli.stack import BACKOFF_FIRST, Stack, StackConfig

pytestmark = pytest.mark.processes  # real child processes, killed and restarted


class _Stack(Stack):
    def _spawn(self, service: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)

    def _ready(self, client: httpx.Client, service: str) -> bool:
        return True


def _until(cond: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[_Stack, list[str]]]:
    lines: list[str] = []
    s = _Stack(StackConfig(database_url="", kafka_bootstrap="", secret_key="k", status_file=tmp_path / "s.json"),
               announce=lines.append)
    try:
        yield s, lines
    finally:
        s.stop(drain=False)


def test_a_killed_process_is_restarted_with_doubling_backoff(stack: tuple[_Stack, list[str]], tmp_path: Path) -> None:
    s, lines = stack
    s.start_service("ingest")
    first = s.procs["ingest"]
    s.kill("ingest")
    _until(lambda: s.procs["ingest"] is not first and s.procs["ingest"].poll() is None, "a new ingest process")
    _until(lambda: any("ingest is back after" in line for line in lines), "the recovery line")
    assert lines[0] == f"ingest exited (SIGKILL); restarting in {BACKOFF_FIRST:g} s"
    assert s.supervised["ingest"].restarts == 1

    second = s.procs["ingest"]
    os.kill(second.pid, signal.SIGTERM)  # not asked for by the stack: a crash like any other
    _until(lambda: s.procs["ingest"] is not second, "a third ingest process")
    assert f"ingest exited (SIGTERM); restarting in {BACKOFF_FIRST * 2:g} s" in lines
    assert json.loads((tmp_path / "s.json").read_text())["ingest"]["restarts"] == 2


def test_a_deliberate_stop_is_not_restarted(stack: tuple[_Stack, list[str]]) -> None:
    s, lines = stack
    s.start_service("scoring")
    s.start_service("projections")
    s.stop_service("scoring")
    s.kill("projections")
    # the supervisor has looked at both since: it restarted the crashed one and left the stopped one alone
    _until(lambda: s.supervised["projections"].restarts == 1, "projections restarted")
    assert "scoring" not in s.procs and s.status()["scoring"] == "stopped"
    assert not any(line.startswith("scoring") for line in lines)
