"""Score rules shared by every service that takes scores: a value is checked against its config version (type,
range, step, categories, text length), its target is one trace (optionally one observation of it), session or
experiment run, and its provenance is stated.

Pure functions, no I/O: scoring validates every score with them, and ingest refuses at intake (per item) what
scoring would refuse, so a score acknowledged by ingest is never dead-lettered by scoring. Scores never need to
know whether their trace exists yet: events race, and projections join the two later.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from tally_shared import content
from tally_shared.events import ScoreConfigData, ScoreData, ScoreDataType, ScoreSource

ID_MAX = 200
NAME_MAX = 200
COMMENT_MAX = 10_000
METADATA_MAX_BYTES = 64 * 1024
EVALUATOR_MAX = 200
TEXT_DEFAULT_MAX_LENGTH = 500
ENVIRONMENT_RE = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")
DEFAULT_ENVIRONMENT = "default"
STEP_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Problem:
    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


class Invalid(Exception):
    """One or more rule violations."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message} ({p.rule})" for p in problems))
        self.problems = problems

    @classmethod
    def one(cls, field: str, rule: str, message: str) -> Invalid:
        return cls([Problem(field, rule, message)])

    @property
    def reason(self) -> str:
        return str(self)


@dataclass
class ScoreInput:
    """A score as a client asked for it, before validation. ``value`` is whatever JSON the client sent."""

    name: str | None
    value: Any
    data_type: ScoreDataType | None = None
    id: str | None = None
    trace_id: str | None = None
    observation_id: str | None = None
    session_id: str | None = None
    dataset_run_id: str | None = None
    config_id: str | None = None
    comment: str | None = None
    metadata: dict[str, Any] | None = None
    environment: str | None = None
    timestamp: datetime | None = None
    source: ScoreSource = ScoreSource.API
    author_user_id: str | None = None
    evaluator_name: str | None = None
    evaluator_version: str | None = None
    queue_id: str | None = None
    queue_item_id: str | None = None
    idempotency_key: str | None = None
    # Field names as the client spelled them (camelCase on the Langfuse API), for error messages.
    aliases: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NormalisedValue:
    value: float | None
    string_value: str | None
    string_values: list[str] | None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _bounded(inp: ScoreInput, problems: list[Problem], name: str, limit: int) -> None:
    v = getattr(inp, name)
    if v is not None and (not isinstance(v, str) or len(v) > limit or not v):
        problems.append(Problem(name, "length", f"1 to {limit} characters"))


def normalise_value(value: Any, data_type: ScoreDataType, config: ScoreConfigData | None) -> NormalisedValue:
    """Check ``value`` against the type and (if any) the config version; return its stored form."""

    def bad(rule: str, message: str) -> Invalid:
        return Invalid.one("value", rule, message)

    if value is None:
        raise bad("required", "a value is required")
    if data_type == ScoreDataType.NUMERIC:
        if not _is_number(value):
            raise bad("type", "a NUMERIC score needs a number")
        v = float(value)
        if not math.isfinite(v):
            raise bad("finite", "must be a finite number")
        if config is not None:
            if config.min_value is not None and v < config.min_value:
                raise bad("minimum", f"must be >= {config.min_value:g} (config {config.name!r})")
            if config.max_value is not None and v > config.max_value:
                raise bad("maximum", f"must be <= {config.max_value:g} (config {config.name!r})")
            if config.step is not None:
                k = (v - (config.min_value or 0.0)) / config.step
                if abs(k - round(k)) > STEP_TOLERANCE * max(1.0, abs(k)):
                    raise bad("step", f"must be a multiple of {config.step:g} from {config.min_value or 0:g}")
        return NormalisedValue(v, None, None)
    if data_type == ScoreDataType.BOOLEAN:
        if isinstance(value, bool):
            b = value
        elif _is_number(value) and value in (0, 1):
            b = value == 1
        elif isinstance(value, str) and value.lower() in ("true", "false"):
            b = value.lower() == "true"
        else:
            raise bad("type", "a BOOLEAN score needs true/false or 1/0")
        return NormalisedValue(1.0 if b else 0.0, "True" if b else "False", None)
    if data_type == ScoreDataType.CATEGORICAL:
        if config is None:
            if not isinstance(value, str) or not value or len(value) > NAME_MAX:
                raise bad("type", "a CATEGORICAL score without a config needs a label (1 to 200 characters)")
            return NormalisedValue(None, value, None)
        cats = config.categories or []
        by_label = {c.label: c for c in cats}
        by_value = {c.value: c for c in cats}

        def pick(v: Any) -> str:
            if isinstance(v, str):
                if v in by_label:
                    return v
                raise bad("category", f"{v[:100]!r} is not a category of config {config.name!r} "
                                      f"(allowed: {', '.join(by_label)[:500]})")
            if _is_number(v) and float(v) in by_value:
                return by_value[float(v)].label
            raise bad("category", f"{v!r} is not a category of config {config.name!r}")

        if isinstance(value, list):
            if not config.multi_select:
                raise bad("multi_select", f"config {config.name!r} allows one category, not a list")
            if not value:
                raise bad("required", "choose at least one category")
            labels = [pick(v) for v in value]
            if len(set(labels)) != len(labels):
                raise bad("unique", "a category may be chosen only once")
            order = {c.label: i for i, c in enumerate(cats)}
            labels.sort(key=order.__getitem__)
            return NormalisedValue(None, None, labels)
        label = pick(value)
        if config.multi_select:
            return NormalisedValue(None, None, [label])
        return NormalisedValue(by_label[label].value, label, None)
    # TEXT
    if not isinstance(value, str):
        raise bad("type", "a TEXT score needs a string")
    limit = (config.max_length if config is not None and config.max_length else None) or TEXT_DEFAULT_MAX_LENGTH
    if not 1 <= len(value) <= limit:
        raise bad("length", f"text must be 1 to {limit} characters")
    return NormalisedValue(None, value, None)


def _clean(value: Any) -> bool:
    try:
        return content.clean(value) is value
    except (ValueError, RecursionError):
        return False


def infer_data_type(value: Any) -> ScoreDataType:
    if isinstance(value, bool):
        return ScoreDataType.BOOLEAN
    if isinstance(value, str | list):
        return ScoreDataType.CATEGORICAL
    return ScoreDataType.NUMERIC


def build_score(
    inp: ScoreInput, config: ScoreConfigData | None, *, score_id: str, now: datetime, config_missing: bool = False,
) -> ScoreData:
    """Validate ``inp`` (with its config, already looked up in the caller's project) into a score.

    ``config_missing``: the input named a config that does not exist in this project.
    Raises Invalid naming every broken rule (field names as the client spelled them).
    """
    problems: list[Problem] = []
    for fname, limit in (("id", ID_MAX), ("trace_id", ID_MAX), ("observation_id", ID_MAX), ("session_id", ID_MAX),
                         ("dataset_run_id", ID_MAX), ("config_id", ID_MAX), ("queue_id", ID_MAX),
                         ("queue_item_id", ID_MAX), ("author_user_id", ID_MAX), ("idempotency_key", ID_MAX),
                         ("evaluator_name", EVALUATOR_MAX), ("evaluator_version", EVALUATOR_MAX)):
        _bounded(inp, problems, fname, limit)
    # PostgreSQL text and jsonb cannot hold NUL characters. Every intake replaces them first
    # (tally_shared.content); these checks keep a caller that skipped it from failing on write.
    for fname in ("id", "name", "trace_id", "observation_id", "session_id", "dataset_run_id", "config_id",
                  "queue_id", "queue_item_id", "author_user_id", "idempotency_key", "evaluator_name",
                  "evaluator_version", "comment", "environment"):
        v = getattr(inp, fname)
        if isinstance(v, str) and "\x00" in v:
            problems.append(Problem(fname, "no_nul", "must not contain NUL characters"))
    if (isinstance(inp.value, str) and "\x00" in inp.value) or (
            isinstance(inp.value, list) and any(isinstance(x, str) and "\x00" in x for x in inp.value)):
        problems.append(Problem("value", "no_nul", "must not contain NUL characters"))
    if isinstance(inp.metadata, dict) and not _clean(inp.metadata):
        problems.append(Problem("metadata", "no_nul", "must not contain NUL characters or lone surrogates, "
                                "nor numbers beyond 64-bit integers"))
    if inp.comment is not None and (not isinstance(inp.comment, str) or len(inp.comment) > COMMENT_MAX):
        problems.append(Problem("comment", "max_length", f"at most {COMMENT_MAX} characters"))
    if inp.metadata is not None:
        if not isinstance(inp.metadata, dict):
            problems.append(Problem("metadata", "type", "metadata must be an object"))
        else:
            try:
                # Metadata sits two levels down in a score's event payload ({"score": {"metadata": ...}}).
                size = len(content.dumps(inp.metadata, headroom=content.READER_HEADROOM + 2))
            except content.TooDeep as exc:
                problems.append(Problem("metadata", "max_depth", f"at most {exc.limit} levels of nesting"))
            except (ValueError, orjson.JSONEncodeError) as exc:
                problems.append(Problem("metadata", "json", f"cannot be stored: {exc}"))
            else:
                if size > METADATA_MAX_BYTES:
                    problems.append(Problem("metadata", "max_size", f"at most {METADATA_MAX_BYTES} bytes as JSON"))
    environment = inp.environment if inp.environment is not None else DEFAULT_ENVIRONMENT
    if not isinstance(environment, str) or not ENVIRONMENT_RE.match(environment):
        problems.append(Problem("environment", "pattern",
                                "lowercase letters, digits, '-' and '_', at most 40, not starting with 'langfuse'"))

    targets = [t for t in ("trace_id", "session_id", "dataset_run_id") if getattr(inp, t)]
    if not targets:
        problems.append(Problem("trace_id", "target_required",
                                "a score needs a target: trace_id, session_id or dataset_run_id"))
    elif len(targets) > 1:
        problems.append(Problem(targets[1], "one_target", f"give only one of {', '.join(targets)}"))
    if inp.observation_id and not inp.trace_id:
        problems.append(Problem("observation_id", "requires_trace", "an observation score also names its trace_id"))

    if inp.source == ScoreSource.ANNOTATION and not inp.config_id:
        problems.append(Problem("config_id", "required_for_annotation", "a human (ANNOTATION) score names a config"))
    if inp.source == ScoreSource.EVAL and not inp.evaluator_name:
        problems.append(Problem("evaluator_name", "required_for_eval", "an EVAL score names its evaluator"))

    name: str | None = inp.name
    data_type = inp.data_type
    if inp.config_id and config_missing:
        problems.append(Problem("config_id", "exists", f"no score config {inp.config_id[:200]!r} in this project"))
    elif config is not None:
        if config.is_archived:
            problems.append(Problem("config_id", "archived", f"config {config.name!r} is archived"))
        if name is None:
            name = config.name
        elif name != config.name:
            problems.append(Problem("name", "matches_config", f"must equal the config's name {config.name!r}"))
        if data_type is not None and data_type != config.data_type:
            problems.append(Problem("data_type", "matches_config",
                                    f"config {config.name!r} is {config.data_type.value}"))
        data_type = config.data_type
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        problems.append(Problem("name", "required", f"a name of 1 to {NAME_MAX} characters is required"))
    if data_type is None:
        data_type = infer_data_type(inp.value)

    normalised: NormalisedValue | None = None
    try:
        normalised = normalise_value(inp.value, data_type, config if not config_missing else None)
    except Invalid as exc:
        problems += exc.problems
    if problems:
        raise Invalid([Problem(inp.aliases.get(p.field, p.field), p.rule, p.message) for p in problems])
    assert normalised is not None and name is not None
    return ScoreData(
        id=score_id, name=name, data_type=data_type, value=normalised.value, string_value=normalised.string_value,
        string_values=normalised.string_values, trace_id=inp.trace_id, observation_id=inp.observation_id,
        session_id=inp.session_id, dataset_run_id=inp.dataset_run_id,
        config_id=config.id if config is not None else None,
        config_version=config.version if config is not None else None,
        comment=inp.comment, source=inp.source, author_user_id=inp.author_user_id,
        evaluator_name=inp.evaluator_name, evaluator_version=inp.evaluator_version, queue_id=inp.queue_id,
        queue_item_id=inp.queue_item_id, environment=environment, metadata=inp.metadata,
        timestamp=inp.timestamp or now,
    )
