"""Start and stop the whole system as separate processes: every service, and the gateway in front.

Used by ``tally up`` and by the cross-service tests (``tally_stack`` fixture), so both run the same way.

Every process the stack starts is supervised: one that exits without being asked to (a crash, a SIGKILL, the
OOM killer) is started again after a backoff that doubles from 0.5 s to 10 s and resets once a process has
stayed up for a while. Each exit and each recovery is announced (a line on ``tally up``'s terminal). Only
``stop_service``/``stop`` end a process for good.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from tally_cli.routes import DEFAULT_PORTS, EXTRA_PORTS, env_name
from tally_shared.identity.store import MIGRATIONS as IDENTITY_MIGRATIONS
from tally_shared.identity.store import SCHEMA as IDENTITY_SCHEMA
from tally_shared.infra import run_sync
from tally_shared.lag import consumer_lag
from tally_shared.messaging import ensure_topics
from tally_shared.migrations import upgrade
from tally_shared.topics import DATASETS, DEAD_LETTER, QUEUES, SCORE_COMMANDS, SCORE_CONFIGS, SCORES, TRACES, Topic

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
    "scoring": (SCORE_COMMANDS, TRACES),
    "queue-router": (TRACES, SCORES),
    "projections": (TRACES, SCORES, SCORE_CONFIGS, QUEUES, DATASETS),
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
    # Where the supervisor keeps each service's state (running / restarting / stopped, restarts), for the
    # gateway's health to report; None: nowhere.
    status_file: Path | None = None

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.ports[service]}"

    @property
    def base_url(self) -> str:
        return self.url("gateway")

    def group(self, name: str) -> str:
        return f"{name}{self.group_suffix}"


BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
# Up this long without exiting: the next crash starts again from the first backoff.
STABLE_AFTER = 30.0
# A service that exits this many times in a row before ever becoming ready is broken, not crashing:
# ``wait_healthy`` gives up on it instead of waiting out its timeout.
CRASH_LOOP = 4


def exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


@dataclass
class Supervised:
    """What the supervisor knows of one service's process."""

    proc: subprocess.Popen[bytes]
    started_at: float
    backoff: float = BACKOFF_FIRST
    # set when the process exited unexpectedly, until it is started again
    restart_at: float | None = None
    exited_at: float | None = None
    # exits since the service was last seen ready
    crashes: int = 0
    restarts: int = 0


class Stack:
    def __init__(self, config: StackConfig, *, supervise: bool = True,
                 announce: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.supervise = supervise
        self.announce = announce or (lambda line: print(line, flush=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.supervised: dict[str, Supervised] = {}
        self._lock = threading.RLock()
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

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
        for name, (owner, setting) in EXTRA_PORTS.items():
            if owner == service and name in c.ports:
                env[prefix + setting] = str(c.ports[name])
        if service in CONSUMER_GROUPS:
            env[prefix + "GROUP_ID"] = c.group(service)
        if service == "projections":
            env[prefix + "DEAD_LETTER_GROUP_ID"] = c.group("projections-dead-letters")
        env["TALLY_CONSOLE_API_URL"] = c.base_url
        if c.status_file is not None:
            env["TALLY_SUPERVISOR_STATUS_FILE"] = str(c.status_file)
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

    def _spawn(self, service: str) -> subprocess.Popen[bytes]:
        if service == "gateway":
            cmd = [sys.executable, "-m", "tally_cli.gateway"]
        else:
            cmd = [sys.executable, "-m", MODULES[service], "serve"]
        out = self._log(service)
        return subprocess.Popen(cmd, env=self.env_for(service), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_service(self, service: str) -> None:
        """Start ``service`` (and supervise it); a no-op while it runs or waits to be restarted."""
        with self._lock:
            current = self.supervised.get(service)
            if current is not None and (current.proc.poll() is None or current.restart_at is not None):
                return
            proc = self._spawn(service)
            self.procs[service] = proc
            if self.supervise:
                self.supervised[service] = Supervised(proc=proc, started_at=time.monotonic())
                self._ensure_watcher()
            self._write_status()

    def start(self, timeout: float = 90.0) -> None:
        for svc in MODULES:
            self.start_service(svc)
        self.start_service("gateway")
        self.wait_healthy(list(self.procs), timeout=timeout)

    # -- supervision -------------------------------------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._watch_stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="tally-supervisor", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        recovering: dict[str, float] = {}  # service -> when it exited, until it answers ready again
        with httpx.Client(timeout=1) as client:
            while not self._watch_stop.wait(0.1):
                now = time.monotonic()
                with self._lock:
                    for svc, sup in list(self.supervised.items()):
                        self._check(svc, sup, now, recovering)
                for svc, exited_at in list(recovering.items()):
                    back = self.supervised.get(svc)
                    if back is None:
                        recovering.pop(svc)
                    elif back.restart_at is None and back.proc.poll() is None and self._ready(client, svc):
                        recovering.pop(svc)
                        back.crashes = 0
                        self.announce(f"{svc} is back after {time.monotonic() - exited_at:.1f} s")

    def _check(self, svc: str, sup: Supervised, now: float, recovering: dict[str, float]) -> None:
        if sup.restart_at is not None:
            if now >= sup.restart_at:
                sup.restart_at = None
                sup.restarts += 1
                sup.proc = self.procs[svc] = self._spawn(svc)
                sup.started_at = now
                self._write_status()
            return
        code = sup.proc.poll()
        if code is None:
            return
        if now - sup.started_at >= STABLE_AFTER:
            sup.backoff = BACKOFF_FIRST
        sup.exited_at = now
        sup.crashes += 1
        sup.restart_at = now + sup.backoff
        recovering.setdefault(svc, now)
        self.announce(f"{svc} exited ({exit_description(code)}); restarting in {sup.backoff:g} s")
        sup.backoff = min(sup.backoff * 2, BACKOFF_MAX)
        self._write_status()

    def _write_status(self) -> None:
        path = self.config.status_file
        if path is None:
            return
        states = self.status()
        record = {svc: {"state": state, "restarts": self.supervised[svc].restarts if svc in self.supervised else 0}
                  for svc, state in states.items()}
        with contextlib.suppress(OSError):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(path)

    def _ready(self, client: httpx.Client, service: str) -> bool:
        path = "/api/public/health" if service == "gateway" else "/readyz"
        try:
            r = client.get(self.config.url(service) + path)
        except httpx.HTTPError:
            return False
        # The gateway is up when it answers its health at all; "degraded" there is about the other services.
        return r.status_code < 500 or (service == "gateway" and r.headers.get("content-type", "").startswith(
            "application/json"))

    def status(self) -> dict[str, str]:
        """Per service: ``running``, ``restarting`` (exited, waiting out its backoff) or ``stopped``."""
        with self._lock:
            out = {}
            for svc in [*MODULES, "gateway"]:
                sup = self.supervised.get(svc)
                proc = sup.proc if sup else self.procs.get(svc)
                if sup is not None and sup.restart_at is not None:
                    out[svc] = "restarting"
                elif proc is not None and proc.poll() is None:
                    out[svc] = "running"
                else:
                    out[svc] = "stopped"
            return out

    def wait_healthy(self, services: Sequence[str], timeout: float = 90.0) -> None:
        """Until each of ``services`` is ready (``/readyz``; the gateway: its health answers 200)."""
        deadline = time.monotonic() + timeout
        pending = set(services)
        with httpx.Client(timeout=2) as client:
            while pending and time.monotonic() < deadline:
                for svc in sorted(pending):
                    sup = self.supervised.get(svc)
                    if sup is not None and sup.crashes >= CRASH_LOOP:
                        raise RuntimeError(f"{svc} keeps exiting ({sup.crashes} times); see its log")
                    proc = self.procs.get(svc)
                    if sup is None and proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"{svc} exited with code {proc.returncode}; see its log")
                    path = "/api/public/health" if svc == "gateway" else "/readyz"
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(self.config.url(svc) + path).status_code == 200:
                            pending.discard(svc)
                if pending:
                    time.sleep(0.2)
        if pending:
            raise TimeoutError(f"not healthy after {timeout}s: {sorted(pending)}")

    def kill(self, service: str) -> None:
        """SIGKILL, as a crash would: no shutdown hooks run. A supervised service is then restarted by the
        supervisor, as under ``tally up``; wait for it with ``wait_healthy``."""
        with self._lock:
            proc = self.procs[service]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            if not self.supervise:
                self.procs.pop(service)

    def stop_service(self, service: str, timeout: float = 15.0) -> None:
        """A deliberate stop: the supervisor lets it be."""
        with self._lock:
            self.supervised.pop(service, None)
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
        self._watch_stop.set()
