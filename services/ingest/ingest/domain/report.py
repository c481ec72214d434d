"""Per-item outcome of one request: which items were rejected (and why), which were accepted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from ingest.domain.fields import Invalid, json_size
from tally_shared import content


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

    def apply_each(self, items: list[Any], max_item_bytes: int | None,
                   apply: Callable[[int, dict[str, Any]], None], *, clean: bool = False) -> None:
        """Record every item of a batch and ``apply`` the ones with an id and within the size limit; whatever
        fails (here or as ``Invalid`` inside ``apply``) is rejected on its own while the rest go through.

        ``clean``: the body may hold what ``tally_shared.content.clean`` transforms (NUL, lone surrogates) or
        refuses (numbers beyond a double), so each item is cleaned first, before its id is read."""
        for raw in items:
            if clean:
                try:
                    raw = content.clean(raw)
                except content.Unrepresentable as exc:
                    index = self.add(_item_id(raw, len(self.ids)))
                    self.invalid(index, Invalid(exc.path, exc.rule, exc.message))
                    continue
                except RecursionError:
                    index = self.add(_item_id(raw, len(self.ids)))
                    self.invalid(index, Invalid("item", "max_depth", "nested too deeply to store"))
                    continue
            if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
                index = self.add(raw["id"])
            else:
                index = self.add(f"#{len(self.ids)}")
                self.invalid(index, Invalid("event", "required", "each event needs an object with a string id"))
                continue
            if max_item_bytes is not None:
                size = json_size(raw)
                if size > max_item_bytes:
                    self.too_large(index, size, max_item_bytes)
                    continue
            try:
                apply(index, raw)
            except Invalid as exc:
                self.invalid(index, exc)

    @property
    def rejected(self) -> int:
        return len(self.errors)


def _item_id(raw: Any, position: int) -> str:
    item_id = raw.get("id") if isinstance(raw, dict) else None
    return content.clean_text(item_id) if isinstance(item_id, str) and item_id else f"#{position}"
