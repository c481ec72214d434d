"""`tally up` as a person runs it: embedded broker, every service, demo data, the banner, a crashed service
brought back, `tally projections rebuild` with no environment, a clean Ctrl-C."""

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
import psutil

from tally_shared import infra


def test_tally_up_serves_demo_data_and_stops_cleanly(tmp_path: Path, make_database: Callable[[], str]) -> None:
    ports = {f"TALLY_{svc}_PORT": str(infra.free_port())
             for svc in ("GATEWAY", "INGEST", "QUEUE_ROUTER", "SCORING", "PROJECTIONS", "CONSOLE", "INGEST_GRPC")}
    env = {**os.environ, **ports, "TALLY_HOME": str(tmp_path / "home"), "DATABASE_URL": make_database()}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the embedded broker, as on a laptop
    env.pop("TALLY_SECRET_KEY", None)  # tally up generates and keeps its own, as on a laptop
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
        assert len((tmp_path / "home" / "secret-key").read_text().strip()) >= 32
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
            # Every service's OpenAPI page at the base URL, each document naming that service's own paths.
            index = client.get("/api/docs")
            assert index.status_code == 200 and 'href="/api/docs/projections"' in index.text
            owned = {"ingest": "/api/public/ingestion", "scoring": "/api/public/score-configs",
                     "queue-router": "/api/public/annotation-queues", "projections": "/api/public/traces"}
            for service, path in owned.items():
                assert "swagger-ui" in client.get(f"/api/docs/{service}").text
                assert path in client.get(f"/api/docs/{service}/openapi.json").json()["paths"], service

            # A crash: tally up brings the service back by itself and says so on its terminal.
            ingest = next(c for c in psutil.Process(proc.pid).children(recursive=True)
                          if c.cmdline()[-2:] == ["ingest", "serve"])
            ingest.kill()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not any("ingest is back after" in line for line in lines):
                time.sleep(0.2)
            out = "".join(lines)
            assert "ingest exited (SIGKILL); restarting in 0.5 s" in out and "ingest is back after" in out, out
            assert client.get("/api/public/health").json()["status"] == "OK"

        # The rebuild finds the running stack's broker and database with nothing in the environment.
        unset = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "TALLY_SECRET_KEY")
        bare = {k: v for k, v in env.items() if k not in unset}
        rebuild = subprocess.run([sys.executable, "-m", "tally_cli.main", "projections", "rebuild"], env=bare,
                                 capture_output=True, text=True, timeout=180)
        assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
        progress = r"replaying: [\d,]+ of [\d,]+ events \(\d+%\), [\d,]+ events/s"
        assert re.search(progress, rebuild.stdout), rebuild.stdout
        assert "rebuilt:" in rebuild.stdout
        with httpx.Client(base_url=base.group(1), auth=(keys.group(1), keys.group(2)), timeout=10) as client:
            assert client.get("/api/public/traces").json()["data"], "the rebuilt read model lost the demo traces"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, "".join(lines[-40:])
        reader.join(5)
        assert "all services stopped" in "".join(lines)
        assert not (tmp_path / "home" / "stack.json").exists()  # no record of a stack that is gone
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
