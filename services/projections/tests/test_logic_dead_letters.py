"""Dead letters' reads and commands over in-memory stores (no database): what a list counts, how an original is
shown, which messages a replay republishes and what it marks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from projections.application import dead_letters as app_dl
from projections.application.dead_letters import Filter, Scope

from .fakes import Calls, FakeDeadLetterChanges, FakeDeadLetterRow, FakeDeadLetterStore, T


class FakeDeadLetterReads(Calls):
    def __init__(self, rows: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__()
        self.rows = {r["id"]: r for r in rows}

    async def snapshot(self) -> None:
        self.saw("snapshot")

    async def page(self, scope: Scope, flt: Filter, *, offset: int, limit: int, head_bytes: int
                   ) -> list[dict[str, Any]]:
        self.saw("page", flt, offset=offset, limit=limit, head_bytes=head_bytes)
        return [{"id": i, "status": "open"} | {"head": r["original"][:head_bytes]} for i, r in self.rows.items()]

    async def count(self, scope: Scope, flt: Filter) -> int:
        return len(self.rows)

    async def count_by(self, scope: Scope, flt: Filter, column: str) -> dict[str, int]:
        self.saw("count_by", flt, column)
        return {"x": 1}

    async def get(self, scope: Scope, dead_letter_id: uuid.UUID) -> dict[str, Any] | None:
        return self.rows.get(str(dead_letter_id))

    async def related(self, scope: Scope, event_id: str, but: str, limit: int) -> list[dict[str, Any]]:
        self.saw("related", event_id, but, limit)
        return [{"id": "other"}]


def row(original: bytes, *, truncated: bool = False, event_id: str | None = None) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "event_id": event_id, "original": original, "original_truncated": truncated,
            "failed_at": T}


async def test_list_counts_each_dimension_over_the_other_filters_in_one_snapshot() -> None:
    store = FakeDeadLetterReads([row("é".encode() * 3000)])
    flt = Filter("open", "scoring", "tally.scores", "decode", None)
    out = await app_dl.list_dead_letters(store, Scope("p"), flt, page=3, limit=10)
    assert store.calls[0][0] == "snapshot"
    assert store.asked("page")[0][1] == {"offset": 20, "limit": 10, "head_bytes": 4 * app_dl.PREVIEW_CHARS}
    assert [(a[0], a[1]) for a, _ in store.asked("count_by")] == [
        (Filter("open", "scoring", "tally.scores", None, None), "reason_code"),
        (Filter(None, "scoring", "tally.scores", "decode", None), "status")]
    (d,) = out["data"]
    assert "head" not in d and d["preview"] == "é" * app_dl.PREVIEW_CHARS
    assert out["meta"] == {"page": 3, "limit": 10, "total": 1}


async def test_one_dead_letter_shows_its_original_and_related_refusals() -> None:
    as_json, as_text, as_bytes = row(b'{"a": 1}', event_id=str(uuid.uuid4())), row(b"{not json"), row(b"\xff\xfe")
    cut = row(b'{"a": 1', truncated=True)
    store = FakeDeadLetterReads([as_json, as_text, as_bytes, cut])
    got = await app_dl.get_dead_letter(store, Scope("p"), uuid.UUID(as_json["id"]))
    assert got["original"] == {"encoding": "json", "json": {"a": 1}} and got["related"] == [{"id": "other"}]
    assert store.asked("related") == [((as_json["event_id"], as_json["id"], app_dl.RELATED), {})]
    assert (await app_dl.get_dead_letter(store, Scope("p"), uuid.UUID(as_text["id"])))["original"] == {
        "encoding": "text", "text": "{not json"}
    assert (await app_dl.get_dead_letter(store, Scope("p"), uuid.UUID(as_bytes["id"])))["original"] == {
        "encoding": "base64", "base64": "//4="}
    assert (await app_dl.get_dead_letter(store, Scope("p"), uuid.UUID(cut["id"])))["original"]["encoding"] == "text"
    assert len(store.asked("related")) == 1  # no event id: nothing related to look for
    with pytest.raises(app_dl.NotFound):
        await app_dl.get_dead_letter(store, Scope("p"), uuid.uuid4())


async def test_replay_republishes_each_message_once_and_marks_what_it_replayed() -> None:
    a1 = FakeDeadLetterRow("tally.scores", 0, 7)
    a2 = FakeDeadLetterRow("tally.scores", 0, 7)  # another consumer refused the same message
    foreign = FakeDeadLetterRow("elsewhere", 0, 1)
    big = FakeDeadLetterRow("tally.traces", 1, 3, truncated=True)
    nokey = FakeDeadLetterRow("tally.traces", 2, 4, key=None, event_type=None)
    tx = FakeDeadLetterChanges([a1, a2, foreign, big, nokey])
    sent: list[tuple[str, bytes | None, bytes, dict[str, str]]] = []

    async def republish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        sent.append((topic, key, value, headers))

    out = await app_dl.replay(FakeDeadLetterStore(tx), republish, Scope("p"), Filter(), actor="x" * 300, limit=10)
    assert [(t, k, h) for t, k, _, h in sent] == [
        ("tally.scores", b"k", {"tally-replay-of": str(a1.id), "event-type": "ScoreRecorded"}),
        ("tally.traces", None, {"tally-replay-of": str(nokey.id)})]
    assert sent[0][2] == f"original-{a1.id}".encode()
    ((_, chosen, origins), kw), = tx.asked("mark_replayed")
    assert chosen == [a1.id, a2.id, nokey.id] and origins == [("tally.scores", 0, 7), ("tally.traces", 2, 4)]
    assert kw["actor"] == "x" * 200
    assert out["replayed"] == 3 and out["messages"] == 2 and out["more"] is False
    assert [s["id"] for s in out["skipped"]] == [str(foreign.id), str(big.id)]
    assert tx.asked("lock")[0][1]["skip_locked"] is True


async def test_replay_stops_at_the_memory_budget_and_says_there_is_more() -> None:
    rows = [FakeDeadLetterRow("tally.scores", 0, i, size=app_dl.REPLAY_BYTES // 2 + 1) for i in range(3)]
    tx = FakeDeadLetterChanges(rows)

    async def republish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        pass

    out = await app_dl.replay(FakeDeadLetterStore(tx), republish, Scope("p"), Filter(), actor="a", limit=10)
    assert out["messages"] == 1 and out["more"] is True


async def test_replay_of_one_refuses_what_it_cannot_replay() -> None:
    async def republish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        raise AssertionError("nothing to republish")

    one = Filter(None, ids=[uuid.uuid4()])
    with pytest.raises(app_dl.NotFound):
        await app_dl.replay(FakeDeadLetterStore(FakeDeadLetterChanges([])), republish, Scope("p"), one, actor="a",
                            single=True)
    tx = FakeDeadLetterChanges([FakeDeadLetterRow("tally.traces", 0, 1, truncated=True)])
    with pytest.raises(app_dl.NotReplayable, match="too large"):
        await app_dl.replay(FakeDeadLetterStore(tx), republish, Scope("p"), one, actor="a", single=True)
    assert tx.asked("lock")[0][1]["skip_locked"] is False and not tx.asked("mark_replayed")


async def test_discard() -> None:
    tx = FakeDeadLetterChanges([FakeDeadLetterRow("tally.scores", 0, i) for i in range(5)])
    out = await app_dl.discard(FakeDeadLetterStore(tx), Scope("p"), Filter(), actor="a", limit=5)
    assert out == {"discarded": 5, "more": True}
    missing = FakeDeadLetterChanges([], present=False)
    with pytest.raises(app_dl.NotFound):
        await app_dl.discard(FakeDeadLetterStore(missing), Scope("p"), Filter(None, ids=[uuid.uuid4()]), actor="a",
                             single=True)
    assert not missing.asked("mark_discarded")
