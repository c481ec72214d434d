"""Scoring directly: the traces table (filters, select rows, add to a queue) and the trace page with an Annotate
form for any score config."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from console.adapters.port import ApiCallError, TraceQuery
from console.application.annotate import my_scores, submit
from console.domain.scoring import form_value
from console.entrypoints.security import verify_csrf
from console.entrypoints.web import Ctx, Forbidden, flash, get_ctx, page, redirect, safe_next

router = APIRouter(dependencies=[Depends(verify_csrf)])
CtxDep = Annotated[Ctx, Depends(get_ctx)]

LEVELS = ("", "DEBUG", "DEFAULT", "WARNING", "ERROR")
SCORE_OPS = (("gte", "≥"), ("lte", "≤"), ("gt", ">"), ("lt", "<"), ("eq", "="), ("neq", "≠"))


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def trace_query(request: Request, limit: int) -> tuple[TraceQuery, dict[str, str]]:
    q = request.query_params
    raw = {k: q.get(k, "").strip()[:200] for k in ("name", "tags", "from", "to", "level", "score_name", "score_op",
                                                    "score_value", "user_id", "environment", "session_id")}
    try:
        page_no = max(1, int(q.get("page", "1")))
    except ValueError:
        page_no = 1
    query = TraceQuery(
        name=raw["name"] or None, tags=[t.strip() for t in raw["tags"].split(",") if t.strip()],
        from_time=raw["from"] or None, to_time=raw["to"] or None,
        level=raw["level"] if raw["level"] in LEVELS[1:] else None, score_name=raw["score_name"] or None,
        score_op=raw["score_op"] if raw["score_op"] in dict(SCORE_OPS) else None,
        score_value=_float(raw["score_value"]), user_id=raw["user_id"] or None,
        environment=raw["environment"] or None, session_id=raw["session_id"] or None, page=page_no, limit=limit,
    )
    return query, raw


@router.get("/traces", response_class=HTMLResponse)
async def traces(ctx: CtxDep) -> Response:
    query, raw = trace_query(ctx.request, ctx.settings.page_size)
    error = None
    try:
        result, queues = await asyncio.gather(ctx.api.list_traces(query), ctx.api.list_queues())
    except ApiCallError as e:
        result, queues, error = None, [], e.describe()
    base = {k: v for k, v in raw.items() if v}
    pages = {
        "prev": "/traces?" + urlencode({**base, "page": query.page - 1}) if query.page > 1 else None,
        "next": "/traces?" + urlencode({**base, "page": query.page + 1})
        if result and (len(result.items) >= query.limit) else None,
    }
    return page(ctx, ctx.request, "traces.html", result=result, raw=raw, levels=LEVELS, score_ops=SCORE_OPS,
                queues=[q for q in queues if not q.get("is_archived")], pages=pages, error=error,
                back=str(ctx.request.url.path) + ("?" + ctx.request.url.query if ctx.request.url.query else ""))


def _page_no(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


@router.get("/sessions", response_class=HTMLResponse)
async def sessions(ctx: CtxDep) -> Response:
    page_no = _page_no(ctx.request)
    error = None
    try:
        result = await ctx.api.list_sessions(page_no, ctx.settings.page_size)
    except ApiCallError as e:
        result, error = None, e.describe()
    pages = {"prev": f"/sessions?page={page_no - 1}" if page_no > 1 else None,
             "next": f"/sessions?page={page_no + 1}" if result and len(result.items) >= result.limit else None}
    return page(ctx, ctx.request, "sessions.html", result=result, pages=pages, error=error)


MAX_SESSION_TRACES = 200


@router.get("/sessions/{session_id:path}", response_class=HTMLResponse)
async def session_page(ctx: CtxDep, session_id: str) -> Response:
    """A session: its traces in order, each linking to its trace page."""
    result = await ctx.api.list_traces(TraceQuery(session_id=session_id[:200], limit=MAX_SESSION_TRACES))
    if not result.items:
        raise Forbidden("No such session in this project (its traces may still be on their way).")
    return page(ctx, ctx.request, "session.html", session_id=session_id, result=result,
                more=result.total is not None and result.total > len(result.items))


@router.post("/traces/add-to-queue")
async def add_to_queue(ctx: CtxDep) -> Response:
    ctx.require("configure")
    form = await ctx.request.form()
    ids = [str(v) for v in form.getlist("trace_id")][:1000]
    queue_id = str(form.get("queue_id") or "")
    back = safe_next(str(form.get("back") or "/traces"))
    if not ids or not queue_id:
        flash(ctx.request, "Select some traces and a queue.", "error")
        return redirect(back)
    try:
        result = await ctx.api.add_items(queue_id, ids)
    except ApiCallError as e:
        flash(ctx.request, f"Could not add to the queue: {e.describe()}", "error")
        return redirect(back)
    added = result.get("added", len(ids))
    flash(ctx.request, f"Added {added} of {len(ids)} selected traces to the queue"
          + (" (the others were already in it or removed from it before)." if added != len(ids) else "."), "ok")
    return redirect(back)


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
async def trace_page(ctx: CtxDep, trace_id: str) -> Response:
    trace, configs = await asyncio.gather(ctx.api.get_trace(trace_id), ctx.api.list_configs())
    if trace is None:
        raise Forbidden("No such trace in this project (it may still be on its way: try again in a moment).")
    annotate = ctx.request.query_params.get("annotate")
    chosen = [c for c in configs if annotate in (c["id"], "all") and not c.get("is_archived")] if annotate else []
    observation = ctx.request.query_params.get("observation") or None
    if observation and not any(o.get("id") == observation for o in trace.get("observations") or []):
        observation = None
    existing = my_scores({"scores": await ctx.api.list_scores({"trace_id": trace_id, "author_user_id": ctx.user.id})},
                         ctx.user.id) if chosen else {}
    values = {c["id"]: form_value(c, existing.get(c["id"])) for c in chosen}
    if observation:
        values = {}
    return page(ctx, ctx.request, "trace.html", trace=trace, configs=configs, chosen=chosen, values=values,
                errors={}, comment="", people=await ctx.people(), observation=observation,
                comments=await trace_comments(ctx, trace_id, observation))


async def trace_comments(ctx: Ctx, trace_id: str, observation: str | None) -> list[dict[str, Any]]:
    """The trace's comments (and the focused observation's), oldest first; a failure shows none, not an error."""
    wanted = [("TRACE", trace_id)] + ([("OBSERVATION", observation)] if observation else [])
    found = await asyncio.gather(*(ctx.api.list_comments(k, i) for k, i in wanted), return_exceptions=True)
    out = [c for f in found if isinstance(f, list) for c in f]
    return sorted(out, key=lambda c: str(c.get("createdAt") or ""))


@router.post("/traces/{trace_id}/annotate", response_class=HTMLResponse)
async def annotate(ctx: CtxDep, trace_id: str) -> Response:
    ctx.require("review")
    form = await ctx.request.form()
    trace, configs = await asyncio.gather(ctx.api.get_trace(trace_id), ctx.api.list_configs())
    if trace is None:
        raise Forbidden("No such trace in this project.")
    chosen_ids = [str(v) for v in form.getlist("config_id")]
    chosen = [c for c in configs if c["id"] in chosen_ids]
    values = {c["id"]: [str(v) for v in form.getlist(f"score:{c['id']}")] for c in chosen}
    comment = str(form.get("comment") or "")[:5000]
    observation_id = str(form.get("observation_id") or "") or None
    existing = my_scores({"scores": await ctx.api.list_scores({"trace_id": trace_id,
                                                               "author_user_id": ctx.user.id})},
                         ctx.user.id) if observation_id is None else {}
    # One config: it must be filled. Several ("all"): fill any of them, at least one.
    required = {c["id"] for c in chosen} if len(chosen) == 1 else set()
    if len(chosen) > 1 and not any(v.strip() for vs in values.values() for v in vs):
        return page(ctx, ctx.request, "trace.html", status_code=422, trace=trace, configs=configs, chosen=chosen,
                    values=values, errors={chosen[0]["id"]: "score at least one of these"}, comment=comment,
                    observation=observation_id)
    result = await submit(ctx.api, configs=chosen, values=values, required=required,
                          comment=comment, trace_id=trace_id, observation_id=observation_id, existing=existing)
    if not result.ok:
        return page(ctx, ctx.request, "trace.html", status_code=422, trace=trace, configs=configs, chosen=chosen,
                    values=values, errors=result.errors, comment=comment, observation=observation_id)
    flash(ctx.request, f"Saved: {result.created} new, {result.updated} changed. The trace shows them once "
          "projections have caught up (a moment).", "ok")
    return redirect(f"/traces/{trace_id}")


