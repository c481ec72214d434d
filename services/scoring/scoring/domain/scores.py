"""Score rules of the scoring service. The validation itself (``build_score`` and friends) lives in
``tally_shared.score_rules``, shared with ingest, which refuses at intake what scoring would refuse.
"""

from __future__ import annotations

from tally_shared.events import ScoreData, ScoreSource
from tally_shared.score_rules import (
    COMMENT_MAX,
    DEFAULT_ENVIRONMENT,
    EVALUATOR_MAX,
    ID_MAX,
    METADATA_MAX_BYTES,
    NAME_MAX,
    NormalisedValue,
    ScoreInput,
    build_score,
    infer_data_type,
    normalise_value,
)

__all__ = [
    "COMMENT_MAX", "DEFAULT_ENVIRONMENT", "EVALUATOR_MAX", "ID_MAX", "METADATA_MAX_BYTES", "NAME_MAX",
    "NormalisedValue", "ScoreInput", "build_score", "event_key", "infer_data_type", "is_human", "may_change",
    "normalise_value", "same_content",
]


def event_key(score: ScoreData) -> str:
    """Partition key: the trace id, else the score's own target."""
    return score.trace_id or score.session_id or score.dataset_run_id or score.id


def is_human(score: ScoreData) -> bool:
    return score.source == ScoreSource.ANNOTATION


def same_content(a: ScoreData, b: ScoreData) -> bool:
    return a.model_dump() == b.model_dump()


def may_change(score: ScoreData, *, user_id: str | None, is_admin: bool, can_configure: bool) -> bool:
    """Only the author or a project admin changes a human score; automated scores are the configurers' to fix."""
    if is_admin:
        return True
    if is_human(score):
        return user_id is not None and score.author_user_id == user_id
    return can_configure
