"""scoring's HTTP contracts: the native API (``/api/v1``, snake_case) and the Langfuse-compatible one
(``/api/public``, camelCase, the shapes the langfuse 5.x SDK sends and parses)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from tally_shared.contracts import Contract, Created, LfContract, LfPageMeta, Message
from tally_shared.events import Category, DatasetItemStatus, ScoreConfigData, ScoreData, ScoreDataType

# A time as Python writes it (``+00:00``), the way these answers have always spelled times they did not format.
IsoDatetime = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json")]

# ================================================================== native API: requests


class ScoreConfigCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=100)
    data_type: ScoreDataType
    description: str | None = None
    guidelines: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    step: float | None = None
    categories: list[Category] | None = None
    multi_select: bool = False
    max_length: int | None = None


class ScoreConfigUpdate(BaseModel):
    """Only the fields sent change; null leaves ``name``, ``data_type``, ``multi_select``, ``is_archived`` as
    they are (they cannot be empty) and clears the others."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=100)
    data_type: ScoreDataType | None = None
    description: str | None = None
    guidelines: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    step: float | None = None
    categories: list[Category] | None = None
    multi_select: bool | None = None
    max_length: int | None = None
    is_archived: bool | None = None


class ScoreUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = None
    comment: str | None = Field(None, max_length=10_000)
    metadata: dict[str, Any] | None = None


class ScoreCreate(Contract):
    """One score as the native API takes it (``POST /api/v1/scores``, and each of ``/scores/batch``). Parsed by
    scoring's own rules (``scoring.entrypoints.mapping.score_input``), which name every refused field; this model
    is the documented shape."""

    name: str | None = None
    value: Any = None
    data_type: ScoreDataType | None = None
    id: str | None = None
    trace_id: str | None = None
    observation_id: str | None = None
    session_id: str | None = None
    dataset_run_id: str | None = None
    config_id: str | None = None
    comment: str | None = None
    metadata: dict[str, Any] | None = None
    environment: str | None = None
    timestamp: datetime | None = None
    source: str | None = None
    author_user_id: str | None = None
    evaluator_name: str | None = None
    evaluator_version: str | None = None
    queue_id: str | None = None
    queue_item_id: str | None = None
    idempotency_key: str | None = None


class ScoreBatchCreate(Contract):
    scores: list[dict[str, Any]]


# ================================================================== native API: answers


class ScoreConfigPublic(ScoreConfigData):
    project_id: str


class ScoreConfigPage(Contract):
    class Meta(Contract):
        page: int
        limit: int
        total_items: int
        total_pages: int

    data: list[ScoreConfigPublic]
    meta: Meta


class ScoreConfigVersions(Contract):
    data: list[ScoreConfigPublic]


class ScorePublic(ScoreData):
    project_id: str
    revision: int
    created_at: str
    updated_at: str


class ScoreSaved(ScoreData):
    """``POST /api/v1/scores``: the score, and whether it was ``created``, ``updated`` or already recorded."""

    project_id: str
    status: str


class ScorePage(Contract):
    data: list[ScorePublic]
    next_cursor: str | None


class BatchResult(Contract):
    index: int
    status: str
    id: str | None = None
    errors: list[dict[str, Any]] | None = None


class ScoreBatchResult(Contract):
    accepted: int
    rejected: int
    results: list[BatchResult]


class ScoreHistoryEntry(Contract):
    revision: int
    action: str
    actor: str | None
    at: IsoDatetime
    score: dict[str, Any]


class ScoreHistory(Contract):
    data: list[ScoreHistoryEntry]


# ================================================================== Langfuse-compatible: requests


class LfScoreConfigCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(max_length=100)
    data_type: ScoreDataType = Field(alias="dataType")
    categories: list[Category] | None = None
    min_value: float | None = Field(None, alias="minValue")
    max_value: float | None = Field(None, alias="maxValue")
    description: str | None = None
    guidelines: str | None = None
    step: float | None = None
    multi_select: bool = Field(False, alias="multiSelect")
    max_length: int | None = Field(None, alias="maxLength")


class LfScoreConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    is_archived: bool | None = Field(None, alias="isArchived")
    name: str | None = Field(None, max_length=100)
    data_type: ScoreDataType | None = Field(None, alias="dataType")
    categories: list[Category] | None = None
    min_value: float | None = Field(None, alias="minValue")
    max_value: float | None = Field(None, alias="maxValue")
    description: str | None = None
    guidelines: str | None = None
    step: float | None = None
    multi_select: bool | None = Field(None, alias="multiSelect")
    max_length: int | None = Field(None, alias="maxLength")


class LfDatasetCreate(BaseModel):
    # Schemas for validating items are accepted and not enforced (see docs/api.md).
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    metadata: Any = None


class LfDatasetItemCreate(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    dataset_name: str = Field(alias="datasetName", min_length=1, max_length=200)
    id: str | None = Field(None, min_length=1, max_length=200)
    input: Any = None
    expected_output: Any = Field(None, alias="expectedOutput")
    metadata: Any = None
    source_trace_id: str | None = Field(None, alias="sourceTraceId", max_length=200)
    source_observation_id: str | None = Field(None, alias="sourceObservationId", max_length=200)
    status: DatasetItemStatus | None = None


class LfDatasetRunItemCreate(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    run_name: str = Field(alias="runName", min_length=1, max_length=200)
    run_description: str | None = Field(None, alias="runDescription", max_length=10_000)
    metadata: Any = None
    dataset_item_id: str = Field(alias="datasetItemId", min_length=1, max_length=200)
    trace_id: str | None = Field(None, alias="traceId", max_length=200)
    observation_id: str | None = Field(None, alias="observationId", max_length=200)


class LfCommentCreate(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    # Langfuse requires the project id in the body; the key already names the project, so it is not trusted.
    project_id: str | None = Field(None, alias="projectId")
    object_type: str = Field(alias="objectType")
    object_id: str = Field(alias="objectId", min_length=1, max_length=200)
    content: str
    author_user_id: str | None = Field(None, alias="authorUserId", max_length=200)


# ================================================================== Langfuse-compatible: answers
# Times are strings here: scoring writes them itself (UTC, ``Z``), and the SDK parses them.


class LfScoreConfigPublic(LfContract):
    id: str
    name: str
    project_id: str
    data_type: str
    is_archived: bool
    min_value: float | None
    max_value: float | None
    categories: list[Category] | None
    description: str | None
    created_at: str
    updated_at: str
    # Tally extensions (ignored by Langfuse clients):
    version: int
    guidelines: str | None
    step: float | None
    multi_select: bool
    max_length: int | None


class LfScoreConfigPage(LfContract):
    data: list[LfScoreConfigPublic]
    meta: LfPageMeta


class LfScoreV1(LfContract):
    """The classic Langfuse Score: ``value`` is absent on TEXT scores, ``stringValue`` on NUMERIC ones (answers
    are written without unset fields)."""

    id: str
    project_id: str
    trace_id: str | None
    observation_id: str | None
    session_id: str | None
    dataset_run_id: str | None
    name: str
    data_type: str
    source: str
    timestamp: str
    created_at: str
    updated_at: str
    author_user_id: str | None
    comment: str | None
    metadata: dict[str, Any] | None
    config_id: str | None
    config_version: int | None
    queue_id: str | None
    environment: str
    value: float | None = None
    string_value: str | None = None


class LfScoreV1Page(LfContract):
    data: list[LfScoreV1]
    meta: LfPageMeta


class LfScoreSubject(LfContract):
    kind: Literal["observation", "trace", "session", "experiment"]
    id: str
    trace_id: str | None = None


class LfScoreV3(LfContract):
    """A v3 score: the core fields, plus the groups asked for in ``fields`` (details, subject, annotation);
    fields of groups not asked for are absent."""

    id: str
    project_id: str
    name: str
    data_type: str
    value: Any
    source: str
    timestamp: str
    environment: str
    created_at: str
    updated_at: str
    comment: str | None = None
    config_id: str | None = None
    config_version: int | None = None
    metadata: dict[str, Any] | None = None
    evaluator_name: str | None = None
    evaluator_version: str | None = None
    subject: LfScoreSubject | None = None
    author_user_id: str | None = None
    queue_id: str | None = None
    queue_item_id: str | None = None


class LfScoreV3Page(LfContract):
    class Meta(LfContract):
        limit: int
        cursor: str | None = None

    data: list[LfScoreV3]
    meta: Meta


class LfBatchError(LfContract):
    index: int
    message: str
    errors: list[dict[str, Any]]


class LfScoresAccepted(LfContract):
    """202: every score of a list was accepted."""

    message: Literal["Accepted"]


class LfScoresPartial(LfContract):
    """207: some scores of a list were refused (``errors`` per refused index)."""

    accepted: int
    rejected: int
    errors: list[LfBatchError]


class LfDataset(LfContract):
    id: str
    name: str
    description: str | None
    metadata: Any
    input_schema: Any
    expected_output_schema: Any
    project_id: str
    created_at: str
    updated_at: str


class LfDatasetPage(LfContract):
    data: list[LfDataset]
    meta: LfPageMeta


class LfDatasetItem(LfContract):
    id: str
    status: str
    input: Any
    expected_output: Any
    metadata: Any
    source_trace_id: str | None
    source_observation_id: str | None
    dataset_id: str
    dataset_name: str
    created_at: str
    updated_at: str
    version: str
    media_references: list[Any]


class LfDatasetItemPage(LfContract):
    data: list[LfDatasetItem]
    meta: LfPageMeta


class LfDatasetRun(LfContract):
    id: str
    name: str
    description: str | None
    metadata: Any
    dataset_id: str
    dataset_name: str
    created_at: str
    updated_at: str


class LfDatasetRunItem(LfContract):
    id: str
    dataset_run_id: str
    dataset_run_name: str
    dataset_item_id: str
    trace_id: str | None
    observation_id: str | None
    created_at: str
    updated_at: str


class LfDatasetRunWithItems(LfDatasetRun):
    dataset_run_items: list[LfDatasetRunItem]


class LfDatasetRunPage(LfContract):
    data: list[LfDatasetRun]
    meta: LfPageMeta


class LfDatasetRunItemPage(LfContract):
    data: list[LfDatasetRunItem]
    meta: LfPageMeta


class LfComment(LfContract):
    id: str
    project_id: str
    object_type: str
    object_id: str
    content: str
    author_user_id: str | None
    created_at: str
    updated_at: str


class LfCommentPage(LfContract):
    data: list[LfComment]
    meta: LfPageMeta


__all__ = [
    "BatchResult", "Created", "IsoDatetime", "LfBatchError", "LfComment", "LfCommentCreate", "LfCommentPage",
    "LfDataset", "LfDatasetCreate", "LfDatasetItem", "LfDatasetItemCreate", "LfDatasetItemPage", "LfDatasetPage",
    "LfDatasetRun", "LfDatasetRunItem", "LfDatasetRunItemCreate", "LfDatasetRunItemPage", "LfDatasetRunPage",
    "LfDatasetRunWithItems", "LfScoreConfigCreate", "LfScoreConfigPage", "LfScoreConfigPublic",
    "LfScoreConfigUpdate", "LfScoreSubject", "LfScoreV1", "LfScoreV1Page", "LfScoreV3", "LfScoreV3Page",
    "LfScoresAccepted", "LfScoresPartial", "Message", "ScoreBatchCreate", "ScoreBatchResult", "ScoreConfigCreate",
    "ScoreConfigPage", "ScoreConfigPublic", "ScoreConfigUpdate", "ScoreConfigVersions", "ScoreCreate",
    "ScoreHistory", "ScoreHistoryEntry", "ScorePage", "ScorePublic", "ScoreSaved", "ScoreUpdate",
]
