"""Pure tests of the rule compiler: the anchor index must decide exactly as evaluating every rule would."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from queue_router.domain.filters import (
    RuleFilter,
    ScoreView,
    TraceView,
    compile_condition,
    compile_rules,
    parse_filter,
)
from queue_router.domain.sampling import sample_point, sampled_in

NAMES = ["a", "b", "c", "d"]
TAGS = ["t1", "t2", "t3", "t4", "t5"]


def random_condition(rnd: random.Random) -> dict[str, Any]:
    kind = rnd.randrange(12)
    if kind == 0:
        return {"field": "name", "op": rnd.choice(["eq", "neq"]), "value": rnd.choice(NAMES)}
    if kind == 1:
        return {"field": "name", "op": rnd.choice(["in", "not_in"]), "value": rnd.sample(NAMES, 2)}
    if kind == 2:
        return {"field": "tags", "op": rnd.choice(["any_of", "all_of", "none_of"]), "value": rnd.sample(TAGS, 2)}
    if kind == 3:
        return {"field": "tags", "op": "contains", "value": rnd.choice(TAGS)}
    if kind == 4:
        return {"field": "has_error", "op": "eq", "value": rnd.random() < 0.5}
    if kind == 5:
        return {"field": "latency", "op": rnd.choice(["gt", "lt", "gte", "lte"]), "value": rnd.randrange(5)}
    if kind == 6:
        op = rnd.choice(["eq", "in", "neq"])
        return {"field": "metadata", "key": rnd.choice(["tier", "a.b"]), "op": op,
                "value": rnd.sample(["x", "y", "z"], 2) if op == "in" else rnd.choice(["x", "y", "z"])}
    if kind == 7:
        return {"field": "score", "name": rnd.choice(["s1", "s2"]), "op": rnd.choice(["gt", "lt", "exists",
                                                                                     "not_exists"]),
                **({} if rnd.random() < 0.3 else {"value": rnd.random()})}
    if kind == 8:
        return {"field": "environment", "op": rnd.choice(["eq", "exists", "not_exists"]), "value": "prod"}
    if kind == 9:
        return {"field": "observation_types", "op": "any_of", "value": ["TOOL"]}
    if kind == 10:
        return {"field": "metadata", "key": "n", "op": rnd.choice(["gt", "eq"]), "value": 3}
    return {"field": "user_id", "op": "starts_with", "value": "u"}


def fix(c: dict[str, Any]) -> dict[str, Any]:
    if c["op"] in ("exists", "not_exists"):
        c.pop("value", None)
    elif "value" not in c:
        c["value"] = 0.5
    return c


def random_trace(rnd: random.Random) -> TraceView:
    meta: dict[str, Any] = {}
    if rnd.random() < 0.7:
        meta["tier"] = rnd.choice(["x", "y", "z", 1])
    if rnd.random() < 0.5:
        meta["a"] = {"b": rnd.choice(["x", "y"])}
    if rnd.random() < 0.5:
        meta["n"] = rnd.choice([2, 3, 4, "3"])
    scores = [ScoreView(rnd.choice(["s1", "s2"]), "EVAL", None, rnd.random(), None)
              for _ in range(rnd.randrange(3))]
    return TraceView(
        trace_id=str(rnd.random()), name=rnd.choice([*NAMES, None]), tags=rnd.sample(TAGS, rnd.randrange(3)),
        has_error=rnd.random() < 0.3, latency=rnd.choice([None, 0.5, 2.0, 4.5]), metadata=meta or None,
        environment=rnd.choice(["prod", "dev", None]), observation_types=rnd.choice([(), ("TOOL",), ("SPAN",)]),
        user_id=rnd.choice(["u1", "x", None]), scores=scores)


def brute(filters: list[RuleFilter], t: TraceView) -> list[int]:
    out = []
    for i, f in enumerate(filters):
        if not f.groups or any(all(compile_condition(c)(t) for c in g.conditions) for g in f.groups):
            out.append(i)
    return out


def test_indexed_matching_equals_brute_force() -> None:
    rnd = random.Random(11)
    for _ in range(30):
        filters = [parse_filter({"groups": [
            {"conditions": [fix(random_condition(rnd)) for _ in range(rnd.randrange(1, 4))]}
            for _ in range(rnd.randrange(0, 3))]}) for _ in range(rnd.randrange(1, 40))]
        rs = compile_rules(filters)
        for _ in range(60):
            t = random_trace(rnd)
            assert rs.match(t) == brute(filters, t)


def test_semantics_of_some_conditions() -> None:
    t = TraceView(trace_id="t", name="chat", tags=["a", "b"], metadata={"c": {"tier": "gold"}, "n": 5},
                  scores=[ScoreView("tox", "EVAL", "judge", 0.8, None),
                          ScoreView("label", "API", None, None, "bad")])

    def ok(c: dict[str, Any]) -> bool:
        return compile_rules([parse_filter({"groups": [{"conditions": [c]}]})]).match(t) == [0]

    assert ok({"field": "metadata", "key": "c.tier", "op": "eq", "value": "gold"})
    assert not ok({"field": "metadata", "key": "c.tier", "op": "eq", "value": "silver"})
    assert ok({"field": "metadata", "key": "n", "op": "gte", "value": 5})
    assert not ok({"field": "metadata", "key": "n", "op": "eq", "value": "5"})
    assert ok({"field": "score", "name": "tox", "source": "EVAL", "evaluator": "judge", "op": "gt", "value": 0.7})
    assert not ok({"field": "score", "name": "tox", "source": "API", "op": "gt", "value": 0.7})
    assert ok({"field": "score", "name": "label", "op": "eq", "value": "bad"})
    assert ok({"field": "score", "name": "missing", "op": "not_exists"})
    assert ok({"field": "tags", "op": "all_of", "value": ["a", "b"]})
    assert not ok({"field": "tags", "op": "none_of", "value": ["b"]})
    assert ok({"field": "latency", "op": "not_exists"})
    assert compile_rules([RuleFilter()]).match(t) == [0]  # no groups: every trace


@pytest.mark.parametrize("cond,rule", [
    ({"field": "latency", "op": "gt", "value": "x"}, "number_required"),
    ({"field": "tags", "op": "gt", "value": 1}, "op_not_allowed"),
    ({"field": "metadata", "op": "eq", "value": "x"}, "key_required"),
    ({"field": "score", "op": "gt", "value": 1}, "name_required"),
    ({"field": "name", "op": "in", "value": "x"}, "list_required"),
    ({"field": "name", "op": "exists", "value": "x"}, "no_value"),
    ({"field": "has_error", "op": "eq", "value": 1}, "bool_required"),
])
def test_invalid_conditions_name_the_rule(cond: dict[str, Any], rule: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_filter({"groups": [{"conditions": [cond]}]})
    assert rule in str(exc.value)


def test_sampling_is_deterministic_and_near_its_rate() -> None:
    assert sample_point("r", "o") == sample_point("r", "o")
    assert sample_point("r1", "o") != sample_point("r2", "o")
    n = sum(sampled_in("rule", f"obj-{i}", 0.25) for i in range(20_000))
    assert 4500 < n < 5500


def test_groups_bounded_below_on_a_number_match_as_brute_force() -> None:
    """Groups without an anchor but with a lower bound (gt/gte on a number) are checked only when the trace's value
    reaches the bound: the same matches as evaluating every rule, at and around the bounds."""
    rnd = random.Random(5)
    fields = ["latency", "total_cost", "total_tokens", "input_tokens"]
    values = [None, -1.0, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 1e9, float("inf"), float("nan")]
    bounded = 0
    for _ in range(30):
        filters = []
        for _ in range(rnd.randrange(1, 25)):
            conds: list[dict[str, Any]] = [
                {"field": rnd.choice(fields), "op": rnd.choice(["gt", "gte", "lt", "lte", "eq"]),
                 "value": rnd.choice([0, 1, 2, 2.5, 3, -1])} for _ in range(rnd.randrange(1, 3))]
            if rnd.random() < 0.3:
                conds.append(fix(random_condition(rnd)))
            filters.append(parse_filter({"groups": [{"conditions": conds}]}))
        rs = compile_rules(filters)
        bounded += sum(len(groups) for _, _, groups in rs.bounded)
        for _ in range(60):
            t = TraceView(trace_id="t", latency=rnd.choice(values), total_cost=rnd.choice(values),
                          total_tokens=rnd.choice(values), input_tokens=rnd.choice(values),
                          metadata={"tier": "x"}, tags=["t1"])
            assert rs.match(t) == brute(filters, t)
    assert bounded > 100
