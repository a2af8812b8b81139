"""What `evol.seed.svit`, `evol.seed.instruct`, `evol.select` and `evol.export` run.

The LLM seed commands build their input stream, the cached backend and the output files,
run the generator on the event loop and return the manifest they wrote.
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


def _run_seed(opts: LLMOptions, out: str, cache: str | None, body) -> tuple[Any, SeedOutput]:
    """What both LLM seed commands do around their generator: open the cached backend, run
    `body(backend, output)` on the event loop, and leave no half-written file when it fails."""
    output = SeedOutput(Path(out))

    async def main() -> Any:
        async with open_backend(opts, Path(cache) if cache else default_cache(out)) as backend:
            return await body(backend, output)

    try:
        return aio.run(main()), output
    except BaseException:
        output.abort()
        raise


def svit_command(*, inputs: dict[str, Any], tasks: list[str], opts: LLMOptions, out: str,
                 cache: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """SVIT seeds (arXiv 2307.04087): records or scene graphs in, seed records out."""
    from evol.seeding.svit import COMMON_PROMPT, REQUESTS_PROMPT, SvitGenerator, generate

    checked = SvitGenerator(None, opts, tasks)  # validates the task names before any I/O
    stream = input_stream(**inputs)

    async def body(backend, output: SeedOutput):
        gen = SvitGenerator(backend, opts, checked.tasks)
        return await generate(stream, gen, output.write, output.reject, limit=limit), gen.stats

    (read, stats), output = _run_seed(opts, out, cache, body)
    output.counts["records_read"] = read
    return output.finish({
        "command": "seed svit", "tasks": checked.tasks, "model": opts.model, "seed": opts.seed,
        "prompts": _prompt_versions([COMMON_PROMPT, REQUESTS_PROMPT, *(f"svit_{t}" for t in checked.tasks)]),
        **stats.seed_counts(),
    })


def default_clusters(n: int) -> int:
    """About the square root of the bank's size: 36 seeds + 200 grown -> 15 groups."""
    return max(2, round(n ** 0.5))


def instruct_command(*, inputs: dict[str, Any], bank: str, grow: int, clusters: int | None, per_image: int,
                     embedder: str, opts: LLMOptions, out: str, cache: str | None = None,
                     limit: int | None = None) -> dict[str, Any]:
    """MM-Instruct seeds (arXiv 2406.19736): grow and summarise a bank, match it to pictures, answer."""
    from evol.seeding.embed import make_embedder
    from evol.seeding.instruct import Answerer, Bank, BankBuilder, Matcher, answer_all, read_bank, write_bank
    from evol.stats import CallStats

    if grow < 0 or per_image < 1 or (clusters is not None and clusters < 1):
        raise ValueError("--grow must be >= 0, --per-image and --clusters >= 1")
    seeds = read_bank(bank)
    emb = make_embedder(embedder)
    stream = input_stream(**inputs)
    bank_out = Path(out).with_name(Path(out).stem + ".bank.json")

    async def body(backend, output: SeedOutput):
        builder = BankBuilder(backend, opts, emb, output.reject)
        grown = await builder.grow(seeds, grow) if grow else []
        texts = seeds + grown
        groups = builder.cluster(texts, clusters or default_clusters(len(texts)))
        the_bank = Bank(seeds, grown, await builder.summarise(texts, groups), emb.name)
        write_bank(the_bank, bank_out)
        matcher = Matcher(the_bank.groups, emb, opts.seed)
        answerer = Answerer(backend, opts, matcher, per_image)
        n = await answer_all(stream, answerer, output.write, output.reject, limit=limit)
        return n, the_bank, matcher, builder.grow_calls, CallStats.total(builder.stats, answerer.stats)

    (read, the_bank, matcher, grow_calls, stats), output = _run_seed(opts, out, cache, body)
    output.counts["records_read"] = read
    return output.finish({
        "command": "seed instruct", "model": opts.model, "seed": opts.seed, "embedder": emb.name,
        "bank": {"file": str(bank_out), "seeds": len(seeds), "grown": len(the_bank.grown),
                 "asked_to_grow": grow, "grow_calls": grow_calls, "groups": len(the_bank.groups),
                 "groups_summarised": sum(g.summarised for g in the_bank.groups)},
        "per_image": per_image,
        "matching": {"pictures": matcher.pictures, "no_similar_group": matcher.unmatched},
        "prompts": _prompt_versions(["instruct_grow", "instruct_summarise", "instruct_answer"]),
        **stats.seed_counts(),
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
