"""The headline benchmark: OTLP/HTTP spans through the base URL, from intake to the read models and the queues.

Workload, as a platform team sends it: OTLP/HTTP protobuf requests of 100 spans (20 traces x 5 spans: CHAIN >
RETRIEVER, LLM, TOOL, LLM, with OpenInference and gen_ai attributes and ~1 KB input, output and message values,
about 3 KB a span on the wire), built before timing and sent by 4 keep-alive connections to
``/api/public/otel/v1/traces`` with Basic auth. It prints, and asserts nothing on time:

- burst: N spans as fast as the connections send them; accepted spans/s; visible spans/s (until a sample of traces
  is whole through ``GET /api/public/v2/observations?traceId=`` and every consumer group's lag is back to 0);
- sustained: a fixed rate per step (500, 1000, 1500 ... spans/s), reporting the highest rate at which the lag at
  the end of the step stays within 2 s of input;
- CPU per span of each process of the stack (gateway, each service, the broker, PostgreSQL with its backends) and
  the total, over the burst from its first request until it is visible;
- p50/p99 from "sent" to "seen in the queue" for the 1% of traces a routing rule picks (by trace name).

By default it runs ``tally up`` itself on the embedded defaults (own TALLY_HOME in a temp dir, free ports, the
embedded Tansu broker and the embedded PostgreSQL), and stops it with SIGINT at the end. ``--database-url`` points
``tally up`` at a PostgreSQL server instead (a fresh database is created on it and dropped afterwards); on a
shared server only the backends serving that database are counted (by their process title), not the server's
background processes. ``--url`` (with ``--public-key``/``--secret-key``) drives a stack that is already running;
CPU and lag then need ``--tally-home`` of that ``tally up`` (its stack record names the broker and the processes).

    .venv/bin/python bench/pipeline.py               # full: 50,000-span burst, 60 s steps from 500 spans/s
    .venv/bin/python bench/pipeline.py --quick       # smoke run: 5,000 spans, 8 s steps, about two minutes
    .venv/bin/python bench/pipeline.py --profile     # also py-spy each Python process during a second burst
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tally_shared import infra

ROOT = Path(__file__).resolve().parents[1]
OTLP_PATH = "/api/public/otel/v1/traces"
TRACES_PER_REQUEST = 20
SPANS_PER_TRACE = 5
SPANS_PER_REQUEST = TRACES_PER_REQUEST * SPANS_PER_TRACE
# One trace in ROUTE_EVERY is named for the routing rule: slot 0 of every fifth request.
ROUTE_EVERY = 100
KINDS = ("CHAIN", "RETRIEVER", "LLM", "TOOL", "LLM")
SERVICES = ("gateway", "ingest", "queue-router", "scoring", "projections", "console")
BOUNDED_LAG_SECONDS = 2.0


# ------------------------------------------------------------------------------------------------ workload


def _text(n: int, seed: int) -> str:
    words = ("the customer asked about a refund for order while the agent looked up invoices shipping dates "
             "policy documents and earlier tickets before answering with the next steps and a summary ").split()
    out: list[str] = []
    size, i = 0, seed
    while size < n:
        w = words[i % len(words)]
        out.append(w)
        size += len(w) + 1
        i += 1
    return " ".join(out)[:n]


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


@dataclass
class Template:
    """One serialized request whose trace and span ids are placeholders; ``body(k)`` fills in the ids of request
    ``k`` by joining slices, so every request carries new traces at the cost of one copy."""

    parts: list[bytes]
    slots: list[tuple[int, int]]  # per placeholder: (trace slot, span index or -1 for the trace id)
    prefix: bytes  # 4 bytes unique to the run

    def trace_id(self, k: int, t: int) -> bytes:
        return self.prefix + b"\0\0\0\0" + (k * TRACES_PER_REQUEST + t).to_bytes(8, "big")

    def span_id(self, k: int, t: int, j: int) -> bytes:
        return self.prefix + ((k * TRACES_PER_REQUEST + t) * SPANS_PER_TRACE + j).to_bytes(4, "big")

    def body(self, k: int) -> bytes:
        out = [self.parts[0]]
        for (t, j), part in zip(self.slots, self.parts[1:], strict=True):
            out.append(self.trace_id(k, t) if j < 0 else self.span_id(k, t, j))
            out.append(part)
        return b"".join(out)


def build_template(prefix: bytes, root_name: str, routed_name: str | None) -> Template:
    """A request of 20 traces; with ``routed_name``, trace slot 0's root span carries that name (same length as
    ``root_name``, so the slices line up)."""
    assert routed_name is None or len(routed_name) == len(root_name)
    markers: dict[bytes, tuple[int, int]] = {}

    def marker(size: int, slot: tuple[int, int]) -> bytes:
        m = os.urandom(size)
        markers[m] = slot
        return m

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "support-agent"), _kv("telemetry.sdk.language", "python"),
                                   _kv("telemetry.sdk.name", "opentelemetry"), _kv("deployment.environment", "prod")])
    ss = rs.scope_spans.add()
    ss.scope.name = "openinference.instrumentation.langchain"
    base_ns = time.time_ns()
    for t in range(TRACES_PER_REQUEST):
        trace_id = marker(16, (t, -1))
        span_ids = [marker(8, (t, j)) for j in range(SPANS_PER_TRACE)]
        for j, kind in enumerate(KINDS):
            sp = ss.spans.add()
            sp.trace_id = trace_id
            sp.span_id = span_ids[j]
            if j:
                sp.parent_span_id = span_ids[0]
            sp.name = (routed_name if routed_name and t == 0 else root_name) if j == 0 else f"{kind.lower()}-{j}"
            sp.kind = 1
            sp.start_time_unix_nano = base_ns + t * 10_000_000 + j * 1_000_000
            sp.end_time_unix_nano = sp.start_time_unix_nano + 800_000_000 - j * 100_000_000
            seed = t * 7 + j
            attrs = [_kv("openinference.span.kind", kind),
                     _kv("input.value", _text(1000, seed)), _kv("input.mime_type", "text/plain"),
                     _kv("output.value", _text(1000, seed + 3)), _kv("output.mime_type", "text/plain")]
            if j == 0:
                attrs += [_kv("session.id", f"session-{t % 7}"), _kv("user.id", f"user-{t % 11}"),
                          _kv("metadata", '{"tenant": "acme", "channel": "chat"}'), _kv("tag.tags", '["bench"]')]
            elif kind == "RETRIEVER":
                attrs += [_kv("retrieval.documents.0.document.id", f"doc-{seed}"),
                          _kv("retrieval.documents.0.document.content", _text(1000, seed + 5)),
                          _kv("retrieval.documents.0.document.score", "0.82")]
            elif kind == "LLM":
                attrs += [_kv("llm.model_name", "gpt-4o-mini"), _kv("llm.provider", "openai"),
                          _kv("llm.input_messages.0.message.role", "system"),
                          _kv("llm.input_messages.0.message.content", _text(1000, seed + 9)),
                          _kv("llm.token_count.prompt", 812), _kv("llm.token_count.completion", 230),
                          _kv("gen_ai.system", "openai"), _kv("gen_ai.operation.name", "chat"),
                          _kv("gen_ai.request.model", "gpt-4o-mini"), _kv("gen_ai.request.temperature", "0.2"),
                          _kv("gen_ai.usage.input_tokens", 812), _kv("gen_ai.usage.output_tokens", 230)]
            elif kind == "TOOL":
                attrs += [_kv("tool.name", "lookup_order"), _kv("tool.description", "Find an order by id"),
                          _kv("tool.parameters", '{"order_id": {"type": "string"}}'),
                          _kv("gen_ai.tool.name", "lookup_order")]
            sp.attributes.extend(attrs)
    raw = req.SerializeToString()
    pattern = re.compile(b"|".join(re.escape(m) for m in markers))
    parts: list[bytes] = []
    slots: list[tuple[int, int]] = []
    pos = 0
    for m in pattern.finditer(raw):
        parts.append(raw[pos:m.start()])
        slots.append(markers[m.group()])
        pos = m.end()
    parts.append(raw[pos:])
    assert len(slots) == TRACES_PER_REQUEST * (SPANS_PER_TRACE * 2 + SPANS_PER_TRACE - 1), "a marker collided"
    return Template(parts, slots, prefix)


def names(run: str, phase: int) -> tuple[str, str]:
    """(root span name of ordinary traces, of routed traces) in one phase: same length, different names."""
    return f"agent-{run}-{phase:02d}-plain", f"agent-{run}-{phase:02d}-route"


def is_routed(k: int, t: int) -> bool:
    return (k * TRACES_PER_REQUEST + t) % ROUTE_EVERY == 0


# ------------------------------------------------------------------------------------------------ load (own process)


def sender_main(host: str, port: int, auth: str, prefix: bytes, run: str, phase: int, first_k: int, requests: int,
                rate: float | None, connections: int, out_q: Any, go: Any) -> None:
    """Send ``requests`` requests (numbered from ``first_k``), as fast as possible or at ``rate`` spans/s."""
    plain, routed = names(run, phase)
    templates = (build_template(prefix, plain, None), build_template(prefix, plain, routed))
    # Built before timing: the heads and every body (one join of slices each).
    head = (f"POST {OTLP_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: application/x-protobuf\r\n").encode()
    bodies: list[bytes] = []
    for k in range(first_k, first_k + requests):
        body = templates[1 if is_routed(k, 0) else 0].body(k)
        bodies.append(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    wire = sum(len(b) for b in bodies)
    res: dict[str, Any] = {"accepted": 0, "rejected": 0, "statuses": Counter(), "sent_at": {}, "latencies": [],
                           "bytes": wire}
    counter = iter(range(requests))

    async def worker(t0: float) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                if rate:
                    due = t0 + i * SPANS_PER_REQUEST / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                k = first_k + i
                sent = time.time()
                t_req = time.perf_counter()
                writer.write(bodies[i])
                status = int((await reader.readline()).split()[1])
                length, chunked = 0, False
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                    elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                if chunked:  # the gateway streams the service's answer through
                    chunks = []
                    while size := int((await reader.readline()).split(b";")[0], 16):
                        chunks.append(await reader.readexactly(size))
                        await reader.readline()
                    await reader.readline()
                    body = b"".join(chunks)
                else:
                    body = await reader.readexactly(length)
                res["latencies"].append(time.perf_counter() - t_req)
                res["statuses"][status] += 1
                rejected = SPANS_PER_REQUEST
                if status == 200:
                    rejected = ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans
                res["accepted"] += SPANS_PER_REQUEST - rejected
                res["rejected"] += rejected
                if status == 200 and is_routed(k, 0):
                    res["sent_at"][templates[1].trace_id(k, 0).hex()] = sent
        finally:
            writer.close()

    async def main() -> None:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        out_q.put("ready")
        go.wait()
        t0 = time.perf_counter()
        res["started"] = time.time()
        await asyncio.gather(*(worker(t0) for _ in range(connections)))
        res["elapsed"] = time.perf_counter() - t0
        res["finished"] = time.time()

    cpu = time.process_time()
    asyncio.run(main())
    res["cpu"] = time.process_time() - cpu
    res["statuses"] = dict(res["statuses"])
    out_q.put(res)


class Sender:
    """The load in a process of its own, so that it neither competes with the measuring side for the GIL nor
    counts as the stack's CPU."""

    def __init__(self, base_url: str, auth: str, run: str, connections: int) -> None:
        u = httpx.URL(base_url)
        self.host, self.port = u.host, u.port or 80
        self.auth, self.run, self.connections = auth, run, connections
        self.prefix = bytes.fromhex(run[:8])
        self.next_k = 0
        self.ctx = mp.get_context("spawn")

    def start(self, phase: int, requests: int, rate: float | None) -> tuple[Any, Any, int, Any]:
        """A sender with its bodies built, waiting for ``go.set()``."""
        q = self.ctx.Queue()
        go = self.ctx.Event()
        first = self.next_k
        self.next_k += requests
        proc = self.ctx.Process(target=sender_main, args=(self.host, self.port, self.auth, self.prefix, self.run,
                                                          phase, first, requests, rate, self.connections, q, go))
        proc.start()
        assert q.get(timeout=300) == "ready"
        return proc, q, first, go

    def trace_ids(self, first: int, requests: int, sample: int) -> list[str]:
        """A sample of the trace ids of requests [first, first+requests), spread evenly and including the last."""
        t = Template([], [], self.prefix)
        picks = sorted({first + round(i * (requests - 1) / max(1, sample - 1)) for i in range(sample)})
        return [t.trace_id(k, (k * 7) % TRACES_PER_REQUEST).hex() for k in picks]


# ------------------------------------------------------------------------------------------------ stack and CPU


@dataclass
class StackInfo:
    base_url: str
    public_key: str
    secret_key: str
    kafka: str | None = None
    up_pid: int | None = None
    pg_postmaster: int | None = None  # embedded: the whole server is the stack's
    pg_database: str | None = None  # shared server: only backends of this database
    pg_label: str = ""


class TallyUp:
    """``tally up`` as a person runs it, in a temp TALLY_HOME on free ports."""

    def __init__(self, database_url: str | None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="tally-bench-pipeline-")
        self.home = Path(self.tmp.name) / "home"
        self.server_url = database_url
        self.db_name: str | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self) -> StackInfo:
        env = {**os.environ, "TALLY_HOME": str(self.home)}
        for svc in ("GATEWAY", "INGEST", "QUEUE_ROUTER", "SCORING", "PROJECTIONS", "CONSOLE", "INGEST_GRPC"):
            env[f"TALLY_{svc}_PORT"] = str(infra.free_port())
        for k in ("KAFKA_BOOTSTRAP_SERVERS", "TALLY_SECRET_KEY", "DATABASE_URL"):
            env.pop(k, None)
        if self.server_url:
            self.db_name = f"tally_bench_pipeline_{uuid.uuid4().hex[:8]}"
            env["DATABASE_URL"] = infra.create_database(self.server_url, self.db_name)
        self.proc = subprocess.Popen([sys.executable, "-m", "tally_cli.main", "up"], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        up = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "Press Ctrl-C to stop" in line:
                    up.set()

        threading.Thread(target=read, daemon=True).start()
        if not up.wait(300):
            raise SystemExit("tally up did not come up:\n" + "".join(self.lines[-60:]))
        out = "".join(self.lines)
        base = re.search(r"Base URL \(APIs and console\): (\S+)", out)
        keys = re.search(r"Demo API keys: public (\S+)\s+secret (\S+)", out)
        if not (base and keys):
            raise SystemExit("could not read the banner:\n" + out)
        record = json.loads((self.home / "stack.json").read_text())
        info = StackInfo(base.group(1), keys.group(1), keys.group(2), kafka=record["kafka_bootstrap_servers"],
                         up_pid=self.proc.pid)
        if self.db_name and self.server_url:
            info.pg_database = self.db_name
            info.pg_label = f"PostgreSQL at {self.server_url.rsplit('@', 1)[-1]} (backends of {self.db_name} only)"
        else:
            info.pg_postmaster = int((self.home / "pgdata" / "postmaster.pid").read_text().split()[0])
            info.pg_label = "embedded PostgreSQL (postmaster and all its children)"
        return info

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(180)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.db_name and self.server_url:
            with contextlib.suppress(Exception):
                infra.drop_database(self.server_url, self.db_name)
        self.tmp.cleanup()


def classify(proc: psutil.Process) -> str | None:
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return None
    joined = " ".join(cmd)
    if "tally_cli.gateway" in joined:
        return "gateway"
    if "tansu" in (cmd[0] if cmd else ""):
        return "broker"
    if "tally_cli.main" in joined:
        return "tally up"
    if len(cmd) >= 2 and cmd[-1] == "serve":
        return cmd[-2].replace("_", "-")
    return None


class CpuMeter:
    """user+system CPU of every process of the stack, per role. A sampler keeps the last reading of each process
    so that one which exits (a backend, a restarted service) still counts up to its last sample."""

    def __init__(self, info: StackInfo) -> None:
        self.info = info
        self.lock = threading.Lock()
        self.last: dict[tuple[int, float], tuple[str, float]] = {}
        self.base: dict[tuple[int, float], float] = {}
        self.stop_evt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.available = info.up_pid is not None

    def processes(self) -> list[tuple[psutil.Process, str]]:
        out: list[tuple[psutil.Process, str]] = []
        if self.info.up_pid is not None:
            with contextlib.suppress(psutil.Error):
                up = psutil.Process(self.info.up_pid)
                out.append((up, "tally up"))
                for child in up.children(recursive=True):
                    role = classify(child)
                    if role is None:  # a helper of a service: counted with the nearest classified ancestor
                        for parent in child.parents():
                            role = classify(parent)
                            if role:
                                break
                    out.append((child, role or "other"))
        if self.info.pg_postmaster is not None:
            with contextlib.suppress(psutil.Error):
                pm = psutil.Process(self.info.pg_postmaster)
                out.append((pm, "postgresql"))
                out += [(c, "postgresql") for c in pm.children(recursive=True)]
        elif self.info.pg_database:
            needle = f" {self.info.pg_database} "
            for p in psutil.process_iter(["name", "cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if cmd.startswith("postgres: ") and needle in cmd + " ":
                    out.append((p, "postgresql"))
        return out

    def _sample(self) -> None:
        for p, role in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                key = (p.pid, p.create_time())
                with self.lock:
                    self.last[key] = (role, t.user + t.system)

    def _run(self) -> None:
        while not self.stop_evt.wait(0.5):
            self._sample()

    def start(self) -> CpuMeter:
        if self.available:
            self.thread.start()
        return self

    def close(self) -> None:
        self.stop_evt.set()

    def mark(self) -> dict[tuple[int, float], float]:
        """A baseline: every process's CPU now (processes born later start from 0)."""
        self._sample()
        with self.lock:
            return {k: v for k, (_, v) in self.last.items()}

    def since(self, base: dict[tuple[int, float], float]) -> dict[str, float]:
        self._sample()
        out: dict[str, float] = defaultdict(float)
        with self.lock:
            for key, (role, value) in self.last.items():
                out[role] += max(0.0, value - base.get(key, 0.0))
        return dict(out)

    def pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for p, role in self.processes():
            out[role].append(p.pid)
        return dict(out)


async def total_lag(kafka: str | None) -> dict[str, int] | None:
    if not kafka:
        return None
    from tally_cli.stack import CONSUMER_GROUPS
    from tally_shared.lag import consumer_lag

    out: dict[str, int] = {}
    for group, topics in CONSUMER_GROUPS.items():
        # under `tally up` the group ids are the plain names
        out[group] = sum((await consumer_lag(kafka, group, topics)).values())
    return out


# ------------------------------------------------------------------------------------------------ measuring


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


class QueueWatch:
    """A queue with a rule picking one phase's routed traces by name; records when each item is first seen."""

    def __init__(self, api: httpx.AsyncClient, run: str, phase: int) -> None:
        self.api, self.run, self.phase = api, run, phase
        self.seen: dict[str, float] = {}
        self.queue_id = ""
        self._task: asyncio.Task[None] | None = None

    async def create(self) -> QueueWatch:
        _, routed = names(self.run, self.phase)
        q = (await self.api.post("/api/v1/queues", json={"name": f"pipeline {routed}"})).raise_for_status().json()
        self.queue_id = q["id"]
        (await self.api.post(f"/api/v1/queues/{self.queue_id}/rules", json={
            "name": "routed traces",
            "filter": {"groups": [{"conditions": [{"field": "name", "op": "eq", "value": routed}]}]},
        })).raise_for_status()
        return self

    async def poll_once(self) -> None:
        r = await self.api.get(f"/api/v1/queues/{self.queue_id}/items", params={"limit": 500})
        if r.status_code != 200:
            return
        body = r.json()
        now = time.time()
        for item in body["data"] if isinstance(body, dict) else body:
            self.seen.setdefault(item["object_id"], now)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self.poll_once()
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self, sent_at: dict[str, float], timeout: float) -> list[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not set(sent_at) <= set(self.seen):  # noqa: ASYNC110 (a poller)
            await asyncio.sleep(0.2)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return [self.seen[t] - s for t, s in sent_at.items() if t in self.seen]


async def wait_visible(api: httpx.AsyncClient, kafka: str | None, sample: list[str], timeout: float) -> float | None:
    """Time (epoch) when every sampled trace shows its 5 observations and every group's lag is 0; None on timeout."""
    deadline = time.monotonic() + timeout
    pending = list(sample)
    while pending and time.monotonic() < deadline:
        still = []
        for tid in pending:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await api.get("/api/public/v2/observations", params={"traceId": tid, "limit": 50})
                if r.status_code == 200 and len(r.json().get("data", [])) >= SPANS_PER_TRACE:
                    continue
            still.append(tid)
        pending = still
        if pending:
            await asyncio.sleep(0.2)
    if pending:
        return None
    while time.monotonic() < deadline:
        lag = await total_lag(kafka)
        if lag is None or not any(lag.values()):
            return time.time()
        await asyncio.sleep(0.25)
    return None


def wait_result(proc: Any, q: Any, timeout: float) -> dict[str, Any]:
    import queue

    deadline = time.monotonic() + timeout
    while True:
        try:
            res: dict[str, Any] = q.get(timeout=1)
            break
        except queue.Empty:
            if not proc.is_alive() or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the load generator failed (exit code {proc.exitcode})") from None
    proc.join(30)
    return res


@dataclass
class Burst:
    spans: int
    accepted: int
    rejected: int
    send_s: float
    visible_s: float | None
    cpu: dict[str, float]
    statuses: dict[int, int]
    routing: list[float]
    wire_bytes: int
    client_cpu: float
    load: tuple[float, float]
    profiles: dict[str, Path] = field(default_factory=dict)


async def run_burst(api: httpx.AsyncClient, info: StackInfo, sender: Sender, meter: CpuMeter, phase: int,
                    spans: int, profile_dir: Path | None) -> Burst:
    requests = max(1, spans // SPANS_PER_REQUEST)
    watch = await (QueueWatch(api, sender.run, phase)).create()
    await asyncio.sleep(1.0)  # the rule reaches queue-router's cache
    load0 = os.getloadavg()[0]
    proc, q, first, go = await asyncio.to_thread(sender.start, phase, requests, None)
    profilers = start_profilers(meter, profile_dir, phase) if profile_dir else {}
    base = meter.mark()
    watch.start()
    go.set()
    res = await asyncio.to_thread(wait_result, proc, q, 600)
    sample = sender.trace_ids(first, requests, 20)
    visible = await wait_visible(api, info.kafka, sample, timeout=max(120.0, spans / 200))
    cpu = meter.since(base)
    stop_profilers(profilers)
    routing = await watch.stop(res["sent_at"], timeout=30)
    return Burst(spans=requests * SPANS_PER_REQUEST, accepted=res["accepted"], rejected=res["rejected"],
                 send_s=res["elapsed"], visible_s=None if visible is None else visible - res["started"], cpu=cpu,
                 statuses=res["statuses"], routing=routing, wire_bytes=res["bytes"], client_cpu=res["cpu"],
                 load=(load0, os.getloadavg()[0]), profiles={r: p for r, (_, p) in profilers.items()})


@dataclass
class Step:
    rate: float
    achieved: float
    lag_traces: int
    lag_seconds: float
    drained_s: float | None
    cpu_per_span_us: float
    routing: list[float]
    load: float
    bounded: bool


async def run_step(api: httpx.AsyncClient, info: StackInfo, sender: Sender, meter: CpuMeter, phase: int,
                   rate: float, seconds: float) -> Step:
    requests = max(1, round(rate * seconds / SPANS_PER_REQUEST))
    watch = await (QueueWatch(api, sender.run, phase)).create()
    await asyncio.sleep(1.0)
    proc, q, _, go = await asyncio.to_thread(sender.start, phase, requests, rate)
    base = meter.mark()
    watch.start()
    go.set()
    res = await asyncio.to_thread(wait_result, proc, q, seconds * 3 + 300)
    lag = await total_lag(info.kafka) or {}
    load = os.getloadavg()[0]
    achieved = res["accepted"] / res["elapsed"]
    # one TraceIngested per trace: the lag in traces, over the traces per second sent, is the lag in seconds
    lag_traces = max(lag.values(), default=0)
    lag_seconds = lag_traces / (rate / SPANS_PER_TRACE)
    t0 = time.monotonic()
    drained = await wait_visible(api, info.kafka, [], timeout=120)
    drained_s = None if drained is None else time.monotonic() - t0
    cpu = meter.since(base)  # the step's spans are all through once drained: their CPU is all in
    routing = await watch.stop(res["sent_at"], timeout=10)
    bounded = achieved >= 0.95 * rate and lag_seconds <= BOUNDED_LAG_SECONDS and not res["rejected"]
    return Step(rate, achieved, lag_traces, lag_seconds, drained_s,
                sum(cpu.values()) / max(1, res["accepted"]) * 1e6, routing, load, bounded)


# ------------------------------------------------------------------------------------------------ profiling


def start_profilers(meter: CpuMeter, out_dir: Path, phase: int) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not py_spy:
        print("py-spy not found: `.venv/bin/uv pip install py-spy` (it is in the dev group of uv.lock)")
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    profilers = {}
    for role, pids in meter.pids().items():
        if role not in SERVICES:
            continue
        path = out_dir / f"{role}-{phase}.txt"
        profilers[role] = (subprocess.Popen([py_spy, "record", "--format", "raw", "--rate", "200", "--nonblocking",
                                             "-o", str(path), "--pid", str(pids[0])],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)
    return profilers


def stop_profilers(profilers: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in profilers.values():
        proc.send_signal(signal.SIGINT)
    for proc, _ in profilers.values():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/services/", "/shared/", "/cli/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('fn')} ({path})"


_SHELL = ("<module> (", "main (", "run_cli (", "serve (tally_shared/service.py)")


def top_frames(path: Path, n: int) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, top self frames, top inclusive frames of project code) from py-spy's collapsed stacks."""
    selfs: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            c = int(count)
            total += c
            frames = [_short(f) for f in stack.split(";")]
            selfs[frames[-1]] += c
            for f in set(frames):
                if f.startswith(_SHELL):  # every stack of the process passes through these
                    continue
                if any(s in f for s in ("(ingest/", "(queue_router/", "(scoring/", "(projections/",
                                        "(tally_shared/", "(tally_cli/", "(console/")):
                    incl[f] += c
    if not total:
        return 0, [], []
    return (total, [(f, c / total) for f, c in selfs.most_common(n)],
            [(f, c / total) for f, c in incl.most_common(n)])


# ------------------------------------------------------------------------------------------------ report


def print_cpu(title: str, cpu: dict[str, float], spans: int, wall: float) -> None:
    print(f"\n{title}")
    print(f"  {'process':<14} {'CPU s':>8} {'cores':>6} {'µs/span':>9}")
    order = [*SERVICES, "broker", "postgresql", "tally up", "other"]
    for role in sorted(cpu, key=lambda r: order.index(r) if r in order else 99):
        print(f"  {role:<14} {cpu[role]:>8.2f} {cpu[role] / wall:>6.2f} {cpu[role] / spans * 1e6:>9.0f}")
    total = sum(cpu.values())
    print(f"  {'total':<14} {total:>8.2f} {total / wall:>6.2f} {total / spans * 1e6:>9.0f}")


def fmt_ms(values: list[float]) -> str:
    if not values:
        return "no routed trace seen"
    return (f"p50 {pct(values, 50) * 1000:,.0f} ms, p99 {pct(values, 99) * 1000:,.0f} ms "
            f"({len(values)} traces)")


async def bench(args: argparse.Namespace, info: StackInfo) -> None:
    run = uuid.uuid4().hex[:8]
    auth_b64 = base64.b64encode(f"{info.public_key}:{info.secret_key}".encode()).decode()
    sender = Sender(info.base_url, auth_b64, run, args.connections)
    meter = CpuMeter(info).start()
    cpu_note = ("CPU: " + info.pg_label) if meter.available else "CPU: not measured (no --tally-home)"
    async with httpx.AsyncClient(base_url=info.base_url, auth=(info.public_key, info.secret_key),
                                 timeout=30) as api:
        (await api.get("/api/public/health")).raise_for_status()
        # warm-up: connections, producer metadata, caches, the consumers' first fetches (not measured)
        print("warm-up ...", flush=True)
        await run_burst(api, info, sender, meter, 0, 20 * SPANS_PER_REQUEST, None)
        print(f"burst of {args.spans:,} spans ...", flush=True)
        burst = await run_burst(api, info, sender, meter, 1, args.spans, None)
        steps: list[Step] = []
        phase = 2
        for rate in args.rates:
            print(f"sustained {rate:,.0f} spans/s for {args.sustain_seconds:.0f} s ...", flush=True)
            step = await run_step(api, info, sender, meter, phase, rate, args.sustain_seconds)
            phase += 1
            steps.append(step)
            if not step.bounded or step.drained_s is None:
                break
        prof: Burst | None = None
        if args.profile:
            print(f"profiled burst of {args.spans:,} spans ...", flush=True)
            prof = await run_burst(api, info, sender, meter, phase, args.spans, args.profile_dir)
    meter.close()

    print("\n" + "=" * 100)
    print(f"Pipeline: OTLP/HTTP protobuf, {SPANS_PER_REQUEST} spans a request ({TRACES_PER_REQUEST} traces x "
          f"{SPANS_PER_TRACE}), {args.connections} keep-alive connections, through {info.base_url}")
    print(f"  {burst.wire_bytes / (burst.spans // SPANS_PER_REQUEST) / SPANS_PER_REQUEST:,.0f} B a span on the "
          f"wire; {os.cpu_count()} cores; load average (1 min) {burst.load[0]:.1f} before the burst, "
          f"{burst.load[1]:.1f} after; {cpu_note}")
    print(f"\nBurst: {burst.spans:,} spans, statuses {burst.statuses}, rejected spans {burst.rejected}")
    print(f"  accepted: {burst.accepted / burst.send_s:>8,.0f} spans/s ({burst.send_s:.1f} s)")
    if burst.visible_s:
        print(f"  visible:  {burst.spans / burst.visible_s:>8,.0f} spans/s ({burst.visible_s:.1f} s until a sample "
              "of 20 traces is whole through the API and every consumer group's lag is 0)")
    else:
        print("  visible:  not within the timeout")
    print(f"  routing, sent -> seen in the queue (poll every 0.1 s, behind the whole burst): {fmt_ms(burst.routing)}")
    wall = burst.visible_s or burst.send_s
    if meter.available:
        print_cpu(f"CPU over the burst, first request until visible ({wall:.1f} s), per accepted span:",
                  burst.cpu, burst.accepted, wall)
        print(f"  (the load generator used {burst.client_cpu:.1f} s CPU, not counted)")
    print(f"\nSustained ({args.sustain_seconds:.0f} s a step; bounded = at least 95% of the rate accepted and the "
          f"lag at the end of the step within {BOUNDED_LAG_SECONDS:.0f} s of input):")
    print(f"  {'spans/s':>8} {'achieved':>9} {'lag end':>8} {'lag s':>6} {'drain s':>8} {'µs/span':>8} "
          f"{'load':>5} {'routing p50/p99 ms':>19} bounded")
    for s in steps:
        rt = f"{pct(s.routing, 50) * 1000:,.0f}/{pct(s.routing, 99) * 1000:,.0f}" if s.routing else "-"
        print(f"  {s.rate:>8,.0f} {s.achieved:>9,.0f} {s.lag_traces:>8,} {s.lag_seconds:>6.1f} "
              f"{'-' if s.drained_s is None else f'{s.drained_s:.1f}':>8} {s.cpu_per_span_us:>8.0f} {s.load:>5.1f} "
              f"{rt:>19} {'yes' if s.bounded else 'NO'}")
    ok = [s.rate for s in steps if s.bounded]
    print(f"  highest bounded rate: {max(ok):,.0f} spans/s" if ok else "  no step stayed bounded")
    if ok:
        best = next(s for s in steps if s.rate == max(ok))
        print(f"  routing at {best.rate:,.0f} spans/s, sent -> seen in the queue: {fmt_ms(best.routing)}")
    if prof is not None:
        print(f"\nProfile (py-spy, 200 Hz, active samples only) over a second burst of {prof.spans:,} spans; "
              f"accepted {prof.accepted / prof.send_s:,.0f} spans/s under the profiler")
        for role, path in sorted(prof.profiles.items()):
            total, selfs, incl = top_frames(path, args.top)
            cpu_us = prof.cpu.get(role, 0.0) / max(1, prof.accepted) * 1e6
            print(f"\n  {role}: {total:,} samples, {cpu_us:.0f} µs/span under the profiler ({path})")
            print("    self time:")
            for f, share in selfs:
                print(f"      {share:6.1%} {share * cpu_us:6.0f} µs  {f}")
            print("    project code, inclusive:")
            for f, share in incl:
                print(f"      {share:6.1%} {share * cpu_us:6.0f} µs  {f}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="base URL of a running stack (default: start `tally up` here)")
    p.add_argument("--public-key")
    p.add_argument("--secret-key")
    p.add_argument("--tally-home", type=Path, help="with --url: that tally up's TALLY_HOME (broker, processes)")
    p.add_argument("--database-url", help="PostgreSQL server for `tally up` (default: the embedded one)")
    p.add_argument("--spans", type=int, default=50_000)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--sustain-seconds", type=float, default=60.0)
    p.add_argument("--rates", default="500,1000,1500,2000,2500,3000,4000",
                   help="sustained steps, spans/s; stops at the first step that is not bounded")
    p.add_argument("--quick", action="store_true", help="smoke run: 5,000 spans, 8 s steps at 500 and 1000")
    p.add_argument("--profile", action="store_true", help="py-spy each Python process during a second burst")
    p.add_argument("--profile-dir", type=Path, default=None)
    p.add_argument("--top", type=int, default=8, help="frames per service in the profile summary")
    args = p.parse_args(argv)
    if args.quick:
        args.spans, args.sustain_seconds, args.rates = 5_000, 8.0, "500,1000"
    args.rates = [float(r) for r in args.rates.split(",") if r]
    if args.profile and args.profile_dir is None:
        args.profile_dir = Path(tempfile.mkdtemp(prefix="tally-pipeline-profile-"))

    if args.url:
        if not (args.public_key and args.secret_key):
            p.error("--url needs --public-key and --secret-key")
        info = StackInfo(args.url.rstrip("/"), args.public_key, args.secret_key)
        if args.tally_home:
            record = json.loads((args.tally_home / "stack.json").read_text())
            info.kafka, info.up_pid = record["kafka_bootstrap_servers"], int(record["pid"])
            pid_file = args.tally_home / "pgdata" / "postmaster.pid"
            if pid_file.exists():
                info.pg_postmaster = int(pid_file.read_text().split()[0])
                info.pg_label = "embedded PostgreSQL (postmaster and all its children)"
            else:
                info.pg_label = "PostgreSQL not counted (not the embedded one)"
        asyncio.run(bench(args, info))
        return 0

    up = TallyUp(args.database_url)
    try:
        print("starting tally up ...", flush=True)
        info = up.start()
        print(f"tally up: {info.base_url}; {info.pg_label}", flush=True)
        asyncio.run(bench(args, info))
    finally:
        print("\nstopping tally up ...", flush=True)
        up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
