"""The HTTP contracts between Tally's services and their clients (the console, the CLI, SDKs): pydantic models of
every request body and answer, in one place, so that a route and its callers cannot drift apart.

Naming: ``XCreate``/``XUpdate`` are request bodies, ``XPublic`` an answer, ``XPage`` a list answer. Models of the
Langfuse-compatible API are prefixed ``Lf`` and spell their fields in camelCase on the wire (python attributes
stay snake_case: ``model_dump()`` gives the snake_case shape, ``model_dump(by_alias=True)`` the wire shape).

Modules: ``scoring`` (score configs, scores, datasets, comments), ``read_models`` (projections' reads),
``dead_letters`` (every consumer's dead letters, served by projections), ``queues`` (queue-router)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Contract(BaseModel):
    """A snake_case answer. Unknown keys are refused: a key a service adds must be added here first."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """An answer whose declared keys are typed, with more keys that a computation adds by name (statistics,
    metrics chosen by the query): those are kept as they are."""

    model_config = ConfigDict(extra="allow")


class LfContract(BaseModel):
    """A Langfuse-compatible answer: camelCase on the wire, snake_case attributes."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class LfOpen(BaseModel):
    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)


class LfPageMeta(LfContract):
    page: int
    limit: int
    total_items: int
    total_pages: int


class PageMeta(Contract):
    page: int
    limit: int
    total: int


class Message(Contract):
    message: str


class Created(Contract):
    id: str
