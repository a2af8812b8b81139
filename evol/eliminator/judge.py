"""The judge: one model call compares every evolved item of a round with its parent.

Each pair is shown under the child's short id "e1".."en" and every verdict is matched back
by that id, never by position: a missing, unknown or repeated verdict affects only itself.
The judge sees the picture (unless told not to), the caption and the object list, and the
parent is the previous round's version of the item, not the seed.

A verdict is never taken at face value (`verdict_problem`): a score outside 0-10, "improved"
with a score under 1 (the prompt keeps 0 for rewrites that are not improved) or an empty
reason makes the whole reply unusable. The request's `validate` (`check_verdicts`) has the
backend ask again; a reply that stays so is a judge failure, never clamped into range.
"""

from __future__ import annotations

import json
import math
from typing import Any

from evol.backends.base import Message, Reply, ReplyParseError, Request, Sampling, Text
from evol.operators.base import (format_objects, image_parts, item_view, picture_note, reply_entries, schema_for,
                                 short_ids)
from evol.prompts import load_prompt
from evol.records import Item, Record, Verdict

JUDGE_PROMPT = "judge"

# json.dumps(value, ensure_ascii=False), without building an encoder per call
_JSON = json.JSONEncoder(ensure_ascii=False)
_YES = {"yes", "true", "y", "improved"}
_NO = {"no", "false", "n", "not improved"}


class Judge:
    """The eliminator's model half: decides whether each evolved item improved on its parent.

    `build` makes one request per record and round showing every (parent, child) pair
    under short ids, with the picture, caption and objects; `parse` matches each verdict
    back to its child by id (improved, a 0-10 score, a reason), so a bad verdict costs only
    its own item. Items the judge does not keep end their line of evolution there: a chain
    goes on from its last kept version. Evolve-then-eliminate is MMEvol's round (arXiv
    2409.05840), after the elimination step of WizardLM's Evol-Instruct (arXiv 2304.12244);
    the cheap rule checks (`evol.eliminator.rules`) run before it.
    """

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
            pairs="\n".join(_JSON.encode(s) for s in shown),
            n=len(pairs),
        )
        note = picture_note(record, send_image)
        ask = f"Give your verdicts on {', '.join(ids)}."
        user = (*image_parts(record, send_image), Text(f"{note}\n{ask}".strip()))
        return Request(
            messages=(Message.text("system", system), Message("user", user)),
            schema=schema_for(self, len(pairs)),  # one object per count: see Operator.shared_schema
            schema_name=self.schema_name,
            sampling=sampling,
            template=prompt.id,
            tag=f"{record.id}/r{round}/judge",
            validate=check_verdicts,
        )

    def parse(self, reply: Reply, pairs: list[tuple[Item, Item]]) -> dict[str, Verdict]:
        """Verdicts keyed by the child's real item id.

        Unknown, repeated (after the first) or unreadable verdicts (no yes/no, no number)
        are ignored; a child with no usable verdict is simply absent from the result.
        Raises `ReplyParseError` when the reply is not the expected JSON, holds no usable
        verdict at all, or holds an invalid one (`verdict_problem`; a reply that reached
        here without the request's `validate`, e.g. from an older cache).
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
            problem = verdict_problem(entry)
            if problem:
                raise ReplyParseError(f"judge gave an invalid verdict: {problem}")
            out[child_id] = Verdict(improved=improved, score=score, reason=str(entry["reason"]).strip())
        if not out:
            raise ReplyParseError(f"judge reply has no usable verdict for {', '.join(child_of)}")
        return out


def verdict_problem(entry: Any) -> str | None:
    """Why one verdict cannot be used, or None. Its id is the judge's ("e2").

    The score must lie in 0-10 (never clamped), an improved rewrite must score at least 1
    (the prompt gives 0 only to a rewrite that is not improved), and the reason must say
    something.
    """
    if not isinstance(entry, dict):
        return f"a verdict is {type(entry).__name__}, not an object"
    eid = entry.get("id")
    name = f"verdict {eid.strip()}" if isinstance(eid, str) and eid.strip() else "a verdict without an id"
    raw_improved, raw_score = entry.get("improved"), entry.get("score")
    improved, score = _as_bool(raw_improved), _as_score(raw_score)
    if improved is None:
        return f"{name}: improved {json.dumps(raw_improved, default=str)[:40]} is not true or false"
    if score is None:
        return f"{name}: score {json.dumps(raw_score, default=str)[:40]} is not a number"
    if score < 0:
        return f"{name}: score {score:g} is below the minimum 0"
    if score > 10:
        return f"{name}: score {score:g} is above the maximum 10"
    if improved and score < 1:
        return f"{name}: improved is true with score {score:g} (an improved rewrite scores 1-10; 0 means not improved)"
    reason = entry.get("reason")
    if not isinstance(reason, str):
        return f"{name}: gives no reason"
    if not reason.strip():
        return f"{name}: the reason is empty"
    return None


def check_verdicts(data: Any) -> str | None:
    """The judge request's `validate`: why a parsed reply is unusable, or None."""
    if not isinstance(data, dict) or not isinstance(data.get("verdicts"), list):
        return "judge reply has no 'verdicts' list"
    if not data["verdicts"]:
        return "judge reply has no verdicts"
    for entry in data["verdicts"]:
        problem = verdict_problem(entry)
        if problem:
            return problem
    return None


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
    return float(value)  # never clamped: `verdict_problem` refuses a score outside 0-10
