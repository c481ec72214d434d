"""Leases and reviews on the real database, over HTTP (ASGI), with no consumer (items are added by id)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from queue_router.adapters.tables import item_slots
from queue_router.testing import Service, start_service


@pytest.fixture(scope="module")
async def rsvc(qr_db: str, kafka_bootstrap: str) -> AsyncIterator[Service]:
    async for s in start_service(qr_db, kafka_bootstrap, run_consumers=False, db_pool_size=20):
        yield s


async def setup_queue(svc: Service, n_items: int, **kw: Any) -> tuple[dict[str, str], str, list[str]]:
    _, auth = await svc.project()
    r = await svc.client.post("/api/v1/queues", headers=auth, json={"name": "rq", **kw})
    assert r.status_code == 201, r.text
    qid = r.json()["id"]
    r = await svc.client.post(f"/api/v1/queues/{qid}/items", headers=auth, json={
        "items": [{"object_type": "TRACE", "object_id": f"t{i:04d}"} for i in range(n_items)]})
    assert r.status_code == 201, r.text
    return auth, qid, [i["id"] for i in r.json()["added"]]


async def next_for(svc: Service, auth: dict[str, str], qid: str, reviewer: str) -> dict[str, Any] | None:
    r = await svc.client.post(f"/api/v1/queues/{qid}/next", headers=auth, json={"reviewer": reviewer})
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def act(svc: Service, auth: dict[str, str], qid: str, item_id: str, action: str, **body: Any) -> Any:
    return await svc.client.post(f"/api/v1/queues/{qid}/items/{item_id}/{action}", headers=auth, json=body)


async def test_n_reviewers_overlap_never_twice_to_one_person(rsvc: Service) -> None:
    auth, qid, ids = await setup_queue(rsvc, 2, reviewers_per_item=3)
    # alice asks until nothing is left: she gets each item once, never a second slot of the same item
    seen = []
    while (got := await next_for(rsvc, auth, qid, "alice")) is not None:
        seen.append(got["item"]["id"])
    assert sorted(seen) == sorted(ids)
    for reviewer in ("bob", "carol"):
        for _ in ids:
            got = await next_for(rsvc, auth, qid, reviewer)
            assert got is not None
            r = await act(rsvc, auth, qid, got["item"]["id"], "complete", reviewer=reviewer,
                          lease_id=got["lease"]["id"])
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "IN_PROGRESS"
    assert await next_for(rsvc, auth, qid, "dave") is None  # 3 slots per item, all taken
    for item_id in ids:
        r = await act(rsvc, auth, qid, item_id, "complete", reviewer="alice")
        assert r.json()["status"] == "COMPLETED" and r.json()["completions"] == 3
    prog = (await rsvc.client.get(f"/api/v1/queues/{qid}/progress", headers=auth)).json()
    assert prog["items"]["completed"] == 2 and prog["items"]["pending"] == 0
    assert {r["reviewer"]: r["counts"]["completed"] for r in prog["reviewers"]} == {"alice": 2, "bob": 2, "carol": 2}
    assert all(r["completed_last_hour"] == 2 for r in prog["reviewers"])
    assert prog["items_completed_last_hour"] == 2
    # reviewers revisit what they completed
    mine = await rsvc.items(auth, qid, reviewer="bob", status="completed")
    assert sorted(i["id"] for i in mine) == sorted(ids)


async def test_lease_expiry_returns_the_slot(rsvc: Service) -> None:
    auth, qid, [item_id] = await setup_queue(rsvc, 1, lease_seconds=10)
    got = await next_for(rsvc, auth, qid, "slow")
    assert got is not None
    assert await next_for(rsvc, auth, qid, "fast") is None
    r = await act(rsvc, auth, qid, item_id, "heartbeat", reviewer="slow", lease_id=got["lease"]["id"])
    assert r.status_code == 200 and r.json()["lease"]["expires_at"] >= got["lease"]["expires_at"]
    # Let the lease run out (moved into the past rather than sleeping for it).
    async with rsvc.app.state.container.sessions() as s, s.begin():
        await s.execute(update(item_slots).where(item_slots.c.item_id == item_id)
                        .values(lease_expires_at=item_slots.c.lease_expires_at - timedelta(seconds=60)))
    taken = await next_for(rsvc, auth, qid, "fast")
    assert taken is not None and taken["item"]["id"] == item_id
    r = await act(rsvc, auth, qid, item_id, "complete", reviewer="slow", lease_id=got["lease"]["id"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "lease_lost"
    r = await act(rsvc, auth, qid, item_id, "complete", reviewer="fast", lease_id=taken["lease"]["id"])
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED"
    detail = (await rsvc.client.get(f"/api/v1/queues/{qid}/items/{item_id}", headers=auth)).json()
    assert {x["reviewer"]: x["status"] for x in detail["reviews"]} == {"slow": "pending", "fast": "completed"}


async def test_skip_flag_release_and_statuses(rsvc: Service) -> None:
    auth, qid, ids = await setup_queue(rsvc, 3)
    a = await next_for(rsvc, auth, qid, "ann")
    assert a is not None
    r = await act(rsvc, auth, qid, a["item"]["id"], "skip", reviewer="ann", reason="not my language")
    assert r.status_code == 200 and r.json()["reviewer_status"] == "skipped"
    b = await next_for(rsvc, auth, qid, "ann")
    assert b is not None and b["item"]["id"] != a["item"]["id"]  # a skipped item is not offered again to her
    r = await act(rsvc, auth, qid, b["item"]["id"], "flag", reviewer="ann", reason="broken trace")
    assert r.json()["flags"] == 1
    c = await next_for(rsvc, auth, qid, "ann")
    assert c is not None
    r = await act(rsvc, auth, qid, c["item"]["id"], "release", reviewer="ann", lease_id=c["lease"]["id"])
    assert r.status_code == 200
    again = await next_for(rsvc, auth, qid, "ann")  # released: she may take it again
    assert again is not None and again["item"]["id"] == c["item"]["id"]
    r = await act(rsvc, auth, qid, c["item"]["id"], "skip", reviewer="ann", lease_id="not-the-lease")
    assert r.status_code == 409
    # the skipped and flagged items go to someone else; the one ann holds does not
    other = [await next_for(rsvc, auth, qid, "ben") for _ in range(3)]
    assert [o["item"]["id"] for o in other if o] == [a["item"]["id"], b["item"]["id"]]
    assert other[2] is None and c["item"]["id"] in ids
    assert {i["id"]: i["reviewer_status"] for i in await rsvc.items(auth, qid, reviewer="ann", status="skipped")} \
        == {a["item"]["id"]: "skipped"}
    assert [i["id"] for i in await rsvc.items(auth, qid, reviewer="ann", status="flagged")] == [b["item"]["id"]]
    prog = (await rsvc.client.get(f"/api/v1/queues/{qid}/progress", headers=auth)).json()
    ann = next(x for x in prog["reviewers"] if x["reviewer"] == "ann")
    assert ann["counts"]["skipped"] == 1 and ann["counts"]["flagged"] == 1 and ann["counts"]["in_progress"] == 1
    assert prog["items"]["in_progress"] == 3


async def test_assigned_items_go_only_to_named_reviewers(rsvc: Service) -> None:
    project, auth = await rsvc.project()
    tag = uuid.uuid4().hex[:8]
    x, y = (await rsvc.member(project, f"x-{tag}@example.com"), await rsvc.member(project, f"y-{tag}@example.com"))
    z = await rsvc.member(project, f"z-{tag}@example.com")
    qid = (await rsvc.client.post("/api/v1/queues", headers=auth,
                                  json={"name": "asg", "reviewers": [x, f"Y-{tag}@example.com", z]})).json()["id"]
    await rsvc.client.post(f"/api/v1/queues/{qid}/items", headers=auth,
                           json={"items": [{"object_id": "only-y"}], "assignees": [y]})
    assert await next_for(rsvc, auth, qid, x) is None
    r = await rsvc.client.post(f"/api/v1/queues/{qid}/next", headers=auth, json={"reviewer": "intruder"})
    assert r.status_code == 403
    got = await next_for(rsvc, auth, qid, y)
    assert got is not None and got["item"]["object_id"] == "only-y"
    r = await rsvc.client.post(f"/api/v1/queues/{qid}/next", headers=auth)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "reviewer"


async def test_race_many_reviewers_no_slot_twice_none_lost(rsvc: Service) -> None:
    n_items, per_item, n_reviewers = 60, 2, 40
    auth, qid, ids = await setup_queue(rsvc, n_items, reviewers_per_item=per_item)
    leases: list[tuple[str, str, int]] = []

    async def reviewer(name: str) -> None:
        while (got := await next_for(rsvc, auth, qid, name)) is not None:
            leases.append((got["item"]["id"], name, got["lease"]["slot"]))

    await asyncio.gather(*(reviewer(f"r{i:02d}") for i in range(n_reviewers)))
    slots = Counter((item, slot) for item, _, slot in leases)
    assert max(slots.values()) == 1, "a slot was handed out twice"
    pairs = Counter((item, who) for item, who, _ in leases)
    assert max(pairs.values()) == 1, "an item went twice to one reviewer"
    assert len(slots) == n_items * per_item, "a slot was lost"
    assert {item for item, _, _ in leases} == set(ids)
    # a burst of the same reviewer asking many times at once still gets each item at most once
    auth2, qid2, ids2 = await setup_queue(rsvc, 5, reviewers_per_item=3)
    burst = await asyncio.gather(*(next_for(rsvc, auth2, qid2, "same") for _ in range(12)))
    got_ids = [b["item"]["id"] for b in burst if b]
    assert sorted(got_ids) == sorted(ids2)


async def test_queue_update_archive_and_validation(rsvc: Service) -> None:
    _, auth = await rsvc.project()
    rsvc.scoring.configs |= {"sc-1", "sc-2"}
    qid = (await rsvc.client.post("/api/v1/queues", headers=auth, json={
        "name": "v", "description": "look for hallucinations",
        "score_configs": [{"id": "sc-1", "required": True}, {"id": "sc-2", "required": False}]})).json()["id"]
    r = await rsvc.client.patch(f"/api/v1/queues/{qid}", headers=auth, json={"blind": True, "lease_seconds": 60})
    assert r.status_code == 200 and r.json()["blind"] is True and r.json()["lease_seconds"] == 60
    r = await rsvc.client.post(f"/api/v1/queues/{qid}/rules", headers=auth, json={
        "name": "bad", "filter": {"groups": [{"conditions": [{"field": "latency", "op": "gt", "value": "slow"}]}]}})
    assert r.status_code == 422
    assert "number_required" in str(r.json()["error"]["details"])
    r = await rsvc.client.post(f"/api/v1/queues/{qid}/rules", headers=auth, json={
        "name": "bad", "filter": {"groups": [{"conditions": [{"field": "metadata", "op": "eq", "value": 1}]}]}})
    assert r.status_code == 422 and "key_required" in str(r.json()["error"]["details"])
    r = await rsvc.client.post(f"/api/v1/queues/{qid}/items", headers=auth,
                               json={"items": [{"object_id": str(i)} for i in range(1001)]})
    assert r.status_code == 422
    r = await rsvc.client.post(f"/api/v1/queues/{qid}/archive", headers=auth)
    assert r.json()["is_archived"] is True
    listed = (await rsvc.client.get("/api/v1/queues", headers=auth)).json()
    assert listed["data"] == []
    _, other = await rsvc.project()
    assert (await rsvc.client.get(f"/api/v1/queues/{qid}", headers=other)).status_code == 404
    assert (await rsvc.client.get(f"/api/v1/queues/{uuid.uuid4()}", headers=auth)).status_code == 404
