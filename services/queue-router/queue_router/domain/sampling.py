"""Deterministic sampling: the same rule and object always get the same decision, so a replay routes the same."""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)


def sample_point(rule_id: str, object_id: str) -> float:
    """A point in [0, 1) fixed by the rule and the object."""
    digest = hashlib.blake2b(f"{rule_id}\x00{object_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def sampled_in(rule_id: str, object_id: str, rate: float) -> bool:
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return sample_point(rule_id, object_id) < rate
