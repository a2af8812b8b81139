"""Scene graphs in, seed records out: run the generators and shape their QAs as records;
`write_seeds` does the whole run, files in, seed file and rejects out.

Each QA becomes one `Record` the evolver reads: the image(s), the graph's caption, the
objects with boxes normalised to 0-1, and the QA as one Q&A&S item. Randomness comes
from one generator per (run seed, image ids, generator name), derived with sha256, so
the output is identical in every process and under every PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
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


# ---------------------------------------------------------------------------------------
# the whole run: files in, seed file and rejects out
# ---------------------------------------------------------------------------------------
PathArg = str | Path | None

_IMAGE_PREFIX = re.compile(r"^image (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"): ")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_LISTED = re.compile(r"\[[^\[\]]*\]")
_NUMBER = re.compile(r"(?<![\w/.\\-])-?\d+(?:\.\d+)?(?![\w/\\-])")


def reason_kind(reason: str) -> str:
    """A skip reason without what is particular to its image: the image id, quoted names,
    lists and numbers ("image 'a': depth file 'a_depth.npy' is missing from d" ->
    "depth file '…' is missing from d"), so that the same cause reads the same for every
    image it stopped."""
    text = _IMAGE_PREFIX.sub("", reason, count=1)
    text = _QUOTED.sub("'…'", text)
    text = _LISTED.sub("[…]", text)
    return _NUMBER.sub("N", text)


@dataclass
class ProvisionResult:
    """What `write_seeds` wrote and skipped.

    `records`: seed records written to `out`; `images`: images that yielded a usable graph;
    `skipped`: one reason per image that did not (also in `rejects`, one JSON line each);
    `asked`/`produced`: QAs asked of / produced by each generator; `ungrouped`: images left
    at the end too few for a multi-image group of the sizes asked; `group_sizes`: those
    sizes; `masks_dir`/`depth_dirs`: where masks and depth maps were read from (ProVision
    files); `notes`: anything the caller should know that is not an image's fault (masks
    not found, for one).
    """

    out: Path
    rejects: Path
    records: int = 0
    images: int = 0
    skipped: list[str] = field(default_factory=list)
    asked: dict[str, int] = field(default_factory=dict)
    produced: dict[str, int] = field(default_factory=dict)
    ungrouped: int = 0
    group_sizes: list[int] = field(default_factory=list)
    masks_dir: Path | None = None
    depth_dirs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def short(self) -> dict[str, tuple[int, int]]:
        """Generators that found less to ask than requested: name -> (produced, asked)."""
        return {k: (self.produced.get(k, 0), self.asked[k]) for k in sorted(self.asked)
                if self.produced.get(k, 0) < self.asked[k]}

    def top_reasons(self, n: int = 5) -> list[tuple[str, int]]:
        """The `n` commonest kinds of skip reason (`reason_kind`), with how many images each
        stopped, commonest first (ties in order of first appearance)."""
        counts = Counter(reason_kind(r) for r in self.skipped)
        return counts.most_common(n)

    def summary(self) -> list[str]:
        """The run in a few plain lines, for a command line or a log."""
        lines = [f"wrote {self.records} seed records from {self.images} images to {self.out}; "
                 f"{len(self.skipped)} images skipped (reasons in {self.rejects})"]
        if self.short:
            lines.append("generators that found less to ask than requested: "
                         + ", ".join(f"{k} {p}/{a}" for k, (p, a) in self.short.items()))
        if self.ungrouped:
            lines.append(f"the last {self.ungrouped} image(s) were too few for a multi-image group of the sizes "
                         f"asked ({','.join(map(str, self.group_sizes))}): they have single-image seeds only")
        lines.extend(self.notes)
        if not self.records and self.skipped:
            lines.append("no record was written; the commonest reasons: " + "; ".join(
                f"{kind} ({count} image{'s' if count != 1 else ''})" for kind, count in self.top_reasons()))
        return lines


def _checked_settings(annotations: PathArg, vg: PathArg, masks: PathArg, depth: PathArg, vg_ids: list | None,
                      per_generator: int, mc_ratio: float, choices: int, group_sizes: list[int] | None,
                      generators: list[str] | None, single: bool, depth_gap: int, workers: int) -> None:
    """Raise `ValueError` naming the first setting that cannot work."""
    def whole(name: str, v: Any, low: int, high: int | None = None) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            span = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise ValueError(f"{name} must be a whole number {span}; got {v!r}")

    if bool(annotations) == bool(vg):
        raise ValueError("give exactly one of annotations (ProVision stage files: a folder or one file) "
                         "or vg (a Visual Genome folder)")
    if vg and (masks or depth):
        raise ValueError("masks and depth go with ProVision stage files (annotations), not with vg")
    if vg_ids is not None and not vg:
        raise ValueError("vg_ids selects Visual Genome images; it needs vg")
    whole("per_generator", per_generator, 1)
    whole("choices", choices, 2, 8)
    whole("depth_gap", depth_gap, 0, 255)
    whole("workers", workers, 1)
    if isinstance(mc_ratio, bool) or not isinstance(mc_ratio, (int, float)) or not 0.0 <= mc_ratio <= 1.0:
        raise ValueError(f"mc_ratio must be a number from 0 to 1; got {mc_ratio!r}")
    if group_sizes is not None:
        if isinstance(group_sizes, (str, int)) or not group_sizes:
            raise ValueError(f"group_sizes must be a list of image counts, e.g. [2, 3, 4]; got {group_sizes!r}")
        for s in group_sizes:
            whole("every image group size", s, 2)
    if generators is not None and (isinstance(generators, str) or not generators):
        raise ValueError(f"generators must be a list of generator names; got {generators!r}")
    singles, multis, _ = run_plan(generators, group_sizes, single)  # unknown names raise here
    if not singles and not multis:
        raise ValueError("no generator to run: " + (
            "single=False and no group_sizes for the multi-image generators" if not group_sizes
            else "the generators named are single-image ones and single=False"))


def write_seeds(
    out: str | Path,
    *,
    annotations: PathArg = None,
    masks: PathArg = None,
    depth: PathArg = None,
    vg: PathArg = None,
    vg_ids: list | None = None,
    image_root: PathArg = None,
    per_generator: int = 2,
    mc_ratio: float = 0.5,
    choices: int = 4,
    seed: int = 0,
    group_sizes: list[int] | None = None,
    generators: list[str] | None = None,
    single: bool = True,
    number_words: bool = False,
    depth_gap: int = 20,
    workers: int = 1,
    executor: Any = None,
) -> ProvisionResult:
    """Write seed records from scene graphs with the programmatic generators (after
    ProVision, arXiv 2412.07012): one record per QA, to `out` (JSONL, written to a temporary
    file and renamed when complete), and one JSON line per skipped image to
    ``<out stem>.rejects.jsonl``. Prints nothing; returns a `ProvisionResult`.

    Input: `annotations`, ProVision's stage files (a folder, or one file), or `vg`, a Visual
    Genome folder (`vg_ids`: only those images). `masks`: the folder mask pickles are read
    from; default ``seg_masks/`` beside the stage files, when there (pickles run code when
    loaded: they are read from no other folder, through an unpickler that builds only arrays
    and sparse matrices). `depth`: the folder of depth maps; default ``depth_masks/`` beside
    the stage files, then the stage files' own folder. `image_root`: image paths in the
    records are relative to it.

    Generation: `per_generator` QAs asked of each generator per image (or group),
    `mc_ratio` of them multiple choice with `choices` options, counts as words with
    `number_words`, depth questions only across `depth_gap` (0-255); `group_sizes` (e.g.
    [2, 3, 4]) also groups consecutive images for the multi-image generators; `generators`
    runs only those; `single=False` skips the single-image ones. The same `seed` gives the
    same files, in any process and for any number of `workers` (processes). `executor`: the
    worker pool to use instead of local processes (`provision_jsonl`; Ray actors for `--ray`).

    Raises `ValueError` for settings that cannot work (both or neither of annotations/vg,
    an unknown generator, a bad size) and `FileNotFoundError` for missing inputs, before
    anything is written.
    """
    from evol.provision.base import GenContext
    from evol.provision.loaders import BESIDE_STAGE_FILES, load_visual_genome, read_provision
    from evol.provision.parallel import provision_jsonl

    _checked_settings(annotations, vg, masks, depth, vg_ids, per_generator, mc_ratio, choices, group_sizes,
                      generators, single, depth_gap, workers)
    out_path = Path(out)
    result = ProvisionResult(out=out_path, rejects=out_path.with_name(out_path.stem + ".rejects.jsonl"),
                             group_sizes=list(group_sizes or []))
    root = Path(image_root) if image_root else None
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"image_root {root} is not a folder")
    if vg:
        ids = [str(i) for i in vg_ids] if vg_ids is not None else None
        load_visual_genome(vg, ids, root)  # missing files raise now, before anything is written

        def source(masks_wanted: bool):
            return load_visual_genome(vg, ids, root)
    else:
        images = read_provision(annotations, masks_dir=Path(masks) if masks else BESIDE_STAGE_FILES,
                                depth_dir=Path(depth) if depth else None, image_root=root)
        source = images
        result.masks_dir, result.depth_dirs = images.masks_dir, list(images.depth_dirs)
        if "segmentation" in images.stages and images.masks_dir is None:
            result.notes.append("masks not loaded: no seg_masks/ folder beside the stage files (name the masks "
                                "folder to ask questions that need them)")

    ctx = GenContext(mc_ratio=mc_ratio, n_choices=choices, number_words=number_words, depth_gap=depth_gap)
    report = SeedReport()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            for block in provision_jsonl(source, ctx=ctx, seed=seed, per_generator=per_generator,
                                         generators=generators, group_sizes=group_sizes, single=single,
                                         report=report, workers=workers, executor=executor):
                f.write(block)
                result.records += block.count(b"\n")
        tmp.replace(out_path)
        rejects_tmp = result.rejects.with_name(result.rejects.name + ".tmp")
        with open(rejects_tmp, "w", encoding="utf-8") as f:
            for reason in report.skipped:
                f.write(json.dumps({"stage": "scene graph", "reason": reason}) + "\n")
        rejects_tmp.replace(result.rejects)
    finally:
        tmp.unlink(missing_ok=True)
    result.images, result.skipped, result.ungrouped = report.images, list(report.skipped), report.ungrouped
    result.asked, result.produced = dict(report.asked), dict(report.produced)
    return result
