"""Projections: events/s applied for a mixed stream, dashboard query latency over N scores, rebuild time.

1. Generates a mixed log in event-time order (per 5 scores: one trace with two observations; a queue item, lease
   and completion for 5% of traces) and produces it to the topics with plain aiokafka.
2. Starts the projections service (its real batch consumer, a fresh consumer group) and times how fast it applies
   the whole log: events/s from the first applied batch to the last.
3. ``python -m projections rebuild``'s code path over the same log: events/s, time, and the time that rate gives
   for a log of --scores scores.
   With ``--replicas 1,2`` the same log is then applied again by that many projections processes (``python -m
   projections serve``'s app, one consumer group, a fresh database each time): events/s and the processes' CPU
   per event, for each count, in the same run.
4. Loads --scores scores (default 1,000,000) with their traces straight into the tables (COPY, rollup counted by
   the service's own domain code), then dashboard queries over HTTP (in-process ASGI, with auth): p50/p99.

Starts its own Tansu broker unless KAFKA_BOOTSTRAP_SERVERS is set; uses DATABASE_URL (or the local server on
127.0.0.1:5432, else the embedded PostgreSQL) in a fresh database that it drops at the end. Loopback only.

    .venv/bin/python bench/projections.py [--scores 1000000] [--queries 200] [--replicas 1,2]

``--pipeline REQUESTS`` measures only projections' CPU per ``TraceIngested`` of bench/pipeline.py's workload, in this
process and without a broker: ingest's own code maps REQUESTS of its OTLP requests (20 traces x 5 spans, ~1 KB
inputs, outputs and messages: ~18 KB an event) to the events it publishes, which are then decoded and applied in
batches of ``--pipeline-batch`` (default 200; the live consumer gets ~20-60 at a paced 1,000 spans/s, 200-1,100 in
a burst) against the real PostgreSQL; ``--pipeline-concurrency 2`` splits every batch per partition (default: as
the live consumer does). Prints process CPU (and system CPU) per trace event, the decode alone, and the backends'
CPU:

    .venv/bin/python bench/projections.py --pipeline 400 --pipeline-batch 60

``--mixed`` applies the mixed log of step 1 in this process instead (decode and ``apply_by_partition`` in batches of
``--batch``, no broker): process and PostgreSQL CPU per event, for A/B comparisons of the apply path.

``--skip-rebuild --skip-dashboards`` stops after the live apply; ``--statements`` adds the PostgreSQL backend CPU
of each statement kind of the live apply (on-CPU time of the backend around each statement, local server only);
``BENCH_CAPTURE=file`` with it writes every statement's parameters there, to replay batches elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

# This file's own name would shadow the projections package: drop its folder from the path, load broker.py by path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_spec = importlib.util.spec_from_file_location("bench_broker", _HERE / "broker.py")
assert _spec is not None and _spec.loader is not None
_broker_mod = importlib.util.module_from_spec(_spec)
sys.modules["bench_broker"] = _broker_mod
_spec.loader.exec_module(_broker_mod)
own_broker = _broker_mod.broker

from projections import MIGRATIONS, SCHEMA  # noqa: E402
from projections.adapters.rebuild import rebuild  # noqa: E402
from projections.config import Settings  # noqa: E402
from projections.entrypoints.app import create_app  # noqa: E402
from tally_shared import infra  # noqa: E402
from tally_shared.db import make_engine  # noqa: E402
from tally_shared.identity.store import MIGRATIONS as ID_MIGRATIONS  # noqa: E402
from tally_shared.identity.store import SCHEMA as ID_SCHEMA  # noqa: E402
from tally_shared.messaging import ensure_topics  # noqa: E402
from tally_shared.migrations import upgrade  # noqa: E402
from tally_shared.testing.plugin import basic_auth, create_project_with_key  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 30
TRACE_NAMES = ["chat", "search", "summarise", "agent", "classify"]
ENVS = ["prod", "staging", "dev"]
RELEASES = ["1.0", "1.1", "1.2", "2.0"]
TAGS = [f"tag-{i}" for i in range(10)]


def envelope(etype: str, project: str, key: str, occurred: datetime, payload: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": str(uuid.uuid4()), "type": etype, "version": 1, "occurred_at": occurred.isoformat(),
                         "project": project, "key": key, "payload": payload})


def generate(n_scores: int, project: str, seed: int = 7) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) for the whole log in event-time order, as a live system produces it (a trace, then its
    scores minutes later, interleaved with other traces), spread over DAYS days."""
    rnd = random.Random(seed)
    out: list[tuple[datetime, int, str, bytes, bytes]] = []
    n_traces = max(1, n_scores // 5)
    span = DAYS * 86400.0
    seq = 0

    def add(when: datetime, topic: str, key: bytes, value: bytes) -> None:
        nonlocal seq
        seq += 1
        out.append((when, seq, topic, key, value))

    add(T0, "tally.queues", b"q-bench", envelope("QueueCreated", project, "q-bench", T0, {
        "queue": {"id": "q-bench", "name": "Bench queue", "reviewers_per_item": 1}}))
    s = 0
    for i in range(n_traces):
        tid = f"t{i}"
        ts = T0 + timedelta(seconds=span * i / n_traces)
        key = tid.encode()
        add(ts, "tally.traces", key, envelope("TraceIngested", project, tid, ts, {
            "trace_id": tid,
            "trace": {"id": tid, "name": TRACE_NAMES[i % 5], "timestamp": ts.isoformat(),
                      "user_id": f"u{rnd.randrange(200)}", "environment": ENVS[i % 3], "release": RELEASES[i % 4],
                      "tags": rnd.sample(TAGS, 2), "input": {"q": f"question {i}"}, "output": "answer"},
            "observations": [
                {"id": f"{tid}-a", "trace_id": tid, "type": "GENERATION", "name": "llm", "start_time": ts.isoformat(),
                 "end_time": (ts + timedelta(seconds=1.5)).isoformat(), "model": "m",
                 "usage_details": {"input": 100, "output": 20}, "cost_details": {"total": 0.001}},
                {"id": f"{tid}-b", "trace_id": tid, "type": "TOOL", "name": "search",
                 "parent_observation_id": f"{tid}-a", "start_time": ts.isoformat()},
            ]}))
        for j in range(5):
            if s >= n_scores:
                break
            s += 1
            sts = ts + timedelta(minutes=5 + j)
            kind = j
            base = {"id": f"s{s}", "trace_id": tid, "timestamp": sts.isoformat()}
            if kind == 0:
                sc = {**base, "name": "helpfulness", "data_type": "NUMERIC", "value": rnd.randint(1, 5),
                      "source": "ANNOTATION", "author_user_id": f"rev{rnd.randrange(8)}", "config_id": "cfg-help"}
            elif kind == 1:
                v = rnd.random() < 0.7
                sc = {**base, "name": "correct", "data_type": "BOOLEAN", "value": 1.0 if v else 0.0,
                      "string_value": "True" if v else "False", "source": "ANNOTATION",
                      "author_user_id": f"rev{rnd.randrange(8)}"}
            elif kind == 2:
                lab = rnd.choice(["polite", "neutral", "rude"])
                sc = {**base, "name": "tone", "data_type": "CATEGORICAL", "string_value": lab,
                      "value": {"rude": 0, "neutral": 1, "polite": 2}[lab], "source": "ANNOTATION",
                      "author_user_id": f"rev{rnd.randrange(8)}"}
            elif kind == 3:
                sc = {**base, "name": "judge-quality", "data_type": "NUMERIC", "value": round(rnd.random(), 4),
                      "source": "EVAL", "evaluator_name": "judge-quality", "evaluator_version": "v1"}
            else:
                lab = rnd.choice(["polite", "neutral", "rude"])
                sc = {**base, "name": "judge-tone", "data_type": "CATEGORICAL", "string_value": lab,
                      "value": {"rude": 0, "neutral": 1, "polite": 2}[lab], "source": "EVAL"}
            add(sts, "tally.scores", key, envelope("ScoreRecorded", project, tid, sts, {"score": sc}))
        if i % 20 == 0:
            item = {"queue_id": "q-bench", "item_id": f"it-{i}", "object_type": "TRACE", "object_id": tid,
                    "trace_id": tid}
            add(ts, "tally.queues", key, envelope("QueueItemAdded", project, tid, ts, {"item": item,
                                                                                      "reason": "sampled"}))
            add(ts + timedelta(minutes=1), "tally.queues", key, envelope(
                "QueueItemLeased", project, tid, ts + timedelta(minutes=1), {
                    "item": item, "reviewer": "rev1", "lease_id": f"l{i}",
                    "expires_at": (ts + timedelta(minutes=30)).isoformat()}))
            add(ts + timedelta(minutes=6), "tally.queues", key, envelope(
                "QueueItemCompleted", project, tid, ts + timedelta(minutes=6),
                {"item": item, "reviewer": "rev1", "item_completed": True}))
    out.sort(key=lambda e: (e[0], e[1]))
    return [(topic, key, value) for _, _, topic, key, value in out]


async def produce(bootstrap: str, log: list[tuple[str, bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5,
                                max_batch_size=1024 * 1024, max_request_size=16 * 1024 * 1024)
    await producer.start()
    start = time.perf_counter()
    try:
        pending = []
        for topic, key, value in log:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - start


async def bulk_load(database_url: str, project: str, n_scores: int, seed: int = 11) -> tuple[int, float]:
    """Fill the read models with ``n_scores`` scores (and their traces and queue items) straight through COPY,
    counting the rollup with the service's own domain rules (``contributions``/``add_to``). Replaying a
    million-score log through the consumer would take far longer than this benchmark's budget; the dashboard
    queries only need the tables as the consumer would have left them."""
    import asyncpg

    from projections.domain.rollup import add_to, contributions, row_ids, trace_dims
    from tally_shared.db import plain_url

    rnd = random.Random(seed)
    start = time.perf_counter()
    n_traces = max(1, n_scores // 5)
    span = DAYS * 86400.0
    traces: list[Any] = []
    scores: list[Any] = []
    items: list[Any] = []
    deltas: dict[Any, list[Any]] = {}
    kinds = ["helpfulness", "correct", "tone", "judge-quality", "judge-tone"]
    labels = ["polite", "neutral", "rude"]
    for i in range(n_traces):
        tid = f"t{i}"
        ts = T0 + timedelta(seconds=span * i / n_traces)
        tr = {"name": TRACE_NAMES[i % 5], "user_id": f"u{rnd.randrange(200)}", "environment": ENVS[i % 3],
              "release": RELEASES[i % 4], "tags": rnd.sample(TAGS, 2)}
        traces.append((project, tid, tr["name"], ts, orjson.dumps({"q": f"question {i}"}),
                       orjson.dumps("answer"), orjson.dumps(tr["tags"]).decode(), tr["user_id"],
                       tr["environment"], tr["release"], "{}", ts, ts, ts))
        dims = trace_dims(tr, None)
        for j in range(5):
            if len(scores) >= n_scores:
                break
            sts = ts + timedelta(minutes=5 + j)
            name = kinds[j]
            lab = None
            if j == 0:
                value: float | None = float(rnd.randint(1, 5))
            elif j == 1:
                value = 1.0 if rnd.random() < 0.7 else 0.0
                lab = "True" if value else "False"
            elif j == 3:
                value = round(rnd.random(), 4)
            else:
                lab = rnd.choice(labels)
                value = float(labels.index(lab))
            dt = "NUMERIC" if j in (0, 3) else ("BOOLEAN" if j == 1 else "CATEGORICAL")
            source = "EVAL" if j >= 3 else "ANNOTATION"
            sc = {"name": name, "data_type": dt, "value": value, "string_value": lab, "source": source,
                  "config_id": "cfg-help" if j == 0 else None, "timestamp": sts}
            add_to(deltas, contributions(project, sc, dims), +1)
            scores.append((project, f"s{len(scores)}", name, dt, value, lab, tid, sc["config_id"], source,
                           None if source == "EVAL" else f"rev{rnd.randrange(8)}", sts, False, 0, sts, sts,
                           orjson.dumps(dims).decode()))
        if i % 20 == 0:
            items.append((project, "q-bench", f"it-{i}", "TRACE", tid, tid, ts, ts + timedelta(minutes=1),
                          ts + timedelta(minutes=6), ts + timedelta(minutes=6)))
    rollup = [(*row_ids(k), *k, m[0], m[1], m[2], m[3]) for k, m in deltas.items()]
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.execute(f"INSERT INTO {SCHEMA}.queues (project_id, id, name, data, created, event_ts) "  # noqa: S608
                           "VALUES ($1, 'q-bench', 'Bench queue', '{}', true, 0)", project)
        await conn.copy_records_to_table("traces", schema_name=SCHEMA, records=traces, columns=[
            "project_id", "id", "name", "timestamp", "input", "output", "tags", "user_id", "environment",
            "release", "field_ts", "created_at", "updated_at", "sort_ts"])
        await conn.copy_records_to_table("scores", schema_name=SCHEMA, records=scores, columns=[
            "project_id", "id", "name", "data_type", "value", "string_value", "trace_id", "config_id", "source",
            "author_user_id", "timestamp", "deleted", "event_ts", "created_at", "updated_at", "rolled_dims"])
        await conn.copy_records_to_table("score_rollup", schema_name=SCHEMA, records=rollup, columns=[
            "dims_id", "series_id", "project_id", "granularity", "dim_kind", "dim_value", "name", "bucket", "source",
            "config_id", "data_type", "value_key", "n", "n_value", "sum", "sum_sq"])
        await conn.copy_records_to_table("queue_items", schema_name=SCHEMA, records=items, columns=[
            "project_id", "queue_id", "item_id", "object_type", "object_id", "trace_id", "added_at",
            "first_leased_at", "completed_at", "last_event_at"])
        await conn.copy_records_to_table("queue_reviews", schema_name=SCHEMA, columns=[
            "project_id", "queue_id", "item_id", "reviewer", "leased_at", "completed_at"],
            records=[(r[0], r[1], r[2], "rev1", r[7], r[8]) for r in items])
        # the state autovacuum would reach on a live system: visibility map set (index-only counts), statistics
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return len(rollup), time.perf_counter() - start


async def replicated(args: argparse.Namespace, bootstrap: str, total: int, replicas: int) -> None:
    """The whole log applied by ``replicas`` projections processes in one consumer group, into a fresh database:
    events/s from the first applied event to the last, and the processes' CPU per event over that window."""
    server, name = args.server, f"tally_bench_r{replicas}_{uuid.uuid4().hex[:6]}"
    url = infra.create_database(server, name)
    procs: list[subprocess.Popen[bytes]] = []
    engine = make_engine(url, pool_size=1)
    try:
        await asyncio.to_thread(upgrade, ID_MIGRATIONS, url, ID_SCHEMA)
        await asyncio.to_thread(upgrade, MIGRATIONS, url, SCHEMA)
        group = f"projections-bench-r{replicas}-{uuid.uuid4().hex[:6]}"
        pe = text(f"SELECT count(*) FROM {SCHEMA}.processed_events")  # noqa: S608
        for _ in range(replicas):
            procs.append(subprocess.Popen(  # noqa: ASYNC220 (starts and returns; waits happen elsewhere)
                [sys.executable, __file__, "--worker", url, bootstrap, group, str(args.batch)]))
        ps = [psutil.Process(p.pid) for p in procs]

        def cpu() -> float:
            return sum(p.cpu_times().user + p.cpu_times().system for p in ps)

        first_t = first_n = first_cpu = None
        deadline = time.monotonic() + args.timeout
        n = 0
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                n = int((await conn.execute(pe)).scalar_one())
            now = time.perf_counter()
            if n and first_t is None:
                first_t, first_n, first_cpu = now, n, cpu()
            if n >= total:
                break
            await asyncio.sleep(0.1)
        end_t, end_cpu = time.perf_counter(), cpu()
        if first_t is None or first_n is None or first_cpu is None or n < total:
            print(f"{replicas} replica(s): did not finish: {n:,} of {total:,} applied")
            return
        rate = (n - first_n) / (end_t - first_t)
        per_event = (end_cpu - first_cpu) / max(1, n - first_n) * 1e6
        print(f"{replicas} replica(s): {rate:,.0f} events/s from the first applied event to the last; "
              f"{per_event:,.0f} µs CPU per event over the replicas ({rate / replicas:,.0f} events/s a process)")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        await engine.dispose()
        infra.drop_database(server, name)


def worker(url: str, bootstrap: str, group: str, batch: int) -> None:
    """One projections process of ``replicated``: the service's app and consumer until SIGTERM."""
    settings = Settings(database_url=url, kafka_bootstrap_servers=bootstrap, secret_key=secrets.token_urlsafe(32),
                        group_id=group, batch_max_records=batch)

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await stop.wait()

    asyncio.run(serve())


class StatementCost:
    """PostgreSQL backend CPU per statement kind of the live apply (``--statements``): the backend's on-CPU time
    (``/proc/<pid>/schedstat``, ns) read before and after each statement the unit of work runs, the claim, the
    transaction's start and its commit. Same machine only (the bench's PostgreSQL is local)."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    @staticmethod
    def _oncpu(pid: int) -> int:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])

    @staticmethod
    def capture(path: str, kind: str, params: Any) -> None:
        with open(path, "ab") as f:
            f.write(orjson.dumps({"kind": kind, "params": params}, default=str) + b"\n")

    def add(self, kind: str, ns: int) -> None:
        self.ns[kind] = self.ns.get(kind, 0) + ns
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def install(self) -> None:
        from projections.application.unit_of_work import UnitOfWork

        names: dict[int, str] = {}
        cost = self
        orig_enter, orig_exec, orig_claim, orig_commit = (UnitOfWork.__aenter__, UnitOfWork.execute,
                                                          UnitOfWork.claim, UnitOfWork.commit)

        async def pid_of(uow: Any) -> int:
            pid = getattr(uow, "_bench_pid", None)
            if pid is None:
                raw = await (await uow.session.connection()).get_raw_connection()
                pid = uow._bench_pid = raw.driver_connection.get_server_pid()
            return int(pid)

        def kind_of(uow: Any, stmt: Any) -> str:
            if not names:
                for name, v in vars(uow.sql).items():
                    names[id(getattr(v, "stmt", v))] = name
            return names.get(id(stmt), "other: " + str(stmt)[:40].replace("\n", " "))

        async def enter(uow: Any) -> Any:
            out = await orig_enter(uow)
            pid = await pid_of(uow)
            uow._bench_t0 = cost._oncpu(pid)  # the begin itself is counted with the commit
            return out

        async def execute(uow: Any, stmt: Any, params: Any = None) -> Any:
            pid = await pid_of(uow)
            t = cost._oncpu(pid)
            out = await orig_exec(uow, stmt, params)
            kind = kind_of(uow, stmt)
            cost.add(kind, cost._oncpu(pid) - t)
            if os.environ.get("BENCH_CAPTURE"):  # statements and parameters to a file, to replay them elsewhere
                cost.capture(os.environ["BENCH_CAPTURE"], kind, params)
            return out

        async def claim(uow: Any, ids: Any) -> Any:
            pid = await pid_of(uow)
            t = cost._oncpu(pid)
            out = await orig_claim(uow, ids)
            cost.add("claim", cost._oncpu(pid) - t)
            return out

        async def commit(uow: Any) -> None:
            pid = await pid_of(uow)
            t = cost._oncpu(pid)
            await orig_commit(uow)
            cost.add("commit", cost._oncpu(pid) - t)

        UnitOfWork.__aenter__ = enter
        UnitOfWork.execute = execute
        UnitOfWork.claim = claim
        UnitOfWork.commit = commit

    def report(self, events: int) -> None:
        total = sum(self.ns.values())
        print(f"PostgreSQL backend CPU by statement ({total / events / 1e3:,.1f} µs an event in these):")
        for kind, ns in sorted(self.ns.items(), key=lambda kv: -kv[1]):
            print(f"  {kind:<28} {self.calls[kind]:>6} calls {ns / 1e6:>9,.0f} ms {ns / events / 1e3:>7.1f} µs/event")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def backends_cpu(db_name: str, exclude: int) -> float:
    """CPU seconds of the PostgreSQL backends connected to ``db_name`` (the service's pool lives as long as the
    app, so its backends' counters cover the whole apply); the bench's own polling connection left out."""
    total = 0.0
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if p.info["pid"] != exclude and cmd.startswith("postgres:") and f" {db_name} " in cmd:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


async def run(args: argparse.Namespace, bootstrap: str, database_url: str) -> None:
    await ensure_topics(bootstrap)
    await asyncio.to_thread(upgrade, ID_MIGRATIONS, database_url, ID_SCHEMA)
    await asyncio.to_thread(upgrade, MIGRATIONS, database_url, SCHEMA)
    project = f"bench-{uuid.uuid4().hex[:6]}"
    await create_project_with_key(database_url, project)

    # -- 1. the mixed log through the broker and the live consumer ---------------------------------------------
    t = time.perf_counter()
    log = generate(args.log_scores, project)
    gen_s = time.perf_counter() - t
    counts: dict[str, int] = {}
    for topic, _, _ in log:
        counts[topic] = counts.get(topic, 0) + 1
    total = len(log)
    print(f"log: {total:,} events ({', '.join(f'{k} {v:,}' for k, v in sorted(counts.items()))}); "
          f"generated in {gen_s:.1f}s")
    prod_s = await produce(bootstrap, log)
    del log
    print(f"produced in {prod_s:.1f}s ({total / prod_s:,.0f} events/s)")

    engine = make_engine(database_url, pool_size=2)
    pe = text(f"SELECT count(*) FROM {SCHEMA}.processed_events")  # noqa: S608

    async def applied() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(pe)).scalar_one())

    settings = Settings(database_url=database_url, kafka_bootstrap_servers=bootstrap,
                        secret_key=secrets.token_urlsafe(32),
                        group_id=f"projections-bench-{uuid.uuid4().hex[:6]}", batch_max_records=args.batch)
    stmt_cost = None
    if args.statements:
        stmt_cost = StatementCost()
        stmt_cost.install()
    app = create_app(settings)
    cpu0 = time.process_time()
    db_name = database_url.rsplit("/", 1)[-1].split("?")[0]
    async with engine.connect() as conn:
        own_backend = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
    async with app.router.lifespan_context(app):
        first_t = first_n = None
        deadline = time.monotonic() + args.timeout
        n = 0
        while time.monotonic() < deadline:
            n = await applied()
            now = time.perf_counter()
            if n and first_t is None:
                first_t, first_n = now, n
            if n >= total:
                break
            await asyncio.sleep(0.25)
        end_t = time.perf_counter()
        pg_cpu = backends_cpu(db_name, exclude=own_backend)
    cpu = time.process_time() - cpu0
    if first_t is None or first_n is None or n < total:
        print(f"live apply did not finish: {n:,} of {total:,} applied")
        return
    rate = (n - first_n) / (end_t - first_t) if end_t > first_t else float("nan")
    print(f"live consumer: {total:,} events applied, {rate:,.0f} events/s from the first batch to the last "
          f"(one process, batches of up to {args.batch}); {cpu / total * 1e6:,.0f} µs CPU per event in the "
          f"process (group join and start-up included), {pg_cpu / total * 1e6:,.0f} µs in its PostgreSQL backends")
    if stmt_cost is not None:
        stmt_cost.report(total)
    for replicas in args.replicas:
        await replicated(args, bootstrap, total, replicas)

    # -- 2. rebuild from the log ----------------------------------------------------------------------------------
    if not args.skip_rebuild:
        report = await rebuild(engine, bootstrap, live_schema=SCHEMA, batch_size=args.rebuild_batch,
                               progress=lambda _m: None)
        projected = (args.scores * 1.23) / report.events_per_second if report.events_per_second else float("nan")
        print(f"rebuild: {report.events_read:,} events in {report.seconds:.1f}s -> "
              f"{report.events_per_second:,.0f} events/s (swap {report.swap_seconds:.2f}s); a log with "
              f"{args.scores:,} scores (~{args.scores * 1.23:,.0f} events) at that rate: ~{projected:.0f}s")

    # -- 3. dashboards over N scores --------------------------------------------------------------------------------
    if args.skip_dashboards:
        await engine.dispose()
        return
    big = f"bench-big-{uuid.uuid4().hex[:6]}"
    pk, sk = await create_project_with_key(database_url, big)
    auth = basic_auth(pk, sk)
    rollup_rows, load_s = await bulk_load(database_url, big, args.scores)
    print(f"\nloaded {args.scores:,} scores ({rollup_rows:,} rollup rows) in {load_s:.1f}s")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            week_from = (T0 + timedelta(days=DAYS - 7)).isoformat()
            queries: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
                "analytics day, all scores": lambda: client.get("/api/v1/analytics/scores", headers=auth),
                "analytics day, one name": lambda: client.get("/api/v1/analytics/scores", headers=auth,
                                                              params={"name": "helpfulness"}),
                "analytics hour, 7 days": lambda: client.get("/api/v1/analytics/scores", headers=auth, params={
                    "bucket": "hour", "from_timestamp": week_from, "name": "judge-quality"}),
                "analytics day, trace_name": lambda: client.get("/api/v1/analytics/scores", headers=auth,
                                                                params={"trace_name": "chat"}),
                "analytics day, user": lambda: client.get("/api/v1/analytics/scores", headers=auth,
                                                          params={"user_id": "u7"}),
                "analytics day, tag + 7 days": lambda: client.get("/api/v1/analytics/scores", headers=auth, params={
                    "tags": "tag-3", "from_timestamp": week_from}),
                "queue progress": lambda: client.get("/api/v1/progress/queues/q-bench", headers=auth),
                "trace list page": lambda: client.get("/api/public/traces", headers=auth, params={"limit": 50}),
                "scan: 2 filters, 7 days": lambda: client.get("/api/v1/analytics/scores", headers=auth, params={
                    "user_id": "u7", "environment": "prod", "from_timestamp": week_from}),
            }
            print(f"dashboard queries over {args.scores:,} scores ({args.queries} each, in-process HTTP with auth):")
            print(f"{'query':<30} {'p50 ms':>8} {'p99 ms':>8}")
            for name, call in queries.items():
                r = await call()
                assert r.status_code == 200, (name, r.status_code, r.text[:300])
                times = []
                for _ in range(args.queries):
                    s = time.perf_counter()
                    r = await call()
                    times.append((time.perf_counter() - s) * 1000)
                print(f"{name:<30} {statistics.median(times):>8.1f} {pct(times, 99):>8.1f}")
    await engine.dispose()


def pipeline_events(requests: int) -> list[tuple[int, bytes]]:
    """The ``TraceIngested`` events ingest publishes for ``requests`` of bench/pipeline.py's OTLP requests (20 traces
    of 5 spans with ~1 KB inputs, outputs and messages each): (partition of tally.traces, envelope bytes), mapped by
    ingest's own code in this process."""
    from ingest.domain import otel
    from ingest.domain.batch import Batch
    from ingest.domain.report import Report
    from projections.application.handlers import trace_slot

    spec = importlib.util.spec_from_file_location("bench_pipeline", _HERE / "pipeline.py")
    assert spec is not None and spec.loader is not None
    pipe = importlib.util.module_from_spec(spec)
    sys.modules["bench_pipeline"] = pipe
    spec.loader.exec_module(pipe)
    root, routed = pipe.names("inproc", 0)
    template = pipe.build_template(os.urandom(4), root, routed)
    project = f"bench-{uuid.uuid4().hex[:6]}"
    out: list[tuple[int, bytes]] = []
    for k in range(requests):
        batch, report = Batch("otel"), Report()
        req = otel.decode_protobuf(template.body(k))
        otel.add_spans(batch, report, otel.protobuf_spans(req, report, None))
        for m in batch.outgoing(project):
            out.append((trace_slot(m.key.decode()), m.value))
    return out


async def run_pipeline(args: argparse.Namespace, database_url: str) -> None:
    """``--pipeline``: projections' CPU per ``TraceIngested`` of bench/pipeline.py's workload, in this process (no
    broker): the lean decode of each envelope and ``apply_by_partition`` of batches of ``--pipeline-batch`` events
    against the real PostgreSQL. Reports process CPU per trace event (and per span: 5 a trace), the decode's share
    (timed alone afterwards over the same bytes), and the PostgreSQL backends' CPU."""
    import gc

    from projections.adapters.statements import Statements
    from projections.adapters.tables import make_tables
    from projections.application.handlers import Deps, apply_by_partition
    from projections.bootstrap import tune_gc
    from tally_shared.db import make_session_factory
    from tally_shared.records import decode_event

    await asyncio.to_thread(upgrade, ID_MIGRATIONS, database_url, ID_SCHEMA)
    await asyncio.to_thread(upgrade, MIGRATIONS, database_url, SCHEMA)
    events = pipeline_events(args.pipeline)
    size = sum(len(v) for _, v in events) / len(events)
    engine = make_engine(database_url, pool_size=4)
    deps = Deps(make_session_factory(engine), Statements(make_tables(SCHEMA)))
    n_batch = args.pipeline_batch
    batches = [events[i:i + n_batch] for i in range(0, len(events), n_batch)]
    db_name = database_url.rsplit("/", 1)[-1].split("?")[0]
    # warm up: connections, prepared statements, caches (its events are not counted)
    warm = pipeline_events(2)
    await apply_by_partition([decode_event(v, p) for p, v in warm], deps)
    tune_gc()
    cpu, system, wall, pg, dec = await measure_apply(batches, deps, db_name, args.pipeline_concurrency)
    n = len(events)
    print(f"pipeline events: {n:,} TraceIngested ({size:,.0f} B each, 5 observations), batches of {n_batch}, "
          f"{wall:.1f}s wall, gc thresholds {gc.get_threshold()}")
    print(f"process CPU: {cpu / n * 1e6:,.0f} µs per trace event ({cpu / n / 5 * 1e6:,.1f} µs/span; system "
          f"{system / n * 1e6:,.0f}); decode alone "
          f"{dec / n * 1e6:,.0f} µs per trace event; PostgreSQL backends {pg / n * 1e6:,.0f} µs per trace event")
    await engine.dispose()


async def measure_apply(batches: list[list[tuple[int, bytes]]], deps: Any, db_name: str,
                        concurrency: int | None = None) -> tuple[float, float, float, float, float]:
    """Decode and apply ``batches`` of (partition, record value) in this process, as the live consumer does
    (``concurrency``: partitions of a batch at a time, None: as it chooses), then decode them again alone.
    Returns process CPU and its system part, wall time, the database's backend CPU, and the decode's CPU (s)."""
    from projections.application.handlers import apply_by_partition
    from projections.entrypoints.consumers import PARTITIONS_AT_ONCE, concurrency_for
    from tally_shared.records import decode_event

    pg0 = backends_cpu(db_name, exclude=-1)
    os0, t0 = os.times(), time.perf_counter()
    for b in batches:
        await apply_by_partition([decode_event(v, p) for p, v in b], deps,
                                 concurrency=concurrency or concurrency_for(len(b), PARTITIONS_AT_ONCE))
    os1, wall = os.times(), time.perf_counter() - t0
    system = os1.system - os0.system
    cpu = (os1.user - os0.user) + system
    pg = backends_cpu(db_name, exclude=-1) - pg0
    d0 = time.process_time()
    for b in batches:
        [decode_event(v, p) for p, v in b]
    return cpu, system, wall, pg, time.process_time() - d0


async def run_mixed(args: argparse.Namespace, database_url: str) -> None:
    """``--mixed``: the live apply's mixed log (``generate``), decoded and applied in this process (no broker) in
    batches of ``--batch`` events as the live consumer gets them from a backlog: process CPU and PostgreSQL backend
    CPU per event, and events/s. Quieter than the live consumer for A/B comparisons of the apply path itself."""
    import gc

    from projections.adapters.statements import Statements
    from projections.adapters.tables import make_tables
    from projections.application.handlers import Deps
    from projections.bootstrap import tune_gc
    from tally_shared.db import make_session_factory
    from tally_shared.producer import partition
    from tally_shared.topics import ALL_TOPICS

    await asyncio.to_thread(upgrade, ID_MIGRATIONS, database_url, ID_SCHEMA)
    await asyncio.to_thread(upgrade, MIGRATIONS, database_url, SCHEMA)
    project = f"bench-{uuid.uuid4().hex[:6]}"
    parts = {t.name: tuple(range(t.partitions)) for t in ALL_TOPICS}
    events = [(partition(k, parts[topic], parts[topic]), v) for topic, k, v in generate(args.log_scores, project)]
    engine = make_engine(database_url, pool_size=4)
    deps = Deps(make_session_factory(engine), Statements(make_tables(SCHEMA)))
    batches = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
    db_name = database_url.rsplit("/", 1)[-1].split("?")[0]
    tune_gc()
    cpu, _, wall, pg, dec = await measure_apply(batches, deps, db_name)
    n = len(events)
    print(f"mixed log in-process: {n:,} events, batches of {args.batch}, {n / wall:,.0f} events/s, gc thresholds "
          f"{gc.get_threshold()}; process CPU {cpu / n * 1e6:,.1f} µs/event (decode alone {dec / n * 1e6:,.1f}), "
          f"PostgreSQL backends {pg / n * 1e6:,.1f} µs/event")
    await engine.dispose()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        worker(argv[1], argv[2], argv[3], int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", type=int, default=1_000_000, help="scores behind the dashboard queries")
    parser.add_argument("--log-scores", type=int, default=50_000,
                        help="scores in the mixed log replayed through the broker (live apply and rebuild)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rebuild-batch", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on the live apply after this long")
    parser.add_argument("--replicas", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                        help="also apply the log with this many projections processes, e.g. 1,2")
    parser.add_argument("--skip-dashboards", action="store_true", help="stop after the live apply and rebuild")
    parser.add_argument("--skip-rebuild", action="store_true", help="no rebuild from the log")
    parser.add_argument("--statements", action="store_true",
                        help="also report PostgreSQL backend CPU per statement kind of the live apply")
    parser.add_argument("--pipeline", type=int, default=0, metavar="REQUESTS",
                        help="only measure CPU per TraceIngested of bench/pipeline.py's workload in this process "
                             "(decode + apply of REQUESTS requests' events against PostgreSQL, no broker)")
    parser.add_argument("--mixed", action="store_true",
                        help="only apply the mixed log in this process (no broker): CPU per event, process and "
                             "PostgreSQL")
    parser.add_argument("--pipeline-batch", type=int, default=200, help="events per applied batch with --pipeline")
    parser.add_argument("--pipeline-concurrency", type=int, default=0,
                        help="partitions of a batch applied at a time with --pipeline (1: the batch whole; default: "
                             "as the live consumer does, consumers.concurrency_for)")
    args = parser.parse_args(argv)
    server = os.environ.get("DATABASE_URL")
    tmp = tempfile.TemporaryDirectory(prefix="tally-bench-pg-")
    if server is None:
        server = "postgresql://postgres@127.0.0.1:5432/postgres" if infra.port_open("127.0.0.1", 5432) else \
            infra.embedded_postgres_url(Path(tmp.name) / "pg")
    args.server = server
    name = f"tally_bench_{uuid.uuid4().hex[:8]}"
    database_url = infra.create_database(server, name)
    try:
        if args.pipeline:
            asyncio.run(run_pipeline(args, database_url))
            return 0
        if args.mixed:
            asyncio.run(run_mixed(args, database_url))
            return 0
        with own_broker() as bootstrap:
            asyncio.run(run(args, bootstrap, database_url))
    finally:
        infra.drop_database(server, name)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
