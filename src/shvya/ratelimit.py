"""A sliding-window counter per key (a client address, or an address and an API key prefix),
in memory, per server process.

It slows down page abuse and repeated wrong keys against one process; run a proxy limit in
front of several. Client addresses come from shvya.deps.client_address.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from shvya.errors import TooManyRequests


class SlidingWindowLimiter:
    def __init__(self, max_events: int, *, window_seconds: float = 60.0) -> None:
        self.max_events = max_events
        self.window_seconds = window_seconds
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.setdefault(key, deque())
        while events and now - events[0] > self.window_seconds:
            events.popleft()
        return events

    def retry_after_seconds(self, key: str) -> int | None:
        """None while under the limit; otherwise how long until the oldest event expires."""
        now = time.monotonic()
        with self._lock:
            events = self._recent(key, now)
            if len(events) < self.max_events:
                return None
            return max(1, int(self.window_seconds - (now - events[0])) + 1)

    def refuse_when_over(self, key: str, message: str) -> None:
        """Raises TooManyRequests (429, its Retry-After from retry_after_seconds) while `key` is
        over the limit."""
        retry_after = self.retry_after_seconds(key)
        if retry_after is not None:
            raise TooManyRequests(message, extra={"retry_after_seconds": retry_after})

    def record(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._events) > 100_000:  # bounded memory under a spray of addresses
                self._events.clear()
