"""Setting up: score configs, queues (reviewers, overlap, lease, blind) and routing rules with a preview."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from console.adapters.identity import Member
from console.adapters.port import ApiCallError
from console.application.preview import preview
from console.domain import rules as rule_form
from console.entrypoints.security import verify_csrf
from console.entrypoints.web import Ctx, Forbidden, flash, get_ctx, identity_of, page, redirect

router = APIRouter(dependencies=[Depends(verify_csrf)])
CtxDep = Annotated[Ctx, Depends(get_ctx)]

DATA_TYPES = ("CATEGORICAL", "NUMERIC", "BOOLEAN", "TEXT")


# ---------------------------------------------------------------- score configs
@router.get("/setup/configs", response_class=HTMLResponse)
async def configs(ctx: CtxDep) -> Response:
    items = await ctx.api.list_configs(include_archived=True)
    return page(ctx, ctx.request, "configs.html", configs=items)


def _num(form: FormData, key: str) -> float | None:
    raw = str(form.get(key) or "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{key.replace('_', ' ')}: not a number") from None


def config_from_form(form: FormData) -> dict[str, Any]:
    data_type = str(form.get("data_type") or "")
    if data_type not in DATA_TYPES:
        raise ValueError("choose a data type")
    data: dict[str, Any] = {
        "name": str(form.get("name") or "").strip(), "data_type": data_type,
        "description": str(form.get("description") or "").strip() or None,
        "guidelines": str(form.get("guidelines") or "").strip() or None,
    }
    if not data["name"]:
        raise ValueError("name: required")
    if data_type == "NUMERIC":
        data.update(min_value=_num(form, "min_value"), max_value=_num(form, "max_value"), step=_num(form, "step"))
    if data_type == "CATEGORICAL":
        cats: list[dict[str, Any]] = []
        for i, line in enumerate(str(form.get("categories") or "").splitlines()):
            if not line.strip():
                continue
            label, sep, value = line.partition("=")
            try:
                cats.append({"label": label.strip(), "value": float(value) if sep else float(len(cats))})
            except ValueError:
                raise ValueError(f"categories, line {i + 1}: write label=number") from None
        if len(cats) < 2:
            raise ValueError("categories: at least two, one per line (label=value)")
        data["categories"] = cats
        data["multi_select"] = form.get("multi_select") == "on"
    if data_type == "TEXT":
        ml = _num(form, "max_length")
        data["max_length"] = int(ml) if ml else None
    return data


@router.get("/setup/configs/new", response_class=HTMLResponse)
async def new_config(ctx: CtxDep) -> Response:
    ctx.require("configure")
    return page(ctx, ctx.request, "config_form.html", config={"data_type": "CATEGORICAL"}, data_types=DATA_TYPES,
                error=None)


@router.post("/setup/configs/new", response_class=HTMLResponse)
async def create_config(ctx: CtxDep) -> Response:
    ctx.require("configure")
    form = await ctx.request.form()
    try:
        data = config_from_form(form)
        created = await ctx.api.create_config(data)
    except (ValueError, ApiCallError) as e:
        msg = e.describe() if isinstance(e, ApiCallError) else str(e)
        return page(ctx, ctx.request, "config_form.html", status_code=422, config=_echo(form), data_types=DATA_TYPES,
                    error=msg)
    flash(ctx.request, f"Score config {created.get('name', data['name'])!r} created.", "ok")
    return redirect("/setup/configs")


def _echo(form: FormData) -> dict[str, Any]:
    out: dict[str, Any] = {k: str(v) for k, v in form.items() if k != "csrf"}
    out["categories_text"] = out.pop("categories", "")
    out["multi_select"] = form.get("multi_select") == "on"
    return out


@router.get("/setup/configs/{config_id}", response_class=HTMLResponse)
async def edit_config(ctx: CtxDep, config_id: str) -> Response:
    ctx.require("configure")
    config = await ctx.api.get_config(config_id)
    if config is None:
        raise Forbidden("No such score config in this project.")
    config = dict(config)
    config["categories_text"] = "\n".join(f"{c['label']}={c['value']:g}" for c in config.get("categories") or [])
    return page(ctx, ctx.request, "config_form.html", config=config, data_types=DATA_TYPES, error=None)


@router.post("/setup/configs/{config_id}", response_class=HTMLResponse)
async def update_config(ctx: CtxDep, config_id: str) -> Response:
    ctx.require("configure")
    form = await ctx.request.form()
    try:
        data = config_from_form(form)
        await ctx.api.update_config(config_id, data)
    except (ValueError, ApiCallError) as e:
        msg = e.describe() if isinstance(e, ApiCallError) else str(e)
        echo = _echo(form) | {"id": config_id}
        return page(ctx, ctx.request, "config_form.html", status_code=422, config=echo, data_types=DATA_TYPES,
                    error=msg)
    flash(ctx.request, "Score config saved (a change of type or range makes a new version).", "ok")
    return redirect("/setup/configs")


@router.post("/setup/configs/{config_id}/archive")
async def archive_config(ctx: CtxDep, config_id: str) -> Response:
    ctx.require("configure")
    form = await ctx.request.form()
    archived = form.get("archived") == "1"
    try:
        await ctx.api.set_config_archived(config_id, archived)
        flash(ctx.request, "Archived." if archived else "Restored.", "ok")
    except ApiCallError as e:
        flash(ctx.request, e.describe(), "error")
    return redirect("/setup/configs")


# ---------------------------------------------------------------- queues
@router.get("/setup/queues", response_class=HTMLResponse)
async def queues(ctx: CtxDep) -> Response:
    ctx.require("configure")
    items = await ctx.api.list_queues()
    return page(ctx, ctx.request, "setup_queues.html", queues=items)


async def _queue_form_data(ctx: Ctx) -> tuple[list[dict[str, Any]], list[Member]]:
    configs, members = await asyncio.gather(ctx.api.list_configs(),
                                            identity_of(ctx.request).members_of(ctx.project_id))
    return configs, [m for m in members if m.role != "viewer"]


def queue_from_form(form: FormData) -> dict[str, Any]:
    name = str(form.get("name") or "").strip()
    if not name:
        raise ValueError("name: required")
    required = {str(v) for v in form.getlist("required_config")}
    chosen = [str(v) for v in form.getlist("config")]
    try:
        overlap = int(str(form.get("reviewers_per_item") or "1"))
        lease_minutes = float(str(form.get("lease_minutes") or "10"))
    except ValueError:
        raise ValueError("reviewers per item and lease length are numbers") from None
    if overlap < 1 or overlap > 20:
        raise ValueError("reviewers per item: between 1 and 20")
    if lease_minutes <= 0 or lease_minutes > 24 * 60:
        raise ValueError("lease length: between 1 minute and a day")
    return {
        "name": name, "description": str(form.get("description") or "").strip() or None,
        "score_configs": [{"config_id": c, "required": c in required} for c in chosen],
        "reviewers": [str(v) for v in form.getlist("reviewer")],
        "reviewers_per_item": overlap, "lease_seconds": int(lease_minutes * 60), "blind": form.get("blind") == "on",
    }


@router.get("/setup/queues/new", response_class=HTMLResponse)
async def new_queue(ctx: CtxDep) -> Response:
    ctx.require("configure")
    configs, members = await _queue_form_data(ctx)
    return page(ctx, ctx.request, "queue_form.html", queue={"reviewers_per_item": 1, "lease_seconds": 600},
                configs=configs, members=members, error=None, rules=[], preview=None, rule_rows=_blank_rows(),
                rule_error=None, fields=rule_form.FIELDS, ops=rule_form.OPS)


@router.post("/setup/queues/new", response_class=HTMLResponse)
async def create_queue(ctx: CtxDep) -> Response:
    ctx.require("configure")
    form = await ctx.request.form()
    try:
        created = await ctx.api.create_queue(queue_from_form(form))
    except (ValueError, ApiCallError) as e:
        configs, members = await _queue_form_data(ctx)
        msg = e.describe() if isinstance(e, ApiCallError) else str(e)
        return page(ctx, ctx.request, "queue_form.html", status_code=422, queue=_queue_echo(form), configs=configs,
                    members=members, error=msg, rules=[], preview=None, rule_rows=_blank_rows(), rule_error=None,
                    fields=rule_form.FIELDS, ops=rule_form.OPS)
    flash(ctx.request, "Queue created. Add a routing rule to fill it from live traffic, or add traces by hand "
          "from the traces page.", "ok")
    return redirect(f"/setup/queues/{created['id']}")


def _queue_echo(form: FormData) -> dict[str, Any]:
    required = {str(v) for v in form.getlist("required_config")}
    return {
        "name": form.get("name"), "description": form.get("description"),
        "score_configs": [{"config_id": str(c), "required": str(c) in required} for c in form.getlist("config")],
        "reviewers": [str(v) for v in form.getlist("reviewer")], "blind": form.get("blind") == "on",
        "reviewers_per_item": form.get("reviewers_per_item"),
        "lease_seconds": _safe_float(str(form.get("lease_minutes") or "10")) * 60,
    }


def _safe_float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return 10.0


def _blank_rows() -> list[dict[str, str]]:
    return [{"group": "1", "field": "", "op": "eq", "value": "", "name": ""} for _ in range(rule_form.ROWS)]


async def _queue_page(ctx: Ctx, queue_id: str, *, status_code: int = 200, error: str | None = None,
                      rule_error: str | None = None, preview_result: dict[str, Any] | None = None,
                      rule_rows: list[dict[str, str]] | None = None, rule_meta: dict[str, Any] | None = None,
                      queue: dict[str, Any] | None = None) -> Response:
    stored = await ctx.api.get_queue(queue_id)
    if stored is None:
        raise Forbidden("No such queue in this project.")
    (configs, members), rules = await asyncio.gather(_queue_form_data(ctx), ctx.api.list_rules(queue_id))
    for r in rules:
        r["summary"] = rule_form.describe(r.get("groups") or [])
    return page(ctx, ctx.request, "queue_form.html", status_code=status_code, queue=queue or stored, configs=configs,
                members=members, error=error, rules=rules, preview=preview_result,
                rule_rows=rule_rows or _blank_rows(), rule_error=rule_error, rule_meta=rule_meta or {},
                fields=rule_form.FIELDS, ops=rule_form.OPS)


@router.get("/setup/queues/{queue_id}", response_class=HTMLResponse)
async def edit_queue(ctx: CtxDep, queue_id: str) -> Response:
    ctx.require("configure")
    return await _queue_page(ctx, queue_id)


@router.post("/setup/queues/{queue_id}", response_class=HTMLResponse)
async def update_queue(ctx: CtxDep, queue_id: str) -> Response:
    ctx.require("configure")
    form = await ctx.request.form()
    try:
        data = queue_from_form(form)
        data["is_archived"] = form.get("archived") == "on"
        await ctx.api.update_queue(queue_id, data)
    except (ValueError, ApiCallError) as e:
        msg = e.describe() if isinstance(e, ApiCallError) else str(e)
        return await _queue_page(ctx, queue_id, status_code=422, error=msg, queue=_queue_echo(form) | {"id": queue_id})
    flash(ctx.request, "Queue saved.", "ok")
    return redirect(f"/setup/queues/{queue_id}")


def _rule_from_form(form: FormData) -> tuple[dict[str, Any], list[dict[str, str]]]:
    multi = {k: [str(v) for v in form.getlist(k)] for k in form}
    rows = [{p: (multi.get(f"cond-{i}-{p}") or [""])[0] for p in ("group", "field", "op", "value", "name")}
            for i in range(rule_form.ROWS)]
    groups = rule_form.groups_from_form(multi)
    rule: dict[str, Any] = {"name": str(form.get("rule_name") or "").strip() or "rule", "groups": groups,
                            "active": form.get("active", "on") == "on"}
    rate = str(form.get("sample_rate") or "").strip()
    cap = str(form.get("daily_cap") or "").strip()
    try:
        if rate:
            r = float(rate.rstrip("%")) / (100 if rate.endswith("%") or float(rate.rstrip("%")) > 1 else 1)
            if not 0 < r <= 1:
                raise ValueError
            rule["sample_rate"] = r
        if cap:
            rule["daily_cap"] = int(cap)
    except ValueError:
        raise rule_form.RuleFormError("sample rate is a fraction (0.3) or percent (30%); daily cap a whole number") \
            from None
    return rule, rows


@router.post("/setup/queues/{queue_id}/rules", response_class=HTMLResponse)
async def add_rule(ctx: CtxDep, queue_id: str) -> Response:
    ctx.require("configure")
    form = await ctx.request.form()
    meta = {"rule_name": form.get("rule_name"), "sample_rate": form.get("sample_rate"),
            "daily_cap": form.get("daily_cap")}
    try:
        rule, rows = _rule_from_form(form)
    except rule_form.RuleFormError as e:
        multi = {k: [str(v) for v in form.getlist(k)] for k in form}
        rows = [{p: (multi.get(f"cond-{i}-{p}") or [""])[0] for p in ("group", "field", "op", "value", "name")}
                for i in range(rule_form.ROWS)]
        return await _queue_page(ctx, queue_id, status_code=422, rule_error=str(e), rule_rows=rows, rule_meta=meta)
    if form.get("action") == "preview":
        try:
            result = await preview(ctx.api, queue_id, rule)
        except ApiCallError as e:
            return await _queue_page(ctx, queue_id, rule_error=f"Preview failed: {e.describe()}", rule_rows=rows,
                                     rule_meta=meta)
        result["summary"] = rule_form.describe(rule["groups"])
        return await _queue_page(ctx, queue_id, preview_result=result, rule_rows=rows, rule_meta=meta)
    try:
        await ctx.api.create_rule(queue_id, rule)
    except ApiCallError as e:
        return await _queue_page(ctx, queue_id, status_code=422, rule_error=e.describe(), rule_rows=rows,
                                 rule_meta=meta)
    flash(ctx.request, "Rule added: matching traces are routed into the queue as they arrive.", "ok")
    return redirect(f"/setup/queues/{queue_id}")


@router.post("/setup/queues/{queue_id}/rules/{rule_id}/active")
async def toggle_rule(ctx: CtxDep, queue_id: str, rule_id: str) -> Response:
    ctx.require("configure")
    form = await ctx.request.form()
    try:
        await ctx.api.update_rule(queue_id, rule_id, {"active": form.get("active") == "1"})
        flash(ctx.request, "Rule resumed." if form.get("active") == "1" else "Rule paused.", "ok")
    except ApiCallError as e:
        flash(ctx.request, e.describe(), "error")
    return redirect(f"/setup/queues/{queue_id}")


DECISION_OUTCOMES = ("added", "duplicate", "previously_removed", "sampled_out", "cap_reached")


@router.get("/setup/queues/{queue_id}/rules/{rule_id}", response_class=HTMLResponse)
async def rule_log(ctx: CtxDep, queue_id: str, rule_id: str, page_no: int = 1, outcome: str = "") -> Response:
    """A rule's decision log: every object it matched and what it decided (added, duplicate, previously removed,
    sampled out, cap reached), newest first, a page at a time."""
    ctx.require("configure")
    queue, rules = await asyncio.gather(ctx.api.get_queue(queue_id), ctx.api.list_rules(queue_id))
    rule = next((r for r in rules if r.get("id") == rule_id), None)
    if queue is None or rule is None:
        raise Forbidden("No such rule in this project.")
    rule["summary"] = rule_form.describe(rule.get("groups") or [])
    chosen = outcome if outcome in DECISION_OUTCOMES else None
    page_no = max(1, page_no)
    log = await ctx.api.rule_decisions(queue_id, rule_id, page=page_no, outcome=chosen)
    meta = log.get("meta") or {}
    return page(ctx, ctx.request, "rule_log.html", queue=queue, rule=rule, decisions=log.get("data") or [],
                page_no=page_no, total=int(meta.get("total_items") or 0),
                pages=max(1, int(meta.get("total_pages") or 1)), outcome=chosen or "", outcomes=DECISION_OUTCOMES)
