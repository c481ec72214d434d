"""queue-router's HTTP contract: the request and response bodies of /api/v1/queues, /api/v1/routing,
/api/v1/review and the Langfuse-compatible /api/public/annotation-queues, and the rule filter vocabulary.

queue-router validates requests and shapes responses with these models; clients (the console) import them to
build requests and read answers instead of copying the shapes. Response models keep the JSON exactly as the
service has always written it: timestamps as ``datetime.isoformat()`` (``+00:00``), keys a route leaves out
absent (those routes answer with ``response_model_exclude_unset``). Naming: ``XCreate``/``XUpdate`` requests,
``XPublic`` answers, ``XPage`` paged lists; ``Lf`` models are camelCase on the wire, snake_case in Python.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator
from pydantic.alias_generators import to_camel

# ---------------------------------------------------------------------------------------------------------------
# Rule filters: the vocabulary

MAX_GROUPS = 20
MAX_CONDITIONS = 50
MAX_LIST = 200
MAX_STRING = 1000

STRING_FIELDS = frozenset(("name", "environment", "release", "user_id", "session_id", "dataset_run_name"))
LIST_FIELDS = frozenset(("tags", "observation_types", "observation_names"))
NUMBER_FIELDS = frozenset(("latency", "total_cost", "input_tokens", "output_tokens", "total_tokens"))
ALL_FIELDS = STRING_FIELDS | LIST_FIELDS | NUMBER_FIELDS | {"has_error", "metadata", "score"}

STRING_OPS = frozenset(("eq", "neq", "in", "not_in", "contains", "starts_with", "exists", "not_exists"))
LIST_OPS = frozenset(("any_of", "all_of", "none_of", "contains", "exists", "not_exists"))
NUMBER_OPS = frozenset(("eq", "neq", "gt", "gte", "lt", "lte", "exists", "not_exists"))
BOOL_OPS = frozenset(("eq",))
METADATA_OPS = STRING_OPS | NUMBER_OPS
SCORE_OPS = frozenset(("eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "not_exists"))
# Operators whose value is a list, and those that take none.
LIST_VALUE_OPS = frozenset(("in", "not_in", "any_of", "all_of", "none_of"))
NO_VALUE_OPS = frozenset(("exists", "not_exists"))
ORDER_OPS = frozenset(("gt", "gte", "lt", "lte"))
# Fields compared with numbers (score values included).
NUMERIC_FIELDS = NUMBER_FIELDS | {"score"}


def ops_for(field: str) -> frozenset[str]:
    """The operators a condition on ``field`` may use."""
    return (STRING_OPS if field in STRING_FIELDS else LIST_OPS if field in LIST_FIELDS else
            NUMBER_OPS if field in NUMBER_FIELDS else BOOL_OPS if field == "has_error" else
            METADATA_OPS if field == "metadata" else SCORE_OPS)


# For forms: every field and operator with words for people, in the order a form lists them.
FIELD_LABELS: tuple[tuple[str, str], ...] = (
    ("name", "trace name"), ("tags", "tags"), ("environment", "environment"), ("release", "release"),
    ("user_id", "user id"), ("session_id", "session id"), ("has_error", "has an ERROR observation (true/false)"),
    ("metadata", "metadata (key=value)"), ("latency", "latency (s)"), ("total_cost", "total cost"),
    ("input_tokens", "input tokens"), ("output_tokens", "output tokens"), ("total_tokens", "total tokens"),
    ("observation_types", "observation types"), ("observation_names", "observation names"),
    ("dataset_run_name", "experiment run"), ("score", "automated score"),
)
OP_LABELS: tuple[tuple[str, str], ...] = (
    ("eq", "="), ("neq", "≠"), ("contains", "contains"), ("starts_with", "starts with"),
    ("in", "one of (a, b)"), ("not_in", "none of (a, b)"), ("any_of", "any of (a, b)"),
    ("all_of", "all of (a, b)"), ("none_of", "none of (list)"), ("gt", ">"), ("gte", "≥"), ("lt", "<"),
    ("lte", "≤"), ("exists", "exists"), ("not_exists", "does not exist"),
)

FilterField = Literal["name", "environment", "release", "user_id", "session_id", "dataset_run_name", "tags",
                      "observation_types", "observation_names", "latency", "total_cost", "input_tokens",
                      "output_tokens", "total_tokens", "has_error", "metadata", "score"]
Op = Literal["eq", "neq", "in", "not_in", "contains", "starts_with", "exists", "not_exists",
             "any_of", "all_of", "none_of", "gt", "gte", "lt", "lte"]
Scalar = str | float | int | bool


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: FilterField = Field(
        description="Trace field, `metadata` (with `key`) or `score` (with `name`). latency is in seconds.")
    op: Op
    value: Scalar | list[Scalar] | None = Field(
        default=None, description="A string, number or boolean; a list for in/not_in/any_of/all_of/none_of")
    key: str | None = Field(default=None, max_length=200,
                            description="metadata only: the key; dots reach into nested objects (a.b.c)")
    name: str | None = Field(default=None, max_length=200, description="score only: the score name")
    source: Literal["EVAL", "API"] | None = Field(default=None, description="score only: its source")
    evaluator: str | None = Field(default=None, max_length=200,
                                  description="score only: the evaluator that produced it")

    @model_validator(mode="after")
    def _check(self) -> Condition:
        check_condition(self)
        return self


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conditions: list[Condition] = Field(min_length=1, max_length=MAX_CONDITIONS)


class RuleFilter(BaseModel):
    """Groups are ORed, the conditions of a group ANDed. See docs/api.md, "Queues and routing"."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"groups": [
        {"conditions": [
            {"field": "name", "op": "eq", "value": "checkout-agent"},
            {"field": "metadata", "key": "customer.tier", "op": "in", "value": ["gold", "platinum"]},
            {"field": "score", "name": "faithfulness", "source": "EVAL", "op": "lt", "value": 0.5}]},
        {"conditions": [{"field": "has_error", "op": "eq", "value": True}]},
    ]}]})
    groups: list[Group] = Field(default_factory=list, max_length=MAX_GROUPS,
                                description="ORed; an empty list matches every trace")


def _fail(rule: str, message: str) -> None:
    # pydantic turns ValueError into a 422 detail at the condition's path; the message names the rule.
    raise ValueError(f"{rule}: {message}")


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_condition(c: Condition) -> None:
    f, op, v = c.field, c.op, c.value
    allowed = ops_for(f)
    if op not in allowed:
        _fail("op_not_allowed", f"op {op!r} is not allowed on field {f!r}; use one of {sorted(allowed)}")
    if f == "metadata" and not c.key:
        _fail("key_required", "a metadata condition needs `key`")
    if f != "metadata" and c.key is not None:
        _fail("key_not_allowed", "`key` is only for metadata conditions")
    if f == "score" and not c.name:
        _fail("name_required", "a score condition needs `name`")
    if f != "score" and (c.name is not None or c.source is not None or c.evaluator is not None):
        _fail("score_only", "`name`, `source` and `evaluator` are only for score conditions")
    if op in NO_VALUE_OPS:
        if v is not None:
            _fail("no_value", f"op {op!r} takes no value")
        return
    if v is None:
        _fail("value_required", f"op {op!r} needs a value")
    is_list = isinstance(v, list)
    if op in LIST_VALUE_OPS:
        if not is_list or not v:
            _fail("list_required", f"op {op!r} needs a non-empty list")
        assert isinstance(v, list)
        if len(v) > MAX_LIST:
            _fail("list_too_long", f"at most {MAX_LIST} values")
        values: list[Any] = v
    else:
        if is_list:
            _fail("scalar_required", f"op {op!r} needs a single value, not a list")
        values = [v]
    for x in values:
        if isinstance(x, str) and len(x) > MAX_STRING:
            _fail("value_too_long", f"strings are at most {MAX_STRING} characters")
    if f in STRING_FIELDS or f in LIST_FIELDS:
        if not all(isinstance(x, str) for x in values):
            _fail("string_required", f"field {f!r} compares with strings")
    elif f in NUMBER_FIELDS:
        if not all(is_number(x) for x in values):
            _fail("number_required", f"field {f!r} compares with numbers")
    elif f == "has_error":
        if not isinstance(v, bool):
            _fail("bool_required", "has_error compares with true or false")
    elif op in ORDER_OPS and not all(is_number(x) for x in values):
        _fail("number_required", f"op {op!r} compares with a number")
    elif op in ("contains", "starts_with") and not all(isinstance(x, str) for x in values):
        _fail("string_required", f"op {op!r} compares with a string")


# ---------------------------------------------------------------------------------------------------------------
# Requests

MAX_BULK_ITEMS = 1000
ObjectTypeName = Literal["TRACE", "OBSERVATION", "SESSION"]
Target = Literal["TRACE", "SESSION"]
ReviewActionName = Literal["complete", "skip", "flag", "release", "heartbeat", "undo-skip"]
DECISION_OUTCOMES = ("added", "duplicate", "previously_removed", "sampled_out", "cap_reached")


class ScoreConfigRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)
    required: bool = True


class QueueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000,
                                    description="Instructions for reviewers (markdown)")
    score_configs: list[ScoreConfigRef] = Field(default_factory=list, max_length=50)
    reviewers: list[str] = Field(default_factory=list, max_length=1000,
                                 description="User ids or emails; empty = any project member who may review")
    reviewers_per_item: int = Field(default=1, ge=1, le=20,
                                    description="N different reviewers must complete an item")
    lease_seconds: int = Field(default=600, ge=10, le=86_400)
    blind: bool = Field(default=False,
                        description="Hide automated scores and other reviewers' scores from a reviewer")

    @field_validator("reviewers")
    @classmethod
    def _reviewers(cls, v: list[str]) -> list[str]:
        for r in v:
            if not r or len(r) > 200:
                raise ValueError("each reviewer is a user id or email of 1 to 200 characters")
        return list(dict.fromkeys(v))


class QueueUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    score_configs: list[ScoreConfigRef] | None = Field(default=None, max_length=50)
    reviewers: list[str] | None = Field(default=None, max_length=1000)
    reviewers_per_item: int | None = Field(default=None, ge=1, le=20,
                                           description="Applies to items added from now on")
    lease_seconds: int | None = Field(default=None, ge=10, le=86_400)
    blind: bool | None = None


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    filter: RuleFilter
    target: Target = Field(default="TRACE", description="Add the matching trace, or its session")
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0,
                               description="Deterministic per object: hash(rule id, object id) < rate")
    daily_cap: int | None = Field(default=None, ge=1, le=10_000_000,
                                  description="At most this many items per UTC day from this rule")
    active: bool = True


class RuleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    filter: RuleFilter | None = None
    target: Target | None = None
    sample_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    daily_cap: int | None = Field(default=None, ge=1, le=10_000_000)
    active: bool | None = None


class RulePreview(BaseModel):
    """A rule as it would be created (extra fields such as name or daily_cap are accepted and ignored)."""

    model_config = ConfigDict(extra="ignore")
    filter: RuleFilter = Field(default_factory=RuleFilter)
    target: Target = "TRACE"
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    days: int = Field(default=7, ge=1, le=90, description="Look at traces seen in the last N days")


class ItemSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    object_type: ObjectTypeName = "TRACE"
    object_id: str = Field(min_length=1, max_length=200)
    trace_id: str | None = Field(default=None, max_length=200,
                                 description="For observations: their trace (events are keyed by it)")


class ItemsAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemSpec] = Field(min_length=1, max_length=MAX_BULK_ITEMS)
    assignees: list[str] | None = Field(default=None, max_length=100,
                                        description="Only these reviewers may take the items")


class Backfill(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    filter: RuleFilter = Field(default_factory=RuleFilter)
    from_: datetime = Field(alias="from", description="Traces whose timestamp (or first sighting) is at or after")
    to: datetime | None = None
    target: Target = "TRACE"
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    limit: int = Field(default=1000, ge=1, le=10_000, description="At most this many items added")


class ReviewAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reviewer: str | None = Field(default=None, max_length=200,
                                 description="Defaults to the signed-in user; API keys must name one")
    lease_id: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=2000)
    next: bool = Field(default=False, description="complete and skip: also lease the reviewer's next item, "
                                                  "answered as `next` (null when none is left)")


class NextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reviewer: str | None = Field(default=None, max_length=200)


# ---------------------------------------------------------------------------------------------------------------
# Responses

# As the service has always written timestamps (``isoformat``: ``+00:00``, not pydantic's ``Z``).
Timestamp = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json")]


class PageMeta(BaseModel):
    page: int
    limit: int
    total_items: int
    total_pages: int


def page_meta(page: int, limit: int, total: int) -> PageMeta:
    return PageMeta(page=page, limit=limit, total_items=total, total_pages=(total + limit - 1) // limit)


class ScoreConfigPublic(BaseModel):
    id: str
    required: bool = True


class QueuePublic(BaseModel):
    id: str
    project_id: str
    name: str
    description: str | None
    score_configs: list[ScoreConfigPublic]
    reviewers: list[str]
    reviewers_per_item: int
    lease_seconds: int
    blind: bool
    is_archived: bool
    created_by: str | None
    created_at: Timestamp
    updated_at: Timestamp


class QueuePage(BaseModel):
    data: list[QueuePublic]
    meta: PageMeta


class RulePublic(BaseModel):
    id: str
    queue_id: str
    name: str
    filter: dict[str, Any] = Field(description="The rule's filter as stored (see RuleFilter)")
    target: Target
    sample_rate: float
    daily_cap: int | None
    active: bool
    created_by: str | None
    created_at: Timestamp
    updated_at: Timestamp
    added_today: int = Field(description="Items the rule added since midnight UTC")


class RuleList(BaseModel):
    data: list[RulePublic]


class RulePreviewResult(BaseModel):
    matched: int = Field(description="Traces the filter matches")
    objects: int = Field(description="Distinct objects (traces, or sessions for session rules) matched")
    count: int = Field(description="Items expected after sampling")
    scanned: int
    days: int
    truncated: bool


class DecisionPublic(BaseModel):
    id: int
    queue_id: str
    rule_id: str | None
    rule_name: str | None
    object_type: str
    object_id: str
    item_id: str | None
    outcome: str
    reason: str | None
    event_id: str | None
    decided_at: Timestamp


class DecisionPage(BaseModel):
    data: list[DecisionPublic]
    meta: PageMeta


class NoMatch(BaseModel):
    queue_id: str
    rule_id: str
    rule_name: str
    outcome: Literal["no_match"]
    reason: str


class TraceRouting(BaseModel):
    trace_id: str
    data: list[DecisionPublic]
    no_match: list[NoMatch]
    evaluated: bool
    meta: PageMeta


class BlindTraces(BaseModel):
    """``user_id`` is present only when the caller reviews blind."""

    blind: bool
    user_id: str | None = None
    trace_ids: list[str]


class ItemPublic(BaseModel):
    """An item; ``reviewer_*`` fields are present when listed for one reviewer (or answered to them)."""

    id: str
    queue_id: str
    object_type: str
    object_id: str
    trace_id: str | None
    status: str = Field(description="PENDING, IN_PROGRESS, COMPLETED or REMOVED")
    reviewers_per_item: int
    completions: int
    flags: int
    assignees: list[str] | None
    rule_id: str | None
    reason: str | None
    added_by: str | None
    created_at: Timestamp
    updated_at: Timestamp
    completed_at: Timestamp | None
    removed_at: Timestamp | None
    reviewer_status: str | None = None
    reviewer_reason: str | None = None
    reviewer_updated_at: Timestamp | None = None
    reviewer_completed_at: Timestamp | None = None


class ItemPage(BaseModel):
    data: list[ItemPublic]
    meta: PageMeta


class ObjectRef(BaseModel):
    object_type: str
    object_id: str


class ItemsAdded(BaseModel):
    added: list[ItemPublic]
    already_present: list[ObjectRef]
    previously_removed: list[ObjectRef]


class BackfillResult(BaseModel):
    scanned: int
    matched: int
    added: int
    already_present: int
    previously_removed: int
    sampled_out: int
    truncated: bool


class ReviewPublic(BaseModel):
    reviewer: str
    status: str
    reason: str | None
    started_at: Timestamp | None
    updated_at: Timestamp | None
    completed_at: Timestamp | None


class SlotPublic(BaseModel):
    slot: int
    state: str
    reviewer: str | None
    lease_expires_at: Timestamp | None


class ItemDecision(BaseModel):
    rule_id: str | None
    rule_name: str | None
    outcome: str
    reason: str | None
    event_id: str | None
    decided_at: Timestamp


class ItemDetail(ItemPublic):
    reviews: list[ReviewPublic]
    slots: list[SlotPublic]
    routing_decisions: list[ItemDecision]


class Lease(BaseModel):
    id: str
    expires_at: Timestamp
    slot: int


class ReviewItem(ItemPublic):
    """The item as a reviewer takes it: with the queue's blindness and score configs."""

    blind: bool
    score_configs: list[ScoreConfigPublic]


class LeasedItem(BaseModel):
    item: ReviewItem
    lease: Lease


class UndoneSkip(BaseModel):
    """The item again; ``lease`` when it was leased to the reviewer at once (a slot was free), and then the item
    as a reviewer takes it."""

    item: ReviewItem | ItemPublic
    lease: Lease | None


class Heartbeat(BaseModel):
    lease: Lease


class ReviewedItem(ItemPublic):
    """complete / skip / flag / release; ``next`` (present when asked for) is the reviewer's next item."""

    next: LeasedItem | None = None


class StatusCounts(BaseModel):
    total: int
    pending: int
    skipped: int
    in_progress: int
    completed: int
    removed: int


class HourCount(BaseModel):
    hour: Timestamp
    completed: int


class ReviewerProgress(BaseModel):
    reviewer: str
    counts: dict[str, int]
    completed_last_hour: int
    completed_per_hour_24h: float


class QueueProgress(BaseModel):
    queue_id: str
    reviewers_per_item: int
    items: StatusCounts
    completed_fraction: float
    items_completed_last_hour: int
    items_completed_per_hour: list[HourCount]
    reviewers: list[ReviewerProgress]


# ---------------------------------------------------------------------------------------------------------------
# Langfuse-compatible /api/public/annotation-queues (camelCase, as the langfuse SDK sends and parses it)


class LfQueueCreate(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    score_config_ids: list[str] = Field(alias="scoreConfigIds", default_factory=list, max_length=50)


class LfItemCreate(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    object_id: str = Field(alias="objectId", min_length=1, max_length=200)
    object_type: ObjectTypeName = Field(alias="objectType")
    status: Literal["PENDING", "COMPLETED"] | None = None


class LfItemUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: Literal["PENDING", "COMPLETED"] | None = None


class LfAssignment(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    user_id: str = Field(alias="userId", min_length=1, max_length=200)


class _Lf(BaseModel):
    """camelCase on the wire, snake_case attributes."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class LfPageMeta(_Lf):
    page: int
    limit: int
    total_items: int
    total_pages: int


class LfQueue(_Lf):
    id: str
    name: str
    description: str | None
    score_config_ids: list[str]
    created_at: Timestamp | None
    updated_at: Timestamp | None


class LfQueuePage(_Lf):
    data: list[LfQueue]
    meta: LfPageMeta


class LfItem(_Lf):
    id: str
    queue_id: str
    object_id: str
    object_type: str
    status: Literal["PENDING", "COMPLETED"]
    completed_at: Timestamp | None
    created_at: Timestamp | None
    updated_at: Timestamp | None


class LfItemPage(_Lf):
    data: list[LfItem]
    meta: LfPageMeta


class LfDeleted(_Lf):
    """``message`` is present on item deletions only."""

    success: bool
    message: str | None = None


class LfAssignmentPublic(_Lf):
    user_id: str
    queue_id: str
    project_id: str
