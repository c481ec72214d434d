"""Datasets, dataset items, experiment runs and their items, and comments: stored here, published as events.

Each change writes its row and its outbox row in one transaction and answers after the broker acknowledged the
event, as scores do (see application/uow.py). Reads come straight from scoring's own tables.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from scoring.adapters.tables import comments, dataset_items, dataset_run_items, dataset_runs, datasets
from scoring.application.deps import Actor, Deps
from scoring.domain.errors import Conflict, Forbidden, Invalid, NotFound
from tally_shared.envelope import Envelope, Payload, make_envelope
from tally_shared.events import (
    CommentCreated,
    CommentData,
    CommentObjectType,
    DatasetCreated,
    DatasetData,
    DatasetItemData,
    DatasetItemDeleted,
    DatasetItemStatus,
    DatasetItemUpserted,
    DatasetRunDeleted,
    DatasetRunItemCreated,
    DatasetRunItemData,
    DatasetUpdated,
    TraceIngested,
)
from tally_shared.events.datasets import MAX_COMMENT_LENGTH, MAX_NAME_LENGTH
from tally_shared.events.ids import MAX_ID_LENGTH
from tally_shared.outbox import Outgoing
from tally_shared.topics import COMMENTS, DATASETS, Topic


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    dataset_id: str
    dataset_name: str
    description: str | None
    metadata: Any
    created_at: Any
    updated_at: Any


def _require_configure(actor: Actor) -> None:
    if not actor.can_configure:
        raise Forbidden("only a project admin or member manages datasets")


def _out(topic: Topic, project_id: str, payload: Payload, key: str) -> Outgoing:
    return Outgoing(topic, make_envelope(payload, project=project_id, key=key), key)


def _check_name(field: str, name: str) -> str:
    name = name.strip() if isinstance(name, str) else name
    if not isinstance(name, str) or not name:
        raise Invalid.one(field, "required", "must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid.one(field, "max_length", f"at most {MAX_NAME_LENGTH} characters")
    return name


def _check_id(field: str, value: str | None) -> str | None:
    if value is not None and (not value or len(value) > MAX_ID_LENGTH):
        raise Invalid.one(field, "id", f"must be 1 to {MAX_ID_LENGTH} characters")
    return value


# ------------------------------------------------------------------ datasets


async def _dataset_by_name(s: AsyncSession, project_id: str, name: str) -> DatasetData | None:
    row = (await s.execute(select(datasets.c.data).where(
        datasets.c.project_id == project_id, datasets.c.name == name))).first()
    return DatasetData.model_validate(row.data) if row else None


async def _dataset_by_id(s: AsyncSession, project_id: str, dataset_id: str) -> DatasetData | None:
    row = (await s.execute(select(datasets.c.data).where(
        datasets.c.project_id == project_id, datasets.c.id == dataset_id))).first()
    return DatasetData.model_validate(row.data) if row else None


async def create_dataset(deps: Deps, actor: Actor, *, name: str, description: str | None = None,
                         metadata: Any = None) -> tuple[DatasetData, bool]:
    """Creates the dataset; for a name that exists, sets the description and metadata given (null leaves them),
    as Langfuse's create does. -> (dataset, created)"""
    _require_configure(actor)
    name = _check_name("name", name)
    now = deps.clock()
    ds = DatasetData(id=str(uuid.uuid4()), name=name, description=description, metadata=metadata,
                     created_at=now, updated_at=now)
    event = _out(DATASETS, actor.project_id, DatasetCreated(dataset=ds), ds.id)
    async with deps.uow() as uow:
        s = uow.session
        inserted = (await s.execute(
            insert(datasets).values(project_id=actor.project_id, id=ds.id, name=name,
                                    data=ds.model_dump(mode="json"), created_at=now)
            .on_conflict_do_nothing().returning(datasets.c.id))).first()
        if inserted is None:
            existing = (await s.execute(select(datasets.c.data).where(
                datasets.c.project_id == actor.project_id, datasets.c.name == name).with_for_update())).first()
            assert existing is not None
            current = DatasetData.model_validate(existing.data)
            changes = {k: v for k, v in (("description", description), ("metadata", metadata)) if v is not None}
            updated = current.model_copy(update=changes)
            if updated == current:
                return current, False
            updated = updated.model_copy(update={"updated_at": now})
            await s.execute(update(datasets).where(datasets.c.project_id == actor.project_id,
                                                   datasets.c.id == current.id)
                            .values(data=updated.model_dump(mode="json")))
            event = _out(DATASETS, actor.project_id, DatasetUpdated(dataset=updated), updated.id)
            uow.emit(event)
            ds = updated
        else:
            uow.emit(event)
        await uow.commit()
    await uow.publish()
    return ds, inserted is not None


async def get_dataset(deps: Deps, actor: Actor, name: str) -> DatasetData:
    async with deps.sessions() as s:
        ds = await _dataset_by_name(s, actor.project_id, name)
    if ds is None:
        raise NotFound("dataset", name)
    return ds


async def list_datasets(deps: Deps, actor: Actor, *, page: int, limit: int) -> tuple[list[DatasetData], int]:
    async with deps.sessions() as s:
        total = (await s.execute(select(func.count()).select_from(datasets).where(
            datasets.c.project_id == actor.project_id))).scalar_one()
        rows = (await s.execute(select(datasets.c.data).where(datasets.c.project_id == actor.project_id)
                                .order_by(datasets.c.created_at.desc(), datasets.c.id)
                                .offset((page - 1) * limit).limit(limit))).all()
    return [DatasetData.model_validate(r.data) for r in rows], total


# ------------------------------------------------------------------ dataset items


async def _item(s: AsyncSession, project_id: str, item_id: str, *, lock: bool = False) -> DatasetItemData | None:
    q = select(dataset_items.c.data).where(dataset_items.c.project_id == project_id, dataset_items.c.id == item_id,
                                           dataset_items.c.deleted_at.is_(None))
    row = (await s.execute(q.with_for_update() if lock else q)).first()
    return DatasetItemData.model_validate(row.data) if row else None


async def upsert_item(deps: Deps, actor: Actor, *, dataset_name: str, item_id: str | None = None,
                      fields: dict[str, Any]) -> DatasetItemData:
    """Creates the item, or (same id) replaces the fields given. ``fields`` holds only what the client sent:
    input, expected_output, metadata, source_trace_id, source_observation_id, status. Reviewers may add items
    (their labels become test sets); creating datasets and deleting stay with admins and members."""
    if not actor.can_review:
        raise Forbidden("viewers do not add dataset items")
    _check_id("id", item_id)
    _check_id("sourceTraceId", fields.get("source_trace_id"))
    _check_id("sourceObservationId", fields.get("source_observation_id"))
    now = deps.clock()
    async with deps.uow() as uow:
        s = uow.session
        ds = await _dataset_by_name(s, actor.project_id, dataset_name)
        if ds is None:
            raise NotFound("dataset", dataset_name)
        item_id = item_id or str(uuid.uuid4())
        current = await _item(s, actor.project_id, item_id, lock=True)
        if current is not None and current.dataset_id != ds.id:
            raise Conflict("item_in_other_dataset",
                           f"dataset item {item_id!r} belongs to dataset {current.dataset_name!r}")
        base = current.model_dump() if current else {
            "id": item_id, "dataset_id": ds.id, "dataset_name": ds.name, "status": DatasetItemStatus.ACTIVE,
            "created_at": now}
        base.update({k: v for k, v in fields.items() if not (k == "status" and v is None)})
        base["updated_at"] = now
        item = DatasetItemData.model_validate(base)
        if current is not None and item.model_dump(exclude={"updated_at"}) == current.model_dump(
                exclude={"updated_at"}):
            return current
        values = {"dataset_id": ds.id, "status": item.status.value, "source_trace_id": item.source_trace_id,
                  "source_observation_id": item.source_observation_id, "data": item.model_dump(mode="json"),
                  "deleted_at": None}
        await s.execute(insert(dataset_items).values(project_id=actor.project_id, id=item_id,
                                                     created_at=item.created_at, **values)
                        .on_conflict_do_update(index_elements=["project_id", "id"], set_=values))
        event = _out(DATASETS, actor.project_id, DatasetItemUpserted(item=item), ds.id)
        uow.emit(event)
        await uow.commit()
    await uow.publish()
    return item


async def get_item(deps: Deps, actor: Actor, item_id: str) -> DatasetItemData:
    async with deps.sessions() as s:
        item = await _item(s, actor.project_id, item_id)
    if item is None:
        raise NotFound("dataset item", item_id)
    return item


async def list_items(deps: Deps, actor: Actor, *, dataset_name: str | None, source_trace_id: str | None,
                     source_observation_id: str | None, page: int, limit: int) -> tuple[list[DatasetItemData], int]:
    t = dataset_items
    conds = [t.c.project_id == actor.project_id, t.c.deleted_at.is_(None)]
    async with deps.sessions() as s:
        if dataset_name is not None:
            ds = await _dataset_by_name(s, actor.project_id, dataset_name)
            if ds is None:
                raise NotFound("dataset", dataset_name)
            conds.append(t.c.dataset_id == ds.id)
        if source_trace_id is not None:
            conds.append(t.c.source_trace_id == source_trace_id)
        if source_observation_id is not None:
            conds.append(t.c.source_observation_id == source_observation_id)
        total = (await s.execute(select(func.count()).select_from(t).where(*conds))).scalar_one()
        rows = (await s.execute(select(t.c.data).where(*conds).order_by(t.c.created_at.desc(), t.c.id)
                                .offset((page - 1) * limit).limit(limit))).all()
    return [DatasetItemData.model_validate(r.data) for r in rows], total


async def delete_item(deps: Deps, actor: Actor, item_id: str) -> None:
    _require_configure(actor)
    async with deps.uow() as uow:
        s = uow.session
        item = await _item(s, actor.project_id, item_id, lock=True)
        if item is None:
            raise NotFound("dataset item", item_id)
        await s.execute(update(dataset_items).where(dataset_items.c.project_id == actor.project_id,
                                                    dataset_items.c.id == item_id).values(deleted_at=deps.clock()))
        event = _out(DATASETS, actor.project_id, DatasetItemDeleted(item_id=item_id, dataset_id=item.dataset_id),
                     item.dataset_id)
        uow.emit(event)
        await uow.commit()
    await uow.publish()


# ------------------------------------------------------------------ runs and run items


def _run(row: Any, dataset_name: str) -> Run:
    return Run(id=row.id, name=row.name, dataset_id=row.dataset_id, dataset_name=dataset_name,
               description=row.description, metadata=row.metadata, created_at=row.created_at,
               updated_at=row.updated_at)


async def create_run_item(deps: Deps, actor: Actor, *, run_name: str, dataset_item_id: str,
                          trace_id: str | None, observation_id: str | None, run_description: str | None = None,
                          metadata: Any = None) -> DatasetRunItemData:
    """Links a trace (or one observation of it) to a dataset item in the named run, creating the run."""
    if not actor.can_review:
        raise Forbidden("viewers record no experiment runs")
    run_name = _check_name("runName", run_name)
    _check_id("traceId", trace_id)
    _check_id("observationId", observation_id)
    if trace_id is None:
        raise Invalid.one("traceId", "required", "a run item links a trace (observationId alone is not enough)")
    now = deps.clock()
    async with deps.uow() as uow:
        s = uow.session
        item = await _item(s, actor.project_id, dataset_item_id)
        if item is None:
            raise NotFound("dataset item", dataset_item_id)
        values = {"project_id": actor.project_id, "id": str(uuid.uuid4()), "dataset_id": item.dataset_id,
                  "name": run_name, "description": run_description, "metadata": metadata, "created_at": now,
                  "updated_at": now}
        await s.execute(insert(dataset_runs).values(**values).on_conflict_do_nothing())
        run_id = (await s.execute(select(dataset_runs.c.id).where(
            dataset_runs.c.project_id == actor.project_id, dataset_runs.c.dataset_id == item.dataset_id,
            dataset_runs.c.name == run_name))).scalar_one()
        ri = DatasetRunItemData(id=str(uuid.uuid4()), run_id=run_id, run_name=run_name, dataset_id=item.dataset_id,
                                dataset_name=item.dataset_name, dataset_item_id=item.id, trace_id=trace_id,
                                observation_id=observation_id, created_at=now)
        await s.execute(insert(dataset_run_items).values(project_id=actor.project_id, id=ri.id, run_id=run_id,
                                                         data=ri.model_dump(mode="json"), created_at=now))
        event = _out(DATASETS, actor.project_id, DatasetRunItemCreated(run_item=ri), trace_id)
        uow.emit(event)
        await uow.commit()
    await uow.publish()
    return ri


async def list_runs(deps: Deps, actor: Actor, dataset_name: str, *, page: int, limit: int
                    ) -> tuple[list[Run], int]:
    async with deps.sessions() as s:
        ds = await _dataset_by_name(s, actor.project_id, dataset_name)
        if ds is None:
            raise NotFound("dataset", dataset_name)
        conds = [dataset_runs.c.project_id == actor.project_id, dataset_runs.c.dataset_id == ds.id]
        total = (await s.execute(select(func.count()).select_from(dataset_runs).where(*conds))).scalar_one()
        rows = (await s.execute(select(dataset_runs).where(*conds)
                                .order_by(dataset_runs.c.created_at.desc(), dataset_runs.c.id)
                                .offset((page - 1) * limit).limit(limit))).all()
    return [_run(r, ds.name) for r in rows], total


async def _run_by_name(s: AsyncSession, actor: Actor, dataset_name: str, run_name: str) -> Run:
    ds = await _dataset_by_name(s, actor.project_id, dataset_name)
    if ds is None:
        raise NotFound("dataset", dataset_name)
    row = (await s.execute(select(dataset_runs).where(
        dataset_runs.c.project_id == actor.project_id, dataset_runs.c.dataset_id == ds.id,
        dataset_runs.c.name == run_name))).first()
    if row is None:
        raise NotFound("dataset run", run_name)
    return _run(row, ds.name)


async def _run_items(s: AsyncSession, project_id: str, run_id: str, *, page: int = 1, limit: int = 10_000
                     ) -> tuple[list[DatasetRunItemData], int]:
    conds = [dataset_run_items.c.project_id == project_id, dataset_run_items.c.run_id == run_id]
    total = (await s.execute(select(func.count()).select_from(dataset_run_items).where(*conds))).scalar_one()
    rows = (await s.execute(select(dataset_run_items.c.data).where(*conds)
                            .order_by(dataset_run_items.c.created_at, dataset_run_items.c.id)
                            .offset((page - 1) * limit).limit(limit))).all()
    return [DatasetRunItemData.model_validate(r.data) for r in rows], total


async def get_run(deps: Deps, actor: Actor, dataset_name: str, run_name: str
                  ) -> tuple[Run, list[DatasetRunItemData]]:
    async with deps.sessions() as s:
        run = await _run_by_name(s, actor, dataset_name, run_name)
        items, _ = await _run_items(s, actor.project_id, run.id)
    return run, items


async def delete_run(deps: Deps, actor: Actor, dataset_name: str, run_name: str) -> None:
    _require_configure(actor)
    async with deps.uow() as uow:
        s = uow.session
        run = await _run_by_name(s, actor, dataset_name, run_name)
        await s.execute(dataset_run_items.delete().where(dataset_run_items.c.project_id == actor.project_id,
                                                         dataset_run_items.c.run_id == run.id))
        await s.execute(dataset_runs.delete().where(dataset_runs.c.project_id == actor.project_id,
                                                    dataset_runs.c.id == run.id))
        event = _out(DATASETS, actor.project_id,
                     DatasetRunDeleted(run_id=run.id, run_name=run.name, dataset_id=run.dataset_id), run.dataset_id)
        uow.emit(event)
        await uow.commit()
    await uow.publish()


async def list_run_items(deps: Deps, actor: Actor, *, dataset_id: str, run_name: str, page: int, limit: int
                         ) -> tuple[list[DatasetRunItemData], int]:
    async with deps.sessions() as s:
        ds = await _dataset_by_id(s, actor.project_id, dataset_id)
        if ds is None:
            raise NotFound("dataset", dataset_id)
        run = await _run_by_name(s, actor, ds.name, run_name)
        return await _run_items(s, actor.project_id, run.id, page=page, limit=limit)


# ------------------------------------------------------------------ comments


async def create_comment(deps: Deps, actor: Actor, *, object_type: str, object_id: str, content: str,
                         author_user_id: str | None) -> CommentData:
    if not actor.can_review:
        raise Forbidden("viewers do not comment")
    try:
        kind = CommentObjectType(object_type)
    except ValueError:
        raise Invalid.one("objectType", "enum", "one of TRACE, OBSERVATION, SESSION, PROMPT") from None
    _check_id("objectId", object_id)
    if not object_id:
        raise Invalid.one("objectId", "required", "must be a non-empty string")
    if not content or not content.strip():
        raise Invalid.one("content", "required", "must not be empty")
    if len(content) > MAX_COMMENT_LENGTH:
        raise Invalid.one("content", "max_length", f"at most {MAX_COMMENT_LENGTH} characters")
    # A signed-in person always comments as themselves; a project key names the author it acts for.
    author = actor.user_id or _check_id("authorUserId", author_user_id)
    now = deps.clock()
    c = CommentData(id=str(uuid.uuid4()), object_type=kind, object_id=object_id, content=content,
                    author_user_id=author, created_at=now)
    event = _out(COMMENTS, actor.project_id, CommentCreated(comment=c), object_id)
    async with deps.uow() as uow:
        s = uow.session
        await s.execute(insert(comments).values(project_id=actor.project_id, id=c.id, object_type=kind.value,
                                                object_id=object_id, author_user_id=author,
                                                data=c.model_dump(mode="json"), created_at=now))
        uow.emit(event)
        await uow.commit()
    await uow.publish()
    return c


async def get_comment(deps: Deps, actor: Actor, comment_id: str) -> CommentData:
    async with deps.sessions() as s:
        row = (await s.execute(select(comments.c.data).where(comments.c.project_id == actor.project_id,
                                                             comments.c.id == comment_id))).first()
    if row is None:
        raise NotFound("comment", comment_id)
    return CommentData.model_validate(row.data)


async def list_comments(deps: Deps, actor: Actor, *, object_type: str | None, object_id: str | None,
                        author_user_id: str | None, page: int, limit: int) -> tuple[list[CommentData], int]:
    t = comments
    conds = [t.c.project_id == actor.project_id]
    if object_type is not None:
        conds.append(t.c.object_type == object_type)
    if object_id is not None:
        conds.append(t.c.object_id == object_id)
    if author_user_id is not None:
        conds.append(t.c.author_user_id == author_user_id)
    async with deps.sessions() as s:
        total = (await s.execute(select(func.count()).select_from(t).where(*conds))).scalar_one()
        rows = (await s.execute(select(t.c.data).where(*conds).order_by(t.c.created_at, t.c.id)
                                .offset((page - 1) * limit).limit(limit))).all()
    return [CommentData.model_validate(r.data) for r in rows], total


# ------------------------------------------------------------------ runs made by the SDK's run_experiment

_RUN_ITEM_NS = uuid.UUID("0b6f3c52-7d1e-4c36-9a43-8f0c2d5e1a77")


async def record_run_from_trace(deps: Deps, env: Envelope, event: TraceIngested) -> bool:
    """A trace that ran a dataset item in a named run (the SDK's ``run_experiment`` puts run name, item id and
    dataset id on its spans) becomes a run item of that run, as if recorded through ``dataset-run-items``.
    Idempotent: the run item's id derives from run, trace and item, so a redelivery or a second span of the same
    trace adds nothing. Items of no dataset here (local data) are not runs of a dataset. -> whether it applied."""
    trace = event.trace
    if trace is None or not trace.dataset_run_name or not trace.dataset_item_id:
        return False
    run_name = trace.dataset_run_name[:MAX_NAME_LENGTH]
    async with deps.sessions() as s, s.begin():
        item = await _item(s, env.project, trace.dataset_item_id)
        if item is None or (trace.dataset_id is not None and trace.dataset_id != item.dataset_id):
            return False
        await s.execute(insert(dataset_runs).values(
            project_id=env.project, id=str(uuid.uuid4()), dataset_id=item.dataset_id, name=run_name,
            created_at=env.occurred_at, updated_at=env.occurred_at).on_conflict_do_nothing())
        run_id = (await s.execute(select(dataset_runs.c.id).where(
            dataset_runs.c.project_id == env.project, dataset_runs.c.dataset_id == item.dataset_id,
            dataset_runs.c.name == run_name))).scalar_one()
        ri = DatasetRunItemData(
            id=str(uuid.uuid5(_RUN_ITEM_NS, f"{run_id}\n{event.trace_id}\n{item.id}")), run_id=run_id,
            run_name=run_name, dataset_id=item.dataset_id, dataset_name=item.dataset_name, dataset_item_id=item.id,
            trace_id=event.trace_id, created_at=env.occurred_at)
        await s.execute(insert(dataset_run_items).values(project_id=env.project, id=ri.id, run_id=run_id,
                                                         data=ri.model_dump(mode="json"), created_at=ri.created_at)
                        .on_conflict_do_nothing())
    return True
