"""Do two long answers say the same? A model decides, for answers too long to compare by words.

Short answers are compared in `evol.eliminator.agree`; a sentence against a sentence is
asked here: one text-only call per record, round and stage, every pair under its own id.
"""

from __future__ import annotations

from dataclasses import dataclass

from evol.backends.base import Message, Reply, Request, Sampling
from evol.eliminator.asking import by_id, encode, list_schema, list_validator
from evol.operators.base import short_ids
from evol.prompts import load_prompt

PROMPT = "same_answer"
FIELDS = {"same": {"type": "boolean"}, "reason": {"type": "string"}}


@dataclass(frozen=True)
class Pair:
    """Two answers to one item's question: the item's own, and the one a check got."""

    item_id: str
    question: str
    expected: str
    got: str


def _problem(entry: dict) -> str | None:
    if not isinstance(entry.get("same"), bool):
        return f"verdict {entry.get('id')!s}: same is not true or false"
    return None


def _read(entry: dict) -> bool | None:
    return None if _problem(entry) else entry["same"]


class SameCheck:
    """Builds the comparison request and reads back, per item id, whether the answers agree."""

    def build(self, record_id: str, pairs: list[Pair], round: int, stage: str, sampling: Sampling) -> Request:
        ids = short_ids("p", len(pairs))
        lines = [encode({"id": pid, "question": p.question, "answer_1": p.expected, "answer_2": p.got})
                 for pid, p in zip(ids, pairs)]
        prompt = load_prompt(PROMPT)
        system = prompt.render(pairs="\n".join(lines), n=len(pairs))
        return Request(
            messages=(Message.text("system", system), Message.text("user", f"Compare {', '.join(ids)}.")),
            schema=list_schema("verdicts", "p", len(pairs), FIELDS),
            schema_name="same_answers",
            sampling=sampling,
            template=prompt.id,
            tag=f"{record_id}/r{round}/{stage}-same",
            validate=list_validator("verdicts", _problem, "p", len(pairs)),
        )

    def parse(self, reply: Reply, pairs: list[Pair]) -> dict[str, bool]:
        return by_id(reply, "answer comparison", "verdicts", "p", [p.item_id for p in pairs], _read)
