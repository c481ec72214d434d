"""The trace, observation and session reads' logic over in-memory stores (no database): parameter rules,
paging, cursors, the ``filter`` conditions, and how traces are composed with observations, scores and queue
items."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from projections.application import sessions, traces
from projections.application.traces import Condition, ObservationFilters, Order, ScoreMatch, TraceFilters
from projections.domain.errors import NotFound, Unsupported

from .fakes import Calls, T, observation_row, trace_row


class FakeTraceReads(Calls):
    def __init__(self, trace_rows: Sequence[dict[str, Any]] = (), obs: Sequence[dict[str, Any]] = (),
                 scores: Sequence[dict[str, Any]] = (), items: Sequence[dict[str, Any]] = (),
                 reviews: Sequence[dict[str, Any]] = (), configs: dict[str, str] | None = None) -> None:
        super().__init__()
        self.traces = {t["id"]: t for t in trace_rows}
        self.obs, self.scores, self.items, self.reviews = list(obs), list(scores), list(items), list(reviews)
        self.configs = configs or {}

    async def observations_of(self, project_id: str, trace_ids: Sequence[str], columns: Sequence[str] | None = None
                              ) -> dict[str, list[dict[str, Any]]]:
        self.saw("observations_of", list(trace_ids), columns)
        out: dict[str, list[dict[str, Any]]] = {}
        for o in self.obs:
            if o["trace_id"] in trace_ids:
                out.setdefault(o["trace_id"], []).append(dict(o))
        return out

    async def scores_of(self, project_id: str, trace_ids: Sequence[str], columns: Sequence[str] | None = None
                        ) -> dict[str, list[dict[str, Any]]]:
        self.saw("scores_of", list(trace_ids), columns)
        out: dict[str, list[dict[str, Any]]] = {}
        for s in self.scores:
            if s["trace_id"] in trace_ids:
                out.setdefault(s["trace_id"], []).append(dict(s))
        return out

    async def trace(self, project_id: str, trace_id: str) -> dict[str, Any] | None:
        return self.traces.get(trace_id)

    async def trace_page(self, project_id: str, f: TraceFilters, order: Order | None, *, offset: int, limit: int
                         ) -> tuple[int, list[dict[str, Any]]]:
        self.saw("trace_page", f, order, offset=offset, limit=limit)
        rows = list(self.traces.values())
        return len(rows), rows[offset:offset + limit]

    async def observations_v2(self, project_id: str, f: ObservationFilters | Sequence[Condition],
                              after: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
        self.saw("observations_v2", f, after, limit)
        rows = [o | {"sort_start": o.get("start_time") or o["created_at"]} for o in self.obs]
        rows.sort(key=lambda r: (r["sort_start"], r["id"]), reverse=True)
        if after is not None:
            rows = [r for r in rows if (r["sort_start"], r["id"]) < after]
        return rows[:limit]

    async def observation(self, project_id: str, oid: str) -> dict[str, Any] | None:
        return next((o for o in self.obs if o["id"] == oid), None)

    async def config_names(self, project_id: str, config_ids: Sequence[str]) -> dict[str, str]:
        self.saw("config_names", list(config_ids))
        return {c: self.configs[c] for c in config_ids if c in self.configs}

    async def queue_items_of(self, project_id: str, trace_id: str) -> list[dict[str, Any]]:
        return list(self.items)

    async def reviews_of(self, project_id: str, items: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        self.saw("reviews_of", list(items))
        return [r for r in self.reviews if (r["queue_id"], r["item_id"]) in items]

    async def native_trace_ids(self, project_id: str, f: TraceFilters, *, level: str | None,
                               score: ScoreMatch | None, order: Order | None, offset: int, limit: int
                               ) -> tuple[int, list[str]]:
        self.saw("native_trace_ids", f, level=level, score=score, order=order, offset=offset, limit=limit)
        ids = list(self.traces)
        return len(ids), ids[offset:offset + limit]

    async def traces_by_id(self, project_id: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {i: self.traces[i] for i in ids}


# -- orderBy, filter JSON, cursors -----------------------------------------------------------------------------------

def test_order_by_is_a_known_field_and_a_direction() -> None:
    assert traces.parse_order(None) is None and traces.parse_order("") is None
    assert traces.parse_order("timestamp.asc") == Order("timestamp", True)
    assert traces.parse_order("userId.desc") == Order("user_id", False)
    for bad in ("timestamp", "timestamp.up", "input.asc", "userId.DESC"):
        with pytest.raises(Unsupported) as exc:
            traces.parse_order(bad)
        assert exc.value.problems()[0]["field"] == "orderBy"


def test_filter_json_becomes_checked_conditions() -> None:
    conds = traces.parse_filter(
        '[{"column": "traceId", "operator": "=", "value": "t1"},'
        ' {"column": "userId", "operator": "any of", "value": ["u"]},'
        ' {"column": "tags", "operator": "all of", "value": ["a", "b"]},'
        ' {"column": "isRootObservation", "operator": "<>", "value": true},'
        ' {"column": "metadata", "key": "k", "operator": "contains", "value": "x"},'
        ' {"column": "startTime", "operator": ">=", "value": "2026-03-02T09:00:00Z"}]')
    assert conds == [
        Condition("observation", "trace_id", "=", "t1"), Condition("trace", "user_id", "any of", ["u"]),
        Condition("tags", "tags", "all of", ["a", "b"]), Condition("root", "parent_observation_id", "=", False),
        Condition("metadata", "k", "contains", "x"), Condition("observation", "start_time", ">=", T),
    ]


@pytest.mark.parametrize(("raw", "field"), [
    ("{}", "filter"), ("not json", "filter"), ("[1]", "filter[0]"),
    ('[{"column": "input", "operator": "=", "value": 1}]', "filter[0].column"),
    ('[{"column": "name", "operator": "=", "value": "a"}, {"column": "name", "operator": "like", "value": "a"}]',
     "filter[1].operator"),
    ('[{"column": "metadata", "operator": "=", "value": "a"}]', "filter[0].column"),  # no key
])
def test_filter_json_refuses_what_it_cannot_serve(raw: str, field: str) -> None:
    with pytest.raises(Unsupported) as exc:
        traces.parse_filter(raw)
    assert exc.value.problems()[0]["field"] == field


def test_tags_take_only_list_operators() -> None:
    with pytest.raises(Unsupported, match="unsupported operator '=' for tags"):
        traces.parse_filter('[{"column": "tags", "operator": "=", "value": ["a"]}]')


def test_cursor_round_trip_and_garbage() -> None:
    cursor = traces.encode_cursor(T, "o-9")
    assert traces.decode_cursor(cursor) == (T, "o-9")
    for bad in ("%%%", "e30=", traces.encode_cursor(T, "x")[:-4]):
        with pytest.raises(Unsupported):
            traces.decode_cursor(bad)


# -- Langfuse-compatible lists ---------------------------------------------------------------------------------------

async def test_observations_v2_pages_by_cursor_and_filter_replaces_the_simple_parameters() -> None:
    obs = [observation_row(f"o{i}", "t1", start_time=T + timedelta(minutes=i), name="llm") for i in range(5)]
    store = FakeTraceReads(obs=obs)
    page1 = await traces.public_observations_v2(store, "p", fields=None, expand_metadata=None, limit=2, cursor=None,
                                                filter_json=None, filters=ObservationFilters(name="llm"))
    assert [o["id"] for o in page1["data"]] == ["o4", "o3"]
    assert store.asked("observations_v2")[-1][0] == (ObservationFilters(name="llm"), None, 3)  # one more: is there?
    page2 = await traces.public_observations_v2(store, "p", fields=None, expand_metadata=None, limit=2,
                                                cursor=page1["meta"]["cursor"], filter_json=None,
                                                filters=ObservationFilters())
    assert [o["id"] for o in page2["data"]] == ["o2", "o1"]
    page3 = await traces.public_observations_v2(store, "p", fields=None, expand_metadata=None, limit=2,
                                                cursor=page2["meta"]["cursor"], filter_json=None,
                                                filters=ObservationFilters())
    assert [o["id"] for o in page3["data"]] == ["o0"] and page3["meta"] == {}

    await traces.public_observations_v2(store, "p", fields=None, expand_metadata=None, limit=2, cursor=None,
                                        filter_json='[{"column": "level", "operator": "=", "value": "ERROR"}]',
                                        filters=ObservationFilters(name="llm"))
    assert store.asked("observations_v2")[-1][0][0] == [Condition("observation", "level", "=", "ERROR")]


async def test_observations_v2_refuses_unknown_field_groups_before_reading() -> None:
    store = FakeTraceReads()
    with pytest.raises(Unsupported) as exc:
        await traces.public_observations_v2(store, "p", fields="core,everything", expand_metadata=None, limit=5,
                                            cursor=None, filter_json=None, filters=ObservationFilters())
    assert exc.value.problems()[0]["field"] == "fields" and not store.calls


async def test_trace_list_field_groups_decide_what_is_read_and_shown() -> None:
    rows = [trace_row("t1", input={"q": 1}), trace_row("t2")]
    obs = [observation_row("o1", "t1", start_time=T, end_time=T + timedelta(seconds=3), cost_details={"total": 2.0})]
    store = FakeTraceReads(rows, obs, scores=[{"id": "s1", "trace_id": "t1"}])
    out = await traces.public_traces(store, "p", page=2, limit=1, order_by="name.asc", fields="core,metrics",
                                     filters=TraceFilters(name="x"))
    assert store.asked("trace_page") == [((TraceFilters(name="x"), Order("name", True)), {"offset": 1, "limit": 1})]
    assert not store.asked("scores_of")  # not asked for, not read
    assert out["meta"] == {"page": 2, "limit": 1, "totalItems": 2, "totalPages": 2}
    (item,) = out["data"]
    assert item["id"] == "t2" and "input" not in item and "observations" not in item and "scores" not in item
    assert item["latency"] == 0.0 and item["totalCost"] == 0.0

    out = await traces.public_traces(store, "p", page=1, limit=2, order_by=None, fields=None, filters=TraceFilters())
    first = out["data"][0]
    assert first["input"] == {"q": 1} and first["observations"] == ["o1"] and first["scores"] == ["s1"]
    assert first["latency"] == 3.0 and first["totalCost"] == 2.0


async def test_public_trace_sorts_observations_and_missing_is_not_found() -> None:
    obs = [observation_row("late", "t1", start_time=T + timedelta(seconds=5)), observation_row("none", "t1"),
           observation_row("early", "t1", start_time=T)]
    store = FakeTraceReads([trace_row("t1")], obs)
    out = await traces.public_trace(store, "p", "t1")
    assert [o["id"] for o in out["observations"]] == ["early", "late", "none"]  # no start time last
    with pytest.raises(NotFound):
        await traces.public_trace(store, "p", "t-missing")
    with pytest.raises(NotFound):
        await traces.public_observation(store, "p", "o-missing")


# -- native trace view -----------------------------------------------------------------------------------------------

async def test_native_trace_lists_rows_summarises_levels_and_scores() -> None:
    rows = [trace_row("t1", name="chat", input="big"), trace_row("t2")]
    obs = [observation_row("o1", "t1", level="ERROR"), observation_row("o2", "t1")]
    scores: list[dict[str, Any]] = [
        {"trace_id": "t1", "name": "q", "source": "ANNOTATION", "value": 4.0, "string_value": None},
              {"trace_id": "t1", "name": "q", "source": "ANNOTATION", "value": 2.0, "string_value": None},
              {"trace_id": "t1", "name": "tone", "source": "EVAL", "value": None, "string_value": "ok"}]
    store = FakeTraceReads(rows, obs, scores)
    out = await traces.native_traces(store, "p", page=1, limit=10, order_by=None, filters=TraceFilters(),
                                     score_source="EVAL")
    assert store.asked("native_trace_ids")[0][1]["score"] is None  # a source alone filters nothing
    t1 = out["data"][0]
    assert "input" not in t1 and t1["name"] == "chat" and t1["observation_count"] == 2
    assert t1["levels"] == {"ERROR": 1, "DEFAULT": 1}
    assert t1["scores"] == [{"name": "q", "source": "ANNOTATION", "count": 2, "mean": 3.0, "labels": []},
                            {"name": "tone", "source": "EVAL", "count": 1, "mean": None, "labels": ["ok"]}]
    assert out["data"][1]["scores"] == [] and out["meta"] == {"page": 1, "limit": 10, "total": 2}

    await traces.native_traces(store, "p", page=3, limit=5, order_by="id.desc", filters=TraceFilters(),
                               score_min=1.0, score_source="EVAL")
    _, kw = store.asked("native_trace_ids")[-1]
    assert kw["score"] == ScoreMatch(min=1.0, source="EVAL")
    assert kw["offset"] == 10 and kw["order"] == Order("id", False)


async def test_native_trace_composes_scores_queue_items_and_reviews() -> None:
    scores: list[dict[str, Any]] = [
        {"id": "s1", "trace_id": "t1", "name": "q", "source": "ANNOTATION", "config_id": "c1"},
              {"id": "s2", "trace_id": "t1", "name": "j", "source": "EVAL", "config_id": None}]
    item = {"queue_id": "q1", "queue_name": "Q", "item_id": "i1", "object_type": "TRACE", "object_id": "t1",
            "added_at": T, "completed_at": None, "removed_at": None, "flagged_at": None, "reason": None,
            "first_leased_at": T}
    review = {"queue_id": "q1", "item_id": "i1", "reviewer": "alice", "leased_at": T, "completed_at": None,
              "skipped_at": T, "skip_reason": "unsure", "flagged_at": None, "flag_reason": None}
    store = FakeTraceReads([trace_row("t1")], scores=scores, items=[item], reviews=[review], configs={"c1": "Quality"})
    out = await traces.native_trace(store, "p", "t1")
    assert store.asked("config_names") == [((["c1"],), {})]
    assert [s.get("config_name") for s in out["scores"]] == ["Quality", None]
    assert [s["kind"] for s in out["scores"]] == ["human", "automated"]
    (qi,) = out["queue_items"]
    assert qi["status"] == "IN_PROGRESS" and qi["queue_name"] == "Q"
    shown = ("reviewer", "leased_at", "completed_at", "skipped_at", "skip_reason", "flagged_at", "flag_reason")
    assert qi["reviews"] == [{k: review[k] for k in shown} | {"status": "SKIPPED"}]

    bare = FakeTraceReads([trace_row("t2")])
    out = await traces.native_trace(bare, "p", "t2")
    assert out["queue_items"] == [] and not bare.asked("config_names") and not bare.asked("reviews_of")


def test_item_and_review_status() -> None:
    assert traces.item_status({"removed_at": T, "completed_at": T}) == "REMOVED"
    assert traces.item_status({"completed_at": T}) == "COMPLETED"
    assert traces.item_status({"first_leased_at": T}) == "IN_PROGRESS"
    assert traces.item_status({}) == "PENDING"
    base = {"completed_at": None, "skipped_at": None, "flagged_at": None}
    assert traces.review_status(base | {"completed_at": T, "skipped_at": T}) == "COMPLETED"
    assert traces.review_status(base | {"flagged_at": T}) == "FLAGGED"
    assert traces.review_status(base) == "IN_PROGRESS"


# -- sessions and the v1 observations list ---------------------------------------------------------------------------

class FakeSessionReads(Calls):
    def __init__(self, groups: Sequence[dict[str, Any]], trace_rows: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__()
        self.groups, self.trace_rows = list(groups), list(trace_rows)

    async def session_page(self, project_id: str, *, from_ts: datetime | None, to_ts: datetime | None,
                           environment: Sequence[str], offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        self.saw("session_page", offset=offset, limit=limit)
        return len(self.groups), self.groups[offset:offset + limit]

    async def session_head(self, project_id: str, session_id: str) -> dict[str, Any] | None:
        return next((g for g in self.groups if g["id"] == session_id), None)

    async def session_traces(self, project_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        self.saw("session_traces", session_id, limit)
        return self.trace_rows[:limit]

    async def native_session_page(self, project_id: str, *, offset: int, limit: int
                                  ) -> tuple[int, list[dict[str, Any]]]:
        return len(self.groups), self.groups[offset:offset + limit]

    async def observation_page(self, project_id: str, f: sessions.ObservationFilters, *, offset: int, limit: int
                               ) -> tuple[int, list[dict[str, Any]]]:
        self.saw("observation_page", f, offset=offset, limit=limit)
        rows = [observation_row(f"o{i}", "t") for i in range(7)]
        return len(rows), rows[offset:offset + limit]


async def test_sessions_page_and_shape() -> None:
    groups = [{"id": f"s{i}", "created_at": T, "environment": "default"} for i in range(5)]
    store = FakeSessionReads(groups, [trace_row("t1", session_id="s0")])
    out = await sessions.public_sessions(store, "p", page=3, limit=2, from_ts=None, to_ts=None, environment=())
    assert out == {"data": [{"id": "s4", "createdAt": T, "projectId": "p", "environment": "default"}],
                   "meta": {"page": 3, "limit": 2, "totalItems": 5, "totalPages": 3}}
    one = await sessions.public_session(store, "p", "s0")
    assert [t["id"] for t in one["traces"]] == ["t1"] and one["projectId"] == "p"
    assert store.asked("session_traces") == [(("s0", sessions.MAX_SESSION_TRACES), {})]
    with pytest.raises(NotFound):
        await sessions.public_session(store, "p", "nope")
    native = await sessions.native_sessions(store, "p", page=1, limit=4)
    assert len(native["data"]) == 4 and native["meta"] == {"page": 1, "limit": 4, "total": 5}

    obs = await sessions.public_observations_v1(store, "p", page=2, limit=3,
                                                filters=sessions.ObservationFilters(level="ERROR"))
    assert [o["id"] for o in obs["data"]] == ["o3", "o4", "o5"]
    assert obs["meta"] == {"page": 2, "limit": 3, "totalItems": 7, "totalPages": 3}


def test_stored_inputs_are_embedded_as_they_are_and_converted_ones_read_as_before() -> None:
    from projections.adapters import views
    from projections.entrypoints.http import JSON

    row = trace_row("t1", input=b'{"b":1,"a":[2.5,null]}', output=b" 1000000000000000000000000000000")
    out = views.lf_trace(row)
    assert isinstance(out["input"], views.RawJSON)
    assert out["output"] == 1e30  # text converted from jsonb (migration 0011): parsed as the jsonb was
    body = JSON({"data": [out]}).body
    assert b'"input":{"b":1,"a":[2.5,null]}' in body and b'"output":1e+30' in body
    # what orjson cannot write (an integer past 64 bits) falls back to the standard library, stored text included
    assert b'"input":{"b":1,"a":[2.5,null]}' in JSON({"x": out, "big": 2**70}).body.replace(b" ", b"")
    assert views.json_fragment(None) is None and views.raw_json(None) is None
