"""What intake acknowledged used to be lost or unreadable; each case through the gateway, on real processes.

- a NUL character in a trace's input was acknowledged, then dead-lettered by projections;
- a score-create that scoring would refuse (EVAL without an evaluator, an unknown config) was acknowledged, then
  dead-lettered by scoring;
- a number such as 1e308 or 2**70 in metadata or usage made the trace, and every project-wide list holding it,
  answer 500.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tally_shared.content import NUL_REPLACEMENT
from tally_shared.testing.plugin import StackHandle
from tally_shared.testing.wait import eventually

# Placeholders for what json.dumps cannot write: raw JSON tokens, exactly as another client might send them.
TOKENS = {"@NUL@": "\\u0000", "@SURROGATE@": "\\ud800", "@1e308@": "1e308", "@-1e308@": "-1e308",
          "@2**70@": str(2**70), "@-2**70@": str(-(2**70)), "@1e-320@": "1e-320", "@1e400@": "1e400",
          "@NaN@": "NaN"}


def raw_json(value: Any) -> bytes:
    """``value`` as JSON, each quoted placeholder (or placeholder inside a string) replaced by its raw token."""
    text = json.dumps(value)
    for token, raw in TOKENS.items():
        text = text.replace(f'"{token}"', raw).replace(token, raw)
    return text.encode()


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _ingest(api: httpx.AsyncClient, batch: list[dict[str, Any]]) -> dict[str, Any]:
    r = await api.post("/api/public/ingestion", json={"batch": batch})
    assert r.status_code == 207, r.text
    body: dict[str, Any] = r.json()
    return body


async def _trace(api: httpx.AsyncClient, trace_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await api.get(f"/api/public/traces/{trace_id}")
        assert r.status_code in (200, 404), r.text
        return r.json() if r.status_code == 200 else None

    return await eventually(probe, timeout=30, what=f"trace {trace_id} readable")


async def test_nul_in_trace_input_is_kept_transformed(tally_stack: StackHandle) -> None:
    tid = f"nul-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        # The JSON escape \u0000 exactly as an SDK writes it.
        raw = raw_json({"batch": [{"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": _now(), "body": {
            "id": tid, "name": "nul-test", "input": "abc@NUL@def", "metadata": {"k@NUL@": "v@NUL@"}}}]})
        r = await api.post("/api/public/ingestion", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 207 and r.json()["errors"] == [], r.text
        trace = await _trace(api, tid)
    assert trace["input"] == f"abc{NUL_REPLACEMENT}def"
    assert trace["metadata"] == {f"k{NUL_REPLACEMENT}": f"v{NUL_REPLACEMENT}"}


async def test_scores_scoring_would_refuse_are_refused_at_intake(tally_stack: StackHandle) -> None:
    run = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        config = (await api.post("/api/public/score-configs", json={
            "name": f"range-{run}", "dataType": "NUMERIC", "minValue": 0, "maxValue": 1,
        })).raise_for_status().json()
        ids = [str(uuid.uuid4()) for _ in range(5)]
        tid = f"scored-{run}"

        def score(i: int, **body: Any) -> dict[str, Any]:
            return {"id": ids[i], "type": "score-create", "timestamp": _now(),
                    "body": {"traceId": tid, "name": f"s-{run}", "value": 0.5, **body}}

        result = await _ingest(api, [
            score(0, source="EVAL"),
            score(1, configId=f"no-such-{run}"),
            score(2, configId=config["id"], name=config["name"], value=7),
            score(3, configId=config["id"], name=config["name"], value="high"),
            score(4, source="EVAL", evaluatorName="judge", evaluatorVersion="v2", configId=config["id"],
                  name=config["name"], value=0.25),
        ])
        errors = {e["id"]: e for e in result["errors"]}
        assert [s["id"] for s in result["successes"]] == [ids[4]], result
        expected = {ids[0]: ("body.evaluatorName", "required_for_eval"), ids[1]: ("body.configId", "exists"),
                    ids[2]: ("body.value", "maximum"), ids[3]: ("body.value", "type")}
        for item, (field, rule) in expected.items():
            assert errors[item]["status"] == 400, errors[item]
            assert (errors[item]["error"]["field"], errors[item]["error"]["rule"]) == (field, rule), errors[item]

        async def recorded() -> list[dict[str, Any]] | None:
            r = (await api.get("/api/public/v3/scores", params={"traceId": tid})).raise_for_status().json()
            data: list[dict[str, Any]] = r["data"]
            return data or None

        [kept] = await eventually(recorded, timeout=30, what="the valid EVAL score recorded")
        assert kept["value"] == 0.25 and kept["source"] == "EVAL"
        stored = (await api.get(f"/api/v1/scores/{kept['id']}")).raise_for_status().json()
        assert (stored["evaluator_name"], stored["evaluator_version"]) == ("judge", "v2")
        assert stored["config_version"] == 1


async def test_edge_numbers_never_break_a_read(tally_stack: StackHandle) -> None:
    run = uuid.uuid4().hex[:8]
    tid, oid = f"numbers-{run}", f"numbers-obs-{run}"
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        big = "@2**70@"
        raw = raw_json({"batch": [
            {"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": _now(), "body": {
                "id": tid, "name": "numbers",
                "metadata": {"v": "@1e308@", "n": "@-1e308@", "big": big, "neg": "@-2**70@", "tiny": "@1e-320@"}}},
            {"id": str(uuid.uuid4()), "type": "generation-create", "timestamp": _now(), "body": {
                "id": oid, "traceId": tid, "usageDetails": {"input": big, "output": "@1e308@"},
                "costDetails": {"total": "@1e-320@"}, "metadata": {"v": "@1e308@"}, "output": {"big": big}}},
        ]})
        r = await api.post("/api/public/ingestion", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 207 and r.json()["errors"] == [], r.text
        trace = await _trace(api, tid)
        # Numbers are IEEE-754 doubles once past 64-bit integers: the nearest double, as JavaScript reads them.
        assert trace["metadata"] == {"v": 1e308, "n": -1e308, "big": float(2**70), "neg": -float(2**70),
                                     "tiny": 1e-320}
        every = "core,basic,io,metadata,usage"
        for path, params in (("/api/public/traces", {"limit": 100}),
                             ("/api/public/v2/observations", {"traceId": tid, "fields": every}),
                             ("/api/public/v2/observations", {"fields": "io,metadata", "limit": 100}),
                             ("/api/v1/traces", {}), (f"/api/v1/traces/{tid}", {})):
            got = await api.get(path, params=params)
            assert got.status_code == 200, (path, got.text)
        [obs] = (await api.get("/api/public/v2/observations",
                               params={"traceId": tid, "fields": every})).json()["data"]
        assert obs["output"] == {"big": float(2**70)}
