"""A small in-process cache bounded in both size and age, for the hot paths that must not grow with whatever
callers send (API keys, sign-in attempts)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlLru(Generic[K, V]):
    """At most ``maxsize`` entries, each for at most ``ttl`` seconds; the least recently used goes first.

    Not thread-safe: meant for one event loop."""

    def __init__(self, maxsize: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 1 or ttl <= 0:
            raise ValueError("maxsize and ttl must be positive")
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, default: V | None = None) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return default
        if hit[0] <= self._clock():
            del self._data[key]
            return default
        self._data.move_to_end(key)
        return hit[1]

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(found, value): tells a cached None apart from a miss."""
        hit = self._data.get(key)
        if hit is None or hit[0] <= self._clock():
            self._data.pop(key, None)
            return False, None
        self._data.move_to_end(key)
        return True, hit[1]

    def set(self, key: K, value: V) -> None:
        self._data[key] = (self._clock() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K, default: V | None = None) -> V | None:
        hit = self._data.pop(key, None)
        return hit[1] if hit else default

    def clear(self) -> None:
        self._data.clear()
