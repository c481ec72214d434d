"""Dead letters on the real broker and database: a score the read model refuses (a constraint the test switches on
and off) and a payload that fails validation are listed for their project with reason and original, a replay
before the fix fails again as a new dead letter of the same event, a replay after the fix applies it exactly once,
discard hides it, and another project cannot see any of it."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from projections.adapters.queries.dead_letters import SqlDeadLetterReads
from projections.application import dead_letters as app_dl
from projections.entrypoints import dead_letters_cli
from tally_shared import deadletters
from tally_shared.db import make_engine
from tally_shared.events import ScoreData, ScoreRecorded, TraceData, TraceIngested
from tally_shared.identity.auth import sign_user_token
from tally_shared.identity.store import IdentityStore
from tally_shared.testing.wait import eventually
from tally_shared.topics import SCORES, TRACES

from .conftest import Harness, at


async def test_dead_letters_list_replay_discard(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    _, other = await h.project()
    tag = uuid.uuid4().hex[:10]
    poison_name = f"poison-{tag}"
    engine = make_engine(h.database_url, pool_size=1)
    constraint = f"dl_probe_{tag}"
    async with engine.begin() as conn:
        await conn.execute(text(f"ALTER TABLE projections.scores ADD CONSTRAINT {constraint} "
                                f"CHECK (name <> '{poison_name}') NOT VALID"))
    try:
        trace = f"t-{tag}"
        score = ScoreRecorded(score=ScoreData(id=f"s-{tag}", name=poison_name, data_type="NUMERIC", value=1,
                                              trace_id=trace, source="API", timestamp=at(1)))
        poison = h.env(score, pid, trace, at(1))
        await h.send(h.env(TraceIngested(trace_id=trace, trace=TraceData(id=trace, name="dl")), pid, trace, at(0)))
        await h.send(poison)
        # a payload that no consumer can validate, still attributable to its project
        invalid = poison.model_dump(mode="json") | {"id": str(uuid.uuid4())}
        invalid["payload"] = {"score": {"id": "x"}}
        await h.broker.publish(orjson.dumps(invalid), topic=SCORES.name, key=trace.encode())

        async def listed(**params: Any) -> dict[str, Any]:
            # this app's own: every consumer of the broker this session shares refuses the invalid payload too
            r = await h.http.get("/api/v1/dead-letters", headers=auth, params={"consumer": h.group_id, **params})
            assert r.status_code == 200, r.text
            return r.json()

        async def both_listed() -> dict[str, Any] | None:
            b = await listed(topic=SCORES.name)
            codes = [d["reason_code"] for d in b["data"]]
            return b if sorted(codes) == ["database:23", "validation"] else None

        body = await eventually(both_listed, timeout=30, what="both dead letters listed")
        assert body["counts"]["by_reason"] == {"database:23": 1, "validation": 1}
        [first] = [d for d in body["data"] if d["reason_code"] == "database:23"]
        assert (first["consumer"], first["topic"], first["event_id"], first["event_type"], first["key"]) == (
            h.group_id, SCORES.name, str(poison.id), "ScoreRecorded", trace)
        assert constraint in first["reason"] and first["status"] == "open" and poison_name in first["preview"]
        detail = (await h.http.get(f"/api/v1/dead-letters/{first['id']}", headers=auth)).json()
        assert detail["original"]["encoding"] == "json"
        assert detail["original"]["json"] == poison.model_dump(mode="json")

        # another project's key sees none of it, and cannot act on it
        assert (await h.http.get("/api/v1/dead-letters", headers=other, params={"status": "all"})).json()[
            "meta"]["total"] == 0
        assert (await h.http.get(f"/api/v1/dead-letters/{first['id']}", headers=other)).status_code == 404
        assert (await h.http.post(f"/api/v1/dead-letters/{first['id']}/replay", headers=other)).status_code == 404
        # a member who is not an admin reads but cannot replay
        store = IdentityStore(engine)
        user = await store.create_user(f"m-{tag}@t.test", "long-enough-pw")
        await store.add_member(user.id, pid, "member")
        member = {"Authorization": f"Bearer {sign_user_token(h.app.state.secret_key, user.id)}",  # type: ignore[attr-defined]
                  "X-Tally-Project": pid}
        assert (await h.http.get(f"/api/v1/dead-letters/{first['id']}", headers=member)).status_code == 200
        r = await h.http.post(f"/api/v1/dead-letters/{first['id']}/replay", headers=member)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"

        metrics = (await h.http.get("/metrics")).text
        assert f'tally_dead_letters_total{{consumer="{h.group_id}",reason="database:23",topic="tally.scores"}}' \
            in metrics

        # replayed before the cause is fixed: refused again, a new dead letter of the same event
        r = await h.http.post(f"/api/v1/dead-letters/{first['id']}/replay", headers=auth)
        assert r.status_code == 200 and r.json()["replayed"] == 1, r.text

        async def refused_again() -> dict[str, Any] | None:
            b = await listed(event_id=str(poison.id))
            return b["data"][0] if b["data"] else None

        second = await eventually(refused_again, timeout=30, what="the replay refused again")
        assert second["id"] != first["id"] and second["offset"] != first["offset"]
        again = (await h.http.get(f"/api/v1/dead-letters/{first['id']}", headers=auth)).json()
        assert (again["status"], again["replay_count"], again["status_by"]) == ("replayed", 1, "api")
        assert [x["id"] for x in again["related"] if x["consumer"] == h.group_id] == [second["id"]]

        # the cause is fixed: a replay (sent twice) applies the score exactly once
        async with engine.begin() as conn:
            await conn.execute(text(f"ALTER TABLE projections.scores DROP CONSTRAINT {constraint}"))
        for _ in range(2):
            r = await h.http.post(f"/api/v1/dead-letters/{second['id']}/replay", headers=auth)
            assert r.status_code == 200, r.text
        # a later event on the same key (same partition, so after both replays) says when they were consumed
        marker = ScoreRecorded(score=ScoreData(id=f"m-{tag}", name=f"marker-{tag}", data_type="NUMERIC", value=1,
                                               trace_id=trace, source="API", timestamp=at(2)))
        await h.send(h.env(marker, pid, trace, at(2)))

        async def count(name: str) -> int:
            r = await h.http.get("/api/v1/analytics/scores", headers=auth, params={"name": name})
            series = r.json()["series"]
            return int(series[0]["count"]) if series else 0

        async def marker_applied() -> bool:
            return await count(f"marker-{tag}") == 1

        await eventually(marker_applied, timeout=30, what="the marker after the replays")
        assert await count(poison_name) == 1
        assert (await listed(event_id=str(poison.id)))["meta"]["total"] == 0  # no new refusal

        # discard hides the invalid one from the open list; it stays readable as discarded
        [bad] = [d for d in body["data"] if d["reason_code"] == "validation"]
        r = await h.http.post(f"/api/v1/dead-letters/{bad['id']}/discard", headers=auth)
        assert r.status_code == 200 and r.json()["discarded"] == 1
        assert bad["id"] not in {d["id"] for d in (await listed(topic=SCORES.name))["data"]}
        assert bad["id"] in {d["id"] for d in (await listed(status="discarded"))["data"]}
        # bulk, by filter: nothing open is left to discard in this project
        r = await h.http.post("/api/v1/dead-letters/discard", headers=auth,
                              json={"reason_code": "validation", "consumer": h.group_id})
        assert r.json() == {"discarded": 0, "more": False}

        # retention: replayed and discarded ones are forgotten once their status is old enough
        sessions = h.app.state.runtime.sessions  # type: ignore[attr-defined]
        await app_dl.prune(sessions, older_than=timedelta(days=30))
        assert (await listed(status="all"))["meta"]["total"] == 3
        await app_dl.prune(sessions, older_than=timedelta(days=30), now=datetime.now(UTC) + timedelta(days=31))
        assert (await listed(status="all"))["meta"]["total"] == 0
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"ALTER TABLE projections.scores DROP CONSTRAINT IF EXISTS {constraint}"))
        await engine.dispose()


async def test_dead_letters_of_no_project_are_listed_and_replayed_by_the_operators_command(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    _, auth = await h.project()
    garbage = f"not an envelope {uuid.uuid4().hex}".encode()
    await h.broker.publish(garbage, topic=TRACES.name, key=b"odd-key")
    monkeypatch.setenv("DATABASE_URL", h.database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", h.bootstrap)

    async def cli(*argv: str) -> str:
        out = io.StringIO()
        assert await dead_letters_cli._run(dead_letters_cli._parser().parse_args(list(argv)), out) == 0
        return out.getvalue()

    async def listed() -> dict[str, Any] | None:
        body = orjson.loads(await cli("list", "--json", "--reason-code", "decode", "--consumer", h.group_id,
                                      "--limit", "1000"))
        mine = [d for d in body["data"] if d["preview"] == garbage.decode()]
        return mine[0] if mine else None

    first = await eventually(listed, timeout=30, what="the unattributable dead letter")
    assert first["project_id"] is None and first["key"] == "odd-key" and first["topic"] == TRACES.name
    assert first["id"] in await cli("list")  # the default list: dead letters of no project
    # no project's key sees it
    assert (await h.http.get(f"/api/v1/dead-letters/{first['id']}", headers=auth)).status_code == 404
    shown = orjson.loads(await cli("show", first["id"]))
    assert shown["original"] == {"encoding": "text", "text": garbage.decode()}

    # Other consumer groups on the shared test broker may have refused the same garbage too: the replay marks
    # every open dead letter of that one message, so count the message, not the dead letters.
    assert re.search(r"replayed [1-9]\d* dead letters \(1 messages\)", await cli("replay", first["id"]))

    async def refused_again() -> dict[str, Any] | None:
        again = await listed()
        return again if again and again["id"] != first["id"] else None

    second = await eventually(refused_again, timeout=30, what="the replayed garbage refused again")
    assert second["key"] == "odd-key" and second["offset"] > first["offset"]
    assert "discarded 1" in await cli("discard", second["id"])
    assert await listed() is None


async def test_storing_is_idempotent_by_dead_letter_id_and_bounded_per_statement(harness: Harness) -> None:
    consumer = f"chunk-test-{uuid.uuid4().hex[:6]}"
    records = [deadletters.build(consumer=consumer, raw=bytes([65 + i]) * (3 * 1024 * 1024), reason="r",
                                 code="decode", topic=TRACES.name, partition=0, offset=i) for i in range(3)]
    sessions = harness.app.state.runtime.sessions  # type: ignore[attr-defined]
    assert await app_dl.record(sessions, records) == 3  # 9 MiB of originals: more than one statement
    assert await app_dl.record(sessions, [*records, records[0]]) == 0  # redelivered: nothing new
    async with sessions() as session:
        body = await app_dl.list_dead_letters(SqlDeadLetterReads(session), app_dl.Scope(),
                                              app_dl.Filter(consumer=consumer))
    assert body["meta"]["total"] == 3 and {d["original_size"] for d in body["data"]} == {3 * 1024 * 1024}


async def test_bulk_replay_by_reason(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    ids = []
    for i in range(2):
        env = h.env(TraceIngested(trace_id=f"b{i}", trace=TraceData(id=f"b{i}")), pid, f"b{i}", at(0))
        bad = env.model_dump(mode="json")
        bad["payload"]["unknown_field"] = i
        ids.append(env.id)
        await h.broker.publish(orjson.dumps(bad), topic=TRACES.name, key=f"b{i}".encode())
    mine = {"consumer": h.group_id, "reason_code": "validation"}

    async def open_ones() -> list[dict[str, Any]]:
        r = await h.http.get("/api/v1/dead-letters", headers=auth, params=mine)
        return list(r.json()["data"])

    async def two_open() -> list[dict[str, Any]] | None:
        rows = await open_ones()
        return rows if len(rows) == 2 else None

    first = await eventually(two_open, timeout=30, what="two dead letters")
    r = await h.http.post("/api/v1/dead-letters/replay", headers=auth, json=mine)
    body = r.json()
    # replayed counts the dead letters of those two messages in every consumer group on the shared test broker
    assert body["messages"] == 2 and body["replayed"] >= 2 and body["skipped"] == [] and body["more"] is False
    # still invalid: refused again, as new dead letters of the same events
    again = await eventually(two_open, timeout=30, what="the replays refused again")
    assert {d["event_id"] for d in again} == {str(i) for i in ids}
    assert not {d["id"] for d in again} & {d["id"] for d in first}
