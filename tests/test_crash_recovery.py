"""SIGKILL mid-stream: the consumers (scoring, queue-router, projections) die without any shutdown while traces
and scores keep arriving; the stack's supervisor starts them again, and they lose no event and apply none twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tally_shared.testing.plugin import StackHandle
from tally_shared.testing.wait import eventually

CONSUMERS = ("scoring", "queue-router", "projections")
BATCHES = 10
PER_BATCH = 20


def _batch(run: str, start: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    events: list[dict[str, Any]] = []
    for i in range(start, start + PER_BATCH):
        tid = f"crash-{run}-{i}"
        events.append({"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": now,
                       "body": {"id": tid, "name": f"crash-{run}", "timestamp": now, "input": {"i": i}}})
        events.append({"id": str(uuid.uuid4()), "type": "score-create", "timestamp": now,
                       "body": {"id": f"score-{tid}", "traceId": tid, "name": f"crash-{run}", "value": 1,
                                "dataType": "NUMERIC"}})
    return events


async def _traces(api: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        body = (await api.get("/api/public/traces", params={"name": name, "limit": 100, "page": page})).json()
        out += body["data"]
        if page >= body["meta"]["totalPages"]:
            return out
        page += 1


async def test_sigkill_loses_nothing_and_applies_nothing_twice(tally_stack: StackHandle) -> None:
    stack: Any = tally_stack.stack
    run = uuid.uuid4().hex[:8]
    name = f"crash-{run}"
    total = BATCHES * PER_BATCH
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=30) as api:
        queue = (await api.post("/api/v1/queues", json={"name": f"crash {run}"})).raise_for_status().json()
        (await api.post(f"/api/v1/queues/{queue['id']}/rules", json={
            "name": "by name",
            "filter": {"groups": [{"conditions": [{"field": "name", "op": "eq", "value": name}]}]},
        })).raise_for_status()

        for b in range(BATCHES):
            if b == 3:
                for svc in CONSUMERS:
                    await asyncio.to_thread(stack.kill, svc)
            if b == 6:
                # nobody starts them: the supervisor does
                await asyncio.to_thread(stack.wait_healthy, list(CONSUMERS), 120)
                assert all(stack.supervised[svc].restarts >= 1 for svc in CONSUMERS)
            r = await api.post("/api/public/ingestion", json={"batch": _batch(run, b * PER_BATCH)})
            assert r.status_code == 207 and not r.json()["errors"], r.text
            await asyncio.sleep(0.3)

        async def all_applied() -> list[dict[str, Any]] | None:
            traces = await _traces(api, name)
            scored = [t for t in traces if t.get("scores")]
            return traces if len(traces) == total and len(scored) == total else None

        traces = await eventually(all_applied, timeout=120, what=f"{total} traces with their score in projections")

        async def queue_full() -> int | None:
            body = (await api.get(f"/api/v1/queues/{queue['id']}/items", params={"limit": 500})).json()
            items = body["data"] if isinstance(body, dict) else body
            return len(items) if len(items) >= total else None

        assert await eventually(queue_full, timeout=60, what="every trace routed") == total

        # Give any duplicate delivery time to land, then check nothing was applied twice.
        await asyncio.sleep(3)
        traces = await _traces(api, name)
        assert len(traces) == total
        assert sorted(len(t["scores"]) for t in traces) == [1] * total
        scores = (await api.get("/api/public/v2/scores", params={"name": name, "limit": 100})).json()
        assert scores["meta"]["totalItems"] == total
        body = (await api.get(f"/api/v1/queues/{queue['id']}/items", params={"limit": 500})).json()
        items = body["data"] if isinstance(body, dict) else body
        assert len(items) == total and len({i["object_id"] for i in items}) == total
