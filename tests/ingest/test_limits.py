"""Rate limiter and back-off, on an injected clock."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.limits import Backoff, RateLimiter, retry_after_s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_allows_max_calls_then_waits_for_the_oldest_to_expire():
    clock = Clock()
    limiter = RateLimiter(600, 5.0, clock=clock)

    async def take(n: int) -> None:
        for _ in range(n):
            await limiter.acquire()

    asyncio.run(take(600))
    assert limiter.delay() == pytest.approx(5.0)
    clock.now += 2.5
    assert limiter.delay() == pytest.approx(2.5)
    clock.now += 2.5
    assert limiter.delay() == 0


def test_pause_holds_everyone_and_is_never_shortened():
    clock = Clock()
    limiter = RateLimiter(10, 1.0, clock=clock)
    limiter.pause_for(600)
    limiter.pause_for(5)
    assert limiter.delay() == pytest.approx(600)
    clock.now += 600
    assert limiter.delay() == 0


@given(st.lists(st.floats(0, 3), min_size=1, max_size=200), st.integers(1, 20), st.floats(0.1, 5))
def test_never_more_than_max_calls_in_any_window(gaps, max_calls, period):
    clock = Clock()
    limiter = RateLimiter(max_calls, period, clock=clock)
    taken: list[float] = []
    for gap in gaps:
        clock.now += gap
        clock.now += limiter.delay()  # what acquire() sleeps
        assert limiter.delay() == 0
        limiter._calls.append(clock.now)
        taken.append(clock.now)
    for t in taken:
        assert sum(1 for u in taken if t <= u < t + period) <= max_calls


@given(st.floats(0.01, 2), st.floats(2, 60), st.integers(0, 40))
def test_backoff_is_capped_jittered_and_resets(base, cap, attempts):
    backoff = Backoff(base, cap, rng=random.Random(attempts))
    delays = [backoff.next_delay() for _ in range(attempts + 1)]
    for i, d in enumerate(delays):
        step = min(cap, base * 2**i)
        assert step / 2 <= d <= step
    backoff.reset()
    assert backoff.next_delay() <= base


def test_retry_after_header():
    assert retry_after_s("120", 5) == 120
    assert retry_after_s(None, 5) == 5 and retry_after_s("soon", 5) == 5
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 5) == 0  # in the past
