"""What ingest's HTTP routes answer, as typed models for clients and the OpenAPI page.

Ingest writes these bodies with orjson from plain dicts on its hot path (a request of thousands of items must not
pay a model per item); the models describe exactly that JSON. The 207 body is Langfuse's ``IngestionResponse``,
field for field, so Langfuse SDKs read it unchanged."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class IngestionSuccess(BaseModel):
    id: str = Field(description="The client's id of the item")
    status: int = Field(description="201: the broker acknowledged the item's event")


class IngestionError(BaseModel):
    id: str = Field(description="The client's id of the item (or #position when it had none)")
    status: int = Field(description="400 invalid, 413 too large, 503 not stored (retry)")
    message: str | None = None
    error: Any = Field(None, description="{field, rule, message} for a validation error; {reason} otherwise")


class IngestionResponse(BaseModel):
    """The 207 answer of ``POST /api/public/ingestion`` and ``POST /api/v1/ingest``."""

    successes: list[IngestionSuccess]
    errors: list[IngestionError]


class TracesDeletionAccepted(BaseModel):
    """The answer of ``DELETE /api/public/traces[/{id}]``: the deletions are stored (applied within moments)."""

    model_config = ConfigDict(populate_by_name=True)

    message: str
    trace_ids: list[str] = Field(alias="traceIds")


class OtlpPartialSuccess(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    rejected_spans: int = Field(alias="rejectedSpans")
    error_message: str = Field(alias="errorMessage")


class OtlpExportResponse(BaseModel):
    """OTLP/HTTP JSON's ``ExportTraceServiceResponse`` (``{}`` when every span was accepted)."""

    model_config = ConfigDict(populate_by_name=True)

    partial_success: OtlpPartialSuccess | None = Field(None, alias="partialSuccess")
