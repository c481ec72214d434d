"""The dead-letter record: what it keeps of the original, its reason codes, and reading any record back."""

import base64
import uuid

import orjson

from tally_shared import deadletters
from tally_shared.envelope import PoisonMessage, decode, make_envelope
from tally_shared.events import TraceData, TraceIngested


def test_record_takes_project_event_and_key_from_an_envelope_that_fails_validation() -> None:
    env = make_envelope(TraceIngested(trace_id="t1", trace=TraceData(id="t1")), project="p1", key="t1")
    data = env.model_dump(mode="json")
    data["payload"]["trace"]["bogus"] = 1
    raw = orjson.dumps(data)
    try:
        decode(raw)
        raise AssertionError("should not decode")
    except PoisonMessage as exc:
        code, reason = exc.code, exc.reason
    rec = deadletters.build(consumer="c", raw=raw, reason=reason, code=code, topic="tally.traces", partition=2,
                            offset=7)
    assert (rec.project, rec.event_id, rec.event_type, rec.key, rec.reason_code) == (
        "p1", env.id, "TraceIngested", "t1", "validation")
    assert rec.original() == raw and rec.original_size == len(raw) and not rec.original_truncated
    # the same refusal of the same message has the same id: a redelivery does not make a second dead letter
    again = deadletters.build(consumer="c", raw=raw, reason=reason, code=code, topic="tally.traces", partition=2,
                              offset=7)
    assert again.id == rec.id
    assert deadletters.parse(rec.to_bytes(), topic="tally.dead-letter", partition=0, offset=1) == rec


def test_codes_are_bounded_tokens() -> None:
    assert deadletters.code_part("Required For EVAL!") == "required_for_eval"
    assert deadletters.reason_code(PoisonMessage("x", "rule:max")) == "rule:max"
    assert deadletters.reason_code(ValueError("x")) == "handler"
    for raw, code in ((b"not json", "decode"), (b'{"id": 1}', "envelope"),
                      (orjson.dumps({"type": "Nope", "project": "p", "key": "k", "payload": {}}), "unknown_type")):
        try:
            decode(raw)
        except PoisonMessage as exc:
            assert exc.code == code


def test_any_record_on_the_topic_reads_back() -> None:
    legacy = orjson.dumps({"reason": "not JSON: x", "consumer": "scoring", "topic": "tally.score-commands",
                           "partition": 1, "offset": 3, "failed_at": "2026-01-01T00:00:00+00:00",
                           "original_b64": base64.b64encode(b"garbage").decode()})
    rec = deadletters.parse(legacy, topic="tally.dead-letter", partition=0, offset=9)
    assert rec.reason_code == "decode" and rec.consumer == "scoring" and rec.original() == b"garbage"
    assert rec.id == deadletters.parse(legacy, topic="tally.dead-letter", partition=0, offset=9).id
    junk = deadletters.parse(b"\xff\xfe", topic="tally.dead-letter", partition=0, offset=10)
    assert junk.consumer == "unknown" and junk.original() == b"\xff\xfe" and junk.project is None
    assert isinstance(junk.id, uuid.UUID)


def test_huge_originals_are_cut_and_marked() -> None:
    raw = b"x" * (deadletters.MAX_ORIGINAL_BYTES + 10)
    rec = deadletters.build(consumer="c", raw=raw, reason="r", code="decode", topic="t", partition=0, offset=0)
    assert rec.original_truncated and rec.original_size == len(raw)
    assert len(rec.original()) == deadletters.MAX_ORIGINAL_BYTES


def test_values_a_table_could_not_take_are_not_taken() -> None:
    base = {"reason": "r", "consumer": "c", "topic": "tally.traces", "partition": 1, "offset": 2,
            "original_b64": base64.b64encode(b"x").decode()}
    naive = deadletters.parse(orjson.dumps(base | {"failed_at": "2026-01-01T00:00:00"}), topic="t", partition=0,
                              offset=0)
    assert naive.failed_at.tzinfo is not None and naive.consumer == "c"
    for bad in ({"partition": 2**40}, {"offset": -5}, {"original_b64": "***"}):
        rec = deadletters.parse(orjson.dumps(base | bad), topic="t", partition=0, offset=0)
        assert rec.consumer == "unknown" and rec.reason_code == "decode"
    huge = deadletters.parse(orjson.dumps(base | {"original_size": 2**40}), topic="t", partition=0, offset=0)
    assert huge.original_size == 1
