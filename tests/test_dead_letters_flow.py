"""A command scoring refuses by a domain rule becomes a dead letter the project sees through the base URL (reason
code, original payload), counted by reason in scoring's metrics; once the cause is fixed (the config's range), a
replay records the score exactly once."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from tally_shared.envelope import make_envelope
from tally_shared.events import RecordScore
from tally_shared.messaging import make_broker, publish
from tally_shared.testing.plugin import StackHandle
from tally_shared.testing.wait import eventually
from tally_shared.topics import SCORE_COMMANDS


async def test_refused_score_command_is_listed_and_replayed_after_the_fix(tally_stack: StackHandle) -> None:
    run = uuid.uuid4().hex[:8]
    trace = f"dl-{run}"
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        config = (await api.post("/api/v1/score-configs", json={
            "name": f"dl-quality-{run}", "data_type": "NUMERIC", "min_value": 0, "max_value": 1,
        })).raise_for_status().json()
        # Straight onto the command topic, as a producer that intake could not check would leave it.
        env = make_envelope(RecordScore(name=config["name"], value=3, trace_id=trace, config_id=config["id"]),
                            project=tally_stack.project_id, key=trace)
        broker = make_broker(tally_stack.kafka_bootstrap, service="dl-flow-test", registry=CollectorRegistry())
        await broker.start()
        try:
            await publish(broker, SCORE_COMMANDS, [env])
        finally:
            await broker.stop()

        async def listed() -> dict[str, Any] | None:
            # the stack's own scoring (other scoring consumers of a shared test broker refuse it too)
            body = (await api.get("/api/v1/dead-letters", params={
                "event_id": str(env.id), "consumer": tally_stack.stack.config.group("scoring"),  # type: ignore[attr-defined]
            })).raise_for_status()
            data = body.json()["data"]
            return data[0] if data else None

        dead = await eventually(listed, timeout=30, what="the refused command in the dead-letter list")
        assert dead["reason_code"] == "rule:maximum" and dead["topic"] == SCORE_COMMANDS.name
        assert dead["consumer"].startswith("scoring") and dead["key"] == trace
        detail = (await api.get(f"/api/v1/dead-letters/{dead['id']}")).raise_for_status().json()
        assert detail["original"]["json"]["payload"]["value"] == 3

        scoring_url = tally_stack.stack.config.url("scoring")  # type: ignore[attr-defined]
        async with httpx.AsyncClient() as direct:
            scoring_metrics = (await direct.get(scoring_url + "/metrics")).text
        assert (f'tally_dead_letters_total{{consumer="{dead["consumer"]}",reason="rule:maximum",'
                f'topic="tally.score-commands"}} 1.0') in scoring_metrics

        # the cause fixed: the config now allows 3; the replay records the score, once
        (await api.patch(f"/api/v1/score-configs/{config['id']}", json={"max_value": 5})).raise_for_status()
        for _ in range(2):
            (await api.post(f"/api/v1/dead-letters/{dead['id']}/replay")).raise_for_status()

        async def recorded() -> list[dict[str, Any]] | None:
            r = (await api.get("/api/v1/scores", params={"trace_id": trace})).raise_for_status().json()
            rows: list[dict[str, Any]] = r["data"] if isinstance(r, dict) else r
            return rows or None

        rows = await eventually(recorded, timeout=30, what="the replayed score recorded")
        assert [(s["name"], s["value"]) for s in rows] == [(config["name"], 3)]
        after = (await api.get(f"/api/v1/dead-letters/{dead['id']}")).raise_for_status().json()
        assert after["status"] == "replayed" and after["replay_count"] == 2
        assert [r for r in after["related"] if r["consumer"] == dead["consumer"]] == []  # not refused again

    # the console's page, through the base URL, on the real API's answers
    async with httpx.AsyncClient(base_url=tally_stack.base_url, timeout=20) as web:
        login = await web.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf
        r = await web.post("/login", data={"email": tally_stack.admin_email, "password": tally_stack.admin_password,
                                           "csrf": csrf.group(1), "next": "/"})
        assert r.status_code == 303, r.text
        listing = await web.get("/setup/dead-letters", params={"status": "all", "reason_code": "rule:maximum"})
        assert listing.status_code == 200 and dead["id"] in listing.text
        single = await web.get(f"/setup/dead-letters/{dead['id']}")
        assert single.status_code == 200 and "replayed by" in single.text and "&#34;value&#34;: 3" in single.text
