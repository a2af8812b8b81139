"""Scene graphs from a Visual Genome folder (``image_data.json``, ``objects.json``, and
when present ``attributes.json`` and ``relationships.json``), streamed side by side.

Visual Genome names objects by id and gives boxes as x, y, w, h; the loader turns them
into the index-aligned `SceneGraph` form: objects in ``objects.json`` order, attributes
joined by object id, relations mapped to indices (the predicate "of" dropped).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evol.provision.graph import GraphError, Relation, SceneGraph, SGObject
from evol.provision.loaders.common import DROPPED_PREDICATES, PathLike, attributes, predicate
from evol.provision.vocab import normalize_label

__all__ = ["load_visual_genome"]


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
                for a in attributes(d.get("attributes")):
                    if a not in objects[i].attributes:
                        objects[i].attributes.append(a)
    relations: list[Relation] = []
    dropped_relations = 0
    if "relationships" in entries:
        seen_rel: set[Relation] = set()
        for d in entries["relationships"].get("relationships") or []:
            pred = predicate(d.get("predicate", ""))
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
