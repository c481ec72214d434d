"""Rule filters: the JSON shape, its validation, and compilation into fast in-memory predicates.

Shape (documented in docs/api.md, "Queues and routing")::

    {"groups": [                       # groups are ORed; an empty list matches every trace
        {"conditions": [               # conditions in a group are ANDed
            {"field": "name", "op": "eq", "value": "checkout-agent"},
            {"field": "metadata", "key": "customer.tier", "op": "in", "value": ["gold", "platinum"]},
            {"field": "score", "name": "toxicity", "source": "EVAL", "evaluator": "judge-v2",
             "op": "gte", "value": 0.7}
        ]}
    ]}

Compilation: every condition becomes a closure over a ``TraceView``; a rule set is indexed by one "anchor"
condition per group (an equality on a selective field), so an event is checked only against the groups whose
anchor it satisfies plus the few groups that have no anchor. That keeps evaluation close to constant in the
number of rules.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tally_shared.contracts.queues import (
    ALL_FIELDS,
    BOOL_OPS,
    LIST_FIELDS,
    LIST_OPS,
    MAX_CONDITIONS,
    MAX_GROUPS,
    MAX_LIST,
    MAX_STRING,
    METADATA_OPS,
    NUMBER_FIELDS,
    NUMBER_OPS,
    SCORE_OPS,
    STRING_FIELDS,
    STRING_OPS,
    Condition,
    Group,
    Op,
    RuleFilter,
    Scalar,
    check_condition,
    is_number,
)

__all__ = ["ALL_FIELDS", "BOOL_OPS", "LIST_FIELDS", "LIST_OPS", "MAX_CONDITIONS", "MAX_GROUPS", "MAX_LIST",
           "MAX_STRING", "METADATA_OPS", "NUMBER_FIELDS", "NUMBER_OPS", "SCORE_OPS", "STRING_FIELDS", "STRING_OPS",
           "Condition", "FilterError", "Group", "Op", "RuleFilter", "RuleSet", "Scalar", "ScoreView", "TraceView",
           "check_condition", "compile_condition", "compile_rules", "parse_filter"]


class FilterError(ValueError):
    """A filter that cannot be compiled: ``field`` is the JSON path, ``rule`` the rule broken."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.message = message


# ---------------------------------------------------------------------------------------------------------------
# What a predicate sees


@dataclass(slots=True)
class ScoreView:
    name: str
    source: str
    evaluator: str | None
    value: float | None
    string_value: str | None
    string_values: Sequence[str] | None = None


@dataclass(slots=True)
class TraceView:
    trace_id: str
    name: str | None = None
    environment: str | None = None
    release: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    dataset_run_name: str | None = None
    tags: Sequence[str] = ()
    observation_types: Sequence[str] = ()
    observation_names: Sequence[str] = ()
    latency: float | None = None
    total_cost: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    total_tokens: float | None = None
    has_error: bool = False
    metadata: dict[str, Any] | None = None
    scores: Sequence[ScoreView] = ()
    _score_names: frozenset[str] | None = field(default=None, repr=False)

    def score_names(self) -> frozenset[str]:
        if self._score_names is None:
            self._score_names = frozenset(s.name for s in self.scores)
        return self._score_names


Predicate = Callable[[TraceView], bool]


def _metadata_get(meta: dict[str, Any] | None, path: tuple[str, ...]) -> tuple[bool, Any]:
    cur: Any = meta
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _scalar_eq(a: Any, b: Any) -> bool:
    # Metadata values arrive as JSON: "42" and 42 are different, but 42 and 42.0 are the same.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _compare(op: str, x: Any, v: Any) -> bool:
    """x (the trace's value, present) against v (the condition's value)."""
    if op == "eq":
        return _scalar_eq(x, v)
    if op == "neq":
        return not _scalar_eq(x, v)
    if op == "in":
        return any(_scalar_eq(x, y) for y in v)
    if op == "not_in":
        return not any(_scalar_eq(x, y) for y in v)
    if op == "contains":
        if isinstance(x, str):
            return v in x
        if isinstance(x, list):
            return any(_scalar_eq(e, v) for e in x)
        return False
    if op == "starts_with":
        return isinstance(x, str) and x.startswith(v)
    if not is_number(x):
        return False
    if op == "gt":
        return bool(x > v)
    if op == "gte":
        return bool(x >= v)
    if op == "lt":
        return bool(x < v)
    if op == "lte":
        return bool(x <= v)
    raise AssertionError(op)


def compile_condition(c: Condition) -> Predicate:
    f, op, v = c.field, c.op, c.value
    if f in STRING_FIELDS:
        attr = f
        if op == "eq":
            return lambda t: getattr(t, attr) == v
        if op == "neq":
            return lambda t: getattr(t, attr) != v
        if op == "in":
            sv = frozenset(v)
            return lambda t: getattr(t, attr) in sv
        if op == "not_in":
            sv = frozenset(v)
            return lambda t: getattr(t, attr) not in sv
        if op == "contains":
            return lambda t: (x := getattr(t, attr)) is not None and v in x
        if op == "starts_with":
            return lambda t: (x := getattr(t, attr)) is not None and x.startswith(v)
        if op == "exists":
            return lambda t: getattr(t, attr) is not None
        return lambda t: getattr(t, attr) is None
    if f in LIST_FIELDS:
        attr = f
        if op == "contains":
            return lambda t: v in getattr(t, attr)
        if op == "exists":
            return lambda t: len(getattr(t, attr)) > 0
        if op == "not_exists":
            return lambda t: len(getattr(t, attr)) == 0
        sv = frozenset(v)
        if op == "any_of":
            return lambda t: not sv.isdisjoint(getattr(t, attr))
        if op == "all_of":
            return lambda t: sv.issubset(getattr(t, attr))
        return lambda t: sv.isdisjoint(getattr(t, attr))
    if f in NUMBER_FIELDS:
        attr = f
        if op == "exists":
            return lambda t: getattr(t, attr) is not None
        if op == "not_exists":
            return lambda t: getattr(t, attr) is None
        num = float(v)
        cmp = {"eq": float.__eq__, "neq": float.__ne__, "gt": float.__gt__, "gte": float.__ge__,
               "lt": float.__lt__, "lte": float.__le__}[op]
        return lambda t: (x := getattr(t, attr)) is not None and cmp(float(x), num)
    if f == "has_error":
        want = bool(v)
        return lambda t: t.has_error is want
    if f == "metadata":
        assert c.key is not None
        path = tuple(c.key.split("."))
        if op == "exists":
            return lambda t: _metadata_get(t.metadata, path)[0]
        if op == "not_exists":
            return lambda t: not _metadata_get(t.metadata, path)[0]

        if op in ("eq", "in") and all(isinstance(x, str) for x in (v if isinstance(v, list) else [v])):
            # The common case, kept cheap: a string can only equal a string.
            wanted = frozenset(v if isinstance(v, list) else [v])
            if len(path) == 1:
                k0 = path[0]
                return lambda t: t.metadata is not None and isinstance(x := t.metadata.get(k0), str) \
                    and x in wanted

            def _meta_str(t: TraceView) -> bool:
                found, x = _metadata_get(t.metadata, path)
                return found and isinstance(x, str) and x in wanted

            return _meta_str

        def _meta(t: TraceView) -> bool:
            found, x = _metadata_get(t.metadata, path)
            return found and x is not None and _compare(op, x, v)

        return _meta
    # score
    name, source, evaluator = c.name, c.source, c.evaluator

    def _scores(t: TraceView) -> Iterable[ScoreView]:
        if name not in t.score_names():
            return ()
        return [s for s in t.scores if s.name == name and (source is None or s.source == source)
                and (evaluator is None or s.evaluator == evaluator)]

    if op == "exists":
        return lambda t: any(True for _ in _scores(t))
    if op == "not_exists":
        return lambda t: not any(True for _ in _scores(t))

    def _score_value_matches(s: ScoreView) -> bool:
        if s.value is not None and (is_number(v) or (isinstance(v, list) and all(is_number(x) for x in v))):
            return _compare(op, s.value, v)
        if s.string_values:
            return any(_compare(op, x, v) for x in s.string_values)
        if s.string_value is not None:
            return _compare(op, s.string_value, v)
        if s.value is not None and isinstance(v, bool):
            return _compare(op, bool(s.value), v)
        return False

    return lambda t: any(_score_value_matches(s) for s in _scores(t))


def parse_filter(data: Any) -> RuleFilter:
    return RuleFilter.model_validate(data)


# ---------------------------------------------------------------------------------------------------------------
# Rule sets


@dataclass(frozen=True, slots=True)
class CompiledGroup:
    rule_index: int
    checks: tuple[Predicate, ...]


# Anchor preference: the most selective kinds first.
_ANCHOR_FIELDS = ("name", "dataset_run_name", "session_id", "user_id", "score", "tags", "release",
                  "observation_names", "metadata", "environment", "observation_types", "has_error")


def _anchor_keys(c: Condition) -> tuple[list[tuple[str, Any]], bool] | None:
    """Index keys under which a trace could satisfy ``c``, and whether being found under one of them means it does
    (``c``'s own check can then be left out); None if ``c`` cannot serve as an anchor."""
    f, op, v = c.field, c.op, c.value
    if f in STRING_FIELDS:
        if op == "eq":
            return [(f, v)], True
        if op == "in":
            return [(f, x) for x in v], True
        return None
    if f in LIST_FIELDS:
        if op == "contains":
            return [(f, v)], True
        if op == "any_of":
            return [(f, x) for x in v], True
        if op == "all_of":
            return [(f, x) for x in v[:1]], False
        return None
    if f == "has_error" and v is True:
        return [("has_error", True)], True
    if f == "metadata" and op in ("eq", "in"):
        values = v if isinstance(v, list) else [v]
        if all(isinstance(x, str) for x in values):
            return [("m", (c.key, x)) for x in values], True
        return None
    if f == "score" and op != "not_exists":
        return [("score", c.name)], False  # found by name; the value is still checked
    return None


_SCALAR_ANCHORS = ("name", "dataset_run_name", "session_id", "user_id", "release", "environment")
_LIST_ANCHORS = ("tags", "observation_names", "observation_types")


@dataclass
class RuleSet:
    """Compiled rules of one project. ``match(view)`` returns the indexes of the rules that match."""

    size: int
    index: dict[tuple[str, Any], list[CompiledGroup]]
    unanchored: list[CompiledGroup]
    # metadata keys some group is anchored on: (key as written, its path)
    meta_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # groups without an anchor but with a lower bound on a number field ("latency gt 3"): per field, the bounds in
    # ascending order and their groups; only those whose bound is at most the trace's value are checked
    bounded: tuple[tuple[str, list[float], list[CompiledGroup]], ...] = ()
    # the fields some group is anchored on (a trace's other fields are not looked up)
    scalar_anchors: tuple[str, ...] = _SCALAR_ANCHORS
    list_anchors: tuple[str, ...] = _LIST_ANCHORS
    error_anchored: bool = True
    score_anchored: bool = True

    def match(self, t: TraceView) -> list[int]:
        if self.size == 0:
            return []
        idx = self.index
        candidates: list[CompiledGroup] = list(self.unanchored)
        if idx:
            get = idx.get
            for f in self.scalar_anchors:
                hit = get((f, getattr(t, f)))
                if hit:
                    candidates += hit
            for f in self.list_anchors:
                for x in getattr(t, f):
                    hit = get((f, x))
                    if hit:
                        candidates += hit
            if t.has_error and self.error_anchored:
                hit = get(("has_error", True))
                if hit:
                    candidates += hit
            if t.scores and self.score_anchored:
                for sname in t.score_names():
                    hit = get(("score", sname))
                    if hit:
                        candidates += hit
            if t.metadata and self.meta_keys:
                for mkey, path in self.meta_keys:
                    found, x = _metadata_get(t.metadata, path)
                    if found and isinstance(x, str):
                        hit = get(("m", (mkey, x)))
                        if hit:
                            candidates += hit
        for attr, bounds, groups in self.bounded:
            v = getattr(t, attr)
            if v is not None:
                # a bound equal to the value is in (gte); its own check decides (gt)
                n = bisect_right(bounds, float(v))
                if n:
                    candidates += groups[:n]
        if not candidates:
            return []
        matched: set[int] = set()
        for g in candidates:
            if g.rule_index in matched:
                continue
            for check in g.checks:
                if not check(t):
                    break
            else:
                matched.add(g.rule_index)
        return sorted(matched)


def compile_rules(filters: Sequence[RuleFilter]) -> RuleSet:
    index: dict[tuple[str, Any], list[CompiledGroup]] = {}
    unanchored: list[CompiledGroup] = []
    by_bound: dict[str, list[tuple[float, CompiledGroup]]] = {}
    for i, flt in enumerate(filters):
        if not flt.groups:
            unanchored.append(CompiledGroup(i, ()))
            continue
        for g in flt.groups:
            best: list[tuple[str, Any]] | None = None
            implied: Condition | None = None  # the anchor, if finding the group under its keys says it holds
            best_rank = len(_ANCHOR_FIELDS)
            for c in g.conditions:
                found = _anchor_keys(c)
                if found is None:
                    continue
                rank = _ANCHOR_FIELDS.index(c.field)
                if rank < best_rank:
                    best, best_rank = found[0], rank
                    implied = c if found[1] else None
            if best is None:
                compiled = CompiledGroup(i, tuple(compile_condition(c) for c in g.conditions))
                bound = _lower_bound(g.conditions)
                if bound is None:
                    unanchored.append(compiled)
                else:
                    by_bound.setdefault(bound[0], []).append((bound[1], compiled))
            else:
                compiled = CompiledGroup(i, tuple(compile_condition(c) for c in g.conditions if c is not implied))
                for key in dict.fromkeys(best):
                    index.setdefault(key, []).append(compiled)
    meta_keys = tuple(sorted({(k[1][0], tuple(k[1][0].split("."))) for k in index if k[0] == "m"}))
    bounded = []
    for attr, entries in sorted(by_bound.items()):
        entries.sort(key=lambda e: e[0])
        bounded.append((attr, [b for b, _ in entries], [g for _, g in entries]))
    kinds = {k[0] for k in index}
    return RuleSet(size=len(filters), index=index, unanchored=unanchored, meta_keys=meta_keys,
                   bounded=tuple(bounded), scalar_anchors=tuple(f for f in _SCALAR_ANCHORS if f in kinds),
                   list_anchors=tuple(f for f in _LIST_ANCHORS if f in kinds), error_anchored="has_error" in kinds,
                   score_anchored="score" in kinds)


def _lower_bound(conditions: Sequence[Condition]) -> tuple[str, float] | None:
    """A condition of the group that fails below a bound: (number field, the bound), the highest such bound.
    A trace whose value is under it (or missing) cannot satisfy the group."""
    best: tuple[str, float] | None = None
    for c in conditions:
        if c.field in NUMBER_FIELDS and c.op in ("gt", "gte") and is_number(c.value):
            b = float(c.value)
            if not math.isnan(b) and (best is None or b > best[1]):
                best = (c.field, b)
    return best
