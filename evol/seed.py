"""Seed records for evolution: from scene graphs with no LLM, or written by an LLM.

`provision` writes factual Q&A with ProVision's programmatic generators; `svit` and
`instruct` have a text-only LLM write seeds from each picture's annotations (SVIT's four
tasks; MM-Instruct's instruction bank matched to pictures). Each writes a JSONL file of
records `evol.evolve` reads directly.

References: ProVision (arXiv 2412.07012), SVIT (arXiv 2307.04087), MM-Instruct (arXiv 2406.19736).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evol.config import InstructConfig, ProvisionConfig, SeedSource, SvitConfig, make_config
from evol.errors import EvolError, NoRecords, RunIncomplete

__all__ = ["provision", "svit", "instruct", "shipped_samples", "SeedResult"]


@dataclass
class SeedResult:
    """What a seed function wrote: the records file, how many records, the rejects file, and
    the details (the generator report for `provision`, the manifest for `svit`/`instruct`)."""

    out: Path
    records: int
    rejects: Path | None
    details: Any = field(default=None, repr=False)

    def to_dataset(self, **kwargs: Any):
        """The seed items as a `datasets.Dataset` (see `evol.load_dataset`)."""
        from evol.api import load_dataset

        return load_dataset(self.out, **kwargs)


def provision(out: str | os.PathLike, **settings: Any) -> SeedResult:
    """Factual Q&A seeds from scene graphs with the programmatic generators, no LLM.

    Reads ProVision's per-stage annotation files (`annotations=DIR`, with `seg_masks/` and
    `depth_masks/` beside them) or a Visual Genome folder (`vg=DIR`), and writes one record
    per QA: image(s), a caption written from the graph, boxes, and the QA. The same seed
    gives the same file for any number of workers. Images that cannot be used are listed
    in OUT.rejects.jsonl.

    Args:
        out: the records file (JSONL).
        **settings: any setting of `evol.config.ProvisionConfig` (listed below).

    Returns:
        SeedResult: out, records, rejects, details (the generators' report).

    Raises:
        NoRecords: nothing could be asked of the input (the message gives the top reasons).

    Example:
        >>> evol.seed.provision("seeds.jsonl", annotations="sample/", image_root="sample/images")

    References:
        ProVision: Programmatically Scaling Vision-centric Instruction Data (arXiv 2412.07012).
    """
    from evol.provision.seed import write_seeds

    cfg = make_config(ProvisionConfig, {**settings, "out": str(out)})
    if bool(cfg.annotations) == bool(cfg.vg):
        raise EvolError("give exactly one of --annotations or --vg")
    pool = nullcontext(None)
    if cfg.ray:  # Ray actors instead of local processes: evol.distributed.ActorPool
        from evol.distributed import ray_provision_pool

        pool = ray_provision_pool(cfg.ray, cfg.workers)
    try:
        with pool as executor:
            report = write_seeds(cfg.out, **cfg.model_dump(exclude={"out", "images", "ray"}), group_sizes=cfg.images,
                                 executor=executor)
    except (ValueError, FileNotFoundError) as exc:
        raise EvolError(str(exc)) from None
    if report.records == 0:
        reasons = "; ".join(f"{n} x {reason}" for reason, n in report.top_reasons(5)) or "no image was read"
        raise NoRecords(f"wrote 0 seed records ({report.images} usable images, {len(report.skipped)} skipped): "
                        f"{reasons} (all reasons in {report.rejects})")
    return SeedResult(Path(cfg.out), report.records, report.rejects, report)


def shipped_samples(out: str | os.PathLike) -> SeedResult:
    """Programmatic seeds from the scene graphs shipped with evol, one QA per generator, image
    pairs too: what `evol demo` starts from, and what the benches feed."""
    from evol.samples import shipped

    graphs = shipped("scene_graphs")
    return provision(out, annotations=str(graphs), image_root=str(shipped()), per_generator=1, images=[2])


def svit(out: str | os.PathLike, input: Any = None, **settings: Any) -> SeedResult:
    """SVIT-style seeds: a text-only LLM writes conversations, complex reasoning, detailed
    descriptions and referring QA from each picture's caption and boxes (or scene graph).

    Args:
        out: the records file (JSONL); its manifest goes to OUT.manifest.json.
        input: records with captions and boxes: a path, an iterable of dicts or records, or a
            `datasets.Dataset`; or give annotations=DIR / vg=DIR instead.
        **settings: any setting of `evol.config.SvitConfig` (listed below).

    Returns:
        SeedResult: out, records, rejects, details (the manifest).

    Raises:
        RunIncomplete: the server, network or disk failed; run it again to finish.

    Example:
        >>> evol.seed.svit("seeds_svit.jsonl", "records.jsonl", base_url=URL, model="M")

    References:
        SVIT: Scaling up Visual Instruction Tuning (arXiv 2307.04087).
    """
    from evol.seeding.commands import svit_command

    cfg = make_config(SvitConfig, _source(input, out, settings))
    opts, inputs = _llm_setup(cfg)
    manifest = _run(lambda: svit_command(inputs=inputs, tasks=cfg.tasks, opts=opts, out=cfg.out, cache=cfg.cache,
                                         limit=cfg.limit))
    return _result(cfg.out, manifest)


def instruct(out: str | os.PathLike, input: Any = None, **settings: Any) -> SeedResult:
    """MM-Instruct-style seeds: grow and summarise an instruction bank, match its groups to
    each picture, and have a text-only LLM answer them from the picture's annotations.

    Args:
        out: the records file (JSONL); the bank goes to OUT.bank.json.
        input: records with captions and boxes: a path, an iterable of dicts or records, or a
            `datasets.Dataset`; or give annotations=DIR / vg=DIR instead.
        **settings: any setting of `evol.config.InstructConfig` (listed below).

    Returns:
        SeedResult: out, records, rejects, details (the manifest, with the bank's counts).

    Raises:
        RunIncomplete: the server, network or disk failed; run it again to finish.

    Example:
        >>> evol.seed.instruct("seeds_mmi.jsonl", "records.jsonl", grow=200, base_url=URL, model="M")

    References:
        MM-Instruct: Generated Visual Instructions for Large Multimodal Model Alignment (arXiv 2406.19736).
    """
    from evol.samples import shipped
    from evol.seeding.commands import instruct_command

    cfg = make_config(InstructConfig, _source(input, out, settings))
    opts, inputs = _llm_setup(cfg)
    manifest = _run(lambda: instruct_command(
        inputs=inputs, bank=cfg.bank or str(shipped("instructions.txt")), grow=cfg.grow, clusters=cfg.clusters,
        per_image=cfg.per_image, embedder=cfg.embedder, opts=opts, out=cfg.out, cache=cfg.cache, limit=cfg.limit))
    return _result(cfg.out, manifest)


def _source(input: Any, out: str | os.PathLike, settings: dict[str, Any]) -> dict[str, Any]:
    """The input as a path: records given in memory (an iterable, a `datasets.Dataset`) are
    written to OUT.input.jsonl first."""
    from evol.api import is_path, write_rows

    if input is None or is_path(input):
        return {**settings, "out": str(out), "input": str(input) if input is not None else None}
    target = Path(out).with_name(Path(out).stem + ".input.jsonl")
    path, root = write_rows(input, target, settings.get("image_root"))
    return {**settings, "out": str(out), "input": path, **({"image_root": root} if root else {})}


def _llm_setup(cfg: SeedSource):
    """The seed commands reach their model the way `evolve` does: a backend, or the embedded default."""
    from evol.backends import BackendChoiceError, settle_backend
    from evol.console import note
    from evol.seeding.llm import LLMOptions

    try:
        choice = settle_backend(cfg.backend, cfg.model, cfg.base_url)
    except BackendChoiceError as exc:
        raise EvolError(str(exc)) from None
    for text in choice.notes:
        note(text)
    opts = LLMOptions(model=choice.model, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                      concurrency=cfg.concurrency, rpm=cfg.rpm, tpm=cfg.tpm, timeout=cfg.timeout,
                      max_attempts=cfg.max_attempts, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                      seed=cfg.seed, backend=choice.kind, model_path=choice.path, device=cfg.device,
                      batch_size=cfg.batch_size)
    inputs = dict(path=cfg.input, annotations=cfg.annotations, vg=cfg.vg, image_root=cfg.image_root,
                  input_format=cfg.input_format, vg_ids=cfg.vg_ids)
    return opts, inputs


def _run(command):
    from evol.backends.base import RunStopped, TransportError

    try:
        return command()
    except (ValueError, FileNotFoundError) as exc:
        raise EvolError(str(exc)) from None
    except (RunStopped, TransportError) as exc:
        raise RunIncomplete(str(exc)) from None


def _result(out: str, manifest: dict[str, Any]) -> SeedResult:
    path = Path(out)
    return SeedResult(path, manifest["counts"].get("records_out", 0), path.with_name(path.stem + ".rejects.jsonl"),
                      manifest)


def _document() -> None:
    from evol.api import settings_help

    for fn, model in ((provision, ProvisionConfig), (svit, SvitConfig), (instruct, InstructConfig)):
        fn.__doc__ = (fn.__doc__ or "") + f"\n    Settings ({model.__name__}):\n" + settings_help(model) + "\n"


_document()
