"""Datasets (test sets of inputs and expected outputs), their items, experiment run items, and comments.

Scoring owns them and is their only writer. Dataset events are keyed by dataset id; a run item by its trace id, so it
stays in order with that trace's other events; a comment by the object it is about.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tally_shared.envelope import Payload, event
from tally_shared.events.ids import Id

MAX_COMMENT_LENGTH = 5000
MAX_NAME_LENGTH = 200


class DatasetItemStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"


class CommentObjectType(StrEnum):
    TRACE = "TRACE"
    OBSERVATION = "OBSERVATION"
    SESSION = "SESSION"
    PROMPT = "PROMPT"


class DatasetData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Id
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: str | None = None
    metadata: Any = None
    created_at: datetime
    updated_at: datetime


class DatasetItemData(BaseModel):
    """A full snapshot of one dataset item (an upsert replaces the previous one)."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    dataset_id: Id
    dataset_name: str
    status: DatasetItemStatus = DatasetItemStatus.ACTIVE
    input: Any = None
    expected_output: Any = None
    metadata: Any = None
    source_trace_id: Id | None = None
    source_observation_id: Id | None = None
    created_at: datetime
    updated_at: datetime


class DatasetRunItemData(BaseModel):
    """A trace (optionally one observation of it) that ran a dataset item in a named run."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    run_id: Id
    run_name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    dataset_id: Id
    dataset_name: str
    dataset_item_id: Id
    trace_id: Id
    observation_id: Id | None = None
    created_at: datetime


class CommentData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Id
    object_type: CommentObjectType
    object_id: Id
    content: str = Field(min_length=1, max_length=MAX_COMMENT_LENGTH)
    author_user_id: Id | None = None
    created_at: datetime


@event
class DatasetCreated(Payload):
    event_type = "DatasetCreated"
    dataset: DatasetData


@event
class DatasetUpdated(Payload):
    """Created again with a description or metadata (Langfuse's create is an upsert by name)."""

    event_type = "DatasetUpdated"
    dataset: DatasetData


@event
class DatasetItemUpserted(Payload):
    event_type = "DatasetItemUpserted"
    item: DatasetItemData


@event
class DatasetItemDeleted(Payload):
    event_type = "DatasetItemDeleted"
    item_id: Id
    dataset_id: Id


@event
class DatasetRunItemCreated(Payload):
    event_type = "DatasetRunItemCreated"
    run_item: DatasetRunItemData


@event
class DatasetRunDeleted(Payload):
    event_type = "DatasetRunDeleted"
    run_id: Id
    run_name: str
    dataset_id: Id


@event
class CommentCreated(Payload):
    event_type = "CommentCreated"
    comment: CommentData
