"""The `evol seed svit` and `evol seed instruct` commands, minus flag parsing.

Each builds its input stream, the cached backend and the output files, runs the
generator on the event loop and returns the manifest it wrote. The CLI only parses flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evol import aio
from evol.prompts import load_prompt
from evol.seeding.llm import LLMOptions, SeedOutput, open_backend
from evol.seeding.sources import input_stream


def default_cache(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".cache.sqlite")


def _prompt_versions(names: list[str]) -> dict[str, int]:
    return {n: load_prompt(n).version for n in names}


def svit_command(*, inputs: dict[str, Any], tasks: list[str], opts: LLMOptions, out: str,
                 cache: str | None = None, limit: int | None = None) -> dict[str, Any]:
    from evol.seeding.svit import COMMON_PROMPT, REQUESTS_PROMPT, SvitGenerator, generate

    gen_check = SvitGenerator(None, opts, tasks)  # validates the task names before any I/O
    stream = input_stream(**inputs)
    output = SeedOutput(Path(out))

    async def main() -> int:
        async with open_backend(opts, Path(cache) if cache else default_cache(out)) as backend:
            gen = SvitGenerator(backend, opts, gen_check.tasks)
            n = await generate(stream, gen, output.write, output.reject, limit=limit)
            gen_check.stats = gen.stats
            return n

    try:
        read = aio.run(main())
    except BaseException:
        output.abort()
        raise
    s = gen_check.stats
    output.counts["records_read"] = read
    return output.finish({
        "command": "seed svit", "tasks": gen_check.tasks, "model": opts.model, "seed": opts.seed,
        "prompts": _prompt_versions([COMMON_PROMPT, REQUESTS_PROMPT, *(f"svit_{t}" for t in gen_check.tasks)]),
        "model_calls": s.calls, "cached_calls": s.cached, "failed_calls": s.failed,
        "tokens": {"in": s.tokens_in, "out": s.tokens_out},
    })


def default_clusters(n: int) -> int:
    """About the square root of the bank's size: 36 seeds + 200 grown -> 15 groups."""
    return max(2, round(n ** 0.5))


def instruct_command(*, inputs: dict[str, Any], bank: str, grow: int, clusters: int | None, per_image: int,
                     embedder: str, opts: LLMOptions, out: str, cache: str | None = None,
                     limit: int | None = None) -> dict[str, Any]:
    from evol.seeding.embed import make_embedder
    from evol.seeding.instruct import Answerer, Bank, BankBuilder, Matcher, answer_all, read_bank, write_bank

    if grow < 0 or per_image < 1 or (clusters is not None and clusters < 1):
        raise ValueError("--grow must be >= 0, --per-image and --clusters >= 1")
    seeds = read_bank(bank)
    emb = make_embedder(embedder)
    stream = input_stream(**inputs)
    output = SeedOutput(Path(out))
    bank_out = Path(out).with_name(Path(out).stem + ".bank.json")
    stats: dict[str, Any] = {}

    async def main() -> tuple[int, Bank]:
        async with open_backend(opts, Path(cache) if cache else default_cache(out)) as backend:
            builder = BankBuilder(backend, opts, emb, output.reject)
            grown = await builder.grow(seeds, grow) if grow else []
            texts = seeds + grown
            groups = builder.cluster(texts, clusters or default_clusters(len(texts)))
            the_bank = Bank(seeds, grown, await builder.summarise(texts, groups), emb.name)
            write_bank(the_bank, bank_out)
            matcher = Matcher(the_bank.groups, emb, opts.seed)
            answerer = Answerer(backend, opts, matcher, per_image)
            n = await answer_all(stream, answerer, output.write, output.reject, limit=limit)
            stats["matching"] = {"pictures": matcher.pictures, "no_similar_group": matcher.unmatched}
            stats["grow_calls"] = builder.grow_calls
            for s in (builder.stats, answerer.stats):
                for k, v in vars(s).items():
                    stats[k] = stats.get(k, 0) + v
            return n, the_bank

    try:
        read, the_bank = aio.run(main())
    except BaseException:
        output.abort()
        raise
    output.counts["records_read"] = read
    return output.finish({
        "command": "seed instruct", "model": opts.model, "seed": opts.seed, "embedder": emb.name,
        "bank": {"file": str(bank_out), "seeds": len(seeds), "grown": len(the_bank.grown),
                 "asked_to_grow": grow, "grow_calls": stats.get("grow_calls", 0), "groups": len(the_bank.groups),
                 "groups_summarised": sum(g.summarised for g in the_bank.groups)},
        "per_image": per_image,
        "matching": stats.get("matching", {}),
        "prompts": _prompt_versions(["instruct_grow", "instruct_summarise", "instruct_answer"]),
        "model_calls": stats.get("calls", 0), "cached_calls": stats.get("cached", 0),
        "failed_calls": stats.get("failed", 0),
        "tokens": {"in": stats.get("tokens_in", 0), "out": stats.get("tokens_out", 0)},
    })


def select_command(*, source: str, size: int, balance: list[str], min_score: float | None, include_seeds: bool | None,
                   out: str, seed: int = 0, baselines: int = 20, pairs: Any = None) -> dict[str, Any]:
    """Greedy mix of `size` items from a run folder or records file: LLaVA JSON + a report."""
    import json
    import os
    from collections import Counter

    from evol.io import LlavaWriter, llava_entry
    from evol.seeding.export import iter_input_records, run_thresholds
    from evol.seeding.select import candidate_items, gather_candidates, greedy_select, report

    if size < 1:
        raise ValueError("--size must be at least 1")
    floor, seeds = run_thresholds(source)
    floor = floor if min_score is None else min_score
    seeds = seeds if include_seeds is None else include_seeds
    excluded: Counter = Counter()
    bad: list[str] = []
    cands = gather_candidates(iter_input_records(source, bad), min_score=floor, include_seeds=seeds,
                              pairs=pairs, excluded=excluded)
    if bad:
        excluded["unreadable_records"] = len(bad)
    sel = greedy_select(cands, size, balance=balance, seed=seed)
    wanted: dict[int, set[str]] = {}
    for i in sel.chosen:
        wanted.setdefault(cands[i].record, set()).add(cands[i].item)
    out_path = Path(out)
    with LlavaWriter(out_path) as writer:  # second pass: the mix in input order
        for pos, rec in enumerate(iter_input_records(source)):
            ids = wanted.get(pos)
            if ids:
                for item in candidate_items(rec, floor, seeds):
                    if item.id in ids:
                        writer.write(llava_entry(rec, item))
                        ids.discard(item.id)
    rep = report(cands, sel, size=size, baselines=baselines, seed=seed, excluded=excluded, balance=balance)
    rep.update({"source": str(source), "min_score": floor, "include_seeds": seeds, "out": str(out_path),
                "entries_written": writer.count})
    rep_path = out_path.with_name(out_path.stem + ".report.json")
    tmp = rep_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rep, indent=2, ensure_ascii=False))
    os.replace(tmp, rep_path)
    rep["report"] = str(rep_path)
    return rep


def export_command(*, source: str, fmt: str, out: str, min_score: float | None = None,
                   include_seeds: bool | None = None, verify: bool = True) -> dict[str, Any]:
    """Export a run folder or records file; with `verify`, read it back and compare every entry."""
    from evol.seeding.export import canonical, export_items, iter_input_records, read_export, run_thresholds, write_export

    floor, seeds = run_thresholds(source)
    floor = floor if min_score is None else min_score
    seeds = seeds if include_seeds is None else include_seeds

    def pairs():
        for rec in iter_input_records(source):
            for item in export_items(rec, floor, seeds):
                yield rec, item

    result = write_export(pairs(), fmt, out)
    result.update({"format": fmt, "min_score": floor, "include_seeds": seeds})
    if verify:
        expected = (canonical(rec, item) for rec, item in pairs())
        got = read_export(out, fmt)
        n = 0
        for n, (want, have) in enumerate(zip(expected, got), 1):
            if want != have:
                raise ValueError(f"export check failed at entry {n} ({want['id']}): read back {have!r}")
        if n != result["entries"] or next(got, None) is not None:
            raise ValueError(f"export check failed: wrote {result['entries']} entries, read back a different number")
        result["verified"] = n
    return result
