"""Turning a reviewer's form into scores: validate every field first (nothing is sent if one is wrong), then
create new scores or update the reviewer's earlier ones (editing a completed item changes, not duplicates)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from console.adapters.port import ApiCallError, TallyApi
from console.domain.scoring import FormError, parse_value


@dataclass
class Submission:
    errors: dict[str, str] = field(default_factory=dict)
    created: int = 0
    updated: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def my_scores(trace: dict[str, Any] | None, user_id: str, *, item_id: str | None = None,
              queue_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The reviewer's own scores on this trace, per config id (the ones from this queue item first)."""
    out: dict[str, dict[str, Any]] = {}
    for s in (trace or {}).get("scores") or []:
        if s.get("author_user_id") != user_id or not s.get("config_id"):
            continue
        if item_id is None and s.get("observation_id"):
            continue
        same_item = item_id is not None and s.get("queue_item_id") == item_id
        same_queue = queue_id is None or s.get("queue_id") in (None, queue_id)
        if same_item or (same_queue and s["config_id"] not in out):
            out[s["config_id"]] = s
    return out


async def submit(
    api: TallyApi, *, configs: list[dict[str, Any]], values: dict[str, list[str]], required: set[str],
    comment: str | None, trace_id: str | None, observation_id: str | None = None, session_id: str | None = None,
    queue_id: str | None = None, item_id: str | None = None, existing: dict[str, dict[str, Any]] | None = None,
) -> Submission:
    result = Submission()
    parsed: list[tuple[dict[str, Any], Any]] = []
    for cfg in configs:
        try:
            value = parse_value(cfg, values.get(cfg["id"], []))
        except FormError as e:
            result.errors[cfg["id"]] = str(e)
            continue
        if value is None:
            if cfg["id"] in required and not (existing or {}).get(cfg["id"]):
                result.errors[cfg["id"]] = f"{cfg['name']}: required"
            continue
        parsed.append((cfg, value))
    if result.errors:
        return result
    comment = (comment or "").strip() or None

    def body_of(cfg: dict[str, Any], value: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": cfg["name"], "config_id": cfg["id"], "data_type": cfg.get("data_type"), "value": value,
            "comment": comment, "source": "ANNOTATION", "trace_id": trace_id, "observation_id": observation_id,
            "session_id": session_id, "queue_id": queue_id, "queue_item_id": item_id,
        }
        return {k: v for k, v in body.items() if v is not None}

    async def update(cfg: dict[str, Any], value: Any, previous: dict[str, Any]) -> None:
        try:
            await api.update_score(previous["id"], {"value": value, "comment": comment})
            result.updated += 1
        except ApiCallError as e:
            result.errors[cfg["id"]] = f"{cfg['name']}: {e.describe()}"

    async def create(new: list[tuple[dict[str, Any], Any]]) -> None:
        # New scores go in one call (one transaction at scoring), each accepted or refused on its own.
        if not new:
            return
        try:
            refused = await api.create_scores([body_of(cfg, value) for cfg, value in new])
        except ApiCallError as e:
            refused = [e] * len(new)
        for (cfg, _), err in zip(new, refused, strict=True):
            if err is None:
                result.created += 1
            else:
                result.errors[cfg["id"]] = f"{cfg['name']}: {err.describe()}"

    new = [(cfg, value) for cfg, value in parsed if not (existing or {}).get(cfg["id"])]
    await asyncio.gather(create(new), *(update(cfg, value, (existing or {})[cfg["id"]])
                                        for cfg, value in parsed if (existing or {}).get(cfg["id"])))
    return result
