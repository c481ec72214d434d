"""The router: a batch of trace and score events in, trace summaries merged, rules evaluated, items added.

One unit of work per batch, in few round trips: one statement claims the event ids (exactly-once) and reads the
touched traces' tombstones and their projects' rule versions; automated scores are written; the
touched traces' summaries (with their scores, where rules look at scores) are read in one statement and merged in
memory; every touched trace is checked against its project's compiled rules; the summaries are written back in
one statement that also reads which matched objects are in their queue already. Rules
are evaluated on the state after the batch, so a trace that starts to match when its late score arrives is
routed by the batch that carries the score. A project without active rules costs its summaries and nothing more.

The merging, evaluating and encoding of the batch's traces runs while PostgreSQL works on the claim and the read
(``alongside``), drafted as if each trace were new; a trace the read finds stored is merged again onto it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeAlias, cast

from queue_router.adapters.items_store import NewItem
from queue_router.adapters.rule_cache import ProjectRules, RuleCache, RuleInfo
from queue_router.adapters.unit_of_work import UnitOfWork, UnitOfWorkFactory
from queue_router.application.deletion import delete_traces
from queue_router.domain.events import RoutedEnvelope, RoutedTraceIngested, from_payload
from queue_router.domain.filters import ScoreView
from queue_router.domain.sampling import sampled_in
from queue_router.domain.summary import Summary, apply_observation, apply_trace, recompute
from tally_shared.db import alongside
from tally_shared.envelope import Envelope, Payload
from tally_shared.events.scores import ScoreData, ScoreDeleted, ScoreRecorded, ScoreSource, ScoreUpdated
from tally_shared.events.traces import TraceDeleted, TraceIngested

CONSUMER = "queue-router"

TraceEvent: TypeAlias = TraceIngested | RoutedTraceIngested
Key: TypeAlias = tuple[str, str]  # (project, trace id)
# What the subscriber hands over: the router's decoder gives trace events in their lean form.
AnyEnvelope: TypeAlias = Envelope | RoutedEnvelope
Event: TypeAlias = tuple[AnyEnvelope, Payload | RoutedTraceIngested]


@dataclass
class RouterDeps:
    uow: UnitOfWorkFactory
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


@dataclass
class Changes:
    """What a batch says, gathered before anything is read: touched traces, score writes, trace events."""

    keys: dict[Key, uuid.UUID] = field(default_factory=dict)  # touched trace -> last event that touched it
    score_upserts: dict[Key, dict[str, Any]] = field(default_factory=dict)  # (project, score id) -> row
    score_deletes: list[Key] = field(default_factory=list)  # (project, score id)
    # touched traces with an automated score written or deleted by the batch
    scored: set[Key] = field(default_factory=set)
    # the trace events of each touched trace, in batch order
    by_key: dict[Key, list[tuple[AnyEnvelope, RoutedTraceIngested]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """A rule that matched a trace, and the object it would add (the trace, or its session)."""

    rule: RuleInfo
    summary: Summary
    event_id: uuid.UUID
    object_type: str
    object_id: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule.queue_id, self.object_type, self.object_id)


# Checked by exact class: pydantic models are ABCs, and isinstance against them costs a lookup per event.
_TRACES = frozenset((TraceIngested, RoutedTraceIngested))
_SCORES = frozenset((ScoreRecorded, ScoreUpdated))


def trace_of(p: Payload | RoutedTraceIngested) -> str | None:
    cls = type(p)
    if cls in _TRACES or cls is TraceDeleted or cls is ScoreDeleted:
        return cast(TraceEvent | TraceDeleted | ScoreDeleted, p).trace_id
    if cls in _SCORES:
        return cast(ScoreRecorded | ScoreUpdated, p).score.trace_id
    return None


async def route_batch(events: Sequence[Event], deps: RouterDeps) -> BatchResult:
    result = BatchResult()
    async with deps.uow() as uow:
        # The keys of every event (fresh or not: a redelivered event's trace is only looked at in vain).
        keys = list(dict.fromkeys((e.project, t) for e, p in events if (t := trace_of(p))))
        # While the claim runs, the batch is gathered as if every event were new and no trace deleted, and its
        # traces drafted; a batch with duplicates or deletions is gathered again and drafted anew.
        changes = gather(events)
        drafts: dict[Key, Draft] = {}
        drafting = _draft(changes, drafts, deps.rules.cached, uow.summaries.encode)
        seen, gone, versions = await alongside(
            uow.summaries.claim_tombstones_and_versions(deps.consumer, [e.id for e, _ in events], keys), drafting)
        # (a UUID hashes in Python: the usual batch, with no duplicates, is not filtered)
        todo = [(e, p) for e, p in events if e.id not in seen] if seen else list(events)
        result.duplicates = len(events) - len(todo)
        result.applied = len(todo)
        deletions = [(e, p) for e, p in todo if type(p) is TraceDeleted]
        if deletions:
            result.removed = await delete_traces(uow, deletions)
            gone |= {(e.project, p.trace_id) for e, p in deletions}
        # Whatever arrives about a deleted trace (in this batch or later) is not routed.
        todo = [(e, p) for e, p in todo if type(p) is not TraceDeleted and (e.project, trace_of(p)) not in gone]
        if len(todo) != len(events):
            changes = gather(todo)
            drafts.clear()
            drafting = _draft(changes, drafts, deps.rules.cached, uow.summaries.encode)
        if todo:
            await _apply(uow, changes, drafts, drafting, deps, versions, result, todo[-1][0].id)
        await uow.commit()
    return result


# Drafting: the router's computing done while PostgreSQL runs the batch's first statements (the claim, then the
# summaries' read), so that the two overlap instead of adding up. A draft assumes its trace new, as most are.
_DRAFTS_PER_STEP = 24  # between two turns of the event loop, at which a statement's reply is taken in


@dataclass
class Draft:
    """A trace merged from this batch's events alone, evaluated (``rules``: against which; None: not yet) and
    encoded, ahead of the read that says whether it is new. It stands only if the trace has no summary and no
    scores stored; otherwise the trace is merged again onto what was read."""

    summary: Summary
    doc: bytes
    rules: ProjectRules | None
    matches: list[int]


def _merge_into(s: Summary, events: Sequence[tuple[AnyEnvelope, RoutedTraceIngested]]) -> None:
    for env, p in events:
        at = env.occurred_at.timestamp()
        if p.trace is not None:
            apply_trace(s, p.trace, at)
        else:
            s.has_trace = True
        for o in p.observations:
            apply_observation(s, o, at)
    recompute(s)


def _match(pr: ProjectRules, s: Summary, scores: list[ScoreView] | None = None) -> list[int]:
    return pr.ruleset.match(s.view(scores)) if pr.rules and s.has_trace else []


def _draft(changes: Changes, drafts: dict[Key, Draft], rules_of: Callable[[str], ProjectRules | None],
           encode: Callable[[Summary], bytes]) -> Iterator[None]:
    """Drafts of the traces that have trace events in the batch (one touched by scores alone is merged once its
    summary is read), a step every few."""
    n = 0
    for k, events in changes.by_key.items():
        if k in changes.scored:
            continue  # its score, stored first, is read with its summary: merged then
        s = Summary(project_id=k[0], trace_id=k[1])
        _merge_into(s, events)
        pr = rules_of(k[0])
        drafts[k] = Draft(s, encode(s), pr, _match(pr, s) if pr is not None else [])
        n += 1
        if n % _DRAFTS_PER_STEP == 0:
            yield None


async def _apply(uow: UnitOfWork, changes: Changes, drafts: dict[Key, Draft], drafting: Iterator[None],
                 deps: RouterDeps, versions: dict[str, int], result: BatchResult, last_event: uuid.UUID) -> None:
    await _store_scores(uow, changes, last_event)
    if not changes.keys:
        return
    keys = list(changes.keys)
    projects = await deps.rules.resolve(uow.session, {p for p, _ in keys}, versions)
    stored, scores = await alongside(
        uow.summaries.load(keys, [p for p, pr in projects.items() if pr.rules and pr.uses_scores]), drafting)
    merged: list[Summary] = []
    docs: list[bytes] = []
    candidates: list[Candidate] = []
    for k in keys:
        pr = projects[k[0]]
        d = drafts.get(k)
        s: Summary | None
        if d is not None and k not in stored and k not in scores:
            s = d.summary
            merged.append(s)
            docs.append(d.doc)
            matches = d.matches if d.rules is pr else _match(pr, s)
        else:
            # not drafted yet, or not new: merged onto what was read
            s = stored.get(k)
            events = changes.by_key.get(k)
            if events is not None:
                if s is None:
                    s = Summary(project_id=k[0], trace_id=k[1])
                _merge_into(s, events)
                merged.append(s)
                docs.append(uow.summaries.encode(s))
            if s is None:
                continue
            matches = _match(pr, s, scores.get(k))
        if not pr.rules or not s.has_trace:
            continue
        result.evaluated += 1
        for i in matches:
            result.matched += 1
            rule = pr.rules[i]
            if rule.target == "SESSION":
                if s.session_id:
                    candidates.append(Candidate(rule, s, changes.keys[k], "SESSION", s.session_id))
            else:
                candidates.append(Candidate(rule, s, changes.keys[k], "TRACE", s.trace_id))
    existing = await uow.summaries.save(merged, datetime.now(UTC), [c.key for c in candidates], docs)
    if candidates:
        await route_candidates(uow, candidates, existing, result)


def _automated(score: ScoreData) -> bool:
    return score.source != ScoreSource.ANNOTATION and score.trace_id is not None


def _score_row(project_id: str, s: ScoreData) -> dict[str, Any]:
    return {"project_id": project_id, "score_id": s.id, "trace_id": s.trace_id, "observation_id": s.observation_id,
            "name": s.name, "source": s.source.value, "evaluator_name": s.evaluator_name,
            "data_type": s.data_type.value, "value": s.value, "string_value": s.string_value,
            "string_values": s.string_values, "timestamp": s.timestamp}


def gather(todo: Sequence[Event]) -> Changes:
    out = Changes()
    for env, p in todo:
        cls = type(p)
        if cls in _TRACES:
            t = p if cls is RoutedTraceIngested else from_payload(cast(TraceIngested, p))
            k = (env.project, t.trace_id)
            out.keys[k] = env.id
            got = out.by_key.get(k)
            if got is None:
                out.by_key[k] = [(env, cast(RoutedTraceIngested, t))]
            else:
                got.append((env, cast(RoutedTraceIngested, t)))
        elif cls in _SCORES:
            s = cast(ScoreRecorded | ScoreUpdated, p).score
            sk = (env.project, s.id)
            if _automated(s):
                assert s.trace_id is not None
                out.keys[(env.project, s.trace_id)] = env.id
                out.scored.add((env.project, s.trace_id))
                out.score_upserts[sk] = _score_row(env.project, s)
                out.score_deletes = [d for d in out.score_deletes if d != sk]
            else:
                # Became (or is) a human annotation: it no longer counts as an automated score.
                out.score_upserts.pop(sk, None)
                out.score_deletes.append(sk)
                if s.trace_id:
                    out.keys[(env.project, s.trace_id)] = env.id
        elif cls is ScoreDeleted:
            d = cast(ScoreDeleted, p)
            out.score_upserts.pop((env.project, d.score_id), None)
            out.score_deletes.append((env.project, d.score_id))
            if d.trace_id:
                out.keys[(env.project, d.trace_id)] = env.id
    return out


async def _store_scores(uow: UnitOfWork, changes: Changes, last_event: uuid.UUID) -> None:
    for key in await uow.summaries.delete_scores(changes.score_deletes):
        # A deleted score's trace is evaluated again (it may stop matching, or start).
        changes.keys.setdefault(key, last_event)
    await uow.summaries.save_scores(list(changes.score_upserts.values()))


async def route_candidates(uow: UnitOfWork, candidates: list[Candidate],
                           existing: dict[tuple[str, str, str], str], result: BatchResult) -> None:
    """``existing``: the status of each candidate's object already in its queue (read with the summaries' write)."""
    decisions: list[dict[str, Any]] = []
    wanted = _decide(candidates, existing, decisions)
    allowed, counts = await _apply_caps(uow, wanted, decisions)
    done, events = await uow.items.add([_new_item(c) for c in allowed], decisions, counts)
    uow.publish(*events)
    result.added.extend(row["id"] for _, row in done)


def _decision(c: Candidate, outcome: str, reason: str) -> dict[str, Any]:
    return {"project_id": c.summary.project_id, "queue_id": c.rule.queue_id, "rule_id": c.rule.id,
            "object_type": c.object_type, "object_id": c.object_id, "item_id": None, "event_id": c.event_id,
            "outcome": outcome, "reason": reason}


def _decide(candidates: list[Candidate], existing: dict[tuple[str, str, str], str],
            decisions: list[dict[str, Any]]) -> list[Candidate]:
    """Candidates whose object is new to the queue and sampled in; a decision for each of the others."""
    wanted: dict[tuple[str, str, str], Candidate] = {}
    for c in candidates:
        status = existing.get(c.key)
        name = c.rule.name
        if status == "REMOVED":
            decisions.append(_decision(c, "previously_removed", f"rule {name!r} matched, but the item was removed "
                                                                "from the queue before, so no rule adds it again"))
        elif status is not None or c.key in wanted:
            # Recorded once per rule and object (the log's unique index): "why is this trace not added twice?"
            decisions.append(_decision(c, "duplicate", f"rule {name!r} matched; the object is already in the queue"))
        elif not sampled_in(c.rule.id, c.object_id, c.rule.sample_rate):
            decisions.append(_decision(c, "sampled_out",
                                       f"rule {name!r} matched; not in its {c.rule.sample_rate:.4g} sample"))
        else:
            wanted[c.key] = c
    return list(wanted.values())


async def _apply_caps(uow: UnitOfWork, wanted: list[Candidate], decisions: list[dict[str, Any]]
                      ) -> tuple[list[Candidate], tuple[date, dict[str, int]] | None]:
    """The candidates within their rules' daily caps (a decision for each of the others), and the counters to set
    (locked here; set with the items, in their statement)."""
    capped = sorted({c.rule.id for c in wanted if c.rule.daily_cap is not None})
    if not capped:
        return wanted, None
    today: date = datetime.now(UTC).date()
    counts = await uow.rules.lock_daily_counts(capped, today)
    used = dict(counts)
    out = []
    for c in wanted:
        cap = c.rule.daily_cap
        if cap is not None:
            if used[c.rule.id] >= cap:
                decisions.append(_decision(c, "cap_reached", f"rule {c.rule.name!r} matched; its cap of {cap} "
                                                             f"items for {today.isoformat()} is reached"))
                continue
            used[c.rule.id] += 1
        out.append(c)
    return out, (today, {r: used[r] for r in capped if used[r] != counts[r]})


def _new_item(c: Candidate) -> NewItem:
    rule = c.rule
    return NewItem(project_id=c.summary.project_id, queue_id=rule.queue_id, object_type=c.object_type,
                   object_id=c.object_id, trace_id=c.summary.trace_id, reviewers_per_item=rule.reviewers_per_item,
                   rule_id=rule.id, reason=f"rule {rule.name!r} matched" + (
                       f" (sampled at {rule.sample_rate:.4g})" if rule.sample_rate < 1 else ""),
                   added_by=f"rule:{rule.id}", event_id=c.event_id)
