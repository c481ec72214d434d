"""The stores: every read and write of queues, rules, items, decisions and trace summaries, in the unit of work's
transaction. They speak rows (dicts) and domain values; the application decides what to do with them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Text, and_, column, delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from queue_router.adapters.items_store import (
    EXISTING,
    NewItem,
    added_events,
    existing_items,
    existing_of,
    existing_params,
    insert_items,
)
from queue_router.adapters.rule_cache import bump_version
from queue_router.adapters.tables import (
    deleted_traces,
    item_slots,
    items,
    processed_events,
    queues,
    reviews,
    routing_decisions,
    rule_daily_counts,
    rules,
    trace_scores,
    trace_summaries,
)
from queue_router.domain.filters import ScoreView
from queue_router.domain.summary import Summary, pack_state, recompute, upgrade_state
from tally_shared.bulk import insert_rows, qualified, upsert
from tally_shared.envelope import Envelope

# ---------------------------------------------------------------------------------------------------------------
# Queues and rules


class QueueStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, project_id: str, queue_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        stmt = select(queues).where(queues.c.id == queue_id, queues.c.project_id == project_id)
        row = (await self.session.execute(stmt.with_for_update() if lock else stmt)).first()
        return dict(row._mapping) if row is not None else None

    async def name_taken(self, project_id: str, name: str) -> bool:
        return (await self.session.execute(select(queues.c.id).where(
            queues.c.project_id == project_id, queues.c.name == name))).first() is not None

    async def add(self, row: dict[str, Any]) -> None:
        await self.session.execute(queues.insert().values(**row))

    async def update(self, queue_id: str, changes: dict[str, Any]) -> None:
        await self.session.execute(update(queues).where(queues.c.id == queue_id).values(**changes))

    async def page(self, project_id: str, *, include_archived: bool, page: int, limit: int
                   ) -> tuple[list[dict[str, Any]], int]:
        cond = [queues.c.project_id == project_id]
        if not include_archived:
            cond.append(queues.c.is_archived.is_(False))
        total = (await self.session.execute(select(func.count()).select_from(queues).where(*cond))).scalar_one()
        rows = (await self.session.execute(select(queues).where(*cond).order_by(queues.c.created_at, queues.c.id)
                                           .offset((page - 1) * limit).limit(limit))).all()
        return [dict(r._mapping) for r in rows], int(total)

    async def rules_changed(self, project_id: str) -> None:
        """Routers recompile the project's rules at their next batch."""
        await bump_version(self.session, project_id)


class RuleStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: dict[str, Any]) -> None:
        await self.session.execute(rules.insert().values(**row))

    async def live(self, project_id: str, queue_id: str, rule_id: str, *, lock: bool = False
                   ) -> dict[str, Any] | None:
        stmt = select(rules).where(rules.c.id == rule_id, rules.c.queue_id == queue_id,
                                   rules.c.project_id == project_id, rules.c.is_deleted.is_(False))
        row = (await self.session.execute(stmt.with_for_update() if lock else stmt)).first()
        return dict(row._mapping) if row is not None else None

    async def exists(self, project_id: str, queue_id: str, rule_id: str) -> bool:
        """Deleted rules included: their decision log outlives them."""
        return (await self.session.execute(select(rules.c.id).where(
            rules.c.id == rule_id, rules.c.queue_id == queue_id, rules.c.project_id == project_id))
        ).first() is not None

    async def update(self, rule_id: str, changes: dict[str, Any]) -> None:
        await self.session.execute(update(rules).where(rules.c.id == rule_id).values(**changes))

    async def of_queue(self, project_id: str, queue_id: str) -> list[dict[str, Any]]:
        rows = (await self.session.execute(
            select(rules).where(rules.c.queue_id == queue_id, rules.c.project_id == project_id,
                                rules.c.is_deleted.is_(False))
            .order_by(rules.c.created_at, rules.c.id))).all()
        return [dict(r._mapping) for r in rows]

    async def added_since(self, queue_id: str, rule_ids: Sequence[str], since: datetime) -> dict[str, int]:
        """Items each rule added since ``since``, capped or not (capped rules also keep a daily counter, which
        serialises their routers; uncapped rules are counted from the items themselves)."""
        if not rule_ids:
            return {}
        return dict((await self.session.execute(
            select(items.c.rule_id, func.count()).where(
                items.c.queue_id == queue_id, items.c.rule_id.in_(list(rule_ids)),
                items.c.created_at >= since).group_by(items.c.rule_id))).all())

    async def lock_daily_counts(self, rule_ids: Sequence[str], day: date) -> dict[str, int]:
        """Today's counter of each capped rule, created at 0 where missing and locked for the transaction (the
        no-op update takes the row lock; rows in rule id order), in one statement: the lock serialises routers
        (processes) adding under the same rule today."""
        rows = await insert_rows(self.session, rule_daily_counts,
                                 [{"rule_id": r, "day": day, "count": 0} for r in sorted(rule_ids)],
                                 conflict=("rule_id", "day"), update='"count" = t."count"',
                                 returning="rule_id, count")
        return {r: int(n) for r, n in rows.all()}


# ---------------------------------------------------------------------------------------------------------------
# Items

# Unexpired leases on an item's slots (another reviewer still holding one keeps it IN_PROGRESS).
LIVE_LEASES = (
    select(func.count()).select_from(item_slots)
    .where(item_slots.c.item_id == items.c.id, item_slots.c.state == "leased",
           item_slots.c.lease_expires_at > func.now())
    .correlate(items).scalar_subquery()
)


class BadStatus(ValueError):
    """A status filter the item list does not know."""


def _reviewer_status_filter(my: Any, st: str) -> list[Any]:
    if "," in st:
        wanted = [x.strip().lower() for x in st.split(",") if x.strip()]
        if not set(wanted) <= {"in_progress", "completed", "skipped", "flagged"}:
            raise BadStatus(st)
        return [my.in_(wanted)]
    if st == "PENDING":
        return [items.c.status == "PENDING", or_(my.is_(None), my.in_(["released", "expired"]))]
    if st in ("IN_PROGRESS", "COMPLETED", "SKIPPED", "FLAGGED"):
        return [my == st.lower()]
    raise BadStatus(st)


def _status_filter(st: str, langfuse_pending: bool) -> list[Any]:
    if st in ("COMPLETED", "REMOVED"):
        return [items.c.status == st]
    if st == "PENDING" and langfuse_pending:
        return [items.c.status == "PENDING"]
    if st == "PENDING":
        return [items.c.status == "PENDING", items.c.completions == 0, LIVE_LEASES == 0]
    if st == "IN_PROGRESS":
        return [items.c.status == "PENDING", or_(items.c.completions > 0, LIVE_LEASES > 0)]
    raise BadStatus(st)


class ItemStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def existing(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
        return await existing_items(self.session, keys)

    async def add(self, new: Sequence[NewItem], decisions: Sequence[dict[str, Any]] = (),
                  counts: tuple[date, dict[str, int]] | None = None
                  ) -> tuple[list[tuple[NewItem, dict[str, Any]]], list[Envelope]]:
        """Adds the items not in their queue yet: (request, row) of each added, and their QueueItemAdded events.
        ``decisions`` that added nothing are recorded with theirs, and ``counts`` (rules' daily counters locked by
        ``RuleStore.lock_daily_counts``: day, rule id -> count) set, in the same statement."""
        done = await insert_items(self.session, new, decisions, counts)
        return done, added_events(done)

    async def get(self, project_id: str, queue_id: str, item_id: str, *, lock: bool = False
                  ) -> dict[str, Any] | None:
        stmt = select(items).where(items.c.id == item_id, items.c.queue_id == queue_id,
                                   items.c.project_id == project_id)
        row = (await self.session.execute(stmt.with_for_update() if lock else stmt)).first()
        return dict(row._mapping) if row is not None else None

    async def get_with_leases(self, project_id: str, queue_id: str, item_id: str) -> tuple[dict[str, Any], int] | None:
        row = (await self.session.execute(select(items, LIVE_LEASES.label("live")).where(
            items.c.id == item_id, items.c.queue_id == queue_id, items.c.project_id == project_id))).first()
        return (dict(row._mapping), row.live) if row is not None else None

    async def live_leases(self, item_id: str) -> int:
        return int((await self.session.execute(select(func.count()).select_from(item_slots).where(
            item_slots.c.item_id == item_id, item_slots.c.state == "leased",
            item_slots.c.lease_expires_at > func.now()))).scalar_one())

    async def page(self, project_id: str, queue_id: str, *, status: str | None, reviewer: str | None, page: int,
                   limit: int, langfuse_pending: bool = False, object_ref: tuple[str, str] | None = None
                   ) -> tuple[list[Any], int]:
        """Items in queue order with their live leases; with ``reviewer`` also that reviewer's own review of each
        (one row at most: its key is item and reviewer) as ``my_*``, and ``status`` is the reviewer's own."""
        cond: list[Any] = [items.c.queue_id == queue_id, items.c.project_id == project_id]
        if object_ref is not None:
            cond += [items.c.object_type == object_ref[0], items.c.object_id == object_ref[1]]
        st = status.upper() if status else None
        mine = reviews.alias("mine") if reviewer is not None else None
        if mine is not None and st is not None:
            cond += _reviewer_status_filter(mine.c.status, st)
        elif st is not None:
            cond += _status_filter(st, langfuse_pending)
        else:
            cond.append(items.c.status != "REMOVED")
        cols: list[Any] = [items, LIVE_LEASES.label("live")]
        source: Any = items
        if mine is not None:
            source = items.outerjoin(mine, and_(mine.c.item_id == items.c.id, mine.c.reviewer == reviewer))
            cols += [mine.c.status.label("my_status"), mine.c.reason.label("my_reason"),
                     mine.c.updated_at.label("my_updated_at"), mine.c.completed_at.label("my_completed_at")]
        total = (await self.session.execute(select(func.count()).select_from(source).where(*cond))).scalar_one()
        rows = (await self.session.execute(select(*cols).select_from(source).where(*cond)
                                           .order_by(items.c.created_at, items.c.id)
                                           .offset((page - 1) * limit).limit(limit))).all()
        return list(rows), int(total)

    async def reviews_of(self, item_id: str) -> list[Any]:
        return list((await self.session.execute(select(reviews).where(reviews.c.item_id == item_id)
                                                .order_by(reviews.c.started_at))).all())

    async def slots_of(self, item_id: str) -> list[Any]:
        return list((await self.session.execute(select(item_slots).where(item_slots.c.item_id == item_id)
                                                .order_by(item_slots.c.slot_no))).all())

    async def remove(self, item_id: str, actor: str, now: datetime) -> None:
        """The row stays as a tombstone: rules check it and never add the object again."""
        await self.session.execute(update(items).where(items.c.id == item_id).values(
            status="REMOVED", removed_at=now, removed_by=actor, updated_at=now))
        await self.session.execute(delete(item_slots).where(item_slots.c.item_id == item_id))
        await self.release_reviews(item_id, now)

    async def release_reviews(self, item_id: str, now: datetime) -> None:
        await self.session.execute(update(reviews).where(reviews.c.item_id == item_id,
                                                         reviews.c.status == "in_progress")
                                   .values(status="released", updated_at=now))

    async def close_open_slots(self, item_id: str) -> None:
        await self.session.execute(delete(item_slots).where(item_slots.c.item_id == item_id,
                                                            item_slots.c.state != "done"))

    async def count_slots(self, item_id: str) -> int:
        return int((await self.session.execute(select(func.count()).select_from(item_slots).where(
            item_slots.c.item_id == item_id))).scalar_one())

    async def add_slots(self, item: dict[str, Any], first: int, n: int) -> None:
        await self.session.execute(item_slots.insert(), [
            {"item_id": item["id"], "slot_no": first + i, "queue_id": item["queue_id"], "state": "open",
             "assignees": item["assignees"], "item_created_at": item["created_at"]} for i in range(n)])

    async def update(self, item_id: str, changes: dict[str, Any]) -> None:
        await self.session.execute(update(items).where(items.c.id == item_id).values(**changes))

    async def remove_pending_of_traces(self, pairs: Sequence[tuple[str, str]], removed_by: str, now: datetime
                                       ) -> list[dict[str, Any]]:
        return await remove_pending_of_traces(self.session, pairs, removed_by, now)


# ---------------------------------------------------------------------------------------------------------------
# Routing decisions


class DecisionStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, cond: list[Any], *, page: int, limit: int) -> tuple[list[Any], int]:
        """Newest first, each with its rule's name (deleted rules keep their log)."""
        total = (await self.session.execute(select(func.count()).select_from(routing_decisions).where(*cond))
                 ).scalar_one()
        rows = (await self.session.execute(
            select(routing_decisions, rules.c.name.label("rule_name"))
            .outerjoin(rules, rules.c.id == routing_decisions.c.rule_id).where(*cond)
            .order_by(routing_decisions.c.id.desc()).offset((page - 1) * limit).limit(limit))).all()
        return list(rows), int(total)

    async def of_rule(self, project_id: str, queue_id: str, rule_id: str, outcome: str | None, *, page: int,
                      limit: int) -> tuple[list[Any], int]:
        cond = [routing_decisions.c.project_id == project_id, routing_decisions.c.queue_id == queue_id,
                routing_decisions.c.rule_id == rule_id]
        if outcome is not None:
            cond.append(routing_decisions.c.outcome == outcome)
        return await self.page(cond, page=page, limit=limit)

    async def of_objects(self, project_id: str, objects: Sequence[tuple[str, str]], *, page: int, limit: int
                         ) -> tuple[list[Any], int]:
        cond = [routing_decisions.c.project_id == project_id,
                or_(*[and_(routing_decisions.c.object_type == ot, routing_decisions.c.object_id == oid)
                      for ot, oid in objects])]
        return await self.page(cond, page=page, limit=limit)

    async def of_item(self, queue_id: str, object_type: str, object_id: str) -> list[Any]:
        return list((await self.session.execute(
            select(routing_decisions, rules.c.name.label("rule_name"))
            .outerjoin(rules, rules.c.id == routing_decisions.c.rule_id)
            .where(routing_decisions.c.queue_id == queue_id, routing_decisions.c.object_type == object_type,
                   routing_decisions.c.object_id == object_id)
            .order_by(routing_decisions.c.id))).all())


# ---------------------------------------------------------------------------------------------------------------
# Trace summaries and automated scores (what rules evaluate)

def _texts(values: Sequence[Any]) -> str:
    """A batch's values of one column as one JSON array parameter, unpacked by ``_each``: asyncpg encodes a list
    parameter element by element (~1 µs a text, ~2 a timestamp), orjson all of them in a few. Times are written
    with their offset (naive ones as UTC, as asyncpg takes them)."""
    return orjson.dumps(values, option=orjson.OPT_NAIVE_UTC).decode()


def _each(param: str) -> str:
    """The elements of the ``_texts`` parameter ``param`` as text, in order (JSON null as NULL)."""
    return f"json_array_elements_text(CAST(:{param} AS json))"


_SUMMARY_READ = ("project_id", "trace_id", "has_trace", "timestamp", "doc")
_SCORES_JSON = ("(SELECT json_agg(json_build_array(c.name, c.source, c.evaluator_name, c.value, c.string_value, "
                "c.string_values)) FROM queue_router.trace_scores c "
                "WHERE c.project_id = k.p AND c.trace_id = k.t)")
# One statement reads what evaluating a batch needs: each touched trace's summary, and its automated scores
# where its project has rules on scores. LATERAL with LIMIT 1 (the key is the primary key: at most one row
# anyway): one index probe per key. Without the LIMIT the planner flattens the subquery into a join, and before
# the table has statistics (or while it is small) hashes the whole table for every batch: its cost then grew
# with the table, to several times the rest of the batch's statements.
# Only keys with a summary or scores come back: most of a batch's traces are new, and a row of NULLs for each
# would cost decoding for nothing. The keys come as JSON arrays (``_texts``).
_LOAD = text(
    "SELECT * FROM ("  # noqa: S608 (names from metadata)
    "SELECT k.p AS key_project, k.t AS key_trace, s.project_id, s.trace_id, s.has_trace, s.timestamp, s.doc, "
    f"CASE WHEN k.p = ANY(CAST(:score_projects AS text[])) THEN {_SCORES_JSON} END AS scores "
    f"FROM ROWS FROM ({_each('projects')}, {_each('traces')}) AS k(p, t) "
    "LEFT JOIN LATERAL (SELECT * FROM queue_router.trace_summaries x "
    "                   WHERE x.project_id = k.p AND x.trace_id = k.t LIMIT 1) s ON true"
    ") q WHERE q.trace_id IS NOT NULL OR q.scores IS NOT NULL"
).columns(column("key_project", Text), column("key_trace", Text),
          *(column(c.name, c.type) for c in trace_summaries.columns if c.name in _SUMMARY_READ),
          column("scores", JSON))
# Before a batch is applied, in one round trip: its event ids claimed (as ``tally_shared.claims`` claims them: a
# redelivered event finds its id there; a concurrent duplicate waits on the key), the tombstones among its traces,
# and its projects' rule versions. The ids that were claimed before come back (kind 'x'), not the ones claimed
# now: usually none, rather than a row per event.
_CLAIM_TOMBSTONES_AND_VERSIONS = text(
    f"WITH i AS (SELECT CAST(x AS uuid) AS id FROM {_each('ids')} AS x), "  # noqa: S608 (names from metadata)
    f"c AS (INSERT INTO {qualified(processed_events)} (consumer, event_id) "
    "SELECT :consumer, id FROM i ON CONFLICT DO NOTHING RETURNING event_id) "
    "SELECT 'x' AS kind, NULL AS project_id, NULL AS trace_id, NULL::bigint AS version, d.id AS event_id "
    "FROM (SELECT id FROM i EXCEPT SELECT event_id FROM c) AS d(id) "
    "UNION ALL "
    "SELECT 'd', project_id, trace_id, NULL, NULL FROM queue_router.deleted_traces "
    "WHERE project_id = ANY(CAST(:projects AS text[])) "
    f"AND trace_id = ANY(ARRAY(SELECT {_each('traces')})) "
    "UNION ALL "
    "SELECT 'v', project_id, NULL, version, NULL FROM queue_router.rule_versions "
    "WHERE project_id = ANY(CAST(:projects AS text[]))")

def _float(v: Any) -> float | None:
    # Written as doubles; JSON may spell a whole one as an integer (rows converted by the migration do).
    return v if v is None or type(v) is float else float(v)


def summary_from_row(m: Any) -> Summary:
    d = orjson.loads(m["doc"])
    if "has_error" not in d:  # aggregates are not stored: computed from the state
        s = Summary(project_id=m["project_id"], trace_id=m["trace_id"], has_trace=m["has_trace"], name=d.get("name"),
                    timestamp=m["timestamp"], tags=d.get("tags"), metadata=d.get("metadata"),
                    environment=d.get("environment"), release=d.get("release"), user_id=d.get("user_id"),
                    session_id=d.get("session_id"), dataset_run_name=d.get("dataset_run_name"),
                    state=upgrade_state(d.get("state") or {}))
        recompute(s)
        return s
    # a row converted from the typed columns (migration 0004) keeps the aggregates it was stored with
    return Summary(
        project_id=m["project_id"], trace_id=m["trace_id"], has_trace=m["has_trace"], name=d.get("name"),
        timestamp=m["timestamp"], tags=d.get("tags"), metadata=d.get("metadata"), environment=d.get("environment"),
        release=d.get("release"), user_id=d.get("user_id"), session_id=d.get("session_id"),
        dataset_run_name=d.get("dataset_run_name"), has_error=bool(d.get("has_error")),
        latency=_float(d.get("latency")), total_cost=_float(d.get("total_cost")),
        input_tokens=_float(d.get("input_tokens")), output_tokens=_float(d.get("output_tokens")),
        total_tokens=_float(d.get("total_tokens")), observation_types=d.get("observation_types") or [],
        observation_names=d.get("observation_names") or [], state=upgrade_state(d.get("state") or {}),
    )


def _doc(s: Summary) -> bytes:
    """The trace fields and the merge state; the aggregates (error, latency, cost, tokens, observation types and
    names) are computed from the state when read (``recompute``), as every merge does anyway: a third fewer
    bytes to send and store."""
    return orjson.dumps({
        "name": s.name, "tags": s.tags, "metadata": s.metadata, "environment": s.environment, "release": s.release,
        "user_id": s.user_id, "session_id": s.session_id, "dataset_run_name": s.dataset_run_name,
        "state": pack_state(s.state),
    })


def _summary_row(s: Summary, now: datetime) -> dict[str, Any]:
    return {"project_id": s.project_id, "trace_id": s.trace_id, "has_trace": s.has_trace, "timestamp": s.timestamp,
            "doc": _doc(s), "updated_at": now}


# The routing write: every merged summary of a batch in one statement. The columns come as JSON arrays
# (``_texts``), the documents as one bytea, all of them end to end, cut by their lengths: the server stores each
# ``doc`` as it comes, with nothing to parse, and the client sends one buffer instead of encoding an array element
# per summary (asyncpg spent ~2 µs on each bytea or timestamp element, ~1 on each text).
_SAVE_SQL = (
    f"INSERT INTO {qualified(trace_summaries)} AS t "  # noqa: S608 (names from metadata)
    "(project_id, trace_id, has_trace, timestamp, doc, updated_at) "
    "SELECT u.p, u.t, CAST(u.h AS boolean), CAST(u.ts AS timestamptz), "
    "substring(CAST(:d AS bytea) FROM CAST(u.o AS integer) + 1 FOR CAST(u.n AS integer)), "
    "CAST(:now AS timestamptz) "
    f"FROM ROWS FROM ({_each('p')}, {_each('t')}, {_each('h')}, {_each('ts')}, {_each('o')}, {_each('n')}) "
    "AS u(p, t, h, ts, o, n) "
    "ON CONFLICT (project_id, trace_id) DO UPDATE SET has_trace = EXCLUDED.has_trace, "
    "timestamp = EXCLUDED.timestamp, doc = EXCLUDED.doc, updated_at = EXCLUDED.updated_at")
_SAVE = text(_SAVE_SQL)
# The write and the routing's next read (which of the batch's candidates are in their queue already) are
# independent: one round trip.
_SAVE_AND_EXISTING = text(f"WITH saved AS ({_SAVE_SQL}) {EXISTING.text}")


def _save_params(summaries: Sequence[Summary], now: datetime, docs: Sequence[bytes] | None) -> dict[str, Any]:
    if docs is None:
        docs = [_doc(s) for s in summaries]
    offsets: list[int] = []
    at = 0
    for d in docs:
        offsets.append(at)
        at += len(d)
    return {"p": _texts([s.project_id for s in summaries]), "t": _texts([s.trace_id for s in summaries]),
            "h": _texts([s.has_trace for s in summaries]), "ts": _texts([s.timestamp for s in summaries]),
            "o": _texts(offsets), "n": _texts([len(d) for d in docs]), "d": b"".join(docs), "now": now}



def _score_views(data: list[list[Any]]) -> list[ScoreView]:
    return [ScoreView(*x) for x in data]


def _by_project(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p, t in keys:
        out.setdefault(p, []).append(t)
    return out


class SummaryStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def encode(s: Summary) -> bytes:
        """``s`` as ``save`` stores it: encoded ahead by a caller that has the time while a statement runs."""
        return _doc(s)

    async def claim_tombstones_and_versions(self, consumer: str, ids: Sequence[uuid.UUID],
                                            keys: Sequence[tuple[str, str]]
                                            ) -> tuple[set[uuid.UUID], set[tuple[str, str]], dict[str, int]]:
        """Claims ``ids`` for ``consumer`` (see ``UnitOfWork.claim``); returns (the ids claimed before: usually
        none, the deleted traces among ``keys``, the rule version of each of their projects that has one)."""
        unique = list(dict.fromkeys(ids))
        if not unique:
            return set(), set(), {}
        wanted = set(keys)
        rows = (await self.session.execute(_CLAIM_TOMBSTONES_AND_VERSIONS, {
            "consumer": consumer, "ids": _texts(unique),
            "projects": sorted({p for p, _ in wanted}), "traces": _texts(sorted({t for _, t in wanted}))})).all()
        seen = {e for kind, _, _, _, e in rows if kind == "x"}
        gone = {(p, t) for kind, p, t, _, _ in rows if kind == "d" and (p, t) in wanted}
        return seen, gone, {p: int(v) for kind, p, _, v, _ in rows if kind == "v"}

    async def load(self, keys: Sequence[tuple[str, str]], score_projects: Sequence[str]
                   ) -> tuple[dict[tuple[str, str], Summary], dict[tuple[str, str], list[ScoreView]]]:
        """Summaries of the traces that have one, and automated scores of those in ``score_projects``."""
        if not keys:
            return {}, {}
        rows = (await self.session.execute(_LOAD, {
            "projects": _texts([k[0] for k in keys]), "traces": _texts([k[1] for k in keys]),
            "score_projects": list(score_projects)})).mappings().all()
        summaries: dict[tuple[str, str], Summary] = {}
        scores: dict[tuple[str, str], list[ScoreView]] = {}
        for m in rows:
            k = (m["key_project"], m["key_trace"])
            if m["trace_id"] is not None:
                summaries[k] = summary_from_row(m)
            if m["scores"] is not None:
                scores[k] = _score_views(m["scores"])
        return summaries, scores

    async def save(self, summaries: Sequence[Summary], now: datetime,
                   existing: Sequence[tuple[str, str, str]] = (), docs: Sequence[bytes] | None = None
                   ) -> dict[tuple[str, str, str], str]:
        """Writes the summaries (``docs``: their ``encode``, when the caller has it already); returns
        ``ItemStore.existing(existing)``, read in the same statement."""
        wanted = set(existing)
        if not summaries:
            return await existing_items(self.session, existing) if wanted else {}
        params = _save_params(summaries, now, docs)
        if not wanted:
            await self.session.execute(_SAVE, params)
            return {}
        rows = (await self.session.execute(_SAVE_AND_EXISTING, {**params, **existing_params(existing)})).all()
        return existing_of(rows, wanted)

    async def save_scores(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await upsert(self.session, trace_scores, rows)

    async def delete_scores(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Deletes (project, score id) pairs; returns the (project, trace) of each score deleted."""
        if not keys:
            return []
        rows = (await self.session.execute(
            delete(trace_scores)
            .where(tuple_(trace_scores.c.project_id, trace_scores.c.score_id).in_(list(keys)))
            .returning(trace_scores.c.project_id, trace_scores.c.trace_id))).all()
        return [(r[0], r[1]) for r in rows]

    async def scores(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[ScoreView]]:
        out: dict[tuple[str, str], list[ScoreView]] = {}
        for project, ids in _by_project(keys).items():
            rows = (await self.session.execute(
                select(trace_scores.c.trace_id, trace_scores.c.name, trace_scores.c.source,
                       trace_scores.c.evaluator_name, trace_scores.c.value, trace_scores.c.string_value,
                       trace_scores.c.string_values)
                .where(trace_scores.c.project_id == project, trace_scores.c.trace_id.in_(ids)))).all()
            for r in rows:
                out.setdefault((project, r.trace_id), []).append(
                    ScoreView(r.name, r.source, r.evaluator_name, r.value, r.string_value, r.string_values))
        return out

    async def forget(self, pairs: Sequence[tuple[str, str]], now: datetime) -> None:
        await forget_traces(self.session, pairs, now)

    async def get(self, project_id: str, trace_id: str) -> Summary | None:
        row = (await self.session.execute(select(trace_summaries).where(
            trace_summaries.c.project_id == project_id, trace_summaries.c.trace_id == trace_id))).first()
        return summary_from_row(row._mapping) if row is not None else None

    async def scan(self, project_id: str, since: datetime, until: datetime | None,
                   after: tuple[datetime, str] | None, limit: int) -> tuple[list[Summary], tuple[datetime, str] | None]:
        """One page of the project's traces seen in [since, until), in (timestamp or first sighting, id) order
        after ``after``; returns the page and the cursor of its last row."""
        when = func.coalesce(trace_summaries.c.timestamp, trace_summaries.c.first_seen_at)
        cond: list[Any] = [trace_summaries.c.project_id == project_id, trace_summaries.c.has_trace.is_(True),
                           when >= since]
        if until is not None:
            cond.append(when < until)
        if after is not None:
            cond.append(func.row(when, trace_summaries.c.trace_id) > func.row(*after))
        rows = (await self.session.execute(select(trace_summaries, when.label("w")).where(*cond)
                                           .order_by(when, trace_summaries.c.trace_id).limit(limit))).all()
        if not rows:
            return [], after
        return [summary_from_row(r._mapping) for r in rows], (rows[-1].w, rows[-1].trace_id)


# ---------------------------------------------------------------------------------------------------------------
# Trace deletion


async def forget_traces(session: AsyncSession, pairs: Sequence[tuple[str, str]], now: datetime) -> None:
    """Tombstones for the (project, trace) pairs, and what routing kept about them dropped."""
    await session.execute(pg_insert(deleted_traces).values(
        [{"project_id": pid, "trace_id": tid, "deleted_at": now} for pid, tid in pairs]).on_conflict_do_nothing())
    await session.execute(delete(trace_summaries).where(
        tuple_(trace_summaries.c.project_id, trace_summaries.c.trace_id).in_(list(pairs))))
    await session.execute(delete(trace_scores).where(
        tuple_(trace_scores.c.project_id, trace_scores.c.trace_id).in_(list(pairs))))


async def remove_pending_of_traces(session: AsyncSession, pairs: Sequence[tuple[str, str]], removed_by: str,
                                   now: datetime) -> list[dict[str, Any]]:
    """The pending items about the traces (their own, or whose trace they are) become REMOVED; returns them."""
    pending = [dict(r) for r in (await session.execute(
        select(items).where(
            items.c.status == "PENDING",
            or_(tuple_(items.c.project_id, items.c.trace_id).in_(list(pairs)),
                and_(items.c.object_type == "TRACE", tuple_(items.c.project_id, items.c.object_id).in_(list(pairs)))))
        .order_by(items.c.id).with_for_update())).mappings().all()]
    if not pending:
        return []
    ids = [r["id"] for r in pending]
    await session.execute(update(items).where(items.c.id.in_(ids)).values(
        status="REMOVED", removed_at=now, removed_by=removed_by, updated_at=now))
    await session.execute(delete(item_slots).where(item_slots.c.item_id.in_(ids)))
    await session.execute(update(reviews).where(reviews.c.item_id.in_(ids), reviews.c.status == "in_progress")
                          .values(status="released", updated_at=now))
    return pending
