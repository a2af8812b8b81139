"""Single-image scene-graph generators: questions about objects picked out by small subgraphs.

A reference names an object through its attributes, one relation, and the neighbour at
the other end of that relation (with its label and perhaps one attribute), e.g. "the red
object that is next to the wooden table". A reference is only used when it fits exactly
one object of the graph, and the neighbour's own phrase ("the wooden table") fits exactly
one object too, so the question has a single right answer.

Matching is done with bit sets (Python ints, one bit per object) built once per graph and
shared by the three generators, so testing a candidate reference costs a few integer ANDs.
"""

from __future__ import annotations

import random
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from evol.provision.base import QA, GenContext, Generator, RarePool, as_multiple_choice, register
from evol.provision.caption import object_clause, subject_clause
from evol.provision.graph import SceneGraph
from evol.provision.vocab import attribute_category, attributes_in_category

MAX_NODE_ATTRS = 4  # attributes of a node considered for its reference
MAX_REL_TRIES = 6  # relations tried per target before giving up on it

# Words close enough in meaning that one must not be offered as a wrong option for another.
# Groups are "|"-separated; a word may sit in several groups.
_NEAR = """
next to|near|beside|by|close to|alongside|adjacent to
on|on top of|sitting on|standing on|lying on|resting on|laying on|atop|above|over|mounted on
under|below|beneath|underneath
in|inside|inside of|within|in the middle of|on
wearing|wears|dressed in|has on
has|have|with|having|contains|carrying|holding
holding|holds|carrying|carries|has
behind|in back of
in front of|before
person|man|woman|boy|girl|guy|lady|child|kid|people|player|skier|surfer|skateboarder|men|women
car|vehicle|automobile|taxi
bike|bicycle
motorcycle|motorbike|bike
cup|mug|glass
sofa|couch
plane|airplane|jet|aircraft
tv|television|monitor|screen
shirt|t-shirt|top|jacket
rock|stone|boulder
gold|golden|yellow|blond|blonde
gray|silver|dark gray|light gray
tan|beige|khaki|cream|ivory|off white|light brown
white|off white|ivory|cream|pale
purple|violet|lavender
maroon|burgundy|dark red|red|bright red
teal|turquoise
navy|navy blue|dark blue|blue|sky blue|light blue
brown|brunette|dark brown|light brown
multicolored|colorful
light|pale
dark|black
green|dark green|light green|lime green|olive
pink|hot pink
big|large|huge|giant|enormous|massive|oversized
small|little|tiny|mini|miniature
thin|skinny|slim|narrow
fat|chubby|thick
tall|high|long
short|low
wood|wooden|bamboo|wicker
metal|metallic|steel|stainless steel|iron|wrought iron|aluminum|chrome|brass|bronze|copper|wire
wool|woolen|knit|woolly
stone|rock|granite|marble|cobblestone
concrete|cement|asphalt|paved
cloth|fabric|cotton|canvas|denim|silk|nylon|velvet|knit|lace
tile|tiled
lying|laying|resting|sleeping
sitting|crouching|squatting|kneeling|resting
looking|staring|watching
holding|carrying
standing|waiting|posing
walking|moving|running
skating|skateboarding
lit|lighted|illuminated|glowing|turned on|on
unlit|turned off|off
full|filled|occupied|crowded
empty|unoccupied|bare
cut|chopped|sliced
snowy|snow covered|frozen
broken|damaged|cracked|torn
cloudy|overcast|foggy
shiny|glossy|reflective|sparkly|glittery
furry|fuzzy|fluffy|hairy|soft
rough|bumpy|textured|grainy
transparent|see through
spotted|dotted|polka dot
checkered|plaid
happy|cheerful|joyful|amused|playful|content
sad|lonely
calm|relaxed|peaceful
tired|sleepy|bored
alert|attentive|focused|curious
angry|grumpy
scared|worried
round|circular|rounded|spherical|oval
square|rectangular|cubic
pointed|pointy|tapered
curved|arched|bent|curled|crooked
upright|vertical
horizontal|level|sideways
tilted|slanted|leaning|angled|diagonal
raised|lifted|extended|outstretched
upside down|inverted
facing camera|facing forward
"""
_NEAR_GROUPS: dict[str, frozenset[int]] = {}
for _k, _line in enumerate(_NEAR.strip().splitlines()):
    for _w in _line.split("|"):
        _NEAR_GROUPS[_w] = _NEAR_GROUPS.get(_w, frozenset()) | {_k}


@lru_cache(maxsize=1 << 16)
def too_close(a: str, b: str) -> bool:
    """Whether b is too near a in meaning to serve as a wrong option for a."""
    if a == b:
        return True
    wa, wb = a.split(), b.split()
    if any(w in wb for w in wa):  # "blue" / "dark blue", "white" / "off white"
        return True
    ga = _NEAR_GROUPS.get(a)
    return ga is not None and not ga.isdisjoint(_NEAR_GROUPS.get(b, ()))


_COMMON_PREDICATES = ["on", "next to", "under", "behind", "in front of", "holding", "wearing", "in",
                      "above", "has", "near", "riding", "sitting on", "looking at"]


# -- per-graph index -------------------------------------------------------------------------
class _Index:
    def __init__(self, g: SceneGraph):
        self.n = n = len(g.objects)
        self.all = (1 << n) - 1
        self.labels = [ob.label for ob in g.objects]
        self.attrs: list[list[str]] = []
        self.label_mask: dict[str, int] = {}
        self.attr_mask: dict[str, int] = {}
        for i, ob in enumerate(g.objects):
            bit = 1 << i
            self.label_mask[ob.label] = self.label_mask.get(ob.label, 0) | bit
            mine: list[str] = []
            for a in ob.attributes:
                if a and a not in mine:
                    mine.append(a)
                    self.attr_mask[a] = self.attr_mask.get(a, 0) | bit
            self.attrs.append(mine)
        self.rel_out: dict[tuple[str, int], int] = {}  # (pred, other) -> subjects of "x pred other"
        self.rel_in: dict[tuple[str, int], int] = {}  # (pred, other) -> objects of "other pred x"
        self.incident: list[list[tuple[str, str, int]]] = [[] for _ in range(n)]  # (dir, pred, other)
        self.between: dict[tuple[int, int], list[str]] = {}  # (subject, object) -> predicates
        self.predicates: list[str] = []
        for r in g.relations:
            s, p, o = r.subject, r.predicate, r.object
            if s == o or not p:
                continue
            self.rel_out[(p, o)] = self.rel_out.get((p, o), 0) | (1 << s)
            self.rel_in[(p, s)] = self.rel_in.get((p, s), 0) | (1 << o)
            for t, entry in ((s, ("out", p, o)), (o, ("in", p, s))):
                if entry not in self.incident[t]:
                    self.incident[t].append(entry)
            preds = self.between.setdefault((s, o), [])
            if p not in preds:
                preds.append(p)
            if p not in self.predicates:
                self.predicates.append(p)

    def phrase_mask(self, label: str | None, attrs: Sequence[str]) -> int:
        m = self.label_mask.get(label, 0) if label is not None else self.all
        for a in attrs:
            m &= self.attr_mask.get(a, 0)
        return m


_LAST: list = [None, None]  # [weakref to graph, its index]


def _index(g: SceneGraph) -> _Index:
    ref = _LAST[0]
    if ref is not None and ref() is g:
        return _LAST[1]
    idx = _Index(g)
    try:
        _LAST[:] = [weakref.ref(g), idx]
    except TypeError:
        pass
    return idx


# -- references ------------------------------------------------------------------------------
@dataclass
class Ref:
    target: int
    label: str | None  # None: the label is what is asked, say "object"
    attrs: list[str]
    rel: tuple[str, str, int] | None  # (direction, predicate, neighbour)
    nb_attrs: list[str]

    def text(self, idx: _Index) -> str:
        """Without the article: 'red object that is next to the wooden table'."""
        head = " ".join(self.attrs + [self.label or "object"])
        if self.rel is None:
            return head
        direction, pred, nb = self.rel
        nb_phrase = "the " + " ".join(self.nb_attrs + [idx.labels[nb]])
        clause = subject_clause(pred) + " " + nb_phrase if direction == "out" else object_clause(pred, nb_phrase)
        return f"{head} {clause}"

    def meta(self, idx: _Index) -> dict:
        out = {"object": self.target, "attributes": list(self.attrs)}
        if self.rel is not None:
            direction, pred, nb = self.rel
            out.update(relation=pred, direction="subject" if direction == "out" else "object",
                       neighbour=nb, neighbour_label=idx.labels[nb], neighbour_attributes=list(self.nb_attrs))
        return out


def _attr_subsets(rng: random.Random, attrs: list[str]) -> list[list[str]]:
    """Attribute subsets of size 0-2 to try, sizes in a random order of preference."""
    attrs = attrs[:MAX_NODE_ATTRS]
    rng.shuffle(attrs)
    singles = [[a] for a in attrs]
    pairs = [[a, b] for k, a in enumerate(attrs) for b in attrs[k + 1:]]
    return ([[]] + singles if rng.random() < 0.5 else singles + [[]]) + pairs


def find_ref(idx: _Index, rng: random.Random, t: int, *, show_label: bool, need_rel: bool,
             skip_attrs: Sequence[str] = (), avoid: Sequence[int] = ()) -> Ref | None:
    """A reference that fits object t and nothing else, or None."""
    label = idx.labels[t] if show_label else None
    base = idx.phrase_mask(label, ())
    subsets = _attr_subsets(rng, [a for a in idx.attrs[t] if a not in skip_attrs])
    rels: list = [e for e in idx.incident[t] if e[2] not in avoid]
    rng.shuffle(rels)
    rels = rels[:MAX_REL_TRIES]
    if not need_rel:
        rels.insert(0 if rng.random() < 0.5 else len(rels), None)
    bit = 1 << t
    for rel in rels:
        nb_attrs: list[str] = []
        m0 = base
        if rel is not None:
            direction, pred, nb = rel
            nb_options = [[a] for a in idx.attrs[nb][:3]]
            rng.shuffle(nb_options)
            nb_options.insert(0 if rng.random() < 0.5 else len(nb_options), [])
            for opt in nb_options:
                if idx.phrase_mask(idx.labels[nb], opt) == 1 << nb:
                    nb_attrs = opt
                    break
            else:
                continue  # the neighbour cannot be named on its own
            m0 &= (idx.rel_out if direction == "out" else idx.rel_in).get((pred, nb), 0)
        if not m0 & bit:
            continue
        for sub in subsets:
            m = m0
            for a in sub:
                m &= idx.attr_mask[a]
            if m == bit:
                return Ref(t, label, sub, rel, nb_attrs)
    return None


# -- shared helpers --------------------------------------------------------------------------
def _mc(rng: random.Random, ctx: GenContext, answer: str, distractors: list[str]) -> list[str]:
    if rng.random() < ctx.mc_ratio:
        return as_multiple_choice(rng, answer, distractors, ctx.n_choices) or []
    return []


def _fill(first: Sequence[str], extra, answer: str, need: int, banned: Sequence[str] = ()) -> list[str]:
    """Wrong options: all usable ones of `first`, topped up to `need` from `extra` (a list,
    or a function giving one, called only when `first` falls short). Anything too close in
    meaning to the answer, or in `banned`, is left out."""
    out: list[str] = []
    for x in first:
        if x not in out and x not in banned and not too_close(answer, x):
            out.append(x)
    if len(out) < need:
        for x in extra() if callable(extra) else extra:
            if len(out) >= need:
                break
            if x not in out and x not in banned and not too_close(answer, x):
                out.append(x)
    return out


_WRONG_WORDS: dict[tuple[str, str], list[str]] = {}


def _wrong_attributes(category: str, answer: str) -> list[str]:
    """Words of the category that are clearly not the answer (remembered per pair)."""
    words = _WRONG_WORDS.get((category, answer))
    if words is None:
        words = _WRONG_WORDS[(category, answer)] = _fill(attributes_in_category(category), (), answer, 0)
    return words


_TOP: list = [None, 0, []]  # [weakref to a Counter, its size then, its most common keys]
TOP_KEYS = 64


def _most_common(counter) -> list[str]:
    """The dataset's most common keys (ties by name), remembered for the same Counter."""
    ref, size, keys = _TOP
    if ref is not None and ref() is counter and size == len(counter):
        return keys
    keys = [k for k, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_KEYS]]
    try:
        _TOP[:] = [weakref.ref(counter), len(counter), keys]
    except TypeError:
        pass
    return keys


# -- 22: what is the object picked out by a reference --------------------------------------
_OBJECT_Q = [
    "What is the {d}?",
    "Name the {d}.",
    "What kind of object is the {d}?",
    "What would you call the {d}?",
    "Identify the {d}: what is it?",
]


@register
class SGObjectQA(Generator):
    name = "sg_object_qa"
    skills = ("referencing", "relationship description")

    def generate(self, graphs, rng, ctx, n):
        g = graphs[0]
        if n <= 0 or not g.relations:
            return []
        idx = _index(g)
        freq = ctx.freq.objects
        targets = [t for t in range(idx.n) if idx.incident[t]]
        cands = RarePool(targets, [freq.get(idx.labels[t], 0) for t in targets])
        out: list[QA] = []
        while cands and len(out) < n:
            t = cands.take(rng)
            ref = find_ref(idx, rng, t, show_label=False, need_rel=True)
            if ref is None:
                continue
            answer = idx.labels[t]
            distractors = _fill(list(idx.label_mask), lambda: _most_common(freq), answer, ctx.n_choices - 1)
            nb = ref.rel[2]
            out.append(QA(
                generator=self.name, question=rng.choice(_OBJECT_Q).format(d=ref.text(idx)), answer=answer,
                options=_mc(rng, ctx, answer, distractors), objects=[answer, idx.labels[nb]],
                skills=list(self.skills), metadata={"target": ref.meta(idx), "box": g.norm_box(t)},
            ))
        return out


# -- 23: an attribute of the object picked out by a reference -------------------------------
_ATTR_Q = [
    "What {c} is the {d}?",
    "Which {c} does the {d} have?",
    "Tell me the {c} of the {d}.",
    "Briefly, what is the {c} of the {d}?",
    "As for its {c}, how would you describe the {d}?",
]
_ACTIVITY_Q = [
    "What is the {d} doing?",
    "What activity is the {d} engaged in?",
    "Which activity describes the {d}?",
    "Briefly, what is the {d} doing?",
]


@register
class SGAttributeQA(Generator):
    name = "sg_attribute_qa"
    skills = ("referencing", "relationship description")

    def generate(self, graphs, rng, ctx, n):
        g = graphs[0]
        if n <= 0 or not g.relations:
            return []
        idx = _index(g)
        cands: list[tuple[int, str, str]] = []
        for t in range(idx.n):
            if not idx.incident[t]:
                continue
            cats = [attribute_category(a) for a in idx.attrs[t]]
            for a, c in zip(idx.attrs[t], cats):
                if c is not None and c != "other" and cats.count(c) == 1:
                    cands.append((t, a, c))
        freq = ctx.freq.attributes
        cands = RarePool(cands, [freq.get(a, 0) for _, a, _ in cands])
        out: list[QA] = []
        while cands and len(out) < n:
            t, a, c = cands.take(rng)
            same_cat = [b for b in idx.attrs[t] if attribute_category(b) == c]
            ref = find_ref(idx, rng, t, show_label=True, need_rel=True, skip_attrs=same_cat)
            if ref is None:
                continue
            templates = _ACTIVITY_Q if c == "activity" else _ATTR_Q
            question = rng.choice(templates).format(c=c, d=ref.text(idx))
            distractors = [b for b in _wrong_attributes(c, a) if b not in idx.attrs[t]]
            out.append(QA(
                generator=self.name, question=question, answer=a,
                options=_mc(rng, ctx, a, distractors), objects=[idx.labels[t], idx.labels[ref.rel[2]]],
                skills=list(self.skills),
                metadata={"target": ref.meta(idx), "category": c, "attribute": a, "box": g.norm_box(t)},
            ))
        return out


# -- 24: the relation between two objects, each picked out by a reference --------------------
_REL_Q = [
    "What is the relationship of the {a} to the {b}?",
    "How does the {a} relate to the {b}?",
    "Fill in the relation: the {a} ___ the {b}.",
    "Which predicate best links the {a} (subject) to the {b} (object)?",
    "Describe in a few words how the {a} stands with respect to the {b}.",
]


@register
class SGRelationQA(Generator):
    name = "sg_relation_qa"
    skills = ("relationship description", "referencing")

    def generate(self, graphs, rng, ctx, n):
        g = graphs[0]
        if n <= 0 or not g.relations:
            return []
        idx = _index(g)
        pairs = [(s, o) for (s, o), preds in idx.between.items() if len(preds) == 1 and preds[0] != "of"]
        freq = ctx.freq.relations
        pairs = RarePool(pairs, [freq.get(idx.between[p][0], 0) for p in pairs])
        out: list[QA] = []
        while pairs and len(out) < n:
            s, o = pairs.take(rng)
            ref_a = find_ref(idx, rng, s, show_label=True, need_rel=False, avoid=[o])
            ref_b = find_ref(idx, rng, o, show_label=True, need_rel=False, avoid=[s]) if ref_a else None
            if ref_b is None:
                continue
            answer = idx.between[(s, o)][0]
            distractors = _fill(idx.predicates, lambda: _most_common(freq) + _COMMON_PREDICATES, answer,
                                ctx.n_choices - 1, banned=idx.between.get((o, s), []))
            question = rng.choice(_REL_Q).format(a=ref_a.text(idx), b=ref_b.text(idx))
            objects = [idx.labels[s], idx.labels[o]]
            out.append(QA(
                generator=self.name, question=question, answer=answer,
                options=_mc(rng, ctx, answer, distractors), objects=objects, skills=list(self.skills),
                metadata={"subject": ref_a.meta(idx), "object": ref_b.meta(idx), "relation": answer,
                          "boxes": [g.norm_box(s), g.norm_box(o)]},
            ))
        return out
