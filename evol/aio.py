"""How `evol` runs its event loop: uvloop when installed, and a calmer garbage collector.

A run keeps a few hundred requests in flight, each a handful of short-lived dicts and
coroutines; with CPython's default gen-0 threshold (700) the collector runs every few
requests and walks everything the process imported. Freezing the startup heap and raising
the threshold keeps those pauses out of the request path; the heap is frozen after a
collection of the young generations only, since a full one costs ~0.1 s of start-up. Both
are measured in `bench/throughput.py`; neither changes what a run computes.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on uvloop when it is installed, with the collector tuned for many small objects.

    Called where an event loop already runs (a notebook cell, an async application), the
    coroutine runs on a loop of its own in a worker thread, and this call waits for it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="evol-loop") as pool:
            return pool.submit(_run, coro).result()
    return _run(coro)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    old = gc.get_threshold()
    # The young generations only: a full pass over the imported heap takes ~0.1 s of
    # start-up; older garbage is frozen with the rest until the run ends (`unfreeze`).
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coro)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
