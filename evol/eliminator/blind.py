"""The blind check: can an evolved question be answered without the picture?

The judge model answers each question with nothing of the picture: no image, no caption,
no boxes. It must say when it cannot tell rather than guess, so that a multiple-choice
item guessed right by chance proves nothing; only a confident blind answer that agrees
with the item's answer shows that the item does not need the picture, and rejects it.
MMEvol's ablation (arXiv 2409.05840) is why: evolution without elimination lowered the
hallucination benchmark POPE, and visual dependence is what makes a visual instruction.
Newer pipelines filter on it as a stage of its own (DataFlow-MM's vision-dependence filter).
"""

from __future__ import annotations

from dataclasses import dataclass

from evol.backends.base import Message, Reply, Request, Sampling
from evol.eliminator.asking import by_id, list_schema, list_validator, question_line
from evol.operators.base import short_ids
from evol.prompts import load_prompt
from evol.records import Item, Record

PROMPT = "blind"
FIELDS = {"can_tell": {"type": "boolean"}, "answer": {"type": "string"}}


@dataclass(frozen=True)
class BlindAnswer:
    """What the model answered without the picture; `answer` is empty when it could not tell."""

    can_tell: bool
    answer: str


def _problem(entry: dict) -> str | None:
    if not isinstance(entry.get("can_tell"), bool):
        return f"answer {entry.get('id')!s}: can_tell is not true or false"
    if entry["can_tell"] and not str(entry.get("answer") or "").strip():
        return f"answer {entry.get('id')!s}: can_tell is true but the answer is empty"
    return None


def _read(entry: dict) -> BlindAnswer | None:
    if _problem(entry):
        return None
    return BlindAnswer(entry["can_tell"], str(entry.get("answer") or "").strip())


class BlindCheck:
    """Builds the blind request of one record's round and reads its answers back by id."""

    name = "blind"

    def build(self, record: Record, items: list[Item], round: int, sampling: Sampling) -> Request:
        """One text-only request: the questions (and options), nothing of the picture."""
        ids = short_ids("q", len(items))
        prompt = load_prompt(PROMPT)
        system = prompt.render(questions="\n".join(question_line(q, it) for q, it in zip(ids, items)),
                               n=len(items))
        return Request(
            messages=(Message.text("system", system), Message.text("user", f"Answer {', '.join(ids)}.")),
            schema=list_schema("answers", "q", len(items), FIELDS),
            schema_name="blind_answers",
            sampling=sampling,
            template=prompt.id,
            tag=f"{record.id}/r{round}/blind",
            validate=list_validator("answers", _problem, "q", len(items)),
        )

    def parse(self, reply: Reply, items: list[Item]) -> dict[str, BlindAnswer]:
        return by_id(reply, "blind check", "answers", "q", [it.id for it in items], _read)
