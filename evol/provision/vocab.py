"""Vocabularies: attribute categories and countable object names.

The word lists live in `evol/provision/data/` (written for this project); this module
loads them once and answers the questions generators ask.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

CATEGORIES = ("color", "size", "activity", "state", "material", "texture", "mood", "shape",
              "orientation", "gender", "other")

_SPELLING = {"grey": "gray", "colour": "color", "coloured": "colored",
             "metalic": "metallic", "multicoloured": "multicolored", "multi-colored": "multicolored",
             "aluminium": "aluminum", "greyish": "grayish"}
_EDGE_PUNCT = " .!?:\"'()[]{}-_"


@lru_cache(maxsize=1)
def _attribute_table() -> dict[str, str]:
    """attribute word -> category."""
    data = json.loads((DATA / "attributes.json").read_text())
    table: dict[str, str] = {}
    for category in CATEGORIES:
        for word in data.get(category, []):
            table.setdefault(word, category)
    return table


@lru_cache(maxsize=1)
def _countable() -> frozenset[str]:
    words = (DATA / "countable.txt").read_text().split("\n")
    return frozenset(w.strip().lower() for w in words if w.strip() and not w.startswith("#"))


def normalize_attribute(text: str) -> list[str]:
    """Lower-case, fix spellings, split "a and b" / "a, b" / "a & b" into separate attributes.

    Stray punctuation at either end is dropped and inner spaces collapsed, so
    " Grey and White." gives ["gray", "white"].
    """
    parts = re.split(r"\s*(?:,|;|/|\band\b|&)\s*", str(text).strip().lower())
    out = []
    for p in parts:
        p = " ".join(_SPELLING.get(w, w) for w in p.strip(_EDGE_PUNCT).split())
        if p and p not in out:
            out.append(p)
    return out


def normalize_label(text: str) -> str:
    """An object name as the generators compare it: lower case, single spaces."""
    return " ".join(str(text).strip().lower().split())


_TABLE: dict[str, str] | None = None  # _attribute_table(), kept here once loaded


def attribute_category(attr: str) -> str | None:
    """The category of a known attribute, or None for words outside the vocabulary."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _attribute_table()
    return _TABLE.get(attr)


@lru_cache(maxsize=None)
def attributes_in_category(category: str) -> tuple[str, ...]:
    return tuple(sorted(w for w, c in _attribute_table().items() if c == category))


_IRREGULAR_PLURALS = {"men": "man", "women": "woman", "people": "person", "children": "child",
                      "feet": "foot", "geese": "goose", "mice": "mouse", "knives": "knife",
                      "leaves": "leaf", "shelves": "shelf", "teeth": "tooth", "sheep": "sheep",
                      "fish": "fish", "deer": "deer"}


def singular_candidates(label: str) -> list[str]:
    """Possible singular forms of an English noun phrase (its last word is the one inflected)."""
    label = normalize_label(label)
    head, _, last = label.rpartition(" ")
    forms = [last]
    if last in _IRREGULAR_PLURALS:
        forms.append(_IRREGULAR_PLURALS[last])
    if last.endswith("ies") and len(last) > 4:
        forms.append(last[:-3] + "y")
    if last.endswith("es") and len(last) > 3:
        forms.append(last[:-2])
    if last.endswith("s") and not last.endswith("ss") and len(last) > 2:
        forms.append(last[:-1])
    return [f"{head} {f}" if head else f for f in dict.fromkeys(forms)]


@lru_cache(maxsize=1 << 14)
def is_countable(label: str) -> bool:
    """Whether "How many X?" makes sense: a concrete thing, not a role like "batter".

    Accepts the singular names in `data/countable.txt` and their plurals (regular ones and
    a few irregular: men, people, children, ...).
    """
    return any(form in _countable() for form in singular_candidates(label))


def countable_names() -> list[str]:
    return sorted(_countable())


_PLURAL_OF = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
    "foot": "feet", "tooth": "teeth", "goose": "geese", "sheep": "sheep", "deer": "deer",
    "fish": "fish", "knife": "knives", "leaf": "leaves", "shelf": "shelves", "wolf": "wolves",
    "scarf": "scarves", "loaf": "loaves", "calf": "calves", "half": "halves", "human": "humans",
    "glasses": "glasses", "pants": "pants", "jeans": "jeans", "scissors": "scissors",
    "skis": "skis", "shorts": "shorts",
}


@lru_cache(maxsize=1 << 14)
def plural(label: str) -> str:
    """English plural of a (possibly multi-word) object name: "traffic light" -> "traffic lights"."""
    words = label.split()
    if not words:
        return label
    last = words[-1]
    if last in _PLURAL_OF:
        last = _PLURAL_OF[last]
    elif last.endswith("man"):
        last = last[:-3] + "men"
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join(words[:-1] + [last])
