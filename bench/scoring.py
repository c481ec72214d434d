"""Scoring benchmark: single-score latency at a realistic review load, throughput at saturation (single requests
and batches of automated scores), and the time from HTTP 2xx to ScoreRecorded on Kafka.

Starts its own Tansu broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and a fresh database on DATABASE_URL's server
(default: the local PostgreSQL on 127.0.0.1:5432), runs ``python -m scoring serve`` in a subprocess with uvicorn,
and drives it over loopback only. Bounded: about a minute and a half.

    .venv/bin/python bench/scoring.py [--reviewers 20] [--realistic-seconds 30] [--saturation-seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from tally_shared import infra
from tally_shared.messaging import ensure_topics
from tally_shared.migrations import upgrade
from tally_shared.testing.plugin import basic_auth, create_project_with_key
from tally_shared.topics import SCORES, Topic

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def ms(v: float) -> str:
    return f"{v * 1000:.2f} ms"


class EventTap:
    """Records when each score id's ScoreRecorded reached the bench process from Kafka."""

    def __init__(self, bootstrap: str) -> None:
        self.seen: dict[str, float] = {}
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                          fetch_max_wait_ms=5)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        parts = [TopicPartition(SCORES.name, p) for p in range(SCORES.partitions)]
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    env = orjson.loads(r.value)
                    if env["type"] == "ScoreRecorded":
                        self.seen.setdefault(env["payload"]["score"]["id"], now)

    async def wait_for(self, ids: set[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05)):
            if ids <= self.seen.keys() or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


def server_seconds(r: httpx.Response) -> float:
    timing = r.headers.get("server-timing", "")
    for part in timing.split(";"):
        if part.startswith("dur="):
            return float(part[4:]) / 1000
    return float("nan")


async def floor(db_url: str, bootstrap: str, n: int = 200) -> None:
    """What one score cannot beat here: a durable PostgreSQL commit plus a Kafka acknowledgement (acks=all)."""
    import asyncpg
    from aiokafka import AIOKafkaProducer

    from tally_shared.db import plain_url

    conn = await asyncpg.connect(plain_url(db_url))
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id serial PRIMARY KEY, body text)")
    commits = []
    for _ in range(n):
        t0 = time.perf_counter()
        await conn.execute("INSERT INTO bench_floor (body) VALUES ($1)", "x" * 300)
        commits.append(time.perf_counter() - t0)
        await asyncio.sleep(0.005)
    await conn.execute("DROP TABLE bench_floor")
    await conn.close()
    floor_topic = Topic("bench.scoring-floor", 1, "bench only")
    await ensure_topics(bootstrap, [floor_topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=0)
    await producer.start()
    acks = []
    for i in range(n):
        t0 = time.perf_counter()
        await (await producer.send(floor_topic.name, b"x" * 600, key=f"floor-{i}".encode()))
        acks.append(time.perf_counter() - t0)
        await asyncio.sleep(0.005)
    await producer.stop()
    print(f"\n== floor on this machine now: PostgreSQL commit p50 {ms(pct(commits, 50))} p99 {ms(pct(commits, 99))}; "
          f"Kafka ack p50 {ms(pct(acks, 50))} p99 {ms(pct(acks, 99))}")


async def realistic(base: str, auth: dict[str, str], config: dict[str, Any], tap: EventTap, reviewers: int,
                    seconds: float) -> None:
    latencies: list[float] = []
    server: list[float] = []
    acked: dict[str, float] = {}
    errors = 0

    async def reviewer(n: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=10) as c:
            await asyncio.sleep(random.random())  # reviewers don't click in lockstep
            start = time.perf_counter()
            k = 0
            while time.perf_counter() - start < seconds:
                body = {"config_id": config["id"], "value": random.randint(1, 5), "trace_id": uuid.uuid4().hex,
                        "source": "ANNOTATION", "author_user_id": f"reviewer-{n}", "comment": "looks right",
                        "idempotency_key": f"r{n}-{k}-{uuid.uuid4().hex[:6]}"}
                t0 = time.perf_counter()
                r = await c.post("/api/v1/scores", json=body)
                t1 = time.perf_counter()
                if r.status_code == 201:
                    latencies.append(t1 - t0)
                    server.append(server_seconds(r))
                    acked[r.json()["id"]] = t1
                else:
                    errors += 1
                k += 1
                await asyncio.sleep(max(0.0, start + k - time.perf_counter()))

    await asyncio.gather(*(reviewer(n) for n in range(reviewers)))
    await tap.wait_for(set(acked))
    lags = [tap.seen[i] - t for i, t in acked.items() if i in tap.seen]
    print(f"\n== realistic load: {reviewers} reviewers x 1 score/s for {seconds:.0f} s "
          f"(POST /api/v1/scores, human score against a NUMERIC config)")
    print(f"   requests {len(latencies)} ok, {errors} errors; rate {len(latencies) / seconds:.1f}/s")
    print(f"   latency p50 {ms(pct(latencies, 50))}  p99 {ms(pct(latencies, 99))}  max {ms(max(latencies))}"
          f"  mean {ms(statistics.mean(latencies))}")
    print(f"   inside the service (Server-Timing): p50 {ms(pct(server, 50))}  p99 {ms(pct(server, 99))}  "
          f"max {ms(max(server))}")
    print(f"   2xx -> ScoreRecorded seen on Kafka: p50 {ms(pct(lags, 50))}  p99 {ms(pct(lags, 99))}  "
          f"max {ms(max(lags))}  ({len(lags)}/{len(acked)} seen; negative = the event was on Kafka before the "
          f"client read the 2xx)")


async def saturation_single(base: str, auth: dict[str, str], tap: EventTap, workers: int, seconds: float,
                            path: str) -> None:
    latencies: list[float] = []
    acked: dict[str, float] = {}
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=10) as c:
            while time.perf_counter() < stop_at:
                if path == "/api/public/scores":
                    body: dict[str, Any] = {"name": "auto", "value": random.random(), "traceId": uuid.uuid4().hex}
                else:
                    body = {"name": "auto", "value": random.random(), "trace_id": uuid.uuid4().hex}
                t0 = time.perf_counter()
                r = await c.post(path, json=body)
                t1 = time.perf_counter()
                if r.status_code in (200, 201):
                    latencies.append(t1 - t0)
                    acked[r.json()["id"]] = t1
                else:
                    errors += 1

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - t_start
    await tap.wait_for(set(acked))
    lags = [tap.seen[i] - t for i, t in acked.items() if i in tap.seen]
    print(f"\n== saturation, single requests: {workers} concurrent clients for {seconds:.0f} s (POST {path})")
    print(f"   {len(latencies) / elapsed:.0f} scores/s  ({len(latencies)} ok, {errors} errors)")
    print(f"   latency p50 {ms(pct(latencies, 50))}  p99 {ms(pct(latencies, 99))}")
    print(f"   2xx -> ScoreRecorded on Kafka: p50 {ms(pct(lags, 50))}  p99 {ms(pct(lags, 99))}  "
          f"({len(lags)}/{len(acked)} seen)")


async def saturation_batch(base: str, auth: dict[str, str], tap: EventTap, workers: int, batch: int,
                           seconds: float) -> None:
    latencies: list[float] = []
    acked: dict[str, float] = {}
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as c:
            while time.perf_counter() < stop_at:
                trace = uuid.uuid4().hex
                scores = [{"name": f"eval-{j % 5}", "value": random.random(), "trace_id": trace, "source": "EVAL",
                           "evaluator_name": "llm-judge", "evaluator_version": "3"} for j in range(batch)]
                t0 = time.perf_counter()
                r = await c.post("/api/v1/scores/batch", json={"scores": scores})
                t1 = time.perf_counter()
                if r.status_code == 200 and r.json()["rejected"] == 0:
                    latencies.append(t1 - t0)
                    for res in r.json()["results"]:
                        acked[res["id"]] = t1
                else:
                    errors += 1

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - t_start
    await tap.wait_for(set(acked), timeout=60)
    lags = [tap.seen[i] - t for i, t in acked.items() if i in tap.seen]
    print(f"\n== saturation, batches of automated scores: {workers} clients x {batch} scores/request for "
          f"{seconds:.0f} s (POST /api/v1/scores/batch)")
    print(f"   {len(acked) / elapsed:.0f} scores/s  ({len(latencies)} batches ok, {errors} failed)")
    print(f"   batch latency p50 {ms(pct(latencies, 50))}  p99 {ms(pct(latencies, 99))}")
    print(f"   2xx -> ScoreRecorded on Kafka: p50 {ms(pct(lags, 50))}  p99 {ms(pct(lags, 99))}  "
          f"({len(lags)}/{len(acked)} seen)")


def start_service(bootstrap: str, db_url: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    http_port = infra.free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "TALLY_SECRET_KEY": secrets.token_urlsafe(32), "TALLY_SCORING_PORT": str(http_port),
           "TALLY_SCORING_HOST": "127.0.0.1",
           "TALLY_SCORING_GROUP_ID": f"scoring-bench-{uuid.uuid4().hex[:6]}", "TALLY_SCORING_LOG_LEVEL": "warning",
           "TALLY_SCORING_DB_POOL_SIZE": "20"}
    subprocess.run([sys.executable, "-m", "scoring", "migrate"], env=env, check=True, cwd=ROOT)
    with open(tmp / "scoring.log", "wb") as log:
        service = subprocess.Popen([sys.executable, "-m", "scoring", "serve"], env=env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    with httpx.Client(base_url=base, timeout=5) as c:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if c.get("/readyz").status_code == 200:
                    return service, base
            time.sleep(0.1)
    service.kill()
    raise RuntimeError(f"scoring did not become ready; log: {tmp / 'scoring.log'}")


async def run(args: argparse.Namespace, bootstrap: str, base: str, auth: dict[str, str], service_pid: int,
              db_name: str, db_url: str) -> None:
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=5) as c:
        config = (await c.post("/api/v1/score-configs", json={
            "name": "correctness", "data_type": "NUMERIC", "min_value": 1, "max_value": 5, "step": 1,
            "guidelines": "5 = fully correct, 1 = wrong"})).json()
        # Warm up connections and the service's caches.
        for _ in range(50):
            await c.post("/api/v1/scores", json={"config_id": config["id"], "value": 3, "trace_id": "warm"})
    tap = EventTap(bootstrap)
    await tap.start()
    proc_info = psutil.Process(service_pid)
    print(f"scoring bench: broker {bootstrap}, database {db_name}, service pid {service_pid}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    try:
        await floor(db_url, bootstrap)

        async def phase(coro: Any) -> None:
            cpu0 = sum(proc_info.cpu_times()[:2])
            n0 = len(tap.seen)
            await coro
            cpu = sum(proc_info.cpu_times()[:2]) - cpu0
            n = max(1, len(tap.seen) - n0)
            print(f"   service CPU: {cpu:.1f} s for {n} scores = {cpu / n * 1000:.2f} ms per score")

        await phase(realistic(base, auth, config, tap, args.reviewers, args.realistic_seconds))
        await phase(saturation_single(base, auth, tap, args.workers, args.saturation_seconds, "/api/v1/scores"))
        await phase(saturation_single(base, auth, tap, args.workers, args.saturation_seconds, "/api/public/scores"))
        await phase(saturation_batch(base, auth, tap, args.batch_workers, args.batch_size, args.saturation_seconds))
    finally:
        await tap.stop()
    print(f"\nservice RSS after the run: {proc_info.memory_info().rss / 2**20:.0f} MiB; "
          f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reviewers", type=int, default=20)
    p.add_argument("--realistic-seconds", type=float, default=30)
    p.add_argument("--saturation-seconds", type=float, default=12)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--batch-workers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=500)
    args = p.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="tally-bench-scoring-"))
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            port = infra.free_port()
            proc = infra.start_tansu(port, log_path=tmp / "tansu.log")
            stack.callback(infra.stop_process, proc)
            bootstrap = f"127.0.0.1:{port}"
        server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        db_name = f"tally_bench_{uuid.uuid4().hex[:10]}"
        db_url = infra.create_database(server_url, db_name)
        stack.callback(infra.drop_database, server_url, db_name)
        from tally_shared.identity.store import MIGRATIONS as ID_MIGRATIONS
        from tally_shared.identity.store import SCHEMA as ID_SCHEMA

        upgrade(ID_MIGRATIONS, db_url, ID_SCHEMA)
        asyncio.run(ensure_topics(bootstrap))
        pk, sk = asyncio.run(create_project_with_key(db_url, f"bench-{uuid.uuid4().hex[:8]}"))
        service, base = start_service(bootstrap, db_url, tmp)

        def stop_service() -> None:
            service.terminate()
            try:
                service.wait(15)
            except subprocess.TimeoutExpired:
                service.kill()

        stack.callback(stop_service)
        asyncio.run(run(args, bootstrap, base, basic_auth(pk, sk), service.pid, db_name, db_url))


if __name__ == "__main__":
    main()
