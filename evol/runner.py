"""The round runner: every record is its own task that goes through all its rounds.

There is no barrier between rounds: a record starts round n+1 as soon as its round n is
judged, and is written the moment it finishes. Concurrency is bounded twice: the
backend's limiter bounds calls in flight, and the runner bounds records in flight so a
huge input is streamed, never loaded. The runner knows nothing of prompts: operators build
requests and parse replies; the judge and rule checks decide what is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from evol.backends.base import Backend, BackendError, Reply, Request
from evol.config import EvolveConfig
from evol.eliminator.judge import Judge
from evol.eliminator.rules import check_rules
from evol.images import ImageError, ImageStore
from evol.io import JsonlWriter, read_records
from evol.operators import OPERATORS, choose_operator, record_rng
from evol.operators.base import BuildOptions
from evol.records import Item, Record, Version
from evol.backends.base import Sampling
from evol.rundir import RunDir, reject_entry

log = logging.getLogger("evol.runner")


@dataclass
class RunStats:
    """Live counters, read by the progress display and the final summary."""

    total: int | None = None
    skipped_done: int = 0
    records_done: int = 0
    records_rejected: int = 0
    items_evolved: int = 0
    items_kept: int = 0
    model_calls: int = 0
    cached_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        """Records finished in this invocation (written or rejected)."""
        return self.records_done + self.records_rejected

    @property
    def accounted(self) -> int:
        """Records done in all: finished now, or found finished by an earlier invocation."""
        return self.finished + self.skipped_done

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at this invocation's pace, or None while that is unknown."""
        if self.total is None or self.finished == 0:
            return None
        elapsed = (time.monotonic() if now is None else now) - self.started
        return max(0, self.total - self.accounted) * elapsed / self.finished

    @property
    def kept_ratio(self) -> float | None:
        return self.items_kept / self.items_evolved if self.items_evolved else None


class Runner:
    def __init__(
        self,
        cfg: EvolveConfig,
        run: RunDir,
        backend: Backend,
        images: ImageStore,
        *,
        judge_backend: Backend | None = None,
        done_keys: set[str] | None = None,
    ):
        self.cfg = cfg
        self.run_dir = run
        self.backend = backend
        self.judge_backend = judge_backend or backend
        self.images = images
        self.done = done_keys or set()
        self.stats = RunStats()
        self.judge = Judge()
        self.sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
        self.judge_sampling = Sampling(cfg.judge_temperature, 1.0, cfg.max_tokens, cfg.seed)
        self._records: JsonlWriter | None = None
        self._rejects: JsonlWriter | None = None

    # -- the stream -------------------------------------------------------------------
    async def run(self, total: int | None = None) -> RunStats:
        self.stats.total = total
        # Records in flight: enough that every call slot stays busy while records wait
        # between their calls, and that the end of a run drains quickly (a pool of 4x the
        # call concurrency measured best in bench/throughput.py); bounded, so memory
        # does not grow with the input.
        in_flight = asyncio.Semaphore(max(8, 4 * self.cfg.concurrency))
        tasks: set[asyncio.Task] = set()
        seen: set[str] = set()
        with JsonlWriter(self.run_dir.records) as records, JsonlWriter(self.run_dir.rejects) as rejects:
            self._records, self._rejects = records, rejects
            try:
                for n, res in enumerate(read_records(self.cfg.input, self.cfg.input_format)):
                    if self.cfg.limit is not None and n >= self.cfg.limit:
                        break
                    # A repeated id is rejected under a key of its own, so that a rerun
                    # finds that reject done and still runs the first copy if it is not.
                    duplicate = res.error is None and res.key in seen
                    key = f"{res.key}@{res.index}" if duplicate else res.key
                    if res.error is None:
                        seen.add(res.key)
                    if key in self.done:
                        self.stats.skipped_done += 1
                        continue
                    if res.error is not None:
                        self._reject_record(res.key, res.error.reason, res.error.stage, res.error.record_id)
                        continue
                    rec = res.record
                    if duplicate:
                        self._reject_record(key, "duplicate record id", "read", rec.id)
                        continue
                    problem = self._check_images(rec)
                    if problem:
                        self._reject_record(res.key, problem, "image", rec.id)
                        continue
                    rec.meta["key"], rec.meta["index"] = res.key, res.index
                    await in_flight.acquire()
                    task = asyncio.create_task(self._run_record(rec))
                    tasks.add(task)
                    task.add_done_callback(lambda t: (tasks.discard(t), in_flight.release()))
                    await asyncio.sleep(0)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                self._records = self._rejects = None
        return self.stats

    def _reject_record(self, key: str, reason: str, stage: str, record_id: str | None) -> None:
        log.warning("record %s rejected (%s): %s", record_id or key, stage, reason)
        self._rejects.write(reject_entry(key, reason, stage, record=record_id, final=True))
        self.stats.records_rejected += 1

    def _check_images(self, rec: Record) -> str | None:
        for ref in rec.images:
            try:
                self.images.check(ref)
            except ImageError as exc:
                return str(exc)
        return None

    # -- one record -------------------------------------------------------------------
    async def _run_record(self, rec: Record) -> None:
        try:
            rejects = await self.evolve_record(rec)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not lose the record silently
            log.exception("record %s failed unexpectedly", rec.id)
            self._reject_record(rec.meta["key"], f"internal error: {exc!r}", "internal", rec.id)
            return
        for entry in rejects:
            self._rejects.write(entry)
        self._records.write(rec)
        self.stats.records_done += 1

    async def _call(self, backend: Backend, request: Request, version: Version) -> Reply:
        reply = await backend.complete(request)
        version.requests += 1
        version.tokens_in += reply.tokens_in
        version.tokens_out += reply.tokens_out
        if reply.cached:
            self.stats.cached_calls += 1
        else:
            self.stats.model_calls += 1
            self.stats.tokens_in += reply.tokens_in
            self.stats.tokens_out += reply.tokens_out
        return reply

    async def evolve_record(self, rec: Record) -> list[dict[str, Any]]:
        """Run every round of one record in place; return its reject entries."""
        cfg, key = self.cfg, rec.meta["key"]
        rejects: list[dict[str, Any]] = []

        def reject(reason: str, stage: str, rnd: int, item: str | None = None) -> None:
            rejects.append(reject_entry(key, reason, stage, record=rec.id, item=item, round=rnd))

        for rnd in range(1, cfg.rounds + 1):
            parents = rec.working_items(cfg.min_score)
            if not parents:
                break
            rng = record_rng(cfg.seed, rec.id, rnd)
            op_name = choose_operator(rng, cfg.mix)
            op = OPERATORS[op_name]
            # A sampling seed of its own per record and round: a chain that goes on from
            # the same survivor with the same operator must not get the cached answer of
            # the round before, and servers that honour `seed` sample reproducibly.
            opts = BuildOptions(replace(self.sampling, seed=rng.getrandbits(31)), cfg.send_images)
            version = Version(round=rnd, operator=op_name)
            rec.versions.append(version)
            try:
                reply = await self._call(self.backend, op.build(rec, parents, rnd, opts), version)
                result = op.parse(rec, parents, rnd, reply)
            except BackendError as exc:  # includes ReplyParseError
                version.status, version.error = "failed", str(exc)
                self.stats.errors += 1
                log.warning("record %s round %d (%s) failed: %s", rec.id, rnd, op_name, exc)
                reject(f"{op_name} failed: {exc}", "evolve", rnd)
                continue
            for problem in result.problems:
                reject(problem, "evolve", rnd)
            version.items = result.items
            self.stats.items_evolved += len(result.items)
            await self._judge(rec, version, parents, reject)
            for child in version.items:
                v = child.verdict
                if v is None:
                    continue
                if child.passes(cfg.min_score):
                    self.stats.items_kept += 1
                elif not v.improved:
                    reject(v.reason or "not improved", "rule" if v.rule else "judge", rnd, child.id)
                # improved but scored below --min-score: a threshold, not a verdict, so
                # `finalize` writes that reject (and rewrites it when `evol filter` changes it)
        return rejects

    async def _judge(self, rec: Record, version: Version, parents: list[Item], reject: Callable) -> None:
        """Rule checks first (they cost nothing), then one judge call for the rest."""
        by_id = {p.id: p for p in parents}
        pairs: list[tuple[Item, Item]] = []
        for child in version.items:
            parent = by_id[child.parent]
            child.verdict = check_rules(child, parent, rec)
            if child.verdict is None:
                pairs.append((parent, child))
        if not pairs:
            return
        request = self.judge.build(
            rec, pairs, version.round, send_image=self.cfg.judge_image and self.cfg.send_images,
            sampling=self.judge_sampling,
        )
        try:
            verdicts = self.judge.parse(await self._call(self.judge_backend, request, version), pairs)
        except BackendError as exc:
            version.status, version.error = "judge_failed", str(exc)
            self.stats.errors += 1
            log.warning("record %s round %d: judge failed: %s", rec.id, version.round, exc)
            for _, child in pairs:
                reject(f"judge failed: {exc}", "judge", version.round, child.id)
            return
        for _, child in pairs:
            child.verdict = verdicts.get(child.id)
            if child.verdict is None:
                reject("judge gave no verdict for this item", "judge", version.round, child.id)
