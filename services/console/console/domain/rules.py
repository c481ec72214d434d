"""Routing rules as a form: condition rows (group number, field, operator, value) to and from queue-router's
filter (``groups``: conditions ANDed within a group, groups ORed)."""

from __future__ import annotations

from typing import Any

from tally_shared.contracts.queues import FIELD_LABELS, LIST_VALUE_OPS, NO_VALUE_OPS, NUMERIC_FIELDS, OP_LABELS, ops_for

# queue-router's filter vocabulary (tally_shared.contracts.queues): fields and operators with words for people.
FIELDS = FIELD_LABELS
OPS = OP_LABELS
LIST_OPS = LIST_VALUE_OPS
__all__ = ["FIELDS", "LIST_OPS", "NO_VALUE_OPS", "NUMERIC_FIELDS", "OPS", "RuleFormError", "describe",
           "groups_from_form"]

ROWS = 6


class RuleFormError(ValueError):
    pass


def _number(raw: str, where: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise RuleFormError(f"{where}: {raw!r} is not a number") from None


def _value(field: str, op: str, raw: str, where: str) -> Any:
    raw = raw.strip()
    if op in NO_VALUE_OPS:
        return None
    if field == "has_error":
        if raw.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise RuleFormError(f"{where}: has_error is true or false")
        return raw.lower() in ("true", "yes", "1")
    if op in LIST_OPS:
        parts = [v.strip() for v in raw.split(",") if v.strip()]
        return [_number(p, where) for p in parts] if field in NUMERIC_FIELDS else parts
    if field in NUMERIC_FIELDS:
        return _number(raw, where)
    return raw


def groups_from_form(form: dict[str, list[str]]) -> list[list[dict[str, Any]]]:
    """Rows ``cond-{i}-group|field|op|value|name`` -> groups, in the order of their group numbers."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for i in range(ROWS):
        def get(part: str, i: int = i) -> str:
            vals = form.get(f"cond-{i}-{part}") or [""]
            return vals[0].strip()
        field, op, raw = get("field"), get("op"), get("value")
        where = f"condition {i + 1}"
        if not field or (not raw and op not in NO_VALUE_OPS):
            continue
        if field not in dict(FIELDS) or op not in dict(OPS):
            raise RuleFormError(f"{where}: unknown field or operator")
        if op not in ops_for(field):
            raise RuleFormError(f"{where}: {dict(OPS)[op]!r} does not apply to {dict(FIELDS)[field]}")
        cond: dict[str, Any] = {"field": field, "op": op}
        if field == "metadata":
            key, sep, val = raw.partition("=")
            if not key.strip() or (not sep and op not in NO_VALUE_OPS):
                raise RuleFormError(f"{where}: write metadata conditions as key=value (key alone for exists)")
            cond["key"] = key.strip()
            raw = val
            numeric = op in ("gt", "gte", "lt", "lte")
            value = _value("score" if numeric else "metadata", op, raw, where)
        else:
            value = _value(field, op, raw, where)
        if value is not None:
            cond["value"] = value
        if field == "score":
            name = get("name")
            if not name:
                raise RuleFormError(f"{where}: name the automated score")
            cond["name"] = name
        try:
            group = int(get("group") or "1")
        except ValueError:
            group = 1
        groups.setdefault(group, []).append(cond)
    if not groups:
        raise RuleFormError("add at least one condition")
    return [groups[k] for k in sorted(groups)]


def describe(groups: list[list[dict[str, Any]]]) -> str:
    ops = dict(OPS)
    labels = dict(FIELDS)
    parts = []
    for g in groups or []:
        conds = []
        for c in g:
            field = c.get("field", "?")
            label = f"score {c.get('name')}" if field == "score" else (
                f"metadata.{c.get('key')}" if field == "metadata" else labels.get(field, field))
            value = ", ".join(map(str, c["value"])) if isinstance(c.get("value"), list) else c.get("value")
            op = c.get("op", "")
            conds.append(f"{label} {ops.get(op, op)}" + ("" if op in NO_VALUE_OPS else f" {value}"))
        parts.append(" and ".join(conds))
    if not parts:
        return "every trace"
    return " or ".join(f"({p})" if len(parts) > 1 else p for p in parts)
