"""Rate limiting and back-off shared by every ingestor.

`RateLimiter` is a sliding-window limiter: at most `max_calls` acquisitions in any
`period_s` window, for every task that shares the instance (one per source host,
because venues count per IP). `pause_for` stops all of them at once, which is how a
ban (HTTP 403 from Bybit) or a rate-limit page (HTTP 429 / 503 from EDGAR) is
honoured. `Backoff` is capped exponential back-off with jitter, so a fleet of
clients that lost the venue together does not come back together.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most `max_calls` per sliding `period_s` window, shared by all tasks that hold it."""

    def __init__(self, max_calls: int, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_calls < 1 or period_s <= 0:
            raise ValueError("a rate limit needs max_calls >= 1 and period_s > 0")
        self.max_calls = max_calls
        self.period_s = period_s
        self._clock = clock
        self._calls: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause_for(self, seconds: float) -> None:
        """Refuse every acquisition for `seconds` from now (a ban or a Retry-After); never shortens a pause."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause, 0 when not paused."""
        return max(0.0, self._paused_until - self._clock())

    def delay(self) -> float:
        """Seconds until one more call fits the window and no pause is in force (0: now)."""
        now = self._clock()
        while self._calls and self._calls[0] <= now - self.period_s:
            self._calls.popleft()
        wait = max(0.0, self._paused_until - now)
        if len(self._calls) >= self.max_calls:
            wait = max(wait, self._calls[0] + self.period_s - now)
        return wait

    async def acquire(self) -> None:
        """Wait until a call is allowed, then count it."""
        async with self._lock:  # FIFO: tasks are served in the order they asked
            while (wait := self.delay()) > 0:
                await asyncio.sleep(wait)
            self._calls.append(self._clock())


class Backoff:
    """Capped exponential back-off with "equal jitter": half the step fixed, half random."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s or factor < 1:
            raise ValueError("back-off needs 0 < base_s <= cap_s and factor >= 1")
        self.base_s = base_s
        self.cap_s = cap_s
        self.factor = factor
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        step = min(self.cap_s, self.base_s * self.factor**self.attempt)
        self.attempt += 1
        return step / 2 + self._rng.uniform(0, step / 2)

    def reset(self) -> None:
        """Forget past failures (after a connection that worked)."""
        self.attempt = 0


def retry_after_s(value: str | None, default: float) -> float:
    """Seconds from an HTTP Retry-After header (delta-seconds or HTTP date), else `default`."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())
