"""Running evol's commands over a Ray cluster (`--ray ADDRESS`; the `evol[ray]` extra).

Ray does the placing, the retries and the GPUs; evol brings no process pool of its own:

* `evol evolve --ray`: the input is split into shards by record id, and each shard is run
  by the ordinary one-process code (`evol.session.run_evolve`) as a Ray task, into its
  own run folder RUN/shards/NNN; the journals are then merged into RUN
  (`evol.distributed.evolve`, `evol.rundir.merge_shards`).
* `evol seed provision --ray`: the provision pipeline's frequency pass and chunks run on
  Ray actors instead of local processes (`ActorPool`, given to
  `evol.provision.parallel.provision_jsonl`).
* `evol analyze --ray`: instructions are parsed in chunks on Ray actors, each with its
  own spaCy model (`RayParser`); reading and counting stay in the driver, in input order.

ADDRESS is "local" (start a Ray instance in this process, stopped at the end), "auto" (the
cluster this machine was joined to with `ray start`) or "ray://host:port" (Ray Client).
When Ray is already initialised in this process (a notebook, a test), that connection is
used and left as it is.
"""

from __future__ import annotations

import itertools
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from evol.errors import EvolError

__all__ = ["ray_session", "cluster_cpus", "ActorPool", "RayParser", "ray_parser", "ray_provision_pool", "evolve_on_ray"]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EvolError("--ray needs Ray: pip install 'evol[ray]' (or ray[data])") from None
    return ray


@contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Ray, connected to `address` for the length of the block (see the module doc)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address == "local":
            ray.init(include_dashboard=False, configure_logging=False)
        else:
            ray.init(address=address, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = " (start one with `ray start --head`, or use --ray local)" if address == "auto" else ""
        raise EvolError(f"cannot connect to Ray at {address}{hint}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray: Any) -> int:
    """CPUs of the whole cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class _Worker:
    """A Ray actor that runs `initializer(*initargs)` once (in its own process, like a pool
    worker's initializer) and then any module-level function it is sent."""

    def __init__(self, initializer: Callable | None, initargs: list):
        if initializer is not None:
            import ray

            # the arguments' reference comes inside a list, so that this actor fetches them
            # itself: the driver holds the reference, so a restarted actor can fetch it again
            initializer(*ray.get(initargs[0]))

    def call(self, fn: Callable, *args: Any) -> Any:
        return fn(*args)


def _actor_class(ray: Any):
    # restarted when its process dies, and the calls it had are sent again: Ray's retries
    return ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)(_Worker)


class ActorPool:
    """The part of `concurrent.futures.ProcessPoolExecutor` the provision pipeline uses
    (`map`, `submit`, `shutdown`, plus `workers`), on `workers` Ray actors, each set up by
    `initializer(*initargs)`. Calls go round the actors in turn; `map` keeps order. A large
    bytes argument (the pickled frequencies every chunk gets) is put into the object store
    once, not sent with every call."""

    def __init__(self, ray: Any, workers: int, initializer: Callable | None = None, initargs: tuple = ()):
        self.ray, self.workers = ray, max(1, workers)
        self._initargs = ray.put(initargs)
        cls = _actor_class(ray)
        self._actors = [cls.remote(initializer, [self._initargs]) for _ in range(self.workers)]
        self._turn = itertools.cycle(self._actors)
        self._stored: dict[int, tuple[Any, Any]] = {}

    def _arg(self, value: Any) -> Any:
        if isinstance(value, (bytes, bytearray)) and len(value) > 64 * 1024:
            held = self._stored.get(id(value))
            if held is None or held[0] is not value:
                held = self._stored[id(value)] = (value, self.ray.put(value))
            return held[1]
        return value

    def submit(self, fn: Callable, *args: Any) -> Future:
        return next(self._turn).call.remote(fn, *map(self._arg, args)).future()

    def map(self, fn: Callable, iterable: Iterable) -> Iterator:
        refs = [next(self._turn).call.remote(fn, self._arg(a)) for a in iterable]
        return (self.ray.get(r) for r in refs)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors, self._stored, self._initargs = [], {}, None


@contextmanager
def ray_provision_pool(address: str, workers: int) -> Iterator[Callable[[Callable, tuple], ActorPool]]:
    """What `provision_jsonl(executor=...)` takes, for the block: (initializer, initargs) ->
    an ActorPool of `workers` actors, or one per CPU of the cluster when `workers` is 1."""
    with ray_session(address) as ray:
        n = workers if workers > 1 else cluster_cpus(ray)
        yield lambda initializer, initargs: ActorPool(ray, n, initializer, initargs)


class RayParser:
    """A `VerbNounParser` look-alike for `evol.analysis.pipeline.analyze(parser=...)`: the
    texts go in chunks to Ray actors that each hold a one-process parser (the worker code
    of `VerbNounParser`'s own pool), at most two chunks per actor in flight, and the
    results come back in input order, so every table is what one process writes."""

    def __init__(self, ray: Any, backend: str, actors: int, batch_size: int = 256, reading: str = "paper"):
        from evol.analysis.verbnoun import BACKENDS, READINGS, _init_worker

        if backend not in BACKENDS:
            raise ValueError(f"unknown verb-noun backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if reading not in READINGS:
            raise ValueError(f"unknown verb-noun reading {reading!r}; expected one of {', '.join(READINGS)}")
        self.backend, self.batch_size, self.reading = backend, batch_size, reading
        self.pool = ActorPool(ray, actors, _init_worker, (backend, batch_size, reading))
        self.ray = ray

    def parse_tagged(self, items: Iterable[tuple[str, Any]]) -> Iterator[tuple[Any, Any]]:
        from collections import deque

        from evol.analysis.verbnoun import ParseResult, _work

        chunk = max(self.batch_size, 512)
        inflight: deque = deque()

        def collect() -> Iterator[tuple[Any, Any]]:
            ref, contexts = inflight.popleft()
            for (verb, noun, status), c in zip(self.ray.get(ref), contexts):
                yield ParseResult(verb, noun, status), c

        texts, contexts = [], []
        for text, c in items:
            texts.append(text)
            contexts.append(c)
            if len(texts) >= chunk:
                inflight.append((next(self.pool._turn).call.remote(_work, texts), contexts))
                texts, contexts = [], []
                while len(inflight) >= 2 * self.pool.workers:
                    yield from collect()
        if texts:
            inflight.append((next(self.pool._turn).call.remote(_work, texts), contexts))
        while inflight:
            yield from collect()

    def close(self) -> None:
        self.pool.shutdown()


@contextmanager
def ray_parser(address: str, backend: str, processes: int, reading: str = "paper") -> Iterator[RayParser]:
    """A `RayParser` on `processes` actors (one per CPU of the cluster when 1), parsing with
    the verb-noun `reading` ("paper" or "task"), for the block."""
    with ray_session(address) as ray:
        parser = RayParser(ray, backend, processes if processes > 1 else cluster_cpus(ray), reading=reading)
        try:
            yield parser
        finally:
            parser.close()


def evolve_on_ray(cfg: Any, opts: Any, *, progress: bool = True) -> Any:
    """`evol evolve --ray`: see `evol.distributed.evolve.run_on_ray`."""
    from evol.distributed.evolve import run_on_ray

    return run_on_ray(cfg, opts, progress=progress)
