"""The judge: one model call compares every evolved item of a round with its parent.

Each pair is shown under the child's short id "e1".."en" and every verdict is matched back
by that id, never by position: a missing, unknown or repeated verdict affects only itself.
The judge sees the picture (unless told not to), the caption and the object list, and the
parent is the previous round's version of the item, not the seed.
"""

from __future__ import annotations

import json
import math
from typing import Any

from evol.backends.base import Message, Reply, ReplyParseError, Request, Sampling, Text
from evol.operators.base import format_objects, image_parts, item_view, picture_note, reply_entries, short_ids
from evol.prompts import load_prompt
from evol.records import Item, Record, Verdict

JUDGE_PROMPT = "judge"

_YES = {"yes", "true", "y", "improved"}
_NO = {"no", "false", "n", "not improved"}


class Judge:
    name = "judge"
    schema_name = "verdicts"

    def schema(self, n: int) -> dict[str, Any]:
        verdict = {
            "type": "object",
            "properties": {
                "id": {"type": "string", "enum": short_ids("e", n)},
                "improved": {"type": "boolean"},
                "score": {"type": "integer", "minimum": 0, "maximum": 10},
                "reason": {"type": "string"},
            },
            "required": ["id", "improved", "score", "reason"],
        }
        return {
            "type": "object",
            "properties": {"verdicts": {"type": "array", "minItems": n, "maxItems": n, "items": verdict}},
            "required": ["verdicts"],
        }

    def build(
        self,
        record: Record,
        pairs: list[tuple[Item, Item]],
        round: int,
        send_image: bool = True,
        sampling: Sampling = Sampling(temperature=0.0),
    ) -> Request:
        """One request judging every (parent, child) pair of a record's round."""
        if not pairs:
            raise ValueError(f"record {record.id!r}: nothing to judge")
        ids = short_ids("e", len(pairs))
        shown = [{"id": eid, "before": item_view(parent), "after": item_view(child)}
                 for eid, (parent, child) in zip(ids, pairs)]
        prompt = load_prompt(JUDGE_PROMPT)
        system = prompt.render(
            caption=record.caption.strip() or "(none)",
            objects=format_objects(record),
            pairs="\n".join(json.dumps(s, ensure_ascii=False) for s in shown),
            n=len(pairs),
        )
        note = picture_note(record, send_image)
        ask = f"Give your verdicts on {', '.join(ids)}."
        user = (*image_parts(record, send_image), Text(f"{note}\n{ask}".strip()))
        return Request(
            messages=(Message.text("system", system), Message("user", user)),
            schema=self.schema(len(pairs)),
            schema_name=self.schema_name,
            sampling=sampling,
            template=prompt.id,
            tag=f"{record.id}/r{round}/judge",
        )

    def parse(self, reply: Reply, pairs: list[tuple[Item, Item]]) -> dict[str, Verdict]:
        """Verdicts keyed by the child's real item id.

        Unknown, repeated (after the first) or malformed verdicts are ignored; a child
        with no usable verdict is simply absent from the result. Scores are clamped to
        0-10. Raises `ReplyParseError` when the reply is not the expected JSON or holds
        no usable verdict at all.
        """
        entries = reply_entries(reply, "judge", "verdicts")
        child_of = {eid: child.id for eid, (_, child) in zip(short_ids("e", len(pairs)), pairs)}
        out: dict[str, Verdict] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            child_id = child_of.get(entry["id"].strip().lower())
            if child_id is None or child_id in out:
                continue
            improved, score = _as_bool(entry.get("improved")), _as_score(entry.get("score"))
            if improved is None or score is None:
                continue
            reason = entry.get("reason")
            out[child_id] = Verdict(improved=improved, score=score, reason=str(reason).strip() if reason else "")
        if not out:
            raise ReplyParseError(f"judge reply has no usable verdict for {', '.join(child_of)}")
        return out


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        return True if v in _YES else False if v in _NO else None
    return None


def _as_score(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(min(10.0, max(0.0, value)))
