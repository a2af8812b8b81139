"""The answer check: does the model, looking at the picture, give the item's answer?

The judge model answers each evolved question with the picture, the caption and the boxes,
but without the proposed answer; when its answer disagrees with the item's, the item is
rejected with both answers in the reason. A rewrite that states a wrong count, colour or
relation gets through a judge asked many things at once more easily than through a
question it must answer itself (the re-check of MAmmoTH-VL's rewrites, arXiv 2412.05237).
"""

from __future__ import annotations

from evol.backends.base import Message, Reply, Request, Sampling, Text
from evol.eliminator.asking import by_id, list_schema, list_validator, question_line
from evol.operators.base import format_objects, image_parts, picture_note, short_ids
from evol.prompts import load_prompt
from evol.records import Item, Record

PROMPT = "answer"
FIELDS = {"answer": {"type": "string"}}


def _problem(entry: dict) -> str | None:
    if not isinstance(entry.get("answer"), str) or not entry["answer"].strip():
        return f"answer {entry.get('id')!s} is empty"
    return None


def _read(entry: dict) -> str | None:
    return None if _problem(entry) else entry["answer"].strip()


class AnswerCheck:
    """Builds the answer request of one record's round and reads its answers back by id."""

    name = "answer"

    def build(self, record: Record, items: list[Item], round: int, sampling: Sampling,
              send_image: bool = True) -> Request:
        """One request with the picture(s), caption and objects, and the questions without answers."""
        ids = short_ids("q", len(items))
        prompt = load_prompt(PROMPT)
        system = prompt.render(
            caption=record.caption.strip() or "(none)",
            objects=format_objects(record),
            questions="\n".join(question_line(q, it) for q, it in zip(ids, items)),
            n=len(items),
        )
        note = picture_note(record, send_image)
        user = (*image_parts(record, send_image), Text(f"{note}\nAnswer {', '.join(ids)}.".strip()))
        return Request(
            messages=(Message.text("system", system), Message("user", user)),
            schema=list_schema("answers", "q", len(items), FIELDS),
            schema_name="answers",
            sampling=sampling,
            template=prompt.id,
            tag=f"{record.id}/r{round}/answer",
            validate=list_validator("answers", _problem, "q", len(items)),
        )

    def parse(self, reply: Reply, items: list[Item]) -> dict[str, str]:
        return by_id(reply, "answer check", "answers", "q", [it.id for it in items], _read)
