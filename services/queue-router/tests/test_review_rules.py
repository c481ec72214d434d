"""Every queue rule holds through the API, whoever calls: required scores, existing configs, member reviewers named
by id or email, statuses, lease events, skip undo, decision log and blind traces."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from queue_router.adapters.tables import item_slots, outbox
from queue_router.application.reviewing import expire_leases
from queue_router.testing import Service, start_service
from tally_shared.identity.auth import sign_user_token


@pytest.fixture(scope="module")
async def rsvc(qr_db: str, kafka_bootstrap: str) -> AsyncIterator[Service]:
    async for s in start_service(qr_db, kafka_bootstrap, run_consumers=False, run_outbox_relay=False):
        yield s


def as_user(svc: Service, user_id: str, project: str) -> dict[str, str]:
    return {"authorization": f"Bearer {sign_user_token(svc.settings.secret_key, user_id)}",
            "x-tally-project": project}


async def post(svc: Service, auth: dict[str, str], path: str, **body: Any) -> Any:
    return await svc.client.post(path, headers=auth, json=body)


async def events_of(svc: Service, event_type: str) -> int:
    async with svc.app.state.container.sessions() as s:
        return len((await s.execute(select(outbox.c.id).where(outbox.c.event_type == event_type))).all())


async def test_queue_configs_and_reviewers_are_checked_and_canonical(rsvc: Service) -> None:
    project, auth = await rsvc.project()
    tag = uuid.uuid4().hex[:8]
    rsvc.scoring.configs.add(f"cfg-{tag}")
    r = await post(rsvc, auth, "/api/v1/queues", name="q", score_configs=[{"id": "nonexistent"}])
    assert r.status_code == 422 and r.json()["error"]["details"][0]["config_id"] == "nonexistent"
    ann = await rsvc.member(project, f"ann-{tag}@example.com")
    await rsvc.member(project, f"vic-{tag}@example.com", role="viewer")
    other_project, _ = await rsvc.project()
    await rsvc.member(other_project, f"out-{tag}@example.com")
    r = await post(rsvc, auth, "/api/v1/queues", name="q", reviewers=[f"out-{tag}@example.com", "u-nobody"])
    assert r.status_code == 422
    assert {d["value"] for d in r.json()["error"]["details"]} == {f"out-{tag}@example.com", "u-nobody"}
    r = await post(rsvc, auth, "/api/v1/queues", name="q", reviewers=[f"vic-{tag}@example.com"])
    assert r.status_code == 422 and r.json()["error"]["details"][0]["rule"] == "can_review"
    # one person named twice (email, then id) is one reviewer, stored by user id
    r = await post(rsvc, auth, "/api/v1/queues", name="q", reviewers=[f"ANN-{tag}@example.com", ann],
                   score_configs=[{"id": f"cfg-{tag}", "required": True}])
    assert r.status_code == 201, r.text
    qid = r.json()["id"]
    assert r.json()["reviewers"] == [ann]
    r = await rsvc.client.patch(f"/api/v1/queues/{qid}", headers=auth, json={"score_configs": [{"id": "gone"}]})
    assert r.status_code == 422
    # an API key serves the reviewer by id or by email; the person signed in gets the same items
    await post(rsvc, auth, f"/api/v1/queues/{qid}/items", items=[{"object_id": f"t1-{tag}"},
                                                                   {"object_id": f"t2-{tag}"}])
    by_id = await post(rsvc, auth, f"/api/v1/queues/{qid}/next", reviewer=ann)
    assert by_id.status_code == 200, by_id.text
    by_email = await post(rsvc, auth, f"/api/v1/queues/{qid}/next", reviewer=f"ann-{tag}@example.com")
    assert by_email.status_code == 200 and by_email.json()["item"]["id"] != by_id.json()["item"]["id"]
    mine = await post(rsvc, as_user(rsvc, ann, project), f"/api/v1/queues/{qid}/next")
    assert mine.status_code == 204  # both items are already hers


async def test_complete_needs_required_scores_by_the_reviewer(rsvc: Service) -> None:
    project, auth = await rsvc.project()
    tag = uuid.uuid4().hex[:8]
    req, opt = f"req-{tag}", f"opt-{tag}"
    rsvc.scoring.configs |= {req, opt}
    ann = await rsvc.member(project, f"ann-{tag}@example.com")
    bob = await rsvc.member(project, f"bob-{tag}@example.com")
    qid = (await post(rsvc, auth, "/api/v1/queues", name="q", score_configs=[
        {"id": req, "required": True}, {"id": opt, "required": False}])).json()["id"]
    await post(rsvc, auth, f"/api/v1/queues/{qid}/items", items=[{"object_id": f"t-{tag}"}])
    user = as_user(rsvc, ann, project)
    got = (await post(rsvc, user, f"/api/v1/queues/{qid}/next")).json()
    path = f"/api/v1/queues/{qid}/items/{got['item']['id']}/complete"
    r = await post(rsvc, user, path, lease_id=got["lease"]["id"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "scores_required"
    assert [d["config_id"] for d in r.json()["error"]["details"]] == [req]
    rsvc.scoring.scores.add((f"t-{tag}", req, bob))  # a peer's score does not count for ann
    assert (await post(rsvc, user, path, lease_id=got["lease"]["id"])).status_code == 422
    rsvc.scoring.scores.add((f"t-{tag}", req, ann))
    r = await post(rsvc, user, path, lease_id=got["lease"]["id"])
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED"


async def test_statuses_lease_events_skip_undo_and_progress(rsvc: Service) -> None:
    project, auth = await rsvc.project()
    tag = uuid.uuid4().hex[:8]
    ann, bob = (await rsvc.member(project, f"ann-{tag}@example.com"),
                await rsvc.member(project, f"bob-{tag}@example.com"))
    qid = (await post(rsvc, auth, "/api/v1/queues", name="q", reviewers_per_item=2)).json()["id"]
    ids = [i["id"] for i in (await post(rsvc, auth, f"/api/v1/queues/{qid}/items", items=[
        {"object_id": f"a-{tag}"}, {"object_id": f"b-{tag}"}])).json()["added"]]
    a1 = (await post(rsvc, auth, f"/api/v1/queues/{qid}/next", reviewer=ann)).json()
    b1 = (await post(rsvc, auth, f"/api/v1/queues/{qid}/next", reviewer=bob)).json()
    assert a1["item"]["id"] == b1["item"]["id"]
    ids.sort(key=lambda i: i != a1["item"]["id"])
    # ann skips while bob still holds a slot: the answer says what GET says
    r = await post(rsvc, auth, f"/api/v1/queues/{qid}/items/{ids[0]}/skip", reviewer=ann, reason="unsure")
    assert r.json()["status"] == "IN_PROGRESS"
    got = (await rsvc.client.get(f"/api/v1/queues/{qid}/items/{ids[0]}", headers=auth)).json()
    assert got["status"] == "IN_PROGRESS" and {x["reviewer"]: x["reason"] for x in got["reviews"]}[ann] == "unsure"
    # bob releases: an event says so; nobody holds it now and ann's skip makes it count once, as skipped
    released = await events_of(rsvc, "QueueItemReleased")
    r = await post(rsvc, auth, f"/api/v1/queues/{qid}/items/{ids[0]}/release", reviewer=bob)
    assert r.json()["status"] == "PENDING" and await events_of(rsvc, "QueueItemReleased") == released + 1
    prog = (await rsvc.client.get(f"/api/v1/queues/{qid}/progress", headers=auth)).json()["items"]
    assert (prog["total"], prog["skipped"], prog["pending"], prog["in_progress"]) == (2, 1, 1, 0)
    # ann undoes her skip and holds the item again
    r = await post(rsvc, auth, f"/api/v1/queues/{qid}/items/{ids[0]}/undo-skip", reviewer=ann)
    assert r.status_code == 200 and r.json()["item"]["id"] == ids[0] and r.json()["lease"] is not None
    # a lease that runs out is returned with an event, by the sweep
    expired = await events_of(rsvc, "QueueItemLeaseExpired")
    async with rsvc.app.state.container.sessions() as s, s.begin():
        await s.execute(update(item_slots).where(item_slots.c.item_id == ids[0], item_slots.c.state == "leased")
                        .values(lease_expires_at=item_slots.c.lease_expires_at - timedelta(days=1)))
    assert await expire_leases(rsvc.app.state.container.uow) >= 1
    assert await events_of(rsvc, "QueueItemLeaseExpired") == expired + 1
    got = (await rsvc.client.get(f"/api/v1/queues/{qid}/items/{ids[0]}", headers=auth)).json()
    assert got["status"] == "PENDING" and {x["reviewer"]: x["status"] for x in got["reviews"]}[ann] == "pending"


async def test_blind_traces_for_reviewers_only(rsvc: Service) -> None:
    project, auth = await rsvc.project()
    tag = uuid.uuid4().hex[:8]
    ann = await rsvc.member(project, f"ann-{tag}@example.com")
    lead = await rsvc.member(project, f"lead-{tag}@example.com", role="member")
    blind = (await post(rsvc, auth, "/api/v1/queues", name="blind", blind=True)).json()["id"]
    open_q = (await post(rsvc, auth, "/api/v1/queues", name="open")).json()["id"]
    await post(rsvc, auth, f"/api/v1/queues/{blind}/items", items=[{"object_id": f"held-{tag}"}])
    await post(rsvc, auth, f"/api/v1/queues/{blind}/items", items=[{"object_id": f"later-{tag}"}])
    await post(rsvc, auth, f"/api/v1/queues/{blind}/items", items=[{"object_id": f"mine-{tag}"}], assignees=[ann])
    await post(rsvc, auth, f"/api/v1/queues/{open_q}/items", items=[{"object_id": f"open-{tag}"}])
    user = as_user(rsvc, ann, project)
    await post(rsvc, user, f"/api/v1/queues/{blind}/next")
    await post(rsvc, user, f"/api/v1/queues/{open_q}/next")
    r = (await rsvc.client.get("/api/v1/review/blind-traces", headers=user)).json()
    assert r["blind"] is True and r["trace_ids"] == sorted([f"held-{tag}", f"mine-{tag}"])
    r = (await rsvc.client.get("/api/v1/review/blind-traces", headers=as_user(rsvc, lead, project))).json()
    assert r == {"blind": False, "trace_ids": []}


async def test_decision_log_per_rule_and_trace(rsvc: Service) -> None:
    from sqlalchemy import insert

    from queue_router.adapters.tables import routing_decisions, rules

    project, auth = await rsvc.project()
    qid = (await post(rsvc, auth, "/api/v1/queues", name="q")).json()["id"]
    rule = (await post(rsvc, auth, f"/api/v1/queues/{qid}/rules", name="errors", filter={
        "groups": [{"conditions": [{"field": "has_error", "op": "eq", "value": True}]}]})).json()
    async with rsvc.app.state.container.sessions() as s, s.begin():
        await s.execute(insert(routing_decisions), [
            {"project_id": project, "queue_id": qid, "rule_id": rule["id"], "object_type": "TRACE",
             "object_id": f"t{i}", "outcome": outcome, "reason": outcome}
            for i, outcome in enumerate(["added", "sampled_out", "cap_reached", "duplicate", "sampled_out"])])
        assert (await s.execute(select(rules.c.id).where(rules.c.id == rule["id"]))).first()
    # an uncapped rule's items of today show in added_today
    from queue_router.adapters.items_store import NewItem, insert_items
    async with rsvc.app.state.container.sessions() as s, s.begin():
        await insert_items(s, [NewItem(project_id=project, queue_id=qid, object_type="TRACE", object_id="r1",
                                       trace_id="r1", reviewers_per_item=1, reason="rule", rule_id=rule["id"])])
    listed = (await rsvc.client.get(f"/api/v1/queues/{qid}/rules", headers=auth)).json()["data"]
    assert listed[0]["daily_cap"] is None and listed[0]["added_today"] == 1
    base = f"/api/v1/queues/{qid}/rules/{rule['id']}/decisions"
    page = (await rsvc.client.get(base, headers=auth, params={"limit": 2})).json()
    assert page["meta"]["total_items"] == 6 and [d["object_id"] for d in page["data"]] == ["r1", "t4"]
    assert page["data"][0]["rule_name"] == "errors"
    only = (await rsvc.client.get(base, headers=auth, params={"outcome": "sampled_out"})).json()
    assert [d["object_id"] for d in only["data"]] == ["t4", "t1"]
    assert (await rsvc.client.get(base, headers=auth, params={"outcome": "bogus"})).status_code == 422
    trace = (await rsvc.client.get("/api/v1/routing/traces/t2", headers=auth)).json()
    assert [d["outcome"] for d in trace["data"]] == ["cap_reached"]
    # asked to evaluate, the log adds each active rule the trace does not match as it is now
    from queue_router.adapters.stores import _summary_row
    from queue_router.adapters.tables import trace_summaries
    from queue_router.domain.summary import Summary

    async with rsvc.app.state.container.sessions() as s, s.begin():
        await s.execute(insert(trace_summaries).values(**_summary_row(
            Summary(project_id=project, trace_id="t2", has_trace=True, name="chat"), datetime.now(UTC))))
    trace = (await rsvc.client.get("/api/v1/routing/traces/t2", headers=auth, params={"evaluate": "true"})).json()
    assert [(d["rule_id"], d["outcome"]) for d in trace["no_match"]] == [(rule["id"], "no_match")]
    _, other = await rsvc.project()
    assert (await rsvc.client.get(base, headers=other)).status_code == 404


async def test_complete_and_skip_lease_the_next_item_in_the_same_call(rsvc: Service) -> None:
    project, auth = await rsvc.project()
    ann = await rsvc.member(project, f"ann-{uuid.uuid4().hex[:8]}@example.com")
    qid = (await post(rsvc, auth, "/api/v1/queues", name="q")).json()["id"]
    await post(rsvc, auth, f"/api/v1/queues/{qid}/items", items=[{"object_id": f"n{i}"} for i in range(3)])
    user = as_user(rsvc, ann, project)
    got = (await post(rsvc, user, f"/api/v1/queues/{qid}/next")).json()
    r = (await post(rsvc, user, f"/api/v1/queues/{qid}/items/{got['item']['id']}/complete",
                    lease_id=got["lease"]["id"], next=True)).json()
    assert r["status"] == "COMPLETED" and r["next"]["item"]["id"] != got["item"]["id"]
    second = r["next"]
    r = (await post(rsvc, user, f"/api/v1/queues/{qid}/items/{second['item']['id']}/skip",
                    lease_id=second["lease"]["id"], next=True)).json()
    third = r["next"]
    assert r["reviewer_status"] == "skipped" and third["item"]["id"] not in (got["item"]["id"],
                                                                            second["item"]["id"])
    r = (await post(rsvc, user, f"/api/v1/queues/{qid}/items/{third['item']['id']}/complete",
                    lease_id=third["lease"]["id"], next=True)).json()
    assert r["next"] is None
