"""What an LLM seed generator reads: records or scene graphs, shown to the model as text.

SVIT and MM-Instruct give a text-only model the notes people made about a picture, never
its pixels: a caption, the objects with their boxes, and descriptions of regions. Here
those notes come from our records (`caption`, `objects`, and optional region notes in
`meta["regions"]` as ``{"text": ..., "box": [x1, y1, x2, y2]}``) or from scene graphs,
whose caption is written from the graph and whose region notes are its relations and
attributes, each with the box around the objects it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from evol.io import ReadResult, read_records
from evol.operators.base import object_line
from evol.records import format_box
from evol.records import Obj, Record, RecordError

MAX_OBJECTS = 40  # lines in the prompt; a crowded graph would otherwise drown the task
MAX_REGIONS = 24


def regions_of(record: Record) -> list[tuple[str, list[float] | None]]:
    """The record's region notes as (text, box or None); malformed entries are skipped."""
    out: list[tuple[str, list[float] | None]] = []
    for entry in record.meta.get("regions") or []:
        if isinstance(entry, str) and entry.strip():
            out.append((entry.strip(), None))
        elif isinstance(entry, dict) and isinstance(entry.get("text"), str) and entry["text"].strip():
            box = entry.get("box")
            try:
                box = Obj(label="region", box=box).box if box is not None else None
            except ValueError:
                box = None
            out.append((entry["text"].strip(), box))
    return out


def has_notes(record: Record) -> bool:
    return bool(record.caption.strip() or record.objects or regions_of(record))


def notes(record: Record) -> dict[str, str]:
    """The prompt placeholders $caption, $objects and $regions for one record."""
    objects = [object_line(o) for o in record.objects[:MAX_OBJECTS]]
    if len(record.objects) > MAX_OBJECTS:
        objects.append(f"- ... and {len(record.objects) - MAX_OBJECTS} more objects")
    regions = [f"- {t}: {format_box(b)}" if b else f"- {t}" for t, b in regions_of(record)[:MAX_REGIONS]]
    if len(record.images) > 1:
        scene = f"({len(record.images)} pictures) {record.caption.strip()}"
    else:
        scene = record.caption.strip()
    return {
        "caption": scene or "(none)",
        "objects": "\n".join(objects) or "(none listed)",
        "regions": "\n".join(regions) or "(none)",
    }


def object_labels_in(text: str, record: Record) -> list[str]:
    """Labels of the record's objects that the text names, in record order, once each."""
    low = f" {text.lower()} "
    out: list[str] = []
    for o in record.objects:
        label = o.label.lower().strip()
        if label and label not in out and (f" {label}" in low):
            out.append(label)
    return out


# ------------------------------------------------------------------------ inputs
def input_stream(
    path: str | None = None,
    *,
    annotations: str | None = None,
    vg: str | None = None,
    vg_ids: list[str] | None = None,
    image_root: str | None = None,
    input_format: str = "auto",
) -> Iterator[ReadResult]:
    """One `ReadResult` per input: records from `path`, or scene graphs turned into records."""
    given = [x for x in (path, annotations, vg) if x]
    if len(given) != 1:
        raise ValueError("give exactly one input: a records file, --annotations or --vg")
    if path:
        return read_records(path, input_format)
    from evol.provision.loaders import load_provision, load_visual_genome

    root = Path(image_root) if image_root else None
    if vg:
        graphs = load_visual_genome(vg, vg_ids, root)
    else:
        graphs = load_provision(annotations, masks_dir=None, depth_dir=None, image_root=root)
    return records_from_graphs(graphs)


def records_from_graphs(graphs: Iterable[Any]) -> Iterator[ReadResult]:
    """Scene graphs (or the `GraphError`s a loader yields) as read results."""
    from evol.provision.graph import GraphError

    for index, g in enumerate(graphs):
        if isinstance(g, GraphError):
            yield ReadResult(g.image_id, index, error=RecordError(g.image_id, g.reason))
            continue
        try:
            yield ReadResult(g.image_id, index, record=graph_record(g))
        except ValueError as exc:
            yield ReadResult(g.image_id, index, error=RecordError(g.image_id, str(exc)))


def graph_record(graph: Any) -> Record:
    """A record holding a scene graph's notes: caption, objects (0-1 boxes), region notes."""
    from evol.provision.caption import describe_graph, statement
    from evol.provision.seed import _objects

    objects = _objects(graph)
    regions: list[dict[str, Any]] = []
    for i, ob in enumerate(graph.objects):
        attrs = list(dict.fromkeys(ob.attributes))[:3]
        if attrs:
            regions.append({"text": f"{', '.join(attrs)} {ob.label}", "box": objects[i].box})
    seen = set()
    for r in graph.relations:
        key = (r.subject, r.predicate, r.object)
        if r.subject == r.object or key in seen:
            continue
        seen.add(key)
        a, b = objects[r.subject].box, objects[r.object].box
        union = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
        text = statement(f"the {graph.objects[r.subject].label}", r.predicate, f"the {graph.objects[r.object].label}")
        regions.append({"text": text.rstrip("."), "box": union})
    return Record(
        id=graph.image_id, images=[graph.image], caption=graph.caption or describe_graph(graph),
        objects=objects, source=f"scene graph/{graph.source or 'graph'}",
        meta={"regions": regions[: MAX_REGIONS * 2]},
    )
