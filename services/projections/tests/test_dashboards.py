"""Queue progress (events before QueueCreated, duplicates) and score analytics from the rollup (updates,
deletions, out-of-order, filters, histograms, category counts)."""

from __future__ import annotations

from typing import Any

from tally_shared.events import (
    ItemRef,
    QueueCreated,
    QueueData,
    QueueItemAdded,
    QueueItemCompleted,
    QueueItemFlagged,
    QueueItemLeased,
    QueueItemLeaseExpired,
    QueueItemReleased,
    QueueItemSkipped,
    QueueItemSkipUndone,
    ScoreData,
    ScoreDeleted,
    ScoreRecorded,
    ScoreUpdated,
    TraceData,
    TraceIngested,
)
from tally_shared.testing.wait import eventually

from .conftest import Harness, at


def ref(i: int, queue: str = "q1") -> ItemRef:
    return ItemRef(queue_id=queue, item_id=f"item-{i}", object_type="TRACE", object_id=f"t{i}", trace_id=f"t{i}")


async def test_queue_progress_per_status_reviewer_and_hour(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    ev = [
        # items and reviews arrive before the queue's own QueueCreated
        h.env(QueueItemAdded(item=ref(1), reason="rule"), pid, "t1", at(0)),
        h.env(QueueItemAdded(item=ref(2), reason="rule"), pid, "t2", at(0)),
        h.env(QueueItemAdded(item=ref(3), reason="manual"), pid, "t3", at(0)),
        h.env(QueueItemLeased(item=ref(1), reviewer="alice", lease_id="l1", expires_at=at(30)), pid, "t1", at(1)),
        h.env(QueueItemCompleted(item=ref(1), reviewer="alice", item_completed=False), pid, "t1", at(2)),
        h.env(QueueItemLeased(item=ref(1), reviewer="bob", lease_id="l2", expires_at=at(30)), pid, "t1", at(3)),
        h.env(QueueItemCompleted(item=ref(1), reviewer="bob", item_completed=True), pid, "t1", at(64)),
        h.env(QueueItemLeased(item=ref(2), reviewer="bob", lease_id="l3", expires_at=at(90)), pid, "t2", at(65)),
        h.env(QueueItemSkipped(item=ref(2), reviewer="bob", reason="unclear"), pid, "t2", at(66)),
        h.env(QueueItemFlagged(item=ref(3), reviewer="alice", reason="pii"), pid, "t3", at(67)),
        # released, expired, taken back after a skip: none of these is work in progress any more
        h.env(QueueItemAdded(item=ref(4), reason="rule"), pid, "t4", at(0)),
        h.env(QueueItemLeased(item=ref(4), reviewer="carol", lease_id="l4", expires_at=at(90)), pid, "t4", at(68)),
        h.env(QueueItemReleased(item=ref(4), reviewer="carol", lease_id="l4"), pid, "t4", at(69)),
        h.env(QueueItemAdded(item=ref(5), reason="rule"), pid, "t5", at(0)),
        h.env(QueueItemLeased(item=ref(5), reviewer="carol", lease_id="l5", expires_at=at(90)), pid, "t5", at(70)),
        h.env(QueueItemLeaseExpired(item=ref(5), reviewer="carol", lease_id="l5"), pid, "t5", at(91)),
        h.env(QueueItemAdded(item=ref(6), reason="rule"), pid, "t6", at(0)),
        h.env(QueueItemLeased(item=ref(6), reviewer="carol", lease_id="l6", expires_at=at(99)), pid, "t6", at(92)),
        h.env(QueueItemAdded(item=ref(7), reason="rule"), pid, "t7", at(0)),
        h.env(QueueItemLeased(item=ref(7), reviewer="carol", lease_id="l7", expires_at=at(99)), pid, "t7", at(93)),
        h.env(QueueItemSkipped(item=ref(7), reviewer="carol"), pid, "t7", at(94)),
        h.env(QueueItemSkipUndone(item=ref(7), reviewer="carol"), pid, "t7", at(95)),
        h.env(QueueCreated(queue=QueueData(id="q1", name="Support", reviewers_per_item=2)), pid, "q1", at(-10)),
    ]
    await h.send_in_order(ev)
    await h.send(ev[4], ev[6])  # redeliveries change nothing

    async def done() -> dict[str, Any] | None:
        r = await h.http.get("/api/v1/progress/queues/q1", headers=auth)
        if r.status_code != 200:
            return None
        b = r.json()
        return b if b["name"] == "Support" and len(b["reviewers"]) == 3 and b["reviewers"][0]["flagged"] \
            and b["total_items"] == 7 else None

    b = await eventually(done, what="queue progress")
    # each item counted once: the skipped one (2) is not also pending; only item 6 is held
    assert b["items"] == {"total": 7, "completed": 1, "in_progress": 1, "skipped": 1, "pending": 4, "flagged": 1,
                          "removed": 0}
    assert (b["total_items"], b["completed_items"], b["reviewers_per_item"]) == (7, 1, 2)
    revs = {r["reviewer"]: r for r in b["reviewers"]}
    assert (revs["alice"]["completed"], revs["alice"]["flagged"], revs["alice"]["in_progress"]) == (1, 1, 0)
    assert (revs["bob"]["completed"], revs["bob"]["skipped"]) == (1, 1)
    assert (revs["carol"]["in_progress"], revs["carol"]["skipped"]) == (1, 0)
    points = b["throughput"]["points"]
    assert [(p["bucket"][:16], p["reviews_completed"], p["items_completed"]) for p in points] == [
        ("2026-03-02T09:00", 1, 0), ("2026-03-02T10:00", 1, 1)]
    r = await h.http.get("/api/v1/progress/queues", headers=auth)
    assert [(q["queue_id"], q["total_items"], q["completed_items"]) for q in r.json()["data"]] == [("q1", 7, 1)]
    assert (await h.http.get("/api/v1/progress/queues/nope", headers=auth)).status_code == 404


def score(sid: str, name: str, dt: str, minute: float, *, value: float | None = None, label: str | None = None,
          trace: str = "tA", source: str = "ANNOTATION", author: str = "alice") -> ScoreData:
    return ScoreData(id=sid, name=name, data_type=dt, value=value, string_value=label, trace_id=trace,
                     source=source, author_user_id=author, timestamp=at(minute))


async def test_score_analytics_from_rollups(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    traces = [
        h.env(TraceIngested(trace_id="tA", trace=TraceData(id="tA", name="chat", tags=["vip", "eu"],
                                                           environment="prod", release="1.0", user_id="u1")),
              pid, "tA", at(0)),
        h.env(TraceIngested(trace_id="tB", trace=TraceData(id="tB", name="search", environment="dev")),
              pid, "tB", at(0)),
    ]
    scores = [
        h.env(ScoreRecorded(score=score("s1", "quality", "NUMERIC", 0, value=1)), pid, "tA", at(0)),
        h.env(ScoreRecorded(score=score("s2", "quality", "NUMERIC", 1, value=3)), pid, "tA", at(1)),
        h.env(ScoreRecorded(score=score("s3", "quality", "NUMERIC", 1500, value=5, trace="tB")), pid, "tB", at(2)),
        h.env(ScoreRecorded(score=score("s4", "tone", "CATEGORICAL", 2, value=1, label="polite")), pid, "tA", at(2)),
        h.env(ScoreRecorded(score=score("s5", "tone", "CATEGORICAL", 3, value=0, label="rude", trace="tB")),
              pid, "tB", at(3)),
        h.env(ScoreRecorded(score=score("s6", "tone", "CATEGORICAL", 4, value=1, label="polite", trace="tB")),
              pid, "tB", at(4)),
        # s2 is corrected to 4; an older, late-arriving update must not undo that; s6 is deleted
        h.env(ScoreUpdated(score=score("s2", "quality", "NUMERIC", 1, value=4)), pid, "tA", at(20)),
        h.env(ScoreUpdated(score=score("s2", "quality", "NUMERIC", 1, value=2)), pid, "tA", at(10)),
        h.env(ScoreDeleted(score_id="s6", trace_id="tB"), pid, "tB", at(30)),
        h.env(ScoreRecorded(score=score("s7", "judge", "NUMERIC", 5, value=0.25, source="EVAL")), pid, "tA", at(5)),
    ]
    await h.send_in_order(scores + traces)
    await h.send(scores[1], scores[8])

    async def get(**params: Any) -> dict[str, Any]:
        r = await h.http.get("/api/v1/analytics/scores", headers=auth, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    async def settled() -> bool:
        b = await get(name="quality")
        s = b["series"]
        # both traces' dimensions applied (tA and tB are on different partitions: they may come in different
        # batches, and each is visible once its own batch commits)
        return bool(s) and s[0]["count"] == 3 and s[0]["mean"] == (1 + 4 + 5) / 3 and (
            await get(trace_name="chat"))["series"] != [] and (await get(environment="dev"))["series"] != []

    await eventually(settled, what="rollups")
    b = await get(name="quality", bucket="day")
    (q,) = b["series"]
    assert b["served_from"] == "rollup"
    assert (q["source"], q["data_type"], q["count"]) == ("ANNOTATION", "NUMERIC", 3)
    assert q["ci_low"] < q["mean"] < q["ci_high"]
    assert q["distribution"] == {"type": "histogram", "bins": [
        {"lower": 1.0, "upper": 1.0, "count": 1}, {"lower": 4.0, "upper": 4.0, "count": 1},
        {"lower": 5.0, "upper": 5.0, "count": 1}]}
    assert [(p["bucket"][:10], p["count"]) for p in q["buckets"]] == [("2026-03-02", 2), ("2026-03-03", 1)]
    hourly = (await get(name="quality", bucket="hour", from_timestamp=at(0).isoformat(),
                        to_timestamp=at(60).isoformat()))["series"][0]
    assert (hourly["count"], hourly["mean"]) == (2, 2.5)
    (tone,) = (await get(name="tone"))["series"]
    assert tone["distribution"] == {"type": "categories", "counts": {"polite": 1, "rude": 1}}
    # filters by trace dimensions
    assert [(s["name"], s["count"]) for s in (await get(trace_name="chat", source="ANNOTATION"))["series"]] == [
        ("quality", 2), ("tone", 1)]
    assert [(s["name"], s["count"]) for s in (await get(environment="dev"))["series"]] == [
        ("quality", 1), ("tone", 1)]
    assert [s["name"] for s in (await get(tags="vip", source="EVAL"))["series"]] == ["judge"]
    assert [s["count"] for s in (await get(user_id="u1", name="quality"))["series"]] == [2]
    both = await get(tags="vip", release="1.0", name="quality")
    assert both["served_from"] == "scores" and [s["count"] for s in both["series"]] == [2]
    assert (await get(tags="vip", release="2.0"))["series"] == []
    # a trace renamed later moves its scores in the rollup
    await h.send(h.env(TraceIngested(trace_id="tA", trace=TraceData(id="tA", name="chat-v2")), pid, "tA", at(40)))

    async def moved() -> bool:
        return (await get(trace_name="chat"))["series"] == [] and bool((await get(trace_name="chat-v2"))["series"])

    await eventually(moved, what="re-counted rollup")
