"""Read scene graphs from ProVision's stage files or from Visual Genome.

Both loaders yield one item per image: a validated `SceneGraph`, or a `GraphError` that
names the image and says what is wrong with it. A broken image never stops the others;
only problems with the input as a whole (a stage file that does not exist, a folder with
no stage files) raise, and they do so when the loader is called, before anything is read.

ProVision's format (see docs/specs): one JSON file per annotation stage, each a dict
``image_id -> {"data_path", "source", "annotation": {"width", "height", ...}}``. A file's
stage is told from the fields of its first entry:

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

Safety: instance masks are pickles, and unpickling can run code. Mask pickles are read
only from the ``masks_dir`` the caller names (never from the annotation folder or a path
written inside an annotation), a mask file name cannot climb out of that folder, and the
unpickler only builds numpy arrays and scipy sparse matrices. With ``masks_dir=None`` no
pickle is opened at all. Mask and depth files may be gzip-compressed (detected by their
first bytes), which keeps shipped samples small.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from evol.provision.graph import GraphError, Relation, SceneGraph, SGObject
from evol.provision.vocab import normalize_attribute, normalize_label

__all__ = [
    "STAGES",
    "load_provision",
    "read_provision",
    "ProvisionImages",
    "load_visual_genome",
    "graph_to_json",
    "graph_from_json",
    "load_mask_file",
]

PathLike = str | Path

# The stages in the order their files are read; detection first so that image order follows
# the detection file.
STAGES = ("detection", "segmentation", "depth", "attributes", "relations", "raw_relations")

# Predicates that only say "belongs to" and carry no spatial or semantic content.
DROPPED_PREDICATES = frozenset({"of"})

_GZIP_MAGIC = b"\x1f\x8b"


# ---------------------------------------------------------------------------------------
# small helpers shared by both loaders
# ---------------------------------------------------------------------------------------
def _image_name(data_path: str | None, image_root: Path | None) -> str:
    """The image path the graph records: relative to `image_root` when the (possibly
    stale) `data_path` lies under it, else just the file name."""
    if not data_path:
        return ""
    p = Path(str(data_path))
    if image_root is not None:
        root = Path(image_root)
        if p.is_absolute():
            for base in (root, root.resolve()):
                try:
                    return p.relative_to(base).as_posix()
                except ValueError:
                    pass
            try:
                return p.resolve().relative_to(root.resolve()).as_posix()
            except (ValueError, OSError):
                pass
        elif ".." not in p.parts and (root / p).exists():
            return p.as_posix()
    return p.name


def _predicate(text: Any) -> str:
    return " ".join(str(text).strip().lower().split())


def _attributes(words: Any) -> list[str]:
    """Normalise one object's attribute list ("grey and white" -> gray, white)."""
    if words is None:
        return []
    if isinstance(words, str):
        words = [words]
    out: list[str] = []
    for w in words:
        for a in normalize_attribute(str(w)):
            if a not in out:
                out.append(a)
    return out


def _read_bytes(path: Path) -> bytes:
    data = Path(path).read_bytes()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    return data


def _inside(folder: Path, name: str) -> Path | None:
    """`folder / name` when that stays inside `folder`; None for names that try to leave it
    (absolute paths keep only their file name)."""
    p = PurePath(str(name))
    if p.is_absolute():
        p = PurePath(p.name)
    if not p.parts or ".." in p.parts:
        return None
    return Path(folder) / p


# ---------------------------------------------------------------------------------------
# masks: restricted unpickling
# ---------------------------------------------------------------------------------------
_SPARSE_CLASSES = frozenset(
    f"{kind}_{form}" for kind in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia")
    for form in ("matrix", "array"))
_SPARSE_MODULES = frozenset(
    ["scipy.sparse"]
    + [f"scipy.sparse.{prefix}{kind}" for prefix in ("", "_") for kind in
       ("csr", "csc", "coo", "lil", "dok", "bsr", "dia", "base", "_base", "compressed", "data")])
_NUMPY_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "bool_"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("builtins", "object"),
})


class _MaskUnpickler(pickle.Unpickler):
    """Builds only numpy arrays/dtypes and scipy sparse matrices; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or module.startswith("numpy.dtypes") and name.endswith("DType"):
            return super().find_class(module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"mask pickle asks for {module}.{name}, which is not allowed")


def load_mask_file(path: PathLike) -> list[Any]:
    """Read a ProVision mask pickle (plain or gzip-compressed): a list with one scipy sparse
    boolean matrix (or a numpy array) per object. Returns the list as stored, not densified.
    Only call this on files from a folder the user named."""
    obj = _MaskUnpickler(io.BytesIO(_read_bytes(Path(path)))).load()
    if not isinstance(obj, (list, tuple)):
        raise ValueError(f"expected a list of masks, found {type(obj).__name__}")
    return list(obj)


def _dense_masks(image_id: str, stored: list[Any], height: int, width: int) -> list[np.ndarray]:
    out = []
    for i, m in enumerate(stored):
        shape = tuple(getattr(m, "shape", ()))
        if shape != (height, width):  # check before densifying anything large
            raise GraphError(image_id, f"mask {i} shape {shape} differs from the image's {(height, width)}")
        dense = m.toarray() if hasattr(m, "toarray") else np.asarray(m)
        out.append(dense.astype(bool, copy=False))
    return out


def _load_depth(image_id: str, path: Path) -> np.ndarray:
    if not path.is_file():
        raise GraphError(image_id, f"depth file {path.name!r} is missing from {path.parent}")
    try:
        depth = np.load(io.BytesIO(_read_bytes(path)), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any decoding failure means an unusable file
        raise GraphError(image_id, f"depth file {path.name!r} cannot be read: {e}") from None
    if not isinstance(depth, np.ndarray):
        raise GraphError(image_id, f"depth file {path.name!r} holds no single array")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.dtype != np.uint8:
        if np.issubdtype(depth.dtype, np.integer) and depth.size and 0 <= depth.min() and depth.max() <= 255:
            depth = depth.astype(np.uint8)
        else:
            raise GraphError(image_id, f"depth map {path.name!r} is {depth.dtype}, expected uint8 "
                             "(0-255, higher = closer)")
    return depth


# ---------------------------------------------------------------------------------------
# ProVision stage files
# ---------------------------------------------------------------------------------------
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


def load_provision(
    annotation_dir_or_files: PathLike | Iterable[PathLike],
    *,
    masks_dir: Path | None,
    depth_dir: Path | None = None,
    image_root: Path | None,
) -> Iterator[SceneGraph | GraphError]:
    """Scene graphs from ProVision's per-stage annotation files.

    `annotation_dir_or_files` is a folder (every ``*.json`` in it that looks like a stage
    file is read; other JSON files there are skipped) or one or more stage file paths (each
    must be a stage file). Stages merge by image id; every image must have an entry in each
    stage that was given, else it comes back as a `GraphError` ("no attributes entry").

    `masks_dir`: the ONLY folder mask pickles are read from, looked up by ``seg_mask_id``.
    None loads no masks; the graph then says so in ``meta["masks"]``.
    `depth_dir`: where ``depth_mask_id`` files are looked up (an absolute recorded path
    keeps only its file name); default the annotation folder (for explicit files: the
    folder of the depth stage file).
    `image_root`: ``SceneGraph.image`` is ``data_path`` relative to it when it lies under
    it, else the file name alone (recorded paths are often stale).

    Missing stage files raise `FileNotFoundError` here, before iteration starts.
    """
    files, folder = _stage_files(annotation_dir_or_files)
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise FileNotFoundError(f"masks_dir {masks_dir} is not a folder")
    if depth_dir is not None and not Path(depth_dir).is_dir():
        raise FileNotFoundError(f"depth_dir {depth_dir} is not a folder")
    return _iter_provision(files, folder, masks_dir=None if masks_dir is None else Path(masks_dir),
                           depth_dir=None if depth_dir is None else Path(depth_dir),
                           image_root=None if image_root is None else Path(image_root))


def _iter_provision(files: list[Path], folder: Path | None, *, masks_dir: Path | None,
                    depth_dir: Path | None, image_root: Path | None) -> Iterator[SceneGraph | GraphError]:
    images, given, depth_dir = _merge_stage_files(files, folder, depth_dir)
    for image_id, rec in images.items():
        try:
            yield _build_provision_graph(image_id, rec, given, masks_dir=masks_dir,
                                         depth_dir=depth_dir, image_root=image_root)
        except GraphError as e:
            yield e


class ProvisionImages:
    """ProVision stage files read and merged by image id, each image's graph built on demand.

    What `load_provision` streams, but addressable: `ids` in the order `load_provision`
    yields them, and `build(index)` gives the graph that it yields for that image (or
    raises the `GraphError` it yields). The parallel seeding path uses this so that worker
    processes can build images independently. The merged stage data stays in memory, as
    it does while `load_provision` streams.
    """

    def __init__(self, images: dict[str, _ImageEntries], given: set[str], *, masks_dir: Path | None,
                 depth_dir: Path | None, image_root: Path | None):
        self._images = images
        self.ids: list[str] = list(images)
        self._given = given
        self.masks_dir = masks_dir
        self.depth_dir = depth_dir
        self.image_root = image_root

    def __len__(self) -> int:
        return len(self.ids)

    def build(self, index: int, *, masks: bool = True) -> SceneGraph:
        """The graph of image `ids[index]`, with its masks when `masks` (and a masks_dir was
        given); raises `GraphError`."""
        image_id = self.ids[index]
        return _build_provision_graph(image_id, self._images[image_id], self._given,
                                      masks_dir=self.masks_dir if masks else None, depth_dir=self.depth_dir,
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
    masks_dir: Path | None,
    depth_dir: Path | None = None,
    image_root: Path | None,
) -> ProvisionImages:
    """`load_provision`'s input read at once into a `ProvisionImages` (same arguments, same
    checks; problems with the stage files as a whole raise here)."""
    files, folder = _stage_files(annotation_dir_or_files)
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise FileNotFoundError(f"masks_dir {masks_dir} is not a folder")
    if depth_dir is not None and not Path(depth_dir).is_dir():
        raise FileNotFoundError(f"depth_dir {depth_dir} is not a folder")
    images, given, depth = _merge_stage_files(files, folder, None if depth_dir is None else Path(depth_dir))
    return ProvisionImages(images, given, masks_dir=None if masks_dir is None else Path(masks_dir),
                           depth_dir=depth, image_root=None if image_root is None else Path(image_root))


def _merge_stage_files(files: list[Path], folder: Path | None, depth_dir: Path | None
                       ) -> tuple[dict[str, _ImageEntries], set[str], Path | None]:
    """Read the stage files and merge their entries by image id (in image order); also the
    stages given and the depth folder to use."""
    read: list[tuple[Path, list[str], dict]] = []
    for path in files:
        got = _read_stage_file(path, strict=folder is None)
        if got is None:
            warnings.warn(f"skipping {path}: not a ProVision stage file", stacklevel=2)
        else:
            read.append((path, *got))
    given = {s for _, stages, _ in read for s in stages}
    if "relations" in given:
        given.discard("raw_relations")
    if not given & {"detection", "segmentation"}:
        raise ValueError("no detection or segmentation stage file among "
                         + ", ".join(str(p) for p, _, _ in read) + " (objects come from them)")
    if depth_dir is None and "depth" in given:
        depth_dir = folder if folder is not None else next(p.parent for p, st, _ in read if "depth" in st)

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
    return images, given, depth_dir


def _build_provision_graph(image_id: str, rec: _ImageEntries, given: set[str], *, masks_dir: Path | None,
                           depth_dir: Path | None, image_root: Path | None) -> SceneGraph:
    if rec.problems:
        raise GraphError(image_id, "; ".join(rec.problems))
    missing = [s for s in STAGES if s in given and s != "raw_relations" and s not in rec.stages]
    if missing:
        raise GraphError(image_id, "no " + ", no ".join(f"{s} entry" for s in missing))
    base_stage = "detection" if "detection" in rec.stages else "segmentation"
    base = rec.stages[base_stage]

    # size: every stage must agree
    try:
        width, height = int(base["width"]), int(base["height"])
    except (KeyError, TypeError, ValueError):
        raise GraphError(image_id, f"{base_stage} entry has no usable width/height") from None
    for stage, ann in rec.stages.items():
        if "width" in ann and "height" in ann and (ann["width"], ann["height"]) != (width, height):
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
            ob.attributes = _attributes(words)

    meta: dict[str, Any] = {"data_path": rec.data_path, "stages": sorted(rec.stages, key=STAGES.index)}
    relations: list[Relation] = []
    if "relations" in rec.stages:
        dropped = 0
        for k, rel in enumerate(rec.stages["relations"]["relations"] or []):
            if not (isinstance(rel, (list, tuple)) and len(rel) == 3):
                raise GraphError(image_id, f"relation {k} {rel!r} is not [subject, predicate, object]")
            s, p, o = rel
            try:
                s, o = _index(s), _index(o)
            except ValueError:
                raise GraphError(image_id, f"relation {k} {rel!r}: subject and object must be "
                                 "object indices") from None
            pred = _predicate(p)
            if not pred or pred in DROPPED_PREDICATES:
                dropped += 1
                continue
            relations.append(Relation(s, pred, o))
        if dropped:
            meta["dropped_relations"] = dropped
    elif "raw_relations" in rec.stages:
        meta["relations"] = "only raw (free-text) relations were given; they are not parsed"

    graph = SceneGraph(image_id=image_id, image=_image_name(rec.data_path, image_root), width=width,
                       height=height, objects=objects, relations=relations, source=rec.source, meta=meta)
    graph.validate()  # boxes and relation indices before reading any large file

    if "depth" in rec.stages:
        depth_id = str(rec.stages["depth"]["depth_mask_id"])
        meta["depth_mask_id"] = depth_id
        assert depth_dir is not None
        path = _inside(depth_dir, depth_id)
        if path is None:
            raise GraphError(image_id, f"depth_mask_id {depth_id!r} points outside {depth_dir}")
        graph.depth = _load_depth(image_id, path)
    if "segmentation" in rec.stages:
        mask_id = str(rec.stages["segmentation"]["seg_mask_id"])
        meta["seg_mask_id"] = mask_id
        if masks_dir is None:
            meta["masks"] = "not loaded: no masks_dir was given (mask pickles load only from a named folder)"
        else:
            path = _inside(masks_dir, mask_id)
            if path is None:
                raise GraphError(image_id, f"seg_mask_id {mask_id!r} points outside masks_dir")
            if not path.is_file():
                raise GraphError(image_id, f"mask file {mask_id!r} is missing from {masks_dir}")
            try:
                stored = load_mask_file(path)
            except Exception as e:  # noqa: BLE001 - corrupt, truncated, or refused pickle
                raise GraphError(image_id, f"mask file {mask_id!r} cannot be read: {e}") from None
            if len(stored) != n:
                raise GraphError(image_id, f"{len(stored)} masks for {n} objects")
            graph.masks = _dense_masks(image_id, stored, height, width)
    return graph.validate()


def _index(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    raise ValueError(v)


# ---------------------------------------------------------------------------------------
# Visual Genome
# ---------------------------------------------------------------------------------------
def _vg_id(entry: dict) -> str:
    return str(entry.get("image_id", entry.get("id")))


class _ByImage:
    """Entries of one Visual Genome list file, handed out by image id.

    The files list images in the same order, so walking them side by side keeps nothing in
    memory; an entry read ahead of its turn waits in `pending` (only when the files disagree
    on order). Entries for images nobody wants are dropped as they stream past."""

    def __init__(self, path: Path, wanted: set[str] | None):
        import ijson  # streamed: the real files are hundreds of MB

        self._file = open(path, "rb")
        self._items = ijson.items(self._file, "item", use_float=True)
        self._wanted = wanted
        self._pending: dict[str, dict] = {}

    def get(self, image_id: str) -> dict | None:
        if image_id in self._pending:
            return self._pending.pop(image_id)
        for entry in self._items:
            iid = _vg_id(entry)
            if iid == image_id:
                return entry
            if self._wanted is None or iid in self._wanted:
                self._pending[iid] = entry
        return None

    def close(self) -> None:
        self._file.close()


def _vg_box(d: dict, width: int, height: int) -> tuple[tuple[int, int, int, int], bool] | None:
    """A VG x/y/w/h box as pixels clipped to the image; None when nothing is left."""
    try:
        x, y, w, h = (int(round(float(d[k]))) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        return None
    x1, y1, x2, y2 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2), (x1, y1, x2, y2) != (x, y, x + w, y + h)


def _vg_name(d: dict) -> str:
    names = d.get("names") or ([d["name"]] if d.get("name") else [])
    return normalize_label(names[0]) if names else ""


def _vg_image_name(url: str | None, image_root: Path | None) -> str:
    if not url:
        return ""
    parts = str(url).rstrip("/").split("/")
    name = parts[-1]
    if image_root is not None:
        candidates = ([f"{parts[-2]}/{name}"] if len(parts) > 1 else []) + [name]
        for c in candidates:
            if (Path(image_root) / c).exists():
                return c
    return name


def load_visual_genome(
    vg_dir: PathLike,
    image_ids: list | None = None,
    image_root: PathLike | None = None,
) -> Iterator[SceneGraph | GraphError]:
    """Scene graphs from a Visual Genome folder.

    Reads ``image_data.json`` (sizes, image URL) and ``objects.json`` (both required) and,
    when present, ``attributes.json`` and ``relationships.json``; all four are streamed side
    by side, so memory stays at one image's worth. Objects are indexed in ``objects.json``
    order (label = first name; boxes clipped to the image, empty ones dropped); attributes
    join by ``object_id``; relations map subject/object ids to indices (an object known only
    from a relationship is added from that relationship's own box and name); the predicate
    "of" is dropped. `image_ids` keeps only those images (in file order; ids that are not in
    ``image_data.json`` come back as `GraphError`s at the end). `image_root`: when the image
    is found there as ``<folder>/<name>`` or ``<name>``, that relative path is recorded,
    otherwise the file name from the URL.
    """
    vg = Path(vg_dir)
    for required in ("image_data.json", "objects.json"):
        if not (vg / required).is_file():
            raise FileNotFoundError(f"Visual Genome file {vg / required} not found")
    wanted = None if image_ids is None else {str(i) for i in image_ids}
    return _iter_visual_genome(vg, wanted, None if image_root is None else Path(image_root))


def _iter_visual_genome(vg: Path, wanted: set[str] | None, image_root: Path | None
                        ) -> Iterator[SceneGraph | GraphError]:
    import ijson

    streams = {"objects": _ByImage(vg / "objects.json", wanted)}
    for name, file in (("attributes", "attributes.json"), ("relationships", "relationships.json")):
        if (vg / file).is_file():
            streams[name] = _ByImage(vg / file, wanted)
    seen: set[str] = set()
    try:
        with open(vg / "image_data.json", "rb") as f:
            for info in ijson.items(f, "item", use_float=True):
                image_id = _vg_id(info)
                if wanted is not None and image_id not in wanted:
                    continue
                seen.add(image_id)
                try:
                    yield _build_vg_graph(image_id, info, streams, image_root)
                except GraphError as e:
                    yield e
                if wanted is not None and seen >= wanted:
                    break
    finally:
        for s in streams.values():
            s.close()
    if wanted is not None:
        for image_id in sorted(wanted - seen):
            yield GraphError(image_id, "not in image_data.json")


def _build_vg_graph(image_id: str, info: dict, streams: dict[str, _ByImage],
                    image_root: Path | None) -> SceneGraph:
    try:
        width, height = int(info["width"]), int(info["height"])
    except (KeyError, TypeError, ValueError):
        raise GraphError(image_id, "image_data.json gives no width/height") from None
    entries = {name: s.get(image_id) for name, s in streams.items()}
    missing = [name for name, e in entries.items() if e is None]
    if missing:
        raise GraphError(image_id, "no " + ", no ".join(f"{m} entry" for m in missing))

    objects: list[SGObject] = []
    index: dict[Any, int] = {}
    clipped = dropped_objects = 0

    def add(d: dict) -> int | None:
        nonlocal clipped, dropped_objects
        oid = d.get("object_id", d.get("id"))
        if oid in index:
            return index[oid]
        got = _vg_box(d, width, height)
        label = _vg_name(d)
        if got is None or not label:
            dropped_objects += 1
            return None
        box, was_clipped = got
        clipped += was_clipped
        index[oid] = len(objects)
        objects.append(SGObject(label=label, box=box))
        return index[oid]

    for d in entries["objects"].get("objects") or []:
        add(d)
    if "attributes" in entries:
        for d in entries["attributes"].get("attributes") or []:
            i = index.get(d.get("object_id", d.get("id")))
            if i is not None:
                for a in _attributes(d.get("attributes")):
                    if a not in objects[i].attributes:
                        objects[i].attributes.append(a)
    relations: list[Relation] = []
    dropped_relations = 0
    if "relationships" in entries:
        seen_rel: set[Relation] = set()
        for d in entries["relationships"].get("relationships") or []:
            pred = _predicate(d.get("predicate", ""))
            s = add(d["subject"]) if isinstance(d.get("subject"), dict) else None
            o = add(d["object"]) if isinstance(d.get("object"), dict) else None
            if not pred or pred in DROPPED_PREDICATES or s is None or o is None or s == o:
                dropped_relations += 1
                continue
            rel = Relation(s, pred, o)
            if rel not in seen_rel:
                seen_rel.add(rel)
                relations.append(rel)
    meta: dict[str, Any] = {"url": info.get("url"), "stages": sorted(entries)}
    for key, value in (("clipped_boxes", clipped), ("dropped_objects", dropped_objects),
                       ("dropped_relations", dropped_relations)):
        if value:
            meta[key] = value
    graph = SceneGraph(image_id=image_id, image=_vg_image_name(info.get("url"), image_root), width=width,
                       height=height, objects=objects, relations=relations, source="visual_genome",
                       meta=meta)
    return graph.validate()


# ---------------------------------------------------------------------------------------
# a compact JSON form (one graph per JSONL line); arrays stay in their own files
# ---------------------------------------------------------------------------------------
def graph_to_json(g: SceneGraph, *, depth_file: str | None = None, masks_file: str | None = None) -> dict:
    """A JSON-ready dict for one graph. Depth and masks are not inlined: pass the file names
    they were (or will be) saved under, defaulting to the ones the loader recorded in meta."""
    out: dict[str, Any] = {
        "image_id": g.image_id, "image": g.image, "width": g.width, "height": g.height,
        "objects": [{"label": o.label, "box": list(o.box), "score": o.score, "attributes": list(o.attributes)}
                    for o in g.objects],
        "relations": [[r.subject, r.predicate, r.object] for r in g.relations],
    }
    depth_file = depth_file or g.meta.get("depth_mask_id")
    masks_file = masks_file or g.meta.get("seg_mask_id")
    for key, value in (("depth", depth_file), ("masks", masks_file), ("caption", g.caption), ("source", g.source)):
        if value is not None:
            out[key] = value
    meta = {k: v for k, v in g.meta.items() if k not in ("depth_mask_id", "seg_mask_id")}
    if meta:
        out["meta"] = meta
    return out


def graph_from_json(d: dict, *, depth_dir: Path | None = None, masks_dir: Path | None = None) -> SceneGraph:
    """The inverse of `graph_to_json`. The depth map is read from `depth_dir` and masks from
    `masks_dir` when those are given (masks never from anywhere else); raises `GraphError`."""
    image_id = str(d.get("image_id", ""))
    try:
        objects = [SGObject(label=normalize_label(o["label"]), box=tuple(o["box"]), score=float(o.get("score", 1.0)),
                            attributes=_attributes(o.get("attributes"))) for o in d.get("objects", [])]
        relations = [Relation(_index(s), _predicate(p), _index(o)) for s, p, o in d.get("relations", [])
                     if _predicate(p) not in DROPPED_PREDICATES]
        graph = SceneGraph(image_id=image_id, image=str(d.get("image", "")), width=int(d["width"]),
                           height=int(d["height"]), objects=objects, relations=relations,
                           caption=d.get("caption"), source=d.get("source"), meta=dict(d.get("meta") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise GraphError(image_id, f"malformed graph record: {e!r}") from None
    graph.validate()
    if d.get("depth"):
        graph.meta["depth_mask_id"] = d["depth"]
        if depth_dir is not None:
            path = _inside(Path(depth_dir), d["depth"])
            if path is None:
                raise GraphError(image_id, f"depth file {d['depth']!r} points outside {depth_dir}")
            graph.depth = _load_depth(image_id, path)
    if d.get("masks"):
        graph.meta["seg_mask_id"] = d["masks"]
        if masks_dir is not None:
            path = _inside(Path(masks_dir), d["masks"])
            if path is None or not path.is_file():
                raise GraphError(image_id, f"mask file {d['masks']!r} is not in {masks_dir}")
            try:
                stored = load_mask_file(path)
            except Exception as e:  # noqa: BLE001
                raise GraphError(image_id, f"mask file {d['masks']!r} cannot be read: {e}") from None
            if len(stored) != len(objects):
                raise GraphError(image_id, f"{len(stored)} masks for {len(objects)} objects")
            graph.masks = _dense_masks(image_id, stored, graph.height, graph.width)
        else:
            graph.meta["masks"] = "not loaded: no masks_dir was given"
    return graph.validate()
