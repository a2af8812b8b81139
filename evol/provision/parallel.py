"""The seed-provision pipeline: scene graphs in, seed records out as JSON lines, in this
process or in several (`write_seeds(..., workers=N)`, `evol seed provision --workers N`).

There is one pipeline for any number of workers: with `workers=1` the chunks below run
one after the other in this process, through the same code. The output is byte for byte
what `provision_records` yields (each record as `model_dump_json(exclude_none=True)` on its
own line), for any seed, hash seed and number of workers: an image's QAs depend only on
the dataset frequencies and an rng derived from the seed and the image id(s), so images
can be worked on anywhere, as long as the records come back in image order and
multi-image groups are the same consecutive good images.

How the work is split (ProVision stage files, `ProvisionImages`):

1. The parent reads and merges the stage files once; worker processes (forked on Linux,
   so they share that data; spawned elsewhere) build each image's graph without masks
   for the frequency pass and send back only what `Frequencies.add` counts, which the
   parent adds up in image order (so even the counters' key order is the same). Whether
   each image loaded is kept as a guess of whether it will load with its masks.
2. The images are cut into chunks of consecutive images. A worker loads each image of its
   chunk with depth and masks, runs the generators, and returns the chunk's JSON lines as
   one utf-8 block, with the chunk's report counts, which images loaded, and where grouping
   stood at its end. Chunks run in order through a bounded window (a few per worker), so
   nothing is held but the chunks in flight, and the parent only writes.
3. Grouping: which images form a group depends on which images before them loaded. Each
   chunk is given the grouping state (groups made so far, images of the group being
   filled) that the guesses from step 1 predict at its start; chunks are cut where the
   predicted group is complete, so groups rarely span two chunks. The parent accepts a chunk
   only when its assumed start state is the true one (the previous chunk's end state). An
   image whose masks fail to load breaks the guess: the parent then waits for the chunks
   in flight, learns from them which images loaded, and plans the rest again from the
   true state (a group carried over is loaded again by the next chunk's worker). Without
   multi-image groups no state is carried and every chunk is accepted as it comes.

Visual Genome (or any other graph stream): the parent loads the graphs, in both passes,
and the workers only generate; statuses are then known exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing as mp
import pickle
import sys
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from evol.provision.base import Frequencies, GenContext
from evol.provision.graph import GraphError, SceneGraph
from evol.provision.loaders import ProvisionImages
from evol.provision.seed import GroupState, SeedReport, grouped_records, last_group_records, run_plan

__all__ = ["provision_jsonl"]

GraphStream = Callable[[bool], Iterable[SceneGraph | GraphError]]  # masks -> a fresh stream


@dataclass
class _Chunk:
    """Consecutive images for one worker, and the grouping state assumed at their start."""

    start: int  # position of items[0] in the input
    items: list[Any]  # image indices (ProvisionImages) or the graphs/errors themselves
    made: int  # groups made before the chunk
    pending: list[tuple[int, Any]]  # (position, item) of the good images of the group being filled
    last: bool  # the input ends with this chunk: settle the last group


@dataclass
class _Done:
    """A worker's answer for one chunk."""

    text: bytes  # the records' JSON lines, utf-8
    ok: bytes  # per item: 1 if it loaded
    images: int
    skipped: list[str]
    asked: Counter
    produced: Counter
    ungrouped: int
    made: int  # grouping state at the chunk's end
    pending: list[int]  # positions


# ---------------------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------------------
# A worker's state: the images, options and generation context of the run. A worker process
# keeps it in `_W`; a run with workers=1 keeps its own (runs in threads side by side share nothing).
_W: dict[str, Any] = {}


def _state(images: ProvisionImages | None, options: tuple) -> dict[str, Any]:
    seed, per_generator, generators, group_sizes, single = options
    return dict(images=images, seed=seed, n=per_generator, ctx=None, plan=run_plan(generators, group_sizes, single))


def _init_worker(images: ProvisionImages | None, options: tuple) -> None:
    _W.clear()
    _W.update(_state(images, options))


def _count_chunk(indices: range) -> list[tuple | None]:
    return _count(_W, indices)


def _generate_chunk(chunk: _Chunk, ctx_blob: bytes) -> _Done:
    return _generate(_W, chunk, ctx_blob)


def _count(w: dict[str, Any], indices: range) -> list[tuple | None]:
    """Frequency pass: per image, `Frequencies.parts` of its graph without masks, or None."""
    images: ProvisionImages = w["images"]
    out: list[tuple | None] = []
    for k in indices:
        try:
            g = images.build(k, masks=False)
        except GraphError:
            out.append(None)
        else:
            out.append(Frequencies.parts(g))
    return out


def _generate(w: dict[str, Any], chunk: _Chunk, ctx_blob: bytes) -> _Done:
    """One chunk's records as JSON lines, with its report and where grouping ended."""
    if w["ctx"] is None:
        w["ctx"] = pickle.loads(ctx_blob)
    ctx: GenContext = w["ctx"]
    images: ProvisionImages | None = w["images"]
    singles, multis, sizes = w["plan"]
    seed, n = w["seed"], w["n"]
    where: dict[int, int] = {}  # id(graph) -> position, for the graphs of the group left open
    ok = bytearray()

    def load(item: Any) -> SceneGraph | GraphError:
        if images is None:
            return item
        try:
            return images.build(item)
        except GraphError as e:
            return e

    def stream() -> Iterator[SceneGraph | GraphError]:
        for j, item in enumerate(chunk.items):
            g = load(item)
            good = not isinstance(g, GraphError)
            ok.append(good)
            if good and sizes:
                where[id(g)] = chunk.start + j
            yield g

    group = []
    for pos, item in chunk.pending:
        g = load(item)
        if isinstance(g, GraphError):
            # a guess that it would load, carried over: the state assumed is wrong, and the
            # parent throws these records away; which images of the chunk loaded still counts
            continue
        where[id(g)] = pos
        group.append(g)
    state = GroupState(chunk.made, group)
    report = SeedReport()
    lines = [rec.model_dump_json(exclude_none=True)
             for rec in grouped_records(stream(), singles, multis, sizes, seed, ctx, n, report, state)]
    end = (state.made, [where[id(g)] for g in state.group])
    if chunk.last:
        lines.extend(rec.model_dump_json(exclude_none=True)
                     for rec in last_group_records(multis, sizes, seed, ctx, n, report, state))
    return _Done(("\n".join(lines) + "\n").encode() if lines else b"", bytes(ok), report.images, report.skipped,
                 report.asked, report.produced, report.ungrouped, *end)


# ---------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------
def _plan(entries: Iterable[tuple[int, Any, bool]], sizes: list[int], made: int, pending: list[tuple[int, Any]],
          size: int, cap: int) -> Iterator[_Chunk]:
    """Cut (position, item, expected to load) entries into chunks of about `size` items,
    ending each where the expected group is complete (at most `cap` items)."""
    it = iter(entries)
    nxt = next(it, None)
    pending = list(pending)
    while nxt is not None:
        chunk = _Chunk(nxt[0], [], made, list(pending), False)
        while nxt is not None:
            pos, item, good = nxt
            chunk.items.append(item)
            if good and sizes:
                pending.append((pos, item))
                if len(pending) == sizes[made % len(sizes)]:
                    pending, made = [], made + 1
            nxt = next(it, None)
            if len(chunk.items) >= size and (not pending or len(chunk.items) >= cap):
                break
        chunk.last = nxt is None
        yield chunk


def _import_for_masks() -> None:
    """Mask pickles hold scipy sparse matrices, and the first one read imports scipy.sparse
    (about 0.1 s)."""
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:  # masks stored as numpy arrays need no scipy
        pass


def _context(start_method: str | None):
    """Fork on Linux: workers start at once and share the merged stage data. Elsewhere
    (macOS, Windows) spawn: each worker imports evol and is sent the stage data."""
    if start_method is None:
        start_method = "fork" if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(start_method)


class _InProcess:
    """The parts of `ProcessPoolExecutor` the pipeline uses, run here, one call at a time:
    `workers=1` goes through the same frequency pass, chunks and checks as `workers>1`."""

    def map(self, fn: Callable, iterable: Iterable) -> Iterator:
        return map(fn, iterable)

    def submit(self, fn: Callable, *args: Any) -> Future:
        job: Future = Future()
        try:
            job.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - raised where the result is taken, as from a pool
            job.set_exception(e)
        return job

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


# concurrent.futures rather than multiprocessing.Pool: the Pool's worker-handler thread
# wakes on the result pipe too, so it spins while large results are being read, taking
# a good share of a core from the workers on a small machine.


def provision_jsonl(
    source: ProvisionImages | GraphStream,
    *,
    ctx: GenContext,
    seed: int = 0,
    per_generator: int = 2,
    generators: list[str] | None = None,
    group_sizes: list[int] | None = None,
    single: bool = True,
    report: SeedReport | None = None,
    workers: int = 2,
    chunk_size: int | None = None,
    start_method: str | None = None,
    executor: Callable[[Callable, tuple], Any] | None = None,
) -> Iterator[bytes]:
    """The whole seed-provision run: the frequency pass, then the records as JSONL (utf-8),
    in blocks of whole lines; in `workers` processes, or in this one for `workers=1`.

    `source`: a `ProvisionImages` (worker processes load the graphs), or `load(masks)`
    giving a fresh graph stream, called as `load(False)` for the frequency pass and
    `load(True)` for the records, as the one-process run does (this process loads, the
    workers generate).
    `ctx`: the generation options; its `freq` is replaced by the frequencies counted here.
    The other arguments are `provision_records`'s; the text is what it yields, one
    `model_dump_json(exclude_none=True)` line per record, and `report` ends up the same.
    `executor`, when given, makes the pool instead of local processes: (initializer,
    initargs) -> an object with `map`, `submit`, `shutdown` and `workers`, as
    `ProcessPoolExecutor` has (`evol.distributed.ActorPool`: Ray actors); `workers` is then its own.
    """
    report = report if report is not None else SeedReport()
    _, _, sizes = run_plan(generators, group_sizes, single)  # bad arguments raise before any work
    images = source if isinstance(source, ProvisionImages) else None
    workers = max(1, workers)
    options = (seed, per_generator, generators, group_sizes, single)
    if images is not None and images.masks_dir is not None and workers > 1:
        _import_for_masks()  # once here, not in every forked worker on its first image
    if executor is not None:
        pool: Any = executor(_init_worker, (images, options))
        workers = pool.workers
        count, generate = _count_chunk, _generate_chunk
    elif workers == 1:
        pool = _InProcess()
        state = _state(images, options)
        count: Callable = functools.partial(_count, state)
        generate: Callable = functools.partial(_generate, state)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=_context(start_method), initializer=_init_worker,
                                   initargs=(images, options))
        count, generate = _count_chunk, _generate_chunk
    try:
        freq = Frequencies()
        if images is not None:
            total = len(images)
            loads = bytearray(total)  # 1: loaded without masks, so expected to load with them
            step = max(1, min(64, total // (workers * 8)))
            starts = range(0, total, step)
            for start, parts in zip(starts, pool.map(count, [range(s, min(total, s + step)) for s in starts])):
                for j, got in enumerate(parts):
                    if got is not None:
                        loads[start + j] = 1
                        freq.add_parts(*got)
        else:
            for g in source(False):
                if not isinstance(g, Exception):
                    freq.add(g)
        blob = pickle.dumps(dataclasses.replace(ctx, freq=freq))

        if images is not None:
            size = chunk_size or max(1, min(16, total // (workers * 12)))

            def entries(start: int) -> Iterator[tuple[int, Any, bool]]:
                return ((k, k, bool(loads[k])) for k in range(start, total))
        else:
            size = chunk_size or 8

            def entries(start: int) -> Iterator[tuple[int, Any, bool]]:
                assert start == 0
                return ((k, g, not isinstance(g, GraphError)) for k, g in enumerate(source(True)))

        cap = 2 * size + 2 * max(sizes, default=0)
        planner = _plan(entries(0), sizes, 0, [], size, cap)
        window: deque[tuple[_Chunk, Future]] = deque()

        def fill() -> None:
            while len(window) < 3 * workers:
                chunk = next(planner, None)
                if chunk is None:
                    return
                window.append((chunk, pool.submit(generate, chunk, blob)))

        def learn(chunk: _Chunk, done: _Done) -> None:
            if images is not None:
                loads[chunk.start:chunk.start + len(chunk.items)] = done.ok

        made, pending = 0, []  # the true grouping state, as positions
        fill()
        while window:
            chunk, job = window.popleft()
            done: _Done = job.result()
            if (chunk.made, [p for p, _ in chunk.pending]) != (made, pending):
                # an image expected to load did not (or the other way round): the state this
                # chunk and those after it assumed is wrong. Learn what the chunks in flight
                # found and plan again from the true state.
                if images is None:
                    raise RuntimeError("grouping state went astray on a graph stream")
                learn(chunk, done)
                for later, later_job in window:
                    learn(later, later_job.result())
                window.clear()
                planner = _plan(entries(chunk.start), sizes, made, [(p, p) for p in pending], size, cap)
                fill()
                continue
            learn(chunk, done)
            made, pending = done.made, done.pending
            fill()
            report.images += done.images
            report.skipped.extend(done.skipped)
            report.asked.update(done.asked)
            report.produced.update(done.produced)
            if chunk.last:
                report.ungrouped = done.ungrouped
            if done.text:
                yield done.text
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
