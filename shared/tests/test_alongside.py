"""Pure tests of ``alongside``: computing in steps while a statement runs, the statement always waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tally_shared.db import alongside


def steps(n: int, done: list[int], fail_at: int | None = None) -> Iterator[None]:
    for i in range(n):
        if i == fail_at:
            raise ValueError("work failed")
        done.append(i)
        yield None


async def test_work_runs_while_the_statement_runs_and_stops_when_it_is_done() -> None:
    gate = asyncio.Event()

    async def statement() -> str:
        await gate.wait()
        return "rows"

    done: list[int] = []

    def work() -> Iterator[None]:
        for i in range(100):
            done.append(i)
            if i == 4:
                gate.set()  # the statement's reply "arrives" during the fifth step
            yield None

    it = work()
    assert await alongside(statement(), it) == "rows"
    assert done == [0, 1, 2, 3, 4]
    assert next(it, "rest") is None  # the rest of the work is left for the caller


async def test_the_statement_is_waited_for_when_the_work_fails() -> None:
    finished: list[str] = []

    async def statement() -> None:
        await asyncio.sleep(0.05)
        finished.append("statement")

    with pytest.raises(ValueError, match="work failed"):
        await alongside(statement(), steps(10, [], fail_at=2))
    assert finished == ["statement"]


async def test_the_statement_error_is_raised_after_the_work() -> None:
    async def statement() -> None:
        raise RuntimeError("statement failed")

    done: list[int] = []
    with pytest.raises(RuntimeError, match="statement failed"):
        await alongside(statement(), steps(3, done))
    assert done == [0]  # the failure is seen after the first step, not after all of them
