"""Cheap rule checks run on every evolved item before the judge sees it.

Each rule is a pure function `(child, parent, record) -> reason | None`. `check_rules`
runs them in order and turns the first failure into a rejecting `Verdict` whose `rule`
names the check, so the rejection says which rule fired and why.
"""

from __future__ import annotations

import re
import string
from typing import Callable

from evol.eliminator.grounding import grounding_count, grounding_object
from evol.records import Item, Record, Verdict, format_box

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
# Words of which every match of the pattern above holds one (lower case): see `_search`.
# Keep them in step with the patterns (tests/test_rules.py checks each alternative).
_SCAFFOLD_NEEDLES = ("#", "given", "rewritten", "original", "source_id")
_SOURCE_LEAK_NEEDLES = ("caption", "description", "annotation", "object", "metadata", "bounding")
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


def _search(pattern: re.Pattern, needles: tuple[str, ...], text: str) -> re.Match | None:
    """`pattern.search(text)`, skipped when ASCII text holds none of the words every match
    needs (`needles`, lower case). The case-insensitive alternations scan slowly; almost no
    item holds any of their words. For ASCII text, IGNORECASE matching is lower-casing, so
    the skip never changes the outcome; other text (where IGNORECASE also pairs "ſ" with
    "s" and "ı" with "i") is always searched."""
    if text.isascii():
        low = text.lower()
        if not any(n in low for n in needles):
            return None
    return pattern.search(text)


def scaffold_words(child: Item, parent: Item, record: Record) -> str | None:
    """Words from the rewriting instructions leaked into the item."""
    m = _search(SCAFFOLD, _SCAFFOLD_NEEDLES, _joined(child))
    return f"it copies instruction wording: {m.group(0)!r}" if m else None


def source_leak(child: Item, parent: Item, record: Record) -> str | None:
    """The item talks about the caption, the object list or boxes instead of the picture."""
    m = _search(SOURCE_LEAK, _SOURCE_LEAK_NEEDLES, _joined(child))
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
        return f"it mentions coordinates {format_box(found[0])} but this picture has no boxes"
    for box in found:
        if not any(all(abs(a - b) <= BOX_TOLERANCE + 1e-9 for a, b in zip(box, g)) for g in given):
            return f"coordinates {format_box(box)} are not among the given boxes"
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
    ("grounding-object", grounding_object),  # evol/eliminator/grounding.py
    ("grounding-count", grounding_count),
]


# ------------------------------------------- checks for text written from annotations
# A model that writes from a caption, an object list and region notes (SVIT, MM-Instruct
# seeding) never sees pixels, and its known faults are to talk about those notes, to ask
# for input it believes is missing, and to refuse. These checks are not in `RULES`:
# evolution keeps its own rule set unchanged.
ANNOTATION_MENTION = re.compile(
    r"\bcaptions?\b|\bbounding\s+box(es)?\b|\bregion\s+(descriptions?|notes?)\b"
    r"|\b(the|these|this|those|provided|given|above|listed|supplied)\s+(image\s+)?"
    r"(descriptions?|annotations?|object\s+list|coordinates|metadata|notes)\b"
    r"|\b(based\s+on|according\s+to|from)\s+the\s+(information|details|data)\s+(provided|given)\b"
    r"|\b(is|are|was|were)\s+(not\s+)?(described|mentioned|listed|annotated)\b",
    re.I,
)
ASKS_FOR_INPUT = re.compile(
    r"\bplease\s+(provide|share|upload|send|give)\b"
    r"|\b(no|without\s+an?|without\s+the)\s+(image|picture|photo|information|details|input|context)"
    r"(\s+(was|were|is|has\s+been|have\s+been)\s+(provided|given|attached|shared))?\b"
    r"|\byou\s+(have\s+not|haven't|did\s+not|didn't)\s+(provided|provide|shared|share|attached|attach|given|give)\b"
    r"|\bi\s+(do\s+not|don't)\s+(have|see)\s+(access\s+to\s+)?(the|an|any)\s+(image|picture|photo)\b"
    r"|\bcould\s+you\s+(provide|share|describe)\b",
    re.I,
)


# Replies meant as plain text that carry web markup or links: a model copying page text,
# or inventing pictures and sources (`<img src=...>`, `![](...)`, `<a href=...>`).
MARKUP = re.compile(
    r"</?(?:a|img|br|p|div|span|b|i|u|em|strong|h[1-6]|ul|ol|li|table|tr|td|th|iframe|script|style|figure"
    r"|figcaption|source|video|audio|picture|svg|html|body|head|meta|link|font|center|hr|pre|code"
    r"|blockquote|sup|sub|small|input|button|form|label|section|article|header|footer|nav)\b[^<>]*>"
    r"|<[a-z][a-z0-9-]*\s+[a-z-]+\s*=\s*[\"'][^<>]*>"
    r"|!\[[^\]\n]*\]\([^)\n]*\)"
    r"|\[[^\]\n]+\]\((?:https?://|www\.|/|#|mailto:)[^)\n]*\)"
    r"|&(?:nbsp|lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);",
    re.I,
)
URL = re.compile(
    r"\b(?:https?|ftp)://[^\s<>\"'()\[\]]+|\bwww\.[a-z0-9-]+(?:\.[a-z0-9-]+)+[^\s<>\"'()\[\]]*|\bdata:image/[a-z]+",
    re.I,
)


def markup(text: str) -> str | None:
    """HTML tags, markdown images or links, or HTML entities in text meant to be plain."""
    m = MARKUP.search(text)
    return f"it holds markup instead of plain text: {m.group(0)[:80]!r}" if m else None


def _notes_text(record: Record) -> str:
    """The record's own words: caption, object labels and region notes."""
    regions = [r if isinstance(r, str) else r.get("text") for r in record.meta.get("regions") or []
               if isinstance(r, (str, dict))]
    return "\n".join([record.caption, *(o.label for o in record.objects), *(r for r in regions if isinstance(r, str))])


def web_address(text: str, record: Record) -> str | None:
    """A URL (http(s)://, www., data:image) not found in the record's own notes.

    A web address the notes hold (say, read off a sign) may be repeated; any other was
    made up or copied from a web page.
    """
    given = _notes_text(record).lower()
    for m in URL.finditer(text):
        url = m.group(0).rstrip(".,;:!?")
        if url.lower() not in given:
            return f"it holds a web address the picture's notes do not: {url[:80]!r}"
    return None


def _quote(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[:n - 3] + "...")


def contradicting_turns(items: list[Item], what: str = "conversation", unit: str = "turn") -> str | None:
    """The same question (ignoring case, punctuation and spacing) asked twice with different
    answers: the turns contradict each other, so the whole set is unusable."""
    first: dict[str, tuple[int, Item]] = {}
    for k, item in enumerate(items):
        q = _normal(item.question)
        if not q:
            continue
        if q in first:
            j, earlier = first[q]
            if _normal(earlier.answer) != _normal(item.answer):
                return (f"the {what} asks {_quote(earlier.question)} twice ({unit}s {j + 1} and {k + 1}) with "
                        f"different answers ({_quote(earlier.answer, 40)} then {_quote(item.answer, 40)}): its "
                        f"{unit}s contradict each other")
        else:
            first[q] = (k, item)
    return None


def repeated_turns(items: list[Item], unit: str = "turn") -> list[tuple[int, str]]:
    """(index, reason) for each turn that repeats an earlier one's question and answer."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for k, item in enumerate(items):
        key = (_normal(item.question), _normal(item.answer))
        if not key[0]:
            continue
        if key in seen:
            out.append((k, f"{unit} {k + 1} repeats {unit} {seen[key] + 1} ({_quote(item.question)}) word for word"))
        else:
            seen[key] = k
    return out


def mentions_annotations(text: str) -> str | None:
    """Text that names the notes it was written from (caption, boxes, descriptions)."""
    m = ANNOTATION_MENTION.search(text)
    return f"it mentions its sources instead of the picture: {m.group(0)!r}" if m else None


def asks_for_input(text: str) -> str | None:
    """A reply that asks for the image or details instead of doing the task."""
    m = ASKS_FOR_INPUT.search(_QUOTED.sub(" ", text))
    return f"it asks for input instead of answering: {m.group(0)!r}" if m else None


def written_item_problem(item: Item, record: Record, *, boxes_required: bool = False,
                         given_question: bool = False) -> tuple[str, str] | None:
    """(rule, reason) for the first fault of an item written from annotations, or None.

    Reuses the evolution rules that need no parent (empty text, refusal, source leak,
    coordinates not among the record's boxes), then the checks above: markup (HTML tags,
    markdown images), web addresses the notes do not hold, annotation mentions. With
    `boxes_required` an item that cites no box at all fails too (referring questions).
    With `given_question` the question was not written by the model (a request from a
    pool, an instruction from a bank): only the reply is checked for leaks, and words the
    question itself uses ("write a caption for ...") are allowed in the answer.
    """
    blank = Item(id=item.id, question="", answer="")
    for name, rule in (("empty", empty_text), ("refusal", refusal)):
        reason = rule(item, blank, record)
        if reason:
            return name, reason
    shown = item.model_copy(update={"question": "-"}) if given_question else item
    reason = markup(_joined(shown))
    if reason:
        return "markup", reason
    reason = web_address(_joined(shown), record)
    if reason:
        return "url", reason
    for name, rule in (("source_leak", source_leak), ("coordinates", foreign_coordinates)):
        reason = rule(shown, blank, record)
        if reason and not _asked_for(reason, item, given_question):
            return name, reason
    text = _joined(shown)
    for name, check in (("source_leak", mentions_annotations), ("asks_for_input", asks_for_input)):
        reason = check(text)
        if reason and not _asked_for(reason, item, given_question):
            return name, reason
    if boxes_required and not boxes_in(_joined(item)):
        return "no_box", "it cites no box although every object it names must carry one"
    return None


def _asked_for(reason: str, item: Item, given_question: bool) -> bool:
    """The flagged words (quoted last in `reason`) also appear in a question we wrote."""
    if not given_question or "'" not in reason:
        return False
    flagged = reason[reason.index("'") + 1:reason.rindex("'")].lower()
    words = [w for w in _WORDS.findall(flagged) if w not in STOP_WORDS]
    question = item.question.lower()
    return bool(words) and all(w in question for w in words)


def check_rules(child: Item, parent: Item, record: Record) -> Verdict | None:
    """The first failing rule as a rejecting verdict, or None when every rule passes."""
    for name, rule in RULES:
        reason = rule(child, parent, record)
        if reason:
            return Verdict(improved=False, score=0, reason=reason, rule=name)
    return None
