"""Records, items and lineage: the one data model every command reads and writes.

A `Record` is one image group. Its seed Q&A&S items live in `items`; every evolution
round adds a `Version` holding the rewritten items, which operator made them, and the
judge's verdict on each. Items point at their parent item by id, so lineage survives
any reordering, and verdicts are matched by id, never by position.
"""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class RecordError(ValueError):
    """A record that cannot be used, with the record id and a readable reason."""

    def __init__(self, record_id: str, reason: str, stage: str = "read"):
        super().__init__(f"record {record_id!r}: {reason}")
        self.record_id = record_id
        self.reason = reason
        self.stage = stage


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=False)


class Step(_Model):
    """One reasoning step; `manipulation` is a pseudo-function call such as Grounding(cup)."""

    manipulation: str | None = None
    description: str = ""


class Verdict(_Model):
    """The eliminator's decision on one item. `rule` is set when a rule check decided;
    `stage` when a check after the judge (blind, answer) overturned the judge's verdict.
    `checks` holds what each later check found ({"blind": "cannot tell", ...}), and the
    judge's own reason once a later check has replaced `reason`."""

    improved: bool
    score: float = Field(ge=0, le=10)
    reason: str = ""
    rule: str | None = None
    stage: str | None = None
    checks: dict[str, str] | None = None


class Item(_Model):
    """One Q&A&S item."""

    id: str
    question: str
    answer: str
    objects: list[str] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    format: str | None = None
    steps: list[Step] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)
    parent: str | None = None  # id of the item this one was evolved from
    verdict: Verdict | None = None

    def passes(self, min_score: float = 0.0) -> bool:
        """Kept by the judge: improved, and scored at least `min_score` (applied apart from scoring)."""
        v = self.verdict
        return v is not None and v.improved and v.score >= min_score

    @property
    def kept(self) -> bool:
        return self.passes()


class Obj(_Model):
    """A detected object: label and an optional box [x1, y1, x2, y2] normalised to 0-1.

    `image` says which of a multi-image record's images (0-based) the box is in; None for
    a record with one image.
    """

    label: str
    box: list[float] | None = None
    image: int | None = Field(None, ge=0)

    @field_validator("box")
    @classmethod
    def _box_in_unit_square(cls, box: list[float] | None) -> list[float] | None:
        if box is None:
            return None
        if len(box) != 4:
            raise ValueError(f"box must have 4 numbers, got {len(box)}")
        if any(v < 0 or v > 1 for v in box):
            raise ValueError(f"box {box} is not normalised to 0-1")
        x1, y1, x2, y2 = box
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box {box} has x2 < x1 or y2 < y1")
        return [round(v, 3) for v in box]


class Version(_Model):
    """One evolution round of a record.

    `items` are the evolved items (each with `parent` and, once judged, `verdict`).
    `status` is "judged" normally, "failed" when the round could not run (`error` says why).
    """

    round: int = Field(ge=1)
    operator: str
    status: str = "judged"
    error: str | None = None
    items: list[Item] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    requests: int = 0  # model calls this round made (cached answers included)
    # the same per stage (evolve, judge, blind, answer): [requests, tokens_in, tokens_out]
    usage: dict[str, list[int]] | None = None


class Record(_Model):
    """One image group and everything evol knows and makes for it.

    `images` are paths relative to the image root, or URLs; `caption` and `objects` (labels
    with 0-1 boxes) describe the pictures in words for the prompts and the rule checks;
    `items` are the seed Q&A&S items, and `versions` one entry per evolution round (the
    rewritten items, the operator and the verdicts), so lineage and every rejection can be
    traced back to the seed. Every command reads and writes this one shape. The fields
    follow MMEvol's data (arXiv 2409.05840): an image with its caption and detected
    objects, and Q&A&S items (objects, skills, format, question, steps, answer).
    """

    id: str
    images: list[str] = Field(default_factory=list)
    caption: str = ""
    objects: list[Obj] = Field(default_factory=list)
    items: list[Item] = Field(default_factory=list)
    versions: list[Version] = Field(default_factory=list)
    source: str | None = None  # where the record came from (file format or generator)
    meta: dict[str, Any] = Field(default_factory=dict)

    def working_items(self, min_score: float = 0.0) -> list[Item]:
        """The newest surviving version of every item lineage.

        Each seed item starts a chain; an evolved item replaces its parent in the chain
        only when it was kept. A chain whose newest child was eliminated goes on from its
        last survivor.
        """
        current: dict[str, Item] = {it.id: it for it in self.items}
        head_of: dict[str, str] = {it.id: it.id for it in self.items}  # item id -> chain key
        for version in self.versions:
            for child in version.items:
                chain = head_of.get(child.parent or "")
                if chain is None:
                    continue
                head_of[child.id] = chain
                if child.passes(min_score):
                    current[chain] = child
        return list(current.values())

    def kept_items(self, min_score: float = 0.0) -> list[Item]:
        """Every evolved item the judge kept, in round order."""
        return [it for v in self.versions for it in v.items if it.passes(min_score)]


def format_box(box: Sequence[float], decimals: int | None = None) -> str:
    """A box as prompts, questions and reasons write it: "[x1, y1, x2, y2]".

    Numbers in their shortest form ("[0.1, 0.25, 1, 0.5]"), or with `decimals` fixed
    places ("[0.10, 0.25, 1.00, 0.50]" with 2). The one formatter of boxes: the text a
    model is shown must match what the rule checks (`evol.eliminator.rules.boxes_in`) read.
    """
    if decimals is None:
        return "[" + ", ".join(f"{v:g}" for v in box) + "]"
    return "[" + ", ".join(f"{v:.{decimals}f}" for v in box) + "]"


def validate_record(data: Any, fallback_id: str) -> Record:
    """Build a `Record` from parsed JSON, raising `RecordError` naming the record and field."""
    rid = str(data.get("id", fallback_id)) if isinstance(data, dict) else fallback_id
    if not isinstance(data, dict):
        raise RecordError(rid, f"expected a JSON object, got {type(data).__name__}")
    try:
        return Record.model_validate(data)
    except ValidationError as exc:
        raise RecordError(rid, describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"field {field!r}: {err['msg']}")
    more = len(exc.errors()) - 3
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
