"""Words with their part-of-speech tags, as the request reader sees them.

The word classes of English requests (wh-words, auxiliaries, pronouns, particles), a
lexicon of which words can be verbs or nouns (the spaCy model's own lemmatizer tables),
the split into sentences, and small tests on tag sequences. See `request.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

WH = frozenset("what which who whom whose where when why how".split())
BE = frozenset("is are was were am 's 're 'm be been being".split())
DO = frozenset("do does did".split())
HAVE = frozenset("has have had 've".split())
MODAL = frozenset("can could will would should shall may might must 'd 'll ca wo".split())
AUX = BE | DO | HAVE | MODAL
PRONOUNS = frozenset(
    "i me you he him she her it we us they them this that these those what which who whom "
    "something anything everything nothing someone anyone everyone somebody anybody one ones "
    "myself yourself itself themselves there here".split())
TIMES = frozenset("today tonight tomorrow yesterday now".split())  # nouns in tag, adverbs in use
SEQUENCE = frozenset("first then next finally now also briefly carefully".split())  # before an order
PARTITIVE = frozenset("some one any all each many most few several both none either neither which "
                      "two three four five".split())
FRAMING = frozenset("look observe imagine consider focus".split())  # and "take a look"
ASK_VERBS = frozenset("tell know let show wonder".split())  # + wh / if clause: the clause is the question
PARTICLES = frozenset("up out down off over away back on in through together apart".split())
FRONTING = frozenset("given if as when while assuming suppose supposing based according considering "
                     "looking in from after before since for with using".split())
GREETINGS = frozenset("hi hello hey okay ok so now also then well please kindly thanks".split())
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
NP_INNER = frozenset({"DT", "PDT", "PRP$", "CD", "JJ", "JJR", "JJS", "POS", "HYPH", "NN", "NNS",
                       "NNP", "NNPS", "VBN", "VBG", "AFX", "RBS", "FW"})
NP_PREPS = frozenset("of in on at near with from under behind above below beside inside by for "
                      "between among next outside around to".split())
END = frozenset({".", "?", "!", ":", ";", ","})


@dataclass(slots=True)
class Tok:
    """One word: its text, lower-cased text and (possibly repaired) Penn tag."""

    text: str
    lower: str
    tag: str

    @property
    def is_noun(self) -> bool:
        return self.tag in NOUN_TAGS and self.lower not in PRONOUNS and self.lower not in TIMES \
            and wordlike(self.text)


def wordlike(text: str) -> bool:
    return any(ch.isalpha() for ch in text) and text.replace("-", "").replace("'", "").isalpha()


class Lexicon:
    """Which words can be verbs or nouns: the model's own lemmatizer tables."""

    def __init__(self, verbs: Iterable[str], nouns: Iterable[str], lemma: Callable[[str, str], str],
                 adjs: Iterable[str] = ()):
        self.verbs = frozenset(verbs)
        self.nouns = frozenset(nouns)
        self.adjs = frozenset(adjs)
        self.lemma = lemma

    def can_be_verb(self, tok: Tok, tag: str = "VB") -> bool:
        return self.lemma(tok.lower, tag) in self.verbs

    def can_be_noun(self, tok: Tok) -> bool:
        return self.lemma(tok.lower, "NNS") in self.nouns or tok.lower in self.nouns


# --------------------------------------------------------------------------- sentences


def sentences(words: list[Tok]) -> list[list[Tok]]:
    """Split at ? ! : ; and at . before a capital, a digit or a quote; drop list markers."""
    out: list[list[Tok]] = []
    cur: list[Tok] = []
    for i, w in enumerate(words):
        if w.tag == "_SP":
            if "\n" in w.text and cur:
                out.append(cur)
                cur = []
            continue
        cur.append(w)
        nxt = words[i + 1] if i + 1 < len(words) else None
        if w.text in ("?", "!", ":", ";") or (w.text == "." and (nxt is None or nxt.text[:1].isupper()
                                                                or nxt.text[:1].isdigit() or nxt.tag == "_SP"
                                                                or nxt.lower in WH or nxt.lower in AUX)):
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return [s for s in (strip_lead(s) for s in out) if s]


_MARKER_TAGS = frozenset({"LS", "CD", "-LRB-", "-RRB-", "NFP", ":", ",", ".", "HYPH", "``", "''"})


def strip_lead(words: list[Tok]) -> list[Tok]:
    """Drop list markers ("1.", "Q2", "(a)", "-"), greetings and "please" at the start."""
    i = 0
    while i < len(words):
        w = words[i]
        low = w.lower
        if w.tag in _MARKER_TAGS or low in ("(", ")", "*", "-"):
            i += 1
        elif (low[:1] == "q" and low[1:].isdigit()) or low in GREETINGS or low == "there" and i > 0:
            i += 1
        else:
            break
    words = words[i:]
    while words and words[-1].tag in (".", ",") and words[-1].text != "?":
        words = words[:-1]
    return words


LABEL_WORDS = frozenset("note hint context caption background question answer task instruction instructions "
                        "input output example remember important warning system user assistant reminder "
                        "tip".split())


def is_label(s: list[Tok]) -> bool:
    """"Interview questions:", "Study guide:", "C++ exam:": a few nouns and a colon; or
    one label word and a colon ("Note:", "Hint:")."""
    words = s[:-1] if s[-1].text == ":" else None
    if words and len(words) == 1 and words[0].lower in LABEL_WORDS:
        return True
    return bool(words) and 2 <= len(words) <= 4 and words[-1].tag in NOUN_TAGS and not any(
        w.tag in ("DT", "PRP$", "PRP", "IN", "TO", "WDT", "WP", "WRB", "MD", "CC") or w.lower in AUX for w in words)


def is_verb_start(w: Tok, lex: Lexicon | None = None) -> bool:
    """A verb right after the auxiliary ("Is shown", "are sitting"); a word the tagger
    called a verb that cannot be one ("How does photosynthesis/VB ...") is a noun."""
    if w.tag == "VB" and lex is not None and not lex.can_be_verb(w) and lex.can_be_noun(w):
        w.tag = "NN"
        return False
    return w.tag in ("VB", "VBN", "VBG") and w.lower not in PRONOUNS


def np_start(s: list[Tok], j: int, det_only: bool = False) -> bool:
    if j >= len(s):
        return False
    t = s[j]
    if det_only:
        return t.tag in NOUN_TAGS | {"JJ", "CD", "JJS"}
    return (t.tag in NOUN_TAGS or t.tag in ("DT", "PRP$", "CD", "JJ", "JJS", "JJR", "PDT")) and t.lower not in ("that",)


def np_follows_prep(s: list[Tok], j: int) -> bool:
    return j + 1 < len(s) and s[j].tag == "IN" and np_start(s, j + 1)


def tokens_of(doc: Any) -> list[Tok]:
    """spaCy Doc -> the words the reader works on."""
    return [Tok(t.text, t.lower_, "_SP" if t.is_space else t.tag_) for t in doc]
