"""Sign-in rate limit: after too many failed sign-ins for one account, or from one client address, within a
window, further attempts are refused (without checking the password) until the oldest failure leaves the window.

Memory is bounded whatever callers send: each counter keeps at most ``max_failures`` timestamps, and at most
``max_tracked`` accounts and addresses are tracked (least recently failed dropped first, each forgotten after
the window). A successful sign-in clears that account's failures; the address keeps its count, so one address
cannot try passwords for many accounts by signing into its own between tries.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tally_shared.caching import TtlLru


@dataclass(frozen=True)
class Limits:
    account_failures: int = 5
    address_failures: int = 20
    window_seconds: float = 15 * 60
    max_tracked: int = 10_000


class SignInLimiter:
    def __init__(self, limits: Limits = Limits(), clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._accounts: TtlLru[str, deque[float]] = TtlLru(limits.max_tracked, limits.window_seconds, clock)
        self._addresses: TtlLru[str, deque[float]] = TtlLru(limits.max_tracked, limits.window_seconds, clock)

    @staticmethod
    def account_key(email: str) -> str:
        return email.strip().lower()

    def retry_after(self, email: str, address: str) -> int | None:
        """Whole seconds until an attempt is allowed again, or None if it is allowed now."""
        waits = [self._wait(self._accounts.get(self.account_key(email)), self.limits.account_failures),
                 self._wait(self._addresses.get(address), self.limits.address_failures)]
        longest = max(waits)
        return math.ceil(longest) if longest > 0 else None

    def failed(self, email: str, address: str) -> None:
        self._record(self._accounts, self.account_key(email), self.limits.account_failures)
        self._record(self._addresses, address, self.limits.address_failures)

    def succeeded(self, email: str) -> None:
        self._accounts.pop(self.account_key(email))

    def _wait(self, failures: deque[float] | None, allowed: int) -> float:
        if not failures:
            return 0.0
        cutoff = self._clock() - self.limits.window_seconds
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if len(failures) < allowed:
            return 0.0
        return failures[0] + self.limits.window_seconds - self._clock()

    def _record(self, cache: TtlLru[str, deque[float]], key: str, allowed: int) -> None:
        failures = cache.get(key)
        if failures is None:
            failures = deque(maxlen=allowed)
        failures.append(self._clock())
        cache.set(key, failures)
