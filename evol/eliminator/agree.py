"""Do two answers to one question agree? Exact after normalising, for short answers.

The blind and answer checks compare a model's answer with the item's answer. Short answers
(a word or a few, a number, yes or no, an option) are compared here, after normalising
case, punctuation, articles and number words, and with options resolved to their index
("B", "(b)", "B. dog" and "dog" all name the second option). Long answers cannot be
compared by their words; `agree` returns None for them and the caller asks a model
whether the two say the same (`evol.eliminator.same`).
"""

from __future__ import annotations

import re
import string

SHORT_WORDS = 5  # answers of more words (after normalising) are compared by a model

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_ARTICLES = frozenset({"a", "an", "the"})
_YES = frozenset({"yes", "yeah", "yep", "true", "correct"})
_NO = frozenset({"no", "nope", "false", "incorrect"})
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "%."})
_LETTER = re.compile(r"^\s*(?:\(([a-h])\)|([a-h])(?:[.):]|\s*$))\s*(.*)$", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_NEGATION = frozenset({"not", "no", "never", "neither", "nor", "without"})


def normalise(text: str) -> str:
    """Lower case, no punctuation or articles, number words as digits, "yeah" as "yes"."""
    words = []
    for w in str(text).lower().translate(_PUNCT).split():
        w = w.strip(".")
        if not w or w in _ARTICLES:
            continue
        w = _NUMBER_WORDS.get(w, w)
        words.append("yes" if w in _YES else "no" if w in _NO else w)
    return " ".join(words)


def option_index(answer: str, options: list[str]) -> int | None:
    """Which option an answer names: by its letter ("B", "(b)", "B. dog") or its text."""
    if not options:
        return None
    m = _LETTER.match(answer or "")
    if m:
        letter = (m.group(1) or m.group(2)).lower()
        index = ord(letter) - ord("a")
        if index < len(options):
            return index
    said = normalise(answer)
    texts = [normalise(_LETTER.sub(r"\3", o) if _LETTER.match(o) else o) for o in options]
    if said in texts:
        return texts.index(said)
    return None


def is_short(answer: str) -> bool:
    return len(normalise(answer).split()) <= SHORT_WORDS


def agree(expected: str, got: str, options: list[str] | None = None) -> bool | None:
    """True or False when the two answers can be compared by their words; None when one of
    them is long (a model must judge). Options compare by the option they name."""
    options = options or []
    a, b = option_index(expected, options), option_index(got, options)
    if a is not None and b is not None:
        return a == b
    if not (is_short(expected) and is_short(got)):
        return None
    x, y = normalise(expected), normalise(got)
    if x == y:
        return True
    wx, wy = x.split() or [""], y.split() or [""]
    if wx[0] in ("yes", "no") and wy[0] in ("yes", "no"):
        return wx[0] == wy[0]  # "Yes, it is." against "yes"
    nx, ny = [w for w in wx if _NUMBER.match(w)], [w for w in wy if _NUMBER.match(w)]
    if nx and ny:  # "There are 3 cups" against "three"; "Two, one at each edge" against "2"
        return float(nx[0]) == float(ny[0])
    if nx or ny:
        return False
    shorter, longer = (wx, wy) if len(wx) <= len(wy) else (wy, wx)
    if len(shorter) == 1 and shorter[0] in longer and not _NEGATION & set(longer):
        return True  # "red" against "it is red"
    return False
