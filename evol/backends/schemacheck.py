"""Checks an answer against its JSON schema, for what a server may not have enforced.

A server that honours ``response_format`` json_schema constrains the *shape* of an answer,
but many leave out the values (``minimum``/``maximum``, ``enum``, lengths, item counts),
and in prompt mode nothing is enforced at all. `schema_problem` says, in one readable
line, the first way an answer breaks its schema: "verdicts[0].score 18 is above the
maximum 10".

This is the subset of JSON Schema that evol's own schemas use, written out rather than
taken from ``jsonschema`` (not a dependency of evol): the reasons name the field and the
value the way a log line or a rejects file wants them, and the check costs a plain walk
over a small answer. Understood: ``type`` (one or a list), ``enum``, ``const``,
``properties``, ``required``, ``additionalProperties`` (false or a schema), ``items`` (one
schema), ``minItems``/``maxItems``, ``minimum``/``maximum``,
``exclusiveMinimum``/``exclusiveMaximum`` (numbers), ``minLength``/``maxLength``,
``pattern``, ``anyOf``/``oneOf`` (both read as "at least one fits"), ``allOf`` and local
``$ref`` ("#/..."). Other keywords are ignored, so an unknown keyword never fails an answer.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_NAMES = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
          "number": "a number", "boolean": "true or false", "null": "null"}


def schema_problem(schema: dict[str, Any] | None, data: Any) -> str | None:
    """The first way `data` breaks `schema`, in words; None when it fits (or no schema)."""
    if not isinstance(schema, dict):
        return None
    return _check(schema, data, "", schema, 0)


def _where(path: str) -> str:
    return path or "the answer"


def _show(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return _json_type(value) == kind


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 32:
        ref = node["$ref"]
        if not ref.startswith("#"):
            return {}  # a remote reference: not checked
        target: Any = root
        for part in (p for p in ref[1:].split("/") if p):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part, {}) if isinstance(target, dict) else {}
        node, seen = target, seen + 1
    return node


def _check(node: Any, value: Any, path: str, root: dict[str, Any], depth: int) -> str | None:
    node = _resolve(node, root)
    if not isinstance(node, dict) or depth > 64:
        return None
    where = _where(path)

    kind = node.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is(value, k) for k in kinds if isinstance(k, str)):
            wanted = " or ".join(_NAMES.get(k, str(k)) for k in kinds)
            return f"{where} should be {wanted}, got {_json_type(value)} {_show(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} {_show(value)} is not a finite number"

    if "const" in node and value != node["const"]:
        return f"{where} {_show(value)} is not {_show(node['const'])}"
    enum = node.get("enum")
    if isinstance(enum, list) and not any(value == e and type(value) is type(e) or
                                          (_is(value, "number") and _is(e, "number") and value == e)
                                          for e in enum):
        return f"{where} {_show(value)} is not one of {', '.join(_show(e, 30) for e in enum[:12])}"

    if _is(value, "number"):
        if _is(node.get("minimum"), "number") and value < node["minimum"]:
            return f"{where} {_show(value)} is below the minimum {_show(node['minimum'])}"
        if _is(node.get("maximum"), "number") and value > node["maximum"]:
            return f"{where} {_show(value)} is above the maximum {_show(node['maximum'])}"
        if _is(node.get("exclusiveMinimum"), "number") and value <= node["exclusiveMinimum"]:
            return f"{where} {_show(value)} is not above {_show(node['exclusiveMinimum'])}"
        if _is(node.get("exclusiveMaximum"), "number") and value >= node["exclusiveMaximum"]:
            return f"{where} {_show(value)} is not below {_show(node['exclusiveMaximum'])}"

    if isinstance(value, str):
        low, high = node.get("minLength"), node.get("maxLength")
        if _is(low, "integer") and len(value) < low:
            return f"{where} has {len(value)} characters, fewer than the minimum {low}"
        if _is(high, "integer") and len(value) > high:
            return f"{where} has {len(value)} characters, more than the maximum {high}"
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            try:
                found = re.search(pattern, value) is not None
            except re.error:
                found = True  # a pattern Python cannot read is not held against the answer
            if not found:
                return f"{where} {_show(value)} does not match {pattern!r}"

    if isinstance(value, list):
        low, high = node.get("minItems"), node.get("maxItems")
        if _is(low, "integer") and len(value) < low:
            return f"{where} has {len(value)} items, fewer than the minimum {low}"
        if _is(high, "integer") and len(value) > high:
            return f"{where} has {len(value)} items, more than the maximum {high}"
        items = node.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                problem = _check(items, item, f"{path}[{i}]", root, depth + 1)
                if problem:
                    return problem

    if isinstance(value, dict):
        for name in node.get("required") or []:
            if isinstance(name, str) and name not in value:
                return f"{where} lacks the required field {name!r}"
        props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        extra = node.get("additionalProperties")
        for name, sub in value.items():
            sub_path = f"{path}.{name}" if path else str(name)
            if name in props:
                problem = _check(props[name], sub, sub_path, root, depth + 1)
            elif extra is False:
                problem = f"{where} has the unexpected field {name!r}"
            elif isinstance(extra, dict):
                problem = _check(extra, sub, sub_path, root, depth + 1)
            else:
                problem = None
            if problem:
                return problem

    for sub in node.get("allOf") or []:
        problem = _check(sub, value, path, root, depth + 1)
        if problem:
            return problem
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and options:
            problems = [_check(o, value, path, root, depth + 1) for o in options]
            if all(problems):
                return problems[0] if len(problems) == 1 else f"{where} fits none of its {len(problems)} forms ({problems[0]})"
    return None
