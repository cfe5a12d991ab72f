"""Throttles of the authorization server's unauthenticated endpoints.

- Sign-in: attempts that did not succeed are counted per account and per client address in a sliding window; past
  the limit that key is locked out for the rest of the window (429 with Retry-After), and a locked-out
  attempt is refused before any password hashing. Hashing itself runs on its own small thread pool
  (argon2 is memory-hard on purpose), never on the pool that serves the API, and a queue that is
  already full is answered 429 at once instead of piling up memory.
- Registration: per client address and overall, per window.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    count: int
    window: float  # seconds


class SlidingCounter:
    """Events per key in the last `window` seconds; bounded in keys (oldest dropped first)."""

    def __init__(self, limit: Limit, clock: Callable[[], float], max_keys: int = 100_000) -> None:
        self.limit = limit
        self._clock = clock
        self._max_keys = max_keys
        self._events: defaultdict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        events = self._events[key]
        while events and events[0] <= now - self.limit.window:
            events.popleft()
        return events

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again, or None if it is under its limit."""
        now = self._clock()
        with self._lock:
            events = self._trim(key, now)
            if len(events) < self.limit.count:
                if not events:
                    self._events.pop(key, None)
                return None
            return max(1, int(events[0] + self.limit.window - now) + 1)

    def add(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            if key not in self._events and len(self._events) >= self._max_keys:
                self._events.pop(next(iter(self._events)))
            self._trim(key, now).append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)

    def forget_one(self, key: str) -> None:
        with self._lock:
            events = self._events.get(key)
            if events:
                events.pop()


@dataclass(frozen=True)
class ThrottleSettings:
    failures_per_account: Limit = Limit(5, 15 * 60)
    failures_per_address: Limit = Limit(30, 15 * 60)
    hashing_threads: int = 2
    hashing_queue: int = 8  # sign-ins that may wait for a hashing thread before the next gets 429
    registrations_per_address: Limit = Limit(20, 60)
    registrations_total: Limit = Limit(120, 60)


class AuthThrottle:
    def __init__(self, settings: ThrottleSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.accounts = SlidingCounter(settings.failures_per_account, clock)
        self.addresses = SlidingCounter(settings.failures_per_address, clock)
        self.registrations = SlidingCounter(settings.registrations_per_address, clock)
        self.all_registrations = SlidingCounter(settings.registrations_total, clock)

    def login_retry_after(self, account: str, address: str) -> int | None:
        waits = [self.accounts.retry_after(account.lower()), self.addresses.retry_after(address)]
        found = [w for w in waits if w is not None]
        return max(found) if found else None

    def login_attempt(self, account: str, address: str) -> None:
        """Counted before the password is checked, so concurrent attempts cannot all slip under the
        limit; a success takes its count back."""
        self.accounts.add(account.lower())
        self.addresses.add(address)

    def login_succeeded(self, account: str, address: str) -> None:
        self.accounts.clear(account.lower())
        self.addresses.forget_one(address)

    def registration_retry_after(self, address: str) -> int | None:
        waits = [self.registrations.retry_after(address), self.all_registrations.retry_after("*")]
        found = [w for w in waits if w is not None]
        if found:
            return max(found)
        self.registrations.add(address)
        self.all_registrations.add("*")
        return None
