"""Integration: RecordScore commands from ingest (recorded once, invalid ones dead-lettered with the reason) and
the outbox relay that publishes events whose request never got the broker's acknowledgement."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from sqlalchemy import func, select

from scoring.adapters.tables import outbox, scores
from tally_shared.envelope import make_envelope
from tally_shared.events import RecordScore, ScoreDataType, ScoreRecorded
from tally_shared.messaging import publish
from tally_shared.outbox import Outgoing, add
from tally_shared.testing.wait import eventually
from tally_shared.topics import SCORE_COMMANDS, SCORES

from .conftest import Project, Service, Tap


async def test_record_score_command_recorded_once(service: Service, tap: Tap, project: Project,
                                                  client: httpx.AsyncClient) -> None:
    runtime = service.app.state.runtime
    trace = uuid.uuid4().hex
    cmd = RecordScore(name="user-feedback", value=1, trace_id=trace,
                      data_type=ScoreDataType.BOOLEAN, comment="thumbs up")
    env = make_envelope(cmd, project=project.id, key=trace)
    await publish(runtime.broker, SCORE_COMMANDS, [env])
    await publish(runtime.broker, SCORE_COMMANDS, [env])  # a redelivery of the same command
    ev = await tap.wait("ScoreRecorded", lambda e: e.key == trace)
    assert ev.project == project.id
    sid = ev.payload["score"]["id"]
    assert ev.payload["score"]["string_value"] == "True"
    r = await client.get(f"/api/public/scores/{sid}")
    assert r.status_code == 200 and r.json()["value"] == 1 and r.json()["comment"] == "thumbs up"

    # A later, different command for the same trace proves the duplicate was consumed (in order) by then.
    marker = RecordScore(name="marker", value=0.5, trace_id=trace)
    await publish(runtime.broker, SCORE_COMMANDS, [make_envelope(marker, project=project.id, key=trace)])
    await tap.wait("ScoreRecorded", lambda e: e.key == trace and e.payload["score"]["name"] == "marker")
    assert len({e.id for e in tap.of("ScoreRecorded", lambda e: e.payload["score"]["id"] == sid)}) == 1
    async with runtime.sessions() as s:
        n = (await s.execute(select(func.count()).select_from(scores).where(scores.c.project_id == project.id)))
        assert n.scalar_one() == 2


async def test_invalid_command_is_dead_lettered(service: Service, tap: Tap, project: Project,
                                                client: httpx.AsyncClient) -> None:
    runtime = service.app.state.runtime
    cfg = (await client.post("/api/v1/score-configs", json={"name": f"q-{uuid.uuid4().hex[:6]}",
                                                            "data_type": "NUMERIC", "max_value": 1})).json()
    trace = uuid.uuid4().hex
    bad = RecordScore(name=cfg["name"], value=3, trace_id=trace, config_id=cfg["id"])
    env = make_envelope(bad, project=project.id, key=trace)
    await publish(runtime.broker, SCORE_COMMANDS, [env])

    async def dead() -> dict | None:
        for rec in tap.dead:
            # this service's own (other scoring consumers on the shared broker refuse it too: not their project)
            if rec["consumer"] == service.settings.group_id and \
                    str(env.id) in base64.b64decode(rec["original_b64"]).decode():
                return rec
        return None

    rec = await eventually(dead, timeout=20, what="dead letter for the invalid command")
    assert rec["consumer"] == service.settings.group_id and rec["topic"] == SCORE_COMMANDS.name
    assert "value" in rec["reason"] and "maximum" in rec["reason"]
    assert rec["reason_code"].startswith("rule:") and rec["project"] == project.id
    assert rec["event_id"] == str(env.id) and rec["key"] == trace
    assert not tap.of("ScoreRecorded", lambda e: e.key == trace)

    # The refusal is not recorded as processed: once the config allows the value, a replay (the same envelope
    # again) records the score.
    (await client.patch(f"/api/v1/score-configs/{cfg['id']}", json={"max_value": 5})).raise_for_status()
    await publish(runtime.broker, SCORE_COMMANDS, [env])
    ev = await tap.wait("ScoreRecorded", lambda e: e.key == trace)
    assert ev.payload["score"]["value"] == 3


async def test_command_is_validated_against_the_config_version_intake_checked(
        service: Service, tap: Tap, project: Project, client: httpx.AsyncClient) -> None:
    """Ingest validated the score against version 1; the config's range was narrowed (version 2) and then it was
    archived before the command was consumed: the acknowledged score is still recorded, against version 1."""
    runtime = service.app.state.runtime
    cfg = (await client.post("/api/v1/score-configs", json={"name": f"q-{uuid.uuid4().hex[:6]}",
                                                            "data_type": "NUMERIC", "max_value": 10})).json()
    r = await client.patch(f"/api/v1/score-configs/{cfg['id']}", json={"max_value": 1})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    assert (await client.post(f"/api/v1/score-configs/{cfg['id']}/archive")).status_code == 200
    trace = uuid.uuid4().hex
    cmd = RecordScore(name=cfg["name"], value=7, trace_id=trace, config_id=cfg["id"], config_version=1,
                      source="EVAL", evaluator_name="judge", evaluator_version="3")
    await publish(runtime.broker, SCORE_COMMANDS, [make_envelope(cmd, project=project.id, key=trace)])
    ev = await tap.wait("ScoreRecorded", lambda e: e.key == trace)
    score = ev.payload["score"]
    assert (score["value"], score["config_version"]) == (7.0, 1)
    assert (score["evaluator_name"], score["evaluator_version"]) == ("judge", "3")


async def test_outbox_relay_publishes_abandoned_events(service: Service, tap: Tap, project: Project) -> None:
    """A request that committed but crashed before publishing leaves its outbox row; the relay publishes it with
    the same envelope id, then deletes the row."""
    runtime = service.app.state.runtime
    trace = uuid.uuid4().hex
    from tally_shared.events import ScoreData

    sc = ScoreData(id=uuid.uuid4().hex, name="orphan", data_type=ScoreDataType.NUMERIC, value=1.0, trace_id=trace,
                   timestamp=datetime.now(UTC))
    env = make_envelope(ScoreRecorded(score=sc), project=project.id, key=trace)
    async with runtime.sessions() as s, s.begin():
        await add(s, outbox, [Outgoing(SCORES, env, sc.id)])
        await s.execute(outbox.update().where(outbox.c.id == env.id)
                        .values(created_at=datetime.now(UTC) - timedelta(seconds=30)))
    ev = await tap.wait("ScoreRecorded", lambda e: e.key == trace, timeout=20)
    assert ev.id == env.id and orjson.loads(env.to_bytes())["payload"] == ev.payload

    async def row_gone() -> bool:
        async with runtime.sessions() as s:
            return (await s.execute(select(outbox.c.id).where(outbox.c.id == env.id))).first() is None

    await eventually(row_gone, timeout=10, what="relayed outbox row deleted")


async def test_acknowledged_rows_are_cleaned_up(service: Service, project: Project,
                                                client: httpx.AsyncClient) -> None:
    r = await client.post("/api/public/scores", json={"name": "n", "value": 1, "traceId": uuid.uuid4().hex})
    sid = r.json()["id"]
    runtime = service.app.state.runtime

    async def gone() -> bool:
        async with runtime.sessions() as s:
            return (await s.execute(select(outbox.c.id).where(outbox.c.aggregate_id == sid))).first() is None

    await eventually(gone, timeout=5, what="acknowledged outbox row deleted")


class _RefusingProducer:
    """Stands in for a broker that does not acknowledge."""

    async def send(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("broker unreachable")


async def test_unacknowledged_publish_answers_503_and_a_retry_publishes(
        service: Service, tap: Tap, project: Project, client: httpx.AsyncClient) -> None:
    producer = service.app.state.container.producer
    trace = uuid.uuid4().hex
    body = {"id": uuid.uuid4().hex, "name": "n", "value": 1, "traceId": trace}
    real = producer._producer
    producer._producer = _RefusingProducer()
    try:
        r = await client.post("/api/public/scores", json=body)
    finally:
        producer._producer = real
    assert r.status_code == 503 and r.json()["error"]["code"] == "event_not_acknowledged"
    # Stored all the same; the retry answers 2xx only once the pending event is on the broker.
    r = await client.post("/api/public/scores", json=body)
    assert r.status_code == 200
    ev = await tap.wait("ScoreRecorded", lambda e: e.key == trace, timeout=5)
    assert ev.payload["score"]["id"] == body["id"]


async def test_outbox_task_stops_when_cancelled_while_woken(service: Service) -> None:
    """Cancelling the maintenance task in the same tick as a wake-up must still stop it (app shutdown)."""
    import asyncio

    from tally_shared.outbox import Outbox
    from tally_shared.producer import Producer

    publisher = Outbox(outbox, service.app.state.runtime.sessions, Producer(service.kafka, client_id="t"),
                       relay_after=5.0)
    task = asyncio.create_task(publisher.run())
    await asyncio.sleep(0.3)
    for _ in range(3):
        publisher.wake()
        task.cancel()
        await asyncio.sleep(0)
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done
