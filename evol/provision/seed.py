"""Scene graphs in, seed records out: run the generators and shape their QAs as records.

Each QA becomes one `Record` the evolver reads: the image(s), the graph's caption, the
objects with boxes normalised to 0-1, and the QA as one Q&A&S item. Randomness comes
from one generator per (run seed, image ids, generator name), derived with sha256, so
the output is identical in every process and under every PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from evol.provision import generators as _generators  # noqa: F401  (registers them all)
from evol.provision.base import GENERATORS, QA, GenContext, Generator
from evol.provision.caption import describe_graph
from evol.provision.graph import GraphError, SceneGraph
from evol.records import Item, Obj, Record


def derived_rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass
class SeedReport:
    """What a run produced and skipped, for the summary line and tests."""

    images: int = 0
    skipped: list[str] = field(default_factory=list)  # reasons, each naming the image
    asked: Counter = field(default_factory=Counter)  # generator -> QAs asked for
    produced: Counter = field(default_factory=Counter)  # generator -> QAs produced


def select_generators(names: list[str] | None, multi: bool) -> list[Generator]:
    if names:
        unknown = sorted(set(names) - set(GENERATORS))
        if unknown:
            raise ValueError(f"unknown generator(s): {', '.join(unknown)}; known: {', '.join(sorted(GENERATORS))}")
    chosen = [GENERATORS[n] for n in sorted(names or GENERATORS)]
    return [g for g in chosen if g.multi == multi]


def _objects(graph: SceneGraph) -> list[Obj]:
    out = []
    for i, ob in enumerate(graph.objects):
        x1, y1, x2, y2 = ob.box
        box = [min(1.0, max(0.0, v)) for v in (x1 / graph.width, y1 / graph.height, x2 / graph.width, y2 / graph.height)]
        out.append(Obj(label=ob.label, box=[round(v, 3) for v in box]))
    return out


def _caption(graphs: list[SceneGraph]) -> str:
    if len(graphs) == 1:
        return describe_graph(graphs[0])
    return " ".join(f"Image {i + 1}: {describe_graph(g)}" for i, g in enumerate(graphs))


def qa_record(qa: QA, graphs: list[SceneGraph], k: int, caption: str, objects: list[Obj]) -> Record:
    """One seed record for one QA; `caption` and `objects` are computed once per image (group)."""
    ids = [g.image_id for g in graphs]
    rid = f"{'+'.join(ids)}-{qa.generator}-{k}"
    # model_construct: every field is built right here from checked graphs, and
    # validating ~40 records per image would cost more than generating their QAs.
    item = Item.model_construct(
        id=f"{rid}#0", question=qa.question, answer=qa.answer, options=list(qa.options),
        objects=list(qa.objects), skills=list(qa.skills),
        format="multiple choice" if qa.options else "short answer",
        steps=[], parent=None, verdict=None,
    )
    return Record.model_construct(
        id=rid, images=[g.image for g in graphs], caption=caption, objects=objects, items=[item],
        versions=[], source="provision",
        meta={"generator": qa.generator, "provision": qa.metadata, "image_ids": ids},
    )


def _run(gens: list[Generator], graphs: list[SceneGraph], seed: int, ctx: GenContext, n: int,
         report: SeedReport) -> Iterator[Record]:
    ids = [g.image_id for g in graphs]
    caption = None
    objects = _objects(graphs[0]) if len(graphs) == 1 else []
    for gen in gens:
        qas = gen.generate(graphs, derived_rng(seed, *ids, gen.name), ctx, n)[:n]
        report.asked[gen.name] += n
        report.produced[gen.name] += len(qas)
        if qas and caption is None:
            caption = _caption(graphs)
        for k, qa in enumerate(qas):
            yield qa_record(qa, graphs, k, caption, objects)


def provision_records(
    graphs: Iterable[SceneGraph | GraphError],
    *,
    ctx: GenContext,
    seed: int = 0,
    per_generator: int = 2,
    generators: list[str] | None = None,
    group_sizes: list[int] | None = None,
    single: bool = True,
    report: SeedReport | None = None,
) -> Iterator[Record]:
    """Yield seed records; bad graphs are skipped and named in `report.skipped`.

    With `group_sizes` (e.g. [2, 3, 4]) consecutive good graphs are also grouped, cycling
    through the sizes, and fed to the multi-image generators.
    """
    report = report if report is not None else SeedReport()
    singles = select_generators(generators, multi=False) if single else []
    multis = select_generators(generators, multi=True) if group_sizes else []
    sizes = [s for s in (group_sizes or []) if s >= 2]
    if group_sizes and not sizes:
        raise ValueError("image group sizes must be 2 or more")
    group: list[SceneGraph] = []
    n_groups = 0
    for g in graphs:
        if isinstance(g, GraphError):
            report.skipped.append(str(g))
            continue
        report.images += 1
        if singles:
            yield from _run(singles, [g], seed, ctx, per_generator, report)
        if sizes:
            group.append(g)
            if len(group) == sizes[n_groups % len(sizes)]:
                yield from _run(multis, group, seed, ctx, per_generator, report)
                group, n_groups = [], n_groups + 1
