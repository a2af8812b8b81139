"""Live progress: a rich display on a terminal, a log line every few seconds elsewhere;
and the periodic checkpoint of the invocation's manifest entry (`show_progress`)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from evol.runner import RunStats


log = logging.getLogger("evol.progress")

CHECKPOINT_MAX = 30.0  # seconds between checkpoints, once the run is that old


def describe(stats: RunStats, now: float | None = None, cost: Any = None) -> str:
    """One line: kept share, requests/s and tokens/s, the window of calls in flight,
    retries and timeouts, failed requests by kind, failed rounds and rejected records, and
    with prices (`cost`, an `evol.stats.Meter`) the money spent so far by this invocation."""
    elapsed = max((time.monotonic() if now is None else now) - stats.started, 1e-9)
    kept = f"{stats.kept_ratio:.0%}" if stats.kept_ratio is not None else "-"
    http = stats.http
    tokens_in, tokens_out = (http["tokens_in"], http["tokens_out"]) if http else (stats.tokens_in, stats.tokens_out)
    parts = [f"kept {kept}", f"{stats.requests_sent / elapsed:.1f} req/s, {(tokens_in + tokens_out) / elapsed:,.0f} tok/s"]
    limiter = getattr(stats, "limiter", None)
    if limiter is not None and getattr(limiter, "adaptive", False):
        parts.append(f"window {int(limiter.window)}/{limiter.concurrency}")
    parts.append(f"cached {stats.cached_calls}")
    parts.append(f"tokens {tokens_in:,}/{tokens_out:,}")
    if http:
        retried, failed = http["retried"], http["failed"]
        timeouts = retried.get("timeout", {}).get("requests", 0) + failed.get("timeout", {}).get("requests", 0)
        parts.append(f"retries {sum(v['requests'] for v in retried.values())}{_by_kind(retried)}")
        parts.append(f"timeouts {timeouts}")
        parts.append(f"failed requests {sum(v['requests'] for v in failed.values())}{_by_kind(failed)}")
    parts.append(f"failed rounds {stats.errors}")
    parts.append(f"rejected records {stats.records_rejected}")
    if cost is not None and cost.known:
        parts.append(_money(cost.block()))
    return " | ".join(parts)


def _money(block: dict) -> str:
    """"cost 0.0123 (judge 0.004)"; a role whose prices are unknown shows "?"."""
    judge = block.get("judge") or {}
    shown = "?" if judge.get("money") is None else f"{judge['money']:.4g}"
    return f"cost {block['money'] or 0:.4g} (judge {shown})"


def _by_kind(table: dict) -> str:
    """The kinds of a retried or failed table, most first: " (429 x3, parse x1)"."""
    kinds = sorted(((v["requests"], k) for k, v in table.items() if v["requests"]), key=lambda x: (-x[0], x[1]))
    return f" ({', '.join(f'{k} x{n}' for n, k in kinds)})" if kinds else ""


class _Checkpoints:
    """Calls `save` after 1, 2, 4, 8, 16 s of the run, then every `CHECKPOINT_MAX` s: a
    killed invocation loses at most half its time, and at most that many seconds."""

    def __init__(self, save: Callable[[], None] | None, started: float):
        self.save, self.started = save, started
        self.next = started + 1.0

    def tick(self, now: float) -> None:
        if self.save is None or now < self.next:
            return
        elapsed = now - self.started
        self.next = now + min(CHECKPOINT_MAX, max(1.0, elapsed))
        try:
            self.save()
        except Exception as exc:  # a checkpoint is a convenience: the run goes on
            log.warning("could not update the manifest: %s", exc)


async def show_progress(stats: RunStats, console: Console, interval: float = 0.5,
                        checkpoint: Callable[[], None] | None = None, cost: Any = None) -> None:
    """Run until cancelled, redrawing from `stats`; calls `checkpoint` now and then (see
    `_Checkpoints`) so that the invocation's entry in the manifest keeps up."""
    checkpoints = _Checkpoints(checkpoint, stats.started)
    if not (console.is_terminal and sys.stderr.isatty()):
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            checkpoints.tick(time.monotonic())
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                total = stats.total if stats.total is not None else "?"
                eta = stats.eta()
                left = f" | ETA {eta // 60:.0f}m{eta % 60:02.0f}s" if eta is not None else ""
                console.log(f"records {stats.accounted}/{total} | {describe(stats, cost=cost)}{left}")
    columns = (
        TextColumn("records"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("evolve", total=stats.total, info="")
        try:
            while True:
                bar.update(task, completed=stats.accounted, total=stats.total, info=describe(stats, cost=cost))
                await asyncio.sleep(interval)
                checkpoints.tick(time.monotonic())
        finally:
            bar.update(task, completed=stats.accounted, info=describe(stats, cost=cost))
