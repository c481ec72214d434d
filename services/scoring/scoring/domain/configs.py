"""Score config rules: what a valid config of each type looks like, and which changes make a new version.

A config's type and range (min, max, step, categories, multi-select, text length) never change in place: once
scores exist against a version, changing them would silently reinterpret those scores. So any change to them makes
a new version; text fields (name, description, guidelines) and archiving change the current version in place.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from scoring.domain.errors import Invalid, Problem
from tally_shared.events import Category, ScoreConfigData, ScoreDataType
from tally_shared.score_rules import TEXT_DEFAULT_MAX_LENGTH

NAME_RE = re.compile(r"^[A-Za-z0-9_ .()\-]+$")
NAME_MAX = 100
DESCRIPTION_MAX = 2_000
GUIDELINES_MAX = 20_000
CATEGORIES_MAX = 100
LABEL_MAX = 100
TEXT_MAX_LENGTH_CAP = 10_000

BOOLEAN_CATEGORIES = (Category(label="True", value=1.0), Category(label="False", value=0.0))

# The fields whose change makes a new version.
DEFINITION_FIELDS = ("data_type", "min_value", "max_value", "step", "categories", "multi_select", "max_length")
TEXT_FIELDS = ("name", "description", "guidelines")


@dataclass(frozen=True)
class Definition:
    data_type: ScoreDataType
    min_value: float | None = None
    max_value: float | None = None
    step: float | None = None
    categories: tuple[Category, ...] | None = None
    multi_select: bool = False
    max_length: int | None = None

    @classmethod
    def of(cls, config: ScoreConfigData) -> Definition:
        return cls(
            data_type=config.data_type, min_value=config.min_value, max_value=config.max_value, step=config.step,
            categories=tuple(config.categories) if config.categories is not None else None,
            multi_select=config.multi_select, max_length=config.max_length,
        )


def check_name(name: Any, field: str = "name") -> list[Problem]:
    if not isinstance(name, str) or not name.strip():
        return [Problem(field, "required", "a non-empty name is required")]
    if len(name) > NAME_MAX:
        return [Problem(field, "max_length", f"at most {NAME_MAX} characters")]
    if not NAME_RE.match(name):
        return [Problem(field, "pattern",
                        "only letters, digits, underscores, spaces, periods, parentheses and hyphens")]
    return []


def check_text(description: str | None, guidelines: str | None) -> list[Problem]:
    problems = [Problem(f, "no_nul", "must not contain NUL characters")
                for f, v in (("description", description), ("guidelines", guidelines)) if v and "\x00" in v]
    if description is not None and len(description) > DESCRIPTION_MAX:
        problems.append(Problem("description", "max_length", f"at most {DESCRIPTION_MAX} characters"))
    if guidelines is not None and len(guidelines) > GUIDELINES_MAX:
        problems.append(Problem("guidelines", "max_length", f"at most {GUIDELINES_MAX} characters"))
    return problems


def _finite(value: float | None, field: str, problems: list[Problem]) -> None:
    if value is not None and not math.isfinite(value):
        problems.append(Problem(field, "finite", "must be a finite number"))


def check_definition(d: Definition) -> Definition:
    """Validate a definition for its type and return it normalised (e.g. boolean categories filled in)."""
    problems: list[Problem] = []
    t = d.data_type

    def forbid(field: str, present: bool) -> None:
        if present:
            problems.append(Problem(field, "not_allowed", f"not allowed for {t.value} configs"))

    if t == ScoreDataType.NUMERIC:
        _finite(d.min_value, "min_value", problems)
        _finite(d.max_value, "max_value", problems)
        _finite(d.step, "step", problems)
        if (d.min_value is not None and d.max_value is not None and math.isfinite(d.min_value)
                and math.isfinite(d.max_value) and d.min_value >= d.max_value):
            problems.append(Problem("max_value", "greater_than_min", "max_value must be greater than min_value"))
        if d.step is not None and not d.step > 0:
            problems.append(Problem("step", "positive", "step must be greater than 0"))
        forbid("categories", d.categories is not None)
        forbid("multi_select", d.multi_select)
        forbid("max_length", d.max_length is not None)
    elif t == ScoreDataType.CATEGORICAL:
        cats = d.categories or ()
        if not cats:
            problems.append(Problem("categories", "required", "a categorical config needs at least one category"))
        if len(cats) > CATEGORIES_MAX:
            problems.append(Problem("categories", "max_items", f"at most {CATEGORIES_MAX} categories"))
        labels = [c.label for c in cats]
        values = [c.value for c in cats]
        for i, c in enumerate(cats):
            if not c.label.strip() or len(c.label) > LABEL_MAX or "\x00" in c.label:
                problems.append(Problem(f"categories.{i}.label", "length", f"1 to {LABEL_MAX} characters"))
            if not math.isfinite(c.value):
                problems.append(Problem(f"categories.{i}.value", "finite", "must be a finite number"))
        if len(set(labels)) != len(labels):
            problems.append(Problem("categories", "unique_labels", "category labels must be unique"))
        if len(set(values)) != len(values):
            problems.append(Problem("categories", "unique_values", "category values must be unique"))
        forbid("min_value", d.min_value is not None)
        forbid("max_value", d.max_value is not None)
        forbid("step", d.step is not None)
        forbid("max_length", d.max_length is not None)
    elif t == ScoreDataType.BOOLEAN:
        if d.categories is not None and tuple(d.categories) != BOOLEAN_CATEGORIES:
            problems.append(Problem("categories", "not_allowed",
                                    "boolean configs have the fixed categories True=1 and False=0"))
        for f in ("min_value", "max_value", "step", "max_length"):
            forbid(f, getattr(d, f) is not None)
        forbid("multi_select", d.multi_select)
        d = replace(d, categories=BOOLEAN_CATEGORIES)
    elif t == ScoreDataType.TEXT:
        max_length = d.max_length if d.max_length is not None else TEXT_DEFAULT_MAX_LENGTH
        if not 1 <= max_length <= TEXT_MAX_LENGTH_CAP:
            problems.append(Problem("max_length", "range", f"between 1 and {TEXT_MAX_LENGTH_CAP}"))
        for f in ("min_value", "max_value", "step", "categories"):
            forbid(f, getattr(d, f) is not None)
        forbid("multi_select", d.multi_select)
        d = replace(d, max_length=max_length)
    if problems:
        raise Invalid(problems)
    return d


def new_config(
    *, config_id: str, name: str, definition: Definition, description: str | None, guidelines: str | None,
    now: datetime,
) -> ScoreConfigData:
    problems = check_name(name) + check_text(description, guidelines)
    if problems:
        raise Invalid(problems)
    d = check_definition(definition)
    return ScoreConfigData(
        id=config_id, version=1, name=name, data_type=d.data_type, description=description, guidelines=guidelines,
        min_value=d.min_value, max_value=d.max_value, step=d.step,
        categories=list(d.categories) if d.categories is not None else None, multi_select=d.multi_select,
        max_length=d.max_length, is_archived=False, created_at=now, updated_at=now,
    )


@dataclass(frozen=True)
class Change:
    config: ScoreConfigData
    new_version: bool
    archived_changed: bool
    changed: bool


def apply_update(current: ScoreConfigData, changes: dict[str, Any], now: datetime) -> Change:
    """Apply a partial update (only the keys present in ``changes``). Definition changes bump the version."""
    problems: list[Problem] = []
    if "name" in changes:
        problems += check_name(changes["name"])
    problems += check_text(changes.get("description"), changes.get("guidelines"))
    if problems:
        raise Invalid(problems)

    old_def = Definition.of(current)
    def_changes = {k: v for k, v in changes.items() if k in DEFINITION_FIELDS}
    if "categories" in def_changes and def_changes["categories"] is not None:
        def_changes["categories"] = tuple(
            c if isinstance(c, Category) else Category.model_validate(c) for c in def_changes["categories"]
        )
    if "data_type" in def_changes and def_changes["data_type"] != old_def.data_type:
        # A new type starts from a clean range: the old type's bounds rarely make sense for it.
        base = Definition(data_type=def_changes["data_type"])
        new_def = replace(base, **{k: v for k, v in def_changes.items() if k != "data_type"})
    else:
        new_def = replace(old_def, **def_changes)
    new_def = check_definition(new_def)
    new_version = new_def != check_definition(old_def)

    updated = current.model_copy(deep=True)
    for k in TEXT_FIELDS:
        if k in changes:
            setattr(updated, k, changes[k])
    archived_changed = False
    if "is_archived" in changes and changes["is_archived"] is not None and \
            bool(changes["is_archived"]) != current.is_archived:
        updated.is_archived = bool(changes["is_archived"])
        archived_changed = True
    if new_version:
        updated.version = current.version + 1
        updated.data_type = new_def.data_type
        updated.min_value = new_def.min_value
        updated.max_value = new_def.max_value
        updated.step = new_def.step
        updated.categories = list(new_def.categories) if new_def.categories is not None else None
        updated.multi_select = new_def.multi_select
        updated.max_length = new_def.max_length
    changed = updated != current
    if changed:
        updated.updated_at = now
    return Change(config=updated, new_version=new_version, archived_changed=archived_changed, changed=changed)
