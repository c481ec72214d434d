"""`tally up` as a person runs it: embedded broker, every service, demo data, the banner, a clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tally_shared import infra


def test_tally_up_serves_demo_data_and_stops_cleanly(tmp_path: Path, make_database: Callable[[], str]) -> None:
    ports = {f"TALLY_{svc}_PORT": str(infra.free_port())
             for svc in ("GATEWAY", "INGEST", "QUEUE_ROUTER", "SCORING", "PROJECTIONS", "CONSOLE")}
    env = {**os.environ, **ports, "TALLY_HOME": str(tmp_path / "home"), "DATABASE_URL": make_database()}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the embedded broker, as on a laptop
    proc = subprocess.Popen([sys.executable, "-m", "tally_cli.main", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(180), "tally up did not come up:\n" + "".join(lines[-60:])
        out = "".join(lines)
        base = re.search(r"Base URL \(APIs and console\): (\S+)", out)
        keys = re.search(r"Demo API keys: public (\S+)\s+secret (\S+)", out)
        assert base and keys, out
        with httpx.Client(base_url=base.group(1), auth=(keys.group(1), keys.group(2)), timeout=10) as client:
            assert client.get("/api/public/health").json()["status"] == "OK"
            deadline = time.monotonic() + 30
            traces: list[object] = []
            while time.monotonic() < deadline and not traces:
                traces = client.get("/api/public/traces").json().get("data", [])
                time.sleep(0.5)
            assert traces, "demo traces never reached the projections"
            login = client.get("/login")
            # A new user learns from the sign-in page itself which demo account to use.
            assert login.status_code == 200 and "alice@demo.tally" in login.text and "tally-demo" in login.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, "".join(lines[-40:])
        reader.join(5)
        assert "all services stopped" in "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
