"""What evol says while it works: notes, warnings and summaries, on standard error.

The API and the CLI print through here so a notebook user sees the same lines as a shell
user; `quiet()` silences them (the results are returned either way).
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def say(text: str) -> None:
    """A plain line (no markup is read from `text`)."""
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def note(text: str, kind: str = "note", colour: str = "yellow") -> None:
    """`note: text` (also `warning:`, `skipped`...); `text` may hold brackets from a server."""
    console.print(f"[{colour}]{kind}[/{colour}]{':' if kind in ('note', 'warning', 'error') else ''} {escape(text)}",
                  highlight=False, soft_wrap=True)


def error(text: str) -> None:
    note(text, "error", "red")


@contextmanager
def quiet() -> Iterator[None]:
    """Say nothing inside the block."""
    was = console.quiet
    console.quiet = True
    try:
        yield
    finally:
        console.quiet = was


def setup_logging(log_file: Path | None, verbose: bool) -> None:
    """Log warnings (everything with `verbose`) to standard error, and to `log_file` when given."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)
    for noisy in ("httpx", "openai", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
