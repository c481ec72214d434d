"""RecordScore commands from ingest (scores sent by SDKs through the ingestion API): validate, record, publish
ScoreRecorded; an invalid command is poison and goes to the dead-letter topic with the reason."""

from __future__ import annotations

import uuid

from scoring import CONSUMER
from scoring.adapters import repository
from scoring.application.deps import Actor, Deps, EventClaim
from scoring.application.scores import record_scores
from scoring.domain.scores import ScoreInput
from tally_shared.deadletters import code_part
from tally_shared.envelope import Envelope, PoisonMessage
from tally_shared.events import RecordScore, ScoreConfigData


def command_input(cmd: RecordScore, env: Envelope) -> ScoreInput:
    # Without a client id, the id derives from the command's envelope id: a redelivered command names the same score.
    score_id = cmd.id or uuid.uuid5(uuid.NAMESPACE_URL, f"tally:record-score:{env.id}").hex
    return ScoreInput(
        name=cmd.name, value=cmd.value, data_type=cmd.data_type, id=score_id, trace_id=cmd.trace_id,
        observation_id=cmd.observation_id, session_id=cmd.session_id, dataset_run_id=cmd.dataset_run_id,
        config_id=cmd.config_id, comment=cmd.comment, metadata=cmd.metadata, environment=cmd.environment,
        timestamp=cmd.timestamp, source=cmd.source, idempotency_key=cmd.idempotency_key,
        evaluator_name=cmd.evaluator_name, evaluator_version=cmd.evaluator_version,
    )


async def pinned_config(deps: Deps, project_id: str, cmd: RecordScore) -> dict[str, ScoreConfigData]:
    """The config version ingest validated the command against (as it was then: not archived), if it named one."""
    if not cmd.config_id or cmd.config_version is None:
        return {}
    current = (await deps.configs.get_many(deps.sessions, project_id, [cmd.config_id])).get(cmd.config_id)
    if current is not None and current.version == cmd.config_version and not current.is_archived:
        return {cmd.config_id: current}  # the usual case, from the cache
    async with deps.sessions() as s:
        versions = await repository.config_versions(s, project_id, cmd.config_id)
    for v in versions:
        if v.version == cmd.config_version:
            return {cmd.config_id: v.model_copy(update={"is_archived": False})}
    return {}


async def handle_record_score(env: Envelope, cmd: RecordScore, deps: Deps, consumer: str = CONSUMER) -> None:
    # Commands come from a project's API key through ingest, so they carry that key's (admin) rights.
    actor = Actor(project_id=env.project)

    pinned = await pinned_config(deps, env.project, cmd)
    [outcome] = await record_scores(deps, actor, [command_input(cmd, env)], claim=EventClaim(consumer, env.id),
                                    pinned=pinned)
    if not outcome.ok:
        # A refused command must not count as processed: once its cause is fixed, a replay of its dead letter
        # (the same event id) has to be tried again, not skipped as a duplicate.
        async with deps.uow() as uow:
            await uow.release(consumer, env.id)
            await uow.commit()
        reason = "; ".join(f"{p.field}: {p.message} ({p.rule})" for p in outcome.problems) or outcome.error
        rule = outcome.problems[0].rule if outcome.problems else "invalid"
        raise PoisonMessage(f"invalid RecordScore: {reason}", f"rule:{code_part(rule)}")
