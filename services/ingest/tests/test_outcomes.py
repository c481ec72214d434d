"""What the client is told when the broker acknowledges only part of a request, or nothing (publisher fake)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from ingest.bootstrap import create_app_for
from ingest.config import Settings
from tally_shared.testing.plugin import basic_auth, create_project_with_key

from .fakes import RecordingPublisher

AppClient = tuple[httpx.AsyncClient, RecordingPublisher, dict[str, str]]


@pytest.fixture(scope="module")
async def app_client(identity_db: str, kafka_bootstrap: str) -> AsyncIterator[AppClient]:
    fake = RecordingPublisher()
    app = create_app_for(Settings(database_url=identity_db, grpc_port=0, kafka_bootstrap_servers=kafka_bootstrap,
                                  retry_after_seconds=7), publisher=fake)
    auth = basic_auth(*await create_project_with_key(identity_db, f"p-{uuid.uuid4().hex[:10]}"))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        yield client, fake, auth


def _batch(*trace_ids: str) -> dict[str, object]:
    return {"batch": [
        item for t in trace_ids for item in (
            {"id": f"{t}-trace", "type": "trace-create", "body": {"id": t, "name": "n"}},
            {"id": f"{t}-span", "type": "span-create", "body": {"id": f"{t}-s", "traceId": t}},
        )
    ]}


async def test_partial_acknowledgement_is_reported_item_by_item(
    app_client: AppClient,
) -> None:
    client, fake, auth = app_client
    fake.fail = {"t-bad"}
    try:
        r = await client.post("/api/public/ingestion", json=_batch("t-ok", "t-bad"), headers=auth)
    finally:
        fake.fail = set()
    assert r.status_code == 207
    body = r.json()
    assert sorted(s["id"] for s in body["successes"]) == ["t-ok-span", "t-ok-trace"]
    assert sorted((e["id"], e["status"]) for e in body["errors"]) == [("t-bad-span", 503), ("t-bad-trace", 503)]
    assert all(e["error"]["reason"] == "broker_unavailable" for e in body["errors"])


async def test_nothing_acknowledged_is_a_503(
    app_client: AppClient,
) -> None:
    client, fake, auth = app_client
    fake.down = True
    try:
        for path, body in (("/api/public/ingestion", _batch("a")),
                           ("/api/v1/ingest", {"events": [{"id": "1", "type": "trace", "body": {"id": "x"}}]})):
            r = await client.post(path, json=body, headers=auth)
            assert r.status_code == 503 and r.headers["retry-after"] == "7", r.text
        otlp = {"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "s"}]}]}]}
        r = await client.post("/v1/traces", content=orjson.dumps(otlp),
                              headers={**auth, "content-type": "application/json"})
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
    finally:
        fake.down = False


async def test_otlp_partial_failure_asks_for_a_retry(
    app_client: AppClient,
) -> None:
    client, fake, auth = app_client
    ok, bad = "0af7651916cd43dd8448eb211c80319c", "1af7651916cd43dd8448eb211c80319c"
    fake.fail = {bad}
    try:
        otlp = {"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": ok, "spanId": "b7ad6b7169203331", "name": "s"},
            {"traceId": bad, "spanId": "b7ad6b7169203332", "name": "s"}]}]}]}
        r = await client.post("/v1/traces", content=orjson.dumps(otlp),
                              headers={**auth, "content-type": "application/json"})
    finally:
        fake.fail = set()
    # OTLP cannot say which spans failed: the exporter retries the request; the event ids repeat, so the
    # already-acknowledged trace is applied once by consumers.
    assert r.status_code == 503


async def test_only_invalid_items_is_not_an_outage(
    app_client: AppClient,
) -> None:
    client, fake, auth = app_client
    fake.down = True
    try:
        r = await client.post("/api/v1/ingest", json={"events": [{"id": "1", "type": "trace", "body": {}}]},
                              headers=auth)
    finally:
        fake.down = False
    assert r.status_code == 207 and r.json()["errors"][0]["error"]["field"] == "body.id"


async def test_hostile_nesting_is_refused_not_crashed(app_client: AppClient) -> None:
    client, _, auth = app_client
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    r = await client.post("/api/v1/ingest", json={"events": [
        {"id": "deep", "type": "observation", "body": {"id": "o", "trace_id": "deep-t", "input": deep}},
        {"id": "fine", "type": "observation", "body": {"id": "o", "trace_id": "fine-t"}},
    ]}, headers=auth)
    assert r.status_code == 207
    assert [e["id"] for e in r.json()["errors"]] == ["deep"] and r.json()["errors"][0]["status"] == 400
    r = await client.post("/api/public/ingestion", json={"batch": [
        {"id": "deep", "type": "trace-create", "body": {"id": "t", "metadata": {"x": deep}}}]}, headers=auth)
    assert r.status_code == 207 and r.json()["errors"][0]["status"] == 400
    value: dict[str, object] = {"stringValue": "x"}
    for _ in range(300):
        value = {"arrayValue": {"values": [value]}}
    spans = [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "s",
              "attributes": [{"key": "deep", "value": value},
                             {"key": "gen_ai.prompt." + "a." * 5000 + "b", "value": {"stringValue": "v"}}]}]
    # Written with the stdlib encoder: orjson itself refuses to write this deep.
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
    r = await client.post("/v1/traces", content=body, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == 1
