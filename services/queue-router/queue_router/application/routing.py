"""The router: a batch of trace and score events in, trace summaries merged, rules evaluated, items added.

One transaction per batch: the event ids are claimed (exactly-once), summaries and automated scores are read in
bulk, merged in memory, written back in bulk, then every touched trace is checked against its project's compiled
rules. Rules are evaluated on the state after the batch, so a trace that starts to match when its late score
arrives is routed by the batch that carries the score.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Text, bindparam, delete, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from queue_router.adapters.bulk import insert_rows, upsert_suffix
from queue_router.adapters.items_store import NewItem, existing_items, insert_items, record_decisions
from queue_router.adapters.rule_cache import RuleCache, RuleInfo
from queue_router.adapters.tables import rule_daily_counts, trace_scores, trace_summaries
from queue_router.application.deletion import delete_traces, tombstoned, trace_of
from queue_router.domain.filters import ScoreView
from queue_router.domain.sampling import sampled_in
from queue_router.domain.summary import Summary, apply_observation, apply_trace, recompute
from tally_shared.envelope import Envelope, Payload
from tally_shared.events.scores import ScoreData, ScoreDeleted, ScoreRecorded, ScoreSource, ScoreUpdated
from tally_shared.events.traces import TraceDeleted, TraceIngested

CONSUMER = "queue-router"

_SUMMARY_UPSERT = upsert_suffix(
    ["project_id", "trace_id"],
    [c.name for c in trace_summaries.columns if c.name not in ("project_id", "trace_id", "first_seen_at")])
_CLAIM = text(
    "INSERT INTO queue_router.processed_events (consumer, event_id) "
    "SELECT :consumer, unnest(CAST(:ids AS uuid[])) ON CONFLICT DO NOTHING RETURNING event_id")


async def claim_fast(session: AsyncSession, consumer: str, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """``tally_shared.db.claim_events`` with the ids as one array parameter (same table, same semantics)."""
    rows = await session.execute(_CLAIM, {"consumer": consumer, "ids": list(dict.fromkeys(ids))})
    return {r[0] for r in rows}


@dataclass
class RouterDeps:
    sessions: async_sessionmaker[AsyncSession]
    rules: RuleCache
    consumer: str = CONSUMER


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    evaluated: int = 0
    matched: int = 0
    added: list[str] = field(default_factory=list)
    removed: int = 0  # queue items removed because their trace was deleted


def _automated(score: ScoreData) -> bool:
    return score.source != ScoreSource.ANNOTATION and score.trace_id is not None


def summary_from_row(row: Any) -> Summary:
    m = row._mapping
    return Summary(
        project_id=m["project_id"], trace_id=m["trace_id"], has_trace=m["has_trace"], name=m["name"],
        timestamp=m["timestamp"], tags=m["tags"], metadata=m["metadata"], environment=m["environment"],
        release=m["release"], user_id=m["user_id"], session_id=m["session_id"],
        dataset_run_name=m["dataset_run_name"], has_error=m["has_error"], latency=m["latency"],
        total_cost=m["total_cost"], input_tokens=m["input_tokens"], output_tokens=m["output_tokens"],
        total_tokens=m["total_tokens"], observation_types=m["observation_types"] or [],
        observation_names=m["observation_names"] or [], state=m["state"] or {},
    )


def _summary_row(s: Summary, now: datetime) -> dict[str, Any]:
    return {
        "project_id": s.project_id, "trace_id": s.trace_id, "has_trace": s.has_trace, "name": s.name,
        "timestamp": s.timestamp, "tags": s.tags, "metadata": s.metadata, "environment": s.environment,
        "release": s.release, "user_id": s.user_id, "session_id": s.session_id,
        "dataset_run_name": s.dataset_run_name, "has_error": s.has_error, "latency": s.latency,
        "total_cost": s.total_cost, "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
        "total_tokens": s.total_tokens, "observation_types": s.observation_types,
        "observation_names": s.observation_names, "state": s.state, "updated_at": now,
    }


def _score_row(project_id: str, s: ScoreData) -> dict[str, Any]:
    return {"project_id": project_id, "score_id": s.id, "trace_id": s.trace_id, "observation_id": s.observation_id,
            "name": s.name, "source": s.source.value, "evaluator_name": s.evaluator_name,
            "data_type": s.data_type.value, "value": s.value, "string_value": s.string_value,
            "string_values": s.string_values, "timestamp": s.timestamp}


def _by_project(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p, t in keys:
        out.setdefault(p, []).append(t)
    return out


async def load_summaries(session: AsyncSession, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Summary]:
    out: dict[tuple[str, str], Summary] = {}
    for project, ids in _by_project(keys).items():
        rows = (await session.execute(select(trace_summaries).where(
            trace_summaries.c.project_id == project,
            trace_summaries.c.trace_id == func.any(bindparam("ids", ids, type_=ARRAY(Text)))))).all()
        out.update(((r.project_id, r.trace_id), summary_from_row(r)) for r in rows)
    return out


async def load_scores(session: AsyncSession, keys: Sequence[tuple[str, str]]
                      ) -> dict[tuple[str, str], list[ScoreView]]:
    out: dict[tuple[str, str], list[ScoreView]] = {}
    if not keys:
        return out
    rows: list[Any] = []
    for project, ids in _by_project(keys).items():
        rows += (await session.execute(
            select(trace_scores.c.project_id, trace_scores.c.trace_id, trace_scores.c.name, trace_scores.c.source,
                   trace_scores.c.evaluator_name, trace_scores.c.value, trace_scores.c.string_value,
                   trace_scores.c.string_values)
            .where(trace_scores.c.project_id == project,
                   trace_scores.c.trace_id == func.any(bindparam("ids", ids, type_=ARRAY(Text))))
        )).all()
    for r in rows:
        out.setdefault((r.project_id, r.trace_id), []).append(
            ScoreView(r.name, r.source, r.evaluator_name, r.value, r.string_value, r.string_values))
    return out


async def route_batch(events: Sequence[tuple[Envelope, Payload]], deps: RouterDeps) -> BatchResult:
    result = BatchResult()
    async with deps.sessions() as session, session.begin():
        fresh = await claim_fast(session, deps.consumer, [e.id for e, _ in events])
        todo = [(e, p) for e, p in events if e.id in fresh]
        result.duplicates = len(events) - len(todo)
        result.applied = len(todo)
        deletions = [(e, p) for e, p in todo if isinstance(p, TraceDeleted)]
        if deletions:
            result.removed = await delete_traces(session, deletions)
        if todo:
            # Whatever arrives about a deleted trace (in this batch or later) is not routed.
            touched = {(e.project, tid) for e, p in todo if (tid := trace_of(p))}
            gone = await tombstoned(session, touched)
            todo = [(e, p) for e, p in todo
                    if not isinstance(p, TraceDeleted) and (e.project, trace_of(p)) not in gone]
        if todo:
            await _apply(session, todo, deps, result)
    return result


async def _apply(session: AsyncSession, todo: list[tuple[Envelope, Payload]], deps: RouterDeps,
                 result: BatchResult) -> None:
    keys: dict[tuple[str, str], uuid.UUID] = {}  # touched trace -> id of the last event that touched it
    score_upserts: dict[tuple[str, str], dict[str, Any]] = {}
    score_deletes: list[tuple[str, str]] = []
    for env, p in todo:
        if isinstance(p, TraceIngested):
            keys[(env.project, p.trace_id)] = env.id
        elif isinstance(p, ScoreRecorded | ScoreUpdated):
            s = p.score
            if _automated(s):
                assert s.trace_id is not None
                keys[(env.project, s.trace_id)] = env.id
                score_upserts[(env.project, s.id)] = _score_row(env.project, s)
                score_deletes = [d for d in score_deletes if d != (env.project, s.id)]
            else:
                # Became (or is) a human annotation: it no longer counts as an automated score.
                score_upserts.pop((env.project, s.id), None)
                score_deletes.append((env.project, s.id))
                if s.trace_id:
                    keys[(env.project, s.trace_id)] = env.id
        elif isinstance(p, ScoreDeleted):
            score_upserts.pop((env.project, p.score_id), None)
            score_deletes.append((env.project, p.score_id))
            if p.trace_id:
                keys[(env.project, p.trace_id)] = env.id

    if score_deletes:
        gone = (await session.execute(
            delete(trace_scores)
            .where(tuple_(trace_scores.c.project_id, trace_scores.c.score_id).in_(score_deletes))
            .returning(trace_scores.c.project_id, trace_scores.c.trace_id)
        )).all()
        for proj, trace in gone:
            keys.setdefault((proj, trace), todo[-1][0].id)
    if score_upserts:
        await insert_rows(session, trace_scores, list(score_upserts.values()), suffix=upsert_suffix(
            ["project_id", "score_id"], ["trace_id", "observation_id", "name", "source", "evaluator_name",
                                         "data_type", "value", "string_value", "string_values", "timestamp"]))
    if not keys:
        return

    key_list = list(keys)
    summaries = await load_summaries(session, key_list)
    touched_trace: set[tuple[str, str]] = set()
    for env, p in todo:
        if not isinstance(p, TraceIngested):
            continue
        k = (env.project, p.trace_id)
        s = summaries.get(k)
        if s is None:
            s = summaries[k] = Summary(project_id=env.project, trace_id=p.trace_id)
        at = env.occurred_at.timestamp()
        if p.trace is not None:
            apply_trace(s, p.trace, at)
        else:
            s.has_trace = True
        for o in p.observations:
            apply_observation(s, o, at)
        touched_trace.add(k)
    now = datetime.now(UTC)
    for k in touched_trace:
        recompute(summaries[k])
    if touched_trace:
        await insert_rows(session, trace_summaries, [_summary_row(summaries[k], now) for k in touched_trace],
                          suffix=_SUMMARY_UPSERT)

    projects = await deps.rules.get_many(session, {p for p, _ in key_list})
    need_scores = [k for k in key_list if projects[k[0]].uses_scores and k in summaries]
    scores = await load_scores(session, need_scores)
    candidates: list[tuple[RuleInfo, Summary, uuid.UUID]] = []
    for k in key_list:
        s = summaries.get(k)
        pr = projects[k[0]]
        if s is None or not s.has_trace or not pr.rules:
            continue
        result.evaluated += 1
        for i in pr.ruleset.match(s.view(scores.get(k))):
            candidates.append((pr.rules[i], s, keys[k]))
    result.matched = len(candidates)
    if candidates:
        await route_candidates(session, candidates, result)


async def route_candidates(session: AsyncSession, candidates: list[tuple[RuleInfo, Summary, uuid.UUID]],
                           result: BatchResult) -> None:
    # Object of a rule: the trace, or the trace's session for rules targeting sessions.
    targeted: list[tuple[RuleInfo, Summary, uuid.UUID, str, str]] = []
    for rule, s, eid in candidates:
        if rule.target == "SESSION":
            if s.session_id:
                targeted.append((rule, s, eid, "SESSION", s.session_id))
        else:
            targeted.append((rule, s, eid, "TRACE", s.trace_id))
    existing = await existing_items(session, [(r.queue_id, ot, oid) for r, _, _, ot, oid in targeted])
    decisions: list[dict[str, Any]] = []
    wanted: dict[tuple[str, str, str], tuple[RuleInfo, Summary, uuid.UUID, str, str]] = {}
    for rule, s, eid, ot, oid in targeted:
        key = (rule.queue_id, ot, oid)
        status = existing.get(key)
        base = {"project_id": s.project_id, "queue_id": rule.queue_id, "rule_id": rule.id, "object_type": ot,
                "object_id": oid, "item_id": None, "event_id": eid}
        if status == "REMOVED":
            decisions.append({**base, "outcome": "previously_removed",
                              "reason": f"rule {rule.name!r} matched, but the item was removed from the queue "
                                        "before, so no rule adds it again"})
            continue
        if status is not None or key in wanted:
            # Recorded once per rule and object (the log's unique index): "why is this trace not added twice?"
            decisions.append({**base, "outcome": "duplicate",
                              "reason": f"rule {rule.name!r} matched; the object is already in the queue"})
            continue
        if not sampled_in(rule.id, oid, rule.sample_rate):
            decisions.append({**base, "outcome": "sampled_out",
                              "reason": f"rule {rule.name!r} matched; not in its {rule.sample_rate:.4g} sample"})
            continue
        wanted[key] = (rule, s, eid, ot, oid)

    allowed = await _apply_caps(session, list(wanted.values()), decisions)
    new = [NewItem(project_id=s.project_id, queue_id=rule.queue_id, object_type=ot, object_id=oid,
                   trace_id=s.trace_id, reviewers_per_item=rule.reviewers_per_item, rule_id=rule.id,
                   reason=f"rule {rule.name!r} matched" + (
                       f" (sampled at {rule.sample_rate:.4g})" if rule.sample_rate < 1 else ""),
                   added_by=f"rule:{rule.id}", event_id=eid)
           for rule, s, eid, ot, oid in allowed]
    done = await insert_items(session, new)
    result.added.extend(row["id"] for _, row in done)
    await record_decisions(session, decisions)


async def _apply_caps(session: AsyncSession, wanted: list[tuple[RuleInfo, Summary, uuid.UUID, str, str]],
                      decisions: list[dict[str, Any]]) -> list[tuple[RuleInfo, Summary, uuid.UUID, str, str]]:
    capped_rules = {w[0].id: w[0] for w in wanted if w[0].daily_cap is not None}
    if not capped_rules:
        return wanted
    today: date = datetime.now(UTC).date()
    ids = sorted(capped_rules)
    await insert_rows(session, rule_daily_counts, [{"rule_id": r, "day": today, "count": 0} for r in ids],
                      suffix="ON CONFLICT DO NOTHING")
    # The row lock serialises routers (processes) adding under the same rule today.
    counts = dict((await session.execute(
        select(rule_daily_counts.c.rule_id, rule_daily_counts.c.count)
        .where(rule_daily_counts.c.rule_id.in_(ids), rule_daily_counts.c.day == today)
        .order_by(rule_daily_counts.c.rule_id).with_for_update()
    )).all())
    used = dict(counts)
    out = []
    for w in wanted:
        rule, s, eid, ot, oid = w
        if rule.daily_cap is None:
            out.append(w)
            continue
        if used[rule.id] >= rule.daily_cap:
            decisions.append({"project_id": s.project_id, "queue_id": rule.queue_id, "rule_id": rule.id,
                              "object_type": ot, "object_id": oid, "item_id": None, "event_id": eid,
                              "outcome": "cap_reached",
                              "reason": f"rule {rule.name!r} matched; its cap of {rule.daily_cap} items "
                                        f"for {today.isoformat()} is reached"})
            continue
        used[rule.id] += 1
        out.append(w)
    changed = [{"rule_id": rid, "day": today, "count": used[rid]} for rid in ids if used[rid] != counts[rid]]
    if changed:
        # The rows exist and are locked by this transaction: the upsert only ever updates.
        await insert_rows(session, rule_daily_counts, changed,
                          suffix=upsert_suffix(["rule_id", "day"], ["count"]))
    return out
