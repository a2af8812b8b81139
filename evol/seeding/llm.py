"""Plumbing every LLM seed generator shares: the cached backend, calls, ordered output.

A seed generator is a stream: input records go in, each becomes one or more model calls
under the run's `Limiter`, and finished output is written in input order (a bounded
window of records is in flight, so a huge input is never loaded). Every call goes through
the `CachedBackend`, so rerunning an interrupted command repeats no call: it replays the
finished ones from the cache and rewrites the output file from scratch.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, TypeVar

from evol.backends.base import Backend, Message, Request, Sampling, Text
from evol.io import JsonlWriter
from evol.provision.seed import derived_rng

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["LLMOptions", "Produced", "SeedOutput", "derived_rng", "open_backend", "ordered_map",
           "run_stream", "chat"]


@dataclass(frozen=True)
class LLMOptions:
    """How to reach the model, and how hard to push it."""

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 120.0
    max_attempts: int = 6
    temperature: float = 0.7
    max_tokens: int = 2048
    seed: int = 0
    backend: str = "openai"        # openai | vllm | hf (see evol.backends.settle_backend)
    model_path: str | None = None  # local backends: folder or .gguf; None = the embedded default
    device: str = "auto"
    batch_size: int = 8

    def sampling(self, *parts: str) -> Sampling:
        """Sampling with a seed of its own per call site, stable across processes."""
        return Sampling(self.temperature, 1.0, self.max_tokens, derived_rng(self.seed, "sampling", *parts).getrandbits(31))


@asynccontextmanager
async def open_backend(opts: LLMOptions, cache_path: Path) -> AsyncIterator[Backend]:
    """The chosen backend (text only) behind the request cache at `cache_path`."""
    from evol.backends import BackendChoice, build_backend
    from evol.backends.limits import Limiter
    from evol.cache import Cache, CachedBackend
    from evol.images import ImageStore

    images = ImageStore(None, 0)  # annotations only: no pixels are ever sent
    choice = BackendChoice(opts.backend, opts.model, opts.model_path)
    inner = build_backend(choice, images=images, limiter=Limiter(opts.concurrency, rpm=opts.rpm, tpm=opts.tpm),
                          device=opts.device, batch_size=opts.batch_size, max_new_tokens=opts.max_tokens,
                          base_url=opts.base_url, api_key_env=opts.api_key_env, timeout=opts.timeout,
                          max_attempts=opts.max_attempts, image_detail=None)
    cache = Cache(cache_path)
    try:
        yield CachedBackend(inner, cache, images)
    finally:
        await inner.aclose()
        cache.close()


def chat(system: str, user: str, *, schema: dict[str, Any], schema_name: str, sampling: Sampling,
         template: str, tag: str) -> Request:
    return Request(messages=(Message.text("system", system), Message("user", (Text(user),))),
                   schema=schema, schema_name=schema_name, sampling=sampling, template=template, tag=tag)


async def ordered_map(units: Iterable[T], work: Callable[[T], Awaitable[R]], window: int) -> AsyncIterator[R]:
    """`work(unit)` for every unit, up to `window` at once, results yielded in input order.

    `work` must not raise for ordinary failures (it returns them); anything it does raise
    cancels the units still in flight and propagates.
    """
    pending: deque[asyncio.Future] = deque()
    try:
        for unit in units:
            pending.append(asyncio.ensure_future(work(unit)))
            while len(pending) >= window or (pending and pending[0].done()):
                yield await pending.popleft()
            await asyncio.sleep(0)
        while pending:
            yield await pending.popleft()
    finally:
        for fut in pending:
            fut.cancel()


@dataclass
class SeedOutput:
    """A seed file written in one go: records to `<out>`, rejects beside it, a manifest.

    The records file is written to a temporary name and moved over `out` at the end, so an
    interrupted run never leaves a half file that looks finished.
    """

    out: Path
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        self._records = JsonlWriter(self._tmp, append=False)
        self._rejects = JsonlWriter(self.rejects_path, append=False)

    @property
    def rejects_path(self) -> Path:
        return self.out.with_name(self.out.stem + ".rejects.jsonl")

    @property
    def manifest_path(self) -> Path:
        return self.out.with_name(self.out.stem + ".manifest.json")

    def write(self, record: Any) -> None:
        self._records.write(record)
        self.counts["records_out"] += 1

    def reject(self, entry: dict[str, Any]) -> None:
        self._rejects.write(entry)
        self.counts["rejects"] += 1
        self.reasons[f"{entry.get('stage')}: {entry.get('rule') or 'failed'}"] += 1

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self._records.close()
        self._rejects.close()
        os.replace(self._tmp, self.out)
        full = {**manifest, "counts": dict(self.counts), "rejects_by_reason": dict(self.reasons),
                "wall_s": round(time.monotonic() - self.started, 3)}
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(full, indent=2, ensure_ascii=False))
        os.replace(tmp, self.manifest_path)
        return full

    def abort(self) -> None:
        self._records.close()
        self._rejects.close()
        self._tmp.unlink(missing_ok=True)


@dataclass
class Produced:
    """What one input record produced: output records and reject entries, in order."""

    records: list[Any] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)


async def run_stream(inputs: Iterable[Any], one: Callable[[Any, str], Awaitable[Produced]],
                     write: Callable[[Any], None], reject: Callable[[dict[str, Any]], None], *,
                     window: int, limit: int | None = None) -> int:
    """Feed read results to `one(record, key)`, writing what each produced in input order.

    Unreadable entries and repeated ids are rejected (final) without a call. Returns how
    many inputs were read.
    """
    from evol.rundir import reject_entry

    seen: set[str] = set()
    count = 0

    def units() -> Iterable[Any]:
        nonlocal count
        for n, res in enumerate(inputs):
            if limit is not None and n >= limit:
                return
            count += 1
            yield res

    async def work(res: Any) -> Produced:
        if res.error is not None:
            entry = reject_entry(res.key, res.error.reason, "read", record=res.error.record_id, final=True)
            return Produced([], [{**entry, "rule": "unreadable"}])
        if res.key in seen:
            entry = reject_entry(f"{res.key}@{res.index}", "duplicate record id", "read", record=res.key, final=True)
            return Produced([], [{**entry, "rule": "duplicate"}])
        seen.add(res.key)
        return await one(res.record, res.key)

    async for out in ordered_map(units(), work, window):
        for entry in out.rejects:
            reject(entry)
        for rec in out.records:
            write(rec)
    return count
