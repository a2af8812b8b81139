"""The `evol` command line: parse flags and config, build the pieces, call them."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from evol import aio
from evol.config import ConfigError, EvolveConfig, build_config
from evol.rundir import RunDir, finalize, prepare_resume

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evolve multimodal instruction data.")
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


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


@app.command()
def evolve(
    input: Optional[str] = typer.Argument(None, help="Seed file: LLaVA JSON/JSONL, MMEvol records or evol JSONL."),
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (created; rerun to resume)."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file whose keys match these flags."),
    rounds: Optional[int] = typer.Option(None, help="Evolution rounds [3]."),
    backend: Optional[str] = typer.Option(None, help="Model backend [openai]."),
    model: Optional[str] = typer.Option(None, help="Model name the server knows."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1."),
    api_key_env: Optional[str] = typer.Option(None, help="Environment variable holding the API key [OPENAI_API_KEY]."),
    judge_model: Optional[str] = typer.Option(None, help="Judge with another model on the same server."),
    image_root: Optional[str] = typer.Option(None, help="Images are read under this folder only."),
    max_side: Optional[int] = typer.Option(None, help="Downscale images so the longer side fits [1344]; 0 sends originals."),
    image_detail: Optional[str] = typer.Option(None, help="OpenAI image detail: auto, low or high [auto]."),
    send_images: Optional[bool] = typer.Option(None, "--send-images/--no-images", help="Send pixels to the model [yes]."),
    judge_image: Optional[bool] = typer.Option(None, "--judge-image/--judge-no-image", help="The judge sees the image [yes]."),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight at most [64]."),
    rpm: Optional[float] = typer.Option(None, help="Requests per minute at most."),
    tpm: Optional[float] = typer.Option(None, help="Tokens per minute at most."),
    timeout: Optional[float] = typer.Option(None, help="Seconds per request before it is retried [120]."),
    max_attempts: Optional[int] = typer.Option(None, help="Tries per request [6]."),
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
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evolve a seed file for several rounds, judge every step, write a run folder."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "dry_run", "verbose")}
    try:
        cfg = build_config(flags, config)
    except ConfigError as exc:
        _fail(str(exc))
    if not Path(cfg.input).exists():
        _fail(f"input file not found: {cfg.input}")
    from evol.images import ImageStore

    images = ImageStore(Path(cfg.image_root) if cfg.image_root else None, cfg.max_side)
    if dry_run:
        _setup_logging(None, verbose)
        _dry_run(cfg, images)
        return
    if not cfg.model:
        _fail("no --model given (the model name your server serves)")
    run = RunDir(Path(cfg.out))
    run.create()
    _setup_logging(run, verbose)
    _check_same_run(run, cfg)
    try:
        aio.run(_evolve(cfg, run, images))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: rerun the same command to resume; finished calls are cached.")
        raise typer.Exit(130)


def _check_same_run(run: RunDir, cfg: EvolveConfig) -> None:
    """Resuming with other settings would mix two runs in one folder: refuse, say which."""
    old = run.read_manifest().get("config")
    if not old:
        return
    keys = ("input", "rounds", "model", "judge_model", "seed", "mix", "min_score", "temperature", "top_p", "send_images", "judge_image")
    changed = [k for k in keys if k in old and old[k] != cfg.public().get(k)]
    if changed:
        _fail(f"{run.root} holds a run made with other settings ({', '.join(changed)}); use another --out")


def _build_backends(cfg: EvolveConfig, run: RunDir, images):
    from evol.backends.limits import Limiter
    from evol.cache import Cache, CachedBackend

    if cfg.backend != "openai":
        _fail(f"unknown backend {cfg.backend!r} (available: openai)")
    from evol.backends.openai import OpenAIBackend

    limiter = Limiter(cfg.concurrency, rpm=cfg.rpm, tpm=cfg.tpm)
    cache = Cache(run.cache)

    def make(model: str):
        inner = OpenAIBackend(
            model, cfg.base_url, api_key_env=cfg.api_key_env, images=images, limiter=limiter,
            timeout=cfg.timeout, max_attempts=cfg.max_attempts, image_detail=cfg.image_detail,
        )
        return inner, CachedBackend(inner, cache, images)

    inner, backend = make(cfg.model)
    judge_inner, judge_backend = (inner, backend) if not cfg.judge_model or cfg.judge_model == cfg.model else make(cfg.judge_model)
    return cache, [inner, judge_inner], backend, judge_backend


async def _evolve(cfg: EvolveConfig, run: RunDir, images) -> None:
    from evol.io import count_records
    from evol.progress import show_progress
    from evol.prompts import prompt_versions
    from evol.runner import Runner

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    done = prepare_resume(run)
    cache, inners, backend, judge_backend = _build_backends(cfg, run, images)
    runner = Runner(cfg, run, backend, images, judge_backend=judge_backend, done_keys=done)
    total = count_records(cfg.input)
    if total is not None and cfg.limit is not None:
        total = min(total, cfg.limit)
    if done:
        console.print(f"resuming: {len(done)} records already finished in {run.root}")
    progress = asyncio.create_task(show_progress(runner.stats, console))
    try:
        stats = await runner.run(total=total)
    finally:
        progress.cancel()
        await asyncio.gather(progress, return_exceptions=True)
        for inner in {id(b): b for b in inners}.values():
            await inner.aclose()
        cache.close()
    manifest = run.read_manifest()
    invocations = manifest.get("invocations", []) + [{
        "started": started,
        "wall_s": round(time.monotonic() - t0, 3),
        "model_calls": stats.model_calls,
        "cached_calls": stats.cached_calls,
        "tokens_in": stats.tokens_in,
        "tokens_out": stats.tokens_out,
        "records_resumed": stats.skipped_done,
    }]
    result = finalize(run, cfg.public(), min_score=cfg.min_score, include_seeds=cfg.include_seeds, extra={
        "prompts": prompt_versions(),
        "invocations": invocations,
        "wall_s": round(sum(i["wall_s"] for i in invocations), 3),
    })
    c = result["counts"]
    console.print(
        f"done: {c['records_out']} records, {c['llava_entries']} kept items in {run.llava}; "
        f"{c['records_rejected']} records rejected, rejects in {run.rejects}; "
        f"{stats.model_calls} model calls, {stats.cached_calls} from cache"
    )


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
    result = finalize(run, manifest.get("config", {}), min_score=min_score, include_seeds=seeds)
    console.print(f"filtered: {result['counts']['llava_entries']} items kept with score >= {min_score:g} in {run.llava}")


@app.command()
def demo(
    out: str = typer.Option("runs/demo", "--out", help="Run folder for the demo."),
    rounds: int = typer.Option(2, help="Evolution rounds."),
) -> None:
    """Seeds from the shipped scene graphs, then evolution against the local test server.

    The test server answers every request in the requested JSON shape with placeholder
    text: it shows the whole pipeline (seeding, operators, rule checks, judge, outputs,
    resume) working offline, not what a real model writes.
    """
    from evol.testing.server import ServerConfig, start_in_thread

    seeds = Path(__file__).resolve().parent.parent / "seeds"
    graphs = seeds / "scene_graphs"
    if not graphs.exists():
        _fail(f"sample data not found at {graphs}: run from a source checkout (pip install -e .)")
    Path(out).mkdir(parents=True, exist_ok=True)
    seed_file = str(Path(out) / "seeds.jsonl")
    console.print(f"demo 1/2: programmatic seeds from the scene graphs in {graphs}")
    seed_provision(
        out=seed_file, annotations=str(graphs), masks=str(graphs / "masks"), depth=None, vg=None, vg_ids=None,
        image_root=str(seeds), per_generator=1, mc_ratio=0.5, choices=4, seed=0, images="2", generators=None,
        single=True, number_words=False, depth_gap=20,
    )
    server = start_in_thread(ServerConfig(latency=0.05, spread=0.3))
    console.print(
        f"demo 2/2: evolving them for {rounds} rounds against the local test server at {server.url}\n"
        "      (it answers in the right JSON shape with placeholder text; point --base-url at a real model for real data)"
    )
    try:
        evolve(
            input=seed_file, out=out, config=None, rounds=rounds, backend="openai", model="evol-test-server",
            base_url=server.url, api_key_env="EVOL_DEMO_NO_KEY", judge_model=None, image_root=str(seeds),
            max_side=None, image_detail=None, send_images=None, judge_image=None, concurrency=16, rpm=None, tpm=None,
            timeout=30.0, max_attempts=None, seed=None, mix=None, temperature=None, top_p=None, max_tokens=None,
            judge_temperature=None, min_score=None, include_seeds=None, input_format=None, limit=None,
            dry_run=False, verbose=False,
        )
    finally:
        server.stop()
    run = RunDir(Path(out))
    for f in (Path(seed_file), run.llava, run.records, run.rejects, run.manifest):
        console.print(f"  {f}")


seed_app = typer.Typer(no_args_is_help=True, help="Make seed records: from scene graphs (no LLM).")
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
) -> None:
    """Write factual Q&A seeds from scene graphs with the programmatic generators."""
    from evol.provision.base import Frequencies, GenContext
    from evol.provision.loaders import load_provision, load_visual_genome
    from evol.provision.seed import SeedReport, provision_records
    from evol.io import JsonlWriter

    if bool(annotations) == bool(vg):
        _fail("give exactly one of --annotations or --vg")
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
        freq = Frequencies()  # first pass, without masks: how common everything is
        for g in load(with_masks=False):
            if not isinstance(g, Exception):
                freq.add(g)
        ctx = GenContext(mc_ratio=mc_ratio, n_choices=choices, number_words=number_words, depth_gap=depth_gap, freq=freq)
        report = SeedReport()
        out_path = Path(out)
        tmp = out_path.with_name(out_path.name + ".tmp")
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


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
