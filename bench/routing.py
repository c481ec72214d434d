"""Routing throughput of one queue-router process: trace events/s against 10, 100 and 1000 active rules.

Three figures per rule count:
  * match only: summary merge + compiled-rule evaluation in memory (the CPU part of routing);
  * router: the batch handler as the consumer runs it (claim event ids with tombstones and rule versions, read
    summaries and scores, merge, evaluate, write summaries, add items with slots, decisions and outbox rows) on
    the real PostgreSQL, 500 events a batch, with the CPU of this process per event;
  * decode: envelope bytes -> validated payload, which the Kafka subscriber does before handing a batch over.
End to end per process is about 1 / (1/router + 1/decode) events/s (Kafka fetch on top). The last column is
the 1-minute load average when the row was printed (2 shared cores: read the rates against it).

With --kafka N: end to end through the broker as well. N trace events (100 rules) are published to tally.traces
on an embedded Tansu broker first, then one router process (the service app: batch consumer, outbox relay)
consumes them; the rate is events over the time between the first and the last batch committed.

Usage: .venv/bin/python bench/routing.py [--events 20000] [--rules 10,100,1000] [--kafka 20000]
Uses DATABASE_URL's server (default: local PostgreSQL), in a fresh database dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from queue_router import MIGRATIONS, SCHEMA
from queue_router.adapters.decoding import decode_routed
from queue_router.adapters.rule_cache import RuleCache
from queue_router.adapters.unit_of_work import unit_of_work
from queue_router.application.deps import Caller, Deps
from queue_router.application.queues import create_queue
from queue_router.application.routing import RouterDeps, route_batch
from queue_router.application.rules import create_rule
from queue_router.bootstrap import tune_gc
from queue_router.domain.events import RoutedTraceIngested
from queue_router.domain.models import QueueCreate, RuleCreate
from queue_router.domain.summary import Summary, apply_observation, apply_trace, recompute
from tally_shared import infra
from tally_shared.db import make_engine, make_session_factory
from tally_shared.envelope import Envelope, make_envelope
from tally_shared.events import ObservationData, ScoreData, ScoreRecorded, TraceData, TraceIngested
from tally_shared.migrations import upgrade

# Vocabularies large enough that adding rules adds targets, not a larger share of matching traffic: the
# scaling figures then measure the rule count, not a growing number of items written.
NAMES = [f"agent-{i}" for i in range(4000)]
TAGS = [f"tag-{i}" for i in range(3000)]
TOOLS = 600
ENVS = ["prod", "staging", "dev", "canary"]
TIERS = ["free", "pro", "gold", "platinum"]


def make_rule(i: int, rnd: random.Random) -> dict[str, Any]:
    """A mix of realistic rules: most are anchored on a selective field, some only on numbers or metadata."""
    kind = i % 10
    c: list[dict[str, Any]]
    if kind in (0, 1, 2):
        c = [{"field": "name", "op": "eq", "value": rnd.choice(NAMES)},
             {"field": "latency", "op": "gt", "value": rnd.choice([3, 4, 5])}]
    elif kind in (3, 4):
        c = [{"field": "tags", "op": "any_of", "value": rnd.sample(TAGS, 2)},
             {"field": "environment", "op": "eq", "value": "prod"}]
    elif kind == 5:
        c = [{"field": "score", "name": f"eval-{i % 7}", "op": "lt", "value": 0.3},
             {"field": "environment", "op": "in", "value": ["prod", "canary"]}]
    elif kind == 6:
        c = [{"field": "has_error", "op": "eq", "value": True},
             {"field": "metadata", "key": "customer.tier", "op": "eq", "value": rnd.choice(TIERS)}]
    elif kind == 7:
        c = [{"field": "observation_names", "op": "contains", "value": f"tool-{i % TOOLS}"},
             {"field": "total_cost", "op": "gte", "value": 0.15}]
    elif kind == 8:
        c = [{"field": "user_id", "op": "eq", "value": f"user-{rnd.randrange(5000)}"}]
    else:
        # unanchored: evaluated on every event
        c = [{"field": "total_tokens", "op": "gt", "value": 9000 + i},
             {"field": "metadata", "key": "customer.tier", "op": "in", "value": ["gold", "platinum"]}]
    return {"name": f"rule-{i}", "filter": {"groups": [{"conditions": c}]},
            "sample_rate": rnd.choice([1.0, 0.5, 0.1]), "daily_cap": rnd.choice([None, None, 1000])}


def make_events(project: str, n: int, rnd: random.Random) -> list[Envelope]:
    out: list[Envelope] = []
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(n):
        tid = f"tr-{uuid.uuid4().hex}"
        start = t0 + timedelta(seconds=i)
        observations = [
            ObservationData(id=f"{tid}-{j}", trace_id=tid, type=rnd.choice(["GENERATION", "TOOL", "SPAN"]),
                            name=f"tool-{rnd.randrange(TOOLS)}", start_time=start,
                            end_time=start + timedelta(seconds=rnd.random() * 6),
                            level="ERROR" if rnd.random() < 0.03 else "DEFAULT",
                            usage_details={"input": rnd.randrange(4000), "output": rnd.randrange(800)},
                            cost_details={"total": rnd.random() / 10})
            for j in range(2)
        ]
        trace = TraceData(id=tid, name=rnd.choice(NAMES), timestamp=start, tags=rnd.sample(TAGS, 2),
                          environment=rnd.choice(ENVS), user_id=f"user-{rnd.randrange(5000)}",
                          session_id=f"s-{rnd.randrange(2000)}", release="v1.2.3",
                          metadata={"customer": {"tier": rnd.choice(TIERS)}, "region": "eu"})
        out.append(make_envelope(TraceIngested(trace_id=tid, trace=trace, observations=observations),
                                 project=project, key=tid, occurred_at=start))
        if rnd.random() < 0.1:  # one trace in ten gets an automated score a little later
            out.append(make_envelope(ScoreRecorded(score=ScoreData(
                id=str(uuid.uuid4()), name=f"eval-{rnd.randrange(7)}", data_type="NUMERIC",
                value=rnd.random(), trace_id=tid, source="EVAL", evaluator_name="judge",
                timestamp=start)), project=project, key=tid, occurred_at=start + timedelta(seconds=30)))
    return out


def backends_cpu(db_name: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to ``db_name`` (the bench's pool keeps its connections
    for the whole run, so the difference over a phase is what its statements cost the server)."""
    out: dict[int, float] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if cmd.startswith("postgres:") and f" {db_name} " in cmd:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.info["pid"]] = t.user + t.system
    return out


def cpu_since(db_name: str, before: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in backends_cpu(db_name).items())


async def bench(url: str, n_events: int, rule_counts: list[int]) -> None:
    # Built as the service builds its batch pool (bootstrap: no pre-ping, a round trip per transaction less).
    engine = make_engine(url, pool_size=2, pre_ping=False)
    sessions = make_session_factory(engine)
    rnd = random.Random(7)
    # CPU seconds of this process are reported beside wall-clock rates: on a shared machine they say what the
    # router itself costs (PostgreSQL's own CPU is not in them).
    print(f"{'rules':>6} {'events':>7} {'match ev/s':>11} {'match ev/cpu-s':>15} {'router ev/s':>12} "
          f"{'router cpu us/ev':>17} {'pg cpu us/ev':>13} {'decode ev/s':>12} {'decode cpu us/ev':>17} "
          f"{'matched':>8} {'added':>6} {'batch p50 ms':>12} "
          f"{'batch p99 ms':>12} {'load':>5}")
    for n_rules in rule_counts:
        project = f"bench-{n_rules}-{uuid.uuid4().hex[:6]}"
        deps = Deps(unit_of_work(sessions), RuleCache())
        q = await create_queue(deps, project, QueueCreate(name="bench", reviewers_per_item=2), "bench",
                                 Caller({}))
        for i in range(n_rules):
            await create_rule(deps, project, q["id"], RuleCreate.model_validate(make_rule(i, rnd)), "bench")
        events = make_events(project, n_events, rnd)
        # As the consumer hands them over: decoded by the router's decoder.
        pairs: list[Any] = [decode_routed(e.to_bytes()) for e in events]
        traces = sum(1 for _, p in pairs if isinstance(p, TraceIngested | RoutedTraceIngested))
        # The service tunes its collector at startup; here the whole workload is built up front too (a consumer never
        # holds 20,000 decoded events): out of the collector's reach, as the service's startup objects are.
        tune_gc()

        # decode: what the subscriber does per message (the router's decoder)
        raw = [e.to_bytes() for e in events]
        t = time.perf_counter()
        c = time.process_time()
        for b in raw:
            decode_routed(b)
        decode_rate = len(raw) / (time.perf_counter() - t)
        decode_cpu_us = (time.process_time() - c) / len(raw) * 1e6

        # match only: merge into a fresh summary and evaluate the compiled rules
        router_deps = RouterDeps(unit_of_work(sessions), RuleCache())
        async with sessions() as s:
            pr = (await router_deps.rules.get_many(s, [project]))[project]
        matched = 0
        t = time.perf_counter()
        c = time.process_time()
        for env, p in pairs:
            if isinstance(p, RoutedTraceIngested):
                summ = Summary(project_id=project, trace_id=p.trace_id)
                if p.trace is not None:
                    apply_trace(summ, p.trace, env.occurred_at.timestamp())
                for o in p.observations:
                    apply_observation(summ, o, env.occurred_at.timestamp())
                recompute(summ)
                matched += bool(pr.ruleset.match(summ.view()))
        match_rate = traces / (time.perf_counter() - t)
        match_cpu_rate = traces / (time.process_time() - c)

        # the router, on the database
        lat: list[float] = []
        added = 0
        db_name = url.rsplit("/", 1)[1].split("?")[0]
        pg_before = backends_cpu(db_name)
        t = time.perf_counter()
        c = time.process_time()
        for i in range(0, len(pairs), 500):
            b0 = time.perf_counter()
            res = await route_batch(pairs[i:i + 500], router_deps)
            lat.append((time.perf_counter() - b0) * 1000)
            added += len(res.added)
        router_rate = len(pairs) / (time.perf_counter() - t)
        router_cpu_us = (time.process_time() - c) / len(pairs) * 1e6
        pg_cpu_us = cpu_since(db_name, pg_before) / len(pairs) * 1e6
        lat.sort()
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"{n_rules:>6} {len(pairs):>7} {match_rate:>11,.0f} {match_cpu_rate:>15,.0f} {router_rate:>12,.0f} "
              f"{router_cpu_us:>17.0f} {pg_cpu_us:>13.0f} {decode_rate:>12,.0f} {decode_cpu_us:>17.1f} "
              f"{matched / traces:>8.1%} {added:>6} {p50:>12.1f} "
              f"{p99:>12.1f} {os.getloadavg()[0]:>5.1f}", flush=True)
    await engine.dispose()


async def bench_kafka(url: str, n_events: int, n_rules: int) -> None:
    from prometheus_client import CollectorRegistry
    from sqlalchemy import text

    from queue_router.config import Settings
    from queue_router.entrypoints.app import create_app
    from tally_shared.messaging import ensure_topics, make_broker, publish
    from tally_shared.topics import SCORES, TRACES

    port = infra.free_port()
    tansu = infra.start_tansu(port, log_path=Path(f"/tmp/tally-bench-tansu-{port}.log"))
    kafka = f"127.0.0.1:{port}"
    try:
        await ensure_topics(kafka)
        engine = make_engine(url, pool_size=2)
        sessions = make_session_factory(engine)
        rnd = random.Random(9)
        project = f"bench-kafka-{uuid.uuid4().hex[:6]}"
        deps = Deps(unit_of_work(sessions), RuleCache())
        q = await create_queue(deps, project, QueueCreate(name="bench", reviewers_per_item=2), "bench",
                                 Caller({}))
        for i in range(n_rules):
            await create_rule(deps, project, q["id"], RuleCreate.model_validate(make_rule(i, rnd)), "bench")
        events = make_events(project, n_events, rnd)
        producer = make_broker(kafka, service="bench", registry=CollectorRegistry())
        await producer.connect()
        t = time.perf_counter()
        traces = [e for e in events if e.type == "TraceIngested"]
        scores = [e for e in events if e.type != "TraceIngested"]
        for i in range(0, len(traces), 2000):
            await publish(producer, TRACES, traces[i:i + 2000])
        await publish(producer, SCORES, scores)
        print(f"kafka: published {len(events)} events in {time.perf_counter() - t:.1f} s", flush=True)
        await producer.stop()
        count = text("SELECT count(*), min(processed_at), max(processed_at) FROM queue_router.processed_events "
                     "WHERE consumer = 'queue-router'")
        async with sessions() as s:
            before = (await s.execute(count)).one()[0]
        t0 = datetime.now(UTC)
        db_name = url.rsplit("/", 1)[1].split("?")[0]
        # wall time the consumer spends in the router's handler (the rest: fetching, decoding, committing offsets)
        from queue_router.entrypoints import consumers
        busy = [0.0, 0.0]  # wall, CPU
        routed = consumers.route_batch

        async def timed(batch: Any, deps: RouterDeps) -> Any:
            w, c = time.perf_counter(), time.process_time()
            try:
                return await routed(batch, deps)
            finally:
                busy[0] += time.perf_counter() - w
                busy[1] += time.process_time() - c

        consumers.route_batch = timed  # type: ignore[assignment]
        cpu0, pg0 = time.process_time(), backends_cpu(db_name)
        app = create_app(Settings(database_url=url, kafka_bootstrap_servers=kafka, secret_key=secrets.token_urlsafe(32),
                                  group_id=f"bench-{uuid.uuid4().hex[:6]}"))
        async with app.router.lifespan_context(app):
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                async with sessions() as s:
                    n, _, _ = (await s.execute(count)).one()
                if n - before >= len(events):
                    break
                await asyncio.sleep(0.5)
            # the app's pool is still open: its backends' counters cover the whole run
            pg_cpu = cpu_since(db_name, pg0)
        cpu = time.process_time() - cpu0
        async with sessions() as s:
            start, end, done = (await s.execute(text(
                "SELECT min(processed_at), max(processed_at), count(*) FROM queue_router.processed_events "
                "WHERE consumer = 'queue-router' AND processed_at >= :t0"), {"t0": t0})).one()
            items = (await s.execute(text("SELECT count(*) FROM queue_router.items WHERE project_id = :p"),
                                     {"p": project})).scalar_one()
            # one transaction per batch, so processed_at (the transaction's start) groups a batch
            batches = (await s.execute(text(
                "SELECT count(*) FROM queue_router.processed_events WHERE consumer = 'queue-router' "
                "AND processed_at >= :t0 GROUP BY processed_at"), {"t0": t0})).scalars().all()
        span = (end - start).total_seconds() if start and end else float("nan")
        print(f"kafka end to end, {n_rules} rules: {done} events applied in {span:.1f} s after the first batch "
              f"-> {done / span:,.0f} events/s; {items} items added; {len(batches)} batches; CPU per event: "
              f"{cpu / done * 1e6:,.0f} µs in this process (consumer, decode, router, outbox relay, start-up), "
              f"{pg_cpu / done * 1e6:,.0f} µs in PostgreSQL; in the router's handler: {busy[0]:.1f} s wall, "
              f"{busy[1] / done * 1e6:,.0f} µs CPU per event", flush=True)
        consumers.route_batch = routed
        await engine.dispose()
    finally:
        infra.stop_process(tansu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rules", default="10,100,1000")
    ap.add_argument("--kafka", type=int, default=0, help="also run end to end through the broker, N events")
    args = ap.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"tally_bench_{uuid.uuid4().hex[:8]}"
    url = infra.create_database(server, name)
    try:
        upgrade(MIGRATIONS, url, SCHEMA)
        asyncio.run(bench(url, args.events, [int(x) for x in args.rules.split(",")]))
        if args.kafka:
            asyncio.run(bench_kafka(url, args.kafka, 100))
    finally:
        infra.drop_database(server, name)


if __name__ == "__main__":
    main()
