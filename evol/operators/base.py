"""What every evolution operator shares: the request it builds and how it reads the reply.

An operator turns (record, the items to rewrite) into one `Request` and the model's reply
into one child item per parent. It does no I/O of its own. In the prompt the items carry
short ids "q1".."qn" (their position in `items`); the reply names the item it rewrites in
`source_id`, and children are paired with parents by that id, never by position.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from evol.backends.base import Image, Message, Reply, ReplyParseError, Request, Sampling, Text
from evol.prompts import load_prompt
from evol.records import Item, Obj, Record, describe_validation_error, format_box

COMMON_PROMPT = "evolve_common"
_ROUND_SUFFIX = re.compile(r"@r\d+$")  # "rec#0@r2" -> "rec#0"; an "@" inside a record id is kept

# json.dumps(value, ensure_ascii=False), without building an encoder per call
_JSON = json.JSONEncoder(ensure_ascii=False)

BOXES_GIVEN = (
    "Boxes are given for the objects above, so questions may ask where things are or how many "
    "there are; when a question or answer points at an object, cite its box exactly as listed."
)
NO_BOXES = (
    "No boxes are given for this picture: ask nothing that needs locating or counting objects, "
    "and write no coordinates anywhere."
)


@dataclass(frozen=True)
class BuildOptions:
    sampling: Sampling = Sampling()
    send_images: bool = True  # False: no image parts (text-only models)


@dataclass
class ParseResult:
    """The children that came back, and a readable line for each entry that was dropped."""

    items: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def short_ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i + 1}" for i in range(n)]


def object_line(o: Obj) -> str:
    """"- label: [x1, y1, x2, y2]", the label alone when it has no box, and "(image k)"
    (1-based, as people count pictures) when it belongs to one of several images."""
    where = f" (image {o.image + 1})" if o.image is not None else ""
    return f"- {o.label}{where}: {format_box(o.box)}" if o.box else f"- {o.label}{where}"


def format_objects(record: Record) -> str:
    """One line per object, see `object_line`."""
    if not record.objects:
        return "(none listed)"
    return "\n".join(object_line(o) for o in record.objects)


def has_boxes(record: Record) -> bool:
    return any(o.box for o in record.objects)


def item_view(item: Item) -> dict[str, Any]:
    """The Q&A&S fields of an item as the model sees them (no ids, lineage or verdicts)."""
    view: dict[str, Any] = {
        "objects": item.objects,
        "skills": item.skills,
        "format": item.format,
        "question": item.question,
        "steps": [{"manipulation": s.manipulation or "", "description": s.description} for s in item.steps],
        "answer": item.answer,
    }
    if item.options:
        view["options"] = item.options
    return view


def image_parts(record: Record, send: bool) -> list[Image]:
    return [Image(ref) for ref in record.images] if send else []


def picture_note(record: Record, sent: bool) -> str:
    """What the user message says about the attached pictures."""
    if not sent or not record.images:
        return "No picture is attached in this conversation; work from the automatic account and the object list."
    if len(record.images) > 1:
        return f"The {len(record.images)} pictures above are Image 1 to Image {len(record.images)}, in that order."
    return ""


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


class Operator:
    """One direction of evolution: rewrites a record's items into new, better ones.

    `build` turns (record, the items to rewrite) into one `Request` from the shared prompt
    (`evolve_common`) and the operator's own objective; `parse` turns the reply into one
    child item per parent, paired by id, and says what it dropped. An operator does no I/O
    and keeps no state, so the runner can call it from any record's task. Evolution by
    rewriting instructions comes from WizardLM's Evol-Instruct (arXiv 2304.12244: in-depth
    and in-breadth evolution); the three directions and their prompts from MMEvol (arXiv
    2409.05840). A subclass sets `name` and `objective` (its prompt file's name).
    """

    name: str = ""
    objective: str = ""
    schema_name = "evolved_items"

    @property
    def template_id(self) -> str:
        return f"{load_prompt(COMMON_PROMPT).id}+{load_prompt(self.objective).id}"

    def schema(self, n: int) -> dict[str, Any]:
        strings = {"type": "array", "items": {"type": "string"}}
        step = {
            "type": "object",
            "properties": {"manipulation": {"type": "string"}, "description": {"type": "string"}},
            "required": ["manipulation", "description"],
        }
        entry = {
            "type": "object",
            "properties": {
                "source_id": {"type": "string", "enum": short_ids("q", n)},
                "objects": strings,
                "skills": strings,
                "format": {"type": "string"},
                "question": {"type": "string"},
                "steps": {"type": "array", "items": step},
                "answer": {"type": "string"},
                "options": strings,
            },
            "required": ["source_id", "objects", "skills", "format", "question", "steps", "answer"],
        }
        return {
            "type": "object",
            "properties": {"items": {"type": "array", "minItems": n, "maxItems": n, "items": entry}},
            "required": ["items"],
        }

    def shared_schema(self, n: int) -> dict[str, Any]:
        """`schema(n)`, one object per operator and item count, shared by every request
        built with it (so the cache key dumps it once): never change it."""
        return schema_for(self, n)

    def build(self, record: Record, items: list[Item], round: int, opts: BuildOptions = BuildOptions()) -> Request:
        if not items:
            raise ValueError(f"record {record.id!r}: no items to evolve")
        ids = short_ids("q", len(items))
        shown = [{"id": sid, **item_view(it)} for sid, it in zip(ids, items)]
        common = load_prompt(COMMON_PROMPT)
        system = common.render(
            caption=record.caption.strip() or "(none)",
            objects=format_objects(record),
            boxes_rule=BOXES_GIVEN if has_boxes(record) else NO_BOXES,
            items="\n".join(_JSON.encode(s) for s in shown),
            objective=load_prompt(self.objective).render(n=len(items)).strip(),
            n=len(items),
        )
        note = picture_note(record, opts.send_images)
        if not opts.send_images:
            note += " Ask only about what they state."
        ask = f"Write the new items for {', '.join(ids)} as instructed."
        user = (*image_parts(record, opts.send_images), Text(f"{note}\n{ask}".strip()))
        return Request(
            messages=(Message.text("system", system), Message("user", user)),
            schema=self.shared_schema(len(items)),
            schema_name=self.schema_name,
            sampling=opts.sampling,
            template=self.template_id,
            tag=f"{record.id}/r{round}/{self.name}",
            validate=check_items,
        )

    def parse(self, record: Record, items: list[Item], round: int, reply: Reply) -> ParseResult:
        """One child per parent, matched by `source_id`.

        Entries with an unknown or repeated `source_id`, or that fail validation, are
        skipped and described in `problems`; so is a parent that got no child. Raises
        `ReplyParseError` when the reply holds no usable entry at all.
        """
        entries = reply_entries(reply, self.name)
        by_short = {sid: it for sid, it in zip(short_ids("q", len(items)), items)}
        by_real = {it.id: it for it in items}
        result, done, tried = ParseResult(), set(), set()
        for k, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                result.problems.append(f"{self.name} entry {k} is {type(entry).__name__}, not an object")
                continue
            sid = entry.get("source_id")
            key = sid.strip() if isinstance(sid, str) else None
            parent = by_short.get(key.lower()) if key else None
            parent = parent or by_real.get(key or "")
            if parent is None:
                result.problems.append(f"{self.name} entry {k} has unknown source_id {sid!r}")
                continue
            if parent.id in done:
                result.problems.append(f"{self.name} entry {k} repeats source_id {sid!r}; kept the first")
                continue
            try:
                child = _child(entry, parent, round)
            except (TypeError, ValueError) as exc:
                reason = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
                result.problems.append(f"{self.name} entry {k} (for item {parent.id}) is unusable: {reason}")
                tried.add(parent.id)
                continue
            done.add(parent.id)
            result.items.append(child)
        for sid, parent in by_short.items():
            if parent.id not in done and parent.id not in tried:
                result.problems.append(f"{self.name} returned no rewrite for item {parent.id} ({sid})")
        if not result.items:
            detail = "; ".join(result.problems[:3]) or "the items list was empty"
            raise ReplyParseError(f"{self.name} reply has no usable item: {detail}")
        return result


_SCHEMAS: dict[tuple[type, int], dict[str, Any]] = {}


def schema_for(maker: Any, n: int) -> dict[str, Any]:
    """`maker.schema(n)` made once per class and count (a schema depends on nothing else)."""
    key = (type(maker), n)
    schema = _SCHEMAS.get(key)
    if schema is None:
        if len(_SCHEMAS) >= 1024:
            _SCHEMAS.clear()
        schema = _SCHEMAS[key] = maker.schema(n)
    return schema


def check_items(data: Any) -> str | None:
    """An operator request's `validate`: why a parsed reply is unusable, or None.

    Unusable: no non-empty ``items`` list, or an entry that is not an object or has an
    empty (or missing) question or answer. The backend then asks again instead of the
    reply being cached; `Operator.parse` still drops such entries one by one, for replies
    that reach it without this check.
    """
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        return "the reply has no 'items' list"
    if not data["items"]:
        return "the reply's items list is empty"
    for k, entry in enumerate(data["items"], 1):
        if not isinstance(entry, dict):
            return f"item {k} is {type(entry).__name__}, not an object"
        sid = entry.get("source_id")
        name = f"item {k} ({sid.strip()})" if isinstance(sid, str) and sid.strip() else f"item {k}"
        for field_name in ("question", "answer"):
            value = entry.get(field_name)
            if not isinstance(value, str):
                return f"{name} has no {field_name}"
            if not value.strip():
                return f"{name} has an empty {field_name}"
    return None


def reply_entries(reply: Reply, who: str, key: str = "items") -> list[Any]:
    """The list under `key` in a JSON reply, or a `ReplyParseError` saying what came instead."""
    data = reply.data
    if data is None:
        cut = " (the answer was cut off at max_tokens)" if reply.finish_reason == "length" else ""
        raise ReplyParseError(f"{who} reply is not JSON{cut}: {reply.text[:120]!r}")
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ReplyParseError(f"{who} reply has no {key!r} list: {json.dumps(data)[:120]}")
    return data[key]


def _child(entry: dict[str, Any], parent: Item, round: int) -> Item:
    question, answer = entry.get("question"), entry.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is missing or not text")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError("answer is missing or not text")
    fmt = entry.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise TypeError("format must be text")
    steps = entry.get("steps") or []
    if not isinstance(steps, list):
        raise TypeError("steps must be a list")
    return Item.model_validate({
        "id": _ROUND_SUFFIX.sub("", parent.id) + f"@r{round}",
        "parent": parent.id,
        "question": question.strip(),
        "answer": answer.strip(),
        "objects": _strings(entry.get("objects"), "objects"),
        "skills": _strings(entry.get("skills"), "skills"),
        "format": (fmt or "").strip() or None,
        "steps": [_step(s) for s in steps],
        "options": _strings(entry.get("options"), "options"),
        "verdict": None,
    })


def _step(step: Any) -> Any:
    """A step as an object; a bare string is its description, an empty manipulation is None."""
    if isinstance(step, str):
        return {"manipulation": None, "description": step.strip()}
    if isinstance(step, dict) and isinstance(step.get("manipulation"), str) and not step["manipulation"].strip():
        return {**step, "manipulation": None}
    return step
