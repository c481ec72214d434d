"""Score handlers: record (one or a batch, from HTTP or from ingest's RecordScore commands), change, delete, read.

Idempotency: a client's score id or idempotency key identifies the score; a retried request finds the score it
already recorded and records nothing new. Every change is written with its history row and its outbox row in one
transaction (application/uow.py), and returns only once the broker acknowledged the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from scoring.adapters import metrics, repository
from scoring.adapters.repository import ScoreFilter, StoredScore
from scoring.application.deletion import deleted_among
from scoring.application.deps import Actor, Deps, EventClaim
from scoring.application.uow import UnitOfWork
from scoring.domain.errors import Conflict, Forbidden, Invalid, NotFound, Problem
from scoring.domain.scores import ScoreInput, build_score, event_key, may_change, same_content
from tally_shared.envelope import make_envelope
from tally_shared.events import ScoreConfigData, ScoreData, ScoreDeleted, ScoreRecorded, ScoreUpdated
from tally_shared.outbox import Outgoing
from tally_shared.topics import SCORES

Status = Literal["created", "updated", "unchanged", "replayed", "rejected"]


@dataclass
class Outcome:
    index: int
    status: Status
    score: ScoreData | None = None
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None  # "forbidden" / "conflict" for rejections that are not validation problems

    @property
    def ok(self) -> bool:
        return self.status != "rejected"


def _recorded(project_id: str, sc: ScoreData) -> Outgoing:
    return Outgoing(SCORES, make_envelope(ScoreRecorded(score=sc), project=project_id, key=event_key(sc)), sc.id)


def _updated(project_id: str, sc: ScoreData) -> Outgoing:
    return Outgoing(SCORES, make_envelope(ScoreUpdated(score=sc), project=project_id, key=event_key(sc)), sc.id)


def _may_change(actor: Actor, sc: ScoreData) -> bool:
    return may_change(sc, user_id=actor.user_id, is_admin=actor.is_admin, can_configure=actor.can_configure)


# (input index, score built from it, idempotency key)
Candidate = tuple[int, ScoreData, str | None]


@dataclass
class _Batch:
    """One call of ``record_scores``: the inputs as recorded, and what became of each so far."""

    actor: Actor
    now: datetime
    inputs: list[ScoreInput]
    pinned: dict[str, ScoreConfigData]
    outcomes: list[Outcome | None]
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def project(self) -> str:
        return self.actor.project_id

    def reject(self, idx: int, problems: list[Problem], error: str | None = None) -> None:
        self.outcomes[idx] = Outcome(idx, "rejected", problems=problems, error=error)


async def record_scores(
    deps: Deps, actor: Actor, inputs: Sequence[ScoreInput], *, claim: EventClaim | None = None,
    pinned: dict[str, ScoreConfigData] | None = None,
) -> list[Outcome]:
    """Validate and record ``inputs``; one outcome per input, in order.

    Fast path (HTTP): new scores are written with their history and outbox rows in one statement, checked against
    the config version they were validated with. Anything else (a retried id or idempotency key, a config that
    changed meanwhile, a command with ``claim``) takes the transactional path.

    ``claim``: the command's event, claimed first inside the transaction; if it was applied before, nothing is
    written (every outcome "unchanged").

    ``pinned``: config versions to validate against whatever the current version is (a command validated at
    intake against that version: a config edited since must not turn an acknowledged score into a dead letter).
    """
    if not actor.can_review:
        raise Forbidden("viewers cannot record scores")
    batch = _Batch(actor, deps.clock(), _prepare(actor, inputs), pinned or {}, [None] * len(inputs))
    await _validate(deps, batch)
    await _refuse_deleted_traces(deps, batch)
    events: list[Outgoing] = []
    pending = batch.candidates
    if claim is None and pending:
        events, pending = await _insert_new(deps, batch)
    if pending or claim is not None:
        slow = await _record_transactionally(deps, batch, pending, claim)
        if slow is None:
            return [Outcome(i, "unchanged") for i in range(len(inputs))]
        events += slow
    await _publish(deps, batch, events)
    return _finish(batch)


def _prepare(actor: Actor, inputs: Sequence[ScoreInput]) -> list[ScoreInput]:
    """Every input gets an id; a signed-in person always scores as themselves."""
    prepared = []
    for inp in inputs:
        changes: dict[str, Any] = {}
        if not inp.id:
            changes["id"] = uuid.uuid4().hex
        if actor.user_id is not None:
            changes["author_user_id"] = actor.user_id
        prepared.append(replace(inp, **changes) if changes else inp)
    return prepared


async def _validate(deps: Deps, batch: _Batch) -> None:
    """Build each score against its config (cached; pinned versions win). A rejection may come from a cached
    config that changed since (say, a widened range): those are checked again against the stored config."""
    configs = await deps.configs.get_many(deps.sessions, batch.project, (
        i.config_id for i in batch.inputs if i.config_id not in batch.pinned))
    _build_candidates(batch, range(len(batch.inputs)), configs | batch.pinned)
    doubtful = {batch.inputs[i].config_id for i, o in enumerate(batch.outcomes)
                if o is not None and batch.inputs[i].config_id and batch.inputs[i].config_id not in batch.pinned}
    if not doubtful:
        return
    fresh = await deps.configs.refresh(deps.sessions, batch.project, (c for c in doubtful if c))
    retry = [i for i, inp in enumerate(batch.inputs) if batch.outcomes[i] is not None and inp.config_id in doubtful]
    for idx in retry:
        batch.outcomes[idx] = None
    _build_candidates(batch, retry, fresh)
    batch.candidates.sort(key=lambda c: c[0])


def _build_candidates(batch: _Batch, indexes: Iterable[int], configs: dict[str, ScoreConfigData]) -> None:
    for idx in indexes:
        inp = batch.inputs[idx]
        try:
            sc = _build(inp, configs, batch.now)
        except Invalid as exc:
            batch.reject(idx, exc.problems)
            continue
        batch.candidates.append((idx, sc, inp.idempotency_key))


async def _refuse_deleted_traces(deps: Deps, batch: _Batch) -> None:
    """A deleted trace stays deleted: its scores are refused (one indexed lookup per request)."""
    if not any(sc.trace_id for _, sc, _ in batch.candidates):
        return
    async with deps.sessions() as s:
        gone = await deleted_among(s, batch.project, (sc.trace_id for _, sc, _ in batch.candidates))
    for idx, sc, _ in batch.candidates:
        if sc.trace_id in gone:
            batch.reject(idx, [Problem("traceId", "trace_deleted", f"trace {sc.trace_id!r} was deleted")],
                         error="conflict")
    batch.candidates = [c for c in batch.candidates if c[1].trace_id not in gone]


async def _insert_new(deps: Deps, batch: _Batch) -> tuple[list[Outgoing], list[Candidate]]:
    """The fast path: the first score of each id and key in one statement; returns the events of the scores it
    created and the candidates left for the transactional path (repeats, and ids or keys already stored)."""
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    fast: list[tuple[int, ScoreData, str | None, Outgoing]] = []
    pending: list[Candidate] = []
    for idx, sc, key in batch.candidates:
        if sc.id in seen_ids or (key and key in seen_keys):
            pending.append((idx, sc, key))
            continue
        seen_ids.add(sc.id)
        if key:
            seen_keys.add(key)
        fast.append((idx, sc, key, _recorded(batch.project, sc)))
    inserted = await repository.insert_new_scores(
        deps.fast, batch.project, [(sc, key, ev.envelope) for _, sc, key, ev in fast], batch.actor.name, batch.now)
    events = []
    for idx, sc, key, ev in fast:
        if sc.id in inserted:
            batch.outcomes[idx] = Outcome(idx, "created", sc)
            events.append(ev)
        else:
            pending.append((idx, sc, key))
    pending.sort(key=lambda c: c[0])
    return events, pending


async def _publish(deps: Deps, batch: _Batch, events: list[Outgoing]) -> None:
    """Scores that existed already may still have events waiting (a first attempt whose publish failed): those
    go out first, in order, together with this request's events for them."""
    touched = [o.score.id for o in batch.outcomes
               if o and o.status in ("replayed", "unchanged", "updated") and o.score]
    if touched:
        await deps.outbox.publish_pending(batch.project, touched)
    await deps.outbox.publish(events)


def _finish(batch: _Batch) -> list[Outcome]:
    final = [o if o is not None else Outcome(i, "unchanged") for i, o in enumerate(batch.outcomes)]
    for i, o in enumerate(final):
        metrics.SCORES.labels(o.status, batch.inputs[i].source.value if i < len(batch.inputs) else "API").inc()
        for p in o.problems:
            metrics.REJECTIONS.labels(p.rule).inc()
    return final


def _build(inp: ScoreInput, configs: dict[str, ScoreConfigData], now: datetime) -> ScoreData:
    config = configs.get(inp.config_id) if inp.config_id else None
    return build_score(inp, config, score_id=inp.id or "", now=now,
                       config_missing=bool(inp.config_id) and config is None)


async def _record_transactionally(
    deps: Deps, batch: _Batch, candidates: list[Candidate], claim: EventClaim | None,
) -> list[Outgoing] | None:
    """Ids and keys seen before, configs changed meanwhile, and commands: one transaction (None: the command's
    event was applied before)."""
    async with deps.uow() as uow:
        if claim is not None and not await uow.claim(claim.consumer, claim.event_id):
            return None
        s = uow.session
        checked = await _recheck_configs(deps, s, batch, candidates)
        replays = await repository.get_by_idempotency_keys(s, batch.project, (k or "" for _, _, k in checked))
        to_insert = []
        for idx, sc, key in checked:
            if key and key in replays:
                batch.outcomes[idx] = Outcome(idx, "replayed", replays[key].score)
            else:
                to_insert.append((idx, sc, key))
        await _insert_or_update(uow, batch, to_insert)
        await uow.commit()
    return uow.committed


async def _recheck_configs(deps: Deps, s: AsyncSession, batch: _Batch, candidates: list[Candidate]
                           ) -> list[Candidate]:
    """The fast path may have validated against a cached config that changed since: check again, fresh."""
    fresh = await repository.get_configs(s, batch.project, (sc.config_id or "" for _, sc, _ in candidates))
    deps.configs.put(batch.project, fresh.values())
    checked: list[Candidate] = []
    for idx, sc, key in candidates:
        cfg = fresh.get(sc.config_id) if sc.config_id else None
        if sc.config_id and sc.config_id not in batch.pinned and (
                cfg is None or cfg.version != sc.config_version or cfg.is_archived):
            try:
                sc = _build(batch.inputs[idx], fresh, batch.now)
            except Invalid as exc:
                batch.reject(idx, exc.problems)
                continue
        checked.append((idx, sc, key))
    return checked


async def _insert_or_update(uow: UnitOfWork, batch: _Batch, to_insert: list[Candidate]) -> None:
    """Insert what is new; the rest meets a stored score of the same id (a retry or an update) or a concurrent
    request that holds the same idempotency key."""
    s, project, now, actor = uow.session, batch.project, batch.now, batch.actor
    inserted = await repository.insert_scores(s, project, [(sc, key) for _, sc, key in to_insert], now)
    history: list[tuple[ScoreData, int, str, str | None]] = []
    leftovers = [(idx, sc, key) for idx, sc, key in to_insert if sc.id not in inserted]
    existing = await repository.get_scores(s, project, (sc.id for _, sc, _ in leftovers), lock=True)
    late_keys = await repository.get_by_idempotency_keys(s, project, (k or "" for _, _, k in leftovers))
    for idx, sc, key in to_insert:
        if sc.id in inserted:
            inserted.discard(sc.id)  # a duplicate id later in the batch is then an update of this one
            batch.outcomes[idx] = Outcome(idx, "created", sc)
            history.append((sc, 1, "created", actor.name))
            uow.emit(_recorded(project, sc))
            existing[sc.id] = StoredScore(sc, 1, now, now, None, key)
            continue
        if key and key in late_keys and late_keys[key].score.id != sc.id:
            batch.outcomes[idx] = Outcome(idx, "replayed", late_keys[key].score)
            continue
        st = existing.get(sc.id)
        if st is None:  # only the idempotency key collided, with a concurrent request
            batch.reject(idx, [Problem("idempotency_key", "in_flight",
                                       "a request with this key is still being recorded")], error="conflict")
            continue
        if batch.inputs[idx].timestamp is None:
            sc = sc.model_copy(update={"timestamp": st.score.timestamp})  # a retry without one keeps the first
        outcome = batch.outcomes[idx] = _resolve_existing(actor, idx, st, sc)
        if outcome.status == "updated":
            rev = st.revision + 1
            await repository.save_score(s, project, sc, rev, now)
            history.append((sc, rev, "updated", actor.name))
            uow.emit(_updated(project, sc))
            existing[sc.id] = StoredScore(sc, rev, st.created_at, now, None, st.idempotency_key)
    await repository.add_history(s, project, history, now)


def _resolve_existing(actor: Actor, idx: int, st: StoredScore, sc: ScoreData) -> Outcome:
    """The same score id again: a retry (same content) or an update (Langfuse: same id = upsert)."""
    if st.deleted_at is not None:
        return Outcome(idx, "rejected", error="conflict",
                       problems=[Problem("id", "deleted", f"score {sc.id!r} was deleted")])
    # A change keeps the author and source of the original.
    sc_kept = sc.model_copy(update={"author_user_id": st.score.author_user_id, "source": st.score.source})
    if same_content(st.score, sc_kept) or same_content(st.score, sc):
        return Outcome(idx, "unchanged", st.score)
    if not _may_change(actor, st.score):
        return Outcome(idx, "rejected", error="forbidden",
                       problems=[Problem("id", "author_or_admin",
                                         "only the author or a project admin changes a human score")])
    sc.author_user_id = st.score.author_user_id
    sc.source = st.score.source
    return Outcome(idx, "updated", sc)


async def change_score(deps: Deps, actor: Actor, score_id: str, changes: dict[str, Any]) -> ScoreData:
    """Change a recorded score's value, comment or metadata; the value is checked against the config's current
    version (an archived config takes no new judgments)."""
    now = deps.clock()
    async with deps.uow() as uow:
        s = uow.session
        found = await repository.get_scores(s, actor.project_id, [score_id], lock=True)
        st = found.get(score_id)
        if st is None or st.deleted_at is not None:
            raise NotFound("score", score_id)
        if not _may_change(actor, st.score):
            raise Forbidden("only the author or a project admin changes a human score")
        old = st.score
        config = None
        if old.config_id:
            config = await repository.get_config(s, actor.project_id, old.config_id)
        inp = ScoreInput(
            name=old.name, data_type=old.data_type,
            value=changes["value"] if "value" in changes else _current_value(old),
            id=old.id, trace_id=old.trace_id, observation_id=old.observation_id, session_id=old.session_id,
            dataset_run_id=old.dataset_run_id, config_id=old.config_id,
            comment=changes["comment"] if "comment" in changes else old.comment,
            metadata=changes["metadata"] if "metadata" in changes else old.metadata,
            environment=old.environment, timestamp=old.timestamp, source=old.source,
            author_user_id=old.author_user_id, evaluator_name=old.evaluator_name,
            evaluator_version=old.evaluator_version, queue_id=old.queue_id, queue_item_id=old.queue_item_id,
        )
        new = build_score(inp, config, score_id=old.id, now=now,
                          config_missing=bool(old.config_id) and config is None)
        if same_content(old, new):
            return old
        rev = st.revision + 1
        await repository.save_score(s, actor.project_id, new, rev, now)
        await repository.add_history(s, actor.project_id, [(new, rev, "updated", actor.name)], now)
        uow.emit(_updated(actor.project_id, new))
        await uow.commit()
    await uow.publish_pending(actor.project_id, [score_id])
    return new


def _current_value(sc: ScoreData) -> Any:
    if sc.string_values is not None:
        return sc.string_values
    if sc.string_value is not None and sc.data_type.value in ("CATEGORICAL", "TEXT"):
        return sc.string_value
    return sc.value


async def delete_score(deps: Deps, actor: Actor, score_id: str) -> ScoreData:
    now = deps.clock()
    async with deps.uow() as uow:
        s = uow.session
        st = (await repository.get_scores(s, actor.project_id, [score_id], lock=True)).get(score_id)
        if st is None or st.deleted_at is not None:
            raise NotFound("score", score_id)
        if not _may_change(actor, st.score):
            raise Forbidden("only the author or a project admin deletes a human score")
        rev = st.revision + 1
        await repository.mark_deleted(s, actor.project_id, score_id, rev, now, actor.name)
        await repository.add_history(s, actor.project_id, [(st.score, rev, "deleted", actor.name)], now)
        uow.emit(Outgoing(SCORES, make_envelope(
            ScoreDeleted(score_id=score_id, trace_id=st.score.trace_id, deleted_by=actor.name),
            project=actor.project_id, key=event_key(st.score)), score_id))
        await uow.commit()
    await uow.publish_pending(actor.project_id, [score_id])
    return st.score


async def get_score(deps: Deps, actor: Actor, score_id: str) -> StoredScore:
    async with deps.sessions() as s:
        st = (await repository.get_scores(s, actor.project_id, [score_id])).get(score_id)
    if st is None or st.deleted_at is not None:
        raise NotFound("score", score_id)
    return st


async def score_history(deps: Deps, actor: Actor, score_id: str) -> list[dict[str, Any]]:
    async with deps.sessions() as s:
        entries = await repository.history(s, actor.project_id, score_id)
    if not entries:
        raise NotFound("score", score_id)
    return entries


async def list_scores_after(deps: Deps, actor: Actor, f: ScoreFilter, *, after: tuple[datetime, str] | None,
                            limit: int) -> list[StoredScore]:
    async with deps.sessions() as s:
        return await repository.list_scores_after(s, actor.project_id, f, after=after, limit=limit)


async def list_scores_page(deps: Deps, actor: Actor, f: ScoreFilter, *, page: int,
                           limit: int) -> tuple[list[StoredScore], int]:
    async with deps.sessions() as s:
        return await repository.list_scores_page(s, actor.project_id, f, page=page, limit=limit)


__all__ = ["Conflict", "Outcome", "change_score", "delete_score", "get_score", "record_scores", "score_history"]
