"""Unit tests of the pure rules (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scoring.domain.configs import BOOLEAN_CATEGORIES, Definition, apply_update, new_config
from scoring.domain.errors import Invalid
from scoring.domain.scores import ScoreInput, build_score, event_key, may_change, normalise_value
from tally_shared.events import Category, ScoreConfigData, ScoreDataType, ScoreSource

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def cfg(**kw: object) -> ScoreConfigData:
    d = Definition(**kw)
    return new_config(config_id="c1", name="q", definition=d, description=None, guidelines=None, now=NOW)


def test_text_edits_stay_in_version_definition_edits_bump_it() -> None:
    c = cfg(data_type=ScoreDataType.NUMERIC, min_value=0, max_value=5)
    ch = apply_update(c, {"description": "x", "guidelines": "g"}, NOW)
    assert ch.changed and not ch.new_version and ch.config.version == 1
    ch2 = apply_update(ch.config, {"max_value": 10}, NOW)
    assert ch2.new_version and ch2.config.version == 2 and ch2.config.guidelines == "g"
    assert not apply_update(ch2.config, {"max_value": 10}, NOW).changed
    archived = apply_update(ch2.config, {"is_archived": True}, NOW)
    assert archived.archived_changed and archived.config.version == 2


def test_boolean_categories_are_fixed() -> None:
    c = cfg(data_type=ScoreDataType.BOOLEAN)
    assert tuple(c.categories or ()) == BOOLEAN_CATEGORIES
    with pytest.raises(Invalid) as exc:
        cfg(data_type=ScoreDataType.BOOLEAN, categories=(Category(label="Y", value=1),))
    assert exc.value.problems[0].rule == "not_allowed"


@pytest.mark.parametrize(("value", "ok"), [(0.3, True), (0.35, False), (1.0, True), (-0.1, False), (0.1, True)])
def test_numeric_step_is_counted_from_min(value: float, ok: bool) -> None:
    c = cfg(data_type=ScoreDataType.NUMERIC, min_value=0, max_value=1, step=0.1)
    if ok:
        assert normalise_value(value, ScoreDataType.NUMERIC, c).value == value
    else:
        with pytest.raises(Invalid):
            normalise_value(value, ScoreDataType.NUMERIC, c)


def test_all_problems_are_reported_with_client_field_names() -> None:
    inp = ScoreInput(name=None, value="x", data_type=ScoreDataType.NUMERIC, source=ScoreSource.EVAL,
                     aliases={"trace_id": "traceId", "evaluator_name": "evaluatorName"})
    with pytest.raises(Invalid) as exc:
        build_score(inp, None, score_id="s", now=NOW)
    fields = {(p.field, p.rule) for p in exc.value.problems}
    assert {("traceId", "target_required"), ("evaluatorName", "required_for_eval"), ("name", "required"),
            ("value", "type")} <= fields


def test_keys_and_permissions() -> None:
    sc = build_score(ScoreInput(name="n", value=1, session_id="s1", source=ScoreSource.ANNOTATION,
                                config_id="c1", author_user_id="alice"),
                     cfg(data_type=ScoreDataType.NUMERIC).model_copy(update={"name": "n"}), score_id="x", now=NOW)
    assert event_key(sc) == "s1" and sc.config_version == 1
    assert may_change(sc, user_id="alice", is_admin=False, can_configure=False)
    assert not may_change(sc, user_id="bob", is_admin=False, can_configure=True)
    assert may_change(sc, user_id="boss", is_admin=True, can_configure=True)


def test_app_is_built_outside_an_event_loop() -> None:
    """``python -m scoring serve`` builds the app before uvicorn starts its loop."""
    from scoring.config import Settings
    from scoring.entrypoints.app import create_app

    app = create_app(Settings(database_url="postgresql://u@127.0.0.1:1/x", kafka_bootstrap_servers="127.0.0.1:1"))
    paths = set(app.openapi()["paths"])
    assert {"/api/public/scores", "/api/public/v3/scores", "/api/v1/scores/batch"} <= paths


async def test_server_timing_header() -> None:
    """Every answer says how long the service itself took (bench/scoring.py reads it)."""
    import httpx
    from fastapi import FastAPI

    from scoring.entrypoints.timing import ServerTiming

    app = FastAPI()

    @app.get("/x")
    async def x() -> dict[str, int]:
        return {"ok": 1}

    app.add_middleware(ServerTiming)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/x")
    assert r.headers["server-timing"].startswith("app;dur=") and float(r.headers["server-timing"][8:]) >= 0
