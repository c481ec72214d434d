"""The service shell: HTTP is up (liveness) before the broker is reachable or the consumers have joined; readiness
follows once the broker answers, retried in the background without a restart."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from tally_shared import infra
from tally_shared.envelope import Envelope, Payload
from tally_shared.messaging import ensure_topics, subscribe
from tally_shared.service import build_runtime, create_app
from tally_shared.settings import ServiceSettings
from tally_shared.testing.wait import eventually
from tally_shared.topics import TRACES


@pytest.fixture
def broker_port(tmp_path: Path) -> Iterator[dict[str, object]]:
    state: dict[str, object] = {"port": infra.free_port(), "proc": None, "log": tmp_path / "tansu.log"}
    yield state
    if state["proc"] is not None:
        infra.stop_process(state["proc"])  # type: ignore[arg-type]


async def test_http_answers_before_the_broker_is_reachable_and_readiness_follows_it(
    broker_port: dict[str, object], identity_db: str
) -> None:
    port = int(broker_port["port"])  # type: ignore[call-overload]
    settings = ServiceSettings(database_url=identity_db, kafka_bootstrap_servers=f"127.0.0.1:{port}",
                               secret_key="s" * 32, port=infra.free_port())
    runtime = build_runtime("probe", settings)

    async def ignore(_: Envelope, __: Payload) -> None:
        return None

    subscribe(runtime.broker, TRACES, group_id=f"probe-{uuid.uuid4().hex[:8]}", handler=ignore)
    server = uvicorn.Server(uvicorn.Config(create_app(runtime, title="probe"), host="127.0.0.1",
                                           port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        async def started() -> bool:
            return server.started

        await eventually(started, timeout=30, what="the HTTP port open while the broker is unreachable")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=10) as c:
            assert (await c.get("/healthz")).status_code == 200
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.json()["checks"]["database"] == "ok"
            assert r.json()["checks"]["consumers"] != "ok"

            # The broker appears: the same process connects and starts its consumers, no restart needed.
            broker_port["proc"] = infra.start_tansu(port, log_path=broker_port["log"])  # type: ignore[arg-type]
            await ensure_topics(f"127.0.0.1:{port}")

            async def ready() -> dict[str, str] | None:
                r = await c.get("/readyz")
                return r.json()["checks"] if r.status_code == 200 else None

            checks = await eventually(ready, timeout=60, what="ready once the broker is there")
            assert checks == {"database": "ok", "broker": "ok", "consumers": "ok"}
    finally:
        server.should_exit = True
        thread.join(20)
