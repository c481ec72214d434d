from datetime import UTC, datetime

import pytest

from tally_shared.envelope import PoisonMessage, decode, make_envelope
from tally_shared.events import ObservationData, TraceData, TraceIngested


def test_round_trip_keeps_only_the_fields_that_were_set() -> None:
    payload = TraceIngested(
        trace_id="t1",
        trace=TraceData(id="t1", output={"answer": 42}),
        observations=[ObservationData(id="o1", trace_id="t1", end_time=datetime(2026, 1, 1, tzinfo=UTC))],
    )
    env = make_envelope(payload, project="p1", key="t1")
    decoded_env, decoded = decode(env.to_bytes())
    assert decoded_env.id == env.id and decoded_env.type == "TraceIngested"
    assert isinstance(decoded, TraceIngested)
    assert decoded.trace is not None
    assert decoded.trace.model_fields_set == {"id", "output"}
    assert decoded.observations[0].model_fields_set == {"id", "trace_id", "end_time"}


def test_explicit_null_is_a_set_field() -> None:
    env = make_envelope(TraceIngested(trace_id="t", trace=TraceData(id="t", output=None)), project="p", key="t")
    _, decoded = decode(env.to_bytes())
    assert isinstance(decoded, TraceIngested) and decoded.trace is not None
    assert "output" in decoded.trace.model_fields_set


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b'{"type": "TraceIngested"}', "invalid envelope"),
        (
            b'{"type":"Nope","project":"p","key":"k","payload":{}}',
            "unknown event type",
        ),
        (
            b'{"type":"TraceIngested","project":"p","key":"k","payload":{"trace_id":""}}',
            "invalid TraceIngested v1 payload",
        ),
    ],
)
def test_poison_messages_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage) as exc:
        decode(raw)
    assert reason in exc.value.reason


def test_an_event_written_with_a_nul_decodes_with_the_intake_transformation() -> None:
    # As ingest wrote it before NULs were replaced at intake: such a dead letter, replayed, must now apply.
    raw = (b'{"id": "6f1c2f0e-8a4b-4a53-9a63-6a0a1f7f1e01", "type": "TraceIngested", "version": 1, '
           b'"occurred_at": "2025-01-01T00:00:00Z", "project": "p", "key": "t", "payload": {"trace_id": "t", '
           b'"trace": {"id": "t", "input": "abc\\u0000def", "metadata": {"k\\u0000": 1}}}}')
    _, payload = decode(raw)
    assert isinstance(payload, TraceIngested) and payload.trace is not None
    assert payload.trace.input == "abc\u2400def" and payload.trace.metadata == {"k\u2400": 1}
