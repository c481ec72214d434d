"""The walking skeleton, end to end through real processes, the real broker and the real database:

trace over HTTP -> ingest -> queue-router routes it into a queue whose rule matches its name -> a score for it
through scoring -> the item completed through queue-router -> projections show the trace with its score and the
queue's progress (1 item, completed).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tally_shared.testing.plugin import StackHandle
from tally_shared.testing.wait import eventually


async def test_one_trace_through_every_service(tally_stack: StackHandle) -> None:
    run = uuid.uuid4().hex[:8]
    trace_id = f"thin-{run}"
    trace_name = f"thin-flow-{run}"
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        health = await api.get("/api/public/health")
        assert health.status_code == 200 and health.json()["status"] == "OK"

        config = (await api.post("/api/public/score-configs", json={
            "name": f"quality-{run}", "dataType": "NUMERIC", "minValue": 1, "maxValue": 5,
        })).raise_for_status().json()
        queue = (await api.post("/api/v1/queues", json={
            "name": f"thin flow {run}", "score_configs": [{"id": config["id"], "required": True}],
        })).raise_for_status().json()
        (await api.post(f"/api/v1/queues/{queue['id']}/rules", json={
            "name": "by name",
            "filter": {"groups": [{"conditions": [{"field": "name", "op": "eq", "value": trace_name}]}]},
        })).raise_for_status()

        now = datetime.now(UTC).isoformat()
        ingest = await api.post("/api/public/ingestion", json={"batch": [
            {"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": now,
             "body": {"id": trace_id, "name": trace_name, "timestamp": now, "input": {"q": "2+2?"},
                      "output": {"a": "4"}}},
            {"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": now,
             "body": {"id": f"other-{run}", "name": "not-matching", "timestamp": now}},
        ]})
        assert ingest.status_code == 207, ingest.text
        assert len(ingest.json()["successes"]) == 2 and ingest.json()["errors"] == []

        async def queue_items() -> list[dict[str, Any]] | None:
            r = (await api.get(f"/api/v1/queues/{queue['id']}/items")).raise_for_status().json()
            items: list[dict[str, Any]] = r["data"] if isinstance(r, dict) else r
            return items or None

        items = await eventually(queue_items, timeout=30, what="the trace routed into the queue")
        assert [i["object_id"] for i in items] == [trace_id]

        score = await api.post("/api/public/scores", json={
            "traceId": trace_id, "name": config["name"], "value": 4, "configId": config["id"],
        })
        assert score.status_code == 200, score.text

        lease = (await api.post(f"/api/v1/queues/{queue['id']}/next", json={"reviewer": "reviewer-1"}))
        assert lease.status_code == 200, lease.text
        item_id = lease.json()["item"]["id"]
        done = await api.post(f"/api/v1/queues/{queue['id']}/items/{item_id}/complete",
                              json={"reviewer": "reviewer-1", "lease_id": lease.json()["lease"]["id"]})
        assert done.status_code == 200, done.text

        async def trace_with_score() -> dict[str, Any] | None:
            r = await api.get(f"/api/public/traces/{trace_id}")
            if r.status_code != 200:
                return None
            body: dict[str, Any] = r.json()
            return body if body.get("scores") else None

        trace = await eventually(trace_with_score, timeout=30, what="the trace with its score in projections")
        assert trace["name"] == trace_name and trace["output"] == {"a": "4"}
        assert [(s["name"], s["value"]) for s in trace["scores"]] == [(config["name"], 4)]

        async def progress() -> dict[str, Any] | None:
            r = await api.get(f"/api/v1/progress/queues/{queue['id']}")
            if r.status_code != 200:
                return None
            body: dict[str, Any] = r.json()
            return body if body.get("completed_items") == 1 else None

        p = await eventually(progress, timeout=30, what="queue progress: 1 item, completed")
        assert p["total_items"] == 1 and p["completed_items"] == 1
        assert [(r["reviewer"], r["completed"]) for r in p["reviewers"]] == [("reviewer-1", 1)]
