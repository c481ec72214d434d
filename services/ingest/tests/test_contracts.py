"""The typed models of ingest's answers (tally_shared.contracts.ingest) read exactly the JSON ingest writes."""

from __future__ import annotations

import orjson

from ingest.adapters.publisher import PublishError
from ingest.application.ingest import Outcome
from ingest.domain.fields import Invalid
from ingest.domain.report import Report
from ingest.entrypoints.http import _ingestion_response
from tally_shared.contracts.ingest import IngestionResponse, OtlpExportResponse, TracesDeletionAccepted


def test_ingestion_response_model_reads_the_207_body() -> None:
    report = Report()
    for item in ("ok", "bad", "down"):
        report.add(item)
    report.invalid(1, Invalid("body.name", "type", "must be a string"))
    outcome = Outcome(report, failed={2: PublishError(503, "broker_unavailable", "retry")})
    body = orjson.loads(bytes(_ingestion_response(outcome).body))
    model = IngestionResponse.model_validate(body)
    assert model.model_dump() == body
    assert [s.id for s in model.successes] == ["ok"] and [e.status for e in model.errors] == [400, 503]


def test_deletion_and_otlp_models_use_the_wire_names() -> None:
    deleted = TracesDeletionAccepted.model_validate({"message": "Trace deletion accepted", "traceIds": ["t1"]})
    assert deleted.trace_ids == ["t1"]
    assert deleted.model_dump(by_alias=True) == {"message": "Trace deletion accepted", "traceIds": ["t1"]}
    partial = {"partialSuccess": {"rejectedSpans": 1, "errorMessage": "s1: bad"}}
    assert OtlpExportResponse.model_validate(partial).model_dump(by_alias=True) == partial
    assert OtlpExportResponse.model_validate({}).partial_success is None
