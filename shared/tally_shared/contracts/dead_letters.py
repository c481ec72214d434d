"""The dead letters API (served by projections for every consumer): list, read, replay, discard."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from tally_shared.contracts import Contract, PageMeta

BULK_LIMIT = 1000


class DeadLetterSelection(BaseModel):
    """Which dead letters: the ones listed in ``ids``, or every one matching the filters (at most ``limit`` per
    call; ``more`` in the answer says whether to call again)."""

    ids: list[uuid.UUID] | None = Field(default=None, max_length=BULK_LIMIT)
    status: Literal["open", "replayed", "discarded"] = "open"
    consumer: str | None = Field(default=None, max_length=200)
    topic: str | None = Field(default=None, max_length=200)
    reason_code: str | None = Field(default=None, max_length=100)
    event_id: uuid.UUID | None = None
    limit: int = Field(default=BULK_LIMIT, ge=1, le=BULK_LIMIT)


class DeadLetterSummary(Contract):
    id: str
    project_id: str | None
    consumer: str
    topic: str
    partition: int
    offset: int
    event_id: str | None
    event_type: str | None
    key: str | None
    reason_code: str
    reason: str | None
    failed_at: datetime
    status: Literal["open", "replayed", "discarded"]
    status_at: datetime | None
    status_by: str | None
    replay_count: int
    original_size: int
    original_truncated: bool


class DeadLetterListed(DeadLetterSummary):
    preview: str


class DeadLetterCounts(Contract):
    by_reason: dict[str, int]
    by_status: dict[str, int]


class DeadLetterPage(Contract):
    data: list[DeadLetterListed]
    meta: PageMeta
    counts: DeadLetterCounts


class Original(Contract):
    """The original message: as JSON when it is JSON, else as text when it is UTF-8, else as base64."""

    encoding: Literal["json", "text", "base64"]
    json_: Any = Field(None, alias="json")
    text: str | None = None
    base64: str | None = None

    model_config = Contract.model_config | {"populate_by_name": True}


class RelatedDeadLetter(Contract):
    id: str
    consumer: str
    reason_code: str
    status: str
    failed_at: datetime


class DeadLetterDetail(DeadLetterSummary):
    original: Original
    related: list[RelatedDeadLetter]


class SkippedDeadLetter(Contract):
    id: str
    reason: str


class ReplayResult(Contract):
    """How many dead letters were marked replayed, how many messages were republished (one per original message),
    which were not replayable and why, and whether more match the filters."""

    replayed: int
    messages: int
    skipped: list[SkippedDeadLetter]
    more: bool


class DiscardResult(Contract):
    discarded: int
    more: bool


__all__ = ["BULK_LIMIT", "DeadLetterCounts", "DeadLetterDetail", "DeadLetterListed", "DeadLetterPage",
           "DeadLetterSelection", "DeadLetterSummary", "DiscardResult", "Original", "RelatedDeadLetter",
           "ReplayResult", "SkippedDeadLetter"]
