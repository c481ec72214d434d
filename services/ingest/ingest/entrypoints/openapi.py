"""OpenAPI documentation of the request bodies. The handlers read raw bytes (validation is per item and must not
fail a whole batch), so the shapes are declared here for the ``/docs`` page only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from tally_shared.contracts.ingest import IngestionResponse
from tally_shared.events import ObservationData, RecordScore, TraceData


class NativeEvent(BaseModel):
    id: str = Field(description="The client's id for this event; the response reports on it by this id")
    type: Literal["trace", "observation", "score"]
    timestamp: datetime | None = Field(
        None, description="When the client produced the event; the later one wins when updates conflict")
    body: TraceData | ObservationData | RecordScore = Field(
        description="trace: TraceData; observation: ObservationData (partial updates: send only the fields "
        "that change); score: RecordScore")


class NativeBatch(BaseModel):
    """Tally's native batch."""

    events: list[NativeEvent]


class LangfuseEvent(BaseModel):
    id: str
    timestamp: datetime
    type: Literal[
        "trace-create", "span-create", "span-update", "generation-create", "generation-update", "event-create",
        "agent-create", "tool-create", "chain-create", "retriever-create", "evaluator-create",
        "embedding-create", "guardrail-create", "observation-create", "observation-update", "score-create",
        "dataset-run-item-create", "sdk-log",
    ]
    body: dict[str, Any] = Field(description="camelCase body, as in Langfuse's ingestion API")
    metadata: Any = None


class LangfuseBatch(BaseModel):
    batch: list[LangfuseEvent]
    metadata: Any = None


def _body(model: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}}


NATIVE_REQUEST = _body("NativeBatch")
LANGFUSE_REQUEST = _body("LangfuseBatch")
OTLP_REQUEST: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/x-protobuf": {"schema": {"type": "string", "format": "binary",
                                          "description": "opentelemetry.proto ExportTraceServiceRequest"}},
    "application/json": {"schema": {"type": "object", "description": "ExportTraceServiceRequest, OTLP JSON"}},
}}}
_ERROR = {"description": "Error: {\"error\": {\"code\", \"message\", \"details\"}}"}
RESPONSES_207: dict[int | str, dict[str, Any]] = {
    207: {"description": "Per-event outcome", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/IngestionResponse"}}}},
    400: _ERROR, 401: _ERROR, 413: _ERROR, 415: _ERROR,
    503: {"description": "Broker unavailable: nothing stored; retry after Retry-After seconds"},
}


def install_schemas(app: FastAPI) -> None:
    """Add the documented models to the generated OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (NativeBatch, LangfuseBatch, IngestionResponse):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
