"""Field rules shared by every ingest format: each converter takes an untrusted JSON value and returns the value
to publish, or raises ``Invalid`` naming the field and the rule.

Everything these return must validate against the pydantic models in ``tally_shared.events`` (the consumers
validate every event they read), without paying pydantic's per-object cost on the hot path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from tally_shared.events.traces import MAX_ID_LENGTH

LEVELS = frozenset(("DEBUG", "DEFAULT", "WARNING", "ERROR"))
OBSERVATION_TYPES = frozenset(
    ("SPAN", "GENERATION", "EVENT", "AGENT", "TOOL", "CHAIN", "RETRIEVER", "EVALUATOR", "EMBEDDING", "GUARDRAIL")
)
SCORE_DATA_TYPES = frozenset(("NUMERIC", "CATEGORICAL", "BOOLEAN", "TEXT"))
SCORE_SOURCES = frozenset(("ANNOTATION", "EVAL", "API"))
MAX_SHORT_STRING = 4096


class Invalid(ValueError):
    """One field of one item broke a rule."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.rule = rule
        self.message = message

    def detail(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


Converter = Callable[[str, Any], Any]


def json_size(value: Any) -> int:
    """Size of an item as compact JSON; nesting too deep to write counts as over any limit."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        return 1 << 62


def ident(field: str, v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise Invalid(field, "type", "must be a string")
    if not v or len(v) > MAX_ID_LENGTH:
        raise Invalid(field, "length", f"must be 1 to {MAX_ID_LENGTH} characters")
    return v


def opt_ident(field: str, v: Any) -> str | None:
    return None if v is None else ident(field, v)


def opt_str(field: str, v: Any) -> str | None:
    if v is None or isinstance(v, str):
        if v is not None and len(v) > MAX_SHORT_STRING:
            raise Invalid(field, "length", f"must be at most {MAX_SHORT_STRING} characters")
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise Invalid(field, "type", "must be a string")


def opt_text(field: str, v: Any) -> str | None:
    """A free-text string (status message, comment): bounded only by the item size limit."""
    if v is None or isinstance(v, str):
        return v
    raise Invalid(field, "type", "must be a string")


def parse_time(field: str, v: Any) -> datetime:
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            try:
                # RFC 3339 allows a lowercase "t" and "z".
                t = datetime.fromisoformat(v.upper())
            except ValueError:
                raise Invalid(field, "datetime", "must be an ISO 8601 date-time") from None
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        # Epoch milliseconds, as some SDKs send.
        try:
            t = datetime.fromtimestamp(v / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise Invalid(field, "datetime", "is out of range") from None
    else:
        raise Invalid(field, "datetime", "must be an ISO 8601 date-time")
    if t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    try:
        return t.astimezone(UTC)
    except (OverflowError, ValueError):
        raise Invalid(field, "datetime", "is out of range (years 1 to 9999 in UTC)") from None


# RFC 3339 with an explicit offset: such strings are passed on as sent (once known to be a real date-time), saving
# a parse-and-format on the hot path; anything else is normalised to UTC.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)\Z")


def opt_time(field: str, v: Any) -> str | None:
    if v is None:
        return None
    # Only the first and last day of Python's (and so every reader's) range can leave it once moved to UTC.
    if isinstance(v, str) and _RFC3339.match(v) and not v.startswith(("0001-01-01", "9999-12-31")):
        try:
            datetime.fromisoformat(v)
            return v
        except ValueError:
            raise Invalid(field, "datetime", "must be an ISO 8601 date-time") from None
    return parse_time(field, v).isoformat()


def any_json(field: str, v: Any) -> Any:
    return v


def opt_bool(field: str, v: Any) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise Invalid(field, "type", "must be a boolean")


def opt_metadata(field: str, v: Any) -> dict[str, Any] | None:
    if v is None or isinstance(v, dict):
        return v
    # Langfuse accepts any JSON as metadata; Tally's model is an object, so a bare value is wrapped.
    return {"metadata": v}


def opt_object(field: str, v: Any) -> dict[str, Any] | None:
    if v is None or isinstance(v, dict):
        return v
    raise Invalid(field, "type", "must be an object")


def opt_tags(field: str, v: Any) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, list) and all(isinstance(t, str) for t in v):
        return v
    raise Invalid(field, "type", "must be a list of strings")


def _number(v: Any) -> float | int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def opt_numbers(field: str, v: Any) -> dict[str, float | int] | None:
    """usage_details / cost_details: a flat map of numbers. Nulls and non-numbers are dropped, nested
    ``*_details`` objects (OpenAI's usage shape) are flattened."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise Invalid(field, "type", "must be an object of numbers")
    if "prompt_tokens" in v or "completion_tokens" in v or "input_tokens" in v or "output_tokens" in v:
        return openai_usage(v)
    out: dict[str, float | int] = {}
    for k, x in v.items():
        n = _number(x)
        if n is not None:
            out[k] = n
    return out


_OPENAI_KEYS = {
    "prompt_tokens": "input", "input_tokens": "input",
    "completion_tokens": "output", "output_tokens": "output",
    "total_tokens": "total",
}


def openai_usage(v: dict[str, Any]) -> dict[str, float | int]:
    """OpenAI's usage object (chat completions or responses API) in Langfuse's usage_details keys."""
    out: dict[str, float | int] = {}
    for k, x in v.items():
        if k in _OPENAI_KEYS:
            n = _number(x)
            if n is not None:
                out[_OPENAI_KEYS[k]] = n
        elif k.endswith("_details") and isinstance(x, dict):
            prefix = "input" if k.startswith(("prompt", "input")) else "output"
            for dk, dx in x.items():
                n = _number(dx)
                if n is not None:
                    out[f"{prefix}_{dk}"] = n
        else:
            n = _number(x)
            if n is not None:
                out[k] = n
    return out


def opt_level(field: str, v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str) and v.upper() in LEVELS:
        return v.upper()
    raise Invalid(field, "enum", "must be one of DEBUG, DEFAULT, WARNING, ERROR")


def opt_observation_type(field: str, v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str) and v.upper() in OBSERVATION_TYPES:
        return v.upper()
    raise Invalid(field, "enum", f"must be one of {', '.join(sorted(OBSERVATION_TYPES))}")


def opt_score_data_type(field: str, v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str) and v.upper() in SCORE_DATA_TYPES:
        return v.upper()
    raise Invalid(field, "enum", f"must be one of {', '.join(sorted(SCORE_DATA_TYPES))}")


def score_source(field: str, v: Any) -> str:
    if isinstance(v, str) and v.upper() in SCORE_SOURCES:
        return v.upper()
    raise Invalid(field, "enum", f"must be one of {', '.join(sorted(SCORE_SOURCES))}")


def name(field: str, v: Any) -> str:
    s = opt_str(field, v)
    if not s:
        raise Invalid(field, "required", "must be a non-empty string")
    return s


def score_value(field: str, v: Any) -> Any:
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise Invalid(field, "number", "must be finite")
        return v
    raise Invalid(field, "type", "must be a number, boolean or string")


# Field tables: wire name -> (Tally field name, converter). One table per format's naming.
TRACE_FIELDS: dict[str, Converter] = {
    "name": opt_str, "timestamp": opt_time, "input": any_json, "output": any_json, "metadata": opt_metadata,
    "tags": opt_tags, "user_id": opt_str, "session_id": opt_str, "release": opt_str, "version": opt_str,
    "environment": opt_str, "public": opt_bool, "dataset_run_name": opt_str, "dataset_item_id": opt_str,
    "dataset_name": opt_str, "dataset_id": opt_str,
}

OBSERVATION_FIELDS: dict[str, Converter] = {
    "type": opt_observation_type, "name": opt_str, "parent_observation_id": opt_ident,
    "start_time": opt_time, "end_time": opt_time, "completion_start_time": opt_time,
    "level": opt_level, "status_message": opt_text, "model": opt_str, "model_parameters": opt_object,
    "usage_details": opt_numbers, "cost_details": opt_numbers, "input": any_json, "output": any_json,
    "metadata": opt_metadata, "version": opt_str, "environment": opt_str,
}

def opt_prompt_version(field: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31:
        return v
    raise Invalid(field, "integer", "must be a whole number from 0")


# The prompt a generation was made from (Langfuse's promptName / promptVersion).
OBSERVATION_FIELDS.update({"prompt_name": opt_str, "prompt_version": opt_prompt_version})

SCORE_FIELDS: dict[str, Converter] = {
    "id": opt_ident, "name": name, "value": score_value, "data_type": opt_score_data_type,
    "trace_id": opt_ident, "observation_id": opt_ident, "session_id": opt_ident, "dataset_run_id": opt_ident,
    "config_id": opt_ident, "comment": opt_text, "source": score_source, "environment": opt_str,
    "metadata": opt_metadata, "timestamp": opt_time, "idempotency_key": opt_str,
    "evaluator_name": opt_str, "evaluator_version": opt_str,
}


Compiled = dict[str, tuple[str, str, Converter | None]]


def compile_table(table: dict[str, Converter], aliases: dict[str, str] | None = None,
                  prefix: str = "body") -> Compiled:
    """wire name -> (Tally field, field path for errors, converter or None to take the value as is). Tally's
    snake_case names are accepted next to the aliases."""
    out: Compiled = {}
    for wire, target in [*((k, k) for k in table), *(aliases or {}).items()]:
        if target in table:
            conv = table[target]
            out[wire] = (target, f"{prefix}.{wire}", None if conv is any_json else conv)
    return out


def convert(compiled: Compiled, body: dict[str, Any]) -> dict[str, Any]:
    """Apply the rules to the keys of ``body`` they know (others are ignored, as Langfuse does). A key present,
    even as null, is set."""
    out: dict[str, Any] = {}
    get = compiled.get
    for key, value in body.items():
        spec = get(key)
        if spec is not None:
            conv = spec[2]
            out[spec[0]] = value if conv is None else conv(spec[1], value)
    return out
