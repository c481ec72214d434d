"""Experiments, agreement, calibration and the dataset export over in-memory stores (no database): grouping by
run, item and object, consensus, the statistics calls and the export's filters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson
import pytest

from projections.application import evaluation
from projections.application.evaluation import ExportChunk, Subject
from projections.domain.errors import Invalid

from .fakes import Calls, T


def score(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "s", "name": "q", "source": "ANNOTATION", "data_type": "NUMERIC", "value": None,
                            "string_value": None, "string_values": None, "trace_id": None, "observation_id": None,
                            "session_id": None, "author_user_id": None, "comment": None, "timestamp": T,
                            "evaluator_version": None, "config_id": None}
    return base | kw


class FakeEvaluationReads(Calls):
    def __init__(self, *, humans: Sequence[dict[str, Any]] = (), autos: Sequence[dict[str, Any]] = (),
                 config: dict[str, Any] | None = None, run_traces: Sequence[dict[str, Any]] = (),
                 run_scores: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__()
        self.humans, self.autos, self.cfg = list(humans), list(autos), config
        self.runs, self.run_scores = list(run_traces), list(run_scores)

    async def experiment_runs(self, project_id: str, dataset_name: str | None) -> list[dict[str, Any]]:
        return [{"dataset_name": "d", "dataset_run_name": "a"}, {"dataset_name": "d", "dataset_run_name": "b"}]

    async def run_score_names(self, project_id: str) -> list[tuple[str, str, str]]:
        return [("a", "q", "ANNOTATION"), ("a", "judge", "EVAL"), ("a", "q", "EVAL")]

    async def run_traces(self, project_id: str, runs: Sequence[str]) -> list[dict[str, Any]]:
        return [t for t in self.runs if t["dataset_run_name"] in runs]

    async def trace_scores(self, project_id: str, trace_ids: Sequence[str]) -> list[dict[str, Any]]:
        return [s for s in self.run_scores if s["trace_id"] in trace_ids]

    async def config(self, project_id: str, config_id: str) -> dict[str, Any] | None:
        return self.cfg

    async def human_scores(self, project_id: str, subject: Subject, queue_id: str | None) -> list[dict[str, Any]]:
        self.saw("human_scores", subject, queue_id)
        return self.humans

    async def automated_scores(self, project_id: str, evaluator: str, object_ids: Sequence[str]
                               ) -> list[dict[str, Any]]:
        self.saw("automated_scores", evaluator, list(object_ids))
        return self.autos


async def test_runs_list_their_score_names_by_kind() -> None:
    runs = await evaluation.experiment_runs(FakeEvaluationReads(), "p", None)
    assert runs[0]["score_names"] == [{"name": "judge", "kind": "automated"}, {"name": "q", "kind": "automated"},
                                      {"name": "q", "kind": "human"}]
    assert runs[1]["score_names"] == []


async def test_compare_runs_means_items_and_win_rate() -> None:
    traces = [{"id": f"{run}{i}", "dataset_run_name": run, "dataset_item_id": f"item{i}"}
              for run in ("a", "b") for i in range(3)]
    values = {"a0": 5, "b0": 3, "a1": 2, "b1": 4, "a2": 3, "b2": 3}
    scores = [{"trace_id": t, "name": "q", "source": "ANNOTATION", "data_type": "NUMERIC", "value": float(v),
               "string_value": None, "author_user_id": "x"} for t, v in values.items()]
    store = FakeEvaluationReads(run_traces=traces, run_scores=scores)
    out = await evaluation.compare_runs(store, "p", ["a", "b"], win_score=None, higher_is_better=True)
    assert out["aggregates"][0]["runs"]["a"]["human"]["mean"] == pytest.approx(10 / 3)
    assert out["aggregates"][0]["runs"]["a"]["automated"]["n"] == 0
    assert out["items"][0] == {"dataset_item_id": "item0", "runs": {
        "a": {"trace_id": "a0", "scores": {"q": {"human": 5.0, "automated": None}}},
        "b": {"trace_id": "b0", "scores": {"q": {"human": 3.0, "automated": None}}}}}
    wr = out["win_rate"]
    assert (wr["score_name"], wr["wins"], wr["losses"], wr["ties"], wr["win_rate"]) == ("q", 1, 1, 1, 0.5)
    out = await evaluation.compare_runs(store, "p", ["a", "b"], win_score="q", higher_is_better=False)
    assert out["win_rate"]["wins"] == 1
    with pytest.raises(Invalid):
        await evaluation.compare_runs(store, "p", [], win_score=None, higher_is_better=True)


async def test_agreement_counts_each_reviewers_latest_rating() -> None:
    humans = [score(trace_id="t1", author_user_id="alice", value=1.0),
              score(trace_id="t1", author_user_id="alice", value=3.0),  # later: replaces the first
              score(trace_id="t1", author_user_id="bob", value=3.0),
              score(trace_id="t2", author_user_id="alice", value=1.0),
              score(trace_id="t2", author_user_id="bob", value=5.0)]
    store = FakeEvaluationReads(humans=humans)
    out = await evaluation.agreement(store, "p", queue_id="q1", config_id=None, score_name="q", level=None, top=5)
    assert store.asked("human_scores") == [((Subject(None, "q"), "q1"), {})]
    assert out["data_type"] == "NUMERIC" and out["score_name"] == "q"
    top = out["most_disputed"][0]
    assert (top["object_id"], top["trace_id"]) == ("t2", "t2")
    with pytest.raises(Invalid):
        await evaluation.agreement(store, "p", queue_id=None, config_id=None, score_name=None, level=None, top=5)
    with pytest.raises(Invalid):
        await evaluation.agreement(store, "p", queue_id=None, config_id=None, score_name="q", level="loud", top=5)


async def test_calibration_pairs_the_human_consensus_with_the_latest_judge() -> None:
    humans = [score(trace_id="t1", author_user_id="alice", value=4.0),
              score(trace_id="t1", author_user_id="bob", value=2.0),
              score(trace_id="t2", author_user_id="alice", value=5.0)]
    autos = [score(id="j1", source="EVAL", name="judge", trace_id="t1", value=1.0, evaluator_version="v1"),
             score(id="j2", source="EVAL", name="judge", trace_id="t1", value=3.0, evaluator_version="v2",
                   timestamp=T + timedelta(days=8)),
             score(id="j3", source="EVAL", name="judge", trace_id="t2", value=5.0, evaluator_version="v2"),
             score(id="j4", source="EVAL", name="judge", trace_id="t9", value=5.0)]  # no human score: ignored
    store = FakeEvaluationReads(humans=humans, autos=autos)
    out = await evaluation.calibration(store, "p", config_id=None, score_name="q", evaluator="judge", bucket="week",
                                       top=5)
    assert store.asked("automated_scores") == [(("judge", ["t1", "t2"]), {})]
    assert out["n"] == 2 and out["mae"] == 0.0  # t1: mean 3 vs v2's 3; t2: 5 vs 5
    assert out["biggest_disagreements"] == []
    assert [v["evaluator_version"] for v in out["by_evaluator_version"]] == ["v1", "v2"]
    assert out["by_evaluator_version"][0]["mae"] == 2.0
    assert [p["bucket"].weekday() for p in out["trend"]["points"]] == [0, 0]  # weeks start on Monday


class FakeExportReads(Calls):
    def __init__(self, chunks: Sequence[ExportChunk]) -> None:
        super().__init__()
        self.chunks = list(chunks)

    async def labelled_chunk(self, project_id: str, subject: Subject, *, object_type: str | None,
                             min_reviewers: int, after: str | None, limit: int, include_io: bool) -> ExportChunk:
        self.saw("labelled_chunk", subject, after=after, limit=limit)
        return self.chunks.pop(0) if self.chunks else ExportChunk([], [], {}, {})


async def test_export_consensus_agreement_and_blind_traces() -> None:
    def cat(tid: str, who: str, label: str) -> dict[str, Any]:
        return score(trace_id=tid, author_user_id=who, data_type="CATEGORICAL", string_value=label, config_id="c")

    chunk1 = ExportChunk(["t1", "t2"], [cat("t1", "a", "good"), cat("t1", "b", "good"), cat("t1", "c", "bad"),
                                        cat("t2", "a", "bad"), cat("t2", "b", "good")],
                         {"t1": {"id": "t1", "name": "chat", "tags": ["x"], "input": "hi", "output": "yo",
                                 "metadata": None}}, {})
    chunk2 = ExportChunk(["t3"], [cat("t3", "a", "ok"), cat("t3", "b", "ok")], {}, {})
    store = FakeExportReads([chunk1, chunk2])
    lines = b"".join([part async for part in evaluation.export_dataset(
        store, "p", config_id="c", score_name=None, object_type=None, min_reviewers=2, min_agreement=0.6,
        include_io=True, chunk=2, hidden_traces=frozenset({"t3"}))]).splitlines()
    assert [a[1]["after"] for a in store.asked("labelled_chunk")] == [None, "t2", "t3"]  # keyset by object id
    (rec,) = [orjson.loads(line) for line in lines]  # t2 splits 1:1 (0.5 < 0.6), t3 is hidden from the caller
    assert rec["object_id"] == "t1" and rec["label"] == "good" and rec["agreement"] == pytest.approx(2 / 3)
    assert rec["trace_name"] == "chat" and rec["tags"] == ["x"] and rec["input"] == "hi"
    assert [s["reviewer"] for s in rec["scores"]] == ["a", "b", "c"]

    with pytest.raises(Invalid):
        async for _ in evaluation.export_dataset(store, "p", config_id=None, score_name=None, object_type=None,
                                                 min_reviewers=1, min_agreement=0, include_io=False, chunk=5):
            pass
