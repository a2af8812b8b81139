"""Cheap rule checks run on every evolved item before the judge sees it.

Each rule is a pure function `(child, parent, record) -> reason | None`. `check_rules`
runs them in order and turns the first failure into a rejecting `Verdict` whose `rule`
names the check, so the rejection says which rule fired and why.
"""

from __future__ import annotations

import re
import string
from typing import Callable

from evol.records import Item, Record, Verdict

Rule = Callable[[Item, Item, Record], "str | None"]

STOP_WORDS = frozenset("""
a an the and or but nor so yet of to in on at by for with from into onto upon about as than then
is are was were be been being am do does did done have has had having will would shall should can
could may might must it its this that these those there here i me my you your he him his she her
we us our they them their what which who whom whose where when why how whether if also just very
too some any all each every such not only own same other more most
""".split())

_REFUSAL = re.compile(
    r"\b(sorry|i\s+cannot|i\s+can\s*not|i\s+can't|i\s+am\s+unable|i'm\s+unable|i\s+am\s+not\s+able"
    r"|as\s+an\s+ai|as\s+a\s+language\s+model)\b",
    re.I,
)
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”")
_WORDS = re.compile(r"\w+")
_OPTION_LABEL = re.compile(r"\(?[A-Za-z]\)?[.)]?")

SCAFFOLD = re.compile(
    r"#\s*(given|rewritten|created)\b"
    r"|\bgiven\s+(prompt|question|item|q\s*&\s*a(\s*&\s*s)?|qa)s?\b"
    r"|\b(rewritten|original)\s+(prompt|question|item|answer|q\s*&\s*a(\s*&\s*s)?|qa)s?\b"
    r"|\brewritten\s+version\b"
    r"|\bsource_id\b",
    re.I,
)
SOURCE_LEAK = re.compile(
    r"\b(according\s+to|based\s+on|as\s+(stated|mentioned|described|noted)\s+in|from)\s+the\s+"
    r"((provided|given|image)\s+)?(caption|description|annotations?|object\s+list|metadata)\b"
    r"|\bthe\s+(image\s+)?caption\b|\bbounding\s+box(es)?\b"
    r"|\bthe\s+description\s+(says|states|mentions|notes)\b"
    r"|\b(provided|given)\s+(description|caption|object\s+list)\b"
    r"|\bdetected\s+objects\b",
    re.I,
)
_NUM = r"\s*(-?(?:\d+(?:\.\d*)?|\.\d+))\s*"
COORDS = re.compile(r"[\[(]" + ",".join([_NUM] * 4) + r"[\])]")
BOX_TOLERANCE = 0.005


def _texts(item: Item) -> list[str]:
    """Every piece of text the item shows to a learner or a model."""
    out = [item.question, item.answer, *item.options]
    for s in item.steps:
        out += [s.manipulation or "", s.description]
    return out


def _joined(item: Item) -> str:
    return "\n".join(_texts(item))


def _normal(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def _content_words(text: str) -> list[str]:
    return [w for w in _WORDS.findall(text.lower()) if w not in STOP_WORDS]


def boxes_in(text: str) -> list[tuple[float, ...]]:
    """Every bracketed or parenthesised list of exactly four numbers, e.g. [0.12, 0.3, 0.5, 0.9]."""
    return [tuple(float(v) for v in m.groups()) for m in COORDS.finditer(text)]


def _fmt(box: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


# --------------------------------------------------------------------- the rules
def empty_text(child: Item, parent: Item, record: Record) -> str | None:
    """Question or answer empty, or made only of punctuation and stop words."""
    for field in ("question", "answer"):
        text = getattr(child, field)
        if not text.strip():
            return f"the {field} is empty"
        if not _content_words(text):
            if field == "answer" and child.options and _OPTION_LABEL.fullmatch(text.strip()):
                continue  # a bare option label such as "B." answers a multiple-choice item
            return f"the {field} {text.strip()[:60]!r} has only punctuation and stop words"
    return None


def refusal(child: Item, parent: Item, record: Record) -> str | None:
    """A short answer that apologises or declines (quoted text, e.g. a sign being read, is ignored)."""
    answer = child.answer
    if len(answer.split()) >= 80:
        return None
    m = _REFUSAL.search(_QUOTED.sub(" ", answer))
    return f"the answer reads as a refusal ({m.group(0)!r} in a short reply)" if m else None


def scaffold_words(child: Item, parent: Item, record: Record) -> str | None:
    """Words from the rewriting instructions leaked into the item."""
    m = SCAFFOLD.search(_joined(child))
    return f"it copies instruction wording: {m.group(0)!r}" if m else None


def source_leak(child: Item, parent: Item, record: Record) -> str | None:
    """The item talks about the caption, the object list or boxes instead of the picture."""
    m = SOURCE_LEAK.search(_joined(child))
    return f"it refers to the annotations instead of the picture: {m.group(0)!r}" if m else None


def foreign_coordinates(child: Item, parent: Item, record: Record) -> str | None:
    """Coordinates that are not among the record's boxes (nor in the parent item).

    Boxes in the parent's text count as given: they came from the seed data, or passed
    this same check in an earlier round.
    """
    found = boxes_in(_joined(child))
    if not found:
        return None
    given = [tuple(o.box) for o in record.objects if o.box] + boxes_in(_joined(parent))
    if not given:
        return f"it mentions coordinates {_fmt(found[0])} but this picture has no boxes"
    for box in found:
        if not any(all(abs(a - b) <= BOX_TOLERANCE + 1e-9 for a, b in zip(box, g)) for g in given):
            return f"coordinates {_fmt(box)} are not among the given boxes"
    return None


def no_information_gain(child: Item, parent: Item, record: Record) -> str | None:
    """Question and answer unchanged apart from case, spacing and punctuation."""
    if _normal(child.question) == _normal(parent.question) and _normal(child.answer) == _normal(parent.answer):
        return "the question and answer are the same as before"
    return None


RULES: list[tuple[str, Rule]] = [
    ("empty", empty_text),
    ("refusal", refusal),
    ("scaffold", scaffold_words),
    ("source_leak", source_leak),
    ("coordinates", foreign_coordinates),
    ("no_gain", no_information_gain),
]


def check_rules(child: Item, parent: Item, record: Record) -> Verdict | None:
    """The first failing rule as a rejecting verdict, or None when every rule passes."""
    for name, rule in RULES:
        reason = rule(child, parent, record)
        if reason:
            return Verdict(improved=False, score=0, reason=reason, rule=name)
    return None
