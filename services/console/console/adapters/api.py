"""The other services' HTTP APIs, called through the base URL on behalf of the signed-in person: a bearer token
the console signs (``tally_shared.identity.auth.sign_user_token``) plus ``X-Tally-Project``. The services check
the person's role in that project themselves.

Reads come from projections; commands go to scoring and queue-router. This is the only module that knows paths.
Every answer is parsed into the services' own contract models (``tally_shared.contracts``): an answer that does
not fit is an error here, not a page that renders half a row. The pages get the plain snake_case dicts described
in ``adapters/port.py`` (the models dumped), and the Langfuse-shaped datasets and comments keep their camelCase."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from console.adapters.port import ApiCallError, Page, TallyApi, TraceQuery
from tally_shared.contracts import Created
from tally_shared.contracts import dead_letters as dl
from tally_shared.contracts import queues as qr
from tally_shared.contracts import read_models as rm
from tally_shared.contracts import scoring as sc
from tally_shared.identity.auth import sign_user_token

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: Any, path: str) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        where = "; ".join(".".join(str(p) for p in err["loc"]) or "body" for err in e.errors()[:3])
        raise ApiCallError(502, "bad_answer", f"{path} answered a {model.__name__} that does not fit its "
                           f"contract ({where})") from None


def plain(model: BaseModel) -> dict[str, Any]:
    """A parsed answer as the pages read it: JSON values, the wire's key spelling."""
    out: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
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

    async def _get(self, model: type[M], path: str, *, params: Any = None, json: Any = None,
                   method: str = "GET") -> M:
        return parse(model, await self._call(method, path, params=params, json=json), path)

    async def _maybe(self, model: type[M], path: str, *, method: str = "GET", json: Any = None) -> M | None:
        """The answer, or None when the object does not exist (404) or nothing is there (204)."""
        body = await self._call(method, path, json=json, missing_ok=True)
        return parse(model, body, path) if body else None

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
        page = await self._get(rm.TracePage, "/api/v1/traces", params=params)
        return Page([_trace_row(t) for t in page.data], page.meta.total, query.page, query.limit)

    async def list_sessions(self, page: int, limit: int) -> Page:
        body = await self._get(rm.SessionPage, "/api/v1/sessions", params={"page": page, "limit": limit})
        return Page([plain(s) for s in body.data], body.meta.total, page, limit)

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        detail = await self._maybe(rm.TraceDetail, f"/api/v1/traces/{_seg(trace_id)}")
        if detail is None:
            return None
        trace = plain(detail.trace)
        trace["latency"] = detail.latency
        trace["total_cost"] = detail.total_cost
        trace["observations"] = _flatten([plain(o) for o in detail.observations])
        trace["scores"] = [plain(s) for s in detail.scores]
        trace["queue_items"] = [plain(i) for i in detail.queue_items]
        return trace

    async def queue_progress(self, queue_id: str) -> dict[str, Any]:
        # queue-router's own counts are live (leases that are held right now), so the queue list uses them.
        progress = await self._maybe(qr.QueueProgress, f"/api/v1/queues/{_seg(queue_id)}/progress")
        return _progress(progress)

    async def score_analytics(self, params: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(rm.ScoreAnalytics, "/api/v1/analytics/scores", params=_clean(params)))

    async def list_experiments(self) -> list[dict[str, Any]]:
        return [plain(r) for r in (await self._get(rm.ExperimentRuns, "/api/v1/experiments/runs")).data]

    async def compare_experiment(self, params: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(rm.RunComparison, "/api/v1/experiments/compare", params=_clean(params)))

    async def agreement(self, queue_id: str, config_id: str | None) -> dict[str, Any]:
        return plain(await self._get(rm.Agreement, "/api/v1/agreement",
                                     params=_clean({"queue_id": queue_id, "config_id": config_id})))

    async def calibration(self, config_id: str, score_name: str, params: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(rm.Calibration, "/api/v1/calibration",
                                     params=_clean({"config_id": config_id, "evaluator": score_name, **params})))

    async def list_dead_letters(self, params: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(dl.DeadLetterPage, "/api/v1/dead-letters", params=_clean(params)))

    async def get_dead_letter(self, dead_letter_id: str) -> dict[str, Any] | None:
        found = await self._maybe(dl.DeadLetterDetail, f"/api/v1/dead-letters/{_seg(dead_letter_id)}")
        return plain(found) if found else None

    async def replay_dead_letters(self, ids: list[str] | None = None,
                                  reason_code: str | None = None) -> dict[str, Any]:
        if ids is not None and len(ids) == 1:
            return plain(await self._get(dl.ReplayResult, f"/api/v1/dead-letters/{_seg(ids[0])}/replay",
                                         method="POST"))
        return plain(await self._get(dl.ReplayResult, "/api/v1/dead-letters/replay", method="POST",
                                     json=_selection(ids, reason_code)))

    async def discard_dead_letters(self, ids: list[str] | None = None,
                                   reason_code: str | None = None) -> dict[str, Any]:
        if ids is not None and len(ids) == 1:
            return plain(await self._get(dl.DiscardResult, f"/api/v1/dead-letters/{_seg(ids[0])}/discard",
                                         method="POST"))
        return plain(await self._get(dl.DiscardResult, "/api/v1/dead-letters/discard", method="POST",
                                     json=_selection(ids, reason_code)))

    # ------------------------------------------------------------------ scoring
    async def list_configs(self, include_archived: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self._get(sc.ScoreConfigPage, "/api/v1/score-configs", params={
                "page": page, "limit": 100, "include_archived": str(include_archived).lower()})
            out += [plain(c) for c in body.data]
            if page >= (body.meta.total_pages or 1) or not body.data or page >= 20:
                return out
            page += 1

    async def get_config(self, config_id: str) -> dict[str, Any] | None:
        found = await self._maybe(sc.ScoreConfigPublic, f"/api/v1/score-configs/{_seg(config_id)}")
        return plain(found) if found else None

    async def create_config(self, data: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(sc.ScoreConfigPublic, "/api/v1/score-configs", method="POST",
                                     json=_clean(data)))

    async def update_config(self, config_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(sc.ScoreConfigPublic, f"/api/v1/score-configs/{_seg(config_id)}",
                                     method="PATCH", json=data))

    async def set_config_archived(self, config_id: str, archived: bool) -> dict[str, Any]:
        action = "archive" if archived else "unarchive"
        return plain(await self._get(sc.ScoreConfigPublic, f"/api/v1/score-configs/{_seg(config_id)}/{action}",
                                     method="POST"))

    async def create_score(self, data: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(sc.ScoreSaved, "/api/v1/scores", method="POST", json=data))

    async def create_scores(self, items: list[dict[str, Any]]) -> list[ApiCallError | None]:
        """Several scores in one call (one transaction at scoring); per score None, or why it was refused."""
        body = await self._get(sc.ScoreBatchResult, "/api/v1/scores/batch", method="POST", json={"scores": items})
        out: list[ApiCallError | None] = [None] * len(items)
        for r in body.results:
            if r.status == "rejected" and 0 <= r.index < len(items):
                out[r.index] = ApiCallError(422, "rejected", "score refused", r.errors)
        return out

    async def update_score(self, score_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(sc.ScorePublic, f"/api/v1/scores/{_seg(score_id)}", method="PATCH",
                                     json=data))

    async def delete_score(self, score_id: str) -> None:
        await self._call("DELETE", f"/api/v1/scores/{_seg(score_id)}")

    async def list_scores(self, params: dict[str, str]) -> list[dict[str, Any]]:
        # scoring is the source of truth for a person's own scores: right after a save, the read model may lag.
        page = await self._get(sc.ScorePage, "/api/v1/scores", params={**_clean(params), "limit": 500})
        return [plain(s) for s in page.data]

    # ------------------------------------------------------------------ queue-router
    async def list_queues(self) -> list[dict[str, Any]]:
        return [_queue(q) for q in (await self._get(qr.QueuePage, "/api/v1/queues", params={"limit": 500})).data]

    async def get_queue(self, queue_id: str) -> dict[str, Any] | None:
        found = await self._maybe(qr.QueuePublic, f"/api/v1/queues/{_seg(queue_id)}")
        return _queue(found) if found else None

    async def create_queue(self, data: dict[str, Any]) -> dict[str, Any]:
        return _queue(await self._get(qr.QueuePublic, "/api/v1/queues", method="POST", json=_queue_out(data)))

    async def update_queue(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        body = _queue_out(data)
        archive = body.pop("is_archived", None)
        out = await self._get(qr.QueuePublic, f"/api/v1/queues/{_seg(queue_id)}", method="PATCH", json=body)
        if archive and not out.is_archived:
            out = await self._get(qr.QueuePublic, f"/api/v1/queues/{_seg(queue_id)}/archive", method="POST")
        return _queue(out)

    async def list_rules(self, queue_id: str) -> list[dict[str, Any]]:
        return [_rule(r) for r in (await self._get(qr.RuleList, f"/api/v1/queues/{_seg(queue_id)}/rules")).data]

    async def create_rule(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return _rule(await self._get(qr.RulePublic, f"/api/v1/queues/{_seg(queue_id)}/rules", method="POST",
                                     json=_rule_out(data)))

    async def update_rule(self, queue_id: str, rule_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return _rule(await self._get(qr.RulePublic, f"/api/v1/queues/{_seg(queue_id)}/rules/{_seg(rule_id)}",
                                     method="PATCH", json=_rule_out(data)))

    async def preview_rule(self, queue_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(qr.RulePreviewResult, f"/api/v1/queues/{_seg(queue_id)}/rules/preview",
                                     method="POST", json=_rule_out(data)))

    async def add_items(self, queue_id: str, trace_ids: list[str]) -> dict[str, Any]:
        added = await self._get(qr.ItemsAdded, f"/api/v1/queues/{_seg(queue_id)}/items", method="POST", json={
            "items": [{"object_type": "TRACE", "object_id": t, "trace_id": t} for t in trace_ids]})
        return {"added": len(added.added)}

    async def next_item(self, queue_id: str) -> dict[str, Any] | None:
        leased = await self._maybe(qr.LeasedItem, f"/api/v1/queues/{_seg(queue_id)}/next", method="POST",
                                   json={"reviewer": "me"})
        return _lease(queue_id, leased) if leased else None

    async def get_item(self, queue_id: str, item_id: str) -> dict[str, Any] | None:
        found = await self._maybe(qr.ItemDetail, f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}")
        return _item(queue_id, found, self.user_id) if found else None

    async def heartbeat(self, queue_id: str, item_id: str, lease_id: str) -> dict[str, Any]:
        beat = await self._get(qr.Heartbeat, f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/heartbeat",
                               method="POST", json={"lease_id": lease_id})
        return {"item_id": item_id, "lease_id": beat.lease.id, "expires_at": plain(beat.lease)["expires_at"]}

    async def complete_item(self, queue_id: str, item_id: str, lease_id: str | None,
                            take_next: bool = False) -> dict[str, Any]:
        """With ``take_next`` the answer's ``next_lease`` is the next item, leased in the same call (or None)."""
        body = await self._get(qr.ReviewedItem, f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/complete",
                               method="POST", json=_clean({"lease_id": lease_id, "next": take_next or None}))
        return _with_next_lease(queue_id, body, take_next)

    async def skip_item(self, queue_id: str, item_id: str, lease_id: str | None, reason: str | None,
                        take_next: bool = False) -> dict[str, Any]:
        body = await self._get(qr.ReviewedItem, f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/skip",
                               method="POST",
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
        body = await self._get(qr.ItemPage, f"/api/v1/queues/{_seg(queue_id)}/items",
                               params={"reviewer": "me", "status": status or "completed,skipped,flagged",
                                       "limit": 500})
        out = [_item(queue_id, i, self.user_id) for i in body.data]
        return sorted(out, key=lambda i: str(i.get("my_at") or ""))

    async def undo_skip(self, queue_id: str, item_id: str) -> dict[str, Any] | None:
        body = await self._get(qr.UndoneSkip, f"/api/v1/queues/{_seg(queue_id)}/items/{_seg(item_id)}/undo-skip",
                               method="POST", json={})
        return _lease_of(queue_id, body.item, body.lease) if body.lease is not None else None

    async def rule_decisions(self, queue_id: str, rule_id: str, *, page: int = 1,
                             outcome: str | None = None) -> dict[str, Any]:
        return plain(await self._get(qr.DecisionPage,
                                     f"/api/v1/queues/{_seg(queue_id)}/rules/{_seg(rule_id)}/decisions",
                                     params=_clean({"page": page, "limit": 50, "outcome": outcome})))

    # ------------------------------------------------------------------ scoring: datasets and comments
    async def create_dataset(self, name: str) -> dict[str, Any]:
        return plain(await self._get(sc.LfDataset, "/api/public/v2/datasets", method="POST", json={"name": name}))

    async def upsert_dataset_item(self, data: dict[str, Any]) -> dict[str, Any]:
        return plain(await self._get(sc.LfDatasetItem, "/api/public/dataset-items", method="POST", json=data))

    async def list_comments(self, object_type: str, object_id: str) -> list[dict[str, Any]]:
        page = await self._get(sc.LfCommentPage, "/api/public/comments",
                               params={"objectType": object_type, "objectId": object_id, "limit": 100})
        return [plain(c) for c in page.data]

    async def create_comment(self, object_type: str, object_id: str, content: str) -> dict[str, Any]:
        return plain(await self._get(Created, "/api/public/comments", method="POST", json={
            "projectId": self.project_id, "objectType": object_type, "objectId": object_id, "content": content}))


def _with_next_lease(queue_id: str, body: qr.ReviewedItem, take_next: bool) -> dict[str, Any]:
    out = plain(body)
    if take_next:
        out["next_lease"] = _lease(queue_id, body.next) if body.next is not None else None
    return out


def _seg(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != ""}


def _selection(ids: list[str] | None, reason_code: str | None) -> dict[str, Any]:
    return dl.DeadLetterSelection.model_validate(_clean({"ids": ids, "reason_code": reason_code})).model_dump(
        mode="json", exclude_unset=True)


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


def _trace_row(t: rm.TraceSummary) -> dict[str, Any]:
    row = plain(t)
    row["scores"] = [{"name": s.name, "source": s.source, "count": s.count,
                      "value": s.mean if not s.labels else None,
                      "string_value": ", ".join(s.labels) if s.labels else None} for s in t.scores]
    return row


def _queue(q: qr.QueuePublic) -> dict[str, Any]:
    out = plain(q)
    out["score_configs"] = [{"config_id": r.id, "required": r.required} for r in q.score_configs]
    return out


def _queue_out(data: dict[str, Any]) -> dict[str, Any]:
    body = dict(data)
    if "score_configs" in body:
        body["score_configs"] = [qr.ScoreConfigRef(id=r["config_id"], required=bool(r.get("required"))).model_dump()
                                 for r in body["score_configs"]]
    return body


def _rule(r: qr.RulePublic) -> dict[str, Any]:
    out = plain(r)
    out["groups"] = [list(g.get("conditions") or []) for g in r.filter.get("groups") or [] if isinstance(g, dict)]
    return out


def _rule_out(data: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in data.items() if k != "groups"}
    if "groups" in data:
        body["filter"] = {"groups": [{"conditions": g} for g in data["groups"]]}
    return body


def _progress(p: qr.QueueProgress | None) -> dict[str, Any]:
    if p is None:
        return {"total": 0, "pending": 0, "in_progress": 0, "completed": 0, "completed_last_hour": None,
                "per_hour": [], "reviewers": [], "skipped": 0, "flagged": 0}
    out: dict[str, Any] = {"total": p.items.total, "pending": p.items.pending, "in_progress": p.items.in_progress,
                           "completed": p.items.completed, "completed_last_hour": p.items_completed_last_hour,
                           "per_hour": [plain(h) for h in p.items_completed_per_hour]}
    reviewers = [{"reviewer": r.reviewer, **{k: int(r.counts.get(k) or 0) for k in
                                             ("in_progress", "completed", "skipped", "flagged")},
                  "completed_last_hour": r.completed_last_hour} for r in p.reviewers]
    out["reviewers"] = reviewers
    out["skipped"] = sum(r["skipped"] for r in reviewers)
    out["flagged"] = sum(r["flagged"] for r in reviewers)
    return out


def _lease(queue_id: str, leased: qr.LeasedItem) -> dict[str, Any]:
    return _lease_of(queue_id, leased.item, leased.lease)


def _lease_of(queue_id: str, item: qr.ItemPublic, lease: qr.Lease) -> dict[str, Any]:
    return {"queue_id": queue_id, "item_id": item.id, "lease_id": lease.id,
            "expires_at": plain(lease)["expires_at"], "object_type": item.object_type,
            "object_id": item.object_id, "trace_id": item.trace_id, "reason": item.reason,
            "added_by": item.added_by}


def _item(queue_id: str, item: qr.ItemPublic, user_id: str) -> dict[str, Any]:
    i = plain(item)
    i["item_id"] = item.id
    i.setdefault("queue_id", queue_id)
    if item.reviewer_status:
        i["my_status"] = item.reviewer_status
        i["my_reason"] = item.reviewer_reason
        i["my_at"] = i.get("reviewer_completed_at") or i.get("reviewer_updated_at")
    if isinstance(item, qr.ItemDetail):
        for review in item.reviews:
            if review.reviewer == user_id:
                i["my_status"] = review.status
                i["my_reason"] = review.reason
    i.setdefault("my_status", "pending")
    return i
