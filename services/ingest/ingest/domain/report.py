"""Per-item outcome of one request: which items were rejected (and why), which were accepted."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ingest.domain.fields import Invalid


class Report:
    __slots__ = ("errors", "ids", "reasons", "unpublished")

    def __init__(self) -> None:
        self.ids: list[str] = []
        # item index -> (status, message, error detail)
        self.errors: dict[int, tuple[int, str, Any]] = {}
        self.reasons: Counter[str] = Counter()
        # Accepted items that need no event (sdk-log).
        self.unpublished: set[int] = set()

    def add(self, item_id: str) -> int:
        self.ids.append(item_id)
        return len(self.ids) - 1

    def reject(self, index: int, status: int, reason: str, message: str, detail: Any = None) -> None:
        self.errors[index] = (status, message, detail)
        self.reasons[reason] += 1

    def invalid(self, index: int, exc: Invalid) -> None:
        self.reject(index, 400, "invalid", exc.message if exc.field == "event" else str(exc), exc.detail())

    def too_large(self, index: int, size: int, limit: int) -> None:
        what = "item is nested too deeply to store" if size >= 1 << 62 else f"item is {size} bytes"
        self.reject(index, 413, "too_large", f"{what}, over the limit of {limit}",
                    {"field": "item", "rule": "max_size", "message": f"at most {limit} bytes"})

    @property
    def rejected(self) -> int:
        return len(self.errors)
