"""Done-when: with the broker down, requests get 503 with Retry-After and nothing is acknowledged; once a broker
is back, every acknowledged event is on Kafka exactly once per acknowledgement.

Tansu keeps everything in memory, so "back" is a fresh broker on the same address: the test checks what was
acknowledged after the restart, and that nothing sent while the broker was down (all answered 503) shows up later
behind the client's back.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from ingest.config import Settings
from tally_shared import infra
from tally_shared.messaging import ensure_topics
from tally_shared.testing.plugin import basic_auth
from tally_shared.topics import TRACES

from .conftest import ThreadedServer, read_events
from .test_sdks import _one_span_request, export_raw


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    port = infra.free_port()
    log = Path(tmp_path_factory.mktemp("tansu")) / "tansu.log"
    state: dict[str, object] = {"port": port, "log": log, "proc": infra.start_tansu(port, log_path=log)}
    asyncio.run(ensure_topics(f"127.0.0.1:{port}"))
    yield state
    infra.stop_process(state["proc"])  # type: ignore[arg-type]


def _batch(prefix: str, n: int = 3) -> dict[str, object]:
    # With the client's timestamp, a retried request is the same content, so the same event ids.
    return {"events": [{"id": f"{prefix}-{i}", "type": "observation", "timestamp": "2025-06-01T12:00:00Z",
                        "body": {"id": f"o-{prefix}-{i}", "trace_id": f"{prefix}-{i}", "name": "x"}}
                       for i in range(n)]}


async def test_broker_down_then_back(own_broker: dict[str, object], identity_db: str, api_key: tuple[str, str],
                                     project_id: str) -> None:
    port = own_broker["port"]
    bootstrap = f"127.0.0.1:{port}"
    settings = Settings(database_url=identity_db, grpc_port=0, kafka_bootstrap_servers=bootstrap,
                        port=infra.free_port(),
                        publish_timeout_seconds=2.0, retry_after_seconds=3)
    auth = basic_auth(*api_key)
    with ThreadedServer(settings) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            r = await client.post("/api/v1/ingest", json=_batch("before"), headers=auth)
            assert r.status_code == 207 and len(r.json()["successes"]) == 3

            infra.stop_process(own_broker["proc"])  # type: ignore[arg-type]
            refused: list[str] = []
            for k in range(3):
                r = await client.post("/api/v1/ingest", json=_batch(f"down{k}"), headers=auth)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "3" and r.json()["error"]["code"] == "unavailable"
                refused += [f"down{k}-{i}" for i in range(3)]
            r = await client.post("/v1/traces", content=b"{}", headers={**auth, "content-type": "application/json"})
            assert r.status_code == 200  # nothing to store is not an outage
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/healthz")).status_code == 200  # alive, so a supervisor leaves it be

            own_broker["proc"] = infra.start_tansu(port, log_path=own_broker["log"])  # type: ignore[arg-type]
            await ensure_topics(bootstrap)
            acknowledged: Counter[str] = Counter()
            deadline = time.monotonic() + 60
            k = 0
            while time.monotonic() < deadline and sum(acknowledged.values()) < 15:
                prefix = f"after{k}"
                k += 1
                r = await client.post("/api/v1/ingest", json=_batch(prefix), headers=auth)
                if r.status_code == 503:
                    refused += [f"{prefix}-{i}" for i in range(3)]
                    await asyncio.sleep(0.5)
                    continue
                assert r.status_code == 207, r.text
                for s in r.json()["successes"]:
                    acknowledged[s["id"]] += 1
                refused += [e["id"] for e in r.json()["errors"]]
            assert sum(acknowledged.values()) >= 15, "ingest never recovered after the broker came back"
            # A retry of an acknowledged request is a second acknowledgement of the same content.
            r = await client.post("/api/v1/ingest", json=_batch("after0"), headers=auth)
            if r.status_code == 207:
                for s in r.json()["successes"]:
                    acknowledged[s["id"]] += 1

    found = await read_events(bootstrap, TRACES.name, lambda e: e.project == project_id,
                              count=sum(acknowledged.values()), settle=3.0, timeout=30)
    on_kafka = Counter(env.key for env, _ in found)
    assert on_kafka == acknowledged
    assert not set(refused) & set(on_kafka)
    # A retried request carries the same event ids, so consumers apply it once.
    if acknowledged["after0-0"] == 2:
        assert len({env.id for env, _ in found if env.key == "after0-0"}) == 1


async def test_starts_without_a_broker_and_recovers(identity_db: str, api_key: tuple[str, str],
                                                    project_id: str, tmp_path: Path) -> None:
    port = infra.free_port()
    bootstrap = f"127.0.0.1:{port}"
    settings = Settings(database_url=identity_db, grpc_port=0, kafka_bootstrap_servers=bootstrap,
                        port=infra.free_port(),
                        publish_timeout_seconds=1.0)
    auth = basic_auth(*api_key)
    proc = None
    try:
        with ThreadedServer(settings) as server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                r = await client.post("/api/v1/ingest", json=_batch("early"), headers=auth)
                assert r.status_code == 503 and "retry-after" in r.headers
                # OTLP/gRPC says UNAVAILABLE, the code its exporters retry.
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await export_raw(server.grpc_target, tuple((k.lower(), v) for k, v in auth.items()),
                                     _one_span_request())
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                proc = infra.start_tansu(port, log_path=tmp_path / "tansu.log")
                await ensure_topics(bootstrap)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    r = await client.post("/api/v1/ingest", json=_batch("late"), headers=auth)
                    if r.status_code != 503:
                        break
                    await asyncio.sleep(0.5)
                assert r.status_code == 207 and len(r.json()["successes"]) == 3
        found = await read_events(bootstrap, TRACES.name, lambda e: e.project == project_id, count=3, settle=1.0)
        assert sorted(env.key for env, _ in found) == ["late-0", "late-1", "late-2"]
    finally:
        if proc is not None:
            infra.stop_process(proc)
