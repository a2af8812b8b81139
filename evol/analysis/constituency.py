"""Frames from constituency trees (benepar's output, or any Penn Treebank-style tree).

The tree is reduced to the same `Frame` the spaCy backend builds, so both backends share
the verb-noun rules in `frames.py`. Works on `nltk.Tree` objects; only `label()`,
`leaves()`, iteration over children and `len` are used.
"""

from __future__ import annotations

from typing import Any, Protocol

from evol.analysis.frames import Frame, Word


class Lemmatise(Protocol):
    """What the tree logic needs of a lemmatizer (`verbnoun.Lemmas` is one)."""

    def __call__(self, text: str, tag: str) -> str: ...

    def word(self, text: str, tag: str) -> Word: ...

_AUX = {"be", "do", "have", "can", "could", "will", "would", "shall", "should", "may", "might", "must"}
_CLAUSES = ("SBARQ", "SQ", "S", "SINV")
_NOUN_TAGS = ("NN", "NNS", "NNP", "NNPS")
_HEADLESS_WRAPPERS = ("TOP", "ROOT", "")


def _is_tree(node: Any) -> bool:
    return hasattr(node, "label")


def _kids(node: Any) -> list[Any]:
    return [k for k in node if _is_tree(k)]


def _is_preterminal(node: Any) -> bool:
    return _is_tree(node) and len(node) == 1 and not _is_tree(node[0])


def _tag(node: Any) -> str:
    return node.label().split("-")[0].split("=")[0] if _is_tree(node) else ""


def _word(pre: Any, lemmas: Lemmatise) -> Word:
    return lemmas.word(pre[0], _tag(pre))


def np_head(np: Any, lemmas: Lemmatise) -> Word | None:
    """Head word of a noun phrase: the last noun of its first base NP, with the noun of a
    following "of" phrase kept for light nouns ("the number of people")."""
    kids = _kids(np)
    inner = next((k for k in kids if _tag(k) in ("NP", "NML", "WHNP")), None)
    if inner is not None and _tag(np) in ("NP", "WHNP") and not any(_tag(k) in _NOUN_TAGS for k in kids):
        head = np_head(inner, lemmas)
        if head is not None:
            pp = next((k for k in kids if _tag(k) == "PP"), None)
            if pp is not None:
                head.of_noun = _of_noun(pp, lemmas)
        return head
    nouns = [k for k in kids if _is_preterminal(k) and _tag(k) in _NOUN_TAGS]
    if nouns:
        head = _word(nouns[-1], lemmas)
        pp = next((k for k in kids if _tag(k) == "PP"), None)
        if pp is not None:
            head.of_noun = _of_noun(pp, lemmas)
        return head
    pres = [k for k in kids if _is_preterminal(k) and _tag(k) not in ("DT", "JJ", "PDT", "POS", ",", "CC")]
    if pres:
        return _word(pres[-1], lemmas)
    pres = [k for k in kids if _is_preterminal(k)]
    return _word(pres[-1], lemmas) if pres else None


def _of_noun(pp: Any, lemmas: Lemmatise) -> Word | None:
    kids = _kids(pp)
    if not kids or not _is_preterminal(kids[0]) or kids[0][0].lower() != "of":
        return None
    np = next((k for k in kids[1:] if _tag(k) == "NP"), None)
    return np_head(np, lemmas) if np is not None else None


def _first_verb(vp: Any) -> Any:
    return next((k for k in _kids(vp) if _is_preterminal(k) and (_tag(k).startswith("VB") or _tag(k) == "MD")), None)


def _main_clause(tree: Any) -> Any:
    """The top clause: below TOP/ROOT wrappers, or the first clause inside a fragment."""
    node = tree
    while _tag(node) in _HEADLESS_WRAPPERS and len(_kids(node)) == 1:
        node = _kids(node)[0]
    if _tag(node) in _CLAUSES or _tag(node) == "VP":
        return node
    queue = list(_kids(node))
    while queue:
        k = queue.pop(0)
        if _tag(k) in _CLAUSES or _tag(k) == "VP":
            return k
        queue.extend(_kids(k))
    return node


def tree_frame(tree: Any, lemmas: Lemmatise) -> Frame:
    """Reduce one sentence's constituency tree to a `Frame`."""
    frame = Frame()
    clause = _main_clause(tree)
    leaves = tree.leaves()
    frame.question = bool(leaves) and leaves[-1] == "?" or _tag(clause) in ("SBARQ", "SQ")
    body = clause
    if _tag(clause) == "SBARQ":
        wh = next((k for k in _kids(clause) if _tag(k).startswith("WH")), None)
        if wh is not None:
            _wh(wh, frame, lemmas)
        body = next((k for k in _kids(clause) if _tag(k) in ("SQ", "S", "SINV")), clause)
    if _tag(body) == "VP":
        vp, subject_np = body, None
    else:
        vp = next((k for k in _kids(body) if _tag(k) == "VP"), None)
        subject_np = next((k for k in _kids(body) if _tag(k) == "NP"), None)
    # an inverted auxiliary or copula sits right under SQ: "(SQ (VBZ Is) (NP the cat) (ADJP black))"
    top_verb = _first_verb(body) if _tag(body) in ("SQ", "SINV") else None
    after_top = _kids(body)[_kids(body).index(top_verb) + 1:] if top_verb is not None else []
    if top_verb is not None:
        subject_nps = [k for k in after_top if _tag(k) == "NP"]
        if subject_nps and _is_expletive(subject_nps[0]):
            subject_nps = subject_nps[1:]
        subject_np = subject_nps[0] if subject_nps else subject_np
    verb_pre, passive = None, False
    be_seen = top_verb is not None and lemmas(top_verb[0], _tag(top_verb)) == "be"
    while vp is not None:
        verb = _first_verb(vp)
        inner = next((k for k in _kids(vp) if _tag(k) == "VP"), None)
        if verb is None:
            vp = inner
            continue
        lemma = lemmas(verb[0], _tag(verb))
        if lemma in _AUX and inner is not None:
            be_seen = be_seen or lemma == "be"
            vp = inner
            continue
        verb_pre = verb
        passive = be_seen and _tag(verb) == "VBN"
        break
    if verb_pre is None:
        verb_pre = top_verb
    if verb_pre is None:
        return frame
    frame.verb = Word(lemmas(verb_pre[0], _tag(verb_pre)), "VERB")
    frame.passive = passive
    if vp is not None and verb_pre is not top_verb:
        after = _kids(vp)[_kids(vp).index(verb_pre) + 1:]
        obj = next((k for k in after if _tag(k) == "NP"), None)
        frame.obj = np_head(obj, lemmas) if obj is not None else None
    elif top_verb is not None:  # copula: "Is there a dog", "What is the name of the dog"
        nps = [k for k in after_top if _tag(k) == "NP" and not _is_expletive(k)]
        if len(nps) > 1:
            frame.attr = np_head(nps[1], lemmas)
    frame.subject = np_head(subject_np, lemmas) if subject_np is not None else None
    frame.imperative = (_tag(verb_pre) == "VB" and subject_np is None and not frame.question)
    return frame


def _is_expletive(np: Any) -> bool:
    return any(_is_preterminal(k) and _tag(k) == "EX" for k in _kids(np))


def _wh(wh: Any, frame: Frame, lemmas: Lemmatise) -> None:
    """Question word and the noun it determines, from WHNP / WHADVP / WHADJP."""
    words = [w.lower() for w in wh.leaves()]
    if len(words) >= 2 and words[0] == "how" and words[1] in ("many", "much"):
        frame.wh = f"how {words[1]}"
    else:
        frame.wh = words[0] if words else None
    if _tag(wh) == "WHNP":
        head = np_head(wh, lemmas)
        if head is not None and head.is_noun:
            frame.wh_noun = head
        elif head is not None and frame.wh in ("which", "what"):
            pp = next((k for k in _kids(wh) if _tag(k) == "PP"), None)
            noun = _of_noun(pp, lemmas) if pp is not None else None
            if noun is not None and noun.is_noun:
                frame.wh_noun = noun
