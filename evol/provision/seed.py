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
from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel

from evol.provision import generators as _generators  # noqa: F401  (registers them all)
from evol.provision.base import GENERATORS, QA, GenContext, Generator
from evol.provision.caption import describe_graph
from evol.provision.graph import GraphError, SceneGraph
from evol.records import Item, Obj, Record


def derived_rng(seed: int, *parts: str) -> random.Random:
    """A generator seeded from sha256 of the parts: the same in every process and hash seed."""
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _rng_maker(seed: int, *parts: str):
    """`name -> derived_rng(seed, *parts, name)`, hashing the shared prefix only once."""
    prefix = hashlib.sha256(("\x1f".join([str(seed), *parts]) + "\x1f").encode())

    def make(name: str) -> random.Random:
        h = prefix.copy()
        h.update(name.encode())
        return random.Random(int.from_bytes(h.digest()[:8], "big"))

    return make


def _builder(cls: type[BaseModel], names: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """A function that builds `cls` from a dict of already-right values, without validation.

    The dict must name the fields `names`, in that order. Where `cls` has exactly those
    fields and `model_construct` would only fill `__dict__` and pydantic's bookkeeping,
    the builder does that directly (same `__dict__`, every field marked set) at a fraction
    of the cost: it runs for every QA. Should the model change so that this no longer
    fits, the builder is plain `model_construct`.
    """
    plain = (tuple(cls.model_fields) == names and cls.model_config.get("extra") != "allow"
             and not cls.__pydantic_post_init__ and not cls.__private_attributes__
             and not cls.__pydantic_root_model__)
    if not plain:
        return lambda values: cls.model_construct(**values)
    new, put, every = cls.__new__, object.__setattr__, frozenset(names)

    def build(values: dict[str, Any]) -> Any:
        m = new(cls)
        put(m, "__dict__", values)
        put(m, "__pydantic_fields_set__", set(every))
        put(m, "__pydantic_extra__", None)
        put(m, "__pydantic_private__", None)
        return m

    return build


_obj = _builder(Obj, ("label", "box", "image"))
_item = _builder(Item, ("id", "question", "answer", "objects", "skills", "format", "steps", "options", "parent",
                        "verdict"))
_record = _builder(Record, ("id", "images", "caption", "objects", "items", "versions", "source", "meta"))


@dataclass
class SeedReport:
    """What a run produced and skipped, for the summary line and tests."""

    images: int = 0
    skipped: list[str] = field(default_factory=list)  # reasons, each naming the image
    asked: Counter = field(default_factory=Counter)  # generator -> QAs asked for
    produced: Counter = field(default_factory=Counter)  # generator -> QAs produced
    ungrouped: int = 0  # images left over at the end, too few for a group size asked for


def select_generators(names: list[str] | None, multi: bool) -> list[Generator]:
    if names:
        unknown = sorted(set(names) - set(GENERATORS))
        if unknown:
            raise ValueError(f"unknown generator(s): {', '.join(unknown)}; known: {', '.join(sorted(GENERATORS))}")
    chosen = [GENERATORS[n] for n in sorted(names or GENERATORS)]
    return [g for g in chosen if g.multi == multi]


def _unit(v: float) -> float:
    return round(1.0 if v > 1.0 else 0.0 if v < 0.0 else v, 3)


def _objects(graph: SceneGraph, image: int | None = None) -> list[Obj]:
    """The objects with boxes normalised to 0-1 and rounded to 3 places, as `Obj` would
    validate them (clamped first, so they always pass); `image` is the graph's place in a
    multi-image record."""
    w, h = graph.width, graph.height
    out = []
    for ob in graph.objects:
        x1, y1, x2, y2 = ob.box
        box = [_unit(x1 / w), _unit(y1 / h), _unit(x2 / w), _unit(y2 / h)]
        out.append(_obj({"label": ob.label, "box": box, "image": image}))
    return out


def _caption(graphs: list[SceneGraph]) -> str:
    if len(graphs) == 1:
        return describe_graph(graphs[0])
    return " ".join(f"Image {i + 1}: {describe_graph(g)}" for i, g in enumerate(graphs))


def qa_record(qa: QA, graphs: list[SceneGraph], k: int, caption: str, objects: list[Obj]) -> Record:
    """One seed record for one QA; `caption` and `objects` are computed once per image (group)."""
    return _qa_record(qa, [g.image_id for g in graphs], [g.image for g in graphs], k, caption, objects)


def _qa_record(qa: QA, ids: list[str], images: list[str], k: int, caption: str, objects: list[Obj]) -> Record:
    rid = f"{'+'.join(ids)}-{qa.generator}-{k}"
    # built without validation: every field is made right here from checked graphs, and
    # validating ~40 records per image would cost more than generating their QAs.
    item = _item({
        "id": f"{rid}#0", "question": qa.question, "answer": qa.answer, "objects": list(qa.objects),
        "skills": list(qa.skills), "format": "multiple choice" if qa.options else "short answer",
        "steps": [], "options": list(qa.options), "parent": None, "verdict": None,
    })
    return _record({
        "id": rid, "images": list(images), "caption": caption, "objects": objects,
        "items": [item], "versions": [], "source": "provision",
        "meta": {"generator": qa.generator, "provision": qa.metadata, "image_ids": list(ids)},
    })


def _run(gens: list[Generator], graphs: list[SceneGraph], seed: int, ctx: GenContext, n: int,
         report: SeedReport) -> Iterator[Record]:
    ids = [g.image_id for g in graphs]
    images = [g.image for g in graphs]
    caption = None
    objects = _objects(graphs[0]) if len(graphs) == 1 else [o for k, g in enumerate(graphs) for o in _objects(g, k)]
    rng_for = _rng_maker(seed, *ids)  # the same generators as derived_rng(seed, *ids, name)
    for gen in gens:
        qas = gen.generate(graphs, rng_for(gen.name), ctx, n)[:n]
        report.asked[gen.name] += n
        report.produced[gen.name] += len(qas)
        if qas and caption is None:
            caption = _caption(graphs)
        for k, qa in enumerate(qas):
            yield _qa_record(qa, ids, images, k, caption, objects)


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
    singles, multis, sizes = run_plan(generators, group_sizes, single)
    state = GroupState()
    yield from grouped_records(graphs, singles, multis, sizes, seed, ctx, per_generator, report, state)
    yield from last_group_records(multis, sizes, seed, ctx, per_generator, report, state)


def run_plan(generators: list[str] | None, group_sizes: list[int] | None, single: bool
             ) -> tuple[list[Generator], list[Generator], list[int]]:
    """The single-image generators, multi-image generators and group sizes to run; raises
    `ValueError` for unknown generators or group sizes below 2."""
    singles = select_generators(generators, multi=False) if single else []
    multis = select_generators(generators, multi=True) if group_sizes else []
    sizes = [s for s in (group_sizes or []) if s >= 2]
    if group_sizes and not sizes:
        raise ValueError("image group sizes must be 2 or more")
    return singles, multis, sizes


class GroupState:
    """Where multi-image grouping stands: how many groups were made, and the good graphs
    of the group being filled. Carried from one stretch of graphs to the next."""

    __slots__ = ("made", "group")

    def __init__(self, made: int = 0, group: list[SceneGraph] | None = None):
        self.made = made
        self.group: list[SceneGraph] = group if group is not None else []


def grouped_records(graphs: Iterable[SceneGraph | GraphError], singles: list[Generator], multis: list[Generator],
                    sizes: list[int], seed: int, ctx: GenContext, n: int, report: SeedReport,
                    state: GroupState) -> Iterator[Record]:
    """`provision_records` for a stretch of graphs, grouping on from `state` (updated);
    the group left at the end stays in `state` (see `last_group_records`)."""
    for g in graphs:
        if isinstance(g, GraphError):
            report.skipped.append(str(g))
            continue
        report.images += 1
        if singles:
            yield from _run(singles, [g], seed, ctx, n, report)
        if sizes:
            state.group.append(g)
            if len(state.group) == sizes[state.made % len(sizes)]:
                yield from _run(multis, state.group, seed, ctx, n, report)
                state.group, state.made = [], state.made + 1


def last_group_records(multis: list[Generator], sizes: list[int], seed: int, ctx: GenContext, n: int,
                       report: SeedReport, state: GroupState) -> Iterator[Record]:
    """After the last graph: the group left over when it came up short of its turn's size
    but is a size asked for; otherwise its images are counted in `report.ungrouped`."""
    group = state.group
    if group and len(group) in sizes:
        yield from _run(multis, group, seed, ctx, n, report)
    elif group:
        report.ungrouped = len(group)
