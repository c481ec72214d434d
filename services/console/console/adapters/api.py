"""The other services' HTTP APIs, called through the base URL on behalf of the signed-in person: a bearer token
the console signs (``tally_shared.identity.auth.sign_user_token``) plus ``X-Tally-Project``. The services check
the person's role in that project themselves.

Reads come from projections; commands go to scoring and queue-router. This is the only module that knows paths
and answer shapes; it hands the pages the plain snake_case dicts described in ``adapters/port.py``."""

from __future__ import annotations

import re
from typing import Any

import httpx

from console.adapters.port import ApiCallError, Page, TallyApi, TraceQuery
from tally_shared.identity.auth import sign_user_token

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(key: str) -> str:
    return _CAMEL.sub("_", key).lower()


# Keys whose values are user content: their insides keep the sender's spelling.
_OPAQUE = {"input", "output", "metadata", "model_parameters", "usage_details", "cost_details", "usage",
           "value", "string_values"}


def snake_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """Top-level camelCase keys to snake_case (nested lists of observations and scores too)."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        sk = snake(k)
        if sk in ("observations", "scores") and isinstance(v, list):
            v = [snake_keys(x) if isinstance(x, dict) else x for x in v]
        elif sk not in _OPAQUE and isinstance(v, dict) and sk in ("categories",):
            v = snake_keys(v)
        out[sk] = v
    return out


def _error(resp: httpx.Response) -> ApiCallError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return ApiCallError(resp.status_code, str(err.get("code", "error")), str(err.get("message", "")),
                            err.get("details"))
    if isinstance(body, dict) and "message" in body:
        return ApiCallError(resp.status_code, "error", str(body["message"]))
    return ApiCallError(resp.status_code, "error", f"{resp.request.method} {resp.request.url.path} answered "
                        f"{resp.status_code}")


# One path of each service behind the base URL: projections, scoring, queue-router.
PROBE_PATHS = ("/api/v1/traces", "/api/v1/score-configs", "/api/v1/queues")


class HttpApiFactory:
    def __init__(self, base_url: str, secret: str, timeout: float = 15.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._secret = secret
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    def for_user(self, user_id: str, project_id: str) -> TallyApi:
        return HttpTallyApi(self._client, sign_user_token(self._secret, user_id), project_id, user_id)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check_reachable(self) -> None:
        """Raises unless the base URL reaches the services: one path of each service the console calls must
        answer a credential-less request with the services' own 401. The console itself (a base URL pointing
        back at it) answers 404, nothing listening fails to connect; both mean every signed-in page would fail."""
        for path in PROBE_PATHS:
            resp = await self._client.get(path)
            if resp.status_code == 401 and _error(resp).code == "unauthorized":
                continue
            hint = (" (does the API base URL point at the console itself? It must be the gateway's)"
                    if resp.status_code == 404 else "")
            raise ConnectionError(f"{self._client.base_url}{path} answered {resp.status_code}, not the "
                                  f"service's 401{hint}")


def _data(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("data", "items", "queues", "rules"):
            if isinstance(body.get(key), list):
                return list(body[key])
    return []


class HttpTallyApi:
    def __init__(self, client: httpx.AsyncClient, token: str, project_id: str, user_id: str) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}", "X-Tally-Project": project_id,
                         "Accept": "application/json"}
        self.project_id = project_id
        self.user_id = user_id

    async def _call(self, method: str, path: str, *, params: Any = None, json: Any = None,
                    missing_ok: bool = False) -> Any:
        try:
            resp = await self._client.request(method, path, params=params, json=json, headers=self._headers)
        except httpx.HTTPError as e:
            raise ApiCallError(503, "unavailable", f"{path.split('?')[0]}: {type(e).__name__}") from None
        if missing_ok and resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise _error(resp)
        if resp.status_code == 204 or not resp.content:
            return {}
        return resp.json()

    # ------------------------------------------------------------------ projections
    async def list_traces(self, query: TraceQuery) -> Page:
        params: list[tuple[str, str]] = [("page", str(query.page)), ("limit", str(query.limit))]
        simple = {"name": query.name, "from_timestamp": query.from_time, "to_timestamp": query.to_time,
                  "user_id": query.user_id, "session_id": query.session_id, "environment": query.environment,
                  "level": query.level,
                  "score_name": query.score_name}
        params += [(k, v) for k, v in simple.items() if v]
        if query.session_id:
            params.append(("order_by", "timestamp.asc"))
        params += [("tags", t) for t in query.tags]
        if query.score_value is not None and query.score_op:
            # The traces API filters on a score range; strict comparisons become inclusive bounds.
            v = str(query.score_value)
            if query.score_op in ("gte", "gt", "eq"):
                params.append(("score_min", v))
            if query.score_op in ("lte", "lt", "eq"):
                params.append(("score_max", v))
        body = await self._call("GET", "/api/v1/traces", params=params)
        meta = body.get("meta", {}) if isinstance(body, dict) else {}
        total = meta.get("total", meta.get("total_items"))
        return Page([_trace_row(t) for t in _data(body)], total, query.page, query.limit)

    async def list_sessions(self, page: int, limit: int) -> Page:
        body = await self._call("GET", "/api/v1/sessions", params={"page": page, "limit": limit})
        meta = body.get("meta", {}) if isinstance(body, dict) else {}
        return Page(_data(body), meta.get("total"), page, limit)

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        body = await self._call("GET", f"/api/v1/traces/{_seg(trace_id)}", missing_ok=True)
        if not isinstance(body, dict):
            return None
        if "trace" not in body:  # a flat (Langfuse-style) trace
            return snake_keys(body)
        trace = dict(body["trace"])
        trace["latency"] = body.get("latency")
        trace["total_cost"] = body.get("total_cost")
        trace["observations"] = _flatten(body.get("observations") or [])
        trace["scores"] = list(body.get("scores") or [])
        trace["queue_items"] = list(body.get("queue_items") or [])
        return trace

    async def queue_progress(self, queue_id: str) -> dict[str, Any]:
        # queue-router's own counts are live (leases that are held right now), so the queue list uses them.
        body = await self._call("GET", f"/api/v1/queues/{_seg(queue_id)}/progress", missing_ok=True)
        return _progress(body or {})

    async def score_analytics(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._call("GET", "/api/v1/analytics/scores", params=_clean(params)) or {}

    async def list_experiments(self) -> list[dict[str, Any]]:
        return _data(await self._call("GET", "/api/v1/experiments/runs"))

    async def compare_experiment(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._call("GET", "/api/v1/experiments/compare", params=_clean(params)) or {}

    async def agreement(self, queue_id: str, config_id: str | None) -> dict[str, Any]:
        return await self._call("GET", "/api/v1/agreement",
                                params=_clean({"queue_id": queue_id, "config_id": config_id})) or {}

    async def calibration(self, config_id: str, score_name: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self._call("GET", "/api/v1/calibration",
                                params=_clean({"config_id": config_id, "evaluator": score_name, **params})) or {}

    async def list_dead_letters(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._call("GET", "/api/v1/dead-letters", params=_clean(params)) or {}

    async def get_dead_letter(self, dead_letter_id: str) -> dict[str, Any] | None:
        return await self._call("GET", f"/api/v1/dead-letters/{_seg(dead_letter_id)}", missing_ok=True)

    async def replay_dead_letters(self, ids: list[str] | None = None,
                                  reason_code: str | None = None) -> dict[str, Any]:
        if ids is not None and len(ids) == 1:
            return await self._call("POST", f"/api/v1/dead-letters/{_seg(ids[0])}/replay")
        return await self._call("POST", "/api/v1/dead-letters/replay",
                                json=_clean({"ids": ids, "reason_code": reason_code}))

    async def discard_dead_letters(self, ids: list[str] | None = None,
                                   reason_code: str | None = None) -> dict[str, Any]:
        if ids is not None and len(ids) == 1:
            return await self._call("POST", f"/api/v1/dead-letters/{_seg(ids[0])}/discard")
        return await self._call("POST", "/api/v1/dead-letters/discard",
                                json=_clean({"ids": ids, "reason_code": reason_code}))

    # ------------------------------------------------------------------ scoring
    async def list_configs(self, include_archived: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self._call("GET", "/api/v1/score-configs", params={
                "page": page, "limit": 100, "include_archived": str(include_archived).lower()})
            rows = _data(body)
            out += rows
            total_pages = (body.get("meta") or {}).get("total_pages", 1) if isinstance(body, dict) else 1
            if page >= (total_pages or 1) or not rows or page >= 20:
                return out
            page += 1

    async def get_config(self, config_id: str) -> dict[str, Any] | None:
        return await self._call("GET", f"/api/v1/score-configs/{_seg(config_id)}", missing_ok=True)

    async def create_config(self, data: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/api/v1/score-configs", json=_clean(data))

    async def update_config(self, config_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", f"/api/v1/score-configs/{_seg(config_id)}", json=data)

    async def set_config_archived(self, config_id: str, archived: bool) -> dict[str, Any]:
        action = "archive" if archived else "unarchive"
        return await self._call("POST", f"/api/v1/score-configs/{_seg(config_id)}/{action}")

    async def create_score(self, data: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/api/v1/scores", json=data)

    async def create_scores(self, items: list[dict[str, Any]]) -> list[ApiCallError | None]:
        """Several scores in one call (one transaction at scoring); per score None, or why it was refused."""
        body = await self._call("POST", "/api/v1/scores/batch", json={"scores": items})
        out: list[ApiCallError | None] = [None] * len(items)
        for r in body.get("results") or []:
            if isinstance(r, dict) and r.get("status") == "rejected" and isinstance(r.get("index"), int):
                out[r["index"]] = ApiCallError(422, "rejected", "score refused", r.get("errors"))
        return out

    async def update_score(self, score_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", f"/api/v1/scores/{_seg(score_id)}", json=data)

    async def delete_score(self, score_id: str) -> None:
        await self._call("DELETE", f"/api/v1/scores/{_seg(score_id)}")

    async def list_scores(self, params: dict[str, str]) -> list[dict[str, Any]]:
        # scoring is the source of truth for a person's own scores: right after a save, the read model may lag.
        return _data(await self._call("GET", "/api/v1/scores", params={**_clean(params), "limit": 500}))

    # ------------------------------------------------------------------ queue-router
    async def list_queues(self) -> list[dict[str, Any]]:
        return [_queue(q) for q in _data(await self._call("GET", "/api/v1/queues", params={"limit": 500}))]

    async def get_queue(self, queue_id: str) -> dict[str, Any] | None:
        body = await self._call("GET", f"/api/v1/queues/{_seg(queue_id)}", missing_ok=True)
        return _queue(body) if body else None

    async def create_queue(self, data: dict[str, Any]) -> dict[str, Any]:
        return _queue(await self._call("POST", "/api/v1/queues", json=_queue_out(data)))

    async def update_queue(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        body = _queue_out(data)
        archive = body.pop("is_archived", None)
        out = _queue(await self._call("PATCH", f"/api/v1/queues/{_seg(queue_id)}", json=body))
        if archive and not out.get("is_archived"):
            out = _queue(await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/archive"))
        return out

    async def list_rules(self, queue_id: str) -> list[dict[str, Any]]:
        return [_rule(r) for r in _data(await self._call("GET", f"/api/v1/queues/{_seg(queue_id)}/rules"))]

    async def create_rule(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return _rule(await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/rules", json=_rule_out(data)))

    async def update_rule(self, queue_id: str, rule_id: str, data: dict[str, Any]) -> dict[str, Any]:
        body = await self._call("PATCH", f"/api/v1/queues/{_seg(queue_id)}/rules/{_seg(rule_id)}",
                                json=_rule_out(data))
        return _rule(body) if isinstance(body, dict) else {}

    async def preview_rule(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            "POST", f"/api/v1/queues/{_seg(queue_id)}/rules/preview", json=_rule_out(data))

    async def add_items(self, queue_id: str, trace_ids: list[str]) -> dict[str, Any]:
        body = await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/items", json={
            "items": [{"object_type": "TRACE", "object_id": t, "trace_id": t} for t in trace_ids]})
        added = body.get("added") if isinstance(body, dict) else None
        return {"added": len(added) if isinstance(added, list) else len(trace_ids)}

    async def next_item(self, queue_id: str) -> dict[str, Any] | None:
        body = await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/next", json={"reviewer": "me"},
                                missing_ok=True)
        if not body or not body.get("item"):
            return None
        return _lease(queue_id, body)

    async def get_item(self, queue_id: str, item_id: str) -> dict[str, Any] | None:
        body = await self._call("GET", f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}", missing_ok=True)
        return _item(queue_id, body, self.user_id) if body else None

    async def heartbeat(self, queue_id: str, item_id: str, lease_id: str) -> dict[str, Any]:
        body = await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/heartbeat",
                                json={"lease_id": lease_id})
        lease = body.get("lease") or {}
        return {"item_id": item_id, "lease_id": lease.get("id", lease_id), "expires_at": lease.get("expires_at")}

    async def complete_item(self, queue_id: str, item_id: str, lease_id: str | None,
                            take_next: bool = False) -> dict[str, Any]:
        """With ``take_next`` the answer's ``next_lease`` is the next item, leased in the same call (or None)."""
        body = await self._call(
            "POST", f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/complete",
            json=_clean({"lease_id": lease_id, "next": take_next or None}))
        return _with_next_lease(queue_id, body, take_next)

    async def skip_item(self, queue_id: str, item_id: str, lease_id: str | None, reason: str | None,
                        take_next: bool = False) -> dict[str, Any]:
        body = await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/skip",
                                json=_clean({"lease_id": lease_id, "reason": reason, "next": take_next or None}))
        return _with_next_lease(queue_id, body, take_next)

    async def flag_item(self, queue_id: str, item_id: str, lease_id: str | None, reason: str | None) -> None:
        await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/flag",
                         json=_clean({"lease_id": lease_id, "reason": reason}))

    async def release_item(self, queue_id: str, item_id: str, lease_id: str) -> None:
        await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/release",
                         json={"lease_id": lease_id})

    async def my_items(self, queue_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """The items this person completed, skipped or flagged, oldest first (one call: the statuses together)."""
        body = await self._call("GET", f"/api/v1/queues/{_seg(queue_id)}/items",
                                params={"reviewer": "me", "status": status or "completed,skipped,flagged",
                                        "limit": 500})
        out = [_item(queue_id, i, self.user_id) for i in _data(body)]
        return sorted(out, key=lambda i: str(i.get("my_at") or ""))

    async def undo_skip(self, queue_id: str, item_id: str) -> dict[str, Any] | None:
        body = await self._call("POST", f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/undo-skip",
                                json={})
        return _lease(queue_id, body) if body and body.get("lease") else None

    async def rule_decisions(self, queue_id: str, rule_id: str, *, page: int = 1,
                             outcome: str | None = None) -> dict[str, Any]:
        body = await self._call("GET", f"/api/v1/queues/{_seg(queue_id)}/rules/{_seg(rule_id)}/decisions",
                                params=_clean({"page": page, "limit": 50, "outcome": outcome}))
        return body if isinstance(body, dict) else {"data": [], "meta": {}}

    # ------------------------------------------------------------------ scoring: datasets and comments
    async def create_dataset(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/api/public/v2/datasets", json={"name": name})
        return result

    async def upsert_dataset_item(self, data: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/api/public/dataset-items", json=data)
        return result

    async def list_comments(self, object_type: str, object_id: str) -> list[dict[str, Any]]:
        body = await self._call("GET", "/api/public/comments",
                                params={"objectType": object_type, "objectId": object_id, "limit": 100})
        return _data(body)

    async def create_comment(self, object_type: str, object_id: str, content: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/api/public/comments", json={
            "projectId": self.project_id, "objectType": object_type, "objectId": object_id, "content": content})
        return result


def _with_next_lease(queue_id: str, body: Any, take_next: bool) -> dict[str, Any]:
    out = dict(body) if isinstance(body, dict) else {}
    if take_next:
        nxt = out.get("next")
        out["next_lease"] = _lease(queue_id, nxt) if isinstance(nxt, dict) and nxt.get("item") else None
    return out


def _seg(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != ""}


def _flatten(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The projections' nested observation tree as a flat list (the page rebuilds depth from parent ids)."""
    out: list[dict[str, Any]] = []
    stack = list(reversed(nodes))
    while stack and len(out) < 5000:
        n = stack.pop()
        kids = n.get("children") or []
        out.append({k: v for k, v in n.items() if k != "children"})
        stack.extend(reversed(kids))
    return out


def _trace_row(t: dict[str, Any]) -> dict[str, Any]:
    row = snake_keys(t)
    summary = []
    for s in row.get("scores") or []:
        if not isinstance(s, dict):
            continue
        labels = s.get("labels") or []
        summary.append({"name": s.get("name"), "source": s.get("source"), "count": s.get("count"),
                        "value": s.get("mean") if not labels else None,
                        "string_value": ", ".join(map(str, labels)) if labels else None})
    row["scores"] = summary
    return row


def _queue(body: Any) -> dict[str, Any]:
    q = snake_keys(body) if isinstance(body, dict) else {}
    refs = q.get("score_configs")
    if refs is None and q.get("score_config_ids"):
        refs = [{"id": c, "required": True} for c in q["score_config_ids"]]
    q["score_configs"] = [{"config_id": r.get("config_id") or r.get("id"), "required": bool(r.get("required", True))}
                          for r in refs or [] if isinstance(r, dict)]
    q.setdefault("reviewers", [])
    return q


def _queue_out(data: dict[str, Any]) -> dict[str, Any]:
    body = dict(data)
    if "score_configs" in body:
        body["score_configs"] = [{"id": r["config_id"], "required": bool(r.get("required"))}
                                 for r in body["score_configs"]]
    return body


def _rule(body: Any) -> dict[str, Any]:
    r = snake_keys(body) if isinstance(body, dict) else {}
    flt = r.get("filter") or {}
    r["groups"] = [list(g.get("conditions") or []) for g in flt.get("groups") or [] if isinstance(g, dict)]
    return r


def _rule_out(data: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in data.items() if k != "groups"}
    if "groups" in data:
        body["filter"] = {"groups": [{"conditions": g} for g in data["groups"]]}
    return body


def _progress(body: dict[str, Any]) -> dict[str, Any]:
    items: dict[str, Any] = body["items"] if isinstance(body.get("items"), dict) else body
    out: dict[str, Any] = {k: int(items.get(k) or 0) for k in ("total", "pending", "in_progress", "completed")}
    out["completed_last_hour"] = body.get("items_completed_last_hour")
    out["per_hour"] = body.get("items_completed_per_hour") or []
    reviewers = []
    for r in body.get("reviewers") or []:
        counts = r.get("counts") or r
        reviewers.append({"reviewer": r.get("reviewer"), **{k: int(counts.get(k) or 0) for k in
                          ("in_progress", "completed", "skipped", "flagged")},
                          "completed_last_hour": r.get("completed_last_hour")})
    out["reviewers"] = reviewers
    out["skipped"] = sum(r["skipped"] for r in reviewers)
    out["flagged"] = sum(r["flagged"] for r in reviewers)
    return out


def _lease(queue_id: str, body: dict[str, Any]) -> dict[str, Any]:
    item = snake_keys(body.get("item") or {})
    lease = snake_keys(body.get("lease") or {})
    return {"queue_id": queue_id, "item_id": item.get("id") or item.get("item_id"),
            "lease_id": lease.get("id") or lease.get("lease_id"), "expires_at": lease.get("expires_at"),
            "object_type": item.get("object_type"), "object_id": item.get("object_id"),
            "trace_id": item.get("trace_id"), "reason": item.get("reason"), "added_by": item.get("added_by")}


def _item(queue_id: str, body: dict[str, Any], user_id: str) -> dict[str, Any]:
    i = snake_keys(body)
    i["item_id"] = i.get("item_id") or i.get("id")
    i.setdefault("queue_id", queue_id)
    if i.get("reviewer_status"):
        i["my_status"] = i["reviewer_status"]
        i["my_reason"] = i.get("reviewer_reason")
        i["my_at"] = i.get("reviewer_completed_at") or i.get("reviewer_updated_at")
    for review in i.get("reviews") or []:
        if isinstance(review, dict) and review.get("reviewer") == user_id:
            i["my_status"] = review.get("status")
            i["my_reason"] = review.get("reason")
    i.setdefault("my_status", "pending")
    return i
