"""The one policy every remote call goes through: how many, how fast, and how to retry.

`Limiter` is shared by all backends of a run. ``async with limiter.slot(est_tokens):``
holds one of `concurrency` slots and, when ``rpm``/``tpm`` are set, draws from a token
bucket for requests and one for tokens (each refills continuously and holds about one
second's worth, so bursts stay small). A call that finds the bucket short reserves its
share and sleeps only for the deficit; when nothing is limited the path is a semaphore
and a few arithmetic operations. `cool_down` pauses every *new* call after a 429.

`retry_policy` is the tenacity policy: exponential backoff with full jitter, retrying
only `RetryableError`, and re-raising the last error when attempts run out.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from tenacity import (AsyncRetrying, retry_if_exception_type, stop_after_attempt,
                      wait_random_exponential)

from evol.backends.base import BackendError, ReplyParseError


class RetryableError(BackendError):
    """A failure worth another attempt: 429, 5xx, timeout, connection error, bad reply."""


class RetryableParseError(RetryableError, ReplyParseError):
    """An answer that did not parse; retried, and a `ReplyParseError` when it stays so."""


class _Bucket:
    """Continuous token bucket that may go into debt; callers sleep off their debt."""

    __slots__ = ("rate", "capacity", "level", "stamp")

    def __init__(self, per_minute: float):
        if per_minute <= 0:
            raise ValueError("rate limits must be positive")
        self.rate = per_minute / 60.0          # per second
        self.capacity = max(1.0, self.rate)    # about one second of burst
        self.level = self.capacity
        self.stamp = time.monotonic()

    def take(self, amount: float, now: float) -> float:
        """Reserve `amount`; return how many seconds the caller must wait first."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= amount
        return -self.level / self.rate if self.level < 0 else 0.0


class Limiter:
    """Concurrency + optional requests/tokens per minute + a shared cool-down."""

    def __init__(self, concurrency: int, rpm: float | None = None, tpm: float | None = None,
                 *, default_cool_down: float = 2.0, max_cool_down: float = 120.0):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        self.default_cool_down = default_cool_down
        self.max_cool_down = max_cool_down
        self._sem = asyncio.Semaphore(concurrency)
        self._requests = _Bucket(rpm) if rpm else None
        self._tokens = _Bucket(tpm) if tpm else None
        self._resume_at = 0.0  # time.monotonic() before which no new call starts
        self.in_flight = 0
        self.waited_s = 0.0    # total seconds spent waiting on rate limits and cool-downs

    def cool_down(self, seconds: float | None = None) -> None:
        """Make every new call wait `seconds` (default `default_cool_down`) from now."""
        if seconds is None:
            seconds = self.default_cool_down
        seconds = min(max(0.0, seconds), self.max_cool_down)
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    @property
    def cooling_for(self) -> float:
        return max(0.0, self._resume_at - time.monotonic())

    @asynccontextmanager
    async def slot(self, est_tokens: int = 0) -> AsyncIterator[None]:
        async with self._sem:
            now = time.monotonic()
            while now < self._resume_at:  # a cool-down may be extended while we sleep
                pause = self._resume_at - now
                self.waited_s += pause
                await asyncio.sleep(pause)
                now = time.monotonic()
            wait = 0.0
            if self._requests is not None:
                wait = self._requests.take(1.0, now)
            if self._tokens is not None:
                wait = max(wait, self._tokens.take(float(max(0, est_tokens)), now))
            if wait > 0:
                self.waited_s += wait
                await asyncio.sleep(wait)
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1


def retry_policy(max_attempts: int, base: float = 0.5, cap: float = 30.0) -> AsyncRetrying:
    """Tenacity policy: up to `max_attempts` tries, jittered exponential waits up to `cap`."""
    return AsyncRetrying(
        stop=stop_after_attempt(max(1, max_attempts)),
        wait=wait_random_exponential(multiplier=base, max=cap),
        retry=retry_if_exception_type(RetryableError),
        reraise=True,
    )
