"""The adaptive limiter (window of calls in flight, cool-downs, buckets), and the test
server's rate-limit, API-key and capacity options.

Nothing here depends on how fast the machine is: the limiter tests count places, calls
and signals (tasks are moved on with ``asyncio.sleep(0)``, never timed), the bucket tests
run on an injected clock, and the few real waits are checked from below only.
"""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from evol.backends import limits as limits_mod
from evol.backends.base import BackendError
from evol.backends.limits import Limiter, RetryableError
from evol.testing.server import ServerConfig, _parse, start_in_thread


async def settle(rounds: int = 8) -> None:
    """Let every task that can run do so (a handed-over place is taken on the next turn)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Call:
    """One call that sits in its slot until `finish` says how it went."""

    def __init__(self, limiter: Limiter, log: list | None = None, name=None):
        self.limiter, self.log, self.name = limiter, log, name
        self.outcome = asyncio.get_running_loop().create_future()
        self.inside = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        async with self.limiter.slot(1):
            self.inside = True
            if self.log is not None:
                self.log.append(self.name)
            kind = await self.outcome
            if kind == "429":  # what the OpenAI backend does on a 429 without Retry-After
                self.limiter.cool_down(None)
                raise RetryableError("rate limited (HTTP 429)")
            if kind == "error":
                raise ValueError("boom")

    async def finish(self, kind: str | None = None) -> None:
        self.outcome.set_result(kind)
        await asyncio.gather(self.task, return_exceptions=True)


async def start(limiter: Limiter, n: int, log: list | None = None, first: int = 0) -> list[Call]:
    calls = [Call(limiter, log, first + i) for i in range(n)]
    await settle()
    return calls


async def succeed(limiter: Limiter, n: int) -> None:
    for _ in range(n):
        async with limiter.slot(1):
            pass


# ------------------------------------------------------------------------- window

async def test_starts_at_the_maximum_or_at_initial():
    assert Limiter(32).window == 32 and Limiter(32).concurrency == 32
    low = Limiter(10, initial=3)
    assert (low.window, low.concurrency) == (3, 10)
    assert Limiter(4, initial=99).window == 4 and Limiter(4, initial=0).window == 1
    calls = await start(low, 6)
    assert low.in_flight == 3 and sum(c.inside for c in calls) == 3
    for c in calls:
        await c.finish()
    assert low.in_flight == 0 and low.window > 3
    with pytest.raises(ValueError):
        Limiter(0)


async def test_a_burst_of_429s_halves_the_window_once_per_round_trip():
    lim = Limiter(32)
    burst = await start(lim, 32)
    assert lim.in_flight == 32
    for c in burst[:4]:
        await c.finish("429")
    assert lim.window == 30  # each signal takes half a place
    for c in burst[4:]:
        await c.finish("429")  # the rest of the burst, all started before it
    assert lim.window == 16 and lim.decreases == 32
    assert not lim.congested() and lim.window == 16  # outside a slot, no round trip yet
    # calls that start now belong to the next round trip: they may halve it once more
    second = await start(lim, 16)
    assert lim.in_flight == 16
    for c in second:
        await c.finish("429")
    assert lim.window == 8
    assert lim.in_flight == 0


async def test_a_call_that_started_after_a_decrease_ends_the_round_trip():
    lim = Limiter(8)
    old = await start(lim, 8)
    await old[0].finish("429")
    assert lim.window == 7.5
    for c in old[1:]:
        await c.finish()  # pre-decrease successes regrow it a little
    fresh = await start(lim, 1)
    await fresh[0].finish()
    before = lim.window
    assert lim.congested() and lim.window == before - 0.5  # a new round trip, outside a slot


async def test_never_below_one_and_one_call_still_goes():
    lim = Limiter(4)
    for _ in range(20):  # each call starts after the last signal: a new round trip each time
        (call,) = await start(lim, 1)
        await call.finish("429")
    assert lim.window == 1
    calls = await start(lim, 3)
    assert lim.in_flight == 1 and [c.inside for c in calls] == [True, False, False]
    for c in calls:
        await c.finish()
    assert lim.in_flight == 0


async def test_successes_grow_it_back_to_the_maximum_and_no_further():
    lim = Limiter(8, initial=4)
    await succeed(lim, 4)  # about +1 per window of successes
    assert 4.8 < lim.window < 5.0
    history = []
    for _ in range(40):
        await succeed(lim, 1)
        history.append(lim.window)
    assert history == sorted(history) and history[-1] == 8 and max(history) == 8
    assert lim.decreases == 0


async def test_failed_calls_do_not_grow_it():
    lim = Limiter(8, initial=2)
    for kind in ("error", "error"):
        (call,) = await start(lim, 1)
        await call.finish(kind)
    assert lim.window == 2 and lim.in_flight == 0
    with pytest.raises(KeyError):
        async with lim.slot(1):
            raise KeyError("x")
    assert lim.window == 2 and lim.decreases == 0


async def test_a_smaller_window_holds_back_new_calls_until_the_count_is_under_it():
    lim = Limiter(8)
    first = await start(lim, 8)
    waiting = await start(lim, 8, first=8)
    assert lim.in_flight == 8 and not any(c.inside for c in waiting)
    for c in first[:4]:
        await c.finish("429")
    await settle()
    assert lim.window == 6 and lim.in_flight == 6  # 4 left, 2 let in
    for c in first[4:]:
        await c.finish("429")  # stale: these started before the first signal
    await settle()
    assert lim.window == 4 and lim.in_flight == 4  # 2 + 2 more let in
    peak = 0
    for c in waiting:
        if c.inside:
            peak = max(peak, lim.in_flight)
            await c.finish()
            await settle()
    assert peak <= 5 and lim.in_flight == 0


async def test_waiters_are_let_in_first_come_first_served():
    lim, log = Limiter(2), []
    holders = await start(lim, 2, log)
    waiting = await start(lim, 10, log, first=2)
    assert log == [0, 1]
    for c in holders:
        await c.finish()
    await settle()
    while any(not c.task.done() for c in waiting):
        inside = [c for c in waiting if c.inside and not c.task.done()]
        for c in inside:
            await c.finish()
        await settle()
    assert log == list(range(12))


async def test_cancelled_waiters_give_their_place_on():
    lim, log = Limiter(1), []
    (holder,) = await start(lim, 1, log)
    a, b, c = await start(lim, 3, log, first=1)
    a.task.cancel()
    await settle()
    await holder.finish()
    await settle()
    assert log == [0, 2] and b.inside and lim.in_flight == 1
    await b.finish()
    # c was handed the place; cancelled before it ran, it must give it back
    c.task.cancel()
    await asyncio.gather(c.task, return_exceptions=True)
    assert lim.in_flight == 0
    async with lim.slot(1):  # nothing leaked: the one place is free
        assert lim.in_flight == 1


async def test_only_cancelled_waiters_ahead_do_not_block_a_new_call():
    lim = Limiter(1)
    (holder,) = await start(lim, 1)
    (queued,) = await start(lim, 1, first=1)
    queued.task.cancel()
    await holder.finish()
    await settle()
    await asyncio.wait_for(succeed(lim, 1), 5)


async def test_the_uncontended_path_never_queues(monkeypatch):
    lim = Limiter(4)

    async def no_queue():
        raise AssertionError("queued with free places")

    monkeypatch.setattr(lim, "_admit", no_queue)
    await succeed(lim, 1000)
    assert lim.in_flight == 0 and lim.window == 4


# --------------------------------------------------------- cool-downs and buckets

async def test_retry_after_still_pauses_new_calls():
    lim = Limiter(4)
    lim.cool_down(0.2)  # a 429 with Retry-After: 0.2
    assert 0 < lim.cooling_for <= 0.2 and lim.window == 4
    t0 = time.monotonic()
    async with lim.slot(1):
        waited = time.monotonic() - t0
    assert waited >= 0.19 and lim.waited_s >= 0.19
    assert lim.window == 4 and lim.decreases == 0


async def test_no_retry_after_shrinks_instead_of_pausing():
    lim = Limiter(4)
    (call,) = await start(lim, 1)
    await call.finish("429")
    assert lim.cooling_for == 0 and lim.waited_s == 0
    assert lim.window == 3.5 and lim.decreases == 1


async def test_cool_down_is_capped_and_defaults_without_an_argument():
    lim = Limiter(4, default_cool_down=0.3, max_cool_down=0.05)
    lim.cool_down(3600)
    assert 0 < lim.cooling_for <= 0.05
    lim = Limiter(4, default_cool_down=0.3)
    lim.cool_down()
    assert 0.2 < lim.cooling_for <= 0.3 and lim.window == 4


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch):
    """limits.time.monotonic and asyncio.sleep on a clock that only sleeps move."""
    fake, sleeps = FakeClock(), []

    async def sleep(seconds, *args):
        sleeps.append(seconds)
        fake.now += seconds

    monkeypatch.setattr(limits_mod, "time", fake)
    monkeypatch.setattr(limits_mod.asyncio, "sleep", sleep)
    fake.sleeps = sleeps
    return fake


async def test_rpm_bucket_bursts_a_second_then_paces(clock):
    lim = Limiter(100, rpm=1200)  # 20/s, about one second of burst
    starts = []
    for _ in range(30):
        async with lim.slot(1):
            starts.append(clock.now - 1000.0)
    assert starts[:20] == [0.0] * 20
    assert starts[20:] == pytest.approx([0.05 * k for k in range(1, 11)])
    assert lim.waited_s == pytest.approx(0.5)


async def test_tpm_bucket_paces_by_estimated_tokens(clock):
    lim = Limiter(100, tpm=60_000)  # 1000 tokens/s
    for _ in range(6):
        async with lim.slot(250):
            pass
    assert clock.sleeps == pytest.approx([0.25, 0.25])


# ------------------------------------------------------------------ test server

async def post(url: str, headers: dict | None = None, path: str = "/chat/completions"):
    body = {"model": "mock", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as session:
        if path == "/models":
            async with session.get(url + path, headers=headers) as resp:
                return resp.status, dict(resp.headers), await resp.text()
        async with session.post(url + path, json=body, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.text()


@pytest.mark.parametrize("retry_after, header", [(0.0, "0"), (1.5, "1.5"), (None, None)])
async def test_429_retry_after_header_is_configurable(retry_after, header):
    srv = start_in_thread(ServerConfig(fail_429=1.0, retry_after=retry_after))
    try:
        status, headers, _ = await post(srv.url)
    finally:
        srv.stop()
    assert status == 429
    assert {k.lower(): v for k, v in headers.items()}.get("retry-after") == header


async def test_api_key_is_checked_and_never_echoed():
    key = "sk-server-side-7d41"
    srv = start_in_thread(ServerConfig(api_key=key))
    try:
        wrong = "sk-wrong-guess-0000"
        for headers in ({"Authorization": f"Bearer {wrong}"}, None, {"Authorization": wrong}):
            status, _, text = await post(srv.url, headers)
            assert status == 401
            assert json.loads(text) == {"error": {
                "message": "Incorrect API key provided", "type": "invalid_request_error",
                "code": "invalid_api_key"}}
            assert wrong not in text and key not in text
        status, _, _ = await post(srv.url, {"Authorization": f"Bearer {wrong}"}, "/models")
        assert status == 401
        status, _, text = await post(srv.url, {"Authorization": f"Bearer {key}"})
        assert status == 200 and key not in text
        status, _, _ = await post(srv.url, {"Authorization": f"Bearer {key}"}, "/models")
        assert status == 200
        stats = srv.stats()
    finally:
        srv.stop()
    assert stats["status"] == {"401": 4, "200": 1} and stats["requests"] == 4


async def test_backend_reports_a_wrong_key_at_once(tmp_path, monkeypatch):
    from evol.backends.base import Message, Request, Text
    from evol.backends.openai import OpenAIBackend
    from evol.images import ImageStore

    monkeypatch.setenv("EVOL_LIMITS_KEY", "sk-client-wrong-1234")
    srv = start_in_thread(ServerConfig(api_key="sk-server-right-5678"))
    backend = OpenAIBackend("mock-vlm", srv.url, "EVOL_LIMITS_KEY", images=ImageStore(tmp_path),
                            limiter=Limiter(2), max_attempts=4, timeout=10.0)
    try:
        with pytest.raises(BackendError, match="401") as info:
            await backend.complete(Request(messages=(Message("user", (Text("hi"),)),), tag="k1"))
    finally:
        await backend.aclose()
        srv.stop()
    assert "Incorrect API key" in str(info.value) and "sk-client-wrong-1234" not in str(info.value)
    assert srv.stats()["status"] == {"401": 1}  # not retried


async def test_capacity_serves_at_most_c_at_once_and_queues_the_rest():
    srv = start_in_thread(ServerConfig(capacity=3, latency=0.2))
    try:
        t0 = time.monotonic()
        results = await asyncio.gather(*(post(srv.url) for _ in range(12)))
        took = time.monotonic() - t0
        stats = srv.stats()
    finally:
        srv.stop()
    assert [status for status, _, _ in results] == [200] * 12
    assert stats["peak_serving"] == 3 and stats["serving"] == 0
    assert took >= 4 * 0.2 * 0.95  # 12 requests, 3 at a time, 0.2 s each: the queue waited


async def test_defaults_keep_the_old_behaviour_and_cli_flags_parse():
    srv = start_in_thread(ServerConfig())
    try:
        status, _, _ = await post(srv.url)
        stats = srv.stats()
    finally:
        srv.stop()
    assert status == 200 and "peak_serving" not in stats and "401" not in stats["status"]
    cfg, _ = _parse(["--retry-after", "none", "--capacity", "4", "--api-key", "k"])
    assert (cfg.retry_after, cfg.capacity, cfg.api_key) == (None, 4, "k")
    cfg, _ = _parse(["--retry-after", "2.5"])
    assert (cfg.retry_after, cfg.capacity, cfg.api_key) == (2.5, None, None)
    assert _parse([])[0] == ServerConfig()


# ------------------------------------------------------------ latency control (adaptive)
#
# Virtual time, as in test_openai_backend.py: limits.time.monotonic and limits.asyncio.sleep
# are replaced, time moves only when every task sleeps, straight to the next wake-up; the
# "servers" below sleep on the same clock. Every figure is exact, whatever the machine.

class VirtualTime:
    def __init__(self, monkeypatch):
        import heapq
        import itertools
        import types

        self._heapq = heapq
        self.now, self._sleepers, self._seq = 0.0, [], itertools.count()
        monkeypatch.setattr(limits_mod, "time", types.SimpleNamespace(
            **{**vars(time), "monotonic": lambda: self.now}))
        monkeypatch.setattr(limits_mod, "asyncio", types.SimpleNamespace(
            **{**vars(asyncio), "sleep": self.sleep}))

    async def sleep(self, seconds):
        wake = asyncio.get_running_loop().create_future()
        self._heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), wake))
        await wake

    async def run(self, *coros):
        everything = asyncio.ensure_future(asyncio.gather(*coros))
        while True:
            for _ in range(50):
                await asyncio.sleep(0)
            if everything.done():
                return everything.result()
            assert self._sleepers, "no task can run and none sleeps"
            self.now, _, wake = self._heapq.heappop(self._sleepers)
            wake.set_result(None)


class VirtualServer:
    """Answers after `latency` seconds (a function of the virtual time, or a number);
    with `capacity`, serves that many at once and queues the rest, first come first served."""

    def __init__(self, clock: VirtualTime, latency, capacity: int | None = None):
        self.clock, self.capacity = clock, capacity
        self.latency = latency if callable(latency) else (lambda now: latency)
        self.gate = asyncio.Semaphore(capacity) if capacity else None

    async def answer(self):
        if self.gate is None:
            await self.clock.sleep(self.latency(self.clock.now))
            return
        async with self.gate:
            await self.clock.sleep(self.latency(self.clock.now))


async def drive(clock: VirtualTime, limiter: Limiter, server: VirtualServer, calls: int):
    """`calls` calls at once through the limiter; returns each call's (start, latency) and
    the window seen at each start."""
    seen, windows = [], []

    async def call():
        async with limiter.slot(1):
            t0 = clock.now
            windows.append((t0, limiter.window, limiter.in_flight))
            await server.answer()
            seen.append((t0, clock.now - t0))

    await clock.run(*(call() for _ in range(calls)))
    return seen, windows


async def test_adaptive_starts_modest_and_fills_the_window_in_one_answer_time(monkeypatch):
    clock = VirtualTime(monkeypatch)
    lim = Limiter(64, adaptive=True)
    assert lim.window == 8 and Limiter(5, adaptive=True).window == 5
    assert Limiter(64, adaptive=True, initial=20).window == 20 and Limiter(64).window == 64
    seen, windows = await drive(clock, lim, VirtualServer(clock, 1.0), 400)
    # 8 calls at t=0; their answers at t=1 double the window each (8 -> 64): from then on
    # 64 calls are in flight, and nothing ever shrank it
    assert sorted(t0 for t0, _ in seen)[:9] == [0.0] * 8 + [1.0]
    full = min(t0 for t0, _, n in windows if n == 64)
    assert full == 1.0 and lim.window == 64 and lim.base_latency == 1.0
    assert lim.latency_decreases == 0 and lim.decreases == 0 and lim.probes == 0
    assert clock.now == 1.0 + (400 - 8 + 63) // 64  # 8, then 64 per second


async def test_adaptive_fits_a_server_that_serves_one_at_a_time(monkeypatch):
    """The goal case of the capacity-one bench in virtual time: 64 allowed, 2 s per answer,
    one answer at a time. Only a few calls ever wait in the server's queue: no call comes
    anywhere near a 120 s timeout, where 64 at once would time the last ones out."""
    clock = VirtualTime(monkeypatch)
    lim = Limiter(64, adaptive=True)
    seen, _ = await drive(clock, lim, VirtualServer(clock, 2.0, capacity=1), 200)
    worst = max(lat for _, lat in seen)
    assert worst <= 40.0, worst  # at most 20 queued, once, at the start
    assert max(lat for t0, lat in seen if t0 > 120) <= 16.0  # then a short queue
    assert lim.latency_decreases >= 1 and lim.window <= 8 and lim.base_latency == 2.0
    assert clock.now == 400.0  # and the server never idled: 200 answers x 2 s
    # without latency control every call is let in at once: the last waits 200 x 2 s
    clock2 = VirtualTime(monkeypatch)
    seen, _ = await drive(clock2, Limiter(64), VirtualServer(clock2, 2.0, capacity=1), 200)
    assert max(lat for _, lat in seen) == 128.0


async def test_the_base_is_probed_and_never_ratchets_up_with_a_held_queue(monkeypatch):
    """A long run against the one-at-a-time server: the base is re-measured by probes
    (the window drops to a quarter for a few calls), so a queue that persisted never
    becomes the new normal: the queue stays short to the end."""
    clock = VirtualTime(monkeypatch)
    lim = Limiter(64, adaptive=True, base_age=30.0)
    seen, _ = await drive(clock, lim, VirtualServer(clock, 2.0, capacity=1), 600)
    assert lim.probes >= 5 and lim.base_latency == 2.0
    late = [lat for t0, lat in seen if t0 > 600]
    assert late and max(late) <= 16.0 and lim.window <= 8


async def test_the_base_rises_when_every_answer_takes_longer(monkeypatch):
    """The server gets slower for every call alike (longer prompts, no queue): the base
    follows through a probe, and the window goes back to its maximum instead of
    shrinking on a latency that is not queueing."""
    clock = VirtualTime(monkeypatch)
    lim = Limiter(32, adaptive=True, base_age=10.0)
    seen, _ = await drive(clock, lim, VirtualServer(clock, lambda now: 1.0 if now < 20 else 3.0), 1500)
    assert lim.base_latency == 3.0 and lim.probes >= 1
    assert lim.window == 32
    assert max(lat for _, lat in seen) == 3.0  # never a queue: the server takes everything


async def test_discarded_calls_and_failures_are_no_samples(monkeypatch):
    clock = VirtualTime(monkeypatch)
    lim = Limiter(16, adaptive=True)

    async def refused():  # answered at once, without a real answer (a refused dialect)
        async with lim.slot(1):
            lim.discard()

    async def failing():
        async with lim.slot(1):
            await clock.sleep(0.5)
            raise RetryableError("HTTP 500", "5xx")

    async def ok():
        async with lim.slot(1):
            await clock.sleep(2.0)

    await clock.run(*(refused() for _ in range(8)))
    outcomes = await clock.run(*(_swallow(failing()) for _ in range(4)))
    assert outcomes == ["5xx"] * 4
    assert lim.base_latency is None and lim.window == 8  # nothing sampled, nothing grown
    await clock.run(*(ok() for _ in range(8)))
    assert lim.base_latency == 2.0


async def _swallow(coro):
    try:
        await coro
    except RetryableError as exc:
        return exc.kind


async def test_a_timeout_or_429_ends_the_fast_start(monkeypatch):
    clock = VirtualTime(monkeypatch)
    lim = Limiter(64, adaptive=True)
    windows = []

    async def call(signal: bool):
        async with lim.slot(1):
            windows.append((clock.now, lim.window))
            await clock.sleep(1.0)
            if signal:
                lim.congested()  # what the OpenAI backend does on a timeout or a bare 429
                raise RetryableError("timed out after 1 s", "timeout")

    await clock.run(_swallow(call(True)), *(call(False) for _ in range(40)))
    # the first answer is the signal: half a place off, then +1 per answer of the first
    # eight (no doubling: that would be 64 at once)
    assert lim.decreases == 1
    assert max(w for t, w in windows if t == 1.0) == 7.5 + 7
