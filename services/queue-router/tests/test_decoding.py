"""The router's decoder gives what the full decode gives, in the lean form, and refuses what it refuses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from queue_router.adapters.decoding import decode_routed
from queue_router.domain.events import RoutedEnvelope, RoutedTraceIngested, from_payload
from tally_shared.envelope import Envelope, PoisonMessage, decode, make_envelope
from tally_shared.events import ObservationData, ScoreData, ScoreRecorded, TraceData, TraceIngested


def _raw(payload: dict[str, Any], **env: Any) -> bytes:
    doc = {"id": str(uuid.uuid4()), "type": "TraceIngested", "version": 1, "occurred_at": "2026-11-01T10:00:00Z",
           "project": "p", "key": "t1", "payload": payload, **env}
    return orjson.dumps(doc)


def _expected(raw: bytes) -> tuple[Envelope, RoutedTraceIngested]:
    env, p = decode(raw)
    assert isinstance(p, TraceIngested)
    return env, from_payload(p)


def _same(raw: bytes) -> RoutedTraceIngested:
    env, p = decode_routed(raw)
    want_env, want = _expected(raw)
    assert isinstance(p, RoutedTraceIngested)
    assert (env.id, env.type, env.occurred_at, env.project, env.key) == (
        want_env.id, want_env.type, want_env.occurred_at, want_env.project, want_env.key)
    assert (p.trace_id, p.trace, p.observations) == (want.trace_id, want.trace, want.observations)
    return p


FULL = {
    "trace_id": "t1",
    "trace": {"id": "t1", "name": "chat ✓", "timestamp": "2026-11-01T09:59:59.5+02:00", "metadata": {"a": {"b": [1]}},
              "tags": ["x", "y", "x"], "user_id": "u", "session_id": None, "release": "r", "environment": "prod",
              "dataset_run_name": "run", "input": {"huge": "ignored"}, "public": True},
    "observations": [
        {"id": "o1", "trace_id": "t1", "type": "GENERATION", "name": "llm", "level": "ERROR",
         "start_time": "2026-11-01T10:00:00Z", "end_time": "2026-11-01T10:00:02.25Z",
         "usage_details": {"input": 10, "output": 2.5}, "cost_details": {"total": 0.1}, "output": "..."},
        {"id": "o2", "trace_id": "t1", "end_time": None, "type": None},
    ],
    "source": "otel",
}


@pytest.mark.parametrize("payload", [
    FULL,
    {"trace_id": "t1"},
    {"trace_id": "t1", "trace": None},
    {"trace_id": "t1", "trace": {"id": "t1"}},
    {"trace_id": "t1", "observations": [{"id": "o", "trace_id": "t1", "start_time": "2026-11-01T10:00:00+00:00"}]},
    # lax values the lean form leaves to the full decode, which accepts them
    {"trace_id": "t1", "observations": [{"id": "o", "trace_id": "t1", "usage_details": {"input": "12"}}]},
    {"trace_id": "t1", "observations": [{"id": "o", "trace_id": "t1", "start_time": 1767261600}]},
])
def test_same_as_the_full_decode(payload: dict[str, Any]) -> None:
    _same(_raw(payload))


def test_models_written_by_the_producer() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    ev = TraceIngested(trace_id="t", trace=TraceData(id="t", name="n", timestamp=t0, tags=["a"]),
                       observations=[ObservationData(id="o", trace_id="t", type="TOOL", start_time=t0,
                                                     usage_details={"total": 3})])
    p = _same(make_envelope(ev, project="p", key="t").to_bytes())
    assert p.trace == {"id": "t", "name": "n", "timestamp": t0, "tags": ["a"]}
    assert p.observations == [{"id": "o", "trace_id": "t", "type": "TOOL", "start_time": t0.timestamp(),
                               "usage_details": {"total": 3.0}}]


def test_nul_content_is_cleaned_as_the_full_decode_cleans_it() -> None:
    p = _same(_raw({"trace_id": "t1", "trace": {"id": "t1", "name": "a\u0000b"}}))
    assert p.trace is not None and p.trace["name"] == "a\u2400b"


@pytest.mark.parametrize("raw", [
    b"not json",
    _raw({"trace_id": ""}),
    _raw({"trace_id": "t1", "trace": {"name": "no id"}}),
    _raw({"trace_id": "t1", "observations": [{"id": "o", "trace_id": "t1", "type": "NOPE"}]}),
    _raw({"trace_id": "t1", "observations": [{"id": "o", "trace_id": "t1", "level": "LOUD"}]}),
    _raw({"trace_id": "t1", "trace": {"id": "t1", "tags": [1]}}),
    _raw({"trace_id": "t1", "trace": {"id": "t1", "timestamp": "yesterday"}}),
    _raw({"trace_id": "t1"}, project=""),
    _raw({"trace_id": "t1"}, key="k" * 201),
    _raw({"trace_id": "t1"}, version=2),
    _raw({"trace_id": "t1"}, id="not-a-uuid"),
])
def test_poison_is_refused_as_before(raw: bytes) -> None:
    with pytest.raises(PoisonMessage):
        decode(raw)
    with pytest.raises(PoisonMessage):
        decode_routed(raw)


def test_other_events_take_the_full_decode() -> None:
    score = ScoreData(id="s", name="q", data_type="NUMERIC", value=1.0, trace_id="t", source="EVAL",
                      timestamp=datetime.now(UTC))
    ev = make_envelope(ScoreRecorded(score=score), project="p", key="t")
    env, p = decode_routed(ev.to_bytes())
    assert isinstance(env, Envelope) and isinstance(p, ScoreRecorded)


def test_lean_envelope() -> None:
    env, _ = decode_routed(_raw({"trace_id": "t1"}))
    assert isinstance(env, RoutedEnvelope)
    assert env.occurred_at == datetime(2026, 11, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("when", [
    "2026-11-01T00:00:00Z", "2026-11-01T00:00:00+00:00", "2026-11-01T00:00:00.5Z", "2026-11-01T00:00:00.123456789Z",
    "2026-11-01T00:00:00,5Z", "2026-11-01T24:00:00Z", "2026-02-30T00:00:00Z", "2026-11-01T00:00:60Z",
    "2026-11-01T00:00:00+24:00", "2026-11-01T00:00:00-05:30", "2026-11-01T00:00:00.Z", "2026-11-01T0a:00:00Z",
    "+2026-11-01T00:00:00Z", "2026-11-01T00:00:00+05:00:00", "2026-11-01T00:00:00 Z", "2026-11-01T00:00:00z",
    "2026-11-01T00:00:00.000001+14:00", "2026-11-01T00:00:00.12Z", "0000-11-01T00:00:00Z", "2026-11-01T00:00:00",
    "9999-12-31T23:59:59.999999-23:59", "2026-11-01T00:00:00\u0661Z", "2026-11-01T00:00:00.\u0661Z", "2026-11-01",
    "2026-11-01T00:00Z", "2026-11-01 00:00:00Z",
])
def test_observation_times_read_as_the_full_decode_reads_them(when: str) -> None:
    raw = _raw({"trace_id": "t1", "observations": [{"id": "o", "trace_id": "t1", "start_time": when}]})
    try:
        decode(raw)
    except PoisonMessage:
        with pytest.raises(PoisonMessage):
            decode_routed(raw)
    else:
        _same(raw)
