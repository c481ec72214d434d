"""The fault suite: a stream of 5,000 traces and 5,000 scores through the base URL while every process is killed
in turn (gateway, ingest, scoring, queue-router, projections: SIGKILL, brought back by the stack's supervisor),
the broker is paused for 10 s, and PostgreSQL is restarted. Then every read model holds exactly what was
acknowledged: 0 lost, 0 duplicated.

The stack here runs on infrastructure of its own (a private PostgreSQL cluster from the local binaries, and a
broker of its own), so pausing and restarting them disturbs no other test. The client retries only what the
server told it to retry (429/502/503/504 with Retry-After, per-item 5xx in a 207) and connection failures; event
ids derive from content, so a retried batch applies once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally_cli.routes import DEFAULT_PORTS
from tally_cli.stack import Stack, StackConfig
from tally_shared import infra
from tally_shared.testing.plugin import ARTIFACTS, create_project_with_key
from tally_shared.testing.wait import eventually

TRACES = 5_000  # and as many scores, one per trace
PER_BATCH = 100  # trace-create + score-create events per request (50 traces, 50 scores)
SENDERS = 3
# One batch every this many seconds (all senders together): the stream spans the whole fault schedule, so every
# fault meets requests in flight, and a fault's share of the stream outlasts the start of its outage.
PACE_SECONDS = 0.45
KILLED = ("gateway", "ingest", "scoring", "queue-router", "projections")
BROKER_PAUSE_SECONDS = 10.0
RETRYABLE = {429, 502, 503, 504}
NAMESPACE = uuid.UUID("6f1c2a7e-3d0b-4f43-9a51-2b8f4c7d9e10")

pytestmark = pytest.mark.timeout(600)


# -- private infrastructure ------------------------------------------------------------------------------------

def _pg_bin() -> Path | None:
    for version in ("15", "16", "17", "14"):
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class PrivatePostgres:
    bin: Path
    data: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=timeout)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A throwaway cluster (trust auth, no fsync: it only has to survive a clean restart)."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    as_user: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="tally-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            user = pwd.getpwnam("nobody")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", user.pw_name, "--"]
    data = tmp / "data"
    subprocess.run([*as_user, str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E",
                    "UTF8", "--no-sync"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                   timeout=120)
    port = infra.free_port()
    pg = PrivatePostgres(pg_bin, data, port, as_user)
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={tmp} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
    pg.pg_ctl("-l", str(tmp / "postgres.log"), "-o", options, "-w", "start")
    try:
        yield pg
    finally:
        with contextlib.suppress(Exception):
            pg.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class FaultStack:
    stack: Stack
    broker: subprocess.Popen[bytes]
    pg: PrivatePostgres
    base_url: str
    auth: tuple[str, str]


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[FaultStack]:
    log_dir = ARTIFACTS / "fault-logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    port = infra.free_port()
    broker = infra.start_tansu(port, log_path=log_dir / "tansu.log")
    stack: Stack | None = None
    try:
        with private_postgres() as pg:
            announced = open(log_dir / "supervisor.log", "a")
            config = StackConfig(database_url=pg.url, kafka_bootstrap=f"127.0.0.1:{port}",
                                 secret_key="faults-" + uuid.uuid4().hex,
                                 ports={svc: infra.free_port() for svc in DEFAULT_PORTS}, log_dir=log_dir,
                                 group_suffix=f"-{uuid.uuid4().hex[:8]}")

            def announce(line: str) -> None:
                announced.write(f"{time.strftime('%H:%M:%S')} {line}\n")
                announced.flush()
                print(line, flush=True)

            stack = Stack(config, announce=announce)
            stack.prepare()
            stack.start(timeout=120)
            auth = infra.run_sync(create_project_with_key(pg.url, f"faults-{uuid.uuid4().hex[:8]}"))
            yield FaultStack(stack, broker, pg, config.base_url, auth)
            stack.stop(drain=False)
            announced.close()
    finally:
        if stack is not None:
            stack.stop(drain=False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker.pid, signal.SIGCONT)
        infra.stop_process(broker)


# -- the client: retries only what the server said to ----------------------------------------------------------

def _events(run: str, start: int, count: int, ts: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(start, start + count):
        tid = f"f-{run}-{i}"
        events.append({"id": str(uuid.uuid5(NAMESPACE, f"{tid}:trace")), "type": "trace-create", "timestamp": ts,
                       "body": {"id": tid, "name": f"fault-{run}", "timestamp": ts, "input": {"i": i}}})
        events.append({"id": str(uuid.uuid5(NAMESPACE, f"{tid}:score")), "type": "score-create", "timestamp": ts,
                       "body": {"id": f"s-{tid}", "traceId": tid, "name": f"fault-{run}", "value": i % 5,
                                "dataType": "NUMERIC"}})
    return events


@dataclass
class ClientLog:
    requests: int = 0
    retried_status: dict[int, int] = field(default_factory=dict)
    retried_items: int = 0
    connection_failures: int = 0
    last_ok: float = 0.0


class Refused(AssertionError):
    """The server answered something a client must not retry: the test fails with it."""


async def send_batch(api: httpx.AsyncClient, events: list[dict[str, Any]], log: ClientLog,
                     deadline: float) -> None:
    pending = events
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} events still not acknowledged")
        log.requests += 1
        try:
            r = await api.post("/api/public/ingestion", json={"batch": pending})
        except httpx.TransportError:
            log.connection_failures += 1
            await asyncio.sleep(0.5)
            continue
        if r.status_code in RETRYABLE:
            if "retry-after" not in r.headers:
                raise Refused(f"{r.status_code} without Retry-After: {r.text[:500]}")
            log.retried_status[r.status_code] = log.retried_status.get(r.status_code, 0) + 1
            await asyncio.sleep(min(float(r.headers["retry-after"]), 5.0))
            continue
        if r.status_code not in (200, 207):
            raise Refused(f"{r.status_code}: {r.text[:500]}")
        body = r.json()
        errors = body.get("errors", [])
        final = [e for e in errors if int(e.get("status", 500)) < 500]
        if final:
            raise Refused(f"items refused: {final[:3]}")
        again = {e["id"] for e in errors}
        log.retried_items += len(again)
        ok = {s["id"] for s in body.get("successes", [])}
        assert ok | again == {e["id"] for e in pending}, body
        log.last_ok = time.monotonic()
        pending = [e for e in pending if e["id"] in again]
        if pending:
            await asyncio.sleep(1.0)


# -- faults ----------------------------------------------------------------------------------------------------

# The cheapest call that needs each service's own HTTP API (and database) to work.
PROBES: dict[str, tuple[str, str]] = {
    "gateway": ("GET", "/api/public/traces?limit=1"),
    "ingest": ("POST", "/api/public/ingestion"),
    "scoring": ("GET", "/api/public/score-configs?limit=1"),
    "queue-router": ("GET", "/api/public/annotation-queues?limit=1"),
    "projections": ("GET", "/api/public/traces?limit=1"),
}


async def first_2xx(client: httpx.AsyncClient, url: str, method: str, path: str, since: float,
                    timeout: float = 90) -> float:
    while time.monotonic() - since < timeout:
        with contextlib.suppress(httpx.HTTPError):
            r = await client.request(method, url + path, json={"batch": []} if method == "POST" else None)
            if r.status_code < 300:
                return time.monotonic() - since
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{url}{path} not back after {timeout}s")


async def probe_write(api: httpx.AsyncClient, run: str, n: int) -> bool:
    ts = "2025-06-01T12:00:00Z"
    event = {"id": str(uuid.uuid5(NAMESPACE, f"probe-{run}-{n}")), "type": "trace-create", "timestamp": ts,
             "body": {"id": f"probe-{run}-{n}", "name": f"probe-{run}", "timestamp": ts}}
    with contextlib.suppress(httpx.HTTPError):
        r = await api.post("/api/public/ingestion", json={"batch": [event]})
        return r.status_code == 207 and not r.json().get("errors")
    return False


async def recovered(api: httpx.AsyncClient, run: str, since: float, *, read: bool, timeout: float = 90) -> float:
    """Seconds from ``since`` until a write (and a read, if asked) through the base URL succeed."""
    n = 0
    while time.monotonic() - since < timeout:
        n += 1
        ok = await probe_write(api, run, n)
        if ok and read:
            with contextlib.suppress(httpx.HTTPError):
                ok = (await api.get("/api/public/traces", params={"limit": 1})).status_code == 200
        if ok:
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    raise TimeoutError(f"not recovered after {timeout}s")


# -- reading back ----------------------------------------------------------------------------------------------

async def _pages(api: httpx.AsyncClient, path: str, params: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        r = await api.get(path, params={**params, "limit": limit, "page": page})
        r.raise_for_status()
        body = r.json()
        out += body["data"]
        if page >= body["meta"]["totalPages"]:
            return out
        page += 1


def lost_and_duplicated(expected: set[str], ids: list[str]) -> tuple[int, int]:
    return len(expected - set(ids)), len(ids) - len(set(ids))


# -- the test --------------------------------------------------------------------------------------------------

@pytest.mark.processes
async def test_nothing_acknowledged_is_lost_under_faults(fault_stack: FaultStack) -> None:
    fs = fault_stack
    stack = fs.stack
    run = uuid.uuid4().hex[:8]
    name = f"fault-{run}"
    ts = "2025-06-01T12:00:00Z"
    figures: dict[str, float] = {}
    log = ClientLog()
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=fs.base_url, auth=fs.auth, timeout=30) as api, \
            httpx.AsyncClient(auth=fs.auth, timeout=2) as probe:
        queue = (await api.post("/api/v1/queues", json={"name": f"faults {run}"})).raise_for_status().json()
        (await api.post(f"/api/v1/queues/{queue['id']}/rules", json={
            "name": "by name", "filter": {"groups": [{"conditions": [{"field": "name", "op": "eq", "value": name}]}]},
        })).raise_for_status()

        steps = len(KILLED) + 2  # each kill, the broker pause, the database restart
        released = asyncio.Event()
        allowed = [TRACES // (steps + 1)]  # traces the senders may send so far: spread over every fault
        batches = iter(range(0, TRACES, PER_BATCH // 2))
        deadline = time.monotonic() + 400
        next_at = [time.monotonic()]

        async def sender() -> None:
            for start in batches:
                while start >= allowed[0]:
                    released.clear()
                    await released.wait()
                now = time.monotonic()
                slot = max(now, next_at[0])
                next_at[0] = slot + PACE_SECONDS
                await asyncio.sleep(slot - now)
                await send_batch(api, _events(run, start, PER_BATCH // 2, ts), log, deadline)

        def release(step: int) -> None:
            allowed[0] = TRACES if step >= steps else TRACES * (step + 1) // (steps + 1)
            released.set()

        senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
        try:
            for step, svc in enumerate(KILLED, start=1):
                release(step)
                await asyncio.sleep(1.0)  # traffic in flight when it dies
                t0 = time.monotonic()
                await asyncio.to_thread(stack.kill, svc)
                method, path = PROBES[svc]
                figures[f"{svc} restart to first 2xx (s)"] = await first_2xx(
                    probe, stack.config.url(svc), method, path, t0)
                await asyncio.to_thread(stack.wait_healthy, [svc], 90)
                figures[f"{svc} restart to ready (s)"] = time.monotonic() - t0

            release(len(KILLED) + 1)
            await asyncio.sleep(1.0)
            os.kill(fs.broker.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(BROKER_PAUSE_SECONDS)
            finally:
                os.kill(fs.broker.pid, signal.SIGCONT)
            t_cont = time.monotonic()
            figures["broker pause: resume to first acknowledged write (s)"] = await recovered(
                api, run, t_cont, read=False)
            await asyncio.to_thread(stack.wait_healthy, [*KILLED], 90)
            figures["broker pause: resume to every service ready (s)"] = time.monotonic() - t_cont

            release(len(KILLED) + 2)
            await asyncio.sleep(1.0)
            t_pg = time.monotonic()
            await asyncio.to_thread(fs.pg.pg_ctl, "-m", "fast", "-w", "restart")
            figures["postgres restart: took (s)"] = time.monotonic() - t_pg
            figures["postgres restart: start to first write and read (s)"] = await recovered(
                api, run, t_pg, read=True)
            release(steps + 1)
            await asyncio.gather(*senders)
        finally:
            for t in senders:
                t.cancel()
        figures["stream and faults (s)"] = time.monotonic() - started

        assert all(stack.supervised[svc].restarts >= 1 for svc in KILLED)
        await asyncio.to_thread(stack.wait_caught_up, 180)
        figures["until every consumer caught up (s)"] = time.monotonic() - started

        expected_traces = {f"f-{run}-{i}" for i in range(TRACES)}
        expected_scores = {f"s-f-{run}-{i}" for i in range(TRACES)}

        async def traces_complete() -> list[dict[str, Any]] | None:
            got = await _pages(api, "/api/public/traces", {"name": name}, 1000)
            return got if len(got) >= TRACES and all(t.get("scores") for t in got) else None

        traces = await eventually(traces_complete, timeout=60, what="every trace with its score in projections")
        scores = await _pages(api, "/api/public/v2/scores", {"name": name}, 100)
        items = await _pages(api, f"/api/public/annotation-queues/{queue['id']}/items", {}, 500)

    counts = {
        "projections traces": lost_and_duplicated(expected_traces, [t["id"] for t in traces]),
        "projections trace scores": lost_and_duplicated(
            expected_scores, [s if isinstance(s, str) else s["id"] for t in traces for s in t["scores"]]),
        "scoring scores": lost_and_duplicated(expected_scores, [s["id"] for s in scores]),
        "queue-router items": lost_and_duplicated(expected_traces, [i["objectId"] for i in items]),
    }
    report = [f"fault suite: {TRACES} traces + {TRACES} scores; client: {log.requests} requests, "
              f"retried statuses {log.retried_status}, {log.retried_items} items retried inside a 207, "
              f"{log.connection_failures} connection failures"]
    report += [f"  {what:<26} lost {lost}, duplicated {dup}" for what, (lost, dup) in counts.items()]
    report += [f"  {what:<56} {value:6.1f}" for what, value in figures.items()]
    print("\n" + "\n".join(report))
    # kept with the stack's logs, so a CI run's figures can be read without -s
    (ARTIFACTS / "fault-logs" / "figures.txt").write_text("\n".join(report) + "\n")
    assert counts == {k: (0, 0) for k in counts}
