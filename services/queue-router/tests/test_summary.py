"""Pure tests of the trace summary merge (creates and partial updates)."""

from __future__ import annotations

from datetime import UTC, datetime

from queue_router.domain.summary import Summary, apply_observation, apply_trace, recompute
from tally_shared.events import ObservationData, TraceData


def test_later_occurred_at_wins_per_field() -> None:
    s = Summary(project_id="p", trace_id="t")
    apply_trace(s, TraceData(id="t", name="new", environment="prod"), at=20.0)
    apply_trace(s, TraceData(id="t", name="old", release="r1"), at=10.0)  # arrives late: name is older
    assert (s.name, s.environment, s.release, s.has_trace) == ("new", "prod", "r1", True)
    apply_trace(s, TraceData(id="t", environment=None), at=30.0)  # present as null: set
    assert s.environment is None and s.name == "new"


def test_observation_updates_replace_and_aggregate() -> None:
    s = Summary(project_id="p", trace_id="t")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    apply_observation(s, ObservationData(id="g", trace_id="t", type="GENERATION", name="llm",
                                         start_time=t0, usage_details={"input": 100, "output": 20},
                                         cost_details={"input": 0.1, "output": 0.2}), at=1.0)
    apply_observation(s, ObservationData(id="g", trace_id="t", end_time=t0.replace(second=3),
                                         usage_details={"input": 150, "output": 30, "total": 180},
                                         cost_details={"total": 0.5}), at=2.0)
    apply_observation(s, ObservationData(id="x", trace_id="t", type="TOOL", name="search", level="ERROR",
                                         start_time=t0.replace(second=1), end_time=t0.replace(second=5)), at=2.0)
    recompute(s)
    assert s.input_tokens == 150 and s.output_tokens == 30 and s.total_tokens == 180
    assert s.total_cost == 0.5
    assert s.latency == 5.0 and s.has_error is True
    assert s.observation_types == ["GENERATION", "TOOL"] and s.observation_names == ["llm", "search"]


def test_state_stored_in_the_older_dict_form_still_merges() -> None:
    from queue_router.domain.summary import upgrade_state

    state = upgrade_state({"f": {"name": 20.0}, "o": {"g": {"t": "GENERATION", "n": "llm", "s": 0.0, "e": 2.0,
                                                            "c": 0.5, "i": 100.0, "u": 20.0, "k": 120.0, "at": 1.0}}})
    s = Summary(project_id="p", trace_id="t", name="new", has_trace=True, state=state)
    apply_trace(s, TraceData(id="t", name="old"), at=10.0)  # older than the stored name
    apply_observation(s, ObservationData(id="g", trace_id="t", cost_details={"total": 0.25}), at=2.0)
    recompute(s)
    assert s.name == "new"
    assert (s.total_cost, s.total_tokens, s.latency, s.observation_types) == (0.25, 120.0, 2.0, ["GENERATION"])


def test_stored_document_reads_back_the_same_summary() -> None:
    from queue_router.adapters.stores import _summary_row, summary_from_row

    s = Summary(project_id="p", trace_id="t")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    apply_trace(s, TraceData(id="t", name="n ✓", timestamp=t0, tags=["a"], metadata={"k": [1, {"x": None}]},
                             session_id="s"), at=1.0)
    apply_observation(s, ObservationData(id="g", trace_id="t", type="GENERATION", name="llm", level="ERROR",
                                         start_time=t0, end_time=t0.replace(second=2),
                                         usage_details={"input": 3, "output": 4}, cost_details={"total": 0.5}),
                      at=1.0)
    recompute(s)
    row = _summary_row(s, datetime.now(UTC))
    assert set(row) == {"project_id", "trace_id", "has_trace", "timestamp", "doc", "updated_at"}
    assert summary_from_row(row) == s


def test_packed_field_times_unpack_to_the_same_state() -> None:
    from queue_router.domain.summary import pack_state, upgrade_state

    same = {"f": [5.0, None, 5.0, None, None, None, None, None, 5.0], "o": {"a": [None] * 10}}
    packed = pack_state(same)
    assert "f" not in packed and packed["F"] == [5.0, 0b100000101] and "f" in same
    assert upgrade_state(dict(packed)) == same
    mixed = {"f": [5.0, 6.0, None, None, None, None, None, None, None]}
    assert pack_state(mixed) is mixed
    assert pack_state({}) == {} and upgrade_state(pack_state({"f": [None] * 9})) == {"f": [None] * 9}
