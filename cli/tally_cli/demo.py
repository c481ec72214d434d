"""Demo data for ``tally up``: a project, people to sign in as, score configs, queues with live routing rules,
and traces of a support assistant (some failing, some scored low by an automated judge).

Everything goes through the public HTTP APIs behind the base URL, as a real client's data would.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tally_shared.db import make_engine
from tally_shared.identity.store import IdentityStore

DEMO_PROJECT = "demo"
DEMO_PASSWORD = "tally-demo"
DEMO_USERS = (
    ("lead@demo.tally", "Lead Lee", "admin"),
    ("alice@demo.tally", "Alice Reviewer", "reviewer"),
    ("bob@demo.tally", "Bob Reviewer", "reviewer"),
)

QUESTIONS = [
    ("How do I reset my password?", "Go to Settings > Security and click 'Reset password'. A link is emailed."),
    ("Can I get a refund after 30 days?", "Refunds are available within 30 days of purchase only."),
    ("Why was my card declined?", "Card declines usually come from the bank; please contact them or try another."),
    ("How do I export my data?", "Use Settings > Data > Export. You get a ZIP within an hour."),
    ("Do you support SSO?", "Yes, SAML SSO is available on the Business plan."),
    ("My invoice shows the wrong VAT number", "I have updated the VAT number; the next invoice will show it."),
    ("How do I delete my account?", "Account deletion is under Settings > Account > Delete. It is final."),
    ("Is there an API rate limit?", "Yes: 1,000 requests per minute per key on all plans."),
]


async def _identity(database_url: str) -> dict[str, str]:
    engine = make_engine(database_url, pool_size=1)
    try:
        store = IdentityStore(engine)
        await store.create_project(DEMO_PROJECT, "Demo: support assistant")
        for email, name, role in DEMO_USERS:
            user = await store.create_user(email, DEMO_PASSWORD, name)
            await store.add_member(user.id, DEMO_PROJECT, role)
        public, secret = await store.create_api_key(DEMO_PROJECT, note="demo")
        return {"project_id": DEMO_PROJECT, "public_key": public, "secret_key": secret,
                "email": DEMO_USERS[0][0], "password": DEMO_PASSWORD}
    finally:
        await engine.dispose()


def ensure_demo(base_url: str, database_url: str, home: Path) -> dict[str, str]:
    """Create the demo project, users and keys once (kept in TALLY_HOME/demo.json), and load the demo data once."""
    path = home / "demo.json"
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "public_key" not in state:
        state.update(asyncio.run(_identity(database_url)))
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)
    if not state.get("loaded"):
        print("loading demo data", flush=True)
        load_demo(base_url, state["public_key"], state["secret_key"])
        state["loaded"] = True
        path.write_text(json.dumps(state, indent=2))
    return {k: str(v) for k, v in state.items()}


def _check(resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code >= 300:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}: {resp.text[:500]}")
    return resp.json() if resp.content else {}


def load_demo(base_url: str, public_key: str, secret_key: str, traces: int = 40, seed: int = 7) -> dict[str, Any]:
    """Load configs, queues, rules and traces. Returns the ids created."""
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, auth=(public_key, secret_key), timeout=30) as client:
        correctness = _check(client.post("/api/public/score-configs", json={
            "name": "correctness", "dataType": "CATEGORICAL",
            "categories": [{"label": "wrong", "value": 0}, {"label": "partly right", "value": 1},
                           {"label": "right", "value": 2}],
            "description": "Is the answer factually right for this customer?\n"
                           "right: fully correct and actionable. partly right: correct but incomplete or vague. "
                           "wrong: any false statement about policy, prices or product.",
        }))
        helpfulness = _check(client.post("/api/public/score-configs", json={
            "name": "helpfulness", "dataType": "NUMERIC", "minValue": 1, "maxValue": 5,
            "description": "1 = no help at all, 3 = the customer still has to ask again, "
                           "5 = the customer can act on it straight away.",
        }))
        hallucination = _check(client.post("/api/public/score-configs", json={
            "name": "hallucination", "dataType": "BOOLEAN",
            "description": "True if the answer states anything not supported by our docs.",
        }))
        config_ids = [correctness["id"], helpfulness["id"], hallucination["id"]]

        triage = _check(client.post("/api/v1/queues", json={
            "name": "Triage: failures and low judge scores",
            "description": "Traces that errored or that the LLM judge scored below 0.5. Check the answer against "
                           "the docs; score correctness and helpfulness; flag anything that needs an engineer.",
            "score_configs": [{"id": config_ids[0], "required": True},
                              {"id": config_ids[1], "required": True},
                              {"id": config_ids[2], "required": False}],
            "reviewers_per_item": 1,
        }))
        agreement = _check(client.post("/api/v1/queues", json={
            "name": "Agreement sample: support-chat",
            "description": "A 30% sample of support-chat traffic, each reviewed by two people to measure "
                           "agreement.",
            "score_configs": [{"id": config_ids[0], "required": True},
                              {"id": config_ids[1], "required": True}],
            "reviewers_per_item": 2,
        }))
        _check(client.post(f"/api/v1/queues/{triage['id']}/rules", json={
            "name": "errors or low judge score",
            "filter": {"groups": [
                {"conditions": [{"field": "has_error", "op": "eq", "value": True}]},
                {"conditions": [{"field": "score", "name": "judge-correctness", "op": "lt", "value": 0.5}]},
            ]},
        }))
        _check(client.post(f"/api/v1/queues/{agreement['id']}/rules", json={
            "name": "sample of support-chat",
            "filter": {"groups": [{"conditions": [{"field": "name", "op": "eq", "value": "support-chat"}]}]},
            "sample_rate": 0.3,
        }))

        now = datetime.now(UTC)
        batch: list[dict[str, Any]] = []
        trace_ids = []
        for i in range(traces):
            q, a = QUESTIONS[i % len(QUESTIONS)]
            tid = str(uuid.UUID(int=rng.getrandbits(128)))
            trace_ids.append(tid)
            ts = now - timedelta(minutes=rng.randint(1, 60 * 24 * 3))
            failed = rng.random() < 0.15
            batch += _trace_events(tid, ts, q, a, failed, rng)
            batch.append({"id": str(uuid.uuid4()), "type": "score-create", "timestamp": ts.isoformat(), "body": {
                "id": str(uuid.uuid4()), "traceId": tid, "name": "judge-correctness",
                "value": round(rng.random() if not failed else rng.random() * 0.4, 2), "dataType": "NUMERIC",
                "comment": "gpt-judge v2", "source": "EVAL",
            }})
        for start in range(0, len(batch), 50):
            _check(client.post("/api/public/ingestion", json={"batch": batch[start:start + 50]}))
    return {"config_ids": config_ids, "queue_ids": [triage["id"], agreement["id"]], "trace_ids": trace_ids}


def _trace_events(tid: str, ts: datetime, question: str, answer: str, failed: bool,
                  rng: random.Random) -> list[dict[str, Any]]:
    retrieval_ms = rng.randint(40, 300)
    llm_ms = rng.randint(400, 3000)
    t1 = ts + timedelta(milliseconds=retrieval_ms)
    t2 = t1 + timedelta(milliseconds=llm_ms)
    prompt_tokens, completion_tokens = rng.randint(300, 1200), rng.randint(40, 300)

    def ev(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "type": kind, "timestamp": ts.isoformat(), "body": body}

    out: list[dict[str, Any]] = [
        ev("trace-create", {
            "id": tid, "name": "support-chat", "timestamp": ts.isoformat(),
            "input": {"question": question}, "output": None if failed else {"answer": answer},
            "userId": f"customer-{rng.randint(1, 25)}", "sessionId": f"session-{rng.randint(1, 15)}",
            "tags": ["support", rng.choice(["web", "mobile"])], "release": "2026.11.2", "environment": "production",
            "metadata": {"route": "support-chat", "locale": rng.choice(["en", "de", "fr"])},
        }),
        ev("span-create", {
            "id": f"{tid}-retrieve", "traceId": tid, "name": "retrieve-docs", "startTime": ts.isoformat(),
            "endTime": t1.isoformat(), "input": {"query": question},
            "output": {"documents": ["help-center/billing.md", "help-center/account.md"]},
        }),
        ev("generation-create", {
            "id": f"{tid}-llm", "traceId": tid, "parentObservationId": None, "name": "answer",
            "startTime": t1.isoformat(), "endTime": t2.isoformat(), "model": "gpt-4o-mini",
            "modelParameters": {"temperature": 0.2},
            "input": [{"role": "system", "content": "You are a support assistant."},
                      {"role": "user", "content": question}],
            "output": None if failed else {"role": "assistant", "content": answer},
            "usageDetails": {"input": prompt_tokens, "output": completion_tokens,
                             "total": prompt_tokens + completion_tokens},
            "costDetails": {"input": prompt_tokens * 1.5e-7, "output": completion_tokens * 6e-7},
            "level": "ERROR" if failed else "DEFAULT",
            "statusMessage": "upstream timeout after 30s" if failed else None,
        }),
    ]
    return out
