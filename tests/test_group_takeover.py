"""Two replicas of one consumer (two projections processes in one consumer group); one is SIGKILLed without
leaving the group. Its partitions must reach the survivor, which then applies the events on them: nothing waits
for the dead replica. Prints the takeover time (kill until the survivor has applied an event published to every
partition after the kill), which the group timings in ``tally_shared.messaging`` bound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tally_cli.routes import DEFAULT_PORTS
from tally_cli.stack import Stack, StackConfig
from tally_shared import infra
from tally_shared.envelope import make_envelope
from tally_shared.events import TraceData, TraceIngested
from tally_shared.identity.store import MIGRATIONS, SCHEMA
from tally_shared.migrations import upgrade
from tally_shared.testing.plugin import ARTIFACTS, basic_auth, create_project_with_key
from tally_shared.testing.wait import eventually
from tally_shared.topics import TRACES


@pytest.fixture
def replicas(kafka_bootstrap: str, make_database: Callable[[], str]) -> Iterator[tuple[Stack, list[str]]]:
    db = make_database()
    upgrade(MIGRATIONS, db, SCHEMA)
    ports = {svc: infra.free_port() for svc in DEFAULT_PORTS}
    config = StackConfig(database_url=db, kafka_bootstrap=kafka_bootstrap, secret_key="t-" + uuid.uuid4().hex,
                         ports=ports, log_dir=ARTIFACTS / "takeover-logs", group_suffix=f"-{uuid.uuid4().hex[:8]}")
    stack = Stack(config, supervise=False)
    env = stack.env_for("projections")
    subprocess.run([sys.executable, "-m", "projections", "migrate"], env=env, check=True, capture_output=True)
    (ARTIFACTS / "takeover-logs").mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(2):
            port = infra.free_port()
            log = open(ARTIFACTS / "takeover-logs" / f"projections-{port}.log", "ab")
            procs.append(subprocess.Popen([sys.executable, "-m", "projections", "serve"],
                                          env={**env, "TALLY_PROJECTIONS_PORT": str(port)}, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            urls.append(f"http://127.0.0.1:{port}")
        stack.procs = {"a": procs[0], "b": procs[1]}
        yield stack, urls
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


async def _group(bootstrap: str, group: str) -> tuple[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        desc = await admin.describe_consumer_groups([group])
        _, _, state, _, _, members = desc[0].groups[0][:6]
        return state, len(members)
    finally:
        await admin.close()


async def test_a_dead_replicas_partitions_reach_the_survivor(replicas: tuple[Stack, list[str]],
                                                            kafka_bootstrap: str) -> None:
    stack, (url_a, url_b) = replicas
    group = stack.config.group("projections")
    project = f"p-{uuid.uuid4().hex[:10]}"
    auth = basic_auth(*await create_project_with_key(stack.config.database_url, project))

    async def both_in_group() -> bool:
        async with httpx.AsyncClient(timeout=2) as c:
            for url in (url_a, url_b):
                try:
                    if (await c.get(url + "/readyz")).status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
        return await _group(kafka_bootstrap, group) == ("Stable", 2)

    await eventually(both_in_group, timeout=120, what="two replicas in one stable group")

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        os.killpg(stack.procs["a"].pid, signal.SIGKILL)
        stack.procs["a"].wait(10)
        killed = time.monotonic()
        ids = [f"takeover-{uuid.uuid4().hex[:8]}-{p}" for p in range(TRACES.partitions)]
        for p, tid in enumerate(ids):
            env = make_envelope(TraceIngested(trace_id=tid, trace=TraceData(id=tid, name="takeover")),
                                project=project, key=tid)
            await producer.send_and_wait(TRACES.name, env.to_bytes(), key=tid.encode(), partition=p)
    finally:
        await producer.stop()

    applied: dict[str, float] = {}

    async def all_applied() -> bool:
        async with httpx.AsyncClient(base_url=url_b, headers=auth, timeout=5) as c:
            for tid in ids:
                if tid not in applied and (await c.get(f"/api/public/traces/{tid}")).status_code == 200:
                    applied[tid] = time.monotonic() - killed
        return len(applied) == len(ids)

    await eventually(all_applied, timeout=90, interval=0.1, what="the survivor applies every partition's event")
    assert stack.procs["b"].poll() is None
    times = sorted(applied.values())
    print(f"\npartition takeover after SIGKILL of one of two replicas: {times[-1]:.1f} s "
          f"(survivor's own partitions: {times[0]:.1f} s)")
