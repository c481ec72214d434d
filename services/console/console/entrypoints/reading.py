"""Reading: score dashboards, experiment comparison, reviewer agreement and judge calibration. Every figure comes
from the projections API; this module only picks what to ask for and shapes it into charts."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from console.adapters.port import ApiCallError
from console.domain import charts
from console.entrypoints.security import verify_csrf
from console.entrypoints.web import Ctx, get_ctx, page

router = APIRouter(dependencies=[Depends(verify_csrf)])
CtxDep = Annotated[Ctx, Depends(get_ctx)]

SOURCES = ("", "ANNOTATION", "EVAL", "API")


def _q(ctx: Ctx, *keys: str) -> dict[str, str]:
    return {k: ctx.request.query_params.get(k, "").strip()[:200] for k in keys}


def _bucket_label(b: Any, unit: str) -> str:
    s = str(b).replace("T", " ")
    return s[:13] + "h" if unit == "hour" else s[:10]


def dashboard_charts(series: list[dict[str, Any]], unit: str) -> list[dict[str, Any]]:
    """One card per score name: the trend of its mean per source, its distribution, and the mean with its CI."""
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in series:
        by_name[str(s.get("name"))].append(s)
    cards = []
    for name, group in sorted(by_name.items()):
        lines = [(f"{(s.get('source') or '').lower()}", [(_bucket_label(p.get("bucket"), unit), p.get("mean"))
                                                        for p in s.get("buckets") or []]) for s in group]
        dist_series = max(group, key=lambda s: s.get("count") or 0)
        dist = dist_series.get("distribution") or {}
        if dist.get("type") == "categories":
            bars = [(str(k), float(v)) for k, v in (dist.get("counts") or {}).items()]
        else:
            bars = [(_edge(b), float(b.get("count") or 0)) for b in dist.get("bins") or []]
        ci_rows = [(f"{(s.get('source') or '').lower()} (n={s.get('count')})", s.get("mean"), s.get("ci_low"),
                    s.get("ci_high"), i) for i, s in enumerate(group)]
        cards.append({
            "name": name, "series": group,
            "trend": charts.line_chart(lines, title=f"{name}: mean per {unit}"),
            "distribution": charts.bar_chart(bars, title=f"{name}: distribution ({dist_series.get('source', '')})"),
            "ci": charts.interval_chart(ci_rows, title=f"{name}: mean with 95% CI"),
        })
    return cards


def _edge(b: dict[str, Any]) -> str:
    lo, hi = b.get("lower"), b.get("upper")
    if lo == hi:
        return f"{lo:g}" if isinstance(lo, int | float) else str(lo)
    return f"{lo:.3g}-{hi:.3g}" if isinstance(lo, int | float) and isinstance(hi, int | float) else f"{lo}-{hi}"


@router.get("/dashboards", response_class=HTMLResponse)
async def dashboards(ctx: CtxDep) -> Response:
    f = _q(ctx, "name", "source", "bucket", "from", "to", "trace_name", "tags", "environment", "release", "user_id")
    unit = f["bucket"] if f["bucket"] in ("hour", "day") else "day"
    params: dict[str, Any] = {
        "name": f["name"] or None, "source": f["source"] if f["source"] in SOURCES[1:] else None, "bucket": unit,
        "from_timestamp": f["from"] or None, "to_timestamp": f["to"] or None, "trace_name": f["trace_name"] or None,
        "tags": [t.strip() for t in f["tags"].split(",") if t.strip()] or None,
        "environment": f["environment"] or None, "release": f["release"] or None, "user_id": f["user_id"] or None,
    }
    error = None
    try:
        data, configs = await asyncio.gather(ctx.api.score_analytics(params), ctx.api.list_configs())
    except ApiCallError as e:
        data, configs, error = {}, [], e.describe()
    cards = dashboard_charts(list(data.get("series") or []), unit)
    return page(ctx, ctx.request, "dashboards.html", f=f, unit=unit, cards=cards, configs=configs,
                sources=SOURCES, error=error, served_from=data.get("served_from"))


@router.get("/experiments", response_class=HTMLResponse)
async def experiments(ctx: CtxDep) -> Response:
    runs_param = [r for r in ctx.request.query_params.getlist("run") if r][:8]
    win_score = ctx.request.query_params.get("win_score", "").strip() or None
    error = None
    comparison: dict[str, Any] = {}
    try:
        runs = await ctx.api.list_experiments()
        if runs_param:
            comparison = await ctx.api.compare_experiment({"runs": ",".join(runs_param), "win_score": win_score})
    except ApiCallError as e:
        runs, error = [], e.describe()
    cards = []
    for agg in comparison.get("aggregates") or []:
        rows = []
        for i, run in enumerate(comparison.get("runs") or []):
            cell = (agg.get("runs") or {}).get(run) or {}
            for kind in ("human", "automated"):
                k = cell.get(kind) or {}
                if k.get("n"):
                    rows.append((f"{run} · {kind}", k.get("mean"), k.get("ci_low"), k.get("ci_high"), i))
        cards.append({"name": agg.get("name"), "agg": agg,
                      "chart": charts.interval_chart(rows, title=f"{agg.get('name')}: runs side by side")})
    score_names = sorted({s["name"] for r in runs for s in r.get("score_names") or [] if s.get("kind") == "human"})
    return page(ctx, ctx.request, "experiments.html", runs=runs, chosen=runs_param, comparison=comparison,
                cards=cards, error=error, win_score=win_score, score_names=score_names,
                items=(comparison.get("items") or [])[:300])


@router.get("/agreement", response_class=HTMLResponse)
async def agreement(ctx: CtxDep) -> Response:
    f = _q(ctx, "queue_id", "config_id")
    queues, configs = await asyncio.gather(ctx.api.list_queues(), ctx.api.list_configs(include_archived=True))
    queue = next((q for q in queues if q["id"] == f["queue_id"]), None)
    if queue is None and queues:
        multi = [q for q in queues if (q.get("reviewers_per_item") or 1) > 1]
        queue = (multi or queues)[0]
    queue_configs = [c for c in configs if queue and c["id"] in
                     [r["config_id"] for r in queue.get("score_configs") or []]]
    config = next((c for c in queue_configs if c["id"] == f["config_id"]), queue_configs[0] if queue_configs else None)
    data: dict[str, Any] = {}
    error = None
    if queue and config:
        try:
            data = await ctx.api.agreement(queue["id"], config["id"])
        except ApiCallError as e:
            error = e.describe()
    pairs = data.get("pairs") or []
    people = await ctx.people()

    def who(uid: Any) -> str:
        return people.get(str(uid), str(uid))[:14]

    pair_chart = charts.bar_chart(
        [(f"{who(p.get('reviewer_a'))} / {who(p.get('reviewer_b'))}", float(p.get("kappa") or 0)) for p in pairs],
        title="Cohen's kappa per pair of reviewers") if pairs else None
    return page(ctx, ctx.request, "agreement.html", queues=queues, queue=queue, configs=queue_configs,
                config=config, data=data, error=error, pair_chart=pair_chart, people=people)


@router.get("/calibration", response_class=HTMLResponse)
async def calibration(ctx: CtxDep) -> Response:
    f = _q(ctx, "config_id", "evaluator", "bucket")
    configs = [c for c in await ctx.api.list_configs() if c.get("data_type") != "TEXT"]
    evaluators: list[str] = []
    try:
        analytics = await ctx.api.score_analytics({"source": "EVAL", "bucket": "day"})
        evaluators = sorted({str(s["name"]) for s in analytics.get("series") or [] if s.get("name")})
    except ApiCallError:
        pass
    config = next((c for c in configs if c["id"] == f["config_id"]), configs[0] if configs else None)
    evaluator = f["evaluator"] or (evaluators[0] if evaluators else "")
    data: dict[str, Any] = {}
    error = None
    if config and evaluator:
        try:
            data = await ctx.api.calibration(config["id"], evaluator,
                                             {"bucket": f["bucket"] if f["bucket"] in ("day", "week") else "day"})
        except ApiCallError as e:
            error = e.describe()
    conf = data.get("confusion") or {}
    matrix = charts.heatmap(conf.get("matrix") or [], conf.get("labels") or [], conf.get("labels") or [],
                            title="confusion matrix", row_title="human", col_title="automated") if conf else None
    trend_points = (data.get("trend") or {}).get("points") or []
    trend = charts.line_chart(
        [("kappa", [(str(p.get("bucket"))[:10], p.get("kappa")) for p in trend_points]),
         ("exact agreement", [(str(p.get("bucket"))[:10], p.get("exact_agreement")) for p in trend_points])],
        title="agreement with humans over time", y_min=0, y_max=1) if trend_points else None
    return page(ctx, ctx.request, "calibration.html", configs=configs, config=config, evaluators=evaluators,
                evaluator=evaluator, data=data, error=error, matrix=matrix, trend=trend, f=f)
