"""The `evol` command line: parse flags and config, build the pieces, call them.

Exit codes (README, "When things fail"): 0 the run is complete; 1 a usage, configuration or
file-system problem (one ``error:`` line, nothing started); 3 the run is incomplete:
records are pending (calls that got no answer, or a run stopped by a bad key, a dead
server or a full disk): rerun the same command to finish it; 130 interrupted (Ctrl-C or
SIGTERM), also resumable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from evol import aio
from evol.config import ConfigError, EvolveConfig, build_config
from evol.rundir import (RunDir, RunLocked, finalize, input_changes, input_identity, prepare_resume)
from evol.samples import shipped

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Evolve multimodal instruction data.")
console = Console(stderr=True)
log = logging.getLogger("evol")


def _setup_logging(run: RunDir | None, verbose: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run is not None:
        handlers.append(logging.FileHandler(run.root / "evol.log", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    for noisy in ("httpx", "openai", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 1, 3, 130


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def _os_problem(exc: OSError, what: str) -> str:
    """One line for a file-system error: what was being done, the path, the cause."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    return f"{what}{where}: {exc.strerror or exc}"


def _check_input(path: str) -> None:
    """The input must be a readable file: say which problem it has, in one line."""
    p = Path(path)
    if not p.exists():
        _fail(f"input file not found: {path}")
    if p.is_dir():
        _fail(f"input is a folder, not a file: {path}")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        _fail(f"cannot read input {path}: {exc.strerror or exc}")


@app.command()
def evolve(
    input: Optional[str] = typer.Argument(None, help="Seed file: LLaVA JSON/JSONL, MMEvol records or evol JSONL."),
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (created; rerun to resume)."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file whose keys match these flags."),
    rounds: Optional[int] = typer.Option(None, help="Evolution rounds [3]."),
    backend: Optional[str] = typer.Option(None, help="openai (a server), hf (transformers) or vllm (offline) [openai with --base-url/--model, else the embedded hf default]."),
    model: Optional[str] = typer.Option(None, help="Model name the server knows; hf/vllm: a local model folder or .gguf file."),
    device: Optional[str] = typer.Option(None, help="hf backend: auto, cpu or cuda [auto]."),
    batch_size: Optional[int] = typer.Option(None, help="hf backend: requests decoded together at most [8]."),
    max_string: Optional[int] = typer.Option(None, help="hf backend: longest JSON string it may write [no limit; 200 for the embedded default]."),
    max_items: Optional[int] = typer.Option(None, help="hf backend: longest JSON list it may write [no limit; 5 for the embedded default]."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1."),
    api_key_env: Optional[str] = typer.Option(None, help="Environment variable holding the API key [OPENAI_API_KEY]."),
    judge_model: Optional[str] = typer.Option(None, help="Judge with another model on the same server."),
    image_root: Optional[str] = typer.Option(None, help="Images are read under this folder only."),
    max_side: Optional[int] = typer.Option(None, help="Downscale images so the longer side fits [1344]; 0 sends originals."),
    image_detail: Optional[str] = typer.Option(None, help="OpenAI image detail: auto, low or high [auto]."),
    max_pixels: Optional[int] = typer.Option(None, help="Images with more pixels are rejected as too large [100000000]."),
    allow_image_urls: Optional[bool] = typer.Option(None, "--allow-image-urls/--no-image-urls", help="Pass http(s) image URLs to the model server, which fetches them [no]."),
    send_images: Optional[bool] = typer.Option(None, "--send-images/--no-images", help="Send pixels to the model [yes]."),
    judge_image: Optional[bool] = typer.Option(None, "--judge-image/--judge-no-image", help="The judge sees the image [yes]."),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight at most [64]."),
    rpm: Optional[float] = typer.Option(None, help="Requests per minute at most."),
    tpm: Optional[float] = typer.Option(None, help="Tokens per minute at most."),
    timeout: Optional[float] = typer.Option(None, help="Seconds per request before it is retried [120]."),
    max_attempts: Optional[int] = typer.Option(None, help="Tries per request [6]."),
    structured: Optional[str] = typer.Option(None, help="openai backend: how the JSON schema goes to the server: auto, json_schema, json_object (llama.cpp), ollama or prompt [auto: the preflight finds the way the server takes]."),
    preflight: Optional[bool] = typer.Option(None, "--preflight/--no-preflight", help="openai backend: check the server, the model name, structured output and images before the first record [yes]."),
    text_only_server: Optional[str] = typer.Option(None, help="The preflight found a server that ignores images: captions (go on, each record's caption and boxes in the prompt instead) or stop [captions]."),
    seed: Optional[int] = typer.Option(None, help="Run seed: operator choice and sampling [0]."),
    mix: Optional[str] = typer.Option(None, help="Operator weights, e.g. perceptual=1,reasoning=1,interaction=1."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature for evolution [0.7]."),
    top_p: Optional[float] = typer.Option(None),
    max_tokens: Optional[int] = typer.Option(None, help="Answer length limit [2048]."),
    judge_temperature: Optional[float] = typer.Option(None, help="[0.0]"),
    min_score: Optional[float] = typer.Option(None, help="Keep only improved items scored at least this [0]."),
    include_seeds: Optional[bool] = typer.Option(None, "--include-seeds/--no-seeds", help="Also write seed items to llava.json."),
    input_format: Optional[str] = typer.Option(None, help="auto, llava, mmevol or evol [auto]."),
    limit: Optional[int] = typer.Option(None, help="Only the first N input records."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate requests and tokens; call nothing."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Also run again the records whose round failed on an unusable reply."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more, and show tracebacks."),
) -> None:
    """Evolve a seed file for several rounds, judge every step, write a run folder.

    Exit status: 0 complete; 1 usage or configuration error; 3 incomplete (records
    pending: rerun the same command to finish); 130 interrupted (rerun to resume).
    """
    flags = {k: v for k, v in locals().items() if k not in ("config", "dry_run", "verbose", "retry_failed")}
    try:
        cfg, from_file = build_config(flags, config)
    except ConfigError as exc:
        _fail(str(exc))
    dry_run, verbose = dry_run or from_file["dry_run"], verbose or from_file["verbose"]
    retry_failed = retry_failed or from_file["retry_failed"]
    _check_input(cfg.input)
    try:
        identity = input_identity(cfg.input)
    except OSError as exc:
        _fail(_os_problem(exc, "cannot read input"))
    choice = _settle_backend(cfg)
    from evol.images import ImageStore

    images = ImageStore(Path(cfg.image_root) if cfg.image_root else None, cfg.max_side,
                        max_pixels=cfg.max_pixels, allow_urls=cfg.allow_image_urls)
    if dry_run:
        _setup_logging(None, verbose)
        _dry_run(cfg, images)
        return
    run = RunDir(Path(cfg.out))
    try:
        run.create()
        lock = run.lock()
    except RunLocked as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_problem(exc, f"cannot use --out {cfg.out} as a run folder:"))
    with lock:
        try:
            _setup_logging(run, verbose)
            _check_same_run(run, cfg, identity)
            run.begin(cfg.public(), identity)
        except OSError as exc:
            if verbose:
                raise
            _fail(_os_problem(exc, "cannot write the run folder:"))
        # SIGTERM (a scheduler, `kill`) stops the run the way Ctrl-C does: resumable
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            code = aio.run(_evolve(cfg, run, images, choice, retry_failed=retry_failed))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: rerun the same command to resume; finished calls are cached.")
            raise typer.Exit(EXIT_INTERRUPTED)
        finally:
            signal.signal(signal.SIGTERM, previous)
    if code:
        raise typer.Exit(code)


def _check_same_run(run: RunDir, cfg: EvolveConfig, identity: dict) -> None:
    """Resuming with other settings or another input would mix two runs in one folder:
    refuse, and say what differs."""
    manifest = run.read_manifest()
    old = manifest.get("config")
    if not old:
        return
    keys = ("rounds", "backend", "model", "judge_model", "seed", "mix", "min_score", "temperature", "top_p",
            "send_images", "judge_image", "max_side", "image_detail", "max_tokens", "judge_temperature")
    changed = [k for k in keys if k in old and old[k] != cfg.public().get(k)]
    if changed:
        _fail(f"{run.root} holds a run made with other settings ({', '.join(changed)}); use another --out")
    before = manifest.get("input")
    if before:
        differs = input_changes(before, identity)
        if differs:
            _fail(f"{run.root} was started on another input or the input changed ({before.get('path')}: "
                  f"{'; '.join(differs)}); use another --out")
    elif old.get("input") and Path(old["input"]).resolve() != Path(identity["path"]):
        _fail(f"{run.root} holds a run made with other settings (input); use another --out")


def _settle_backend(cfg: EvolveConfig):
    """Settle backend and model from the flags (nothing loaded yet); say what was decided.

    Text-only local models get --no-images (operators then put each record's caption and
    boxes into the text), and a text-only judge gets --judge-no-image.
    """
    from evol.backends import BackendChoiceError, settle_backend

    try:
        choice = settle_backend(cfg.backend, cfg.model, cfg.base_url)
        judge = settle_backend(choice.kind, cfg.judge_model, None) if cfg.judge_model and choice.kind != "openai" else None
    except BackendChoiceError as exc:
        _fail(str(exc))
    cfg.backend, cfg.model = choice.kind, choice.model
    for note in choice.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if choice.text_only and cfg.send_images:
        cfg.send_images = False
        console.print(f"[yellow]note:[/yellow] {choice.model} is a text-only model: images are not sent "
                      "(--no-images); the prompts carry each record's caption and boxes instead")
    if judge is not None and judge.text_only and cfg.judge_image and cfg.send_images:
        cfg.judge_image = False
        console.print(f"[yellow]note:[/yellow] judge {judge.model} is a text-only model: --judge-no-image")
    return choice


def _build_backends(cfg: EvolveConfig, run: RunDir, images, choice):
    from evol.backends import build_backend, settle_backend
    from evol.backends.base import BackendError
    from evol.backends.limits import Limiter
    from evol.cache import Cache, CachedBackend

    from evol.backends.health import Breaker

    limiter = Limiter(cfg.concurrency, rpm=cfg.rpm, tpm=cfg.tpm, adaptive=True)  # latency control: limits.py
    cache = Cache(run.cache)
    remote = dict(base_url=cfg.base_url, api_key_env=cfg.api_key_env, timeout=cfg.timeout,
                  max_attempts=cfg.max_attempts, image_detail=cfg.image_detail, breaker=Breaker(),
                  structured=cfg.structured)

    def make(which):
        if which.kind != "openai":
            console.print(f"loading {which.model} ({which.kind} backend) ...")
        try:
            inner = build_backend(which, images=images, limiter=limiter, device=cfg.device,
                                  batch_size=cfg.batch_size, max_new_tokens=cfg.max_tokens,
                                  max_string=cfg.max_string, max_items=cfg.max_items,
                                  **(remote if which.kind == "openai" else {}))
        except BackendError as exc:
            cache.close()
            _fail(str(exc))
        return inner, CachedBackend(inner, cache, images)

    inner, backend = make(choice)
    if not cfg.judge_model or cfg.judge_model == cfg.model:
        judge_inner, judge_backend = inner, backend
    else:
        judge_inner, judge_backend = make(settle_backend(choice.kind, cfg.judge_model, cfg.base_url if choice.kind == "openai" else None))
    return cache, [inner, judge_inner], backend, judge_backend


async def _preflight(cfg: EvolveConfig, run: RunDir, inners, cache):
    """Check the server before the first record (openai backend; `evol.backends.preflight`).

    Returns the config the run goes on with (a server that ignores images: --no-images;
    the stored config stays as given) and what the manifest keeps under ``server``. A
    failed check is one ``error:`` line and exit 1, nothing written as done.
    """
    previous = run.read_manifest().get("server")
    if cfg.backend != "openai" or not cfg.preflight:
        return cfg, previous
    from rich.markup import escape

    from evol.backends.preflight import PreflightError, record_server, run_preflight

    try:
        check = await run_preflight(cfg, list({id(b): b for b in inners}.values()), previous=previous)
    except PreflightError as exc:
        for inner in {id(b): b for b in inners}.values():
            await inner.aclose()
        cache.close()
        _fail(escape(str(exc)))  # server messages may hold [brackets]: not markup
    for note in check.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    for warning in check.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    try:
        record_server(run, check.info)
    except OSError as exc:
        _fail(_os_problem(exc, "cannot write the run folder:"))
    if not check.send_images and cfg.send_images:
        return cfg.model_copy(update={"send_images": False, "judge_image": False}), check.info
    return cfg, check.info


async def _evolve(cfg: EvolveConfig, run: RunDir, images, choice, *, retry_failed: bool = False) -> int:
    """Run, finalize, summarise; return the exit code (0 complete, 3 records pending)."""
    from evol.io import count_records
    from evol.progress import show_progress
    from evol.prompts import prompt_versions
    from evol.runner import Runner

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    try:
        done = prepare_resume(run, reopen_failed=retry_failed)
    except OSError as exc:
        _fail(_os_problem(exc, "cannot read or tidy the run folder:"))
    cache, inners, backend, judge_backend = _build_backends(cfg, run, images, choice)
    run_cfg, server = await _preflight(cfg, run, inners, cache)
    runner = Runner(run_cfg, run, backend, images, judge_backend=judge_backend, done_keys=done)
    total = count_records(cfg.input)
    if total is not None and cfg.limit is not None:
        total = min(total, cfg.limit)
    if done:
        console.print(f"resuming: {len(done)} records already finished in {run.root}")
    # This invocation's entry in the manifest, written now ("running"), kept up by the
    # progress task and finished at the end: a killed invocation keeps its last wall time.
    slot: list[int | None] = [None]

    def checkpoint(status: str = "running") -> None:
        slot[0] = run.record_invocation(_invocation_entry(started, t0, runner.stats, status), slot[0])

    try:
        checkpoint()
    except OSError as exc:
        log.warning("could not record this invocation in %s: %s", run.manifest, exc)
    progress = asyncio.create_task(show_progress(runner.stats, console, checkpoint=checkpoint))
    finished = False
    try:
        stats = await runner.run(total=total)
        finished = True
    finally:
        progress.cancel()
        await asyncio.gather(progress, return_exceptions=True)
        for inner in {id(b): b for b in inners}.values():
            await inner.aclose()
        cache.close()
        if not finished:  # Ctrl-C, SIGTERM or a crash: what it took so far
            try:
                checkpoint("interrupted")
            except Exception:  # noqa: BLE001 - the interruption is what gets reported
                pass
    # records never started because the run stopped are pending too
    unstarted = 0
    if stats.stop_cause is not None and total is None:  # a JSON array: count it now, once
        total = count_records(cfg.input, arrays=True)
        if total is not None and cfg.limit is not None:
            total = min(total, cfg.limit)
    if stats.stop_cause is not None and total is not None:
        unstarted = max(0, total - stats.accounted - stats.pending)
    pending = stats.pending + unstarted
    reasons = dict(stats.pending_reasons.most_common(10))
    if unstarted:
        reasons["not started: the run stopped"] = unstarted
    complete = stats.stop_cause is None and pending == 0
    invocations = list(run.read_manifest().get("invocations") or [])
    entry = _invocation_entry(started, t0, stats, "complete" if complete else "incomplete", pending)
    if slot[0] is not None and slot[0] < len(invocations):
        invocations[slot[0]] = entry
    else:
        invocations.append(entry)
    try:
        result = finalize(run, cfg.public(), min_score=cfg.min_score, include_seeds=cfg.include_seeds, extra={
            "status": "complete" if complete else "incomplete",
            "pending": {"records": pending if stats.stop_cause is None or total is not None else None,
                        "reasons": reasons, "stopped": stats.stop_cause},
            "prompts": prompt_versions(),
            "invocations": invocations,  # finalize adds the totals: wall_s, model_calls, http
            **({"server": server} if server is not None else {}),
        })
    except OSError as exc:
        from evol.cache import write_failure

        console.print(f"[red]error:[/red] {stats.stop_cause or write_failure(exc.filename or run.root, exc)}",
                      highlight=False, soft_wrap=True)
        console.print("the journals and the cache keep every finished record and answer: "
                      "rerun the same command to finish", highlight=False)
        return EXIT_INCOMPLETE
    c = result["counts"]
    console.print(
        f"{'done' if complete else 'incomplete'}: {c['records_out']} records, {c['llava_entries']} kept items "
        f"in {run.llava}; {c['records_rejected']} records rejected, rejects in {run.rejects}; "
        f"{_requests_line(stats)}", highlight=False, soft_wrap=True)
    if complete:
        return 0
    if stats.stop_cause:
        console.print(f"[red]error:[/red] {stats.stop_cause}", highlight=False, soft_wrap=True)
    left = f"{pending} records" if stats.stop_cause is None or total is not None else "the remaining records"
    console.print(f"{left} pending: rerun the same command to finish (calls already answered are not sent again)",
                  highlight=False, soft_wrap=True)
    for reason, n in stats.pending_reasons.most_common(3):
        console.print(f"  pending: {n} x {reason}", highlight=False, soft_wrap=True)
    return EXIT_INCOMPLETE


def _invocation_entry(started: str, t0: float, stats, status: str, pending: int | None = None) -> dict:
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


def _dry_run(cfg: EvolveConfig, images) -> None:
    from evol.dryrun import estimate

    est = estimate(cfg, images)
    console.print(
        f"dry run: {est.records} records ({est.items} seed items) x {cfg.rounds} rounds; "
        f"{est.rejected} records would be rejected on read\n"
        f"  requests: at most {est.requests:,} (operator + judge per round)\n"
        f"  tokens:   about {est.tokens_in:,} in, {est.tokens_out:,} out\n"
        "  nothing was called."
    )
    for reason, n in est.reasons.most_common(5):
        console.print(f"  rejected: {n} x {reason}")


@app.command("status")
def status_cmd(run_folder: str = typer.Argument(..., help="A run folder written by `evol evolve`.")) -> None:
    """Where a run stands: records done, pending, failed and rejected, with the top reasons."""
    from evol.rundir import run_status

    run = RunDir(Path(run_folder))
    if not run.manifest.exists() and not run.records.exists():
        _fail(f"{run_folder} is not a run folder (no manifest.json or records.jsonl)")
    st = run_status(run)
    total = st["input_records"] if st["input_records"] is not None else "?"
    pending = st["pending"] if st["pending"] is not None else "?"
    console.print(f"{st['run']}: {st['status']}; {total} input records: {st['done']} done "
                  f"({st['failed']} with a failed round), {pending} pending, {st['rejected']} rejected",
                  highlight=False, soft_wrap=True)
    if st["stopped"]:
        console.print(f"  last invocation stopped: {st['stopped']}", highlight=False, soft_wrap=True)
    for title, key in (("pending", "pending_reasons"), ("failed round", "failed_reasons"),
                       ("rejected", "reject_reasons")):
        for reason, n in list(st[key].items())[:5]:
            console.print(f"  {title}: {n} x {reason}", highlight=False, soft_wrap=True)
    if st["failed"]:
        console.print("  (evol evolve --retry-failed runs the records with a failed round again)", highlight=False)


@app.command("filter")
def filter_run(
    run_folder: str = typer.Argument(..., help="A finished run folder."),
    min_score: float = typer.Option(0.0, help="Keep improved items scored at least this."),
    include_seeds: Optional[bool] = typer.Option(None, "--include-seeds/--no-seeds"),
) -> None:
    """Re-apply keep thresholds to a finished run: rewrites llava.json and the manifest, calls nothing."""
    run = RunDir(Path(run_folder))
    if not run.records.exists():
        _fail(f"{run_folder} has no records.jsonl: not a run folder")
    manifest = run.read_manifest()
    seeds = include_seeds if include_seeds is not None else manifest.get("thresholds", {}).get("include_seeds", False)
    try:
        with run.lock():
            result = finalize(run, manifest.get("config", {}), min_score=min_score, include_seeds=seeds)
    except RunLocked as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_problem(exc, "cannot rewrite the run folder:"))
    console.print(f"filtered: {result['counts']['llava_entries']} items kept with score >= {min_score:g} in {run.llava}")


@app.command("analyze")
def analyze_cmd(
    inputs: list[str] = typer.Argument(..., help="Run folders or record files (seed JSONL, LLaVA JSON/JSONL, MMEvol)."),
    out: str = typer.Option(..., "--out", help="Folder for the tables (created)."),
    label: Optional[list[str]] = typer.Option(None, "--label", help="A name per input, in order (repeat the flag)."),
    parser: str = typer.Option("spacy", help="Verb-noun parser: spacy, benepar (needs its model) or none."),
    processes: int = typer.Option(1, min=1, help="Parser worker processes."),
    kept_only: bool = typer.Option(False, "--kept-only", help="Count only the evolved items the judge kept."),
    examples: int = typer.Option(6, min=0, help="Example records per input shown in the report."),
) -> None:
    """Diversity and quality metrics per input and per round: CSV and JSON tables for `evol report`."""
    from evol.analysis.commands import AnalysisError, analyze_command

    try:
        lines = analyze_command(inputs, out, label, parser=parser, processes=processes, kept_only=kept_only,
                                examples=examples)
    except (AnalysisError, FileNotFoundError) as exc:
        _fail(str(exc))
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command("report")
def report_cmd(
    analysis_dir: str = typer.Argument(..., help="A folder written by `evol analyze`."),
    out: Optional[str] = typer.Option(None, "--out", help="HTML file to write [DIR/report.html]."),
) -> None:
    """One self-contained HTML page (charts embedded, works offline) from an analysis folder."""
    from evol.analysis.commands import report_command

    try:
        path = report_command(analysis_dir, out)
    except FileNotFoundError as exc:
        _fail(str(exc))
    console.print(f"report: {path}", highlight=False)


SAMPLES = shipped()


def write_sample_seeds(out: Path) -> None:
    """Programmatic seeds from the shipped scene graphs, one QA per generator, image pairs
    too: what `evol demo` starts from (and what the local-backend benches feed)."""
    graphs = SAMPLES / "scene_graphs"
    seed_provision(
        out=str(out), annotations=str(graphs), masks=str(graphs / "masks"), depth=None, vg=None, vg_ids=None,
        image_root=str(SAMPLES), per_generator=1, mc_ratio=0.5, choices=4, seed=0, images="2", generators=None,
        single=True, number_words=False, depth_gap=20,
    )


@app.command()
def demo(
    out: str = typer.Option("runs/demo", "--out", help="Run folder for the demo."),
    rounds: int = typer.Option(1, min=1, help="Evolution rounds."),
    records: int = typer.Option(8, min=1, help="Seed records to evolve (spread over the sample photos)."),
    backend: str = typer.Option("hf", help="hf: the embedded model (or --model), offline; vllm: offline vLLM on --model (a GPU); openai: the built-in test server."),
    model: Optional[str] = typer.Option(None, help="hf: a local model folder or .gguf file instead of the embedded one; vllm: a local model folder."),
    device: str = typer.Option("auto", help="hf: auto, cpu or cuda."),
    max_tokens: int = typer.Option(448, help="Answer length limit per call."),
) -> None:
    """The whole product on this machine, offline: seeds, evolution, elimination, analysis, report.

    Seeds come from the shipped scene graphs. By default they are evolved by the embedded
    SmolLM2-135M-Instruct (text-only, for trying evol out, not for real data: its rewrites
    are weak and the judge is lenient or harsh at random). `--backend openai` evolves them
    against the built-in test server instead, which answers in the right JSON shape with
    placeholder text. `--backend vllm --model DIR` runs it on offline vLLM (a GPU machine).
    """
    if backend not in ("hf", "vllm", "openai"):
        _fail("the demo runs with --backend hf or vllm (a local model) or --backend openai (the built-in test server)")
    if backend == "vllm" and not model:
        _fail("--backend vllm needs --model: a local model folder")
    t0 = time.monotonic()
    seeds = SAMPLES
    graphs = seeds / "scene_graphs"
    if not graphs.exists():
        _fail(f"sample data not found at {graphs}: run from a source checkout (pip install -e .)")
    Path(out).mkdir(parents=True, exist_ok=True)
    all_seeds, seed_file = Path(out) / "seeds_all.jsonl", Path(out) / "seeds.jsonl"
    console.print(f"demo 1/3: programmatic seeds from the scene graphs in {graphs}")
    write_sample_seeds(all_seeds)
    picked = _spread_lines(all_seeds, seed_file, records)
    console.print(f"      {picked} of them, spread over the photos, in {seed_file}")
    server = None
    if backend == "openai":
        from evol.testing.server import ServerConfig, start_in_thread

        server = start_in_thread(ServerConfig(latency=0.05, spread=0.3))
        console.print(f"demo 2/3: evolving them for {rounds} round(s) against the local test server at {server.url}\n"
                      "      (placeholder text in the right JSON shape; point --base-url at a real model for real data)")
    else:
        console.print(f"demo 2/3: evolving them for {rounds} round(s) with a local model, offline")
    try:
        evolve(
            input=str(seed_file), out=out, config=None, rounds=rounds, backend=backend,
            model=model if server is None else "evol-test-server", device=device if server is None else None,
            batch_size=None, max_string=None, max_items=None, base_url=server.url if server else None,
            api_key_env="EVOL_DEMO_NO_KEY", judge_model=None,
            image_root=str(seeds), max_side=None, image_detail=None, send_images=None, judge_image=None, concurrency=16,
            rpm=None, tpm=None, timeout=30.0, max_attempts=None, seed=None, mix=None, temperature=None, top_p=None,
            max_tokens=max_tokens, judge_temperature=None, min_score=None, include_seeds=None, input_format=None,
            limit=None, dry_run=False, retry_failed=False, verbose=False, max_pixels=None, allow_image_urls=None,
            structured=None, preflight=None, text_only_server=None,
        )
    finally:
        if server is not None:
            server.stop()
    run = RunDir(Path(out))
    analysis = Path(out) / "analysis"
    console.print(f"demo 3/3: analysis and report in {analysis}")
    report = _demo_analysis(out, analysis)
    console.print(f"demo finished in {time.monotonic() - t0:.0f} s; everything is in {out}:")
    for f in (seed_file, run.records, run.llava, run.rejects, run.manifest, run.cache, report):
        if f is not None:
            console.print(f"  {f}")


def _spread_lines(src: Path, dst: Path, n: int) -> int:
    """Copy n lines of src, evenly spaced, to dst (two passes, nothing held but the count)."""
    with open(src, encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    step = max(1.0, total / n)
    wanted = {int(k * step) for k in range(min(n, total))}
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        lines = (line for line in f if line.strip())
        for k, line in enumerate(lines):
            if k in wanted:
                g.write(line)
    return len(wanted)


def _demo_analysis(out: str, analysis: Path) -> Path | None:
    """Analysis and HTML report, if `evol.analysis` is there and works; the demo goes on if not."""
    try:
        from evol.analysis import analyze
        from evol.analysis.report import write_report
    except ImportError as exc:
        console.print(f"[yellow]analysis skipped[/yellow]: evol.analysis is not available ({exc})")
        return None
    try:
        analyze([out], out=str(analysis))
        return Path(write_report(str(analysis)))
    except Exception as exc:  # the run itself is done and written; say why the report is missing
        log.exception("analysis failed")
        console.print(f"[yellow]analysis skipped[/yellow]: {type(exc).__name__}: {exc}")
        return None


seed_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Make seed records: from scene graphs (no LLM) or written by an LLM from annotations.")
app.add_typer(seed_app, name="seed")


@seed_app.command("provision")
def seed_provision(
    out: str = typer.Option(..., "--out", help="Seed records (JSONL) the evolver reads."),
    annotations: Optional[str] = typer.Option(None, help="ProVision stage files: a folder or one file."),
    masks: Optional[str] = typer.Option(None, help="The only folder mask pickles are loaded from (pickles run code)."),
    depth: Optional[str] = typer.Option(None, help="Folder of depth .npy files [the annotation folder]."),
    vg: Optional[str] = typer.Option(None, help="A Visual Genome folder instead of ProVision files."),
    vg_ids: Optional[str] = typer.Option(None, help="Visual Genome image ids to use, comma separated."),
    image_root: Optional[str] = typer.Option(None, help="Image paths are written relative to this folder."),
    per_generator: int = typer.Option(2, help="QAs asked of each generator per image (or image group)."),
    mc_ratio: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of multiple-choice QAs."),
    choices: int = typer.Option(4, min=2, max=8, help="Options per multiple-choice question."),
    seed: int = typer.Option(0, help="Same seed, same file, in any process."),
    images: Optional[str] = typer.Option(None, help="Multi-image group sizes, e.g. 2,3,4."),
    generators: Optional[str] = typer.Option(None, help="Only these generators, comma separated."),
    single: bool = typer.Option(True, "--single/--no-single", help="Run the single-image generators."),
    number_words: bool = typer.Option(False, "--number-words", help="Write counts as words."),
    depth_gap: int = typer.Option(20, help="Least depth difference (0-255) for depth questions."),
    workers: int = typer.Option(1, min=1, help="Processes that load graphs and generate; the file is the same "
                                "for any number."),
) -> None:
    """Write factual Q&A seeds from scene graphs with the programmatic generators."""
    from evol.provision.base import Frequencies, GenContext
    from evol.provision.loaders import load_provision, load_visual_genome
    from evol.provision.seed import SeedReport, provision_records
    from evol.io import JsonlWriter

    if bool(annotations) == bool(vg):
        _fail("give exactly one of --annotations or --vg")
    if not isinstance(workers, int):  # called as a plain function (the demo) without it
        workers = 1
    root = Path(image_root) if image_root else None
    ids = [x.strip() for x in vg_ids.split(",") if x.strip()] if vg_ids else None

    def load(with_masks: bool):
        if vg:
            return load_visual_genome(vg, ids, root)
        return load_provision(annotations, masks_dir=Path(masks) if masks and with_masks else None,
                              depth_dir=Path(depth) if depth else None, image_root=root)

    try:
        sizes = [int(x) for x in images.split(",")] if images else None
        names = [x.strip() for x in generators.split(",") if x.strip()] if generators else None
        report = SeedReport()
        out_path = Path(out)
        tmp = out_path.with_name(out_path.name + ".tmp")
        if workers > 1:  # both passes in worker processes; they hand back finished JSON lines
            from evol.provision.loaders import read_provision
            from evol.provision.parallel import provision_jsonl

            source = load if vg else read_provision(annotations, masks_dir=Path(masks) if masks else None,
                                                    depth_dir=Path(depth) if depth else None, image_root=root)
            ctx = GenContext(mc_ratio=mc_ratio, n_choices=choices, number_words=number_words, depth_gap=depth_gap)
            tmp.unlink(missing_ok=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            n = 0
            with open(tmp, "wb") as f:
                for block in provision_jsonl(source, ctx=ctx, seed=seed, per_generator=per_generator, generators=names,
                                             group_sizes=sizes, single=single, report=report, workers=workers):
                    f.write(block)
                    n += block.count(b"\n")
        else:
            freq = Frequencies()  # first pass, without masks: how common everything is
            for g in load(with_masks=False):
                if not isinstance(g, Exception):
                    freq.add(g)
            ctx = GenContext(mc_ratio=mc_ratio, n_choices=choices, number_words=number_words, depth_gap=depth_gap,
                             freq=freq)
            tmp.unlink(missing_ok=True)
            with JsonlWriter(tmp) as writer:
                n = 0
                for rec in provision_records(load(with_masks=True), ctx=ctx, seed=seed, per_generator=per_generator,
                                             generators=names, group_sizes=sizes, single=single, report=report):
                    writer.write(rec)
                    n += 1
        tmp.replace(out_path)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    rejects = out_path.with_name(out_path.stem + ".rejects.jsonl")
    with open(rejects, "w", encoding="utf-8") as f:
        for reason in report.skipped:
            console.print(f"[yellow]skipped[/yellow] {reason}")
            f.write(json.dumps({"stage": "scene graph", "reason": reason}) + "\n")
    short = sorted(k for k, v in report.produced.items() if v < report.asked[k])
    console.print(f"wrote {n} seed records from {report.images} images to {out_path}; "
                  f"{len(report.skipped)} images skipped (reasons in {rejects})")
    if short:
        console.print("generators that found less to ask than requested: " + ", ".join(
            f"{k} {report.produced[k]}/{report.asked[k]}" for k in short))
    if report.ungrouped:
        console.print(f"the last {report.ungrouped} image(s) were too few for a multi-image group of the sizes asked "
                      f"({images}): they have single-image seeds only")


def _llm_options(model: Optional[str], base_url: Optional[str], api_key_env: str, concurrency: int,
                 rpm: Optional[float], tpm: Optional[float], timeout: float, max_attempts: int, temperature: float,
                 max_tokens: int, seed: int, *, backend: Optional[str] = None, device: str = "auto",
                 batch_size: int = 8):
    """Seed commands reach their model the way `evolve` does: --backend, or the embedded default."""
    from evol.backends import BackendChoiceError, settle_backend
    from evol.seeding.llm import LLMOptions

    from evol.redact import url_credentials_problem

    if url_credentials_problem(base_url):
        _fail(url_credentials_problem(base_url))
    try:
        choice = settle_backend(backend, model, base_url)
    except BackendChoiceError as exc:
        _fail(str(exc))
    for note in choice.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    return LLMOptions(model=choice.model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency, rpm=rpm,
                      tpm=tpm, timeout=timeout, max_attempts=max_attempts, temperature=temperature,
                      max_tokens=max_tokens, seed=seed, backend=choice.kind, model_path=choice.path,
                      device=device, batch_size=batch_size)


def _seed_inputs(path: Optional[str], annotations: Optional[str], vg: Optional[str], vg_ids: Optional[str],
                 image_root: Optional[str], input_format: str) -> dict:
    """Where an LLM seed command reads from: records, or scene graphs (ProVision or Visual Genome)."""
    return dict(path=path, annotations=annotations, vg=vg, image_root=image_root, input_format=input_format,
                vg_ids=[x.strip() for x in vg_ids.split(",") if x.strip()] if vg_ids else None)


def _run_seed_command(run: Callable[[], dict]) -> dict:
    """Run an LLM seed command; bad settings end it with one line, Ctrl-C says how to resume."""
    from evol.backends.base import RunStopped, TransportError

    try:
        return run()
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    except (RunStopped, TransportError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        console.print("incomplete: rerun the same command to finish; answered calls are cached", highlight=False)
        raise typer.Exit(EXIT_INCOMPLETE)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: rerun the same command; finished calls are cached.")
        raise typer.Exit(130)


def _seed_summary(manifest: dict, out: str) -> None:
    c = manifest["counts"]
    console.print(f"wrote {c.get('records_out', 0)} seed records from {c.get('records_read', 0)} inputs to {out}; "
                  f"{c.get('rejects', 0)} rejects ({manifest.get('model_calls', 0)} model calls, "
                  f"{manifest.get('cached_calls', 0)} from cache)")
    for reason, n in sorted(manifest.get("rejects_by_reason", {}).items(), key=lambda kv: -kv[1])[:8]:
        console.print(f"  rejected: {n} x {reason}")
    unmatched = manifest.get("matching", {}).get("no_similar_group", 0)
    if unmatched:
        console.print(f"[yellow]note:[/yellow] {unmatched} of {manifest['matching']['pictures']} pictures were like "
                      f"no instruction group ({manifest.get('embedder')} found no word in common), so their "
                      "instructions were drawn at random (seeded); an embedder with word vectors matches better")


_LLM_FLAGS = dict(
    backend=typer.Option(None, help="openai, vllm or hf [openai with --base-url/--model, else the embedded default]."),
    model=typer.Option(None, help="Model name the server knows, or a local model path for --backend hf/vllm."),
    device=typer.Option("auto", help="Local backends: auto, cpu or cuda."),
    batch_size=typer.Option(8, min=1, help="Local backends: requests decoded together at most."),
    base_url=typer.Option(None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1."),
    api_key_env=typer.Option("OPENAI_API_KEY", help="Environment variable holding the API key."),
    concurrency=typer.Option(16, min=1, help="Requests in flight at most."),
    rpm=typer.Option(None, help="Requests per minute at most."),
    tpm=typer.Option(None, help="Tokens per minute at most."),
    timeout=typer.Option(120.0, help="Seconds per request before it is retried."),
    max_attempts=typer.Option(6, min=1, help="Tries per request."),
    temperature=typer.Option(0.7, help="Sampling temperature."),
    max_tokens=typer.Option(2048, help="Answer length limit."),
    seed=typer.Option(0, help="Seed for every random choice and for sampling."),
)


@seed_app.command("svit")
def seed_svit(
    input: Optional[str] = typer.Argument(None, help="Records with captions and boxes (evol JSONL, MMEvol, LLaVA)."),
    out: str = typer.Option(..., "--out", help="Seed records (JSONL) the evolver reads."),
    tasks: str = typer.Option("conversation,reasoning,description,referring", help="Comma-separated SVIT tasks."),
    annotations: Optional[str] = typer.Option(None, help="Scene graphs from ProVision stage files instead of records."),
    vg: Optional[str] = typer.Option(None, help="Scene graphs from a Visual Genome folder instead of records."),
    vg_ids: Optional[str] = typer.Option(None, help="Visual Genome image ids, comma separated."),
    image_root: Optional[str] = typer.Option(None, help="Scene-graph image paths are written relative to this."),
    input_format: str = typer.Option("auto", help="auto, llava, mmevol or evol."),
    limit: Optional[int] = typer.Option(None, help="Only the first N inputs."),
    cache: Optional[str] = typer.Option(None, help="Request cache [<out>.cache.sqlite]; a rerun repeats no call."),
    backend: Optional[str] = _LLM_FLAGS["backend"], device: str = _LLM_FLAGS["device"],
    batch_size: int = _LLM_FLAGS["batch_size"],
    model: Optional[str] = _LLM_FLAGS["model"], base_url: Optional[str] = _LLM_FLAGS["base_url"],
    api_key_env: str = _LLM_FLAGS["api_key_env"], concurrency: int = _LLM_FLAGS["concurrency"],
    rpm: Optional[float] = _LLM_FLAGS["rpm"], tpm: Optional[float] = _LLM_FLAGS["tpm"],
    timeout: float = _LLM_FLAGS["timeout"], max_attempts: int = _LLM_FLAGS["max_attempts"],
    temperature: float = _LLM_FLAGS["temperature"], max_tokens: int = _LLM_FLAGS["max_tokens"],
    seed: int = _LLM_FLAGS["seed"],
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """SVIT-style seeds: a text-only LLM writes conversations, reasoning, descriptions and referring QA from annotations."""
    from evol.seeding.commands import svit_command

    _setup_logging(None, verbose)
    opts = _llm_options(model, base_url, api_key_env, concurrency, rpm, tpm, timeout, max_attempts,
                        temperature, max_tokens, seed, backend=backend, device=device, batch_size=batch_size)
    inputs = _seed_inputs(input, annotations, vg, vg_ids, image_root, input_format)
    manifest = _run_seed_command(lambda: svit_command(
        inputs=inputs, tasks=[t.strip() for t in tasks.split(",") if t.strip()], opts=opts, out=out, cache=cache,
        limit=limit))
    _seed_summary(manifest, out)


@seed_app.command("instruct")
def seed_instruct(
    input: Optional[str] = typer.Argument(None, help="Records with captions and boxes (evol JSONL, MMEvol, LLaVA)."),
    out: str = typer.Option(..., "--out", help="Seed records (JSONL); the bank goes to <out>.bank.json."),
    bank: Optional[str] = typer.Option(None, help="Seed instructions, one per line [the shipped instruction bank]."),
    grow: int = typer.Option(200, help="New instructions to grow the bank by (0: use the seeds as they are)."),
    clusters: Optional[int] = typer.Option(None, help="Instruction groups to summarise [about sqrt(bank size)]."),
    per_image: int = typer.Option(2, help="Instructions answered per picture."),
    embedder: str = typer.Option("auto", help="auto, tfidf or spacy:<package> (auto: a spaCy package with vectors, else TF-IDF)."),
    annotations: Optional[str] = typer.Option(None, help="Scene graphs from ProVision stage files instead of records."),
    vg: Optional[str] = typer.Option(None, help="Scene graphs from a Visual Genome folder instead of records."),
    vg_ids: Optional[str] = typer.Option(None, help="Visual Genome image ids, comma separated."),
    image_root: Optional[str] = typer.Option(None, help="Scene-graph image paths are written relative to this."),
    input_format: str = typer.Option("auto", help="auto, llava, mmevol or evol."),
    limit: Optional[int] = typer.Option(None, help="Only the first N inputs."),
    cache: Optional[str] = typer.Option(None, help="Request cache [<out>.cache.sqlite]; a rerun repeats no call."),
    backend: Optional[str] = _LLM_FLAGS["backend"], device: str = _LLM_FLAGS["device"],
    batch_size: int = _LLM_FLAGS["batch_size"],
    model: Optional[str] = _LLM_FLAGS["model"], base_url: Optional[str] = _LLM_FLAGS["base_url"],
    api_key_env: str = _LLM_FLAGS["api_key_env"], concurrency: int = _LLM_FLAGS["concurrency"],
    rpm: Optional[float] = _LLM_FLAGS["rpm"], tpm: Optional[float] = _LLM_FLAGS["tpm"],
    timeout: float = _LLM_FLAGS["timeout"], max_attempts: int = _LLM_FLAGS["max_attempts"],
    temperature: float = _LLM_FLAGS["temperature"], max_tokens: int = _LLM_FLAGS["max_tokens"],
    seed: int = _LLM_FLAGS["seed"],
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """MM-Instruct-style seeds: grow and summarise an instruction bank, match it to pictures, answer from annotations."""
    from evol.seeding.commands import instruct_command

    _setup_logging(None, verbose)
    opts = _llm_options(model, base_url, api_key_env, concurrency, rpm, tpm, timeout, max_attempts,
                        temperature, max_tokens, seed, backend=backend, device=device, batch_size=batch_size)
    inputs = _seed_inputs(input, annotations, vg, vg_ids, image_root, input_format)
    manifest = _run_seed_command(lambda: instruct_command(
        inputs=inputs, bank=bank or str(shipped("instructions.txt")), grow=grow, clusters=clusters,
        per_image=per_image, embedder=embedder, opts=opts, out=out, cache=cache, limit=limit))
    b = manifest["bank"]
    console.print(f"instruction bank: {b['seeds']} seeds + {b['grown']} grown -> {b['groups']} groups "
                  f"({b['groups_summarised']} summarised) with {manifest['embedder']}, in {b['file']}")
    _seed_summary(manifest, out)


@app.command("select")
def select_mix(
    source: str = typer.Argument(..., help="A run folder, or a records file (e.g. seeds from evol seed svit)."),
    size: int = typer.Option(..., "--size", help="Items in the mix."),
    out: str = typer.Option(..., "--out", help="LLaVA JSON of the mix; the report goes to <out>.report.json."),
    balance: str = typer.Option("yes-no,letters", help="yes-no, letters, both (comma separated) or none."),
    min_score: Optional[float] = typer.Option(None, help="Judge-score floor [the run's own]."),
    include_seeds: Optional[bool] = typer.Option(None, "--include-seeds/--no-seeds", help="Seed items may enter [the run's own]."),
    seed: int = typer.Option(0, help="Seed for tie-breaking and the random baselines."),
    baselines: int = typer.Option(20, help="Random subsets of the same size to compare coverage with."),
) -> None:
    """Greedy training mix covering verb-noun pairs, objects, skills and task forms, with balanced answers."""
    from evol.seeding.commands import select_command

    _setup_logging(None, False)
    kinds = [] if balance.strip() == "none" else [b.strip() for b in balance.split(",") if b.strip()]
    try:
        rep = select_command(source=source, size=size, balance=kinds, min_score=min_score,
                             include_seeds=include_seeds, out=out, seed=seed, baselines=baselines)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        _fail(str(exc))
    console.print(f"selected {rep['selected']} of {rep['candidates']} candidates into {out} (report: {rep['report']})")
    if rep["shortfall"]:
        console.print(f"[yellow]short[/yellow]: {rep['shortfall']}")
    for kind, c in rep["coverage"].items():
        rnd = f", random {c['random']['mean']:g} (max {c['random']['max']})" if "random" in c else ""
        console.print(f"  {kind}: mix {c['mix']} of {c['full']}{rnd}")
    a = rep["answers"]["mix"]
    if a["yes_ratio"] is not None:
        console.print(f"  yes/no: {a['yes']} yes, {a['no']} no (yes ratio {a['yes_ratio']:.1%}; "
                      f"full set {rep['answers']['full']['yes_ratio']:.1%})")


@app.command("export")
def export_run(
    source: str = typer.Argument(..., help="A run folder, or a records file."),
    format: str = typer.Option("llava", "--format", help="llava, sharegpt, parquet or datasets."),
    out: str = typer.Option(..., "--out", help="Output file (a folder for datasets)."),
    min_score: Optional[float] = typer.Option(None, help="Judge-score floor [the run's own]."),
    include_seeds: Optional[bool] = typer.Option(None, "--include-seeds/--no-seeds", help="Also export seed items [the run's own]."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Read the export back and compare every entry."),
) -> None:
    """Export kept items as LLaVA JSON, ShareGPT JSONL, Parquet or a datasets folder."""
    from evol.seeding.commands import export_command

    _setup_logging(None, False)
    try:
        res = export_command(source=source, fmt=format, out=out, min_score=min_score,
                             include_seeds=include_seeds, verify=verify)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    checked = f"; read back and matched {res['verified']}" if "verified" in res else ""
    console.print(f"exported {res['entries']} items as {format} to {out}{checked}")


def main() -> None:
    """The `evol` console script: click's usage errors exit 1 like every other usage error."""
    from typer.exceptions import TyperException

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(EXIT_INTERRUPTED)
    except TyperException as exc:  # a malformed command line: typer's own message, then exit 1
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(EXIT_USAGE)
    except OSError as exc:  # a file-system problem no command named more precisely
        if "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        console.print(f"[red]error:[/red] {_os_problem(exc, 'file-system error:')} (-v shows where)",
                      highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
