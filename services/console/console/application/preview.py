"""How many recent traces a routing rule would have matched.

queue-router answers this itself when it offers a preview endpoint. Otherwise the console estimates it from the
projections' traces API: it can filter there on name, tags, environment, user, level and one automated score
(over the last 7 days), and says which conditions it could not apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from console.adapters.port import ApiCallError, TallyApi, TraceQuery

PREVIEW_DAYS = 7
_FILTERABLE = {("name", "eq"), ("tags", "contains"), ("environment", "eq"), ("user_id", "eq"), ("has_error", "eq")}


async def preview(api: TallyApi, queue_id: str, rule: dict[str, Any]) -> dict[str, Any]:
    try:
        answer = await api.preview_rule(queue_id, rule)
        if answer.get("count") is not None or answer.get("matched") is not None:
            return {"count": answer.get("count", answer.get("matched")), "scanned": answer.get("scanned"),
                    "days": answer.get("days"), "source": "queue-router", "ignored": []}
    except ApiCallError as e:
        if e.status not in (404, 405, 501):
            raise
    return await _estimate(api, rule)


async def _estimate(api: TallyApi, rule: dict[str, Any]) -> dict[str, Any]:
    since = (datetime.now(UTC) - timedelta(days=PREVIEW_DAYS)).isoformat()
    total = 0
    ignored: list[str] = []
    for group in rule.get("groups") or []:
        q = TraceQuery(from_time=since, limit=1)
        for c in group:
            field, op, value = c.get("field"), c.get("op"), c.get("value")
            if field == "score" and op in ("gt", "gte", "lt", "lte", "eq", "neq") and q.score_name is None \
                    and isinstance(value, int | float):
                q.score_name, q.score_op, q.score_value = c.get("name"), op, float(value)
            elif field == "tags" and op in ("any_of", "all_of") and isinstance(value, list) and len(value) == 1:
                q.tags.append(str(value[0]))
            elif (field, op) == ("has_error", "eq") and value is True:
                q.level = "ERROR"
            elif (field, op) in _FILTERABLE and isinstance(value, str):
                if field == "name":
                    q.name = value
                elif field == "tags":
                    q.tags.append(value)
                elif field == "environment":
                    q.environment = value
                else:
                    q.user_id = value
            else:
                ignored.append(f"{field} {op}")
        page = await api.list_traces(q)
        # Groups are ORed: summing counts each trace matching two groups twice, so this is an upper bound.
        total += page.total if page.total is not None else len(page.items)
    rate = rule.get("sample_rate")
    estimate = round(total * float(rate)) if isinstance(rate, int | float) and rate < 1 else total
    return {"count": estimate, "before_sampling": total, "days": PREVIEW_DAYS, "source": "traces API estimate",
            "ignored": sorted(set(ignored)), "upper_bound": len(rule.get("groups") or []) > 1}
