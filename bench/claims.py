"""Next-item latency: 50 reviewers on one queue, over real HTTP against `python -m queue_router serve`.

Phase 1 (steady): each reviewer asks for its next item every 2 seconds (and completes it).
Phase 2 (burst): all 50 ask at the same instant, several rounds; then every lease is completed.
Every lease handed out is recorded; the run checks that no (item, slot) was handed out twice and that no item
went twice to one reviewer.

Usage: .venv/bin/python bench/claims.py [--seconds 30] [--reviewers 50] [--bursts 20]
Starts an embedded broker (Tansu) and uses DATABASE_URL's server (default: local PostgreSQL), fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from queue_router import MIGRATIONS, SCHEMA
from tally_shared import infra
from tally_shared.identity.store import MIGRATIONS as IDENTITY_MIGRATIONS
from tally_shared.identity.store import SCHEMA as IDENTITY_SCHEMA
from tally_shared.messaging import ensure_topics
from tally_shared.migrations import upgrade
from tally_shared.testing.plugin import basic_auth, create_project_with_key


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


def summary(name: str, xs: list[float]) -> str:
    return (f"{name:<28} n={len(xs):>5}  p50={pct(xs, .5):6.2f} ms  p95={pct(xs, .95):6.2f} ms  "
            f"p99={pct(xs, .99):6.2f} ms  max={max(xs):6.2f} ms")


async def run(base: str, auth: dict[str, str], seconds: float, n_reviewers: int, bursts: int,
              server: psutil.Process) -> int:
    limits = httpx.Limits(max_connections=n_reviewers * 2, max_keepalive_connections=n_reviewers * 2)
    async with httpx.AsyncClient(base_url=base, headers=auth, limits=limits, timeout=30) as c:
        r = await c.post("/api/v1/queues", json={"name": f"bench-{uuid.uuid4().hex[:6]}", "reviewers_per_item": 2})
        qid = r.json()["id"]
        n_items = int(n_reviewers * seconds / 2 / 2) + n_reviewers * bursts + 200
        for i in range(0, n_items, 1000):
            r = await c.post(f"/api/v1/queues/{qid}/items", json={"items": [
                {"object_id": f"t-{j}"} for j in range(i, min(n_items, i + 1000))]})
            r.raise_for_status()
        leases: list[tuple[str, int, str]] = []

        retries = 0

        async def post(path: str, body: dict[str, Any]) -> httpx.Response:
            # uvicorn closes idle keep-alive connections after 5 s; a request racing that close is retried once.
            nonlocal retries
            for _ in range(3):
                try:
                    return await c.post(path, json=body)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    retries += 1
            return await c.post(path, json=body)

        async def next_item(who: str) -> tuple[float, dict[str, Any] | None]:
            t = time.perf_counter()
            r = await post(f"/api/v1/queues/{qid}/next", {"reviewer": who})
            ms = (time.perf_counter() - t) * 1000
            if r.status_code == 204:
                return ms, None
            r.raise_for_status()
            body: dict[str, Any] = r.json()
            leases.append((body["item"]["id"], body["lease"]["slot"], who))
            return ms, body

        async def complete(who: str, got: dict[str, Any]) -> None:
            r = await post(f"/api/v1/queues/{qid}/items/{got['item']['id']}/complete",
                           {"reviewer": who, "lease_id": got["lease"]["id"]})
            r.raise_for_status()

        # warm up connections and caches
        for w in range(n_reviewers):
            _, got = await next_item(f"warm-{w}")
            if got:
                await complete(f"warm-{w}", got)

        steady: list[float] = []
        cpu0 = server.cpu_times()
        stop = time.perf_counter() + seconds

        async def reviewer(who: str) -> None:
            await asyncio.sleep(random.random() * 2)
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                ms, got = await next_item(who)
                steady.append(ms)
                if got:
                    await complete(who, got)
                await asyncio.sleep(max(0.0, 2.0 - (time.perf_counter() - t0)))

        await asyncio.gather(*(reviewer(f"r{i:02d}") for i in range(n_reviewers)))
        print(summary(f"steady ({n_reviewers} x every 2 s)", steady))
        cpu1 = server.cpu_times()
        used = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) * 1000
        print(f"server CPU per next+complete pair (steady): {used / max(1, len(steady)):.2f} ms")

        burst: list[float] = []
        for _ in range(bursts):
            res = await asyncio.gather(*(next_item(f"r{i:02d}") for i in range(n_reviewers)))
            burst.extend(ms for ms, _ in res)
            await asyncio.gather(*(complete(f"r{i:02d}", got) for i, (_, got) in enumerate(res) if got))
        print(summary(f"burst ({n_reviewers} at once) x{bursts}", burst))

        slots = Counter((item, slot) for item, slot, _ in leases)
        pairs = Counter((item, who) for item, _, who in leases)
        twice = sum(1 for v in slots.values() if v > 1)
        same = sum(1 for v in pairs.values() if v > 1)
        print(f"leases handed out: {len(leases)}; slots handed out twice: {twice}; items twice to one reviewer: "
              f"{same}; requests retried after a closed keep-alive connection: {retries}")
        prog = (await c.get(f"/api/v1/queues/{qid}/progress")).json()
        print(f"queue progress: {prog['items']}; reviewer completions: "
              f"{sum(r['counts']['completed'] for r in prog['reviewers'])}")
        return 1 if twice or same else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--reviewers", type=int, default=50)
    ap.add_argument("--bursts", type=int, default=20)
    ap.add_argument("--no-relay", action="store_true", help="run the service without its outbox relay")
    args = ap.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"tally_bench_{uuid.uuid4().hex[:8]}"
    kafka_port, port = infra.free_port(), infra.free_port()
    tansu = infra.start_tansu(kafka_port, log_path=Path(f"/tmp/{name}-tansu.log"))
    url = infra.create_database(server, name)
    svc = None
    try:
        kafka = f"127.0.0.1:{kafka_port}"
        asyncio.run(ensure_topics(kafka))
        upgrade(IDENTITY_MIGRATIONS, url, IDENTITY_SCHEMA)
        upgrade(MIGRATIONS, url, SCHEMA)
        public, secret = asyncio.run(create_project_with_key(url, f"bench-{uuid.uuid4().hex[:6]}"))
        env = {**os.environ, "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": kafka,
               "TALLY_SECRET_KEY": secrets.token_urlsafe(32),
               "TALLY_QUEUE_ROUTER_PORT": str(port), "TALLY_QUEUE_ROUTER_RUN_CONSUMERS": "false",
               "TALLY_QUEUE_ROUTER_LOG_LEVEL": "warning", "TALLY_QUEUE_ROUTER_DB_POOL_SIZE": "20",
               **({"TALLY_QUEUE_ROUTER_RUN_OUTBOX_RELAY": "false"} if args.no_relay else {})}
        svc = subprocess.Popen([sys.executable, "-m", "queue_router", "serve"], env=env)
        infra.wait_for_port("127.0.0.1", port, timeout=60)
        print(f"machine load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        return asyncio.run(run(f"http://127.0.0.1:{port}", basic_auth(public, secret), args.seconds,
                               args.reviewers, args.bursts, psutil.Process(svc.pid)))
    finally:
        if svc is not None:
            infra.stop_process(svc)
        infra.stop_process(tansu)
        infra.drop_database(server, name)


if __name__ == "__main__":
    raise SystemExit(main())
