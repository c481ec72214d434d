"""Experiments, agreement, judge calibration and the JSONL export, from events on the real broker."""

from __future__ import annotations

from typing import Any

import orjson

from tally_shared.events import (
    Category,
    DatasetCreated,
    DatasetData,
    DatasetRunItemCreated,
    DatasetRunItemData,
    ItemRef,
    QueueItemAdded,
    ScoreConfigCreated,
    ScoreConfigData,
    ScoreData,
    ScoreRecorded,
    TraceData,
    TraceIngested,
)
from tally_shared.testing.wait import eventually

from .conftest import Harness, at
from .test_stats import KRIPP


async def test_agreement_on_the_published_example_through_the_pipeline(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    envs = [h.env(ScoreConfigCreated(config=ScoreConfigData(id="cfg-k", name="rating", data_type="NUMERIC",
                                                            min_value=1, max_value=5)), pid, "cfg-k", at(0))]
    n = 0
    for coder, row in KRIPP.items():
        for unit, v in enumerate(row):
            if v is None:
                continue
            n += 1
            tid = f"unit-{unit}"
            envs.append(h.env(ScoreRecorded(score=ScoreData(
                id=f"{coder}-{unit}", name="rating", data_type="NUMERIC", value=v, trace_id=tid, config_id="cfg-k",
                source="ANNOTATION", author_user_id=coder, queue_id="qk", timestamp=at(unit))), pid, tid, at(unit)))
    # a human score outside the queue and an automated one must not count
    envs.append(h.env(ScoreRecorded(score=ScoreData(id="x", name="rating", data_type="NUMERIC", value=1,
                                                    trace_id="unit-0", config_id="cfg-k", source="EVAL",
                                                    timestamp=at(1))), pid, "unit-0", at(1)))
    await h.send(*envs)

    async def body(**params: Any) -> dict[str, Any]:
        r = await h.http.get("/api/v1/agreement", headers=auth, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    async def all_in() -> bool:
        return (await body(queue_id="qk", config_id="cfg-k"))["n_ratings"] == n

    await eventually(all_in, what="all ratings")
    interval = await body(queue_id="qk", config_id="cfg-k")
    assert interval["level"] == "interval" and round(interval["alpha"], 3) == 0.849
    nominal = await body(queue_id="qk", config_id="cfg-k", level="nominal")
    assert round(nominal["alpha"], 3) == 0.743
    assert len(nominal["pairs"]) == 6 and all(p["weights"] is None for p in nominal["pairs"])
    top = nominal["most_disputed"][0]
    assert top["object_id"] == "unit-5" and top["ratings"] == {"A": 1, "B": 2, "C": 3, "D": 4}
    r = await h.http.get("/api/v1/agreement", headers=auth)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "config_id"


async def test_calibration_and_export(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    cats = [Category(label="bad", value=0), Category(label="ok", value=1), Category(label="good", value=2)]
    envs = [h.env(ScoreConfigCreated(config=ScoreConfigData(id="cfg-q", name="quality", data_type="CATEGORICAL",
                                                            categories=cats)), pid, "cfg-q", at(0))]
    human = {"t1": {"ann": "good", "bob": "good"}, "t2": {"ann": "bad", "bob": "ok"}, "t3": {"ann": "ok"},
             "t4": {"ann": "bad", "bob": "bad"}}
    judge = {"t1": ("good", "v1"), "t2": ("good", "v1"), "t3": ("ok", "v2"), "t4": ("bad", "v2")}
    value = {c.label: c.value for c in cats}
    for tid in human:
        envs.append(h.env(TraceIngested(trace_id=tid, trace=TraceData(id=tid, name="qa", input={"q": tid},
                                                                      output="answer")), pid, tid, at(0)))
        for who, label in human[tid].items():
            envs.append(h.env(ScoreRecorded(score=ScoreData(
                id=f"{tid}-{who}", name="quality", data_type="CATEGORICAL", value=value[label], string_value=label,
                trace_id=tid, config_id="cfg-q", source="ANNOTATION", author_user_id=who, comment=f"{who} says",
                timestamp=at(1))), pid, tid, at(1)))
        label, version = judge[tid]
        envs.append(h.env(ScoreRecorded(score=ScoreData(
            id=f"{tid}-judge", name="llm-quality", data_type="CATEGORICAL", value=value[label], string_value=label,
            trace_id=tid, source="EVAL", evaluator_name="llm-quality", evaluator_version=version,
            timestamp=at(60 * 24 if version == "v2" else 0))), pid, tid, at(2)))
    envs.append(h.env(QueueItemAdded(item=ItemRef(queue_id="q", item_id="i1", object_type="TRACE", object_id="t1",
                                                  trace_id="t1"), reason="r"), pid, "t1", at(0)))
    await h.send(*envs)

    async def cal() -> dict[str, Any] | None:
        r = await h.http.get("/api/v1/calibration", headers=auth,
                             params={"config_id": "cfg-q", "evaluator": "llm-quality"})
        b = r.json()
        return b if r.status_code == 200 and b["n"] == 4 else None

    b = await eventually(cal, what="calibration")
    # humans: t1 good, t2 tie bad/ok -> 'bad' (first label), t3 ok, t4 bad; judge: good, good, ok, bad
    assert b["exact_agreement"] == 0.75
    assert b["confusion"]["labels"] == ["bad", "ok", "good"]
    assert b["confusion"]["matrix"] == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert b["mae"] == 0.5
    assert [(p["evaluator_version"], p["n"], p["exact_agreement"]) for p in b["by_evaluator_version"]] == [
        ("v1", 2, 0.5), ("v2", 2, 1.0)]
    assert [p["n"] for p in b["trend"]["points"]] == [2, 2]
    (worst,) = b["biggest_disagreements"]
    assert (worst["object_id"], worst["human"], worst["automated"], worst["gap"]) == ("t2", "bad", "good", 2.0)
    assert {r["reviewer"] for r in worst["reviewers"]} == {"ann", "bob"}

    # the trace view lists the queue item of t1
    view = (await h.http.get("/api/v1/traces/t1", headers=auth)).json()
    assert [(q["queue_id"], q["status"]) for q in view["queue_items"]] == [("q", "PENDING")]

    async def export(**params: Any) -> list[dict[str, Any]]:
        r = await h.http.get("/api/v1/exports/dataset.jsonl", headers=auth, params={"config_id": "cfg-q", **params})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        return [orjson.loads(line) for line in r.content.splitlines()]

    rows = await export()
    assert [(x["object_id"], x["label"], x["n_reviewers"]) for x in rows] == [
        ("t1", "good", 2), ("t2", "bad", 2), ("t3", "ok", 1), ("t4", "bad", 2)]
    assert rows[0]["input"] == {"q": "t1"} and rows[0]["output"] == "answer" and rows[0]["trace_name"] == "qa"
    assert [x["object_id"] for x in await export(min_reviewers=2, min_agreement=1.0)] == ["t1", "t4"]
    assert "input" not in (await export(include_io="false"))[0]
    r = await h.http.get("/api/v1/exports/dataset.jsonl", headers=auth)
    assert r.status_code == 422


async def test_experiment_comparison(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    envs = []
    human = {"A": [5, 4, 3, 4], "B": [3, 4, 2, 1]}
    auto = {"A": [0.9, 0.8, 0.7, 0.6], "B": [0.5, 0.4, 0.3, 0.2]}
    for run in ("A", "B"):
        for i in range(4):
            tid = f"{run}-{i}"
            envs.append(h.env(TraceIngested(trace_id=tid, trace=TraceData(
                id=tid, name="exp", dataset_name="ds", dataset_run_name=run, dataset_item_id=f"item-{i}")),
                pid, tid, at(i)))
            envs.append(h.env(ScoreRecorded(score=ScoreData(
                id=f"h-{tid}", name="correct", data_type="NUMERIC", value=human[run][i], trace_id=tid,
                source="ANNOTATION", author_user_id="ann", timestamp=at(i))), pid, tid, at(i)))
            envs.append(h.env(ScoreRecorded(score=ScoreData(
                id=f"a-{tid}", name="correct", data_type="NUMERIC", value=auto[run][i], trace_id=tid, source="EVAL",
                timestamp=at(i))), pid, tid, at(i)))
    await h.send(*envs)

    async def ready() -> dict[str, Any] | None:
        r = await h.http.get("/api/v1/experiments/compare", headers=auth, params={"runs": "A,B"})
        b = r.json()
        ok = r.status_code == 200 and len(b["items"]) == 4 and all(
            len(it["runs"]) == 2 and all(len(c["scores"]) == 1 and c["scores"]["correct"]["automated"] is not None
                                         and c["scores"]["correct"]["human"] is not None
                                         for c in it["runs"].values()) for it in b["items"])
        return b if ok else None

    b = await eventually(ready, what="experiment")
    (agg,) = b["aggregates"]
    a_h = agg["runs"]["A"]["human"]
    assert (a_h["n"], a_h["mean"]) == (4, 4.0) and a_h["ci_low"] < 4.0 < a_h["ci_high"]
    assert round(agg["runs"]["B"]["automated"]["mean"], 6) == 0.35
    item0 = b["items"][0]
    assert item0["dataset_item_id"] == "item-0"
    assert item0["runs"]["A"]["scores"]["correct"] == {"human": 5.0, "automated": 0.9}
    w = b["win_rate"]
    assert (w["wins"], w["losses"], w["ties"], w["win_rate"]) == (3, 0, 1, 1.0)
    assert round(w["ci_low"], 4) == 0.4385 and w["ci_high"] == 1.0  # Wilson, 3 of 3
    runs = (await h.http.get("/api/v1/experiments/runs", headers=auth)).json()["data"]
    assert [(r["dataset_run_name"], r["traces"], r["items"]) for r in runs] == [("A", 4, 4), ("B", 4, 4)]
    assert runs[0]["score_names"] == [{"name": "correct", "kind": "automated"}, {"name": "correct", "kind": "human"}]


async def test_experiment_runs_linked_by_dataset_id_show_the_dataset_name(harness: Harness) -> None:
    """The SDK's run_experiment links traces by dataset id (OTel attributes); the datasets API records run items
    as events of their own. Both runs are listed under the dataset's name, whichever event arrives first."""
    h = harness
    pid, auth = await h.project()
    run_item = DatasetRunItemData(id="ri-1", run_id="run-api", run_name="api-run", dataset_id="ds-9",
                                  dataset_name="golden", dataset_item_id="item-2", trace_id="t-api",
                                  created_at=at(1))
    await h.send_in_order([
        h.env(TraceIngested(trace_id="t-otel", trace=TraceData(id="t-otel", name="exp", dataset_run_name="sdk-run",
                                                               dataset_item_id="item-1", dataset_id="ds-9")),
              pid, "t-otel", at(0)),
        h.env(DatasetRunItemCreated(run_item=run_item), pid, "t-api", at(1)),
        h.env(TraceIngested(trace_id="t-api", trace=TraceData(id="t-api", name="exp")), pid, "t-api", at(2)),
        h.env(DatasetCreated(dataset=DatasetData(id="ds-9", name="golden", created_at=at(0), updated_at=at(0))),
              pid, "ds-9", at(0)),
    ])

    async def named() -> list[dict[str, Any]] | None:
        r = await h.http.get("/api/v1/experiments/runs", headers=auth, params={"dataset_name": "golden"})
        data: list[dict[str, Any]] = r.json()["data"]
        return data if len(data) == 2 else None

    runs = await eventually(named, what="runs under the dataset's name")
    assert [(r["dataset_name"], r["dataset_run_name"], r["items"]) for r in runs] == [
        ("golden", "api-run", 1), ("golden", "sdk-run", 1)]
    trace = (await h.http.get("/api/public/traces/t-api", headers=auth)).json()
    assert trace["name"] == "exp"
