"""Vocabularies and English for the generators: attribute categories, countable object
names, names that may stand for one thing, plurals, articles and verb phrases.

The word lists live in `evol/provision/data/` (written for this project); this module
loads them once and answers the questions generators ask. The normalisation (attribute
categories, "grey" -> "gray", countable names) follows ProVision (arXiv 2412.07012).
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


# -- words a question may ask about ------------------------------------------------------

# Attribute words too vague to grade: one viewer's "dark" is another's "black", and nearly
# anything is "colorful" or "bright". Never a right answer, a wrong option, a word of a
# reference, nor the attribute a question is about.
VAGUE_ATTRIBUTES = frozenset({"dark", "light", "pale", "colorful", "multicolored", "bright", "on", "off",
                              "distant", "blurry", "medium", "half", "clear", "reflected",
                              "partially visible", "turned"})
# Categories never asked about: "other" is a grab bag, and gender is not read off an image.
UNASKED_CATEGORIES = frozenset({"other", "gender"})


def askable_attribute(attr: str) -> bool:
    """Whether a question may be about `attr` (or name an object by it): not vague, and not
    in a category that is never asked. Words outside the vocabulary pass."""
    return attr not in VAGUE_ATTRIBUTES and attribute_category(attr) not in UNASKED_CATEGORIES


# -- English: articles and verbs ------------------------------------------------------------

_A_BEFORE = ("uni", "use", "usu", "uti", "ute", "uro", "eu", "one", "once", "ewe", "u-", "ufo", "usb")
_AN_BEFORE = ("hour", "honest", "honor", "honour", "heir")


def article(phrase: str) -> str:
    """The phrase after "a" or "an", by how its first word sounds: "an apple", "a uniform",
    "an hour", "a red car"."""
    low = phrase.lower()
    vowel = low[:1] in ("a", "e", "i", "o", "u")
    if (vowel and low.startswith(_A_BEFORE)) or (not vowel and not low.startswith(_AN_BEFORE)):
        return "a " + phrase
    return "an " + phrase


# words ending in "s" that are not verbs, and the third-person forms of base verbs seen in
# hand-written predicates ("man wear hat")
_NOT_VERBS = frozenset({"across", "towards", "toward", "upwards", "downwards", "as", "this", "its", "besides",
                        "alongside", "outside", "inside", "beside", "is", "was", "us", "plus", "versus", "thus",
                        "sideways", "backwards", "forwards", "afterwards", "always", "perhaps", "indoors",
                        "outdoors", "upstairs", "downstairs", "overseas", "less", "unless", "whereas"})
_THIRD_PERSON = {"have": "has", "wear": "wears", "hold": "holds", "ride": "rides", "carry": "carries",
                 "eat": "eats", "use": "uses", "hit": "hits", "throw": "throws", "cover": "covers",
                 "contain": "contains", "touch": "touches", "watch": "watches", "own": "owns",
                 "support": "supports", "pull": "pulls", "push": "pushes", "drink": "drinks", "catch": "catches"}


def is_finite_verb(word: str) -> bool:
    """A third-person verb that needs no "is" before it: "has", "walks", "hangs"."""
    return (word not in _NOT_VERBS and len(word) > 2 and word.endswith("s")
            and not word.endswith(("ss", "us", "is")))


def verb_phrase(pred: str) -> str:
    """A predicate as the verb phrase of a singular subject: "on" -> "is on", "is near" ->
    "is near", "walks on" -> "walks on", "have" -> "has", "riding" -> "is riding"."""
    words = pred.split()
    if not words:
        return "is"
    first = words[0]
    if first in ("is", "are"):
        return " ".join(["is"] + words[1:])
    if first in _THIRD_PERSON:
        return " ".join([_THIRD_PERSON[first]] + words[1:])
    if is_finite_verb(first):
        return pred
    return "is " + pred


# -- object names that may stand for the same thing ---------------------------------------

@lru_cache(maxsize=1)
def _label_table() -> tuple[dict[str, frozenset[str]], dict[str, frozenset[int]], dict[str, frozenset[str]]]:
    """(name -> the kinds it is, itself included when it names a kind; name -> its synonym
    groups; kind or name -> its usual parts), from `data/labels.json`."""
    data = json.loads((DATA / "labels.json").read_text())
    kinds: dict[str, set[str]] = {}
    for kind, names in data["kinds"].items():
        kinds.setdefault(kind, set()).add(kind)
        for name in names:
            kinds.setdefault(name, set()).add(kind)
    groups: dict[str, set[int]] = {}
    for k, names in enumerate(data["synonyms"]):
        for name in names:
            groups.setdefault(name, set()).add(k)
    parts = {kind: frozenset(names) for kind, names in data["parts"].items()}
    return ({n: frozenset(k) for n, k in kinds.items()}, {n: frozenset(g) for n, g in groups.items()}, parts)


@lru_cache(maxsize=1 << 14)
def _forms(label: str) -> tuple[str, ...]:
    """The label and its possible singular forms (the forms the word lists use)."""
    return tuple(dict.fromkeys([normalize_label(label)] + singular_candidates(label)))


@lru_cache(maxsize=1 << 16)
def may_name_same(a: str, b: str) -> bool:
    """Whether an object called `a` may also be called `b`: the same name (singular or
    plural), synonyms, one the kind of the other ("animal", "dog"), or two words for people
    ("batter", "human"). Names of two things of one kind ("dog", "cat") are not."""
    fa, fb = _forms(a), _forms(b)
    if set(fa) & set(fb):
        return True
    kinds, groups, _ = _label_table()
    for x in fa:
        for y in fb:
            if not groups.get(x, frozenset()).isdisjoint(groups.get(y, ())):
                return True
            kx, ky = kinds.get(x, frozenset()), kinds.get(y, frozenset())
            if x in ky or y in kx or ("person" in kx and "person" in ky):
                return True
    return False


@lru_cache(maxsize=1 << 16)
def may_show(present: str, asked: str) -> bool:
    """Whether a picture with an object called `present` may show an `asked` too: the two may
    name the same thing, or `asked` is a usual part of it ("hand" of a "batter", "wheel" of
    a "car"), which is often in view without a box of its own."""
    if may_name_same(present, asked):
        return True
    kinds, _, parts = _label_table()
    asked_forms = _forms(asked)
    for x in _forms(present):
        for kind in kinds.get(x, frozenset()) | {x}:
            if any(f in parts.get(kind, ()) for f in asked_forms):
                return True
    return False
