"""Ingest throughput: traces of 5 observations with ~1 KB of input and output each, sent over HTTP by concurrent
clients in batches, in each format (native, Langfuse batch, OTLP protobuf as the langfuse 5.x SDK sends it).

Prints traces/s and observations/s accepted (acknowledged by the broker), request latency p50/p99, the ingest
process's peak RSS, and the ratio to the raw broker ceiling (``bench/broker.py``) measured in the same run for
messages of the same size as ingest's events.

Starts its own Tansu broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and a fresh database on DATABASE_URL's server
(default: the local PostgreSQL at 127.0.0.1:5432), runs ``python -m ingest serve`` (one process, uvicorn) in a
subprocess and drives it from a separate client process over loopback, with a minimal keep-alive HTTP/1.1 client
so that the client's own CPU stays small. Bounded: about a minute and a half with the defaults.

    .venv/bin/python bench/ingest.py [--seconds 12] [--connections 8] [--traces-per-request 50]
        [--formats native,langfuse,otlp] [--profile DIR]   (py-spy record of the server, if py-spy is installed)

``--inproc``: no server, broker or database: the CPU per span of the OTLP path inside this process, on
``bench/pipeline.py``'s requests (100 spans, OpenInference and gen_ai attributes, ~3 KB a span), in two layers:
``domain`` (protobuf decode, span mapping, the event bytes) and ``app`` (the whole ASGI app as uvicorn calls it:
routing, authentication against a cached key, body, metrics, a publisher that acknowledges at once, the
response). Fast enough to iterate on (a few seconds); profile it with ``py-spy record -- python bench/ingest.py
--inproc``.

    .venv/bin/python bench/ingest.py --inproc [--requests 400] [--layers domain,app]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import multiprocessing as mp
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

# bench/ is not a package; its ingest.py would shadow the ingest service package if left on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import broker as broker_bench
import pipeline
from broker import broker, measure_broker, table

sys.path.pop(0)

from tally_shared import infra
from tally_shared.messaging import ensure_topics
from tally_shared.migrations import upgrade
from tally_shared.testing.plugin import create_project_with_key

ROOT = Path(__file__).resolve().parents[1]
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
OBS_TYPES = ["span", "generation", "tool", "retriever", "generation"]
BODIES_PER_FORMAT = 100


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def _text(n: int, seed: int) -> str:
    words = ("the quick brown fox jumps over lazy dogs while agents call tools and models answer questions "
             "about invoices refunds shipping dates and customer history ").split()
    out: list[str] = []
    size = 0
    for i in itertools.count(seed):
        w = words[i % len(words)]
        out.append(w)
        size += len(w) + 1
        if size >= n:
            break
    return " ".join(out)[:n]


def _observations(trace_id: str, io_bytes: int, k: int) -> list[dict[str, Any]]:
    obs = []
    for j, kind in enumerate(OBS_TYPES):
        obs.append({
            "id": f"{trace_id}-o{j}", "type": kind.upper(), "name": f"{kind}-{j}",
            "parent": None if j == 0 else f"{trace_id}-o0",
            "input": {"messages": [{"role": "user", "content": _text(io_bytes - 40, k + j)}]},
            "output": _text(io_bytes, k + j + 7),
            "model": "gpt-4o-mini" if kind == "generation" else None,
            "start": 1_750_000_000_000_000_000 + k * 1000 + j, "end": 1_750_000_000_500_000_000 + k * 1000 + j,
        })
    return obs


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9 // 1000:06d}Z"


def native_body(traces: int, io_bytes: int, seed: int) -> bytes:
    events: list[dict[str, Any]] = []
    for t in range(traces):
        tid = f"{seed:06d}{t:04d}{uuid.uuid4().hex[:22]}"
        obs = _observations(tid, io_bytes, seed * 100 + t)
        events.append({"id": f"{tid}-t", "type": "trace", "timestamp": _iso(obs[0]["start"]),
                       "body": {"id": tid, "name": "support-agent", "user_id": f"user-{t % 50}",
                                "session_id": f"s-{t % 200}", "tags": ["bench"], "input": obs[0]["input"],
                                "output": obs[0]["output"]}})
        for o in obs:
            body = {"id": o["id"], "trace_id": tid, "type": o["type"], "name": o["name"],
                    "start_time": _iso(o["start"]), "end_time": _iso(o["end"]), "input": o["input"],
                    "output": o["output"]}
            if o["parent"]:
                body["parent_observation_id"] = o["parent"]
            if o["model"]:
                body.update(model=o["model"], usage_details={"input": 250, "output": 120})
            events.append({"id": f"{o['id']}-c", "type": "observation", "timestamp": _iso(o["end"]), "body": body})
    return orjson.dumps({"events": events})


def langfuse_body(traces: int, io_bytes: int, seed: int) -> bytes:
    batch: list[dict[str, Any]] = []
    for t in range(traces):
        tid = str(uuid.uuid4())
        obs = _observations(tid, io_bytes, seed * 100 + t)
        batch.append({"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": _iso(obs[0]["start"]),
                      "body": {"id": tid, "name": "support-agent", "userId": f"user-{t % 50}",
                               "sessionId": f"s-{t % 200}", "tags": ["bench"], "input": obs[0]["input"],
                               "output": obs[0]["output"]}})
        for o in obs:
            kind = o["type"].lower()
            body = {"id": o["id"], "traceId": tid, "name": o["name"], "startTime": _iso(o["start"]),
                    "endTime": _iso(o["end"]), "input": o["input"], "output": o["output"]}
            if o["parent"]:
                body["parentObservationId"] = o["parent"]
            if o["model"]:
                body.update(model=o["model"], usageDetails={"input": 250, "output": 120})
            batch.append({"id": str(uuid.uuid4()), "type": f"{kind}-create", "timestamp": _iso(o["end"]),
                          "body": body})
    return orjson.dumps({"batch": batch})


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def otlp_body(traces: int, io_bytes: int, seed: int) -> bytes:
    """Spans the way the langfuse 5.x SDK exports them (langfuse.* attributes, JSON-encoded values)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "bench-agent"), _kv("telemetry.sdk.name", "opentelemetry"),
                                   _kv("telemetry.sdk.language", "python")])
    ss = rs.scope_spans.add()
    ss.scope.name = "langfuse-sdk"
    for t in range(traces):
        trace_id = uuid.uuid4().bytes
        obs = _observations(trace_id.hex(), io_bytes, seed * 100 + t)
        for j, o in enumerate(obs):
            sp = ss.spans.add()
            sp.trace_id = trace_id
            sp.span_id = (j + 1).to_bytes(8, "big")
            if j:
                sp.parent_span_id = (1).to_bytes(8, "big")
            sp.name = o["name"]
            sp.start_time_unix_nano, sp.end_time_unix_nano = o["start"], o["end"]
            attrs = [_kv("langfuse.observation.type", o["type"].lower()),
                     _kv("langfuse.observation.input", orjson.dumps(o["input"]).decode()),
                     _kv("langfuse.observation.output", o["output"]),
                     _kv("langfuse.environment", "default"),
                     _kv("user.id", f"user-{t % 50}"), _kv("session.id", f"s-{t % 200}")]
            if j == 0:
                attrs += [_kv("langfuse.trace.name", "support-agent"), _kv("langfuse.internal.is_app_root", True)]
            if o["model"]:
                attrs += [_kv("langfuse.observation.model.name", o["model"]),
                          _kv("langfuse.observation.usage_details", '{"input": 250, "output": 120}')]
            sp.attributes.extend(attrs)
    return req.SerializeToString()


FORMATS = {
    "native": ("/api/v1/ingest", "application/json", native_body),
    "langfuse": ("/api/public/ingestion", "application/json", langfuse_body),
    "otlp": ("/api/public/otel/v1/traces", "application/x-protobuf", otlp_body),
}


# ------------------------------------------------------------------------------------------------ client process


async def _worker(port: int, requests: list[bytes], items_per_request: int, fmt: str, stop_at: float,
                  out: dict[str, Any], offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            req = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            writer.write(req)
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            out["latencies"].append(time.perf_counter() - t0)
            out["statuses"][status] = out["statuses"].get(status, 0) + 1
            if status == 207:
                data = orjson.loads(body)
                out["accepted_items"] += len(data["successes"])
                out["rejected_items"] += len(data["errors"])
            elif status == 200 and fmt == "otlp":
                rejected = ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans
                out["accepted_items"] += items_per_request - rejected
                out["rejected_items"] += rejected
            else:
                out["rejected_items"] += items_per_request
    finally:
        writer.close()


def client_main(port: int, auth: str, fmt: str, bodies: list[bytes], items_per_request: int, connections: int,
                seconds: float, queue: Any) -> None:
    path, ctype, _ = FORMATS[fmt]
    requests = [
        (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Type: {ctype}\r\n"
         f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies
    ]
    out: dict[str, Any] = {"latencies": [], "statuses": {}, "accepted_items": 0, "rejected_items": 0}

    async def run() -> None:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        stop_at = time.perf_counter() + seconds
        start = time.perf_counter()
        await asyncio.gather(*(_worker(port, requests, items_per_request, fmt, stop_at, out, k * 7)
                               for k in range(connections)))
        out["elapsed"] = time.perf_counter() - start

    cpu = time.process_time()
    asyncio.run(run())
    out["cpu"] = (time.process_time() - cpu) / out["elapsed"]
    queue.put(out)


# ------------------------------------------------------------------------------------------------ orchestration


class RssWatcher:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.1)

    def __enter__(self) -> RssWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _event_sizes(bootstrap: str, n: int = 200) -> float:
    """Mean size of the TraceIngested messages the run put on tally.traces (the bytes ingest publishes)."""
    from aiokafka import AIOKafkaConsumer

    async def run() -> float:
        c = AIOKafkaConsumer("tally.traces", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=None, enable_auto_commit=False)
        await c.start()
        sizes: list[int] = []
        try:
            deadline = time.monotonic() + 10
            while len(sizes) < n and time.monotonic() < deadline:
                for records in (await c.getmany(timeout_ms=300, max_records=n)).values():
                    sizes += [len(r.value) for r in records]
        finally:
            await c.stop()
        return sum(sizes) / len(sizes) if sizes else float("nan")

    return asyncio.run(run())


# ------------------------------------------------------------------------------------------------ in-process


def _pipeline_bodies(n: int) -> list[bytes]:
    tpl = pipeline.build_template(os.urandom(4), "agent-inproc-00-plain", "agent-inproc-00-route")
    return [tpl.body(k) for k in range(n)]


def _inproc_domain(bodies: list[bytes]) -> float:
    """CPU seconds for decode, mapping and the event bytes of every body."""
    from ingest.domain import otel
    from ingest.domain.batch import Batch
    from ingest.domain.report import Report

    cpu = time.process_time()
    for body in bodies:
        batch = Batch("otel")
        report = Report()
        otel.add_spans(batch, report, otel.protobuf_spans(otel.decode_protobuf(body), report, None))
        batch.outgoing("bench-project")
    return time.process_time() - cpu


class _AckAll:
    async def send_all(self, messages: Any) -> list[None]:
        return [None] * len(messages)


class _Identity:
    async def verify_api_key(self, public_key: str, secret_key: str) -> str | None:
        return "bench-project"


def _inproc_app(bodies: list[bytes]) -> float:
    """CPU seconds for the whole ASGI app serving every body (as uvicorn would call it)."""
    from ingest.bootstrap import create_app_for
    from ingest.config import Settings

    app = create_app_for(Settings(database_url="postgresql://bench@127.0.0.1:1/none", grpc_port=0,
                                  secret_key=secrets.token_urlsafe(32)),
                         publisher=_AckAll())
    app.state.identity = _Identity()
    auth = base64.b64encode(b"pk-bench:sk-bench").decode()
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Basic {auth}".encode()),
               (b"content-type", b"application/x-protobuf")]
    statuses: dict[int, int] = {}

    async def one(body: bytes) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/api/public/otel/v1/traces", "raw_path":
                 b"/api/public/otel/v1/traces", "query_string": b"", "root_path": "",
                 "headers": [*headers, (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8101), "state": {}}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    async def run() -> float:
        await one(bodies[0])
        cpu = time.process_time()
        for body in bodies:
            await one(body)
        return time.process_time() - cpu

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    spent = asyncio.run(run())
    if set(statuses) != {200}:
        raise SystemExit(f"the app answered {statuses}")
    return spent


def inproc_main(args: argparse.Namespace) -> int:
    # This script is bench/ingest.py: its directory must not shadow the ingest service package.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    bodies = _pipeline_bodies(args.requests)
    spans = len(bodies) * pipeline.SPANS_PER_REQUEST
    # As the service runs once started (its start-up hook): the cyclic collector tuned the same way.
    from ingest.bootstrap import GC_THRESHOLDS
    from tally_shared.service import tune_gc

    tune_gc(GC_THRESHOLDS)
    print(f"in-process OTLP path: {len(bodies)} requests of {pipeline.SPANS_PER_REQUEST} spans "
          f"({sum(map(len, bodies)) / spans:,.0f} B a span), CPU µs per span, best of {args.repeat}")
    layers = {"domain": _inproc_domain, "app": _inproc_app}
    for layer in args.layers.split(","):
        runs = [layers[layer](bodies) for _ in range(args.repeat)]
        print(f"  {layer:>7}: {min(runs) / spans * 1e6:6.1f} µs/span  (runs: "
              f"{', '.join(f'{r / spans * 1e6:.1f}' for r in runs)})", flush=True)
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inproc", action="store_true", help="CPU per span of the OTLP path in this process")
    p.add_argument("--requests", type=int, default=400, help="--inproc: requests per run")
    p.add_argument("--repeat", type=int, default=3, help="--inproc: runs per layer")
    p.add_argument("--layers", default="domain,app", help="--inproc: domain, app")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--traces-per-request", type=int, default=50)
    p.add_argument("--io-bytes", type=int, default=512, help="bytes of input, and again of output, per observation")
    p.add_argument("--formats", default="native,langfuse,otlp")
    p.add_argument("--workload", choices=["sdk", "pipeline"], default="sdk",
                   help="pipeline: OTLP bodies of bench/pipeline.py (with --formats otlp)")
    p.add_argument("--profile", type=Path, help="directory for py-spy flame graphs of the server, one per format")
    args = p.parse_args(argv)
    if args.inproc:
        return inproc_main(args)
    formats = [f for f in args.formats.split(",") if f]

    server_url = os.environ.get("DATABASE_URL", LOCAL_PG)
    db_name = f"tally_bench_ingest_{uuid.uuid4().hex[:8]}"
    db_url = infra.create_database(server_url, db_name)
    results: list[dict[str, Any]] = []
    try:
        upgrade(ROOT / "shared/tally_shared/identity/migrations", db_url, "identity")
        public, secret = asyncio.run(create_project_with_key(db_url, "bench-ingest"))
        auth = base64.b64encode(f"{public}:{secret}".encode()).decode()
        with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="tally-bench-ingest-") as tmp:
            asyncio.run(ensure_topics(bootstrap))
            port = infra.free_port()
            env = {**os.environ, "DATABASE_URL": db_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                   "TALLY_SECRET_KEY": secrets.token_urlsafe(32), "TALLY_INGEST_PORT": str(port),
                   "TALLY_INGEST_GRPC_PORT": str(infra.free_port()),
                   "TALLY_INGEST_LOG_LEVEL": "warning"}
            log = open(Path(tmp) / "ingest.log", "wb")
            server = subprocess.Popen([sys.executable, "-m", "ingest", "serve"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                infra.wait_for_port("127.0.0.1", port, timeout=60)
                with RssWatcher(server.pid) as rss:
                    for fmt in formats:
                        results.append(_run_format(fmt, port, auth, args, server.pid, broker_bench.BROKER_PID))
                    peak_rss = rss.peak
            finally:
                server.terminate()
                server.wait(15)
                log.close()
            event_bytes = _event_sizes(bootstrap)
            # Best of one producer and of six (as ingest uses): the higher ceiling makes the ratio stricter.
            ceilings = [asyncio.run(measure_broker(bootstrap, size=round(event_bytes), seconds=5, producers=n))
                        for n in (1, 6)]
            ceilings_1k = [asyncio.run(measure_broker(bootstrap, size=1024, seconds=4, producers=n))
                           for n in (1, 6)]
            ceiling = max(ceilings, key=lambda c: c.produce_mb)
    finally:
        infra.drop_database(server_url, db_name)

    print(f"\nIngest, one process (uvicorn), {args.connections} connections, {args.traces_per_request} traces per "
          f"request, 5 observations per trace, {args.io_bytes} B input + {args.io_bytes} B output per observation")
    print(f"{'format':>9} | {'traces/s':>9} | {'obs/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'req MB/s':>8} | "
          f"{'Kafka MB/s':>10} | {'vs ceiling':>10} | {'CPU ingest':>10} | {'CPU/trace':>9} | {'CPU broker':>10} | "
          "statuses")
    print("-" * 146)
    for r in results:
        traces_s = r["traces"] / r["elapsed"]
        kafka_mb = traces_s * event_bytes / 1e6
        print(f"{r['format']:>9} | {traces_s:>9,.0f} | {traces_s * 5:>9,.0f} | {r['p50'] * 1000:>7.1f} | "
              f"{r['p99'] * 1000:>7.1f} | {r['req_mb_s']:>8.1f} | {kafka_mb:>10.1f} | "
              f"{kafka_mb / ceiling.produce_mb:>10.0%} | {r['server_cpu']:>10.0%} | "
              f"{r['server_cpu'] / traces_s * 1e6 if traces_s else float('nan'):>6.0f} us | "
              f"{r['broker_cpu']:>10.0%} | {r['statuses']}")
    print(f"\nPeak RSS of the ingest process: {peak_rss / 1e6:.0f} MB. CPU = core-seconds per second "
          f"(this machine has {os.cpu_count()} cores); 1-minute load average during the runs: "
          f"{max(r['load'] for r in results):.1f}")
    print(f"Mean TraceIngested message: {event_bytes:,.0f} B (one per trace)")
    for r in results:
        if r["traces"]:
            print(f"  {r['format']:>8}: ingest CPU {r['server_cpu'] * r['elapsed'] / (r['traces'] * 5) * 1e6:.1f} µs "
                  f"per observation (span), {r['server_sys_share']:.0%} of it system time")
    print("Raw broker ceiling measured in this run (bench/broker.py, aiokafka acks=all):")
    print(table(ceilings_1k + ceilings))
    print("'vs ceiling' = ingest's Kafka MB/s / the best raw produce MB/s for messages of the same size.")
    print("'CPU/trace' = ingest process CPU time per accepted trace: one core fully given to ingest would carry "
          "about 1 s / CPU-per-trace traces/s, whatever else the machine is running.")
    for r in results:
        traces_s = r["traces"] / r["elapsed"]
        if traces_s and r["server_cpu"] == r["server_cpu"]:
            print(f"  {r['format']:>8}: {traces_s / r['server_cpu']:,.0f} traces/s per core-second of ingest CPU; "
                  f"mean wait for the broker's acknowledgement per request {r['publish_ms']:.1f} ms; "
                  f"load client CPU {r['client_cpu']:.0%}")
    return 0


def _publish_totals(port: int) -> tuple[float, float]:
    """(sum, count) of ingest's tally_publish_seconds for tally.traces, from its /metrics."""
    import urllib.request

    total = count = 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith('tally_publish_seconds_sum{topic="tally.traces"}'):
                total = float(line.split()[-1])
            elif line.startswith('tally_publish_seconds_count{topic="tally.traces"}'):
                count = float(line.split()[-1])
    return total, count


def _sys_cpu(pid: int) -> float:
    try:
        return float(psutil.Process(pid).cpu_times().system)
    except psutil.Error:
        return float("nan")


def _cpu(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return float("nan")


def _run_format(fmt: str, port: int, auth: str, args: argparse.Namespace, server_pid: int,
                broker_pid: int | None) -> dict[str, Any]:
    _, _, build = FORMATS[fmt]
    if args.workload == "pipeline":
        if fmt != "otlp":
            raise SystemExit("--workload pipeline is OTLP only (--formats otlp)")
        args.traces_per_request = pipeline.TRACES_PER_REQUEST
        bodies = _pipeline_bodies(BODIES_PER_FORMAT)
    else:
        bodies = [build(args.traces_per_request, args.io_bytes, seed) for seed in range(BODIES_PER_FORMAT)]
    items = args.traces_per_request * (5 if fmt == "otlp" else 6)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    # Warm-up (connections, producer metadata, caches), not counted.
    warm = ctx.Process(target=client_main, args=(port, auth, fmt, bodies[:5], items, 2, 1.0, queue))
    warm.start()
    queue.get(timeout=60)
    warm.join()
    profiler = None
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if args.profile and py_spy:
        args.profile.mkdir(parents=True, exist_ok=True)
        out_file = str(args.profile / f"ingest-{fmt}.txt")
        profiler = subprocess.Popen([py_spy, "record", "--format", "raw", "--rate", "400", "-o", out_file, "--pid",
                                     str(server_pid), "--duration", str(int(args.seconds)), "--nonblocking"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = ctx.Process(target=client_main,
                       args=(port, auth, fmt, bodies, items, args.connections, args.seconds, queue))
    pub0 = _publish_totals(port)
    sys0 = _sys_cpu(server_pid)
    cpu0 = (_cpu(server_pid), _cpu(broker_pid), time.perf_counter())
    load0 = os.getloadavg()[0]
    proc.start()
    out = queue.get(timeout=args.seconds + 120)
    cpu1 = (_cpu(server_pid), _cpu(broker_pid), time.perf_counter())
    sys1 = _sys_cpu(server_pid)
    proc.join()
    pub1 = _publish_totals(port)
    if profiler is not None:
        profiler.wait(60)
    per_trace = items // args.traces_per_request
    requests = len(out["latencies"])
    mean_body = sum(len(b) for b in bodies) / len(bodies)
    return {
        "format": fmt, "traces": out["accepted_items"] / per_trace, "elapsed": out["elapsed"],
        "p50": pct(out["latencies"], 50), "p99": pct(out["latencies"], 99), "statuses": out["statuses"],
        "req_mb_s": requests * mean_body / out["elapsed"] / 1e6,
        "server_cpu": (cpu1[0] - cpu0[0]) / (cpu1[2] - cpu0[2]),
        "server_sys_share": (sys1 - sys0) / max(1e-9, cpu1[0] - cpu0[0]),
        "broker_cpu": (cpu1[1] - cpu0[1]) / (cpu1[2] - cpu0[2]),
        "load": max(load0, os.getloadavg()[0]),
        "publish_ms": (pub1[0] - pub0[0]) / max(1.0, pub1[1] - pub0[1]) * 1000,
        "client_cpu": out["cpu"],
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
