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

_SPELLING = {"grey": "gray", "colour": "color", "metalic": "metallic"}


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
    """Lower-case, fix spellings, split "a and b" / "a, b" into separate attributes."""
    parts = re.split(r"\s*(?:,|\band\b|&)\s*", text.strip().lower())
    out = []
    for p in parts:
        p = " ".join(_SPELLING.get(w, w) for w in p.split())
        if p and p not in out:
            out.append(p)
    return out


def attribute_category(attr: str) -> str | None:
    """The category of a known attribute, or None for words outside the vocabulary."""
    return _attribute_table().get(attr)


def attributes_in_category(category: str) -> list[str]:
    return sorted(w for w, c in _attribute_table().items() if c == category)


def is_countable(label: str) -> bool:
    """Whether "How many X?" makes sense: a concrete thing, not a role like "batter"."""
    label = label.strip().lower()
    if label in _countable():
        return True
    return label.endswith("s") and label[:-1] in _countable()
