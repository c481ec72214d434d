"""Commands and views of queues, rules and items (validated at the edge, used by the application layer)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from queue_router.domain.filters import RuleFilter

MAX_BULK_ITEMS = 1000
ObjectTypeName = Literal["TRACE", "OBSERVATION", "SESSION"]
Target = Literal["TRACE", "SESSION"]


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
