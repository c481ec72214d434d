"""What the console asks of the other services, in one interface. Pages depend on this, not on HTTP: unit tests
use an in-memory fake, production the HTTP client in ``adapters/api.py``.

Shapes are plain dicts with snake_case keys (the adapter normalises camelCase answers):
- trace: id, name, timestamp, input, output, metadata, tags, user_id, session_id, release, version, environment,
  observations [observation], scores [score]
- observation: id, trace_id, type, name, parent_observation_id, start_time, end_time, level, status_message,
  model, model_parameters, usage_details, cost_details, input, output, metadata
- score: id, name, value, string_value, string_values, data_type, source, author_user_id, config_id, comment,
  queue_id, queue_item_id, observation_id, timestamp, evaluator_name
- config: id, name, data_type, description, guidelines, min_value, max_value, step, categories [{label, value}],
  multi_select, max_length, is_archived, version
- queue: id, name, description, score_configs [{config_id, required}], reviewers [str], reviewers_per_item,
  lease_seconds, blind, is_archived
- rule: id, queue_id, name, groups [[{field, op, value, name?}]], sample_rate, daily_cap, active
- lease: queue_id, item_id, lease_id, object_type, object_id, trace_id, expires_at
- item: queue_id, item_id, object_type, object_id, trace_id, status, reason, my_status
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ApiCallError(Exception):
    """A service answered with an error (or could not be reached)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def describe(self) -> str:
        if isinstance(self.details, list) and self.details:
            parts = []
            for d in self.details[:5]:
                if isinstance(d, dict):
                    parts.append(f"{d.get('field', '')}: {d.get('message') or d.get('rule', '')}".strip(": "))
            if parts:
                return f"{self.message} ({'; '.join(parts)})"
        return self.message


@dataclass
class TraceQuery:
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    from_time: str | None = None
    to_time: str | None = None
    level: str | None = None
    score_name: str | None = None
    score_op: str | None = None
    score_value: float | None = None
    user_id: str | None = None
    session_id: str | None = None
    environment: str | None = None
    page: int = 1
    limit: int = 50


@dataclass
class Page:
    items: list[dict[str, Any]]
    total: int | None
    page: int
    limit: int


class TallyApi(Protocol):
    """The other services' APIs, on behalf of one signed-in person in one project."""

    # projections (reads)
    async def list_traces(self, query: TraceQuery) -> Page: ...
    async def get_trace(self, trace_id: str) -> dict[str, Any] | None: ...
    async def queue_progress(self, queue_id: str) -> dict[str, Any]: ...
    async def score_analytics(self, params: dict[str, Any]) -> dict[str, Any]: ...
    async def list_experiments(self) -> list[dict[str, Any]]: ...
    async def compare_experiment(self, params: dict[str, Any]) -> dict[str, Any]: ...
    async def agreement(self, queue_id: str, config_id: str | None) -> dict[str, Any]: ...
    async def calibration(self, config_id: str, score_name: str, params: dict[str, Any]) -> dict[str, Any]: ...

    # scoring
    async def list_configs(self, include_archived: bool = False) -> list[dict[str, Any]]: ...
    async def get_config(self, config_id: str) -> dict[str, Any] | None: ...
    async def create_config(self, data: dict[str, Any]) -> dict[str, Any]: ...
    async def update_config(self, config_id: str, data: dict[str, Any]) -> dict[str, Any]: ...
    async def set_config_archived(self, config_id: str, archived: bool) -> dict[str, Any]: ...
    async def create_score(self, data: dict[str, Any]) -> dict[str, Any]: ...
    async def update_score(self, score_id: str, data: dict[str, Any]) -> dict[str, Any]: ...
    async def delete_score(self, score_id: str) -> None: ...
    async def list_scores(self, params: dict[str, str]) -> list[dict[str, Any]]: ...

    # queue-router
    async def list_queues(self) -> list[dict[str, Any]]: ...
    async def get_queue(self, queue_id: str) -> dict[str, Any] | None: ...
    async def create_queue(self, data: dict[str, Any]) -> dict[str, Any]: ...
    async def update_queue(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]: ...
    async def list_rules(self, queue_id: str) -> list[dict[str, Any]]: ...
    async def create_rule(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]: ...
    async def update_rule(self, queue_id: str, rule_id: str, data: dict[str, Any]) -> dict[str, Any]: ...
    async def preview_rule(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]: ...
    async def add_items(self, queue_id: str, trace_ids: list[str]) -> dict[str, Any]: ...
    async def next_item(self, queue_id: str) -> dict[str, Any] | None: ...
    async def get_item(self, queue_id: str, item_id: str) -> dict[str, Any] | None: ...
    async def heartbeat(self, queue_id: str, item_id: str, lease_id: str) -> dict[str, Any]: ...
    async def complete_item(self, queue_id: str, item_id: str, lease_id: str | None) -> dict[str, Any]: ...
    async def skip_item(self, queue_id: str, item_id: str, lease_id: str | None, reason: str | None) -> None: ...
    async def flag_item(self, queue_id: str, item_id: str, lease_id: str | None, reason: str | None) -> None: ...
    async def release_item(self, queue_id: str, item_id: str, lease_id: str) -> None: ...
    async def my_items(self, queue_id: str, status: str | None = None) -> list[dict[str, Any]]: ...


class ApiFactory(Protocol):
    def for_user(self, user_id: str, project_id: str) -> TallyApi: ...
