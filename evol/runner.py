"""The round runner: every record is its own task that goes through all its rounds.

There is no barrier between rounds: a record starts round n+1 as soon as its round n is
judged, and is written the moment it finishes. Concurrency is bounded twice: the
backend's limiter bounds calls in flight, and the runner bounds records in flight so a
huge input is streamed, never loaded. The runner knows nothing of prompts: operators build
requests and parse replies; the judge and rule checks decide what is kept.

Failures are classed where they are caught (README, "When things fail"): a record or image
that cannot be used is an input fault (a final reject); a reply still unusable after every
attempt is a model fault (the round is recorded as failed, and its cached reply dropped so
that `--retry-failed` asks again); a call that got no answer is a transport fault, which is
never written down: the record stays pending for the next invocation. `RunStopped` (bad
key, dead server, full disk) stops the stream: records in flight finish or stay pending,
nothing new starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from evol.backends.base import Backend, BackendError, Reply, Request, RunStopped, Sampling, TransportError
from evol.cache import write_failure
from evol.config import EvolveConfig
from evol.eliminator.judge import Judge
from evol.eliminator.rules import check_rules
from evol.eliminator.stages import LaterChecks
from evol.images import ImageError, ImageStore
from evol.io import JsonlWriter, ReadResult, read_records
from evol.operators import OPERATORS, choose_operator, record_rng
from evol.operators.base import BuildOptions
from evol.records import Item, Record, Version
from evol.rundir import RunDir, reject_entry
from evol.stats import CallStats

log = logging.getLogger("evol.runner")


def _usage(name: str, doc: str) -> property:
    """A read-only alias on `RunStats` of one count of its `usage`."""
    return property(lambda self: getattr(self.usage, name), doc=doc)


@dataclass
class RunStats:
    """Live counters of a run, read by the progress display, the manifest and the summary.

    Records: read, finished, resumed, pending (transport faults, with why), and the cause
    when the run stopped. Calls: `usage`, the `CallStats` the runner counts each call of a
    record into as it returns (`model_calls`, `cached_calls`, `calls_failed`, `tokens_in`,
    `tokens_out` read it). Requests: the backends' own `CallStats` (`backends`, one per
    distinct backend); those of HTTP backends give `http` and `requests_sent`.
    """

    total: int | None = None
    skipped_done: int = 0
    records_done: int = 0
    records_rejected: int = 0
    items_evolved: int = 0
    items_kept: int = 0
    errors: int = 0
    # transport faults: records left for the next invocation, and why
    pending: int = 0
    pending_reasons: Counter = field(default_factory=Counter)
    stop_cause: str | None = None  # set when the run was stopped (RunStopped)
    started: float = field(default_factory=time.monotonic)
    usage: CallStats = field(default_factory=CallStats)
    backends: list[CallStats] = field(default_factory=list, repr=False)
    limiter: Any = field(default=None, repr=False)  # the backends' shared Limiter, if any

    # the names the CLI, the manifest and the progress line read
    model_calls = _usage("calls", "Calls a model answered (not the cache).")
    cached_calls = _usage("cached", "Calls answered from the cache.")
    calls_failed = _usage("failed", "Calls that sent requests and failed for good (any fault).")
    tokens_in = _usage("tokens_in", "Tokens of the answers, and of every request of the calls that failed.")
    tokens_out = _usage("tokens_out", "Tokens of the answers, and of every request of the calls that failed.")

    def _requests(self) -> CallStats:
        return CallStats.total(*(b for b in self.backends if b.by_outcome))

    @property
    def http(self) -> dict[str, Any] | None:
        """HTTP requests by outcome (`CallStats.http`); None without an HTTP backend."""
        return self._requests().http()

    @property
    def requests_sent(self) -> int:
        """Requests sent to the model: HTTP requests (every attempt), or with a local
        backend the calls it answered."""
        sent = self._requests()
        return sent.sent.requests if sent.by_outcome else self.model_calls

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


def read_entries(cfg: EvolveConfig) -> Iterator[tuple[str, ReadResult, tuple[str, str, str | None] | None]]:
    """The input as a run reads it, up to `cfg.limit`: each entry's key, its read result, and
    for an entry rejected on reading (unreadable, or a repeated id) the reason, stage and
    record id. A repeated id gets a key of its own (``id@index``), so that a rerun finds that
    reject done and still runs the first copy if it is not. One process and the Ray driver
    (`evol.distributed.evolve.split_input`) read the input through here alike."""
    seen: set[str] = set()
    for n, res in enumerate(read_records(cfg.input, cfg.input_format)):
        if cfg.limit is not None and n >= cfg.limit:
            return
        if res.error is not None:
            yield res.key, res, (res.error.reason, res.error.stage, res.error.record_id)
        elif res.key in seen:
            yield f"{res.key}@{res.index}", res, ("duplicate record id", "read", res.record.id)
        else:
            seen.add(res.key)
            yield res.key, res, None


class Runner:
    """Drives every record of a seed file through its rounds of evolution and judging.

    Each round is one operator call (a direction drawn from the operator mix by the
    record's own generator) and one judge call per record, with the rule checks between
    them: MMEvol's evolve-then-eliminate round (arXiv 2409.05840). Records run as
    independent tasks under the backend's shared limiter, with no barrier between rounds,
    and are written the moment they finish, so a run streams any size of input and resumes
    from its journal and cache. It knows nothing of prompts; `stats` is what it counted.
    """

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
        for b in (backend, self.judge_backend):
            st = getattr(getattr(b, "inner", b), "stats", None)
            if isinstance(st, CallStats) and all(st is not o for o in self.stats.backends):
                self.stats.backends.append(st)
            if self.stats.limiter is None:
                self.stats.limiter = getattr(getattr(b, "inner", b), "limiter", None)
        self.judge = Judge()
        self.sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
        self.judge_sampling = Sampling(cfg.judge_temperature, 1.0, cfg.max_tokens, cfg.seed)
        checks = tuple(cfg.checks)
        self.rules_on = "rules" in checks
        self.later = LaterChecks(checks, self.judge_backend, self.judge_sampling,
                                 cfg.judge_image and cfg.send_images, self._call, self._forget)
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
        with JsonlWriter(self.run_dir.records) as records, JsonlWriter(self.run_dir.rejects) as rejects:
            self._records, self._rejects = records, rejects
            try:
                for key, res, refused in read_entries(self.cfg):
                    if self.stats.stop_cause is not None:
                        break
                    if key in self.done:
                        self.stats.skipped_done += 1
                        continue
                    if refused is not None:
                        self._reject_record(key, *refused)
                        continue
                    rec = res.record
                    if not rec.items:
                        self._reject_record(key, _no_items_reason(rec), "read", rec.id)
                        continue
                    rec.meta["key"], rec.meta["index"] = res.key, res.index
                    await in_flight.acquire()
                    task = asyncio.create_task(self._run_record(rec))
                    tasks.add(task)
                    task.add_done_callback(lambda t: (tasks.discard(t), in_flight.release()))
                    await asyncio.sleep(0)
                if tasks:
                    await asyncio.gather(*tasks)
            except OSError as exc:  # a journal write of the reading loop (rejects.jsonl)
                self.stop(write_failure(getattr(exc, "filename", None) or self.run_dir.rejects, exc))
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                for t in tasks:
                    t.cancel()
                self._records = self._rejects = None
        return self.stats

    def stop(self, cause: str) -> None:
        """Stop starting records; the first cause is the one reported."""
        if self.stats.stop_cause is None:
            self.stats.stop_cause = cause
            log.error("stopping: %s", cause)
        for backend in (self.backend, self.judge_backend):
            breaker = getattr(getattr(backend, "inner", backend), "breaker", None)
            if breaker is not None:
                breaker.stop(cause)

    def _reject_record(self, key: str, reason: str, stage: str, record_id: str | None) -> None:
        log.warning("record %s rejected (%s): %s", record_id or key, stage, reason)
        self._rejects.write(reject_entry(key, reason, stage, record=record_id, final=True))
        self.stats.records_rejected += 1

    async def _check_images(self, rec: Record) -> str | None:
        """The first image problem of a record, or None. Decodes run in worker threads
        (bounded by the image store), inside the record's own task, so that a huge image
        neither stalls the calls in flight nor holds up the records behind it."""
        for ref in rec.images:
            try:
                await self.images.acheck(ref)
            except ImageError as exc:
                return str(exc)
        return None

    # -- one record -------------------------------------------------------------------
    async def _run_record(self, rec: Record) -> None:
        try:
            problem = await self._check_images(rec)
            if problem:
                self._reject_record(rec.meta["key"], problem, "image", rec.id)
                return
            rejects = await self.evolve_record(rec)
        except asyncio.CancelledError:
            raise
        except RunStopped as exc:
            self.stop(exc.cause)
            self._pending(rec, "the run stopped: " + exc.cause)
            return
        except TransportError as exc:
            log.warning("record %s left pending: %s", rec.id, exc)
            self._pending(rec, _reason_kind(str(exc)))
            return
        except Exception as exc:  # a bug must not lose the record silently
            log.exception("record %s failed unexpectedly", rec.id)
            self._reject_record(rec.meta["key"], f"internal error: {exc!r}", "internal", rec.id)
            return
        try:
            for entry in rejects:
                self._rejects.write(entry)
            self._records.write(rec)
        except OSError as exc:
            # the record line may be torn: the next invocation cuts it and runs the record
            # again from the cache, so it is pending, not lost
            self.stop(write_failure(getattr(exc, "filename", None) or self.run_dir.records, exc))
            self._pending(rec, "the run stopped: " + self.stats.stop_cause)
            return
        self.stats.records_done += 1

    def _pending(self, rec: Record, reason: str) -> None:
        self.stats.pending += 1
        self.stats.pending_reasons[reason] += 1

    async def _call(self, backend: Backend, request: Request, version: Version, stage: str = "evolve") -> Reply:
        """One call; its request and tokens go to the round's `version` and the run's stats.

        An answered call counts as one request with its answer's tokens, retries or not,
        so that a record comes out the same however many transport faults its calls met
        (the manifest counts every request sent, by outcome). A call that failed for good
        counts every request it sent and every token they cost."""
        try:
            reply = await backend.complete(request)
        except BackendError as exc:
            if exc.attempts and not exc.accounted:  # callers sharing one call count it once
                exc.accounted = True
                _count(version, stage, exc.attempts, exc.tokens_in, exc.tokens_out)
                self.stats.usage.gave_up(exc)
            raise
        _count(version, stage, 1, reply.tokens_in, reply.tokens_out)
        self.stats.usage.answered(reply)
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
            request = op.build(rec, parents, rnd, opts)
            try:
                reply = await self._call(self.backend, request, version)
                result = op.parse(rec, parents, rnd, reply)
            except (TransportError, RunStopped):
                raise  # no answer: not this record's result
            except BackendError as exc:  # includes ReplyParseError: a model fault
                self._forget(self.backend, request)
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
            if version.status == "judged":
                await self.later.run(rec, version)
                self.stats.errors += version.status != "judged"
            for child in version.items:
                v = child.verdict
                if v is None:
                    continue
                if child.passes(cfg.min_score):
                    self.stats.items_kept += 1
                elif not v.improved:
                    reject(v.reason or "not improved", v.stage or ("rule" if v.rule else "judge"), rnd, child.id)
                # improved but scored below --min-score: a threshold, not a verdict, so
                # `finalize` writes that reject (and rewrites it when `evol filter` changes it)
        return rejects

    async def _judge(self, rec: Record, version: Version, parents: list[Item], reject: Callable) -> None:
        """Rule checks first (they cost nothing), then one judge call for the rest."""
        by_id = {p.id: p for p in parents}
        pairs: list[tuple[Item, Item]] = []
        for child in version.items:
            parent = by_id[child.parent]
            child.verdict = check_rules(child, parent, rec) if self.rules_on else None
            if child.verdict is None:
                pairs.append((parent, child))
        if not pairs:
            return
        request = self.judge.build(
            rec, pairs, version.round, send_image=self.cfg.judge_image and self.cfg.send_images,
            sampling=self.judge_sampling,
        )
        try:
            verdicts = self.judge.parse(await self._call(self.judge_backend, request, version, "judge"), pairs)
        except (TransportError, RunStopped):
            raise
        except BackendError as exc:
            self._forget(self.judge_backend, request)
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

    @staticmethod
    def _forget(backend: Backend, request: Request) -> None:
        """A model fault: drop its cached reply, so that `--retry-failed` asks again."""
        forget = getattr(backend, "forget", None)
        if forget is not None:
            forget(request)


def _count(version: Version, stage: str, requests: int, tokens_in: int, tokens_out: int) -> None:
    """A call's requests and tokens, into the round and into the round's stage."""
    version.requests += requests
    version.tokens_in += tokens_in
    version.tokens_out += tokens_out
    usage = version.usage if version.usage is not None else {}
    row = usage.setdefault(stage, [0, 0, 0])
    row[0] += requests
    row[1] += tokens_in
    row[2] += tokens_out
    version.usage = usage


def _no_items_reason(rec: Record) -> str:
    if rec.source in ("llava", "mmevol"):
        return ("no usable question/answer pair: the conversation has no human turn "
                "followed by a gpt answer (empty, a question only, or an answer first)")
    return "no usable question/answer pair: the record has no items"


def _reason_kind(message: str) -> str:
    """A transport fault's reason without the call's tag, so that equal causes count together."""
    _, sep, rest = message.partition(": no answer after ")
    return ("no answer after " + rest) if sep else message
