"""The public Python API: what the CLI, the demo, the benches and the tests call.

Every function takes the same settings as its command, by the same names (the fields of
its model in `evol.config`, listed in each docstring), and returns what it made instead of
printing it only. Problems to fix before anything runs raise `evol.EvolError`.

References: MMEvol (arXiv 2409.05840), ProVision (2412.07012), SVIT (2307.04087),
MM-Instruct (2406.19736), WizardLM Evol-Instruct (2304.12244).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from evol.config import (AnalyzeConfig, DemoConfig, EvolveConfig, ExportConfig, FilterConfig, ReportConfig,
                         RunOptions, SelectConfig, StatusConfig, build_config, make_config)
from evol.console import say
from evol.errors import EvolError
from evol.session import EvolveResult, os_problem, run_evolve

__all__ = ["evolve", "analyze", "report", "select", "export", "status", "filter_run", "demo", "load_dataset",
           "EvolveResult"]

Source = "str | os.PathLike | Iterable[dict] | datasets.Dataset"


def evolve(input: Any = None, out: str | os.PathLike | None = None, *, config: str | os.PathLike | None = None,
           progress: bool = True, **settings: Any) -> EvolveResult:
    """Evolve seed instructions for several rounds, judge every step, and write a run folder.

    Each round rewrites every record with one operator (fine-grained perceptual, cognitive
    reasoning or interaction), has the judge compare the rewrite with its parent, and goes
    on from the newest version that improved. Calling it again with the same arguments
    resumes the run: finished records are kept and answered calls come from the cache.

    Args:
        input: the seeds: a path (LLaVA JSON/JSONL, MMEvol records, evol JSONL), or an
            iterable of records or dicts (a `datasets.Dataset` too), which is written to
            OUT/input.jsonl first (decoded PIL images to OUT/input_images/).
        out: the run folder (created).
        config: a YAML file whose keys are the settings below; arguments win over it.
        progress: show a progress bar on a terminal.
        **settings: any setting of `evol.config.EvolveConfig` (listed below), and
            dry_run, retry_failed, verbose.

    Returns:
        EvolveResult: run_dir, status ("complete", "incomplete" or "dry run"), counts,
        manifest, pending; `.llava` is the kept items' LLaVA file, `.to_dataset()` loads
        them as a `datasets.Dataset`.

    Example:
        >>> import evol
        >>> result = evol.evolve("seeds.jsonl", "runs/a", base_url="http://localhost:8000/v1",
        ...                      model="Qwen/Qwen2.5-VL-7B-Instruct", rounds=3)
        >>> result.complete, result.counts["llava_entries"]

    References:
        MMEvol: Empowering Multimodal LLMs with Evol-Instruct (arXiv 2409.05840);
        WizardLM: Evol-Instruct (arXiv 2304.12244).
    """
    if input is not None and not is_path(input):
        if out is None:
            raise EvolError("an in-memory input needs out= (the run folder it is written into)")
        path, image_root = write_rows(input, Path(out) / "input.jsonl", settings.get("image_root"))
        input, settings = path, {**settings, **({"image_root": image_root} if image_root else {})}
    flags = {k: v for k, v in settings.items()}
    flags.update(input=str(input) if input is not None else None, out=str(out) if out is not None else None)
    cfg, opts = build_config(flags, str(config) if config else None)
    if opts.ray and not opts.dry_run:  # shards on Ray, each run by run_evolve: evol.distributed.evolve
        from evol.distributed import evolve_on_ray

        return evolve_on_ray(cfg, opts, progress=progress)
    return run_evolve(cfg, opts, progress=progress)


def is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def write_rows(rows: Iterable[Any], path: Path, image_root: str | None = None) -> tuple[str, str | None]:
    """Rows (dicts, `Record`s, a `datasets.Dataset`) as the JSONL file `path`, streamed;
    decoded images go to `input_images/` beside it. The file is replaced only when its
    content changed, so a resumed run sees the same input. Returns the file and, when
    images were saved, the image root they lie under."""
    out = path.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvolError(os_problem(exc, f"cannot write the input into {out}:")) from None
    saved = False
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        for i, row in enumerate(rows):
            data, had_images = _plain(row, out, i)
            saved = saved or had_images
            line = (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            digest.update(line)
    if saved and image_root:
        tmp.unlink()
        raise EvolError(f"the rows hold decoded images, which are saved in {out / 'input_images'}: "
                        "leave image_root unset")
    from evol.io import file_sha256

    if path.exists() and file_sha256(path) == digest.hexdigest():
        tmp.unlink()
    else:
        os.replace(tmp, path)
    return str(path), str(out) if saved else None


def _plain(row: Any, out: Path, index: int) -> tuple[dict, bool]:
    """A row as a JSON-ready dict; PIL images are saved as PNG files and named by path."""
    if hasattr(row, "model_dump"):
        row = row.model_dump(mode="json", exclude_none=True)
    if not isinstance(row, Mapping):
        raise EvolError(f"input row {index} is a {type(row).__name__}, not a record or a dict")
    data, saved = {}, False
    for key, value in row.items():
        images = value if isinstance(value, list) else [value]
        if images and all(hasattr(v, "save") and hasattr(v, "size") for v in images):
            folder = out / "input_images"
            folder.mkdir(exist_ok=True)
            names = []
            for k, img in enumerate(images):
                name = f"input_images/{index}_{k}.png"
                if not (out / name).exists():
                    img.save(out / name)
                names.append(name)
            value, saved = (names if isinstance(value, list) else names[0]), True
        data[key] = value
    try:
        json.dumps(data)
    except TypeError as exc:
        raise EvolError(f"input row {index} cannot be written as JSON: {exc}") from None
    return data, saved


def analyze(inputs: Any, out: str | os.PathLike, **settings: Any) -> dict[str, Any]:
    """Diversity and quality tables per input and per round, for `report`.

    Counts verb-noun pairs (the verb closest to the root and its direct-object noun, as
    MMEvol measures instruction diversity; `verb_reading="task"` names questions whose
    main verb is "be" by their task instead, which the paper does not), skills, reasoning
    steps, judge scores and the object long tail, per input and per evolution round.

    Args:
        inputs: run folders or record files, or records in memory (an iterable of dicts,
            a `datasets.Dataset`); one or a list.
        out: folder for the CSV and JSON tables (created).
        **settings: any setting of `evol.config.AnalyzeConfig` (listed below).

    Returns:
        dict: "summary" (a row per input and round), "sources", "items", "wall_s" ...

    Example:
        >>> evol.analyze(["seeds.jsonl", "runs/a"], "runs/a/analysis", labels=["seeds", "evolved"])

    References:
        MMEvol (arXiv 2409.05840), section on verb-noun diversity.
    """
    from evol.analysis.pipeline import AnalysisError, analyze as run_analysis

    if is_path(inputs) or not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    paths = [str(p) if is_path(p) else write_rows(p, Path(out) / "inputs" / f"input{i}.jsonl")[0]
             for i, p in enumerate(inputs)]
    cfg = make_config(AnalyzeConfig, {**settings, "inputs": paths, "out": str(out)})
    ray = nullcontext(None)
    if cfg.ray and cfg.parser != "none":  # parsing on Ray actors: evol.distributed.RayParser
        from evol.distributed import ray_parser

        ray = ray_parser(cfg.ray, cfg.parser, cfg.processes, reading=cfg.verb_reading)
    try:
        with ray as parser:
            return run_analysis(cfg.inputs, cfg.out, cfg.labels or None, backend="spacy" if cfg.parser == "none"
                                else cfg.parser, verbnoun=cfg.parser != "none", n_process=cfg.processes,
                                kept_only=cfg.kept_only, examples=cfg.examples, parser=parser,
                                reading=cfg.verb_reading)
    except (AnalysisError, FileNotFoundError, RuntimeError) as exc:  # RuntimeError: benepar or its model missing
        raise EvolError(str(exc)) from None


def report(analysis_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """One self-contained HTML page (charts embedded, works offline) from an `analyze` folder.

    Returns:
        Path: the page (default ANALYSIS_DIR/report.html).

    Example:
        >>> evol.report("runs/a/analysis")
    """
    from evol.analysis.report import write_report

    cfg = make_config(ReportConfig, {"analysis_dir": str(analysis_dir), "out": str(out) if out else None})
    try:
        return Path(write_report(cfg.analysis_dir, cfg.out))
    except FileNotFoundError as exc:
        raise EvolError(str(exc)) from None


def select(source: str | os.PathLike, size: int, out: str | os.PathLike, **settings: Any) -> dict[str, Any]:
    """A training mix of `size` items that covers verb-noun pairs, objects, skills and task
    forms greedily, with balanced yes/no and option letters.

    Args:
        source: a run folder or a records file.
        size: items in the mix.
        out: LLaVA JSON of the mix; the report goes to OUT.report.json.
        **settings: any setting of `evol.config.SelectConfig` (listed below).

    Returns:
        dict: the report (selected, candidates, coverage against random subsets, answers).

    Example:
        >>> evol.select("runs/a", 1000, "mix.json")
    """
    from evol.seeding.commands import select_command

    cfg = make_config(SelectConfig, {**settings, "source": str(source), "size": size, "out": str(out)})
    try:
        return select_command(source=cfg.source, size=cfg.size, balance=cfg.balance, min_score=cfg.min_score,
                              include_seeds=cfg.include_seeds, out=cfg.out, seed=cfg.seed, baselines=cfg.baselines)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise EvolError(str(exc)) from None


def export(source: str | os.PathLike, out: str | os.PathLike, format: str = "llava", **settings: Any) -> dict[str, Any]:
    """Export kept items as LLaVA JSON, ShareGPT JSONL, Parquet or a Hugging Face datasets folder,
    and (by default) read the export back and compare every entry.

    Returns:
        dict: entries written, format, thresholds, and "verified" (entries read back and matched).

    Example:
        >>> evol.export("runs/a", "train.parquet", format="parquet")
    """
    from evol.seeding.commands import export_command

    cfg = make_config(ExportConfig, {**settings, "source": str(source), "out": str(out), "format": format})
    try:
        return export_command(source=cfg.source, fmt=cfg.format, out=cfg.out, min_score=cfg.min_score,
                              include_seeds=cfg.include_seeds, verify=cfg.verify)
    except (ValueError, FileNotFoundError) as exc:
        raise EvolError(str(exc)) from None


def load_dataset(source: str | os.PathLike, *, min_score: float | None = None, include_seeds: bool | None = None):
    """The items of a run folder or a records file (seeds from `evol.seed`) as a
    `datasets.Dataset`: one row per item with its Q&A&S fields, LLaVA `conversations`,
    images, score and source (the Parquet export, read back).

    Example:
        >>> ds = evol.load_dataset("runs/a"); ds[0]["conversations"]
    """
    try:
        import datasets
    except ImportError:
        raise EvolError("loading as a Dataset needs the datasets package: pip install datasets") from None
    with tempfile.TemporaryDirectory(prefix="evol-dataset-") as tmp:
        path = Path(tmp) / "items.parquet"
        export(source, path, format="parquet", min_score=min_score, include_seeds=include_seeds, verify=False)
        ds = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    return ds


def status(run_folder: str | os.PathLike) -> dict[str, Any]:
    """Where a run stands: records done, pending, failed and rejected, with the top reasons.

    Example:
        >>> evol.status("runs/a")["pending"]
    """
    from evol.rundir import RunDir, run_status

    cfg = make_config(StatusConfig, {"run_folder": str(run_folder)})
    run = RunDir(Path(cfg.run_folder))
    if not run.manifest.exists() and not run.records.exists():
        raise EvolError(f"{run_folder} is not a run folder (no manifest.json or records.jsonl)")
    return run_status(run)


def filter_run(run_folder: str | os.PathLike, **settings: Any) -> dict[str, Any]:
    """Apply keep thresholds again to a finished run, apart from scoring: rewrites llava.json
    and the manifest, calls nothing.

    Returns:
        dict: the new manifest.

    Example:
        >>> evol.filter_run("runs/a", min_score=7)["counts"]["llava_entries"]
    """
    from evol.rundir import RunDir, RunLocked, finalize

    cfg = make_config(FilterConfig, {**settings, "run_folder": str(run_folder)})
    run = RunDir(Path(cfg.run_folder))
    if not run.records.exists():
        raise EvolError(f"{run_folder} has no records.jsonl: not a run folder")
    manifest = run.read_manifest()
    seeds = cfg.include_seeds if cfg.include_seeds is not None else \
        manifest.get("thresholds", {}).get("include_seeds", False)
    try:
        with run.lock():
            return finalize(run, manifest.get("config", {}), min_score=cfg.min_score, include_seeds=seeds)
    except RunLocked as exc:
        raise EvolError(str(exc)) from None
    except OSError as exc:
        raise EvolError(os_problem(exc, "cannot rewrite the run folder:")) from None


def demo(**settings: Any) -> dict[str, Any]:
    """The whole product on this machine, offline, on the shipped sample data: programmatic
    seeds from the shipped scene graphs, evolution, elimination, analysis and report.

    By default the seeds are evolved by the embedded SmolLM2-135M-Instruct (text-only: for
    trying evol out, not for real data); `backend="openai"` runs them against the built-in
    test server (placeholder text in the right JSON shape) in seconds.

    Returns:
        dict: "seeds", "run" (an EvolveResult), "report" (a Path or None), "wall_s".

    Example:
        >>> evol.demo(backend="openai", out="runs/demo")["run"].complete
    """
    from evol import seed
    from evol.samples import shipped

    cfg = make_config(DemoConfig, settings)
    if cfg.backend == "vllm" and not cfg.model:
        raise EvolError("--backend vllm needs --model: a local model folder")
    t0, out = time.monotonic(), Path(cfg.out)
    graphs = shipped("scene_graphs")
    if not graphs.exists():
        raise EvolError(f"sample data not found at {graphs}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvolError(os_problem(exc, f"cannot use {out} as the demo folder:")) from None
    all_seeds, seed_file = out / "seeds_all.jsonl", out / "seeds.jsonl"
    say(f"demo 1/3: programmatic seeds from the scene graphs in {graphs}")
    seed.shipped_samples(all_seeds)
    picked = _spread_lines(all_seeds, seed_file, cfg.records)
    say(f"      {picked} of them, spread over the photos, in {seed_file}")
    server, remote = None, {}
    if cfg.backend == "openai":
        from evol.testing.server import ServerConfig, start_in_thread

        server = start_in_thread(ServerConfig(latency=0.05, spread=0.3))
        remote = dict(model="evol-test-server", base_url=server.url)
        say(f"demo 2/3: evolving them for {cfg.rounds} round(s) against the local test server at {server.url}\n"
            "      (placeholder text in the right JSON shape; point --base-url at a real model for real data)")
    else:
        remote = dict(model=cfg.model, device=cfg.device)
        say(f"demo 2/3: evolving them for {cfg.rounds} round(s) with a local model, offline")
    try:
        run = evolve(seed_file, out, rounds=cfg.rounds, backend=cfg.backend, api_key_env="EVOL_DEMO_NO_KEY",
                     image_root=str(shipped()), concurrency=16, timeout=30.0, max_tokens=cfg.max_tokens, **remote)
    finally:
        if server is not None:
            server.stop()
    analysis = out / "analysis"
    say(f"demo 3/3: analysis and report in {analysis}")
    page = _demo_report(out, analysis)
    wall = time.monotonic() - t0
    say(f"demo finished in {wall:.0f} s; everything is in {out}:")
    for f in (seed_file, run.records, run.llava, run.rejects, run.run_dir / "manifest.json",
              run.run_dir / "cache.sqlite", page):
        if f is not None:
            say(f"  {f}")
    return {"seeds": seed_file, "run": run, "report": page, "wall_s": wall}


def _spread_lines(src: Path, dst: Path, n: int) -> int:
    """Copy n lines of src, evenly spaced, to dst (two passes, nothing held but the count)."""
    with open(src, encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    step = max(1.0, total / n)
    wanted = {int(k * step) for k in range(min(n, total))}
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        for k, line in enumerate(line for line in f if line.strip()):
            if k in wanted:
                g.write(line)
    return len(wanted)


def _demo_report(out: Path, analysis: Path) -> Path | None:
    """Analysis and HTML report; the demo's run is written either way, so a failure here
    is said, not raised."""
    import logging

    from evol.console import note

    try:
        analyze([out], analysis)
        return report(analysis)
    except Exception as exc:  # noqa: BLE001 - the run itself is done and written; say why the report is missing
        logging.getLogger("evol").exception("analysis failed")
        note(f"{type(exc).__name__}: {exc}", "analysis skipped")
        return None


def settings_help(model: type) -> str:
    """The settings of a config model as docstring lines: name (default): help."""
    lines = []
    for name, f in model.model_fields.items():
        cli = (f.json_schema_extra or {}).get("cli", {})
        if cli.get("argument") or name in ("out",):
            continue
        default = cli.get("show", None)
        if default is None:
            default = f.get_default(call_default_factory=True)
        lines.append(f"        {name} ({default!s}): {f.description}" if default != "" else
                     f"        {name}: {f.description}")
    return "\n".join(lines)


for _fn, _model in ((evolve, EvolveConfig), (analyze, AnalyzeConfig), (select, SelectConfig),
                    (export, ExportConfig), (filter_run, FilterConfig), (demo, DemoConfig)):
    _fn.__doc__ = (_fn.__doc__ or "") + f"\n    Settings ({_model.__name__}):\n" + settings_help(_model) + "\n"
evolve.__doc__ += settings_help(RunOptions) + "\n"
