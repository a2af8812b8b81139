"""A compact JSON form of a scene graph (one graph per JSONL line). Depth maps and masks
are not inlined: the record names their files, read back from folders the caller names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evol.provision.graph import GraphError, Relation, SceneGraph, SGObject
from evol.provision.loaders import common
from evol.provision.loaders.common import DROPPED_PREDICATES, attributes, index, predicate
from evol.provision.vocab import normalize_label

__all__ = ["graph_to_json", "graph_from_json"]


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
                            attributes=attributes(o.get("attributes"))) for o in d.get("objects", [])]
        relations = [Relation(index(s), predicate(p), index(o)) for s, p, o in d.get("relations", [])
                     if predicate(p) not in DROPPED_PREDICATES]
        graph = SceneGraph(image_id=image_id, image=str(d.get("image", "")), width=int(d["width"]),
                           height=int(d["height"]), objects=objects, relations=relations,
                           caption=d.get("caption"), source=d.get("source"), meta=dict(d.get("meta") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise GraphError(image_id, f"malformed graph record: {e!r}") from None
    graph.validate()
    if d.get("depth"):
        graph.meta["depth_mask_id"] = d["depth"]
        if depth_dir is not None:
            path = common.find_depth(image_id, [Path(depth_dir)], str(d["depth"]))
            graph.depth = common.load_depth(image_id, path)
    if d.get("masks"):
        graph.meta["seg_mask_id"] = d["masks"]
        if masks_dir is not None:
            graph.masks = common.read_masks(image_id, Path(masks_dir), str(d["masks"]), len(objects), graph.height,
                                            graph.width, where=str(masks_dir))
        else:
            graph.meta["masks"] = "not loaded: no masks_dir was given"
    return graph.validate()
