"""Trace deletion: DELETE /api/public/traces[/{id}] publishes TraceDeleted keyed by the trace id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tally_shared.events import TraceDeleted
from tally_shared.testing.plugin import basic_auth
from tally_shared.topics import TRACES

from .conftest import Server, read_events


@pytest.fixture
async def client(ingest_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingest_server.base_url, timeout=30) as c:
        yield c


async def test_single_and_bulk_deletion_publish_one_event_per_trace(
    client: httpx.AsyncClient, api_key: tuple[str, str], project_id: str, kafka_bootstrap: str
) -> None:
    auth = basic_auth(*api_key)
    r = await client.delete("/api/public/traces/d1", headers=auth)
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["message"], str)
    r = await client.request("DELETE", "/api/public/traces", json={"traceIds": ["d2", "d3", "d2"]}, headers=auth)
    assert r.status_code == 200, r.text
    events = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project == project_id, count=3)
    assert sorted((env.key, env.type) for env, _ in events) == [
        ("d1", "TraceDeleted"), ("d2", "TraceDeleted"), ("d3", "TraceDeleted")]
    assert all(isinstance(p, TraceDeleted) and p.trace_id == env.key for env, p in events)


async def test_bad_deletions(client: httpx.AsyncClient, api_key: tuple[str, str]) -> None:
    auth = basic_auth(*api_key)
    for body in ({"traceIds": []}, {"traceIds": "x"}, {}, [1], {"traceIds": ["ok", 3, "x" * 201]}):
        r = await client.request("DELETE", "/api/public/traces", json=body, headers=auth)
        assert r.status_code == 400, body
        assert r.json()["error"]["code"] == "bad_request"
    r = await client.request("DELETE", "/api/public/traces", json={"traceIds": ["ok", 3, "x" * 201]}, headers=auth)
    assert [d["field"] for d in r.json()["error"]["details"]] == ["traceIds[1]", "traceIds[2]"]
    assert (await client.delete("/api/public/traces/t1")).status_code == 401
