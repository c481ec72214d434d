"""Langfuse-compatible datasets, dataset items, dataset runs and run items, and comments (shapes of Langfuse's
public API; the langfuse 5.x SDK's ``create_dataset``, ``create_dataset_item``, ``get_dataset`` and
``api.comments``)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from scoring.application import datasets as app
from scoring.application.datasets import Run
from scoring.entrypoints.common import TYPED, actor_of, deps_of, domain_errors, int_param, iso
from tally_shared.contracts import Created, Message
from tally_shared.contracts.scoring import (
    LfComment,
    LfCommentCreate,
    LfCommentPage,
    LfDataset,
    LfDatasetCreate,
    LfDatasetItem,
    LfDatasetItemCreate,
    LfDatasetItemPage,
    LfDatasetPage,
    LfDatasetRunItem,
    LfDatasetRunItemCreate,
    LfDatasetRunItemPage,
    LfDatasetRunPage,
    LfDatasetRunWithItems,
)
from tally_shared.events import CommentData, DatasetData, DatasetItemData, DatasetRunItemData
from tally_shared.identity import CurrentPrincipal

router = APIRouter(tags=["langfuse-compatible"])

_ITEM_ALIASES = {"expected_output": "expectedOutput", "source_trace_id": "sourceTraceId",
                 "source_observation_id": "sourceObservationId", "dataset_name": "datasetName"}


def _meta(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "totalItems": total, "totalPages": math.ceil(total / limit) if limit else 0}


def _paging(request: Request) -> tuple[int, int]:
    return int_param(request, "page", 1, 1, 1_000_000), int_param(request, "limit", 50, 1, 100)


def dataset_out(ds: DatasetData, project_id: str) -> dict[str, Any]:
    return {"id": ds.id, "name": ds.name, "description": ds.description, "metadata": ds.metadata,
            "inputSchema": None, "expectedOutputSchema": None, "projectId": project_id,
            "createdAt": iso(ds.created_at), "updatedAt": iso(ds.updated_at)}


def item_out(item: DatasetItemData) -> dict[str, Any]:
    return {"id": item.id, "status": item.status.value, "input": item.input, "expectedOutput": item.expected_output,
            "metadata": item.metadata, "sourceTraceId": item.source_trace_id,
            "sourceObservationId": item.source_observation_id, "datasetId": item.dataset_id,
            "datasetName": item.dataset_name, "createdAt": iso(item.created_at), "updatedAt": iso(item.updated_at),
            "version": iso(item.updated_at), "mediaReferences": []}


def run_out(run: Run) -> dict[str, Any]:
    return {"id": run.id, "name": run.name, "description": run.description, "metadata": run.metadata,
            "datasetId": run.dataset_id, "datasetName": run.dataset_name, "createdAt": iso(run.created_at),
            "updatedAt": iso(run.updated_at)}


def run_item_out(ri: DatasetRunItemData) -> dict[str, Any]:
    return {"id": ri.id, "datasetRunId": ri.run_id, "datasetRunName": ri.run_name,
            "datasetItemId": ri.dataset_item_id, "traceId": ri.trace_id, "observationId": ri.observation_id,
            "createdAt": iso(ri.created_at), "updatedAt": iso(ri.created_at)}


def comment_out(c: CommentData, project_id: str) -> dict[str, Any]:
    return {"id": c.id, "projectId": project_id, "objectType": c.object_type.value, "objectId": c.object_id,
            "content": c.content, "authorUserId": c.author_user_id, "createdAt": iso(c.created_at),
            "updatedAt": iso(c.created_at)}


# ------------------------------------------------------------------ datasets


@router.post("/api/public/v2/datasets", response_model=LfDataset)
@router.post("/api/public/datasets", response_model=LfDataset)
async def create_dataset(body: LfDatasetCreate, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    async with domain_errors():
        ds, _ = await app.create_dataset(deps_of(request), actor_of(principal), name=body.name,
                                         description=body.description, metadata=body.metadata)
    return JSONResponse(dataset_out(ds, principal.project_id))


@router.get("/api/public/v2/datasets", response_model=LfDatasetPage, **TYPED)
@router.get("/api/public/datasets", response_model=LfDatasetPage, **TYPED)
async def list_datasets(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    page, limit = _paging(request)
    async with domain_errors():
        rows, total = await app.list_datasets(deps_of(request), actor_of(principal), page=page, limit=limit)
    return {"data": [dataset_out(d, principal.project_id) for d in rows], "meta": _meta(page, limit, total)}


@router.get("/api/public/v2/datasets/{dataset_name}", response_model=LfDataset, **TYPED)
@router.get("/api/public/datasets/{dataset_name}", response_model=LfDataset, **TYPED)
async def get_dataset(dataset_name: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        ds = await app.get_dataset(deps_of(request), actor_of(principal), dataset_name)
    return dataset_out(ds, principal.project_id)


# ------------------------------------------------------------------ dataset items


@router.post("/api/public/dataset-items", response_model=LfDatasetItem, **TYPED)
async def create_dataset_item(body: LfDatasetItemCreate, request: Request,
                              principal: CurrentPrincipal) -> dict[str, Any]:
    # As Langfuse: null means "leave as is" on an upsert (the SDK sends every field, null when not given).
    fields = {k: getattr(body, k) for k in body.model_fields_set
              if k not in ("dataset_name", "id") and getattr(body, k) is not None}
    async with domain_errors(_ITEM_ALIASES):
        item = await app.upsert_item(deps_of(request), actor_of(principal), dataset_name=body.dataset_name,
                                     item_id=body.id, fields=fields)
    return item_out(item)


@router.get("/api/public/dataset-items", response_model=LfDatasetItemPage, **TYPED)
async def list_dataset_items(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    page, limit = _paging(request)
    q = request.query_params
    async with domain_errors():
        rows, total = await app.list_items(
            deps_of(request), actor_of(principal), dataset_name=q.get("datasetName"),
            source_trace_id=q.get("sourceTraceId"), source_observation_id=q.get("sourceObservationId"),
            page=page, limit=limit)
    return {"data": [item_out(i) for i in rows], "meta": _meta(page, limit, total)}


@router.get("/api/public/dataset-items/{item_id}", response_model=LfDatasetItem, **TYPED)
async def get_dataset_item(item_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        item = await app.get_item(deps_of(request), actor_of(principal), item_id)
    return item_out(item)


@router.delete("/api/public/dataset-items/{item_id}", response_model=Message, **TYPED)
async def delete_dataset_item(item_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        await app.delete_item(deps_of(request), actor_of(principal), item_id)
    return {"message": "Dataset item successfully deleted"}


# ------------------------------------------------------------------ runs and run items


@router.post("/api/public/dataset-run-items", response_model=LfDatasetRunItem, **TYPED)
async def create_run_item(body: LfDatasetRunItemCreate, request: Request,
                          principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        ri = await app.create_run_item(deps_of(request), actor_of(principal), run_name=body.run_name,
                                       dataset_item_id=body.dataset_item_id, trace_id=body.trace_id,
                                       observation_id=body.observation_id, run_description=body.run_description,
                                       metadata=body.metadata)
    return run_item_out(ri)


@router.get("/api/public/dataset-run-items", response_model=LfDatasetRunItemPage, **TYPED)
async def list_run_items(request: Request, principal: CurrentPrincipal, datasetId: str,
                         runName: str) -> dict[str, Any]:
    page, limit = _paging(request)
    async with domain_errors():
        rows, total = await app.list_run_items(deps_of(request), actor_of(principal), dataset_id=datasetId,
                                               run_name=runName, page=page, limit=limit)
    return {"data": [run_item_out(r) for r in rows], "meta": _meta(page, limit, total)}


@router.get("/api/public/datasets/{dataset_name}/runs", response_model=LfDatasetRunPage, **TYPED)
async def list_runs(dataset_name: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    page, limit = _paging(request)
    async with domain_errors():
        rows, total = await app.list_runs(deps_of(request), actor_of(principal), dataset_name, page=page,
                                          limit=limit)
    return {"data": [run_out(r) for r in rows], "meta": _meta(page, limit, total)}


@router.get("/api/public/datasets/{dataset_name}/runs/{run_name}", response_model=LfDatasetRunWithItems,
            **TYPED)
async def get_run(dataset_name: str, run_name: str, request: Request, principal: CurrentPrincipal
                  ) -> dict[str, Any]:
    async with domain_errors():
        run, items = await app.get_run(deps_of(request), actor_of(principal), dataset_name, run_name)
    return {**run_out(run), "datasetRunItems": [run_item_out(i) for i in items]}


@router.delete("/api/public/datasets/{dataset_name}/runs/{run_name}", response_model=Message, **TYPED)
async def delete_run(dataset_name: str, run_name: str, request: Request, principal: CurrentPrincipal
                     ) -> dict[str, Any]:
    async with domain_errors():
        await app.delete_run(deps_of(request), actor_of(principal), dataset_name, run_name)
    return {"message": "Dataset run successfully deleted"}


# ------------------------------------------------------------------ comments


@router.post("/api/public/comments", response_model=Created)
async def create_comment(body: LfCommentCreate, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    async with domain_errors():
        c = await app.create_comment(deps_of(request), actor_of(principal), object_type=body.object_type,
                                     object_id=body.object_id, content=body.content,
                                     author_user_id=body.author_user_id)
    return JSONResponse({"id": c.id}, status_code=200)


@router.get("/api/public/comments", response_model=LfCommentPage, **TYPED)
async def list_comments(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    page, limit = _paging(request)
    q = request.query_params
    async with domain_errors():
        rows, total = await app.list_comments(deps_of(request), actor_of(principal),
                                              object_type=q.get("objectType"), object_id=q.get("objectId"),
                                              author_user_id=q.get("authorUserId"), page=page, limit=limit)
    return {"data": [comment_out(c, principal.project_id) for c in rows], "meta": _meta(page, limit, total)}


@router.get("/api/public/comments/{comment_id}", response_model=LfComment, **TYPED)
async def get_comment(comment_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        c = await app.get_comment(deps_of(request), actor_of(principal), comment_id)
    return comment_out(c, principal.project_id)


__all__ = ["router"]
