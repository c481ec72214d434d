"""Two replicas each of projections and queue-router on one broker and one database, a stream of traces (with
observations), scores and routed queue items, and one replica of each SIGKILLed midway. Afterwards every trace,
observation, score and queue item is in every read model exactly once, and the score rollup (written per
partition by whichever replica owned it) equals a recount from the score rows: a delta applied twice (a
redelivered batch not deduplicated), lost, or counted under stale trace dimensions shows up as a difference."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from projections.domain.rollup import add_to, contributions
from tally_cli.routes import DEFAULT_PORTS
from tally_cli.stack import Stack, StackConfig
from tally_shared import infra
from tally_shared.db import plain_url
from tally_shared.envelope import make_envelope
from tally_shared.events import ObservationData, ScoreData, ScoreRecorded, ScoreUpdated, TraceData, TraceIngested
from tally_shared.identity.store import MIGRATIONS, SCHEMA
from tally_shared.migrations import upgrade
from tally_shared.testing.plugin import ARTIFACTS, basic_auth, create_project_with_key
from tally_shared.testing.wait import eventually
from tally_shared.topics import SCORES, TRACES

SERVICES = {"projections": "projections", "queue-router": "queue_router"}
TRACES_N = 240
ROUTED_EVERY = 3  # one trace in 3 is named for the routing rule
LOGS = ARTIFACTS / "scale-out-logs"


@dataclass
class Replica:
    service: str
    url: str
    proc: subprocess.Popen[bytes]


@pytest.fixture
def cluster(kafka_bootstrap: str, make_database: Callable[[], str]) -> Iterator[tuple[Stack, list[Replica]]]:
    db = make_database()
    upgrade(MIGRATIONS, db, SCHEMA)
    ports = {svc: infra.free_port() for svc in DEFAULT_PORTS}
    config = StackConfig(database_url=db, kafka_bootstrap=kafka_bootstrap, secret_key="t-" + uuid.uuid4().hex,
                         ports=ports, log_dir=LOGS, group_suffix=f"-{uuid.uuid4().hex[:8]}")
    stack = Stack(config, supervise=False)
    LOGS.mkdir(parents=True, exist_ok=True)
    replicas: list[Replica] = []
    try:
        for service, module in SERVICES.items():
            env = stack.env_for(service)
            subprocess.run([sys.executable, "-m", module, "migrate"], env=env, check=True, capture_output=True)
            for _ in range(2):
                port = infra.free_port()
                log = open(LOGS / f"{service}-{port}.log", "ab")
                prefix = "TALLY_" + service.upper().replace("-", "_") + "_"
                proc = subprocess.Popen([sys.executable, "-m", module, "serve"],
                                        env={**env, prefix + "PORT": str(port)}, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                replicas.append(Replica(service, f"http://127.0.0.1:{port}", proc))
        yield stack, replicas
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait(10)


async def _members(bootstrap: str, group: str) -> tuple[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        desc = await admin.describe_consumer_groups([group])
        _, _, state, _, _, members = desc[0].groups[0][:6]
        return state, len(members)
    finally:
        await admin.close()


def _trace(project: str, i: int, run: str, when: datetime) -> bytes:
    tid = f"so-{run}-{i}"
    name = f"routed-{run}" if i % ROUTED_EVERY == 0 else f"plain-{run}"
    payload = TraceIngested(trace_id=tid, trace=TraceData(
        id=tid, name=name, timestamp=when, user_id=f"u{i % 7}", environment=("prod", "dev")[i % 2],
        release="r1", tags=[f"t{i % 3}"], input={"q": i}, output="a"), observations=[
        ObservationData(id=f"{tid}-o{j}", trace_id=tid, type="SPAN", name=f"step {j}", start_time=when)
        for j in range(2)])
    return make_envelope(payload, project=project, key=tid, occurred_at=when).to_bytes()


def _score(project: str, i: int, run: str, when: datetime, *, update: bool = False) -> bytes:
    tid = f"so-{run}-{i}"
    score = ScoreData(id=f"s-{tid}", trace_id=tid, name=f"quality-{run}", data_type="NUMERIC",
                      value=((i + update) % 5) / 4, source="API", timestamp=when)
    payload = ScoreUpdated(score=score) if update else ScoreRecorded(score=score)
    return make_envelope(payload, project=project, key=tid,
                         occurred_at=when + timedelta(seconds=update)).to_bytes()


async def test_two_replicas_each_one_killed_every_row_once(cluster: tuple[Stack, list[Replica]],
                                                           kafka_bootstrap: str) -> None:
    stack, replicas = cluster
    db = stack.config.database_url
    run = uuid.uuid4().hex[:8]
    project = f"p-{run}"
    auth = basic_auth(*await create_project_with_key(db, project))
    proj = [r for r in replicas if r.service == "projections"]
    router = [r for r in replicas if r.service == "queue-router"]

    async def all_ready() -> bool:
        async with httpx.AsyncClient(timeout=2) as c:
            for r in replicas:
                try:
                    if (await c.get(r.url + "/readyz")).status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
        return all([await _members(kafka_bootstrap, stack.config.group(s)) == ("Stable", 2) for s in SERVICES])

    await eventually(all_ready, timeout=90, interval=0.5, what="two replicas of each service in stable groups")

    async with httpx.AsyncClient(base_url=router[1].url, headers=auth, timeout=10) as api:
        queue = (await api.post("/api/v1/queues", json={"name": f"scale {run}"})).raise_for_status().json()
        (await api.post(f"/api/v1/queues/{queue['id']}/rules", json={
            "name": "routed", "filter": {"groups": [{"conditions": [
                {"field": "name", "op": "eq", "value": f"routed-{run}"}]}]},
        })).raise_for_status()

    t0 = datetime.now(UTC) - timedelta(hours=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=False,
                                linger_ms=5)
    await producer.start()
    try:
        sent: list[tuple[str, bytes, bytes]] = []

        async def send(topic: str, value: bytes, key: bytes) -> None:
            sent.append((topic, value, key))
            await producer.send(topic, value, key=key)

        for i in range(TRACES_N):
            when = t0 + timedelta(seconds=i)
            tid = f"so-{run}-{i}".encode()
            # some scores arrive before their trace: counted first without dimensions, then re-counted
            if i % 4 == 0:
                await send(SCORES.name, _score(project, i, run, when), tid)
            await send(TRACES.name, _trace(project, i, run, when), tid)
            if i % 4 != 0:
                await send(SCORES.name, _score(project, i, run, when), tid)
            if i % 10 == 5:
                # at-least-once delivery upstream (a relay re-sending after a crash): the same events again
                for topic, value, key in sent[-8:]:
                    await producer.send(topic, value, key=key)
            if i == TRACES_N // 2:
                await producer.flush()
                # mid-stream, with batches in flight: no shutdown, no leaving the group
                for victim in (proj[0], router[0]):
                    os.killpg(victim.proc.pid, signal.SIGKILL)
                for victim in (proj[0], router[0]):
                    victim.proc.wait(10)
            if i % 20 == 0:
                await producer.flush()
                await asyncio.sleep(0.05)
        await producer.flush()
        await asyncio.sleep(1)
        for i in range(0, TRACES_N, 5):
            # a changed value, later (another batch): the old contribution must come off exactly once
            await send(SCORES.name, _score(project, i, run, t0 + timedelta(seconds=i), update=True),
                       f"so-{run}-{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    routed = len(range(0, TRACES_N, ROUTED_EVERY))
    conn = await asyncpg.connect(plain_url(db))
    try:
        async def count(sql: str) -> int:
            return int(await conn.fetchval(sql, project))

        async def settled() -> bool:
            return (await count("SELECT count(*) FROM projections.traces WHERE project_id = $1") == TRACES_N
                    and await count("SELECT count(*) FROM projections.scores WHERE project_id = $1") == TRACES_N
                    and await count("SELECT count(*) FROM projections.queue_items WHERE project_id = $1")
                    >= routed)

        await eventually(settled, timeout=90, interval=0.5, what="the survivors apply every partition's events")
        # give a double application (a redelivered batch) time to land before counting
        await asyncio.sleep(2)
        assert proj[1].proc.poll() is None and router[1].proc.poll() is None

        # every row once, in the tables
        assert await count("SELECT count(*) FROM projections.traces WHERE project_id = $1") == TRACES_N
        assert await count("SELECT count(*) FROM projections.observations WHERE project_id = $1") == 2 * TRACES_N
        assert await count("SELECT count(*) FROM projections.scores WHERE project_id = $1 AND NOT deleted") \
            == TRACES_N
        assert await count("SELECT count(*) FROM projections.queue_items WHERE project_id = $1") == routed
        assert await count("SELECT count(DISTINCT trace_id) FROM projections.queue_items WHERE project_id = $1") \
            == routed

        # every score counted under its trace's final dimensions
        rows = await conn.fetch(
            "SELECT s.*, t.name AS t_name, t.environment AS t_env, t.release AS t_release, t.user_id AS t_user, "
            "t.tags AS t_tags FROM projections.scores s JOIN projections.traces t "
            "ON t.project_id = s.project_id AND t.id = s.trace_id WHERE s.project_id = $1", project)
        assert len(rows) == TRACES_N
        expected: dict[Any, list[Any]] = {}
        for r in rows:
            dims = _json(r["rolled_dims"])
            assert (dims["trace_name"], dims["environment"], dims["user"], dims["tag"]) == (
                r["t_name"], r["t_env"], r["t_user"], sorted(_json(r["t_tags"]))), dict(r)
            add_to(expected, contributions(project, dict(r), dims), +1)
        # the rollup, summed over its shards, equals the recount
        got: dict[Any, tuple[int, int, Decimal, Decimal]] = {}
        for r in await conn.fetch(
                "SELECT project_id, granularity, dim_kind, dim_value, name, bucket, source, config_id, data_type, "
                "value_key, sum(n) AS n, sum(n_value) AS nv, sum(sum) AS s, sum(sum_sq) AS sq, count(*) AS shards "
                "FROM projections.score_rollup WHERE project_id = $1 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10", project):
            if r["n"] or r["nv"]:
                got[tuple(r[:10])] = (int(r["n"]), int(r["nv"]), Decimal(r["s"]), Decimal(r["sq"]))
        want = {k: (m[0], m[1], m[2], m[3]) for k, m in expected.items() if m[0] or m[1]}
        assert got == want
    finally:
        await conn.close()

    # and through the public APIs of the survivors
    async with httpx.AsyncClient(base_url=proj[1].url, headers=auth, timeout=10) as api:
        for name, n in ((f"routed-{run}", routed), (f"plain-{run}", TRACES_N - routed)):
            body = (await api.get("/api/public/traces", params={"name": name, "limit": 1})).json()
            assert body["meta"]["totalItems"] == n
        body = (await api.get("/api/public/observations", params={"limit": 1})).json()
        assert body["meta"]["totalItems"] == 2 * TRACES_N
        body = (await api.get("/api/v1/analytics/scores", params={"name": f"quality-{run}"})).json()
        assert [s["count"] for s in body["series"]] == [TRACES_N]
        body = (await api.get("/api/v1/analytics/scores", params={"name": f"quality-{run}",
                                                                  "trace_name": f"routed-{run}"})).json()
        assert [s["count"] for s in body["series"]] == [routed]
        body = (await api.get(f"/api/v1/progress/queues/{queue['id']}")).json()
        assert body["total_items"] == routed
    async with httpx.AsyncClient(base_url=router[1].url, headers=auth, timeout=10) as api:
        body = (await api.get(f"/api/v1/queues/{queue['id']}/items", params={"limit": 500})).json()
        items = body["data"] if isinstance(body, dict) else body
        assert len(items) == routed
        assert len({i.get("object_id") or i.get("objectId") for i in items}) == routed


def _json(value: Any) -> Any:
    import orjson

    return orjson.loads(value) if isinstance(value, str | bytes) else value
