"""The one transformation intake applies to content PostgreSQL or a JSON encoder cannot hold."""

from __future__ import annotations

import json

import orjson
import pytest

from tally_shared import content
from tally_shared.content import NUL_REPLACEMENT as NUL
from tally_shared.content import SURROGATE_REPLACEMENT as BAD


def test_nul_and_lone_surrogates_in_strings_and_keys_are_replaced_and_pairs_kept() -> None:
    value = {"a\x00": ["x\x00y", "\ud800", "ok \U0001f600 \U0010ffff \u202e \u200d"], "n": None, "b": True}
    assert content.clean(value) == {f"a{NUL}": [f"x{NUL}y", BAD, "ok \U0001f600 \U0010ffff \u202e \u200d"],
                                    "n": None, "b": True}


def test_clean_returns_the_same_object_when_nothing_changes() -> None:
    value = {"a": [1, 2.5, "x", {"b": None}], "c": 2**63}
    assert content.clean(value) is value


def test_numbers_are_doubles_past_64_bit_integers() -> None:
    assert content.clean([2**64 - 1, -(2**63), 2**70, -(2**70), 1e308, 1e-320]) == [
        2**64 - 1, -(2**63), float(2**70), -float(2**70), 1e308, 1e-320]
    assert isinstance(content.clean(2**70), float)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 10**400])
def test_numbers_no_double_holds_are_refused_naming_where(bad: float) -> None:
    with pytest.raises(content.Unrepresentable) as exc:
        content.clean({"body": {"metadata": {"v": [1, bad]}}})
    assert exc.value.path == "body.metadata.v[1]" and exc.value.rule == "finite_number"


def test_loads_takes_the_fast_path_and_leaves_nul_to_dumps() -> None:
    assert content.loads(b'{"a": 1}') == ({"a": 1}, False)
    value, must_clean = content.loads(b'{"a": "x\\u0000"}')
    assert not must_clean and orjson.loads(content.dumps(value)) == {"a": f"x{NUL}"}


def test_loads_falls_back_for_lone_surrogates() -> None:
    value, must_clean = content.loads(b'{"a": "\\ud800 \\ud83d\\ude00"}')
    assert must_clean and content.clean(value) == {"a": f"{BAD} \U0001f600"}


def test_loads_reads_pairs_and_big_integers_without_cleaning() -> None:
    assert content.loads(b'{"a": "\\ud83d\\ude00", "n": -1180591620717411303424}') == (
        {"a": "\U0001f600", "n": -float(2**70)}, False)


@pytest.mark.parametrize("raw", [b'{"a": 1e400}', b'{"a": NaN}', b'{"a": -Infinity}'])
def test_loads_keeps_unrepresentable_numbers_for_clean_to_refuse_per_item(raw: bytes) -> None:
    value, must_clean = content.loads(raw)
    assert must_clean
    with pytest.raises(content.Unrepresentable):
        content.clean(value)


def test_loads_refuses_what_is_not_json() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        content.loads(b'{"a": ')


def test_dumps_cleans_only_when_needed() -> None:
    assert content.dumps({"a": "b"}) == b'{"a":"b"}'
    assert orjson.loads(content.dumps({"a\x00": "\ud800", "n": 2**70})) == {f"a{NUL}": BAD, "n": float(2**70)}


def test_stored_json_reads_back_as_doubles() -> None:
    # jsonb prints 1e308 as 309 digits and 1e-320 as 320 decimals.
    assert content.loads_stored("1" + "0" * 308) == 1e308
    assert content.loads_stored("0." + "0" * 319 + "1") == 1e-320
    # Beyond a double (intake never stores one): read as infinity, which the response encoder writes as null.
    assert content.loads_stored("1" + "0" * 400) == float("inf")
    assert orjson.dumps(content.loads_stored("[1" + "0" * 400 + "]")) == b"[null]"


def test_read_responses_never_fail_for_one_stored_value() -> None:
    from datetime import UTC, datetime

    deep: object = 1
    for _ in range(300):
        deep = [deep]
    value = {"data": [{"input": deep, "n": 2**70, "x": float("nan"), "at": datetime(2024, 1, 1, tzinfo=UTC)}]}
    out = content.dumps_read(value, option=orjson.OPT_UTC_Z)
    back = json.loads(out)
    assert back["data"][0]["n"] == 2**70 and back["data"][0]["x"] is None
    assert back["data"][0]["at"] == "2024-01-01T00:00:00Z"
    assert content.dumps_read({"a": 1}) == b'{"a":1}'
