"""`analyze`: read inputs as a stream, aggregate metrics, write the tables the report reads.

Files written to the output folder:

| file | what |
|---|---|
| `summary.csv` / `summary.json` | one row per (source, round): every scalar metric |
| `pairs.csv` | top verb-noun pairs per (source, round), with counts and shares |
| `sunburst.csv` | per (source, round): top verbs and nouns from the full counts, plus "(other)" wedges |
| `distributions.csv` | skills and steps per item, judge scores, question and answer lengths |
| `counts.csv` | operators, task forms, generators, skills, objects, parse statuses |
| `sources.json` / `sources.csv` | per input: records read, read errors (quoted), rejects |
| `examples.json` | a few records: seed items beside their evolved versions, verdicts and parsed pairs |
| `analysis.json` | settings (the verb-noun reading among them), inputs, timings and the summary, for `evol report` |
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from evol import __version__
from evol.analysis.metrics import (ExampleSampler, GroupStats, SourceStats, equal_size_diversity, item_views,
                                   set_parsed_pair)
from evol.io import read_jsonl_tolerant, read_records
from evol.rundir import RunDir

log = logging.getLogger(__name__)

OUTPUT_FILES = ("summary.csv", "summary.json", "pairs.csv", "sunburst.csv", "distributions.csv", "counts.csv",
                "sources.json", "sources.csv", "examples.json", "analysis.json")


class AnalysisError(ValueError):
    """An input that cannot be analysed at all (missing, or a folder that is not a run)."""


def resolve_inputs(inputs: list[str | Path], labels: list[str] | None = None) -> list[SourceStats]:
    """One `SourceStats` per input, labelled; run folders are read through records.jsonl."""
    if not inputs:
        raise AnalysisError("no input given: pass run folders or record files")
    if labels is not None and len(labels) != len(inputs):
        raise AnalysisError(f"{len(labels)} labels for {len(inputs)} inputs: give one label per input")
    sources, used = [], set()
    for i, raw in enumerate(inputs):
        path = Path(raw)
        if path.is_dir():
            run = RunDir(path)
            if not run.records.is_file():
                raise AnalysisError(f"{path} is a folder without records.jsonl: not a run folder")
            kind = "run"
        elif path.is_file():
            kind = "file"
        else:
            raise AnalysisError(f"input not found: {path}")
        label = labels[i] if labels is not None else (path.name if kind == "run" else path.stem)
        base, n = label, 2
        while label in used:
            label, n = f"{base}-{n}", n + 1
        used.add(label)
        sources.append(SourceStats(label=label, path=str(path), kind=kind))
    return sources


def analyze(
    inputs: list[str | Path],
    out: str | Path,
    labels: list[str] | None = None,
    *,
    backend: str = "spacy",
    n_process: int = 1,
    batch_size: int = 256,
    kept_only: bool = False,
    verbnoun: bool = True,
    examples: int = 6,
    parser: Any = None,
    reading: str | None = None,
) -> dict[str, Any]:
    """Analyse every input, write the tables to `out`, return what analysis.json holds.

    `kept_only` counts only the evolved items the judge kept (seed items always count).
    `verbnoun=False` skips parsing (the fastest way to get every other metric).
    `parser` reuses a `VerbNounParser` across calls.
    `reading` is the verb-noun reading: "paper" (MMEvol's definition) or "task" (questions
    whose main verb is "be" named by their task); None: the given parser's, else "paper".
    It is recorded in analysis.json ("settings" -> "verb_reading"; None when nothing was parsed).
    Each example item keeps the pair its question was counted with ("verb_noun").
    """
    import pandas as pd

    from evol.analysis.verbnoun import READINGS

    if reading is not None and reading not in READINGS:
        raise AnalysisError(f"unknown verb-noun reading {reading!r}: use {' or '.join(READINGS)}")
    sources = resolve_inputs(inputs, labels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if verbnoun and parser is None:
        from evol.analysis.verbnoun import VerbNounParser

        parser = VerbNounParser(backend, n_process=n_process, batch_size=batch_size, reading=reading or "paper")
    elif parser is not None and reading is not None and getattr(parser, "reading", reading) != reading:
        raise AnalysisError(f"the parser given reads verb-noun pairs as {parser.reading!r}, not {reading!r}")
    used_reading = None if parser is None else getattr(parser, "reading", reading)
    groups: dict[tuple[str, int], GroupStats] = {}
    all_examples: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    items = 0
    for src in sources:
        sampler = ExampleSampler(examples)
        stream = _walk(src, groups, sampler, kept_only)
        if parser is not None:
            for result, (group, view) in parser.parse_tagged(stream):
                group.add_parse(result.verb, result.noun, result.status)
                if view is not None:
                    set_parsed_pair(view, result.verb, result.noun, result.status)
                items += 1
        else:
            for _ in stream:
                items += 1
        all_examples[src.label] = sampler.examples()
        log.info("analysed %s: %d records, %d read errors", src.label, src.records, src.read_errors)
    wall = time.perf_counter() - t0

    ordered = sorted(groups.values(), key=lambda g: ([s.label for s in sources].index(g.source), g.round))
    summary = pd.DataFrame([{**g.summary(), **eq} for g, eq in zip(ordered, equal_size_diversity(ordered))])
    if not summary.empty:
        first = summary.groupby("source")[["distinct_pairs", "pair_entropy_bits"]].transform("first")
        summary["distinct_pairs_vs_round0"] = summary["distinct_pairs"] - first["distinct_pairs"]
        summary["pair_entropy_gain_bits"] = (summary["pair_entropy_bits"] - first["pair_entropy_bits"]).round(4)
    _table(summary, out / "summary.csv")
    _table(pd.DataFrame([r for g in ordered for r in g.pair_rows()],
                        columns=["source", "round", "verb", "noun", "count", "share"]), out / "pairs.csv")
    _table(pd.DataFrame([r for g in ordered for r in g.sunburst_rows()],
                        columns=["source", "round", "verb", "noun", "count"]), out / "sunburst.csv")
    _table(pd.DataFrame([r for g in ordered for r in g.distribution_rows()],
                        columns=["source", "round", "metric", "value", "count"]), out / "distributions.csv")
    _table(pd.DataFrame([r for g in ordered for r in g.count_rows()],
                        columns=["source", "round", "kind", "name", "count"]), out / "counts.csv")
    source_rows = [s.row() for s in sources]
    pd.DataFrame([{k: v for k, v in r.items() if k not in ("error_examples", "manifest", "rejects_by_stage")}
                  for r in source_rows]).to_csv(out / "sources.csv", index=False)
    summary_rows = _records(summary)
    _write_json(out / "summary.json", summary_rows)
    _write_json(out / "sources.json", source_rows)
    _write_json(out / "examples.json", all_examples)
    analysis = {
        "evol_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": [{"label": s.label, "path": s.path, "kind": s.kind} for s in sources],
        "settings": {"backend": None if parser is None else getattr(parser, "backend", backend),
                     "kept_only": kept_only, "n_process": n_process, "examples": examples,
                     "verb_reading": used_reading},
        "items": items,
        "wall_s": round(wall, 3),
        "items_per_s": round(items / wall, 1) if wall > 0 else None,
        "summary": summary_rows,
        "sources": source_rows,
        "files": list(OUTPUT_FILES),
    }
    _write_json(out / "analysis.json", analysis)
    return analysis


def _walk(src: SourceStats, groups: dict[tuple[str, int], GroupStats], sampler: ExampleSampler,
          kept_only: bool) -> Iterator[tuple[str, tuple[GroupStats, dict | None]]]:
    """Stream one input: update the per-round counters and yield (question, (group, view))
    to parse; `view` is the item's entry in a sampled example (None when not shown), which
    receives the parsed pair."""
    def group(rnd: int) -> GroupStats:
        key = (src.label, rnd)
        if key not in groups:
            groups[key] = GroupStats(src.label, rnd)
        return groups[key]

    path = Path(src.path)
    if src.kind == "run":
        run = RunDir(path)
        src.manifest = _manifest_digest(run.read_manifest())
        if run.rejects.is_file():
            for entry in read_jsonl_tolerant(run.rejects):
                src.rejects_by_stage[str(entry.get("stage", "?"))] += 1
        path = run.records
    for res in read_records(path):
        if res.record is None:
            src.add_error(f"{res.key}: {res.error.reason if res.error else 'unreadable'}")
            continue
        rec = res.record
        src.records += 1
        example = sampler.offer(rec)
        if not rec.items:
            src.records_without_items += 1
        else:
            g0 = group(0)
            g0.records += 1
            for item, view in zip(rec.items, item_views(example, None, len(rec.items))):
                g0.add_item(item, rec, None)
                yield item.question, (g0, view)
        if not rec.versions:
            src.records_without_versions += 1
        for k, version in enumerate(rec.versions):
            g = group(version.round)
            g.records += 1
            if version.status != "judged":
                g.failed_versions += 1
            for item, view in zip(version.items, item_views(example, k, len(version.items))):
                if kept_only and not item.passes():
                    continue
                g.add_item(item, rec, version.operator)
                yield item.question, (g, view)


def _manifest_digest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The few manifest facts worth showing beside a run's metrics."""
    config = manifest.get("config") or {}
    return {k: v for k, v in {
        "model": config.get("model"), "rounds": config.get("rounds"), "mix": config.get("mix"),
        "min_score": (manifest.get("thresholds") or {}).get("min_score"),
        "counts": manifest.get("counts"), "tokens": manifest.get("tokens"),
    }.items() if v is not None}


def _table(df: Any, path: Path) -> None:
    df.to_csv(path, index=False)


def _records(df: Any) -> list[dict[str, Any]]:
    """DataFrame rows as plain JSON-safe dicts (NaN -> None)."""
    if df.empty:
        return []
    return json.loads(df.to_json(orient="records"))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)
