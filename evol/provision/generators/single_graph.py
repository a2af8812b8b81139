"""Single-image scene-graph generators 22-24 of ProVision (arXiv 2412.07012), written anew:
questions about objects picked out by small subgraphs.

A reference names an object through its attributes, one relation, and the neighbour at
the other end of that relation (with its label and perhaps one attribute), e.g. "the red
object that is next to the wooden table". A reference is only used when it fits exactly
one object of the graph, and the neighbour's own phrase ("the wooden table") fits exactly
one object too, so the question has a single right answer. It never says a word twice
("the swinging batter that is swinging the bat"), never says what the question asks, and
never uses a word too vague to point at anything ("colorful", "pale": `vocab.askable_attribute`).

Matching is done with bit sets (Python ints, one bit per object) built once per graph and
shared by the three generators, so testing a candidate reference costs a few integer ANDs.
"""

from __future__ import annotations

import random
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from evol.provision.base import FILL, DrawnGenerator, LastGraph, maybe_options, register
from evol.provision.graph import SceneGraph
from evol.provision.vocab import (askable_attribute, attribute_category, attributes_in_category, may_show,
                                  verb_phrase)

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
        self.boxes = g.norm_boxes()  # normalised, 2 decimals (tuples: copy before handing out)
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
        # the words a reference may name an object by: the vague-word filter (`askable_attribute`)
        self.ref_attrs = [[a for a in mine if askable_attribute(a)] for mine in self.attrs]
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


_index = LastGraph(_Index)  # the index of the graph asked about last, shared by the generators here


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
        verb = verb_phrase(pred)  # "is on", "has", "walks on"
        clause = f"that {verb} {nb_phrase}" if direction == "out" else f"that {nb_phrase} {verb}"
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


_FUNCTION_WORDS = frozenset({"a", "an", "the", "on", "in", "of", "to", "at", "by", "with", "is", "are", "and",
                             "up", "off", "for", "from", "into", "onto", "over", "top", "front", "back", "side"})


def content_words(*phrases: str) -> frozenset[str]:
    """The words of the phrases that carry meaning ("sitting on" -> {"sitting"})."""
    return frozenset(w for p in phrases for w in p.split() if w not in _FUNCTION_WORDS)


def find_ref(idx: _Index, rng: random.Random, t: int, *, show_label: bool, need_rel: bool,
             skip_attrs: Sequence[str] = (), avoid: Sequence[int] = (),
             avoid_words: frozenset[str] = frozenset()) -> Ref | None:
    """A reference that fits object t and nothing else, or None.

    It never says a word twice, nor a word of `avoid_words` (what the question asks):
    no attribute, of the object or its neighbour, that its relation already says ("the
    swinging batter that is swinging the bat"), and no relation that says an avoided word.
    Attributes too vague to point at anything (`askable_attribute`) are never used."""
    label = idx.labels[t] if show_label else None
    base = idx.phrase_mask(label, ())
    subsets = _attr_subsets(rng, [a for a in idx.ref_attrs[t] if a not in skip_attrs])
    rels: list = [e for e in idx.incident[t] if e[2] not in avoid]
    rng.shuffle(rels)
    rels = rels[:MAX_REL_TRIES]
    if not need_rel:
        rels.insert(0 if rng.random() < 0.5 else len(rels), None)
    bit = 1 << t
    for rel in rels:
        nb_attrs: list[str] = []
        m0 = base
        banned = avoid_words
        if rel is not None:
            direction, pred, nb = rel
            said = content_words(pred)
            if not said.isdisjoint(avoid_words):
                continue
            banned = banned | said
            nb_options = [[a] for a in idx.ref_attrs[nb][:3]]
            rng.shuffle(nb_options)
            nb_options.insert(0 if rng.random() < 0.5 else len(nb_options), [])
            for opt in nb_options:
                if banned.isdisjoint(content_words(*opt)) and idx.phrase_mask(idx.labels[nb], opt) == 1 << nb:
                    nb_attrs = opt
                    break
            else:
                continue  # the neighbour cannot be named on its own
            m0 &= (idx.rel_out if direction == "out" else idx.rel_in).get((pred, nb), 0)
        if not m0 & bit:
            continue
        for sub in subsets:
            if banned and not banned.isdisjoint(content_words(*sub)):
                continue
            m = m0
            for a in sub:
                m &= idx.attr_mask[a]
            if m == bit:
                return Ref(t, label, sub, rel, nb_attrs)
    return None


# -- shared helpers --------------------------------------------------------------------------
def _fill(first: Sequence[str], extra, answer: str, need: int, banned: Sequence[str] = (),
          clash=too_close) -> list[str]:
    """Wrong options: all usable ones of `first`, topped up to `need` from `extra` (a list,
    or a function giving one, called only when `first` falls short). Anything that may also
    be right (`clash(answer, x)`: by default too close in meaning), or in `banned`, is left out."""
    out: list[str] = []
    for x in first:
        if x not in out and x not in banned and not clash(answer, x):
            out.append(x)
    if len(out) < need:
        for x in extra() if callable(extra) else extra:
            if len(out) >= need:
                break
            if x not in out and x not in banned and not clash(answer, x):
                out.append(x)
    return out


def _may_be_object(answer: str, label: str) -> bool:
    """`label` may also answer "what is the object ...?" when the answer is `answer`: near in
    meaning, another name for it ("person" for "batter"), a usual part of it, or the whole
    it is a part of."""
    return too_close(answer, label) or may_show(answer, label) or may_show(label, answer)


_WRONG_WORDS: dict[tuple[str, str], list[str]] = {}


def _wrong_attributes(category: str, answer: str) -> list[str]:
    """Words of the category that are clearly not the answer and not vague (remembered per pair)."""
    words = _WRONG_WORDS.get((category, answer))
    if words is None:
        fit = [w for w in attributes_in_category(category) if askable_attribute(w)]
        words = _WRONG_WORDS[(category, answer)] = _fill(fit, (), answer, 0)
    return words


@lru_cache(maxsize=1 << 14)
def _near_in_category(word: str, category: str) -> frozenset[str]:
    """The words of the category too close to `word` in meaning."""
    return frozenset(w for w in attributes_in_category(category) if too_close(word, w))


def _wrong_for(category: str, answer: str, attrs: Sequence[str]) -> list[str]:
    """`_wrong_attributes`, leaving out words near any attribute the object has."""
    near = frozenset().union(*(_near_in_category(x, category) for x in attrs))
    return [b for b in _wrong_attributes(category, answer) if b not in near]


TOP_KEYS = 64
_TOP: dict[int, tuple] = {}  # id(counter) -> (weakref to it, its size then, its most common keys)


def _most_common(counter) -> list[str]:
    """The dataset's most common keys (ties by name), remembered for the same Counter (one
    entry per counter: objects and relations are asked for in turn)."""
    hit = _TOP.get(id(counter))
    if hit is not None and hit[0]() is counter and hit[1] == len(counter):
        return hit[2]
    keys = [k for k, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_KEYS]]
    try:
        if len(_TOP) >= 8:
            _TOP.clear()
        _TOP[id(counter)] = (weakref.ref(counter), len(counter), keys)
    except TypeError:
        pass
    return keys


class _SceneGraphQA(DrawnGenerator):
    """The template for the reference questions: candidates are drawn (rare first) until `n`
    QAs are written, since a drawn object may have no reference that fits it alone."""

    draw = FILL
    skills = ("referencing", "relationship description")

    def facts(self, graphs, ctx):
        g = graphs[0]
        return _index(g) if g.relations else None


# -- 22: what is the object picked out by a reference --------------------------------------
_OBJECT_Q = (
    "What is the {d}?",
    "Name the {d}.",
    "What kind of object is the {d}?",
    "What would you call the {d}?",
    "Identify the {d}: what is it?",
)


@register
class SGObjectQA(_SceneGraphQA):
    """ProVision's scene-graph object question (arXiv 2412.07012): name the object that a
    reference (attributes, one relation, a neighbour) picks out."""

    name = "sg_object_qa"
    templates = _OBJECT_Q

    def candidates(self, idx, ctx):
        return [t for t in range(idx.n) if idx.incident[t]]

    def rarity(self, idx, t, ctx):
        return ctx.freq.objects.get(idx.labels[t], 0)

    def word(self, idx, t, rng, ctx):
        ref = find_ref(idx, rng, t, show_label=False, need_rel=True)
        if ref is None:
            return None
        answer = idx.labels[t]
        distractors = _fill(list(idx.label_mask), lambda: _most_common(ctx.freq.objects), answer,
                            ctx.n_choices - 1, clash=_may_be_object)
        question = self.say(rng, self.templates, d=ref.text(idx))
        return self.qa(question, answer, maybe_options(rng, ctx, answer, distractors),
                       [answer, idx.labels[ref.rel[2]]], {"target": ref.meta(idx), "box": list(idx.boxes[t])})


# -- 23: an attribute of the object picked out by a reference -------------------------------
def _attribute_questions(what: str, which: str) -> tuple[str, ...]:
    """Five phrasings: two that suit the category, then three that suit any."""
    return (what, which,
            "Tell me the {c} of the {d}.",
            "Briefly, what is the {c} of the {d}?",
            "As for its {c}, how would you describe the {d}?")


@register
class SGAttributeQA(_SceneGraphQA):
    """ProVision's scene-graph attribute question (arXiv 2412.07012): the attribute of one
    category of the object a reference picks out. Vague words and the "other" and gender
    categories are never asked, and the reference never says the answer's words."""

    name = "sg_attribute_qa"
    special = {  # one set per category that may be asked (every category but "other" and gender)
        "color": _attribute_questions("What color is the {d}?", "Which color does the {d} have?"),
        "size": _attribute_questions("What size is the {d}?", "How big is the {d}?"),
        "shape": _attribute_questions("What shape is the {d}?", "Which shape does the {d} have?"),
        "material": _attribute_questions("What is the {d} made of?", "Which material is the {d} made of?"),
        "texture": _attribute_questions("What texture does the {d} have?", "How does the surface of the {d} look?"),
        "state": _attribute_questions("In what state is the {d}?", "Which state best describes the {d}?"),
        "mood": _attribute_questions("What mood does the {d} show?", "Which mood best describes the {d}?"),
        "orientation": _attribute_questions("How is the {d} oriented?", "Which way is the {d} positioned?"),
        "activity": ("What is the {d} doing?",
                     "What activity is the {d} engaged in?",
                     "Which activity describes the {d}?",
                     "Briefly, what is the {d} doing?"),
    }

    def candidates(self, idx, ctx):
        cands: list[tuple[int, str, str]] = []
        for t in range(idx.n):
            if not idx.incident[t]:
                continue
            cats = [attribute_category(a) for a in idx.attrs[t]]
            for a, c in zip(idx.attrs[t], cats):
                # one word of the category (vague ones counted too), and an askable one
                if c in self.special and askable_attribute(a) and cats.count(c) == 1:
                    cands.append((t, a, c))
        return cands

    def rarity(self, idx, cand, ctx):
        return ctx.freq.attributes.get(cand[1], 0)

    def word(self, idx, cand, rng, ctx):
        t, a, c = cand
        same_cat = [b for b in idx.attrs[t] if attribute_category(b) == c]
        ref = find_ref(idx, rng, t, show_label=True, need_rel=True, skip_attrs=same_cat,
                       avoid_words=content_words(*same_cat))
        if ref is None:
            return None
        question = self.say(rng, self.special[c], c=c, d=ref.text(idx))
        distractors = _wrong_for(c, a, idx.attrs[t])
        return self.qa(question, a, maybe_options(rng, ctx, a, distractors), [idx.labels[t], idx.labels[ref.rel[2]]],
                       {"target": ref.meta(idx), "category": c, "attribute": a, "box": list(idx.boxes[t])})


# -- 24: the relation between two objects, each picked out by a reference --------------------
_REL_Q = (
    "What is the relationship between the {a} and the {b}?",
    "How does the {a} relate to the {b}?",
    "Fill in the relation: the {a} ___ the {b}.",
    "Which predicate best links the {a} (subject) to the {b} (object)?",
    "Describe in a few words how the {a} stands with respect to the {b}.",
)


@register
class SGRelationQA(_SceneGraphQA):
    """ProVision's scene-graph relation question (arXiv 2412.07012): the relation between two
    objects, each picked out by its own reference."""

    name = "sg_relation_qa"
    templates = _REL_Q
    skills = ("relationship description", "referencing")

    def candidates(self, idx, ctx):
        return [(s, o) for (s, o), preds in idx.between.items() if len(preds) == 1 and preds[0] != "of"]

    def rarity(self, idx, pair, ctx):
        return ctx.freq.relations.get(idx.between[pair][0], 0)

    def word(self, idx, pair, rng, ctx):
        s, o = pair
        answer = idx.between[pair][0]
        said = content_words(answer)  # the references must not give the answer away
        ref_a = find_ref(idx, rng, s, show_label=True, need_rel=False, avoid=[o], avoid_words=said)
        ref_b = find_ref(idx, rng, o, show_label=True, need_rel=False, avoid=[s], avoid_words=said) if ref_a else None
        if ref_b is None:
            return None
        freq = ctx.freq.relations
        distractors = _fill(idx.predicates, lambda: _most_common(freq) + _COMMON_PREDICATES, answer,
                            ctx.n_choices - 1, banned=idx.between.get((o, s), []))
        question = self.say(rng, self.templates, a=ref_a.text(idx), b=ref_b.text(idx))
        return self.qa(question, answer, maybe_options(rng, ctx, answer, distractors),
                       [idx.labels[s], idx.labels[o]],
                       {"subject": ref_a.meta(idx), "object": ref_b.meta(idx), "relation": answer,
                        "boxes": [list(idx.boxes[s]), list(idx.boxes[o])]})
