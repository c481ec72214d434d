"""Routing on the real broker and database: events go through Kafka into the router's consumer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from queue_router.application.routing import RouterDeps, route_batch
from queue_router.domain.sampling import sampled_in
from queue_router.testing import Service, summaries_seen
from tally_shared.envelope import make_envelope
from tally_shared.events import ObservationData, ScoreRecorded, TraceData, TraceIngested
from tally_shared.events.scores import ScoreData
from tally_shared.testing.wait import eventually
from tally_shared.topics import QUEUES, SCORES

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def obs(trace_id: str, **kw: Any) -> ObservationData:
    return ObservationData(id=str(uuid.uuid4()), trace_id=trace_id, **kw)


async def make_queue(svc: Service, auth: dict[str, str], **kw: Any) -> str:
    r = await svc.client.post("/api/v1/queues", headers=auth, json={"name": f"q-{uuid.uuid4().hex[:6]}", **kw})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def make_rule(svc: Service, auth: dict[str, str], qid: str, name: str, groups: list[Any], **kw: Any) -> str:
    r = await svc.client.post(f"/api/v1/queues/{qid}/rules", headers=auth,
                              json={"name": name, "filter": {"groups": groups}, **kw})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def one(*conditions: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"conditions": list(conditions)}]


async def test_rule_matching_on_each_field(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    rules = {
        "name": one({"field": "name", "op": "eq", "value": "checkout"}),
        "tags": one({"field": "tags", "op": "any_of", "value": ["vip", "escalated"]}),
        "metadata": one({"field": "metadata", "key": "customer.tier", "op": "eq", "value": "gold"}),
        "environment": one({"field": "environment", "op": "eq", "value": "staging-eu"}),
        "release": one({"field": "release", "op": "starts_with", "value": "v9."}),
        "user": one({"field": "user_id", "op": "in", "value": ["u-risky", "u-other"]}),
        "session": one({"field": "session_id", "op": "eq", "value": "s-watch"}),
        "error": one({"field": "has_error", "op": "eq", "value": True}),
        "latency": one({"field": "latency", "op": "gt", "value": 3}),
        "cost": one({"field": "total_cost", "op": "gte", "value": 1.5}),
        "tokens": one({"field": "input_tokens", "op": "gt", "value": 5000}),
        "obs_type": one({"field": "observation_types", "op": "any_of", "value": ["TOOL"]}),
        "obs_name": one({"field": "observation_names", "op": "contains", "value": "rerank"}),
        "run": one({"field": "dataset_run_name", "op": "eq", "value": "exp-42"}),
        "score": one({"field": "score", "name": "toxicity", "source": "EVAL", "evaluator": "judge",
                      "op": "gte", "value": 0.7}),
        # groups ORed, conditions ANDed
        "or_and": [{"conditions": [{"field": "name", "op": "eq", "value": "combo"},
                                   {"field": "tags", "op": "contains", "value": "x"}]},
                   {"conditions": [{"field": "release", "op": "eq", "value": "r-or"}]}],
    }
    rule_ids = {k: await make_rule(svc, auth, qid, k, g) for k, g in rules.items()}
    t = {k: f"t-{k}-{uuid.uuid4().hex[:6]}" for k in [*rules, "or_and2"]}
    neg = [f"neg-{i}-{uuid.uuid4().hex[:6]}" for i in range(9)]
    s = 1_700_000_000.0
    await asyncio.gather(
        svc.trace(project, t["name"], name="checkout"),
        svc.trace(project, t["tags"], tags=["a", "escalated"]),
        svc.trace(project, t["metadata"], metadata={"customer": {"tier": "gold"}}),
        svc.trace(project, t["environment"], environment="staging-eu"),
        svc.trace(project, t["release"], release="v9.1.0"),
        svc.trace(project, t["user"], user_id="u-risky"),
        svc.trace(project, t["session"], session_id="s-watch"),
        svc.trace(project, t["error"], observations=[obs(t["error"], type="SPAN", level="ERROR")]),
        svc.trace(project, t["latency"], observations=[
            obs(t["latency"], type="SPAN", start_time=datetime.fromtimestamp(s, UTC),
                end_time=datetime.fromtimestamp(s + 1, UTC)),
            obs(t["latency"], type="GENERATION", start_time=datetime.fromtimestamp(s + 0.5, UTC),
                end_time=datetime.fromtimestamp(s + 4.2, UTC))]),
        svc.trace(project, t["cost"], observations=[obs(t["cost"], type="GENERATION", cost_details={"total": 1.0}),
                                                    obs(t["cost"], type="GENERATION", cost_details={"total": 0.6})]),
        svc.trace(project, t["tokens"], observations=[obs(t["tokens"], type="GENERATION",
                                                          usage_details={"input": 6000, "output": 10})]),
        svc.trace(project, t["obs_type"], observations=[obs(t["obs_type"], type="TOOL", name="search")]),
        svc.trace(project, t["obs_name"], observations=[obs(t["obs_name"], type="SPAN", name="rerank")]),
        svc.trace(project, t["run"], dataset_run_name="exp-42"),
        svc.trace(project, t["score"], name="scored"),
        svc.trace(project, t["or_and"], name="combo", tags=["x"]),
        svc.trace(project, t["or_and2"], release="r-or"),
        # near misses: each fails its rule by one detail
        svc.trace(project, neg[0], name="checkout-v2", environment="staging", release="v8.9"),
        svc.trace(project, neg[1], tags=["vipish"], metadata={"customer": {"tier": "silver"}}),
        svc.trace(project, neg[2], metadata={"customer.tier": "gold"}, user_id="u-safe"),
        svc.trace(project, neg[3], observations=[obs(neg[3], type="SPAN", level="WARNING", name="reranker")]),
        svc.trace(project, neg[4], observations=[
            obs(neg[4], type="GENERATION", cost_details={"total": 1.4},
                usage_details={"input": 5000}, start_time=datetime.fromtimestamp(s, UTC),
                end_time=datetime.fromtimestamp(s + 3, UTC))]),
        svc.trace(project, neg[5], name="combo", tags=["y"]),
        svc.trace(project, neg[6], name="scored"),
        svc.trace(project, neg[7], name="scored"),
        svc.trace(project, neg[8], dataset_run_name="exp-4"),
    )
    await svc.score(project, t["score"], "toxicity", 0.9, evaluator="judge")
    await svc.score(project, neg[6], "toxicity", 0.9, evaluator="other-judge")  # wrong evaluator
    await svc.score(project, neg[7], "toxicity", 0.5, evaluator="judge")  # below threshold
    expected = {t[k]: rule_ids[k] for k in rules} | {t["or_and2"]: rule_ids["or_and"]}
    got = await svc.wait_items(auth, qid, len(expected))
    await summaries_seen(svc, project, neg)
    # Scores for negatives went through the same topic after the positive score; wait for them too.
    await asyncio.sleep(1.0)
    r = await svc.client.get(f"/api/v1/queues/{qid}/items", headers=auth, params={"limit": 500})
    got = r.json()["data"]
    assert {i["object_id"]: i["rule_id"] for i in got} == expected
    # every item carries its routing decision
    detail = (await svc.client.get(f"/api/v1/queues/{qid}/items/{got[0]['id']}", headers=auth)).json()
    assert detail["routing_decisions"][0]["outcome"] == "added"
    assert detail["routing_decisions"][0]["rule_id"] == got[0]["rule_id"]
    assert "matched" in detail["routing_decisions"][0]["reason"]
    # the preview runs the same predicates over the traces seen in the last days
    r = await svc.client.post(f"/api/v1/queues/{qid}/rules/preview", headers=auth,
                              json={"filter": {"groups": rules["tags"] + rules["run"]}, "sample_rate": 0.5})
    assert r.status_code == 200, r.text
    assert r.json()["matched"] == 2 and r.json()["count"] == 1 and r.json()["scanned"] >= len(expected) + len(neg)


async def test_late_score_routes_the_trace(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    rid = await make_rule(svc, auth, qid, "low-faithfulness", one(
        {"field": "name", "op": "eq", "value": "rag"},
        {"field": "score", "name": "faithfulness", "op": "lt", "value": 0.5}))
    late, early, human = (f"{x}-{uuid.uuid4().hex[:6]}" for x in ("late", "early", "human"))
    await svc.trace(project, late, name="rag")
    await svc.trace(project, human, name="rag")
    await summaries_seen(svc, project, [late, human])
    assert await svc.items(auth, qid) == []
    # a human annotation never routes; an automated score does, minutes (here: seconds) after its trace
    await svc.score(project, human, "faithfulness", 0.1, source="ANNOTATION")
    await svc.score(project, late, "faithfulness", 0.2, source="API")
    # a score that arrives before its trace waits for the trace
    await svc.score(project, early, "faithfulness", 0.3)
    await asyncio.sleep(0.5)
    await svc.trace(project, early, name="rag")
    got = await svc.wait_items(auth, qid, 2)
    assert {i["object_id"] for i in got} == {late, early}
    assert all(i["rule_id"] == rid for i in got)


async def test_sampling_is_deterministic_per_object(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    rid = await make_rule(svc, auth, qid, "sample", one({"field": "name", "op": "eq", "value": "s"}),
                          sample_rate=0.3)
    ids = [f"s-{i}-{uuid.uuid4().hex[:6]}" for i in range(120)]
    expected = {i for i in ids if sampled_in(rid, i, 0.3)}
    assert 15 < len(expected) < 60
    await asyncio.gather(*(svc.trace(project, i, name="s") for i in ids))
    await summaries_seen(svc, project, ids)
    got = await svc.wait_items(auth, qid, len(expected))
    assert {i["object_id"] for i in got} == expected
    # A replay (the same traces sent again) decides the same: nothing new is added.
    await asyncio.gather(*(svc.trace(project, i, name="s", tags=["again"]) for i in ids))
    await asyncio.sleep(2)
    r = await svc.client.get(f"/api/v1/queues/{qid}/items", headers=auth, params={"limit": 500})
    assert {i["object_id"] for i in r.json()["data"]} == expected


async def test_daily_cap(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    rid = await make_rule(svc, auth, qid, "capped", one({"field": "tags", "op": "contains", "value": "c"}),
                          daily_cap=5)
    ids = [f"c-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    await asyncio.gather(*(svc.trace(project, i, tags=["c"]) for i in ids))
    await summaries_seen(svc, project, ids)
    r = await svc.client.get(f"/api/v1/queues/{qid}/items", headers=auth, params={"limit": 500})
    assert len(r.json()["data"]) == 5
    rules = (await svc.client.get(f"/api/v1/queues/{qid}/rules", headers=auth)).json()["data"]
    assert [x["added_today"] for x in rules if x["id"] == rid] == [5]


async def test_paused_rule_does_not_route_and_resumes(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    rid = await make_rule(svc, auth, qid, "p", one({"field": "name", "op": "eq", "value": "p"}), active=False)
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    await svc.trace(project, a, name="p")
    await summaries_seen(svc, project, [a])
    r = await svc.client.patch(f"/api/v1/queues/{qid}/rules/{rid}", headers=auth, json={"active": True})
    assert r.status_code == 200 and r.json()["active"] is True
    await svc.trace(project, b, name="p")
    got = await svc.wait_items(auth, qid, 1)
    assert [i["object_id"] for i in got] == [b]


async def test_removed_item_is_never_re_added(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    await make_rule(svc, auth, qid, "errs", one({"field": "environment", "op": "eq", "value": "prod"}))
    tid = f"r-{uuid.uuid4().hex[:6]}"
    await svc.trace(project, tid, environment="prod")
    [item] = await svc.wait_items(auth, qid, 1)
    r = await svc.client.delete(f"/api/v1/queues/{qid}/items/{item['id']}", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "REMOVED"
    # the trace keeps matching: later updates and scores do not put it back
    await svc.trace(project, tid, environment="prod", name="updated")
    await svc.score(project, tid, "x", 1.0)
    await eventually(lambda: _decision(svc, auth, qid, item["id"], "previously_removed"), what="decision")
    r = await svc.client.get(f"/api/v1/queues/{qid}/items", headers=auth)
    assert r.json()["data"] == []
    r = await svc.client.get(f"/api/v1/queues/{qid}/items", headers=auth, params={"status": "removed"})
    assert [i["id"] for i in r.json()["data"]] == [item["id"]]
    r = await svc.client.post(f"/api/v1/queues/{qid}/items", headers=auth,
                              json={"items": [{"object_id": tid}]})
    assert r.json()["previously_removed"] == [{"object_type": "TRACE", "object_id": tid}]


async def _decision(svc: Service, auth: dict[str, str], qid: str, item_id: str, outcome: str) -> bool:
    d = (await svc.client.get(f"/api/v1/queues/{qid}/items/{item_id}", headers=auth)).json()
    return any(x["outcome"] == outcome for x in d["routing_decisions"])


async def test_backfill_over_traces_seen(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    old = [f"old-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    new = [f"new-{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    await asyncio.gather(*(svc.trace(project, i, name="bf", timestamp=T0 - timedelta(days=3)) for i in old),
                         *(svc.trace(project, i, name="bf" if n % 3 else "other", timestamp=T0 + timedelta(hours=n))
                           for n, i in enumerate(new)))
    await summaries_seen(svc, project, old + new)
    body = {"filter": {"groups": one({"field": "name", "op": "eq", "value": "bf"})}, "from": T0.isoformat()}
    r = await svc.client.post(f"/api/v1/queues/{qid}/rules/preview", headers=auth,
                              json={"name": "ignored", "filter": body["filter"], "days": 90})
    assert r.status_code == 200, r.text
    assert r.json()["matched"] == 0  # the traces are dated 2026-01 and earlier: outside the last 90 days
    r = await svc.client.post(f"/api/v1/queues/{qid}/items:backfill", headers=auth, json=body)
    assert r.status_code == 200, r.text
    want = {i for n, i in enumerate(new) if n % 3}
    assert r.json()["added"] == len(want) and r.json()["scanned"] == len(new)
    items = (await svc.client.get(f"/api/v1/queues/{qid}/items", headers=auth)).json()["data"]
    assert {i["object_id"] for i in items} == want
    await svc.client.delete(f"/api/v1/queues/{qid}/items/{items[0]['id']}", headers=auth)
    r = await svc.client.post(f"/api/v1/queues/{qid}/items/backfill", headers=auth, json=body)
    assert r.json()["added"] == 0
    assert r.json()["already_present"] == len(want) - 1 and r.json()["previously_removed"] == 1


async def test_exactly_once_and_events_on_the_queues_topic(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    rid = await make_rule(svc, auth, qid, "once", one({"field": "name", "op": "eq", "value": "once"}))
    tid = f"o-{uuid.uuid4().hex[:6]}"
    env = make_envelope(TraceIngested(trace_id=tid, trace=TraceData(id=tid, name="once")), project=project, key=tid)
    deps = RouterDeps(svc.app.state.container.uow, svc.app.state.container.rules, consumer="exactly-once-test")
    first = await route_batch([(env, env.parse_payload())], deps)
    again = await route_batch([(env, env.parse_payload())], deps)
    assert (first.applied, len(first.added)) == (1, 1)
    assert (again.applied, again.duplicates, again.added) == (0, 1, [])
    item_id = first.added[0]
    consumer = AIOKafkaConsumer(QUEUES.name, bootstrap_servers=svc.settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=f"qr-test-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    try:
        async def added() -> dict[str, Any] | None:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    e = orjson.loads(rec.value)
                    if e["project"] == project and e["type"] == "QueueItemAdded":
                        return e  # type: ignore[no-any-return]
            return None

        e = await eventually(added, timeout=30, what="QueueItemAdded on tally.queues")
    finally:
        await consumer.stop()
    assert e["payload"]["item"]["item_id"] == item_id
    assert e["payload"]["rule_id"] == rid and "once" in e["payload"]["reason"]
    assert e["key"] == tid
    # a redelivered batch that also carries new events: only the new ones are applied (after the topic check:
    # this adds a second item)
    t2 = f"o2-{uuid.uuid4().hex[:6]}"
    env2 = make_envelope(TraceIngested(trace_id=t2, trace=TraceData(id=t2, name="once")), project=project, key=t2)
    mixed = await route_batch([(env, env.parse_payload()), (env2, env2.parse_payload()),
                               (env2, env2.parse_payload())], deps)
    assert (mixed.applied, mixed.duplicates, len(mixed.added)) == (2, 1, 1)


async def test_score_events_update_and_delete(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    await make_rule(svc, auth, qid, "no-judge-yet", one({"field": "name", "op": "eq", "value": "nj"},
                                                        {"field": "score", "name": "judge", "op": "not_exists"}))
    await make_rule(svc, auth, qid, "judge-says-bad", one({"field": "score", "name": "verdict", "op": "eq",
                                                           "value": "bad"}))
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    await svc.score(project, a, "judge", 1.0)
    await svc.send(SCORES, project, b, [ScoreRecorded(score=ScoreData(
        id="v-" + b, name="verdict", data_type="CATEGORICAL", string_value="bad", trace_id=b,  # type: ignore[arg-type]
        source="EVAL", timestamp=datetime.now(UTC)))])  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    await svc.trace(project, a, name="nj")
    await svc.trace(project, b, name="other")
    got = await svc.wait_items(auth, qid, 1)
    assert [i["object_id"] for i in got] == [b]


async def test_session_target_adds_the_session_once(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    rid = await make_rule(svc, auth, qid, "sessions with errors",
                          one({"field": "has_error", "op": "eq", "value": True}), target="SESSION")
    sess = f"sess-{uuid.uuid4().hex[:6]}"
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    for t in (a, b):
        await svc.trace(project, t, session_id=sess, observations=[obs(t, type="SPAN", level="ERROR")])
    await summaries_seen(svc, project, [a, b])
    [item] = await svc.wait_items(auth, qid, 1)
    assert (item["object_type"], item["object_id"], item["rule_id"]) == ("SESSION", sess, rid)
    assert item["trace_id"] in (a, b)


async def test_awkward_ids_read_and_written_back(svc: Service) -> None:
    """Trace ids with quotes, backslashes, control characters and any script come back from the summaries' write
    and read as they were, and a trace's second batch merges into what its first wrote."""
    project, _auth = await svc.project()
    deps = RouterDeps(svc.app.state.container.uow, svc.app.state.container.rules, consumer="awkward-ids-test")
    tids = [f'q"\\{uuid.uuid4().hex[:4]}', f"tab\there-{uuid.uuid4().hex[:4]}", f"✓ü𝄞-{uuid.uuid4().hex[:4]}",
            f"[\"x\", 1]-{uuid.uuid4().hex[:4]}"]
    first = [make_envelope(TraceIngested(trace_id=t, trace=TraceData(id=t, name=f"n-{i}")), project=project, key=t)
             for i, t in enumerate(tids)]
    later = [make_envelope(TraceIngested(trace_id=t, observations=[obs(t, type="SPAN", level="ERROR")]),
                           project=project, key=t, occurred_at=T0 + timedelta(days=400)) for t in tids]
    for batch in (first, later):
        res = await route_batch([(e, e.parse_payload()) for e in batch], deps)
        assert res.applied == len(tids)
    async with svc.app.state.container.uow() as uow:
        for i, t in enumerate(tids):
            s = await uow.summaries.get(project, t)
            assert s is not None and (s.trace_id, s.name, s.has_error) == (t, f"n-{i}", True)
