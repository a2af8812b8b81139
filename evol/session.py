"""One invocation of `evolve`: check, settle the backend, preflight, run, finalize, summarise.

This is what `evol.evolve(...)` and `evol evolve` do (the CLI only parses flags); the round
runner itself is `evol.runner.Runner`. Problems to fix before anything runs raise
`EvolError`; a run that stops on a transport fault returns an incomplete result (README,
"When things fail").
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from evol import aio
from evol.config import EvolveConfig, RunOptions
from evol.console import console, note, say
from evol.errors import EvolError
from evol.rundir import RunDir, RunLocked, finalize, input_changes, input_identity, prepare_resume

log = logging.getLogger("evol")

EXIT_OK, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 3, 130


@dataclass
class EvolveResult:
    """What `evol.evolve` returns: the run folder, its status, counts and manifest.

    `complete` is False when records are pending (a stopped server, a dead network, a full
    disk): call `evolve` again with the same arguments to finish; answered calls are not
    sent again. `exit_code` is what `evol evolve` exits with (0 complete, 3 incomplete).
    """

    run_dir: Path
    status: str
    counts: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    pending: int | None = 0
    stopped: str | None = None
    estimate: Any = None  # dry runs: an evol.dryrun.Estimate

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.status in ("complete", "dry run") else EXIT_INCOMPLETE

    @property
    def llava(self) -> Path:
        return RunDir(self.run_dir).llava

    @property
    def records(self) -> Path:
        return RunDir(self.run_dir).records

    @property
    def rejects(self) -> Path:
        return RunDir(self.run_dir).rejects

    def to_dataset(self, **kwargs: Any):
        """The kept items as a Hugging Face `datasets.Dataset` (see `evol.load_dataset`)."""
        from evol.api import load_dataset

        return load_dataset(self.run_dir, **kwargs)


def os_problem(exc: OSError, what: str) -> str:
    """One line for a file-system error: what was being done, the path, the cause."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    return f"{what}{where}: {exc.strerror or exc}"


def check_input(path: str) -> None:
    """The input must be a readable file: say which problem it has, in one line."""
    p = Path(path)
    if not p.exists():
        raise EvolError(f"input file not found: {path}")
    if p.is_dir():
        raise EvolError(f"input is a folder, not a file: {path}")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise EvolError(f"cannot read input {path}: {exc.strerror or exc}") from None


def run_evolve(cfg: EvolveConfig, opts: RunOptions, *, progress: bool = True) -> EvolveResult:
    """Evolve `cfg.input` into the run folder `cfg.out` (resuming what is there)."""
    identity = identify_input(cfg)
    choice = settle(cfg)
    from evol.images import ImageStore

    images = ImageStore(Path(cfg.image_root) if cfg.image_root else None, cfg.max_side,
                        max_pixels=cfg.max_pixels, allow_urls=cfg.allow_image_urls)
    if opts.dry_run:
        return _dry_run(cfg, images)
    run, lock = lock_run(cfg)
    with lock, _run_log(run, opts.verbose):
        try:
            check_same_run(run, cfg, identity)
            run.begin(cfg.public(), identity)
        except OSError as exc:
            if opts.verbose:
                raise
            raise EvolError(os_problem(exc, "cannot write the run folder:")) from None
        with _sigterm_as_interrupt():
            return aio.run(_evolve(cfg, run, images, choice, retry_failed=opts.retry_failed, progress=progress))


def identify_input(cfg: EvolveConfig) -> dict:
    """The input checked (a readable file) and identified for the run guard."""
    check_input(cfg.input)
    try:
        return input_identity(cfg.input)
    except OSError as exc:
        raise EvolError(os_problem(exc, "cannot read input")) from None


def lock_run(cfg: EvolveConfig):
    """The run folder, created, and its lock taken (refused with the holder's pid)."""
    run = RunDir(Path(cfg.out))
    try:
        run.create()
        return run, run.lock()
    except RunLocked as exc:
        raise EvolError(str(exc)) from None
    except OSError as exc:
        raise EvolError(os_problem(exc, f"cannot use --out {cfg.out} as a run folder:")) from None


@contextmanager
def _run_log(run: RunDir, verbose: bool) -> Iterator[None]:
    """The run's own log, RUN/evol.log, for as long as the run goes."""
    handler = logging.FileHandler(run.root / "evol.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) stops the run the way Ctrl-C does: resumable. Only the
    main thread may set handlers; elsewhere the default stays."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_same_run(run: RunDir, cfg: EvolveConfig, identity: dict, *, ray: bool = False) -> None:
    """Resuming with other settings or another input would mix two runs in one folder:
    refuse, and say what differs. A folder run over Ray (its manifest says "ray"; shard
    folders do not) resumes only over Ray."""
    manifest = run.read_manifest()
    if manifest.get("ray") and not ray:
        raise EvolError(f"{run.root} was run over Ray in {manifest['ray'].get('shards')} shards: "
                        "resume it with --ray (the shards hold its journals and caches)")
    old = manifest.get("config")
    if not old:
        return
    keys = ("rounds", "backend", "model", "judge_model", "seed", "mix", "min_score", "temperature", "top_p",
            "send_images", "judge_image", "max_side", "image_detail", "max_tokens", "judge_temperature", "checks")
    changed = [k for k in keys if k in old and old[k] != cfg.public().get(k)]
    if changed:
        raise EvolError(f"{run.root} holds a run made with other settings ({', '.join(changed)}); use another --out")
    before = manifest.get("input")
    if before:
        differs = input_changes(before, identity)
        if differs:
            raise EvolError(f"{run.root} was started on another input or the input changed ({before.get('path')}: "
                            f"{'; '.join(differs)}); use another --out")
    elif old.get("input") and Path(old["input"]).resolve() != Path(identity["path"]):
        raise EvolError(f"{run.root} holds a run made with other settings (input); use another --out")


def settle(cfg: EvolveConfig):
    """Settle backend and model from the settings (nothing loaded yet); say what was decided.

    Text-only local models get --no-images (operators then put each record's caption and
    boxes into the text), and a text-only judge gets --judge-no-image.
    """
    from evol.backends import BackendChoiceError, settle_backend

    try:
        choice = settle_backend(cfg.backend, cfg.model, cfg.base_url)
        judge = _judge_choice(cfg, choice)
    except BackendChoiceError as exc:
        raise EvolError(str(exc)) from None
    cfg.backend, cfg.model = choice.kind, choice.model
    for text in [*choice.notes, *(judge.notes if judge is not None else [])]:
        note(text)
    if choice.text_only and cfg.send_images:
        cfg.send_images = False
        note(f"{choice.model} is a text-only model: images are not sent (--no-images); the prompts carry each "
             "record's caption and boxes instead")
    if judge is not None and judge.text_only and cfg.judge_image and cfg.send_images:
        cfg.judge_image = False
        note(f"judge {judge.model} is a text-only model: --judge-no-image")
    return choice


def _judge_choice(cfg: EvolveConfig, choice):
    """The judge's backend (a `BackendChoice`), or None when it is the evolver's model on the
    evolver's backend. `--judge-base-url` means a judge over HTTP (`--judge-backend openai`);
    `--judge-backend hf|vllm` a local judge (`--judge-model` its path) beside any evolver."""
    from evol.backends import BackendChoiceError, settle_backend

    kind = cfg.judge_backend or ("openai" if cfg.judge_base_url else choice.kind)
    if cfg.judge_base_url and kind != "openai":
        raise BackendChoiceError(f"--judge-base-url is for a judge over HTTP; --judge-backend {kind} runs the judge "
                                 "in this process")
    model = cfg.judge_model
    if kind == choice.kind and model in (None, choice.model):
        return None
    if model is None and kind == "openai":
        raise BackendChoiceError("a judge over HTTP beside a local evolver needs --judge-model (the name its "
                                 "server serves)")
    if model is None:
        model = choice.model if choice.kind != "openai" else None
    return settle_backend(kind, model, None)


def _build_backends(cfg: EvolveConfig, run: RunDir, images, choice):
    """The evolver's and the judge's backends, each cached in the run's one cache.

    Over HTTP each side has its servers (`evol.backends.endpoints.EndpointPool`: --base-url,
    or --judge-base-url for the judge), a `Limiter` (the sum of their concurrencies,
    adaptive, with the rates) and a `Breaker`. A judge with nothing of its own (no servers,
    key, limits or backend) shares the evolver's, as one server always did; it still gets a
    backend object of its own, so that what it spent is counted apart (`_meter`).
    """
    from evol.backends import BackendChoiceError, build_backend
    from evol.backends.base import BackendError
    from evol.backends.endpoints import EndpointPool
    from evol.backends.health import Breaker
    from evol.backends.limits import Limiter
    from evol.cache import Cache, CachedBackend

    try:
        judge_choice = _judge_choice(cfg, choice)
    except BackendChoiceError as exc:
        raise EvolError(str(exc)) from None
    first = "json_schema" if cfg.structured == "auto" else cfg.structured

    def servers(urls, concurrency, rpm, tpm):
        pool = EndpointPool(urls, concurrency, breaker=Breaker(), dialect=first)
        return pool, Limiter(pool.concurrency, rpm=rpm, tpm=tpm, adaptive=True)  # latency control: limits.py

    pool, limiter = servers(cfg.base_url if choice.kind == "openai" else None, cfg.concurrency, cfg.rpm, cfg.tpm)
    cache = Cache(run.cache)

    def make(which, limiter, pool, key_env):
        if which.kind != "openai":
            say(f"loading {which.model} ({which.kind} backend) ...")
        remote = dict(api_key_env=key_env, timeout=cfg.timeout, max_attempts=cfg.max_attempts,
                      image_detail=cfg.image_detail, breaker=pool.breaker, structured=cfg.structured, endpoints=pool)
        try:
            return build_backend(which, images=images, limiter=limiter, device=cfg.device,
                                 batch_size=cfg.batch_size, max_new_tokens=cfg.max_tokens,
                                 max_string=cfg.max_string, max_items=cfg.max_items,
                                 **(remote if which.kind == "openai" else {}))
        except BackendError as exc:
            cache.close()
            raise EvolError(str(exc)) from None

    inner = make(choice, limiter, pool, cfg.api_key_env)
    judge_which = judge_choice or choice
    if judge_which.kind != "openai" and judge_choice is None:
        judge_inner = inner  # the same local model: one engine
    elif cfg.judge_own:
        if judge_which.kind == "openai":
            jpool, jlimiter = servers(cfg.judge_base_url or (cfg.base_url if choice.kind == "openai" else None),
                                      cfg.judge_concurrency or cfg.concurrency, cfg.judge_rpm, cfg.judge_tpm)
        else:
            jpool, jlimiter = servers(None, cfg.judge_concurrency or cfg.concurrency, None, None)
        judge_inner = make(judge_which, jlimiter, jpool, cfg.judge_api_key_env or cfg.api_key_env)
    else:
        judge_inner = make(judge_which, limiter, pool, cfg.api_key_env)
    return cache, [inner, judge_inner], CachedBackend(inner, cache, images), CachedBackend(judge_inner, cache, images)


def _meter(cfg: EvolveConfig, inners, backend, judge_backend):
    """What the evolver and the judge spent in this invocation (`evol.stats.Meter`): the
    tokens of every request each side's backend sent (cached calls cost nothing); a local
    model serving both sides is split by the calls each side made."""
    from evol.stats import Meter, role_prices

    shared = inners[0] is inners[1]
    sources = {}
    for role, inner, cached in (("evolver", inners[0], backend), ("judge", inners[1], judge_backend)):
        st = getattr(inner, "stats", None)
        sources[role] = cached.stats if shared or st is None else st.sent
    return Meter(sources, role_prices(cfg))


def _endpoint_tables(inners) -> dict:
    """Per server, this invocation's requests, answers, errors and mean latency: under
    "evolver" (the judge's requests too when it shares the servers) and "judge" (its own)."""
    pools = [getattr(b, "pool", None) for b in inners]
    out = {}
    if pools[0] is not None:
        out["evolver"] = pools[0].table()
    if pools[1] is not None and pools[1] is not pools[0]:
        out["judge"] = pools[1].table()
    return out


def _judge_info(cfg: EvolveConfig, inners) -> dict:
    """Which judge this run used: backend, model and servers (redacted)."""
    judge = inners[1]
    pool = getattr(judge, "pool", None)
    kind = cfg.judge_backend or ("openai" if cfg.judge_base_url else cfg.backend)
    return {"backend": kind, "model": judge.model,
            "servers": ("the evolver's" if pool is not None and pool is getattr(inners[0], "pool", None)
                        else [ep.where for ep in pool.endpoints] if pool is not None else None)}


async def _close(inners, cache) -> None:
    for inner in {id(b): b for b in inners}.values():
        await inner.aclose()
    cache.close()


async def _preflight(cfg: EvolveConfig, run: RunDir, inners, cache):
    """Check the server before the first record (openai backend; `evol.backends.preflight`).

    Returns the config the run goes on with (a server that ignores images: --no-images;
    the stored config stays as given) and what the manifest keeps under ``server``. A
    failed check raises EvolError, nothing written as done.
    """
    previous = run.read_manifest().get("server")
    from evol.backends.openai import OpenAIBackend

    remote = [b for b in {id(b): b for b in inners}.values() if isinstance(b, OpenAIBackend)]
    if not remote or not cfg.preflight:
        return cfg, previous
    from evol.backends.preflight import PreflightError, record_server, run_preflight

    try:
        check = await run_preflight(cfg, remote, previous=previous, evolver=isinstance(inners[0], OpenAIBackend))
    except PreflightError as exc:
        await _close(inners, cache)
        raise EvolError(str(exc)) from None
    for text in check.notes:
        note(text)
    for text in check.warnings:
        note(text, "warning")
    try:
        record_server(run, check.info)
    except OSError as exc:
        await _close(inners, cache)
        raise EvolError(os_problem(exc, "cannot write the run folder:")) from None
    if not check.send_images and cfg.send_images:
        return cfg.model_copy(update={"send_images": False, "judge_image": False}), check.info
    if check.judge_image is False and cfg.judge_image:
        return cfg.model_copy(update={"judge_image": False}), check.info
    return cfg, check.info


async def _evolve(cfg: EvolveConfig, run: RunDir, images, choice, *, retry_failed: bool,
                  progress: bool) -> EvolveResult:
    """Run, finalize, summarise."""
    from evol.io import count_records
    from evol.progress import show_progress
    from evol.prompts import prompt_versions
    from evol.runner import Runner

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    try:
        done = prepare_resume(run, reopen_failed=retry_failed)
    except OSError as exc:
        raise EvolError(os_problem(exc, "cannot read or tidy the run folder:")) from None
    cache, inners, backend, judge_backend = _build_backends(cfg, run, images, choice)
    meter = _meter(cfg, inners, backend, judge_backend)

    def usage() -> dict:  # what this invocation's entry adds: money, and requests per server
        tables = _endpoint_tables(inners)
        return {"cost": meter.block(), **({"endpoints": tables} if tables else {})}

    run_cfg, server = await _preflight(cfg, run, inners, cache)
    runner = Runner(run_cfg, run, backend, images, judge_backend=judge_backend, done_keys=done)
    total = _total(cfg, count_records)
    if done:
        say(f"resuming: {len(done)} records already finished in {run.root}")
    # This invocation's entry in the manifest, written now ("running"), kept up by the
    # progress task and finished at the end: a killed invocation keeps its last wall time.
    slot: list[int | None] = [None]

    def checkpoint(status: str = "running") -> None:
        slot[0] = run.record_invocation(_invocation_entry(started, t0, runner.stats, status, more=usage()), slot[0])

    try:
        checkpoint()
    except OSError as exc:
        log.warning("could not record this invocation in %s: %s", run.manifest, exc)
    shown = asyncio.create_task(show_progress(runner.stats, console, checkpoint=checkpoint, cost=meter) if progress
                                else _checkpoints(checkpoint))
    finished = False
    try:
        stats = await runner.run(total=total)
        finished = True
    finally:
        shown.cancel()
        await asyncio.gather(shown, return_exceptions=True)
        await _close(inners, cache)
        if not finished:  # Ctrl-C, SIGTERM or a crash: what it took so far
            try:
                checkpoint("interrupted")
            except Exception:  # noqa: BLE001 - the interruption is what gets reported
                pass
    return _finish(cfg, run, stats, total, started, t0, slot[0], server, prompt_versions(), more=usage(),
                   judge=_judge_info(cfg, inners))


async def _checkpoints(checkpoint, interval: float = 5.0) -> None:
    """Without a progress display, the manifest's invocation entry is still kept up."""
    while True:
        await asyncio.sleep(interval)
        try:
            checkpoint()
        except OSError:
            pass


def _total(cfg: EvolveConfig, count_records, arrays: bool = False) -> int | None:
    total = count_records(cfg.input, arrays=arrays)
    return min(total, cfg.limit) if total is not None and cfg.limit is not None else total


def _finish(cfg, run, stats, total, started, t0, slot, server, prompts, *, more: dict | None = None,
            judge: dict | None = None) -> EvolveResult:
    from evol.backends.endpoints import sum_tables
    from evol.io import count_records
    from evol.stats import sum_costs

    # records never started because the run stopped are pending too
    unstarted = 0
    if stats.stop_cause is not None and total is None:  # a JSON array: count it now, once
        total = _total(cfg, count_records, arrays=True)
    if stats.stop_cause is not None and total is not None:
        unstarted = max(0, total - stats.accounted - stats.pending)
    pending = stats.pending + unstarted
    reasons = dict(stats.pending_reasons.most_common(10))
    if unstarted:
        reasons["not started: the run stopped"] = unstarted
    complete = stats.stop_cause is None and pending == 0
    status = "complete" if complete else "incomplete"
    known = stats.stop_cause is None or total is not None
    invocations = list(run.read_manifest().get("invocations") or [])
    entry = _invocation_entry(started, t0, stats, status, pending, more=more)
    if slot is not None and slot < len(invocations):
        invocations[slot] = entry
    else:
        invocations.append(entry)
    spent = sum_costs([i.get("cost") for i in invocations])
    servers = sum_tables(i.get("endpoints") for i in invocations if isinstance(i.get("endpoints"), dict))
    try:
        manifest = finalize(run, cfg.public(), min_score=cfg.min_score, include_seeds=cfg.include_seeds, extra={
            "status": status,
            "pending": {"records": pending if known else None, "reasons": reasons, "stopped": stats.stop_cause},
            "prompts": prompts,
            "invocations": invocations,  # finalize adds the totals: wall_s, model_calls, http
            **({"server": server} if server is not None else {}),
            **({"judge": judge} if judge is not None else {}),
            **({"cost": spent} if spent is not None else {}),  # evolver and judge apart, every invocation
            "endpoints": servers,  # per server, every invocation ({} with a local model)
        })
    except OSError as exc:
        from evol.cache import write_failure

        stopped = stats.stop_cause or write_failure(exc.filename or run.root, exc)
        note(stopped, "error", "red")
        say("the journals and the cache keep every finished record and answer: rerun the same command to finish")
        return EvolveResult(run.root, "incomplete", pending=pending if known else None, stopped=stopped)
    c = manifest["counts"]
    say(f"{'done' if complete else 'incomplete'}: {c['records_out']} records, {c['llava_entries']} kept items "
        f"in {run.llava}; {c['records_rejected']} records rejected, rejects in {run.rejects}; {_requests_line(stats)}"
        + _cost_line(manifest.get("cost")))
    for line in stage_lines(manifest.get("stages"), cfg.checks):
        say(line)
    result = EvolveResult(run.root, status, counts=c, manifest=manifest, pending=pending if known else None,
                          stopped=stats.stop_cause)
    if complete:
        return result
    if stats.stop_cause:
        note(stats.stop_cause, "error", "red")
    left = f"{pending} records" if known else "the remaining records"
    say(f"{left} pending: rerun the same command to finish (calls already answered are not sent again)")
    for reason, n in stats.pending_reasons.most_common(3):
        say(f"  pending: {n} x {reason}")
    return result


_STAGE_REJECTS = {"blind": "answerable without the picture", "answer": "answer disagrees with the picture"}


def stage_lines(stages: dict | None, checks=None) -> list[str]:
    """One summary line per later elimination stage the run used (blind, answer), from the
    manifest's "stages": "blind check: 12 examined, 3 rejected (answerable without the
    picture), 12 requests". `checks` (the run's --checks) adds a stage that examined nothing."""
    from evol.eliminator.stages import LATER

    stages = stages if isinstance(stages, dict) else {}
    lines = []
    for stage in LATER:
        s = stages.get(stage)
        if not isinstance(s, dict) and stage not in (checks or ()):
            continue
        s = s if isinstance(s, dict) else {}
        lines.append(f"{stage} check: {s.get('examined', 0):,} examined, {s.get('rejected', 0):,} rejected "
                     f"({_STAGE_REJECTS[stage]}), {s.get('requests', 0):,} requests")
    return lines


def _invocation_entry(started: str, t0: float, stats, status: str, pending: int | None = None, *,
                      more: dict | None = None) -> dict:
    """One invocation in the manifest: when it started, how it ended ("running" until it
    does; "killed" when it never did), its wall time, the requests it sent
    ("model_calls": HTTP requests, every attempt; with a local backend, calls answered)
    and, over HTTP, those requests by outcome with their tokens ("http")."""
    http = stats.http
    entry = {
        "started": started,
        "status": status,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.monotonic() - t0, 3),
        "model_calls": stats.requests_sent,
        "cached_calls": stats.cached_calls,
        "calls": {"answered": stats.model_calls, "cached": stats.cached_calls, "failed": stats.calls_failed},
        "tokens_in": http["tokens_in"] if http else stats.tokens_in,
        "tokens_out": http["tokens_out"] if http else stats.tokens_out,
        **({"http": http} if http else {}),
        "records_done": stats.finished,
        "records_resumed": stats.skipped_done,
    }
    if pending is not None:
        entry["records_pending"] = pending
    if more:  # money ("cost") and requests per server ("endpoints")
        entry.update(more)
    if stats.stop_cause:
        entry["stopped"] = stats.stop_cause
    return entry


def _requests_line(stats) -> str:
    """The summary's account of requests: sent, by outcome, tokens; calls from the cache."""
    http = stats.http
    if not http:
        return (f"{stats.model_calls} model calls ({stats.tokens_in:,} tokens in, {stats.tokens_out:,} out), "
                f"{stats.cached_calls} from cache")

    def kinds(table: dict, what: str) -> str:
        n = sum(v["requests"] for v in table.values())
        return f"{n} {what}" + (" (" + ", ".join(f"{k} x{v['requests']}" for k, v in table.items()) + ")" if n else "")

    return (f"{http['requests']} requests: {http['ok']['requests']} ok, {kinds(http['retried'], 'retried')}, "
            f"{kinds(http['failed'], 'failed')}; tokens {http['tokens_in']:,} in, {http['tokens_out']:,} out; "
            f"{stats.cached_calls} calls from cache")


def _cost_line(spent: dict | None) -> str:
    """"; cost 1.23 (evolver 1.00, judge 0.23)" for the summary; "" without prices."""
    if not spent or spent.get("money") is None:
        return ""
    parts = ", ".join(f"{role} {'?' if v.get('money') is None else format(v['money'], '.4g')}"
                      for role, v in spent.items() if isinstance(v, dict))
    return f"; cost {spent['money']:.4g} ({parts})"


def _dry_requests(est) -> str:
    """The dry run's requests per stage: "operator 10, judge 10", and with later checks
    ", blind 20, answer 20: a check and at most one comparison of answers each ..."."""
    later = [stage for stage in est.stages if stage not in ("operator", "judge")]
    text = est.requests_text()
    if later:
        text += (f"; {' and '.join(later)}: a check and at most one comparison of answers per record and round "
                 "each, on the judge's backend")
    return text


def _dry_run(cfg: EvolveConfig, images) -> EvolveResult:
    from evol.dryrun import estimate

    est = estimate(cfg, images)
    say(f"dry run: {est.records} records ({est.items} seed items) x {cfg.rounds} rounds; "
        f"{est.rejected} records would be rejected on read\n"
        f"  requests: at most {est.requests:,} ({_dry_requests(est)})\n"
        f"  tokens:   about {est.tokens_in:,} in, {est.tokens_out:,} out\n"
        f"  cost:     {est.cost_text()}\n"
        "  nothing was called.")
    for reason, n in est.reasons.most_common(5):
        say(f"  rejected: {n} x {reason}")
    return EvolveResult(Path(cfg.out), "dry run", estimate=est, pending=None)
