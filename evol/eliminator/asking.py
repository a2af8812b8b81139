"""What the later checks share: questions shown under short ids, a JSON schema of one
answer per id, and answers matched back to their items by that id.

The blind check, the answer check and the comparison of long answers each put several
items of one record and round into one call, as the judge does; a missing or unreadable
answer costs only its own item.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

from evol.backends.base import Reply, ReplyParseError
from evol.operators.base import reply_entries, short_ids
from evol.records import Item

T = TypeVar("T")
_JSON = json.JSONEncoder(ensure_ascii=False)


def question_line(qid: str, item: Item) -> str:
    """One question as the model sees it: its id, the question and its options, never the answer."""
    view: dict[str, Any] = {"id": qid, "question": item.question}
    if item.options:
        view["options"] = item.options
    return _JSON.encode(view)


def encode(value: Any) -> str:
    return _JSON.encode(value)


def list_schema(key: str, prefix: str, n: int, fields: dict[str, dict]) -> dict[str, Any]:
    """{key: [one object per id prefix1..prefixN, with `fields`]}."""
    entry = {
        "type": "object",
        "properties": {"id": {"type": "string", "enum": short_ids(prefix, n)}, **fields},
        "required": ["id", *fields],
    }
    return {
        "type": "object",
        "properties": {key: {"type": "array", "minItems": n, "maxItems": n, "items": entry}},
        "required": [key],
    }


def list_validator(key: str, problem: Callable[[dict], str | None], prefix: str, n: int) -> Callable[[Any], str | None]:
    """A request's `validate`: why a parsed reply is unusable (then the backend asks again):
    not a list, an unusable entry, or an id missing."""
    wanted = set(short_ids(prefix, n))

    def validate(data: Any) -> str | None:
        if not isinstance(data, dict) or not isinstance(data.get(key), list) or not data[key]:
            return f"the reply has no {key!r} list"
        for entry in data[key]:
            if not isinstance(entry, dict):
                return f"an entry of {key!r} is not an object"
            why = problem(entry)
            if why:
                return why
        got = {str(e.get("id", "")).strip().lower() for e in data[key]}
        missing = sorted(wanted - got)
        return f"the reply has no entry for {', '.join(missing)}" if missing else None

    return validate


def by_id(reply: Reply, who: str, key: str, prefix: str, item_ids: list[str],
          read: Callable[[dict], T | None]) -> dict[str, T]:
    """Entries matched to item ids through their short ids; unknown, repeated or unreadable
    entries are skipped. Raises `ReplyParseError` when nothing usable came back."""
    entries = reply_entries(reply, who, key)
    real = dict(zip(short_ids(prefix, len(item_ids)), item_ids))
    out: dict[str, T] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        item_id = real.get(entry["id"].strip().lower())
        if item_id is None or item_id in out:
            continue
        value = read(entry)
        if value is not None:
            out[item_id] = value
    if not out:
        raise ReplyParseError(f"{who} reply has no usable entry for {', '.join(real)}")
    return out
