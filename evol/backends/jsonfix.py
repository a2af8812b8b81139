"""Getting JSON out of a model's answer, and asking for it when the server cannot.

Servers that honour ``response_format`` return bare JSON. Servers (or models) that do
not wrap it in prose or a fenced block, or leave a trailing comma. `extract_json` tries,
in order: the whole text; each fenced block (``json``-tagged first); each balanced
``{...}``/``[...]`` found by a string-aware scan. Every candidate is also retried with
trailing commas removed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from evol.backends.base import ReplyParseError

SCHEMA_PHRASE = "follows this JSON schema:"
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n?(.*?)```", re.S)
_MAX_SCAN_STARTS = 32  # bounds the work spent on long, JSON-free replies


def schema_instruction(schema: dict[str, Any]) -> str:
    """The prompt text that replaces ``response_format`` on servers without it."""
    compact = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return (
        "Answer with a single JSON value and nothing else (no explanations) that "
        f"{SCHEMA_PHRASE} {compact}"
    )


def extract_json(text: str) -> Any:
    """The first JSON value found in `text`; `ReplyParseError` with an excerpt if none."""
    if text is None:
        raise ReplyParseError("empty reply (no content)")
    stripped = text.strip()
    if not stripped:
        raise ReplyParseError("empty reply (no content)")
    ok, value = _loads(stripped)
    if ok:
        return value
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    blocks.sort(key=lambda b: b[0] != "json")  # stable: json-tagged blocks first
    for _, body in blocks:
        ok, value = _loads(body.strip())
        if ok:
            return value
    for candidate in _balanced(text):
        ok, value = _loads(candidate)
        if ok:
            return value
    excerpt = " ".join(stripped.split())
    if len(excerpt) > 120:
        excerpt = excerpt[:117] + "..."
    raise ReplyParseError(f"no JSON found in the reply: {excerpt!r}")


def _loads(candidate: str) -> tuple[bool, Any]:
    if not candidate:
        return False, None
    try:
        return True, json.loads(candidate)
    except ValueError:
        pass
    fixed = strip_trailing_commas(candidate)
    if fixed != candidate:
        try:
            return True, json.loads(fixed)
        except ValueError:
            pass
    return False, None


def strip_trailing_commas(text: str) -> str:
    """Drop commas that directly precede ``}`` or ``]`` (outside strings)."""
    out: list[str] = []
    in_str = escape = False
    pending = -1  # index in `out` of a comma that may turn out to be trailing
    for ch in text:
        if in_str:
            out.append(ch)
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
            continue
        if ch in "}]" and pending >= 0:
            out[pending] = ""
        if ch == ",":
            pending = len(out)
        elif not ch.isspace():
            pending = -1
        if ch == '"':
            in_str = True
        out.append(ch)
    return "".join(out)


def _balanced(text: str):
    """Yield balanced ``{...}``/``[...]`` spans, from the leftmost opening bracket on."""
    start, tried = 0, 0
    while tried < _MAX_SCAN_STARTS:
        starts = [i for i in (text.find("{", start), text.find("[", start)) if i >= 0]
        if not starts:
            return
        begin = min(starts)
        end = _match(text, begin)
        tried += 1
        if end is not None:
            yield text[begin:end + 1]
        start = begin + 1


def _match(text: str, begin: int) -> int | None:
    """Index of the bracket closing the one at `begin`, or None (string-aware)."""
    stack: list[str] = []
    in_str = escape = False
    pairs = {"{": "}", "[": "]"}
    for i in range(begin, len(text)):
        ch = text[i]
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None
            if not stack:
                return i
    return None
