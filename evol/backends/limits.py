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

Latency control (``adaptive=True``, what `evol evolve` uses). A server that serves fewer
calls at once than are sent queues the rest inside itself: nothing fails, every answer
just takes longer, until the last in the queue pass the call timeout and are sent again.
So the window also follows latency. It starts modest (``initial``, default
``min(concurrency, START)``) and samples the latency of every call that got an answer
(from its admission to the answer). Latency is judged per round trip (as above: a round
ends when a call that started after it began ends, with at least a few samples) by the
*median* of its samples, which spread alone (long and short answers) does not move much;
the *base* is the lowest round median seen recently. While the median of the round so
far stays under ``GROW`` x base, every answer that came that fast adds a place (the
window doubles per round trip), and until the first sign of queueing (or a 429 or
timeout) it doubles the window instead (the start: a queueing server shows at the second
answer, which comes one service time after the first; a parallel one answers the first
calls together); under ``CREEP`` x base each answer adds 1/window (+1 per round trip);
above, the window holds; a round whose median is above ``SHRINK`` x base (calls are
queueing in the server) shrinks it gently, at most by half, toward the window that would
bring the median back to ``CREEP`` x base. The window grows only while at least half of
it is in use. A timeout (see `congested`) shrinks it like a 429.

What the modest start costs: the calls beyond it wait for the first answer, about one
service time, once per run (bench/throughput.py: 1000 records, concurrency 128, 1 s
latency, a 17 s run: a few percent; an hour-long run: nothing measurable). What it buys:
against a server that serves one call at a time the first ``START`` calls queue at most
``START`` service times (2 s each: 16 s, far from a 120 s timeout), where 64 at once
would time the last ones out and send them again.

The base ages: a round under ``GROW`` x base confirms it; after ``base_age`` seconds
without one the base may be stale (longer prompts, a slower server) or the window may
have crept up with a queue that never drains. A *probe* then tells them apart: the window
drops to a quarter for a few calls, whose median becomes the base, and goes back. (Simply
letting the base rise would ratchet: a queue held for a while would become the new
normal, and the window would grow on top of it.) A call that got no real answer (a refused
dialect, resent at once) calls `discard` so that its latency is no sample.

For reports: `window` (now), `concurrency` (the maximum), `in_flight`, `waited_s` (bucket
and cool-down waits) and `decreases` (signals that shrank the window), and with latency
control `base_latency`, `latency_decreases` (rounds that shrank it), `probes` and
`rounds`.

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
    """A failure worth another attempt: 429, 5xx, timeout, connection error, bad reply.

    `kind` names which, for accounting: "429", "5xx" (and 408), "timeout", "connection",
    or "parse" (an answer that could not be used; the default).
    """

    kind = "parse"

    def __init__(self, message: str = "", kind: str | None = None):
        super().__init__(message)
        if kind is not None:
            self.kind = kind


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


# The slot the running task is inside, so that `congested` can tell a signal of a new
# round trip (from a call that started after the current one began) by its start number,
# and `discard` can find the call whose latency is no sample.
_CALL: contextvars.ContextVar["_Slot | None"] = contextvars.ContextVar("evol_limiter_call", default=None)
_DEFAULT = object()  # cool_down() without an argument

# Latency control (see the module docstring).
START = 8        # the first window, when no `initial` is given
GROW = 1.5       # round median under GROW x base: +1 place per answer (doubling per round trip)
CREEP = 2.0      # under CREEP x base: +1/window per answer; above it: hold
SHRINK = 3.0     # a round median above SHRINK x base shrinks the window
START_GAIN = 1.0  # until the first sign of queueing, each answer as fast as the base adds
                  # this share of the window


class Limiter:
    """Adaptive window of calls in flight + optional requests/tokens per minute + cool-down."""

    def __init__(self, concurrency: int, rpm: float | None = None, tpm: float | None = None,
                 *, initial: int | None = None, default_cool_down: float = 2.0,
                 max_cool_down: float = 120.0, adaptive: bool = False, base_age: float = 30.0):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency  # the window's maximum
        if initial is None:
            initial = min(concurrency, START) if adaptive else concurrency
        # places for calls in flight: a float that moves by fractions; its whole part counts
        self.window = float(min(max(1, initial), concurrency))
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
        # latency control
        self.adaptive = adaptive
        self.base_age = base_age
        self.base_latency: float | None = None  # lowest round median seen recently (seconds)
        self._base_at = 0.0    # when a round last set or confirmed it
        self._rmark = 0        # value of _started when the current latency round began
        self._rsamples: list[float] = []  # latencies of the answers of this round
        self._rover = [0, 0]   # of them: above GROW x and above CREEP x the base
        self._band = 0         # growth while a round has few samples: 0 +1, 1 +1/window, 2 none
        self._starting = adaptive  # the start: grow by a share of the window per answer
        self._probe: list | None = None  # [start mark, window before, samples, median before]
        self.rounds = 0
        self.latency_decreases = 0  # rounds whose median shrank the window
        self.probes = 0

    # -- signals ------------------------------------------------------------------------
    def congested(self) -> bool:
        """One call met an overloaded server: take half a place off the window.

        The signals of one round trip take off at most half the window it had when the
        first of them came, and never bring it under 1. A round trip is over for a signal
        from a call that started after that first signal or, outside any slot, once such a
        call has ended. Returns whether the window shrank.
        """
        self._starting = False
        slot = _CALL.get()
        call = slot.number if slot is not None else 0  # the number of this task's slot
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

    def discard(self) -> None:
        """The call in this task's slot got no real answer (e.g. a refused request resent at
        once): with latency control, its latency is no sample and it does not grow the window."""
        slot = _CALL.get()
        if slot is not None:
            slot.t0 = None

    # -- latency control ------------------------------------------------------------------
    def _answered(self, number: int, latency: float) -> None:
        """One call got an answer after `latency` seconds: grow, and judge the round."""
        samples, over = self._rsamples, self._rover
        samples.append(latency)
        ref = self.base_latency if self.base_latency is not None else samples[0]
        if latency > GROW * ref:
            over[0] += 1
            if latency > CREEP * ref:
                over[1] += 1
        n = len(samples)
        band = self._band
        if n >= 3:  # the median of the round so far is above a bound when most samples are
            band = 2 if 2 * over[1] > n else 1 if 2 * over[0] > n else 0
        if band:
            self._starting = False  # the first sign of queueing ends the start
        probe = self._probe
        if probe is None:
            # grow only while at least half of the window is in use
            if band < 2 and self.window < self.concurrency and 2 * (self.in_flight + 1) >= self._limit:
                if band == 1:
                    step = 1.0 / self.window
                elif latency < GROW * ref:  # this answer came as fast as the base
                    step = self.window * START_GAIN if self._starting else 1.0
                else:
                    step = 0.0
                self.window = min(float(self.concurrency), self.window + step)
                self._limit = int(self.window)
        elif number > probe[0]:
            probe[2].append(latency)
            if len(probe[2]) >= min(4, max(1, self._limit)):
                self._end_probe()
                return
        if number > self._rmark and n >= min(8 if self.base_latency is None else 4, max(1, self._limit // 2)):
            self._end_round()

    def _end_round(self) -> None:
        now = time.monotonic()
        median = _median(self._rsamples)
        base = self.base_latency
        if base is None or median < base:
            self.base_latency = base = median
            self._base_at = now
        elif median < GROW * base:
            self._base_at = now
        ratio = median / base if base > 0 else 1.0
        self._band = 0 if ratio < GROW else 1 if ratio < CREEP else 2
        if ratio > SHRINK and self._probe is None and self.window > 1:
            # toward the window that would bring the median to CREEP x base (the server's
            # throughput stays; the queue shrinks), half way, and at most by half
            self.window = max(1.0, self.window * max(0.5, (1.0 + CREEP / ratio) / 2.0))
            self._limit = int(self.window)
            self.latency_decreases += 1
        self.rounds += 1
        self._rmark = self._started
        self._rsamples, self._rover = [], [0, 0]
        if self._probe is None and now - self._base_at > self.base_age:
            self._probe = [self._started, self.window, [], median]
            self.window = max(1.0, self.window / 4.0)
            self._limit = int(self.window)
            self.probes += 1

    def _end_probe(self) -> None:
        _, window, samples, before = self._probe
        self._probe = None
        self.base_latency = base = _median(samples)
        self._base_at = time.monotonic()
        # back to the window before the probe, less the queue the probe revealed: the
        # window that would have brought the median before it to CREEP x the new base
        if base > 0 and before > CREEP * base:
            window *= CREEP * base / before
        self.window = max(self.window, window, 1.0)
        self._limit = int(self.window)
        self._band = 0
        self._rmark = self._started  # a new round, of calls that start now
        self._rsamples, self._rover = [], [0, 0]
        if self._queue:
            self._hand_over()

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

    __slots__ = ("limiter", "est_tokens", "number", "token", "t0")

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
        self.token = _CALL.set(self)
        lim.in_flight += 1
        self.t0 = time.monotonic() if lim.adaptive else None

    async def __aexit__(self, exc_type, exc, tb) -> None:
        lim = self.limiter
        _CALL.reset(self.token)
        lim.in_flight -= 1
        lim._held -= 1
        if exc_type is None:
            if lim.adaptive:
                if self.t0 is not None:
                    lim._answered(self.number, time.monotonic() - self.t0)
            elif lim.window < lim.concurrency:  # additive increase
                lim.window = min(float(lim.concurrency), lim.window + 1.0 / lim.window)
                lim._limit = int(lim.window)
        if lim._recovering and self.number > lim._mark:
            lim._recovering = False  # a round trip since the first signal
        if lim._queue:
            lim._hand_over()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def retry_policy(max_attempts: int, base: float = 0.5, cap: float = 30.0) -> AsyncRetrying:
    """Tenacity policy: up to `max_attempts` tries, jittered exponential waits up to `cap`."""
    return AsyncRetrying(
        stop=stop_after_attempt(max(1, max_attempts)),
        wait=wait_random_exponential(multiplier=base, max=cap),
        retry=retry_if_exception_type(RetryableError),
        reraise=True,
    )
