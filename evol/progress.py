"""Live progress: a rich display on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import asyncio
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from evol.runner import RunStats


def describe(stats: RunStats) -> str:
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    kept = f"{stats.kept_ratio:.0%}" if stats.kept_ratio is not None else "-"
    return (
        f"kept {kept} | {stats.model_calls / elapsed:.1f} req/s | "
        f"cached {stats.cached_calls} | tokens {stats.tokens_in:,}/{stats.tokens_out:,} | "
        f"errors {stats.errors} | rejected records {stats.records_rejected}"
    )


async def show_progress(stats: RunStats, console: Console, interval: float = 0.5) -> None:
    """Run until cancelled, redrawing from `stats`."""
    if not (console.is_terminal and sys.stderr.isatty()):
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                total = stats.total if stats.total is not None else "?"
                eta = stats.eta()
                left = f" | ETA {eta // 60:.0f}m{eta % 60:02.0f}s" if eta is not None else ""
                console.log(f"records {stats.accounted}/{total} | {describe(stats)}{left}")
    columns = (
        TextColumn("records"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("evolve", total=stats.total, info="")
        try:
            while True:
                bar.update(task, completed=stats.accounted, total=stats.total, info=describe(stats))
                await asyncio.sleep(interval)
        finally:
            bar.update(task, completed=stats.accounted, info=describe(stats))
