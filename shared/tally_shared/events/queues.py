"""Annotation queues and their items."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from tally_shared.envelope import Payload, event
from tally_shared.events.ids import Id


class ObjectType(StrEnum):
    TRACE = "TRACE"
    OBSERVATION = "OBSERVATION"
    SESSION = "SESSION"


class QueueData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Id
    name: str
    description: str | None = None
    score_config_ids: list[str] = Field(default_factory=list)
    reviewers_per_item: int = 1
    blind: bool = False
    is_archived: bool = False


@event
class QueueCreated(Payload):
    event_type = "QueueCreated"
    queue: QueueData


@event
class QueueUpdated(Payload):
    event_type = "QueueUpdated"
    queue: QueueData


class ItemRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_id: Id
    item_id: Id
    object_type: ObjectType
    object_id: Id
    trace_id: Id | None = None


@event
class QueueItemAdded(Payload):
    event_type = "QueueItemAdded"
    item: ItemRef
    rule_id: str | None = None
    reason: str
    added_by: str | None = None


@event
class QueueItemLeased(Payload):
    event_type = "QueueItemLeased"
    item: ItemRef
    reviewer: Id
    lease_id: str
    expires_at: datetime


@event
class QueueItemCompleted(Payload):
    event_type = "QueueItemCompleted"
    item: ItemRef
    reviewer: Id
    # True when this completion was the last one the item needed (all N reviewers done).
    item_completed: bool


@event
class QueueItemSkipped(Payload):
    event_type = "QueueItemSkipped"
    item: ItemRef
    reviewer: Id
    reason: str | None = None


@event
class QueueItemFlagged(Payload):
    event_type = "QueueItemFlagged"
    item: ItemRef
    reviewer: Id
    reason: str | None = None


@event
class QueueItemRemoved(Payload):
    event_type = "QueueItemRemoved"
    item: ItemRef
    removed_by: str | None = None


@event
class QueueItemReleased(Payload):
    """The reviewer gave the item back without a decision; their slot is open again."""

    event_type = "QueueItemReleased"
    item: ItemRef
    reviewer: Id
    lease_id: str


@event
class QueueItemLeaseExpired(Payload):
    """The reviewer's lease ran out before they completed, skipped or flagged; their slot is open again."""

    event_type = "QueueItemLeaseExpired"
    item: ItemRef
    reviewer: Id
    lease_id: str


@event
class QueueItemSkipUndone(Payload):
    """The reviewer took back their skip: the item is theirs to review again."""

    event_type = "QueueItemSkipUndone"
    item: ItemRef
    reviewer: Id
