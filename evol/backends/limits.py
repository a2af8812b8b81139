"""The one policy every remote call goes through: how many, how fast, and how to retry.

`Limiter` is shared by all backends of a run. ``async with limiter.slot(est_tokens):``
holds one place in an adaptive *window* of calls in flight and, when ``rpm``/``tpm`` are
set, draws from a token bucket for requests and one for tokens (each refills continuously
and holds about one second's worth, so bursts stay small). A call that finds the bucket
short reserves its share and sleeps only for the deficit. Calls beyond the window queue,
first come first served; when nothing is limited the hot path is a few comparisons and
counter updates (about 1 us a call; no lock, timer or future).

The window (AIMD, like TCP's congestion window) starts at ``initial`` (default and hard
maximum: ``concurrency``). Every call whose ``async with`` block ends normally grows it by
1/window, about +1 per window of successes, back up to ``concurrency``; a block left by
an exception does not grow it. `congested` is the overload signal of one call (a 429
without Retry-After; later perhaps a timeout): it takes half a place off the window, and
the signals of one round trip together take off at most half of it. A round trip ends
when a call that started after it began ends, so a burst of 429s from the same moment
halves the window once, and a burst of a whole window's worth halves it exactly. This is
DCTCP's proportional decrease (window * (1 - share of signalled calls / 2) per round trip)
rather than a halving on every signal: 429s that come at random, independent of load,
would pin a halve-per-signal window near 1.22/sqrt(p) (p = 4%: about 6 places), while
real overload (a large share of calls rejected) still halves it every round trip. When the
window shrinks, calls already in flight finish and no new one starts until the count is
below it; it never goes under 1.

A 429 reaches the limiter through `cool_down`: with a Retry-After (``cool_down(seconds)``)
every *new* call waits that long (capped at ``max_cool_down``), as before; without one
(``cool_down(None)``) the window shrinks (`congested`) instead of stalling every call.
``cool_down()`` without an argument still pauses for ``default_cool_down``.

For reports: `window` (now), `concurrency` (the maximum), `in_flight`, `waited_s` (bucket
and cool-down waits) and `decreases` (signals that shrank the window).

`retry_policy` is the tenacity policy: exponential backoff with full jitter, retrying
only `RetryableError`, and re-raising the last error when attempts run out.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque

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


# The start number of the slot the running task is inside, so that `congested` can tell a
# signal of a new round trip (from a call that started after the current one began).
_CALL: contextvars.ContextVar[int] = contextvars.ContextVar("evol_limiter_call", default=0)
_DEFAULT = object()  # cool_down() without an argument


class Limiter:
    """Adaptive window of calls in flight + optional requests/tokens per minute + cool-down."""

    def __init__(self, concurrency: int, rpm: float | None = None, tpm: float | None = None,
                 *, initial: int | None = None, default_cool_down: float = 2.0,
                 max_cool_down: float = 120.0):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency  # the window's maximum
        # places for calls in flight: a float that moves by fractions; its whole part counts
        self.window = float(concurrency if initial is None else min(max(1, initial), concurrency))
        self._limit = int(self.window)
        self.default_cool_down = default_cool_down
        self.max_cool_down = max_cool_down
        self._requests = _Bucket(rpm) if rpm else None
        self._tokens = _Bucket(tpm) if tpm else None
        self._resume_at = 0.0  # time.monotonic() before which no new call starts
        self._held = 0         # window places taken (calls in flight and ones still waiting
                               # out a cool-down or bucket after being admitted)
        self._queue: deque[asyncio.Future] = deque()  # FIFO of calls waiting for a place
        self._started = 0      # calls admitted so far; each call's number is its start order
        self._mark = 0         # value of _started when the current round trip began
        self._floor = 1.0      # the window may not shrink below this in that round trip
        self._recovering = False  # no call started in that round trip has ended yet
        self.in_flight = 0
        self.waited_s = 0.0    # total seconds spent waiting on rate limits and cool-downs
        self.decreases = 0     # congestion signals that shrank the window

    # -- signals ------------------------------------------------------------------------
    def congested(self) -> bool:
        """One call met an overloaded server: take half a place off the window.

        The signals of one round trip take off at most half the window it had when the
        first of them came, and never bring it under 1. A round trip is over for a signal
        from a call that started after that first signal or, outside any slot, once such a
        call has ended. Returns whether the window shrank.
        """
        call = _CALL.get()  # the number of the slot this task is in; 0 outside any
        if (call > self._mark) if call else not self._recovering:  # a new round trip
            self._floor = max(1.0, self.window / 2.0)
            self._mark = self._started
            self._recovering = True
        if self.window <= self._floor:
            return False
        self.window = max(self._floor, self.window - 0.5)
        self._limit = int(self.window)
        self.decreases += 1
        return True

    def cool_down(self, seconds: float | None = _DEFAULT) -> None:  # type: ignore[assignment]
        """After a 429: pause every new call `seconds` from now (capped at `max_cool_down`).

        ``None`` (a 429 without Retry-After) shrinks the window instead (`congested`); no
        argument pauses for `default_cool_down`.
        """
        if seconds is None:
            self.congested()
            return
        if seconds is _DEFAULT:
            seconds = self.default_cool_down
        seconds = min(max(0.0, seconds), self.max_cool_down)
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    @property
    def cooling_for(self) -> float:
        return max(0.0, self._resume_at - time.monotonic())

    # -- slots --------------------------------------------------------------------------
    def slot(self, est_tokens: int = 0) -> "_Slot":
        """``async with limiter.slot(est):`` around one call; a normal exit is a success."""
        return _Slot(self, est_tokens)

    async def _admit(self) -> None:
        """Wait in line for a place in the window; `_hand_over` gives it, in FIFO order."""
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        if self._held < self._limit:  # only cancelled waiters were ahead: go now
            self._hand_over()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed a place, then cancelled
                self._give_back()
            else:
                waiter.cancel()  # left in the queue; `_hand_over` skips it
            raise

    def _hand_over(self) -> None:
        queue = self._queue
        while queue and self._held < self._limit:
            waiter = queue.popleft()
            if not waiter.done():
                self._held += 1
                waiter.set_result(None)

    def _give_back(self) -> None:
        self._held -= 1
        if self._queue:
            self._hand_over()

    async def _wait_for_rates(self, est_tokens: int) -> None:
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


class _Slot:
    """One call's place in the window (what `Limiter.slot` returns)."""

    __slots__ = ("limiter", "est_tokens", "number", "token")

    def __init__(self, limiter: Limiter, est_tokens: int):
        self.limiter, self.est_tokens = limiter, est_tokens

    async def __aenter__(self) -> None:
        lim = self.limiter
        if lim._held < lim._limit and not lim._queue:
            lim._held += 1
        else:
            await lim._admit()
        try:
            if lim._resume_at or lim._requests is not None or lim._tokens is not None:
                await lim._wait_for_rates(self.est_tokens)
        except BaseException:
            lim._give_back()
            raise
        lim._started += 1
        self.number = lim._started
        self.token = _CALL.set(self.number)
        lim.in_flight += 1

    async def __aexit__(self, exc_type, exc, tb) -> None:
        lim = self.limiter
        _CALL.reset(self.token)
        lim.in_flight -= 1
        lim._held -= 1
        if exc_type is None and lim.window < lim.concurrency:  # additive increase
            lim.window = min(float(lim.concurrency), lim.window + 1.0 / lim.window)
            lim._limit = int(lim.window)
        if lim._recovering and self.number > lim._mark:
            lim._recovering = False  # a round trip since the first signal
        if lim._queue:
            lim._hand_over()


def retry_policy(max_attempts: int, base: float = 0.5, cap: float = 30.0) -> AsyncRetrying:
    """Tenacity policy: up to `max_attempts` tries, jittered exponential waits up to `cap`."""
    return AsyncRetrying(
        stop=stop_after_attempt(max(1, max_attempts)),
        wait=wait_random_exponential(multiplier=base, max=cap),
        retry=retry_if_exception_type(RetryableError),
        reraise=True,
    )
