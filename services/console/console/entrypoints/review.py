"""Reviewing: the queue list with progress, and the review screen (lease, trace, form, complete/skip/flag,
heartbeat, history and editing completed items)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from console.adapters.port import ApiCallError, TraceQuery
from console.application.annotate import my_scores, submit
from console.entrypoints.security import verify_csrf
from console.entrypoints.web import Ctx, Forbidden, flash, get_ctx, page, redirect
from tally_shared.caching import TtlLru

router = APIRouter(dependencies=[Depends(verify_csrf)])

# A queue's settings and the project's configs, per person, for a few seconds: every item page and every
# completion needs them, and they change rarely. A change shows within this many seconds.
SETTINGS_CACHE_SECONDS = 3.0


def _cache(request: Request) -> TtlLru[tuple[str, ...], Any]:
    cache: TtlLru[tuple[str, ...], Any] | None = getattr(request.app.state, "review_cache", None)
    if cache is None:
        cache = request.app.state.review_cache = TtlLru(5000, SETTINGS_CACHE_SECONDS)
    return cache


async def _cached(ctx: Ctx, key: tuple[str, ...], load: Callable[[], Awaitable[Any]]) -> Any:
    cache = _cache(ctx.request)
    full = (ctx.user.id, ctx.project_id, *key)
    found, value = cache.lookup(full)
    if not found:
        value = await load()
        cache.set(full, value)
    return value
CtxDep = Annotated[Ctx, Depends(get_ctx)]

STATUSES = ("completed", "in_progress", "skipped", "flagged", "pending")


def visible_to(ctx: Ctx, queue: dict[str, Any]) -> bool:
    """Reviewers see the queues they are named on (or open queues); leads see every queue of the project."""
    if ctx.can_configure:
        return True
    reviewers = queue.get("reviewers") or []
    return not reviewers or ctx.user.id in reviewers or ctx.user.email in reviewers


def mine(progress: dict[str, Any], user_id: str) -> dict[str, Any]:
    for r in progress.get("reviewers") or []:
        if r.get("reviewer") == user_id:
            return r
    return {}


@router.get("/queues", response_class=HTMLResponse)
async def queues(ctx: CtxDep) -> Response:
    all_queues = [q for q in await ctx.api.list_queues() if not q.get("is_archived")]
    shown = [q for q in all_queues if visible_to(ctx, q)]
    progress = await asyncio.gather(*(ctx.api.queue_progress(q["id"]) for q in shown), return_exceptions=True)
    rows = []
    for q, p in zip(shown, progress, strict=True):
        prog: dict[str, Any] = p if isinstance(p, dict) else {}
        rows.append({"queue": q, "progress": prog, "mine": mine(prog, ctx.user.id)})
    return page(ctx, ctx.request, "queues.html", rows=rows, statuses=STATUSES)


async def _queue_or_404(ctx: Ctx, queue_id: str) -> dict[str, Any]:
    queue = await _cached(ctx, ("queue", queue_id), lambda: ctx.api.get_queue(queue_id))
    if queue is None or not visible_to(ctx, queue):
        raise Forbidden("No such queue in this project, or you are not one of its reviewers.")
    return queue


def _leases(request: Request) -> dict[str, dict[str, Any]]:
    return dict(request.session.get("leases", {}))


def _remember_lease(request: Request, lease: dict[str, Any]) -> None:
    leases = _leases(request)
    old = leases.get(lease["item_id"]) or {}
    leases[lease["item_id"]] = {"lease_id": lease.get("lease_id"), "expires_at": str(lease.get("expires_at") or ""),
                                "queue_id": lease.get("queue_id"),
                                **{k: lease.get(k) or old.get(k) for k in LEASE_ITEM_FIELDS},
                                **({"scored": old["scored"]} if "scored" in old else {})}
    request.session["leases"] = dict(list(leases.items())[-20:])


# What a lease says about its item, kept with it in the session: the item page needs nothing more to show it.
LEASE_ITEM_FIELDS = ("object_type", "object_id", "trace_id", "reason", "added_by")


def _open_lease(request: Request, queue_id: str) -> str | None:
    now = datetime.now(UTC)
    for item_id, lease in _leases(request).items():
        if lease.get("queue_id") != queue_id:
            continue
        try:
            expires = datetime.fromisoformat(str(lease.get("expires_at")).replace("Z", "+00:00"))
        except ValueError:
            continue
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires > now + timedelta(seconds=5):
            return item_id
    return None


def _remember_done(request: Request, queue_id: str, item_id: str) -> None:
    recent = [r for r in request.session.get("recent", []) if r != [queue_id, item_id]]
    recent.append([queue_id, item_id])
    request.session["recent"] = recent[-30:]


def previous_item(request: Request, queue_id: str, item_id: str, done: list[str]) -> str | None:
    """The item to go back to: the one reviewed before this one in this session, else the last one completed."""
    recent = [iid for qid, iid in request.session.get("recent", []) if qid == queue_id]
    if item_id in recent:
        i = recent.index(item_id)
        return recent[i - 1] if i > 0 else None
    if recent:
        return str(recent[-1])
    done = [d for d in done if d != item_id]
    return done[-1] if done else None


def _forget_lease(request: Request, item_id: str) -> None:
    leases = _leases(request)
    leases.pop(item_id, None)
    request.session["leases"] = leases


@router.get("/queues/{queue_id}/review", response_class=HTMLResponse)
async def next_item(ctx: CtxDep, queue_id: str) -> Response:
    ctx.require("review")
    queue = await _queue_or_404(ctx, queue_id)
    held = _open_lease(ctx.request, queue_id)
    if held is not None:
        # Resume the item this person already holds instead of taking a second one.
        return redirect(f"/queues/{queue_id}/items/{held}")
    try:
        lease = await ctx.api.next_item(queue_id)
    except ApiCallError as e:
        flash(ctx.request, f"Could not get the next item: {e.describe()}", "error")
        return redirect("/queues")
    if lease is None:
        return await _done_page(ctx, queue)
    lease.setdefault("queue_id", queue_id)
    _remember_lease(ctx.request, lease)
    return redirect(f"/queues/{queue_id}/items/{lease['item_id']}")


async def _done_page(ctx: Ctx, queue: dict[str, Any]) -> Response:
    """Nothing left for this person: what they did (completed and skipped counted apart), what they can take back,
    and where new items come from in this queue."""
    history, rules = await asyncio.gather(ctx.api.my_items(queue["id"]), ctx.api.list_rules(queue["id"]))
    by_status: dict[str, list[dict[str, Any]]] = {"completed": [], "skipped": [], "flagged": []}
    for h in history:
        by_status.setdefault(str(h.get("my_status")), []).append(h)
    active_rules = [r for r in rules if r.get("active") is None or r.get("active")]
    return page(ctx, ctx.request, "queue_done.html", queue=queue, history=history, by_status=by_status,
                active_rules=active_rules, undo=_pop_undo(ctx.request, queue["id"]))


def _pop_undo(request: Request, queue_id: str) -> str | None:
    """The item this person just skipped in this queue, offered once for taking back."""
    undo = request.session.pop("undo", None) if "undo" in request.session else None
    return str(undo[1]) if isinstance(undo, list) and len(undo) == 2 and undo[0] == queue_id else None


def _go_next(ctx: Ctx, queue_id: str, lease: dict[str, Any] | None) -> Response:
    """To the item leased along with the last action, or to the end-of-queue page."""
    if lease is None:
        return redirect(f"/queues/{queue_id}/review")
    lease.setdefault("queue_id", queue_id)
    _remember_lease(ctx.request, lease)
    return redirect(f"/queues/{queue_id}/items/{lease['item_id']}")


async def _lease_next(ctx: Ctx, queue_id: str) -> Response:
    """Straight to the next item (one redirect, not two), or to the end-of-queue page."""
    try:
        lease = await ctx.api.next_item(queue_id)
    except ApiCallError as e:
        flash(ctx.request, f"Could not get the next item: {e.describe()}", "error")
        return redirect("/queues")
    if lease is None:
        return redirect(f"/queues/{queue_id}/review")
    lease.setdefault("queue_id", queue_id)
    _remember_lease(ctx.request, lease)
    return redirect(f"/queues/{queue_id}/items/{lease['item_id']}")


async def _configs_of(ctx: Ctx, queue: dict[str, Any]) -> tuple[list[dict[str, Any]], set[str]]:
    all_configs = await _cached(ctx, ("configs",), lambda: ctx.api.list_configs(include_archived=True))
    by_id = {c["id"]: c for c in all_configs}
    wanted = queue.get("score_configs") or []
    configs = [by_id[s["config_id"]] for s in wanted if s.get("config_id") in by_id]
    required = {s["config_id"] for s in wanted if s.get("required")}
    return configs, required


async def _review_page(ctx: Ctx, queue_id: str, item_id: str, *, errors: dict[str, str] | None = None,
                       values: dict[str, list[str]] | None = None, comment: str | None = None,
                       status_code: int = 200) -> Response:
    # This session's own list of reviewed items names the previous one; only without it is the history asked.
    recent = [iid for qid, iid in ctx.request.session.get("recent", []) if qid == queue_id]
    held = _leases(ctx.request).get(item_id) or {}
    if held.get("object_id"):
        # The lease says what the item is: everything is asked in one round of parallel calls.
        ref = {k: held.get(k) for k in ("object_type", "object_id", "trace_id")}
        trace_id, session_id = _object_ids(ref)
        # A held item is the reviewer's to review: what the lease says of it is enough to show it.
        leased_item = {"item_id": item_id, "queue_id": queue_id, "my_status": "in_progress", **ref,
                       "reason": held.get("reason"), "added_by": held.get("added_by")}
        queue, item, trace, history, existing, people = await asyncio.gather(
            _queue_or_404(ctx, queue_id), _value(leased_item),
            ctx.api.get_trace(trace_id) if trace_id else _none(),
            ctx.api.my_items(queue_id) if not recent else _empty(),
            _existing(ctx, trace_id, queue_id, item_id, session_id), _cached(ctx, ("people",), ctx.people),
        )
        if item is None:
            raise Forbidden("This item is not in the queue (any more).")
        configs, required = await _configs_of(ctx, queue)
    else:
        queue, item = await asyncio.gather(_queue_or_404(ctx, queue_id), ctx.api.get_item(queue_id, item_id))
        if item is None:
            raise Forbidden("This item is not in the queue (any more).")
        trace_id, session_id = _object_ids(item)
        trace, (configs, required), history, existing, people = await asyncio.gather(
            ctx.api.get_trace(trace_id) if trace_id else _none(), _configs_of(ctx, queue),
            ctx.api.my_items(queue_id) if not recent else _empty(),
            _existing(ctx, trace_id, queue_id, item_id, session_id), _cached(ctx, ("people",), ctx.people),
        )
    if held:
        # Whether this person already scored the item: a completion without earlier scores need not ask.
        leases = _leases(ctx.request)
        leases[item_id] = {**held, "scored": bool(existing)}
        ctx.request.session["leases"] = leases
    session_traces: list[dict[str, Any]] = []
    if item.get("object_type") == "SESSION":
        # A session is reviewed as its traces in order; each is shown in full (the first few).
        page_ = await ctx.api.list_traces(TraceQuery(session_id=item.get("object_id"), limit=20))
        found = await asyncio.gather(*(ctx.api.get_trace(t["id"]) for t in page_.items[:10]))
        session_traces = [t for t in found if t]
    lease = _leases(ctx.request).get(item_id)
    if values is None:
        from console.domain.scoring import form_value

        values = {cid: form_value(next(c for c in configs if c["id"] == cid), s)
                  for cid, s in existing.items() if any(c["id"] == cid for c in configs)}
        if comment is None:
            comment = next((s.get("comment") for s in existing.values() if s.get("comment")), None)
    # The server already hides them from a blind reviewer; the page does not show them to anyone in a blind queue.
    others = [] if queue.get("blind") else [
        s for s in (trace or {}).get("scores") or [] if s.get("author_user_id") != ctx.user.id
    ]
    previous = previous_item(ctx.request, queue_id, item_id,
                             [h["item_id"] for h in history if h.get("my_status") == "completed"])
    editing = item.get("my_status") == "completed" and not lease
    return page(
        ctx, ctx.request, "review.html", status_code=status_code, queue=queue, item=item, trace=trace,
        people=people, undo=_pop_undo(ctx.request, queue_id),
        configs=configs, required=required, lease=lease, values=values, comment=comment or "", errors=errors or {},
        others=others, previous=previous, editing=editing, history=history, session_traces=session_traces,
        focus_observation=item.get("object_id") if item.get("object_type") == "OBSERVATION" else None,
    )


async def _existing(ctx: Ctx, trace_id: str | None, queue_id: str, item_id: str,
                    session_id: str | None = None) -> dict[str, dict[str, Any]]:
    """This reviewer's scores for this item, per config, from scoring (never a duplicate after a quick edit)."""
    if trace_id:
        scores = await ctx.api.list_scores({"trace_id": trace_id, "author_user_id": ctx.user.id})
    elif session_id:
        scores = await ctx.api.list_scores({"session_id": session_id, "author_user_id": ctx.user.id})
    else:
        return {}
    return my_scores({"scores": scores}, ctx.user.id, item_id=item_id, queue_id=queue_id)


def _object_ids(item: dict[str, Any]) -> tuple[str | None, str | None]:
    """(trace id, session id) of an item: the trace it is about, or the session it is."""
    trace_id = item.get("trace_id") or (item.get("object_id") if item.get("object_type") == "TRACE" else None)
    session_id = item.get("object_id") if item.get("object_type") == "SESSION" else None
    return trace_id, session_id


async def _none() -> None:
    return None


async def _value(v: dict[str, Any]) -> dict[str, Any]:
    return v


async def _empty() -> list[dict[str, Any]]:
    return []


async def _empty_scores() -> dict[str, dict[str, Any]]:
    return {}


@router.get("/queues/{queue_id}/items/{item_id}", response_class=HTMLResponse)
async def review_item(ctx: CtxDep, queue_id: str, item_id: str) -> Response:
    ctx.require("review")
    return await _review_page(ctx, queue_id, item_id)


@router.post("/queues/{queue_id}/items/{item_id}/complete", response_class=HTMLResponse)
async def complete(ctx: CtxDep, queue_id: str, item_id: str) -> Response:
    ctx.require("review")
    form = await ctx.request.form()
    held = _leases(ctx.request).get(item_id)
    if held and held.get("object_id"):
        # The lease this person holds already says what the item is: no need to ask.
        queue = await _queue_or_404(ctx, queue_id)
        item: dict[str, Any] | None = {"item_id": item_id, "queue_id": queue_id, "my_status": "in_progress",
                                       **{k: held.get(k) for k in ("object_type", "object_id", "trace_id")}}
    else:
        queue, item = await asyncio.gather(_queue_or_404(ctx, queue_id), ctx.api.get_item(queue_id, item_id))
    if item is None:
        raise Forbidden("This item is not in the queue (any more).")
    trace_id, session_id = _object_ids(item)
    # The item page noted whether this person had scored the item; if not, there is nothing to update.
    unscored = held is not None and held.get("scored") is False
    (configs, required), existing = await asyncio.gather(
        _configs_of(ctx, queue), _empty_scores() if unscored else _existing(ctx, trace_id, queue_id, item_id,
                                                                              session_id))
    values = {c["id"]: [str(v) for v in form.getlist(f"score:{c['id']}")] for c in configs}
    comment = str(form.get("comment") or "")[:5000]
    result = await submit(
        ctx.api, configs=configs, values=values, required=required, comment=comment, trace_id=trace_id,
        observation_id=item.get("object_id") if item.get("object_type") == "OBSERVATION" else None,
        session_id=item.get("object_id") if item.get("object_type") == "SESSION" else None,
        queue_id=queue_id, item_id=item_id, existing=existing,
    )
    if not result.ok:
        return await _review_page(ctx, queue_id, item_id, errors=result.errors, values=values, comment=comment,
                                  status_code=422)
    leases = _leases(ctx.request)
    lease = leases.get(item_id)
    if lease and result.created:
        # Saved now: a retry of this completion must update these scores, not add more.
        leases[item_id] = {**lease, "scored": True}
        ctx.request.session["leases"] = leases
    if item.get("my_status") == "completed" and not lease:
        flash(ctx.request, "Your scores were updated.", "ok")
        # Back to the item this person was holding when they went to edit, else to their history.
        holding = _open_lease(ctx.request, queue_id)
        return redirect(f"/queues/{queue_id}/items/{holding}" if holding else f"/queues/{queue_id}/history")
    try:
        # Completing leases the next item in the same call: one round trip between items.
        done = await ctx.api.complete_item(queue_id, item_id, (lease or {}).get("lease_id"), take_next=True)
    except ApiCallError as e:
        flash(ctx.request, f"Scores saved, but completing the item failed: {e.describe()}", "error")
        return redirect(f"/queues/{queue_id}/items/{item_id}")
    _forget_lease(ctx.request, item_id)
    _remember_done(ctx.request, queue_id, item_id)
    flash(ctx.request, "Completed.", "ok")
    return _go_next(ctx, queue_id, done.get("next_lease"))


async def _skip_or_flag(ctx: Ctx, queue_id: str, item_id: str, reason: str, flagged: bool) -> Response:
    ctx.require("review")
    await _queue_or_404(ctx, queue_id)
    lease_id = (_leases(ctx.request).get(item_id) or {}).get("lease_id")
    skipped: dict[str, Any] = {}
    try:
        if flagged:
            await ctx.api.flag_item(queue_id, item_id, lease_id, reason.strip() or None)
        else:
            skipped = await ctx.api.skip_item(queue_id, item_id, lease_id, reason.strip() or None, take_next=True)
    except ApiCallError as e:
        flash(ctx.request, f"Could not {'flag' if flagged else 'skip'}: {e.describe()}", "error")
        return redirect(f"/queues/{queue_id}/items/{item_id}")
    _forget_lease(ctx.request, item_id)
    flash(ctx.request, "Flagged for attention." if flagged else "Skipped.", "ok")
    if flagged:
        return await _lease_next(ctx, queue_id)
    ctx.request.session["undo"] = [queue_id, item_id]
    return _go_next(ctx, queue_id, skipped.get("next_lease"))


@router.post("/queues/{queue_id}/items/{item_id}/undo-skip")
async def undo_skip(ctx: CtxDep, queue_id: str, item_id: str) -> Response:
    """Take back a skip: the item is leased to this person again when a review slot is free."""
    ctx.require("review")
    await _queue_or_404(ctx, queue_id)
    try:
        lease = await ctx.api.undo_skip(queue_id, item_id)
    except ApiCallError as e:
        flash(ctx.request, f"Could not undo the skip: {e.describe()}", "error")
        return redirect(f"/queues/{queue_id}/history")
    if lease is None:
        flash(ctx.request, "Skip undone, but the item is taken by other reviewers right now; it comes back to you "
                           "when a slot frees.", "info")
        return redirect(f"/queues/{queue_id}/history")
    # Give back the item offered in its place, so it is not held twice.
    for held, other in _leases(ctx.request).items():
        if other.get("queue_id") == queue_id and held != item_id and other.get("lease_id"):
            try:
                await ctx.api.release_item(queue_id, held, str(other["lease_id"]))
            except ApiCallError:
                pass  # an expired lease returns the slot by itself
            _forget_lease(ctx.request, held)
    lease.setdefault("queue_id", queue_id)
    _remember_lease(ctx.request, lease)
    flash(ctx.request, "Skip undone: the item is yours again.", "ok")
    return redirect(f"/queues/{queue_id}/items/{item_id}")


@router.post("/queues/{queue_id}/items/{item_id}/skip")
async def skip(ctx: CtxDep, queue_id: str, item_id: str,
               reason: Annotated[str, Form(max_length=1000)] = "") -> Response:
    return await _skip_or_flag(ctx, queue_id, item_id, reason, flagged=False)


@router.post("/queues/{queue_id}/items/{item_id}/flag")
async def flag(ctx: CtxDep, queue_id: str, item_id: str,
               reason: Annotated[str, Form(max_length=1000)] = "") -> Response:
    return await _skip_or_flag(ctx, queue_id, item_id, reason, flagged=True)


@router.post("/queues/{queue_id}/items/{item_id}/heartbeat")
async def heartbeat(ctx: CtxDep, queue_id: str, item_id: str) -> Response:
    lease = _leases(ctx.request).get(item_id)
    if not lease or not lease.get("lease_id"):
        return JSONResponse({"ok": False, "error": "no lease held for this item"}, status_code=409)
    try:
        renewed = await ctx.api.heartbeat(queue_id, item_id, str(lease["lease_id"]))
    except ApiCallError as e:
        _forget_lease(ctx.request, item_id)
        return JSONResponse({"ok": False, "error": e.describe()}, status_code=409)
    renewed.setdefault("item_id", item_id)
    renewed.setdefault("lease_id", lease["lease_id"])
    renewed.setdefault("queue_id", queue_id)
    _remember_lease(ctx.request, renewed)
    return JSONResponse({"ok": True, "expires_at": str(renewed.get("expires_at") or "")})


@router.post("/queues/{queue_id}/items/{item_id}/release")
async def release(ctx: CtxDep, queue_id: str, item_id: str) -> Response:
    lease = _leases(ctx.request).get(item_id)
    if lease and lease.get("lease_id"):
        try:
            await ctx.api.release_item(queue_id, item_id, str(lease["lease_id"]))
        except ApiCallError:
            pass  # an expired lease returns the slot by itself
        _forget_lease(ctx.request, item_id)
    if "application/json" in ctx.request.headers.get("accept", ""):
        return JSONResponse({"ok": True})
    flash(ctx.request, "Released: the item goes back to the pool.", "ok")
    return redirect("/queues")


@router.get("/queues/{queue_id}/history", response_class=HTMLResponse)
async def history(ctx: CtxDep, queue_id: str) -> Response:
    ctx.require("review")
    queue = await _queue_or_404(ctx, queue_id)
    items = list(reversed(await ctx.api.my_items(queue_id)))[:HISTORY_ROWS]
    trace_ids = list(dict.fromkeys(str(i["trace_id"]) for i in items if i.get("trace_id")))
    traces, scores = await asyncio.gather(
        asyncio.gather(*(ctx.api.get_trace(t) for t in trace_ids), return_exceptions=True),
        ctx.api.list_scores({"queue_id": queue_id, "author_user_id": ctx.user.id}),
    )
    by_trace = {t: tr for t, tr in zip(trace_ids, traces, strict=True) if isinstance(tr, dict)}
    mine_by_item: dict[str, list[dict[str, Any]]] = {}
    for sc in scores:
        key = sc.get("queue_item_id") or sc.get("trace_id")
        if key:
            mine_by_item.setdefault(str(key), []).append(sc)
    rows = []
    for i in items:
        trace = by_trace.get(str(i.get("trace_id"))) or {}
        rows.append({**i, "trace_name": trace.get("name"), "snippet": snippet(trace.get("input")),
                     "scores": mine_by_item.get(str(i["item_id"])) or mine_by_item.get(str(i.get("trace_id"))) or []})
    held = _open_lease(ctx.request, queue_id)
    return page(ctx, ctx.request, "history.html", queue=queue, items=rows, held=held)


HISTORY_ROWS = 100


def snippet(value: Any, limit: int = 140) -> str:
    """A one-line preview of a trace's input (text of a chat's last user message, or its JSON)."""
    if value is None:
        return ""
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        value = value[-1]["content"]
    if isinstance(value, dict):
        for key in ("input", "query", "question", "prompt", "text", "message", "q"):
            if isinstance(value.get(key), str):
                value = value[key]
                break
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
