"""Start and stop the whole system as separate processes: every service, and the gateway in front.

Used by ``tally up`` and by the cross-service tests (``tally_stack`` fixture), so both run the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from tally_cli.routes import DEFAULT_PORTS, env_name
from tally_shared.identity.store import MIGRATIONS as IDENTITY_MIGRATIONS
from tally_shared.identity.store import SCHEMA as IDENTITY_SCHEMA
from tally_shared.infra import run_sync
from tally_shared.messaging import consumer_lag, ensure_topics
from tally_shared.migrations import upgrade
from tally_shared.topics import DEAD_LETTER, QUEUES, SCORE_COMMANDS, SCORE_CONFIGS, SCORES, TRACES, Topic

# service name -> python module, in start order (consumers before intake, so nothing waits on a late consumer)
MODULES: dict[str, str] = {
    "projections": "projections",
    "scoring": "scoring",
    "queue-router": "queue_router",
    "ingest": "ingest",
    "console": "console",
}

# Consumer groups and what they read: a clean stop waits until each has caught up.
CONSUMER_GROUPS: dict[str, Sequence[Topic]] = {
    "scoring": (SCORE_COMMANDS,),
    "queue-router": (TRACES, SCORES),
    "projections": (TRACES, SCORES, SCORE_CONFIGS, QUEUES),
    # projections' reader of the dead-letter topic (not a service: its group id is passed to projections)
    "projections-dead-letters": (DEAD_LETTER,),
}


@dataclass
class StackConfig:
    database_url: str
    kafka_bootstrap: str
    secret_key: str
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    log_dir: Path | None = None
    # For tests: suffix consumer groups so a test stack never shares offsets with another.
    group_suffix: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.ports[service]}"

    @property
    def base_url(self) -> str:
        return self.url("gateway")

    def group(self, name: str) -> str:
        return f"{name}{self.group_suffix}"


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- environment -------------------------------------------------------------------------------------------
    def env_for(self, service: str) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update(
            DATABASE_URL=c.database_url,
            KAFKA_BOOTSTRAP_SERVERS=c.kafka_bootstrap,
            TALLY_SECRET_KEY=c.secret_key,
            PYTHONUNBUFFERED="1",
        )
        for name, port in c.ports.items():
            env[f"TALLY_{env_name(name)}_URL"] = f"http://{c.host}:{port}"
        prefix = f"TALLY_{env_name(service)}_"
        env[prefix + "HOST"] = c.host
        env[prefix + "PORT"] = str(c.ports[service])
        if service in CONSUMER_GROUPS:
            env[prefix + "GROUP_ID"] = c.group(service)
        if service == "projections":
            env[prefix + "DEAD_LETTER_GROUP_ID"] = c.group("projections-dead-letters")
        env["TALLY_CONSOLE_API_URL"] = c.base_url
        env.update(c.extra_env)
        return env

    def _log(self, service: str) -> IO[bytes] | int:
        if self.config.log_dir is None:
            return subprocess.DEVNULL
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.config.log_dir / f"{service}.log", "ab")

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Topics and every schema's migrations (identity first: every service reads it)."""
        run_sync(ensure_topics(self.config.kafka_bootstrap))
        upgrade(IDENTITY_MIGRATIONS, self.config.database_url, IDENTITY_SCHEMA)
        procs = {
            svc: subprocess.Popen([sys.executable, "-m", mod, "migrate"], env=self.env_for(svc),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for svc, mod in MODULES.items()
            if svc != "console"
        }
        for svc, proc in procs.items():
            out, _ = proc.communicate(timeout=180)
            if proc.returncode != 0:
                raise RuntimeError(f"migrating {svc} failed:\n{out.decode(errors='replace')[-4000:]}")

    def start_service(self, service: str) -> None:
        if service == "gateway":
            cmd = [sys.executable, "-m", "tally_cli.gateway"]
        else:
            cmd = [sys.executable, "-m", MODULES[service], "serve"]
        out = self._log(service)
        self.procs[service] = subprocess.Popen(cmd, env=self.env_for(service), stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout: float = 90.0) -> None:
        for svc in MODULES:
            self.start_service(svc)
        self.start_service("gateway")
        self.wait_healthy(list(self.procs), timeout=timeout)

    def wait_healthy(self, services: Sequence[str], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(services)
        with httpx.Client(timeout=2) as client:
            while pending and time.monotonic() < deadline:
                for svc in sorted(pending):
                    proc = self.procs.get(svc)
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"{svc} exited with code {proc.returncode}; see its log")
                    path = "/api/public/health" if svc == "gateway" else "/healthz"
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(self.config.url(svc) + path).status_code == 200:
                            pending.discard(svc)
                if pending:
                    time.sleep(0.2)
        if pending:
            raise TimeoutError(f"not healthy after {timeout}s: {sorted(pending)}")

    def kill(self, service: str) -> None:
        """SIGKILL, as a crash would: no shutdown hooks run."""
        proc = self.procs.pop(service)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_service(self, service: str, timeout: float = 15.0) -> None:
        proc = self.procs.pop(service, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def wait_caught_up(self, timeout: float = 60.0, settle_rounds: int = 2) -> dict[str, int]:
        """Block until every consumer group has committed everything on its topics (lag 0, several rounds in
        a row, since one group's handling publishes events for another). Returns the last lag per group."""
        deadline = time.monotonic() + timeout
        clean = 0
        totals: dict[str, int] = {}
        while time.monotonic() < deadline:
            totals = run_sync(self._lags())
            clean = clean + 1 if all(v == 0 for v in totals.values()) else 0
            if clean >= settle_rounds:
                return totals
            time.sleep(0.5)
        raise TimeoutError(f"consumers still behind after {timeout}s: {totals}")

    async def _lags(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for group, topics in CONSUMER_GROUPS.items():
            lag = await consumer_lag(self.config.kafka_bootstrap, self.config.group(group), topics)
            out[group] = sum(lag.values())
        return out

    def stop(self, drain: bool = True, drain_timeout: float = 60.0) -> None:
        """Clean stop: close intake (gateway, then ingest), let every consumer catch up, then stop the rest."""
        self.stop_service("gateway")
        self.stop_service("ingest")
        if drain:
            with contextlib.suppress(Exception):
                self.wait_caught_up(timeout=drain_timeout)
        for svc in ("console", "queue-router", "scoring", "projections"):
            self.stop_service(svc)
        for svc in list(self.procs):
            self.stop_service(svc)
