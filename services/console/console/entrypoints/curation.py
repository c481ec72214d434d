"""Curating from reviews: "add to dataset" on a reviewed queue item (human labels become test sets), and comments
on traces and observations. Both are stored by scoring; the console owns nothing."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.responses import Response

from console.adapters.port import ApiCallError
from console.entrypoints.security import verify_csrf
from console.entrypoints.web import Ctx, Forbidden, flash, get_ctx, redirect

router = APIRouter(dependencies=[Depends(verify_csrf)])
CtxDep = Annotated[Ctx, Depends(get_ctx)]

MAX_COMMENT = 5000
_ITEM_NS = uuid.UUID("6f1b8f2e-2a44-4f5e-9d7e-3c1c0d7a9b10")


def _score_value(score: dict[str, Any]) -> Any:
    if score.get("string_values"):
        return score["string_values"]
    if score.get("string_value") is not None:
        return score["string_value"]
    return score.get("value")


def review_labels(scores: list[dict[str, Any]], configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The reviewer's scores on the item, by config name: what the dataset item keeps as its labels."""
    out: dict[str, Any] = {}
    for s in scores:
        name = (configs.get(s.get("config_id") or "") or {}).get("name") or s.get("name")
        if name:
            out[str(name)] = _score_value(s)
    return out


@router.post("/queues/{queue_id}/items/{item_id}/add-to-dataset")
async def add_to_dataset(
    ctx: CtxDep, queue_id: str, item_id: str,
    dataset: Annotated[str, Form(min_length=1, max_length=200)],
    expected_output: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    """Creates (or, added again, updates) one dataset item from the trace: its input, the corrected output the
    reviewer typed (else the trace's output) as expected output, and the reviewer's scores and comment."""
    ctx.require("review")
    back = f"/queues/{queue_id}/items/{item_id}"
    queue = await ctx.api.get_queue(queue_id)
    item = await ctx.api.get_item(queue_id, item_id)
    if queue is None or item is None:
        raise Forbidden("This item is not in the queue (any more).")
    trace_id = item.get("trace_id") or (item.get("object_id") if item.get("object_type") == "TRACE" else None)
    if not trace_id:
        flash(ctx.request, "Only traces and observations can become dataset items.", "error")
        return redirect(back)
    trace = await ctx.api.get_trace(trace_id)
    if trace is None:
        flash(ctx.request, "The trace is not in the read model yet; try again in a moment.", "error")
        return redirect(back)
    mine = await ctx.api.list_scores({"trace_id": trace_id, "author_user_id": ctx.user.id})
    mine = [s for s in mine if s.get("queue_item_id") in (None, item_id)]
    configs = {c["id"]: c for c in await ctx.api.list_configs(include_archived=True)}
    observation_id = item.get("object_id") if item.get("object_type") == "OBSERVATION" else None
    source = next((o for o in trace.get("observations") or [] if o.get("id") == observation_id), trace)
    comment = next((s.get("comment") for s in mine if s.get("comment")), None)
    name = dataset.strip()
    body = {
        # The same reviewed item added to the same dataset again updates its dataset item.
        "id": str(uuid.uuid5(_ITEM_NS, f"{name}\n{queue_id}\n{item_id}\n{ctx.user.id}")),
        "datasetName": name, "input": source.get("input"),
        "expectedOutput": expected_output if expected_output.strip() else source.get("output"),
        "metadata": {"source": "review", "queue_id": queue_id, "queue_item_id": item_id,
                     "reviewer": ctx.user.id, "scores": review_labels(mine, configs), "comment": comment},
        "sourceTraceId": trace_id, "sourceObservationId": observation_id,
    }
    try:
        if ctx.can_configure:
            await ctx.api.create_dataset(name)  # creating an existing dataset returns it
        await ctx.api.upsert_dataset_item(body)
    except ApiCallError as e:
        hint = " (ask an admin or member to create the dataset)" if e.status == 404 else ""
        flash(ctx.request, f"Could not add to the dataset: {e.describe()}{hint}", "error")
        return redirect(back)
    flash(ctx.request, f"Added to dataset {name!r}.", "ok")
    return redirect(back)


@router.post("/traces/{trace_id}/comments")
async def comment_on_trace(
    ctx: CtxDep, trace_id: str,
    content: Annotated[str, Form(max_length=MAX_COMMENT)],
    observation_id: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    ctx.require("review")
    back = f"/traces/{trace_id}" + (f"?observation={observation_id}" if observation_id else "") + "#comments"
    if not content.strip():
        flash(ctx.request, "A comment cannot be empty.", "error")
        return redirect(back)
    kind, object_id = ("OBSERVATION", observation_id) if observation_id else ("TRACE", trace_id)
    try:
        await ctx.api.create_comment(kind, object_id, content)
    except ApiCallError as e:
        flash(ctx.request, f"Could not save the comment: {e.describe()}", "error")
        return redirect(back)
    flash(ctx.request, "Comment added.", "ok")
    return redirect(back)
