"""Score configs as form fields: which options the keyboard can pick, and a reviewer's input turned into the
value the scoring API expects. Scoring validates again; checking here gives the reviewer the error on the page."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    key: str  # the keyboard key that picks it ("1".."9", "0")
    label: str
    value: str  # the form value


def options(config: dict[str, Any]) -> list[Option]:
    """Choices a reviewer picks with number keys: categories, booleans, or a small integer rating scale."""
    dtype = config.get("data_type")
    if dtype == "CATEGORICAL":
        cats = config.get("categories") or []
        return [Option(_key(i), str(c["label"]), str(c["label"])) for i, c in enumerate(cats[:10])]
    if dtype == "BOOLEAN":
        return [Option("1", "True", "1"), Option("2", "False", "0")]
    if dtype == "NUMERIC":
        lo, hi, step = config.get("min_value"), config.get("max_value"), config.get("step") or 1
        if lo is None or hi is None or step <= 0:
            return []
        n = math.floor((hi - lo) / step + 1e-9) + 1
        if not (lo == int(lo) and step == int(step) and 1 < n <= 10):
            return []
        values = [int(lo + i * step) for i in range(n)]
        # A scale like 1..5 is picked by its own digits; 0..9 too. Other integer scales by position.
        if all(0 <= v <= 9 for v in values):
            return [Option(str(v), str(v), str(v)) for v in values]
        return [Option(_key(i), str(v), str(v)) for i, v in enumerate(values)]
    return []


def _key(i: int) -> str:
    return str((i + 1) % 10)


class FormError(ValueError):
    pass


def parse_value(config: dict[str, Any], raw: list[str]) -> Any:
    """The value to send for one config, from the form's strings; None when the field was left empty."""
    dtype = config.get("data_type")
    values = [r.strip() for r in raw if r is not None and r.strip() != ""]
    if not values:
        return None
    name = config.get("name", "score")
    if dtype == "NUMERIC":
        try:
            v = float(values[0])
        except ValueError:
            raise FormError(f"{name}: enter a number") from None
        if not math.isfinite(v):
            raise FormError(f"{name}: enter a finite number")
        lo, hi = config.get("min_value"), config.get("max_value")
        if lo is not None and v < lo:
            raise FormError(f"{name}: at least {lo:g}")
        if hi is not None and v > hi:
            raise FormError(f"{name}: at most {hi:g}")
        return v
    if dtype == "BOOLEAN":
        if values[0].lower() in ("1", "true", "yes"):
            return 1.0
        if values[0].lower() in ("0", "false", "no"):
            return 0.0
        raise FormError(f"{name}: choose true or false")
    if dtype == "CATEGORICAL":
        labels = [str(c["label"]) for c in config.get("categories") or []]
        unknown = [v for v in values if v not in labels]
        if unknown:
            raise FormError(f"{name}: unknown category {unknown[0]!r}")
        if config.get("multi_select"):
            return list(dict.fromkeys(values))
        return values[0]
    # TEXT
    limit = config.get("max_length")
    if limit and len(values[0]) > limit:
        raise FormError(f"{name}: at most {limit} characters")
    return values[0]


def display_value(score: dict[str, Any]) -> str:
    """How a recorded score reads: the category label or text if there is one, else the number."""
    if score.get("string_values"):
        return ", ".join(map(str, score["string_values"]))
    if score.get("string_value") not in (None, ""):
        return str(score["string_value"])
    v = score.get("value")
    if isinstance(v, int | float):
        if score.get("data_type") == "BOOLEAN":
            return "True" if v else "False"
        return f"{v:g}"
    return "" if v is None else str(v)


def form_value(config: dict[str, Any], score: dict[str, Any] | None) -> list[str]:
    """A recorded score turned back into the form's selected values (to edit a completed item)."""
    if not score:
        return []
    dtype = config.get("data_type")
    if dtype == "CATEGORICAL":
        if score.get("string_values"):
            return [str(s) for s in score["string_values"]]
        if score.get("string_value"):
            return [str(score["string_value"])]
        for c in config.get("categories") or []:
            if score.get("value") is not None and float(c["value"]) == float(score["value"]):
                return [str(c["label"])]
        return []
    if dtype == "BOOLEAN":
        return ["1" if score.get("value") else "0"] if score.get("value") is not None else []
    if dtype == "NUMERIC":
        v = score.get("value")
        return [f"{v:g}"] if isinstance(v, int | float) else []
    return [str(score.get("string_value") or score.get("value") or "")]
