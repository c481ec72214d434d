"""Applying a batch: its partitions side by side, and a statement overlapped with computing (no database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from projections.application import handlers
from projections.application.unit_of_work import UnitOfWork
from tally_shared.events import DatasetRunItemCreated, ScoreDeleted
from tally_shared.records import Event

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def ev(partition: int, cls: Any = ScoreDeleted) -> Event:
    return Event(uuid.uuid4(), cls, "p", "k", NOW, {}, partition)


class Recorder:
    def __init__(self, fail: set[int] | None = None) -> None:
        self.calls: list[list[int]] = []
        self.running = 0
        self.most = 0
        self.done: list[int] = []
        self.fail = fail or set()

    async def __call__(self, events: Sequence[Event], _deps: Any) -> int:
        self.calls.append([e.partition for e in events])
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01 * (1 + events[0].partition))
        self.running -= 1
        self.done.append(events[0].partition)
        if events[0].partition in self.fail:
            raise RuntimeError(f"partition {events[0].partition}")
        return len(events)


async def test_partitions_of_a_batch_are_applied_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(handlers, "apply_batch", rec)
    batch = [ev(0), ev(1), ev(0), ev(2), ev(1)]
    assert await handlers.apply_by_partition(batch, Any, concurrency=2) == 5
    assert sorted(rec.calls) == [[0, 0], [1, 1], [2]]
    assert rec.most == 2  # never more than asked for


async def test_one_partition_or_a_dataset_run_item_keeps_the_batch_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(handlers, "apply_batch", rec)
    await handlers.apply_by_partition([ev(3), ev(3)], Any)
    await handlers.apply_by_partition([ev(0), ev(1, DatasetRunItemCreated)], Any)
    await handlers.apply_by_partition([ev(0), ev(1)], Any, concurrency=1)
    assert rec.calls == [[3, 3], [0, 1], [0, 1]]


def test_a_small_batch_is_one_transaction_a_large_one_split_per_partition() -> None:
    from projections.entrypoints.consumers import SPLIT_FROM, concurrency_for

    assert concurrency_for(1, 2) == 1
    assert concurrency_for(SPLIT_FROM - 1, 2) == 1
    assert concurrency_for(SPLIT_FROM, 2) == 2
    assert concurrency_for(10, 3, split_from=10) == 3


async def test_a_failing_partition_raises_after_every_transaction_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(fail={0})
    monkeypatch.setattr(handlers, "apply_batch", rec)
    with pytest.raises(RuntimeError, match="partition 0"):
        await handlers.apply_by_partition([ev(0), ev(1), ev(2)], Any, concurrency=3)
    assert sorted(rec.done) == [0, 1, 2]  # the slower ones finished before the error came out


async def test_overlapped_statement_is_awaited_even_when_the_work_fails() -> None:
    uow = UnitOfWork.__new__(UnitOfWork)
    ran: list[str] = []

    async def statement() -> str:
        ran.append("sent")
        await asyncio.sleep(0.01)
        ran.append("done")
        return "result"

    assert await uow.overlapped(statement(), lambda: ran.append("work")) == "result"
    assert ran == ["sent", "work", "done"]  # the statement went out before the work ran

    ran.clear()

    def boom() -> None:
        raise ValueError("work")

    with pytest.raises(ValueError, match="work"):
        await uow.overlapped(statement(), boom)
    assert ran == ["sent", "done"]


def test_row_values_with_and_without_string_keys() -> None:
    import decimal

    import orjson

    from projections.adapters.statements import Positional

    when = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    rows = [["p", "t", {"a": 1, "b": [1.5, None, "\u2400 é"]}, when, decimal.Decimal("1.25"), uuid.UUID(int=7)]]
    assert orjson.loads(Positional.values(rows)["rows"]) == [
        ["p", "t", {"a": 1, "b": [1.5, None, "\u2400 é"]}, "2026-01-01T12:30:00+00:00", "1.25",
         str(uuid.UUID(int=7))]]
    # a dict with a key that is not a string: written as with OPT_NON_STR_KEYS
    assert orjson.loads(Positional.values([[{1: "x", "y": 2}]])["rows"]) == [[{"1": "x", "y": 2}]]


def test_a_new_row_from_one_update_has_every_column_in_order() -> None:
    from projections.adapters.statements import OBS_FIELDS, Statements
    from projections.adapters.tables import make_tables
    from projections.application.projections.traces import _writers

    w = _writers(Statements(make_tables("tally_projections"))).observations
    upd = {"trace_id": "t", "name": "llm", "input": "x" * 1000, "metadata": {"a": 1}, "level": None}
    row = w.new_row(("p", "o1"), [(5, NOW, upd)])
    assert list(row) == ["project_id", "id", *OBS_FIELDS, "field_ts", "created_at", "updated_at"]
    assert row == {**dict.fromkeys(OBS_FIELDS), "project_id": "p", "id": "o1", **upd,
                   "field_ts": [5, sum(w.bits[n] for n in upd)], "created_at": NOW, "updated_at": NOW}
    again = w.new_row(("p", "o2"), [(6, NOW, {})])
    assert again["field_ts"] == [] and again["input"] is None and row["id"] == "o1"  # the template is copied


def test_inputs_and_outputs_travel_as_their_json_text_beside_the_json_rows() -> None:
    import orjson

    from projections.adapters.statements import Statements
    from projections.adapters.tables import make_tables

    obs = Statements(make_tables("tally_projections")).obs_new
    assert obs.raw_columns == ("input", "output")
    assert "substring(CAST(:raw AS bytea) FROM CAST(e->>" in obs.sql
    blank = dict.fromkeys(obs.columns)
    rows = [blank | {"project_id": "p", "id": "o0", "input": {"q": [1, "é\n"]}, "output": "a,\n,b"},
            blank | {"project_id": "p", "id": "o1", "output": b'{"stored":true}'},  # a stored row's text
            blank | {"project_id": "p", "id": "o2", "input": {1: Decimal("1.5")}}]
    params = obs.of_rows(rows)
    decoded = orjson.loads(params["rows"])
    assert [r[:2] for r in decoded] == [["p", "o0"], ["p", "o1"], ["p", "o2"]]
    assert len(decoded[0]) == len(obs.json_columns) + 4
    raw = params["raw"]

    def text(start: int, length: int) -> bytes | None:  # as substring() and NULLIF() read it
        return raw[start - 1:start - 1 + length] or None

    assert [(text(*r[-4:-2]), text(*r[-2:])) for r in decoded] == [
        (orjson.dumps({"q": [1, "é\n"]}), b'"a,\\n,b"'), (None, b'{"stored":true}'), (b'{"1":"1.5"}', None)]
    # a stored text holding a NUL byte (the separator; never JSON text) is not split on it: each value alone
    odd = obs.of_rows([blank | {"project_id": "p", "id": "o3", "input": b'["\x00",\x00]', "output": "x"}])
    r = orjson.loads(odd["rows"])[0]
    assert (odd["raw"][r[-4] - 1:r[-4] - 1 + r[-3]], odd["raw"][r[-2] - 1:r[-2] - 1 + r[-1]]) == (
        b'["\x00",\x00]', b'"x"')
    assert orjson.loads(obs.params([{"project_id": "p", "id": "o9"}])["rows"])[0][-4:] == [1, 0, 1, 0]
