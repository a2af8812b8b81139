"""The breaker that stops a run nobody can finish: counts and an injected clock, no waiting."""

from __future__ import annotations

import pytest

from evol.backends.base import RunStopped
from evol.backends.health import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_streak_of_transport_failures_trips_it_and_a_success_resets_it():
    b = Breaker(max_streak=5, max_seconds=1e9, clock=Clock())
    for _ in range(4):
        b.failure("cannot connect to X")
    b.success()
    for _ in range(4):
        b.failure("cannot connect to X")
    b.check()  # 4 in a row since the success: still fine
    b.failure("cannot connect to X")
    with pytest.raises(RunStopped, match="cannot connect to X .5 attempts in a row"):
        b.check()


def test_a_long_streak_trips_it_by_time():
    clock = Clock()
    b = Breaker(max_streak=100, max_seconds=30, clock=clock)
    b.failure("timed out")
    clock.now = 29.0
    b.failure("timed out")
    assert not b.tripped
    clock.now = 30.5
    b.failure("timed out")
    assert b.tripped and "timed out" in b.cause


def test_refusals_in_a_row_trip_it_and_an_answer_resets_them():
    b = Breaker(max_streak=3, clock=Clock())
    b.refused("HTTP 400: too long")
    b.refused("HTTP 400: too long")
    b.success()
    b.refused("HTTP 400: too long")
    b.refused("HTTP 400: too long")
    assert not b.tripped
    b.refused("HTTP 400: too long")
    assert b.tripped and "3 requests in a row were refused" in b.cause


def test_the_first_cause_is_the_one_reported():
    b = Breaker()
    b.stop("the server at X refused the key")
    b.stop("disk full writing Y")
    for _ in range(50):
        b.failure("cannot connect")
    with pytest.raises(RunStopped) as info:
        b.check()
    assert info.value.cause == "the server at X refused the key"
