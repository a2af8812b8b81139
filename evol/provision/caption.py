"""A plain-text paragraph describing a scene graph, used as a seed record's caption.

The text names every object label with its count and (where the graph has them) a few
attributes, then states a few relations. It is deterministic: without `rng` it depends
only on the graph; with `rng` the relations mentioned are drawn from it. The last few
captions are remembered by graph identity, since every QA record of an image asks for
the same one.

The small grammar helpers here (plurals, articles, relative clauses for predicates) are
shared with the scene-graph generators.
"""

from __future__ import annotations

import random
import weakref

from evol.provision.base import NUMBER_WORDS
from evol.provision.graph import SceneGraph
from evol.provision.vocab import article, plural, verb_phrase

MAX_LABELS = 15  # object kinds named before "and more"
MAX_RELATIONS = 3  # relation sentences per caption


def count_phrase(n: int, noun: str) -> str:
    """'a red car', 'three dogs'."""
    if n == 1:
        return article(noun)
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    return f"{word} {plural(noun)}"


def subject_clause(pred: str) -> str:
    """The relative clause for a thing that is the relation's subject: 'that is next to',
    'that has' (the verb phrase from `vocab.verb_phrase`)."""
    return "that " + verb_phrase(pred)


def object_clause(pred: str, other: str) -> str:
    """The relative clause for a thing that is the relation's object: 'that the cup is on'."""
    return f"that {other} {verb_phrase(pred)}"


def statement(subject: str, pred: str, obj: str) -> str:
    """'The dog is next to the car.'"""
    body = f"{subject} {verb_phrase(pred)} {obj}"
    return body[:1].upper() + body[1:] + "."


# -- the caption ---------------------------------------------------------------------------
_MEMO: dict[int, tuple[weakref.ref, str]] = {}
_MEMO_SIZE = 64


def describe_graph(graph: SceneGraph, rng: random.Random | None = None) -> str:
    if rng is None:
        hit = _MEMO.get(id(graph))
        if hit is not None and hit[0]() is graph:
            return hit[1]
    text = _describe(graph, rng)
    if rng is None:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        try:
            _MEMO[id(graph)] = (weakref.ref(graph), text)
        except TypeError:  # not weak-referenceable: just do not remember it
            pass
    return text


def _describe(graph: SceneGraph, rng: random.Random | None) -> str:
    objects = graph.objects
    if not objects:
        return "No objects are annotated in this image."
    groups: dict[str, list[int]] = {}  # label -> object indices, in order of first appearance
    for i, ob in enumerate(objects):
        groups.setdefault(ob.label, []).append(i)
    parts = []
    for label, idx in list(groups.items())[:MAX_LABELS]:
        if len(idx) == 1:
            attrs = _dedup(objects[idx[0]].attributes)[:2]
            parts.append(count_phrase(1, " ".join(attrs + [label])))
        else:
            shared = [a for a in _dedup(objects[idx[0]].attributes)
                      if all(a in objects[j].attributes for j in idx[1:])][:2]
            phrase = count_phrase(len(idx), " ".join(shared + [label]))
            some = [a for a in _dedup(a for j in idx for a in objects[j].attributes) if a not in shared][:3]
            if some:
                phrase += f" ({', '.join(some)})"
            parts.append(phrase)
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if len(groups) > MAX_LABELS:
        listing = ", ".join(parts) + f", and {len(groups) - MAX_LABELS} more kinds of object"
    sentences = [f"The image shows {listing}."]

    rels, seen = [], []
    for r in graph.relations:
        key = (r.subject, r.predicate, r.object)
        if r.subject != r.object and key not in seen:
            seen.append(key)
            rels.append(r)
    if rng is not None and len(rels) > MAX_RELATIONS:
        rels = rng.sample(rels, MAX_RELATIONS)
    for r in rels[:MAX_RELATIONS]:
        sentences.append(statement(_refer(graph, r.subject), r.predicate, _refer(graph, r.object)))
    return " ".join(sentences)


def _dedup(words) -> list[str]:
    out: list[str] = []
    for w in words:
        if w not in out:
            out.append(w)
    return out


def _refer(graph: SceneGraph, i: int) -> str:
    ob = graph.objects[i]
    if graph.unique_label(i):
        return f"the {ob.label}"
    attrs = _dedup(ob.attributes)[:1]
    return article(" ".join(attrs + [ob.label]))
