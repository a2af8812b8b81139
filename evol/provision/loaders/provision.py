"""Scene graphs from ProVision's per-stage annotation files.

ProVision's format (see docs/specs): one JSON file per annotation stage, each a dict
``image_id -> {"data_path", "source", "annotation": {"width", "height", ...}}``. A file's
stage is told from the fields of its first entry, not from its name:

============  ===============================================================
stage         fields in ``annotation``
============  ===============================================================
detection     ``labels``, ``bboxes`` (pixels x1 y1 x2 y2), ``det_scores``
segmentation  ``seg_mask_id`` (+ copies of ``labels`` and ``bboxes``)
depth         ``depth_mask_id`` (a ``.npy`` uint8 H x W map, higher = closer)
attributes    ``attributes`` (a list of words per object)
relations     ``relations`` (``[subject_index, "predicate", object_index]``)
============  ===============================================================

``raw_relations`` (free text) are ignored. A file that carries several stages' fields in
each entry counts as all of them.

ProVision's own layout keeps the arrays beside the stage files::

    annotations/
        object-detection-annotations.json, segmentation-annotations.json, ...
        seg_masks/<image>_mask.pkl      (named by seg_mask_id)
        depth_masks/<image>_depth.npy   (named by depth_mask_id)
        images/<image>.png

Depth maps are looked up in ``depth_dir`` when one is given, else in ``depth_masks/``
beside the stage files and then beside the stage files themselves. Mask pickles are read
from ``masks_dir``: a folder the caller names, or `BESIDE_STAGE_FILES` for the
``seg_masks/`` folder beside them (inside the annotation folder the user named).

Safety: mask pickles are never read from a path written inside an annotation, a mask file
name cannot climb out of its folder, and the unpickler only builds numpy arrays and scipy
sparse matrices (`load_mask_file`). With ``masks_dir=None`` no pickle is opened at all.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from evol.provision.graph import GraphError, Relation, SceneGraph, SGObject
from evol.provision.loaders import common
from evol.provision.loaders.common import DROPPED_PREDICATES, PathLike, attributes, image_name, index, predicate
from evol.provision.vocab import normalize_label

__all__ = [
    "STAGES",
    "SEG_MASKS",
    "DEPTH_MASKS",
    "BESIDE_STAGE_FILES",
    "load_provision",
    "read_provision",
    "ProvisionImages",
]

# The stages in the order their files are read; detection first so that image order follows
# the detection file.
STAGES = ("detection", "segmentation", "depth", "attributes", "relations", "raw_relations")

# ProVision's folders for the arrays, beside the stage files.
SEG_MASKS = "seg_masks"
DEPTH_MASKS = "depth_masks"


class _Beside:
    """`masks_dir=BESIDE_STAGE_FILES`: the ``seg_masks/`` folder beside the stage files."""

    _instance: _Beside | None = None

    def __new__(cls) -> _Beside:  # one instance, also after unpickling
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "BESIDE_STAGE_FILES"

    def __reduce__(self):
        return (_Beside, ())


BESIDE_STAGE_FILES = _Beside()

MasksDir = PathLike | _Beside | None


def _stages_of(annotation: dict) -> list[str]:
    """Which stages an annotation dict carries."""
    found = []
    has_boxes = "labels" in annotation and "bboxes" in annotation
    if has_boxes and ("det_scores" in annotation or "seg_mask_id" not in annotation):
        found.append("detection")
    if "seg_mask_id" in annotation:
        found.append("segmentation")
    if "depth_mask_id" in annotation:
        found.append("depth")
    if "attributes" in annotation:
        found.append("attributes")
    if "relations" in annotation:
        found.append("relations")
    if "raw_relations" in annotation:
        found.append("raw_relations")
    return found


_REQUIRED = {
    "detection": ("labels", "bboxes"),
    "segmentation": ("seg_mask_id",),
    "depth": ("depth_mask_id",),
    "attributes": ("attributes",),
    "relations": ("relations",),
    "raw_relations": ("raw_relations",),
}


def _stage_files(annotation_dir_or_files: PathLike | Iterable[PathLike]) -> tuple[list[Path], Path | None]:
    """The stage files to read, and the folder they came from (when a folder was given)."""
    if isinstance(annotation_dir_or_files, (str, Path)):
        given = Path(annotation_dir_or_files)
        if given.is_dir():
            files = sorted(p for p in given.glob("*.json") if p.is_file())
            if not files:
                raise FileNotFoundError(f"no stage files (*.json) in {given}")
            return files, given
        paths = [given]
    else:
        paths = [Path(p) for p in annotation_dir_or_files]
        if not paths:
            raise ValueError("no stage files given")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"stage file(s) not found: {', '.join(missing)}")
    return paths, None


def _read_stage_file(path: Path, strict: bool) -> tuple[list[str], dict] | None:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        if strict:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return None
    if not isinstance(data, dict):
        if strict:
            raise ValueError(f"{path}: a stage file is a JSON object keyed by image id")
        return None
    first = next((v for v in data.values()), None)
    if first is None:
        return [], data
    ann = first.get("annotation") if isinstance(first, dict) else None
    stages = _stages_of(ann) if isinstance(ann, dict) else []
    if not stages:
        if strict:
            raise ValueError(f"{path}: cannot tell the stage; its first entry has none of the "
                             "fields labels/bboxes, seg_mask_id, depth_mask_id, attributes, relations")
        return None
    return stages, data


class _ImageEntries:
    """What the stage files say about one image."""

    __slots__ = ("stages", "files", "problems", "data_path", "source")

    def __init__(self) -> None:
        self.stages: dict[str, dict] = {}
        self.files: dict[str, Path] = {}
        self.problems: list[str] = []
        self.data_path: str | None = None
        self.source: str | None = None


class _Merged:
    """The stage files read and merged by image id, and where their arrays are."""

    __slots__ = ("images", "given", "masks_dir", "depth_dirs")

    def __init__(self, images: dict[str, _ImageEntries], given: set[str], masks_dir: Path | None,
                 depth_dirs: tuple[Path, ...]):
        self.images = images
        self.given = given
        self.masks_dir = masks_dir
        self.depth_dirs = depth_dirs


def _check_dirs(masks_dir: MasksDir, depth_dir: PathLike | None) -> None:
    if masks_dir is not None and masks_dir is not BESIDE_STAGE_FILES and not Path(masks_dir).is_dir():
        raise FileNotFoundError(f"masks_dir {masks_dir} is not a folder")
    if depth_dir is not None and not Path(depth_dir).is_dir():
        raise FileNotFoundError(f"depth_dir {depth_dir} is not a folder")


def _merge_stage_files(files: list[Path], folder: Path | None, masks_dir: MasksDir,
                       depth_dir: PathLike | None) -> _Merged:
    """Read the stage files and merge their entries by image id (in image order); also the
    stages given and the folders to read masks and depth maps from."""
    read: list[tuple[Path, list[str], dict]] = []
    for path in files:
        got = _read_stage_file(path, strict=folder is None)
        if got is None:
            warnings.warn(f"skipping {path}: not a ProVision stage file", stacklevel=3)
        else:
            read.append((path, *got))
    given = {s for _, stages, _ in read for s in stages}
    if "relations" in given:
        given.discard("raw_relations")
    if not given & {"detection", "segmentation"}:
        raise ValueError("no detection or segmentation stage file among "
                         + ", ".join(str(p) for p, _, _ in read) + " (objects come from them)")

    def beside(stage: str) -> Path:
        """The folder of the stage files: the one given, or that of the file with `stage`."""
        return folder if folder is not None else next(p.parent for p, st, _ in read if stage in st)

    depth_dirs: tuple[Path, ...] = ()
    if depth_dir is not None:
        depth_dirs = (Path(depth_dir),)
    elif "depth" in given:
        base = beside("depth")
        depth_dirs = ((base / DEPTH_MASKS,) if (base / DEPTH_MASKS).is_dir() else ()) + (base,)
    masks: Path | None = None
    if masks_dir is BESIDE_STAGE_FILES:
        if "segmentation" in given and (beside("segmentation") / SEG_MASKS).is_dir():
            masks = beside("segmentation") / SEG_MASKS
    elif masks_dir is not None:
        masks = Path(masks_dir)

    # merge by image id, detection files first so images come out in their order
    read.sort(key=lambda t: min(STAGES.index(s) for s in t[1]))
    images: dict[str, _ImageEntries] = {}
    while read:
        path, stages, data = read.pop(0)  # each file's dict is dropped once merged
        stages = [s for s in stages if s in given]
        for image_id, entry in data.items():
            rec = images.setdefault(str(image_id), _ImageEntries())
            if not isinstance(entry, dict) or not isinstance(entry.get("annotation"), dict):
                rec.problems.append(f"entry in {path.name} has no 'annotation' object")
                continue
            rec.data_path = rec.data_path or entry.get("data_path")
            rec.source = rec.source or entry.get("source")
            for stage in stages:
                if stage in rec.stages:
                    rec.problems.append(f"two {stage} entries ({rec.files[stage].name} and {path.name})")
                    continue
                lacking = [k for k in _REQUIRED[stage] if k not in entry["annotation"]]
                if lacking:
                    rec.problems.append(f"{stage} entry in {path.name} lacks {', '.join(lacking)}")
                    continue
                rec.stages[stage] = entry["annotation"]
                rec.files[stage] = path
    return _Merged(images, given, masks, depth_dirs)


class ProvisionImages:
    """ProVision stage files read and merged by image id, each image's graph built on demand.

    What `load_provision` streams, but addressable: `ids` in the order `load_provision`
    yields them, and `build(index)` gives the graph that it yields for that image (or
    raises the `GraphError` it yields). The seeding pipeline uses this so that worker
    processes can build images independently. The merged stage data stays in memory, as
    it does while `load_provision` streams.

    `masks_dir`: the folder mask pickles are read from (None: no masks); `depth_dirs`: the
    folders depth maps are looked up in, in order; `stages`: the stages the files gave.
    """

    def __init__(self, merged: _Merged, *, image_root: Path | None):
        self._images = merged.images
        self.ids: list[str] = list(merged.images)
        self._given = merged.given
        self.masks_dir = merged.masks_dir
        self.depth_dirs = merged.depth_dirs
        self.image_root = image_root

    @property
    def stages(self) -> set[str]:
        return set(self._given)

    @property
    def depth_dir(self) -> Path | None:
        """The first folder depth maps are looked up in."""
        return self.depth_dirs[0] if self.depth_dirs else None

    def __len__(self) -> int:
        return len(self.ids)

    def build(self, index: int, *, masks: bool = True) -> SceneGraph:
        """The graph of image `ids[index]`, with its masks when `masks` (and a masks folder
        is known); raises `GraphError`."""
        image_id = self.ids[index]
        return _build_graph(image_id, self._images[image_id], self._given,
                            masks_dir=self.masks_dir if masks else None, depth_dirs=self.depth_dirs,
                            image_root=self.image_root)

    def graphs(self, *, masks: bool = True) -> Iterator[SceneGraph | GraphError]:
        """Every image's graph or error, in order: what `load_provision` yields."""
        for k in range(len(self.ids)):
            try:
                yield self.build(k, masks=masks)
            except GraphError as e:
                yield e


def read_provision(
    annotation_dir_or_files: PathLike | Iterable[PathLike],
    *,
    masks_dir: MasksDir,
    depth_dir: PathLike | None = None,
    image_root: PathLike | None,
) -> ProvisionImages:
    """The stage files read at once into a `ProvisionImages` (`load_provision`'s
    arguments and checks; problems with the stage files as a whole raise here)."""
    files, folder = _stage_files(annotation_dir_or_files)
    _check_dirs(masks_dir, depth_dir)
    merged = _merge_stage_files(files, folder, masks_dir, depth_dir)
    return ProvisionImages(merged, image_root=None if image_root is None else Path(image_root))


def load_provision(
    annotation_dir_or_files: PathLike | Iterable[PathLike],
    *,
    masks_dir: MasksDir,
    depth_dir: PathLike | None = None,
    image_root: PathLike | None,
) -> Iterator[SceneGraph | GraphError]:
    """Scene graphs from ProVision's per-stage annotation files.

    `annotation_dir_or_files` is a folder (every ``*.json`` in it that looks like a stage
    file is read; other JSON files there are skipped) or one or more stage file paths (each
    must be a stage file). Stages merge by image id; every image must have an entry in each
    stage that was given, else it comes back as a `GraphError` ("no attributes entry").

    `masks_dir`: the ONLY folder mask pickles are read from, looked up by ``seg_mask_id``;
    `BESIDE_STAGE_FILES` for the ``seg_masks/`` folder beside the stage files (none if it
    is not there). None loads no masks; the graph then says so in ``meta["masks"]``.
    `depth_dir`: where ``depth_mask_id`` files are looked up (an absolute recorded path
    keeps only its file name); default ``depth_masks/`` beside the stage files, then the
    stage files' folder (for explicit files: the folder of the depth stage file).
    `image_root`: ``SceneGraph.image`` is ``data_path`` relative to it when it lies under
    it, else the file name alone (recorded paths are often stale).

    Missing stage files or folders raise `FileNotFoundError` here, before iteration starts.
    """
    images = read_provision(annotation_dir_or_files, masks_dir=masks_dir, depth_dir=depth_dir,
                            image_root=image_root)
    return images.graphs()


def _build_graph(image_id: str, rec: _ImageEntries, given: set[str], *, masks_dir: Path | None,
                 depth_dirs: tuple[Path, ...], image_root: Path | None) -> SceneGraph:
    if rec.problems:
        raise GraphError(image_id, "; ".join(rec.problems))
    missing = [s for s in STAGES if s in given and s != "raw_relations" and s not in rec.stages]
    if missing:
        raise GraphError(image_id, "no " + ", no ".join(f"{s} entry" for s in missing))
    base_stage = "detection" if "detection" in rec.stages else "segmentation"
    base = rec.stages[base_stage]

    # size: every stage that is used must agree (ProVision's raw relation files, which are
    # not read, can carry another image's size: its public sample does)
    try:
        width, height = int(base["width"]), int(base["height"])
    except (KeyError, TypeError, ValueError):
        raise GraphError(image_id, f"{base_stage} entry has no usable width/height") from None
    for stage, ann in rec.stages.items():
        if stage != "raw_relations" and "width" in ann and "height" in ann and (ann["width"], ann["height"]) != (width, height):
            raise GraphError(image_id, f"{stage} entry says {ann['width']}x{ann['height']} but "
                             f"{base_stage} says {width}x{height}")

    # objects
    labels, boxes = base["labels"], base["bboxes"]
    if not isinstance(labels, list) or not isinstance(boxes, list) or len(labels) != len(boxes):
        raise GraphError(image_id, f"{base_stage}: labels and bboxes must be lists of equal length")
    scores = base.get("det_scores")
    if scores is None:
        scores = [1.0] * len(labels)
    if not isinstance(scores, list) or len(scores) != len(labels):
        raise GraphError(image_id, f"{len(scores) if isinstance(scores, list) else 'no'} det_scores "
                         f"for {len(labels)} objects")
    objects = []
    for i, (label, box, score) in enumerate(zip(labels, boxes, scores)):
        if not (isinstance(box, (list, tuple)) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise GraphError(image_id, f"object {i} box {box!r} is not four numbers x1, y1, x2, y2")
        objects.append(SGObject(label=normalize_label(label), box=tuple(box), score=float(score)))
    n = len(objects)

    if "segmentation" in rec.stages and base_stage == "detection":
        seg = rec.stages["segmentation"]
        if "labels" in seg and [normalize_label(x) for x in seg["labels"]] != [o.label for o in objects]:
            raise GraphError(image_id, "segmentation labels differ from detection labels")
        if "bboxes" in seg and [tuple(b) for b in seg["bboxes"]] != [o.box for o in objects]:
            raise GraphError(image_id, "segmentation bboxes differ from detection bboxes")

    if "attributes" in rec.stages:
        attrs = rec.stages["attributes"]["attributes"]
        if not isinstance(attrs, list) or len(attrs) != n:
            raise GraphError(image_id, f"{len(attrs) if isinstance(attrs, list) else 'no'} attribute "
                             f"lists for {n} objects")
        for ob, words in zip(objects, attrs):
            ob.attributes = attributes(words)

    meta: dict[str, Any] = {"data_path": rec.data_path, "stages": sorted(rec.stages, key=STAGES.index)}
    relations: list[Relation] = []
    if "relations" in rec.stages:
        dropped = 0
        for k, rel in enumerate(rec.stages["relations"]["relations"] or []):
            if not (isinstance(rel, (list, tuple)) and len(rel) == 3):
                raise GraphError(image_id, f"relation {k} {rel!r} is not [subject, predicate, object]")
            s, p, o = rel
            try:
                s, o = index(s), index(o)
            except ValueError:
                raise GraphError(image_id, f"relation {k} {rel!r}: subject and object must be "
                                 "object indices") from None
            pred = predicate(p)
            if not pred or pred in DROPPED_PREDICATES:
                dropped += 1
                continue
            relations.append(Relation(s, pred, o))
        if dropped:
            meta["dropped_relations"] = dropped
    elif "raw_relations" in rec.stages:
        meta["relations"] = "only raw (free-text) relations were given; they are not parsed"

    graph = SceneGraph(image_id=image_id, image=image_name(rec.data_path, image_root), width=width,
                       height=height, objects=objects, relations=relations, source=rec.source, meta=meta)
    graph.validate()  # boxes and relation indices before reading any large file

    if "depth" in rec.stages:
        depth_id = str(rec.stages["depth"]["depth_mask_id"])
        meta["depth_mask_id"] = depth_id
        graph.depth = common.load_depth(image_id, common.find_depth(image_id, depth_dirs, depth_id))
    if "segmentation" in rec.stages:
        mask_id = str(rec.stages["segmentation"]["seg_mask_id"])
        meta["seg_mask_id"] = mask_id
        if masks_dir is None:
            meta["masks"] = "not loaded: no masks folder (mask pickles load only from a folder named for them)"
        else:
            graph.masks = common.read_masks(image_id, masks_dir, mask_id, n, height, width)
    return graph.validate()
