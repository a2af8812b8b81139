"""Interaction evolution: recast an item into the best-fitting of seventeen task forms.

The model must write one of `TASK_FORMS` in "format": the prompt and the schema list them
(`form_schema`), but the schema lets other text through. `task_form` maps a form written
another way to the one it names (case, hyphens/underscores/slashes, plurals, a trailing
"question" or "task", a small synonym table, near spellings); a form near none of them is
unusable, and `form_problem` says why, naming the seventeen. MM-Instruct seeding
(`evol.seeding.instruct`) uses the same.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from evol.backends.base import Reply, ReplyParseError
from evol.operators.base import Operator, ParseResult
from evol.records import Item, Record

TASK_FORMS = (
    "region selection", "missing object selection", "text-image matching", "object-region matching",
    "completeness of response", "fill in the blank", "image style classification", "art type",
    "rationale generation", "text detection", "text translation", "coreference resolution",
    "instruction following", "depth order", "relative distance", "creative content generation",
    "multiple choice",
)


# other ways models name the forms (keys as `_form_key` writes them)
FORM_SYNONYMS: dict[str, str] = {
    # a closed question with fixed choices; there is no separate yes/no form, and the prompt
    # names multiple choice as the form to use when none fits well
    "mcq": "multiple choice", "multi choice": "multiple choice", "multichoice": "multiple choice",
    "multiple option": "multiple choice", "single choice": "multiple choice", "choice question": "multiple choice",
    "multiple select": "multiple choice", "true false": "multiple choice", "true or false": "multiple choice",
    "yes no": "multiple choice", "yesno": "multiple choice", "yes or no": "multiple choice",
    "binary choice": "multiple choice", "boolean": "multiple choice",
    "missing object": "missing object selection", "odd one out": "missing object selection",
    "absent object selection": "missing object selection", "missing item selection": "missing object selection",
    "image text matching": "text-image matching", "text to image matching": "text-image matching",
    "caption matching": "text-image matching", "statement matching": "text-image matching",
    "object to region matching": "object-region matching", "region matching": "object-region matching",
    "box selection": "region selection", "bounding box selection": "region selection",
    "completeness": "completeness of response", "response completeness": "completeness of response",
    "answer completeness": "completeness of response", "completeness check": "completeness of response",
    "fill in blank": "fill in the blank", "fill the blank": "fill in the blank", "fill blank": "fill in the blank",
    "cloze": "fill in the blank", "gap fill": "fill in the blank",
    "style classification": "image style classification", "image style": "image style classification",
    "art classification": "art type", "artwork type": "art type", "art medium": "art type",
    "rationale": "rationale generation", "explanation": "rationale generation",
    "ocr": "text detection", "text recognition": "text detection", "text reading": "text detection",
    "scene text": "text detection", "translation": "text translation",
    "coreference": "coreference resolution", "pronoun resolution": "coreference resolution",
    "reference resolution": "coreference resolution",
    "depth ordering": "depth order", "depth ranking": "depth order", "depth sorting": "depth order",
    "distance comparison": "relative distance",
    "creative writing": "creative content generation", "creative generation": "creative content generation",
    "creative content": "creative content generation",
}
_FILLER = ("question", "task", "form", "format", "item", "problem", "exercise")
_NEAR = 0.85  # difflib ratio for a misspelt form ("multiple choise", "depth oder")


def _form_key(text: str) -> str:
    """Lower case, words split at spaces, hyphens, underscores and slashes, plurals made singular."""
    text = re.sub(r"[-_/&+|,.;:]+", " ", text.lower())
    words = re.sub(r"[^a-z0-9 ]+", "", text).split()
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")) else w
                    for w in words)


_INDEX: dict[str, str] = {**{_form_key(k): v for k, v in FORM_SYNONYMS.items()},
                          **{_form_key(f): f for f in TASK_FORMS}}


def task_form(text: Any) -> str | None:
    """The task form `text` names, spelled as in `TASK_FORMS`, or None when it is near none."""
    if not isinstance(text, str):
        return None
    key = _form_key(text)
    words = key.split()
    while words and words[-1] in _FILLER and len(words) > 1 and " ".join(words) not in _INDEX:
        words.pop()  # "multiple choice question" -> "multiple choice"; "art type" stays
    key = " ".join(words)
    if not key:
        return None
    if key in _INDEX:
        return _INDEX[key]
    contained = [k for k in _INDEX if f" {k} " in f" {key} "]  # "a depth order task about cars"
    if contained:
        return _INDEX[max(contained, key=lambda k: (len(k.split()), len(k)))]
    near = difflib.get_close_matches(key, list(_INDEX), n=1, cutoff=_NEAR)
    return _INDEX[near[0]] if near else None


def form_schema() -> dict[str, Any]:
    """The JSON schema of a written task form: one of `TASK_FORMS`, or other text.

    The forms come first, so a server that fills in values from the schema picks one of
    them; any other text still fits, so a server that does not enforce enums does not get
    its whole reply refused (and asked again) for one form written another way: `task_form`
    maps it, or the item alone is dropped with `form_problem`.
    """
    return {"anyOf": [{"type": "string", "enum": list(TASK_FORMS)}, {"type": "string"}]}


def form_problem(text: str) -> str:
    """Why a written form cannot be used: it names it and the seventeen allowed."""
    return (f"task form {text.strip()[:60]!r} is not one of the {len(TASK_FORMS)} task forms and none is near it "
            f"(allowed: {', '.join(TASK_FORMS)})")


class Interaction(Operator):
    """Interaction evolution: rewrites an item into the one of seventeen task forms
    (`TASK_FORMS`: region selection, fill in the blank, depth order, ...) that fits it best,
    so the data teaches a model to follow many kinds of instruction, not only free
    questions. The third of MMEvol's evolution directions (arXiv 2409.05840), an in-breadth
    evolution in the sense of WizardLM's Evol-Instruct (arXiv 2304.12244): new forms of
    task, not harder ones.
    """

    name = "interaction"
    objective = "evolve_interaction"

    def schema(self, n: int) -> dict[str, Any]:
        schema = super().schema(n)
        entry = schema["properties"]["items"]["items"]
        entry["properties"]["format"] = form_schema()
        return schema

    def parse(self, record: Record, items: list[Item], round: int, reply: Reply) -> ParseResult:
        """As every operator, then each child's form mapped onto `TASK_FORMS`; a child
        whose form is near none of them is dropped with the reason."""
        result = super().parse(record, items, round, reply)
        kept: list[Item] = []
        for child in result.items:
            if child.format is None:
                kept.append(child)
                continue
            form = task_form(child.format)
            if form is None:
                result.problems.append(f"{self.name} rewrite of item {child.parent} is unusable: "
                                       f"{form_problem(child.format)}")
                continue
            child.format = form
            kept.append(child)
        result.items = kept
        if not kept:
            raise ReplyParseError(f"{self.name} reply has no usable item: {'; '.join(result.problems[:3])}")
        return result
