"""Dead letters, for project admins: what a consumer refused (reason, original payload), replayed once the cause
is fixed, or discarded. Everything shown comes from the payload's sender and is printed as escaped text."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from console.adapters.port import ApiCallError
from console.domain.render import as_text
from console.entrypoints.security import verify_csrf
from console.entrypoints.web import Ctx, Forbidden, flash, get_ctx, page, redirect

router = APIRouter(dependencies=[Depends(verify_csrf)])
CtxDep = Annotated[Ctx, Depends(get_ctx)]

STATUSES = ("open", "replayed", "discarded", "all")
PAGE_SIZE = 50


def _filters(status: str, reason_code: str | None, consumer: str | None, topic: str | None) -> dict[str, str]:
    return {k: v for k, v in {"status": status if status in STATUSES else "open", "reason_code": reason_code,
                              "consumer": consumer, "topic": topic}.items() if v}


def original_text(original: dict[str, Any] | None) -> str:
    """The original payload as text: pretty JSON, the text itself, or base64 (labelled by the page)."""
    if not original:
        return ""
    if original.get("encoding") == "json":
        return as_text(original.get("json"))
    return str(original.get("text") or original.get("base64") or "")


@router.get("/setup/dead-letters", response_class=HTMLResponse)
async def dead_letters(ctx: CtxDep, status: str = "open", reason_code: str | None = None,
                       consumer: str | None = None, topic: str | None = None, page_no: int = 1) -> Response:
    ctx.require("admin")
    filters = _filters(status, reason_code, consumer, topic)
    body = await ctx.api.list_dead_letters(filters | {"page": max(1, page_no), "limit": PAGE_SIZE})
    meta = body.get("meta") or {}
    total = int(meta.get("total") or 0)
    return page(ctx, ctx.request, "dead_letters.html", items=body.get("data") or [],
                counts=body.get("counts") or {}, total=total, page_no=max(1, page_no),
                pages=max(1, -(-total // PAGE_SIZE)), filters=filters, statuses=STATUSES,
                query=urlencode(filters))


@router.get("/setup/dead-letters/{dead_letter_id}", response_class=HTMLResponse)
async def dead_letter(ctx: CtxDep, dead_letter_id: str) -> Response:
    ctx.require("admin")
    item = await ctx.api.get_dead_letter(dead_letter_id)
    if item is None:
        raise Forbidden("No such dead letter in this project.")
    return page(ctx, ctx.request, "dead_letter.html", item=item, original=original_text(item.get("original")),
                people=await ctx.people())


async def _act(ctx: Ctx, action: str, ids: list[str] | None, reason_code: str | None) -> None:
    try:
        if action == "replay":
            result = await ctx.api.replay_dead_letters(ids, reason_code)
            skipped = result.get("skipped") or []
            note = f" {len(skipped)} could not be replayed." if skipped else ""
            more = " More match: run it again." if result.get("more") else ""
            flash(ctx.request, f"Replayed {result.get('replayed', 0)} dead letters. If the cause is fixed they are "
                  f"applied now; if not, they come back as new dead letters.{note}{more}", "ok")
        else:
            result = await ctx.api.discard_dead_letters(ids, reason_code)
            more = " More match: run it again." if result.get("more") else ""
            flash(ctx.request, f"Discarded {result.get('discarded', 0)} dead letters.{more}", "ok")
    except ApiCallError as e:
        flash(ctx.request, e.describe(), "error")


@router.post("/setup/dead-letters/{dead_letter_id}/{action}")
async def act_on_one(ctx: CtxDep, dead_letter_id: str, action: str) -> Response:
    ctx.require("admin")
    if action not in ("replay", "discard"):
        raise Forbidden("Unknown action.")
    await _act(ctx, action, [dead_letter_id], None)
    form = await ctx.request.form()
    back = str(form.get("back") or "")
    return redirect(back if back.startswith("/setup/dead-letters") and "//" not in back else "/setup/dead-letters")


@router.post("/setup/dead-letters")
async def act_on_many(ctx: CtxDep) -> Response:
    """Replay or discard every open dead letter with one reason code (or every ticked one)."""
    ctx.require("admin")
    form = await ctx.request.form()
    action = str(form.get("action") or "")
    if action not in ("replay", "discard"):
        raise Forbidden("Unknown action.")
    ids = [str(v) for v in form.getlist("id")] or None
    reason_code = str(form.get("reason_code") or "") or None
    if ids is None and reason_code is None:
        flash(ctx.request, "Tick some dead letters, or choose a reason first.", "error")
    else:
        await _act(ctx, action, ids, reason_code)
    query = urlencode({"reason_code": reason_code} if reason_code else {})
    return redirect("/setup/dead-letters" + (f"?{query}" if query else ""))
