"""Single-image generators 1-13 of ProVision (arXiv 2412.07012), written anew: counting,
frequency, position, attributes, relations.

Each generator follows the shared template (`base.DrawnGenerator`): it reads `graphs[0]`,
lists every question the graph can answer without doubt, draws up to `n` of them without
replacement (rare objects, attributes and predicates first), and writes each as a
short-answer or multiple-choice QA.

Guards that keep answers right:
- counts are asked only for countable labels whose boxes are clean (no box holds another box
  of the same label, no near-duplicate boxes, no plural "group" label such as "cups" beside
  "cup"); frequency comparisons hold whether or not container boxes are real objects;
- positional questions use three label-unique objects whose intervals on the axis are apart;
- an object named by its box is skipped when another object has the same normalised box;
- distractors leave out synonyms of the right answer ("big" for "large", "on top of" for
  "on") and vague words that may also be true ("near", "dark");
- relation questions by label need both labels to be unique in the image; a vague predicate
  ("near", "next to") is asked only in short-answer form, since a specific wrong option could
  hold as well, and never in subject selection, where wrong candidates may be near too;
- a rival or wrong candidate is never another name for the answer ("person" beside "man",
  `vocab.may_name_same`), and in subject selection never a thing the graph ties to the true
  subject (the bat the batter swings is not offered as "not about to hit the ball");
- attributes too vague to grade ("colorful", "pale") and the "other" and gender categories
  are never asked (`vocab.askable_attribute`).

Only lists and sorted keys are iterated, so the output depends on the rng alone.
"""

from __future__ import annotations

import random
import weakref
from functools import cached_property, lru_cache
from typing import Sequence, TypeVar

from evol.provision.base import (FIRST, DrawnGenerator, GenContext, as_multiple_choice, box_texts, maybe_options,
                                 number, pick_rare, register)
from evol.provision.graph import SceneGraph
from evol.provision import vocab
from evol.provision.vocab import (CATEGORIES, UNASKED_CATEGORIES, VAGUE_ATTRIBUTES, askable_attribute,
                                  attribute_category, attributes_in_category, is_countable, may_name_same, plural,
                                  verb_phrase)

T = TypeVar("T")

# -- words ------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _listed_names() -> frozenset[str] | None:
    names = getattr(vocab, "countable_names", None)
    return frozenset(names()) if names is not None else None


@lru_cache(maxsize=1 << 14)
def _is_group_label(label: str) -> bool:
    """A plural name ("cups", "people") whose box may hold several things; listed singular
    names that end in s ("glass", "bus") are not."""
    if not is_countable(label):
        return False
    listed = _listed_names()
    if listed is not None:
        return label not in listed
    return label.endswith("s") and not label.endswith("ss") and is_countable(label[:-1])


def _join(items: Sequence[str], last: str = "or") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def _the(items: Sequence[str]) -> list[str]:
    return [f"the {x}" for x in items]


# Near-synonyms: a word in the same group as a right answer is never a distractor (words
# sharing a word, "blue" and "dark blue", are kept apart as well: see `_near`).
_ATTRIBUTE_SYNONYMS = [
    # color
    ("gray", "silver"), ("yellow", "gold", "golden", "blond", "blonde"), ("tan", "beige", "khaki"),
    ("navy", "navy blue", "dark blue"), ("maroon", "burgundy", "dark red"), ("teal", "turquoise"),
    ("purple", "violet", "lavender"), ("white", "cream", "ivory", "off white"), ("olive", "dark green"),
    ("brown", "brunette"), ("multicolored", "colorful"),
    # size
    ("large", "big", "huge", "giant", "massive", "enormous", "oversized"),
    ("small", "little", "tiny", "miniature", "mini"), ("tall", "high", "long"),
    ("thin", "skinny", "slim", "narrow"), ("fat", "chubby", "thick"), ("short", "little", "low"),
    # activity, state
    ("lying", "laying", "resting"), ("standing", "upright"), ("lying", "horizontal"),
    ("lit", "lighted", "illuminated", "on", "turned on", "glowing", "burning"),
    ("off", "turned off", "unlit"), ("covered", "snow covered"), ("cut", "sliced", "chopped"),
    ("empty", "unoccupied", "bare"), ("full", "filled", "occupied", "crowded", "busy"),
    ("broken", "damaged", "cracked", "torn"), ("used", "worn"), ("dirty", "messy", "muddy", "dusty"),
    ("clean", "neat"), ("cloudy", "overcast"), ("attached", "mounted"),
    # material
    ("wood", "wooden"), ("metal", "metallic", "steel", "stainless steel", "iron", "wrought iron",
                         "aluminum", "chrome"),
    ("cement", "concrete", "paved", "asphalt"), ("cloth", "fabric", "cotton", "canvas"),
    ("wool", "woolen", "woolly", "knit"), ("stone", "rock", "marble", "granite", "cobblestone"),
    ("tile", "tiled"), ("ceramic", "porcelain"), ("straw", "wicker", "woven", "bamboo"),
    ("wire", "mesh", "chain link"), ("dirt", "sand", "gravel"),
    # texture, mood, shape, orientation
    ("fluffy", "furry", "fuzzy", "hairy"), ("shiny", "glossy", "reflective", "sparkly", "glittery"),
    ("dotted", "spotted", "polka dot"), ("transparent", "see through", "clear"),
    ("happy", "cheerful", "joyful", "smiling", "playful", "amused"),
    ("calm", "relaxed", "peaceful", "content"), ("tired", "sleepy", "bored"),
    ("round", "circular", "rounded", "spherical"), ("pointed", "pointy", "tapered", "conical"),
    ("curved", "arched", "bent", "curled", "crooked"), ("square", "rectangular", "cubic"),
    ("tilted", "slanted", "angled", "diagonal", "leaning"), ("upright", "vertical"),
    ("raised", "lifted", "extended", "outstretched"),
]
# Words too vague to be a right answer or a safe wrong one, and categories never asked
# about (the vague-word filter every generator that draws attributes applies).
_VAGUE_ATTRIBUTES = VAGUE_ATTRIBUTES
_SKIPPED_CATEGORIES = UNASKED_CATEGORIES


def _askable_category(attr: str) -> str | None:
    """The category of an attribute a question may be about, or None: words outside the
    vocabulary, in a skipped category, or too vague to grade are never asked."""
    return attribute_category(attr) if askable_attribute(attr) else None


_PREDICATE_SYNONYMS = [
    ("on", "on top of", "sitting on", "standing on", "lying on", "resting on", "parked on",
     "riding", "riding on", "above", "over", "atop", "mounted on", "placed on", "laying on"),
    ("in", "inside", "inside of", "within", "in the middle of", "contained in", "sitting in",
     "standing in", "wearing"),
    ("under", "below", "beneath", "underneath"),
    ("holding", "carrying", "has", "have", "holds", "with", "hold"),
    ("wearing", "wears", "dressed in", "has on"),
    ("attached to", "hanging on", "hanging from", "mounted on", "on"),
    ("in front of", "before"),
    ("behind", "in back of"),
    ("looking at", "watching", "facing"),
    ("leaning on", "leaning against", "against"),
]
_VAGUE_PREDICATES = frozenset({"near", "next to", "beside", "by", "with", "has", "have", "close to",
                               "around", "and", "at", "along", "of", "to"})
COMMON_PREDICATES = [
    "on", "in", "under", "behind", "in front of", "holding", "wearing", "riding", "above",
    "below", "inside", "attached to", "hanging on", "sitting on", "standing on", "carrying",
    "looking at", "covering", "leaning on", "parked on", "eating", "using", "pulling",
    "lying on", "walking on", "playing with", "touching", "across",
]


def _synonym_index(groups: list[tuple[str, ...]]) -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for k, group in enumerate(groups):
        for word in group:
            index.setdefault(word, []).append(k)
    return index


_ATTR_INDEX = _synonym_index(_ATTRIBUTE_SYNONYMS)
_PRED_INDEX = _synonym_index(_PREDICATE_SYNONYMS)


def _related(a: str, b: str, index: dict[str, list[int]]) -> bool:
    """Same word or near-synonyms."""
    if a == b:
        return True
    return any(k in index.get(b, []) for k in index.get(a, []))


@lru_cache(maxsize=1 << 16)
def _near(a: str, b: str) -> bool:
    """Attributes that may both hold: same, near-synonyms, or sharing a word ("dark blue", "blue")."""
    return _related(a, b, _ATTR_INDEX) or any(w in b.split() for w in a.split())


def _clean_predicate(p: str) -> str:
    return " ".join(p.strip().lower().split())


def _valid_predicate(p: str) -> bool:
    return bool(p) and p != "of"


_be_phrase = verb_phrase  # the predicate after "which": "on" -> "is on", "walks on" -> "walks on"


# -- geometry ---------------------------------------------------------------------------

def _area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _inter(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    i = _inter(a, b)
    u = _area(a) + _area(b) - i
    return i / u if u > 0 else 0.0


def _contains(outer: Sequence[float], inner: Sequence[float]) -> bool:
    """`outer` holds (almost all of) `inner` and is at least as large."""
    a = _area(inner)
    return a > 0 and _area(outer) >= a and _inter(outer, inner) >= 0.9 * a


def _same_or_part(a: Sequence[float], b: Sequence[float]) -> bool:
    """`_iou(a, b) >= 0.5 or _inter(a, b) >= 0.8 * _area(a)`, each quantity computed once."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = w * h if w > 0 and h > 0 else 0.0
    area_a = _area(a)
    u = area_a + _area(b) - inter
    return (inter / u if u > 0 else 0.0) >= 0.5 or inter >= 0.8 * area_a


DUPLICATE_IOU = 0.7


def count_ranges(graph: SceneGraph) -> dict[str, tuple[int, int]]:
    """Countable label -> (count ignoring doubtful boxes, count of all boxes), sorted by label.

    A box is doubtful when it holds another box of the same label (a group box or a big
    duplicate) or nearly coincides with an earlier one. Labels whose plural also appears
    ("cup" with "cups") and plural group labels themselves are left out.
    """
    by_label = _facts(graph).by_label
    present = graph.label_counts
    out: dict[str, tuple[int, int]] = {}
    for label in sorted(by_label):
        if not is_countable(label) or _is_group_label(label):
            continue
        if present[plural(label)] or present[label + "s"]:
            continue
        idx = by_label[label]
        if len(idx) == 1:  # a single box holds nothing of its own label and has no twin
            out[label] = (1, 1)
            continue
        boxes = [graph.objects[i].box for i in idx]
        doubtful = 0
        for a, box in enumerate(boxes):
            holds = any(b != a and _contains(box, other) for b, other in enumerate(boxes))
            dup = any(_iou(box, other) >= DUPLICATE_IOU for other in boxes[:a])
            doubtful += holds or dup
        out[label] = (len(idx) - doubtful, len(idx))
    return out


def _referable(graph: SceneGraph) -> list[bool]:
    """Per object: no other object has the same normalised box, so the box names it."""
    boxes = graph.norm_boxes()
    seen: dict[tuple, int] = {}
    for b in boxes:
        seen[b] = seen.get(b, 0) + 1
    return [seen[b] == 1 for b in boxes]


class _Facts:
    """Per-graph data the generators here share, built once per graph and kept with it
    (`SceneGraph.derived`): each image pays for it once, not once per generator."""

    def __init__(self, g: SceneGraph):
        # a weak reference: the graph keeps this object, and a cycle back to the graph
        # would leave its masks to the cyclic garbage collector once the graph is dropped
        self._graph = weakref.ref(g)
        self.by_label: dict[str, list[int]] = {}  # label -> object indices, in index order
        for i, ob in enumerate(g.objects):
            self.by_label.setdefault(ob.label, []).append(i)
        self.attrs = [_clean_attributes(ob.attributes) for ob in g.objects]

    @property
    def g(self) -> SceneGraph:
        return self._graph()

    @cached_property
    def ranges(self) -> dict[str, tuple[int, int]]:
        return count_ranges(self.g)

    @cached_property
    def referable(self) -> list[bool]:
        return _referable(self.g)

    @cached_property
    def box_text(self) -> list[str]:
        """Each object's normalised box as written in questions."""
        return box_texts(self.g)

    @cached_property
    def relations(self) -> list[tuple[int, str, int]]:
        return _relations(self.g)


def _facts(g: SceneGraph) -> _Facts:
    return g.derived("basic.facts", _Facts)


# -- sampling and output ----------------------------------------------------------------

def _pick_candidates(rng: random.Random, ctx: GenContext, answer: str, others: Sequence[str],
                     k: int) -> tuple[list[str], list[str]]:
    """Candidates named in a "which of these" question: as MC options, or listed in the text
    (then the options are [])."""
    options = maybe_options(rng, ctx, answer, others, k)
    if options:
        return options, options
    pool = sorted(set(others) - {answer})
    chosen = rng.sample(pool, min(k - 1, len(pool))) + [answer]
    rng.shuffle(chosen)
    return chosen, []


def _count_values(n: int, k: int) -> list[int]:
    """k positive consecutive counts around n: n-1..n+2 for four, 1..4 when n is small."""
    lo = max(1, n - (k - 1) // 2)
    return list(range(lo, lo + k))


def _count_answer(rng: random.Random, ctx: GenContext, k: int) -> tuple[str, list[str]]:
    """The count as the answer, and nearby counts as options when drawn as multiple choice."""
    answer = number(k, ctx)
    others = [number(v, ctx) for v in _count_values(k, ctx.n_choices) if v != k]
    return answer, maybe_options(rng, ctx, answer, others)


class _Base(DrawnGenerator):
    """The template as the generators here use it: the facts are the image's `_Facts`, all
    draws come first, and each QA's metadata says its form ("mc" or "short")."""

    draw = FIRST
    short_templates: tuple[str, ...] = ()  # "which of these" questions: candidates in the text
    mc_templates: tuple[str, ...] = ()  # ... and as options

    def facts(self, graphs, ctx):
        return _facts(graphs[0])

    def qa(self, question, answer, options, objects, metadata):
        return super().qa(question, answer, options, objects, {"form": "mc" if options else "short", **metadata})

    def which(self, rng: random.Random, ctx: GenContext, answer: str, others: Sequence[str], k: int,
              names=list, **fields: str) -> tuple[list[str], list[str], str]:
        """A "which of these" question: (the candidates shown, the options, the question).
        `names` writes the candidates as the short form's text lists them."""
        shown, options = _pick_candidates(rng, ctx, answer, others, k)
        if options:
            return shown, options, self.say(rng, self.mc_templates, **fields)
        listed = names(shown)
        return shown, options, self.say(rng, self.short_templates, cands=_join(listed),
                                        cands_and=_join(listed, "and"), **fields)


# -- 1. count objects -------------------------------------------------------------------

@register
class CountObjects(_Base):
    """ProVision's object counting (arXiv 2412.07012): how many of a countable object, asked
    only when every box of that label is a clean single instance."""

    name = "count_objects"
    skills = ("calculating", "existence")
    templates = (
        "How many {things} are there in the image?",
        "Count the {things} in this picture. How many are there?",
        "What is the number of {things} shown here?",
        "How many {things} can be seen in the photo?",
        "Tell me how many {things} this image contains.",
    )

    def candidates(self, facts, ctx):
        return [lab for lab, (lo, hi) in facts.ranges.items() if lo == hi and hi > 0]

    def rarity(self, facts, label, ctx):
        return ctx.freq.objects[label]

    def word(self, facts, label, rng, ctx):
        k = facts.ranges[label][1]
        question = self.say(rng, self.templates, things=plural(label))
        answer, options = _count_answer(rng, ctx, k)
        boxes = [facts.box_text[i] for i in facts.by_label[label]]
        return self.qa(question, answer, options, [label], {"label": label, "count": k, "boxes": boxes})


# -- 2-3. most / least frequent ---------------------------------------------------------

def _most_named(facts: _Facts, label: str) -> int:
    """The most objects of the image that `label` may name: its own highest count, plus every
    object of another name that may be called the same ("person" for a "man")."""
    hi = facts.ranges[label][1]
    for other, count in facts.g.label_counts.items():
        if other != label and may_name_same(other, label):
            hi += facts.ranges[other][1] if other in facts.ranges else count
    return hi


class _Frequency(_Base):
    """ProVision's most / least frequent object (arXiv 2412.07012) among a few candidates;
    the answer must win however container boxes are counted."""

    most = True
    skills = ("calculating", "existence")

    def candidates(self, facts, ctx):
        ranges = facts.ranges
        labels = list(ranges)
        top = {a: _most_named(facts, a) for a in labels}
        # An answer must win however the doubtful boxes are read, and whatever else its
        # objects may be called: for "most" its lowest count beats every rival's highest
        # (objects of other names the rival may stand for included); for "least" its highest
        # is below their lowest. A rival is never another name for the answer.
        if self.most:
            beats = [(a, [b for b in labels if b != a and top[b] < ranges[a][0] and not may_name_same(a, b)])
                     for a in labels]
        else:
            beats = [(a, [b for b in labels if b != a and ranges[b][0] > top[a] and not may_name_same(a, b)])
                     for a in labels]
        return [(a, rivals) for a, rivals in beats if rivals]

    def rarity(self, facts, cand, ctx):
        return ctx.freq.objects[cand[0]]

    def word(self, facts, cand, rng, ctx):
        label, rivals = cand
        ranges = facts.ranges
        cands, options, question = self.which(rng, ctx, label, rivals, ctx.n_choices)
        return self.qa(question, label, options, list(cands), {
            "labels": list(cands),
            "counts": {c: ranges[c][0] for c in cands},
            "counts_with_container_boxes": {c: ranges[c][1] for c in cands},
        })


@register
class MostFrequentObject(_Frequency):
    """Which of a few kinds of object appears most often (ProVision, arXiv 2412.07012)."""

    name = "most_frequent_object"
    most = True
    short_templates = (
        "Which kind of object appears the most times in the image: {cands}?",
        "Of these kinds of object ({cands_and}), which is the most numerous here?",
        "Which kind of object has the largest number of instances in the picture: {cands}?",
        "Among the object kinds {cands_and}, which shows up most often?",
    )
    mc_templates = (
        "Which of the following objects appears the most times in the image?",
        "Which object below is the most numerous in this picture?",
        "Of the listed objects, which has the most instances in the photo?",
        "Which of these kinds of object shows up most often here?",
    )


@register
class LeastFrequentObject(_Frequency):
    """Which of a few kinds of object appears least often (ProVision, arXiv 2412.07012)."""

    name = "least_frequent_object"
    most = False
    short_templates = (
        "Which kind of object appears the fewest times in the image: {cands}?",
        "Of these kinds of object ({cands_and}), which is the least numerous here?",
        "Which kind of object has the smallest number of instances in the picture: {cands}?",
        "Among the object kinds {cands_and}, which shows up least often?",
    )
    mc_templates = (
        "Which of the following objects appears the fewest times in the image?",
        "Which object below is the least numerous in this picture?",
        "Of the listed objects, which has the fewest instances in the photo?",
        "Which of these kinds of object shows up least often here?",
    )


# -- 4-7. left-most / right-most / top-most / bottom-most -------------------------------

class _Extreme(_Base):
    """ProVision's left-most / right-most / top-most / bottom-most object (arXiv 2412.07012)
    among three label-unique objects whose intervals on the axis lie apart."""

    axis = 0  # 0: horizontal (x), 1: vertical (y)
    far = False  # True when the answer has the largest coordinates (right, bottom)
    n_options = 3
    skills = ("grounding", "relationship description")

    def _interval(self, g: SceneGraph, i: int) -> tuple[float, float]:
        box = g.objects[i].box
        lo, hi = box[self.axis], box[self.axis + 2]
        return (-hi, -lo) if self.far else (lo, hi)  # mirrored so the answer is always lowest

    def candidates(self, facts, ctx):
        g = facts.g
        objs = [i for i in range(len(g.objects)) if g.unique_label(i)]
        iv = {i: self._interval(g, i) for i in objs}
        # For an answer a, the objects wholly past it on the axis; a triple exists when two
        # of those are apart: min(end) <= max(start) among them.
        out = []
        for a in objs:
            # rivals wholly past the answer, never another name for it
            rest = [b for b in objs if b != a and iv[b][0] >= iv[a][1]
                    and not may_name_same(g.objects[a].label, g.objects[b].label)]
            if len(rest) >= 2 and min(iv[b][1] for b in rest) <= max(iv[b][0] for b in rest):
                out.append((a, rest))
        return out

    def rarity(self, facts, cand, ctx):
        return ctx.freq.objects[facts.g.objects[cand[0]].label]

    def word(self, facts, cand, rng, ctx):
        g = facts.g
        a, rest = cand
        iv = {i: self._interval(g, i) for i in rest}
        apart = lambda x, y: iv[x][1] <= iv[y][0] or iv[y][1] <= iv[x][0]  # noqa: E731
        label_freq = lambda i: ctx.freq.objects[g.objects[i].label]  # noqa: E731
        firsts = [b for b in rest if any(apart(b, c) for c in rest if c != b)]
        b = pick_rare(rng, firsts, label_freq)
        c = pick_rare(rng, [c for c in rest if c != b and apart(b, c)], label_freq)
        answer = g.objects[a].label
        others = [g.objects[b].label, g.objects[c].label]
        cands, options, question = self.which(rng, ctx, answer, others, self.n_options, names=_the)
        by_label = {g.objects[i].label: i for i in (a, b, c)}
        return self.qa(question, answer, options, list(cands), {
            "labels": list(cands),
            "boxes": {lab: facts.box_text[by_label[lab]] for lab in cands},
            "axis": "x" if self.axis == 0 else "y",
        })


@register
class LeftmostObject(_Extreme):
    """Which of three objects lies furthest to the left (ProVision, arXiv 2412.07012)."""

    name = "leftmost_object"
    axis, far = 0, False
    short_templates = (
        "Which of these is furthest to the left in the image: {cands}?",
        "Among {cands_and}, which one lies closest to the left edge?",
        "Reading the picture from left to right, which comes first: {cands}?",
        "Of {cands_and}, which object is positioned leftmost?",
    )
    mc_templates = (
        "Which of the following objects is furthest to the left in the image?",
        "Which object below lies closest to the left edge of the picture?",
        "Reading the image from left to right, which of these objects comes first?",
        "Which of the listed objects is positioned leftmost?",
    )


@register
class RightmostObject(_Extreme):
    """Which of three objects lies furthest to the right (ProVision, arXiv 2412.07012)."""

    name = "rightmost_object"
    axis, far = 0, True
    short_templates = (
        "Which of these is furthest to the right in the image: {cands}?",
        "Among {cands_and}, which one lies closest to the right edge?",
        "Reading the picture from left to right, which comes last: {cands}?",
        "Of {cands_and}, which object is positioned rightmost?",
    )
    mc_templates = (
        "Which of the following objects is furthest to the right in the image?",
        "Which object below lies closest to the right edge of the picture?",
        "Reading the image from left to right, which of these objects comes last?",
        "Which of the listed objects is positioned rightmost?",
    )


@register
class TopmostObject(_Extreme):
    """Which of three objects sits highest in the image (ProVision, arXiv 2412.07012)."""

    name = "topmost_object"
    axis, far = 1, False
    short_templates = (
        "Which of these sits highest in the image: {cands}?",
        "Among {cands_and}, which one is closest to the top edge?",
        "Scanning the picture from top to bottom, which comes first: {cands}?",
        "Of {cands_and}, which object is positioned topmost?",
    )
    mc_templates = (
        "Which of the following objects sits highest in the image?",
        "Which object below is closest to the top edge of the picture?",
        "Scanning the image from top to bottom, which of these objects comes first?",
        "Which of the listed objects is positioned topmost?",
    )


@register
class BottommostObject(_Extreme):
    """Which of three objects sits lowest in the image (ProVision, arXiv 2412.07012)."""

    name = "bottommost_object"
    axis, far = 1, True
    short_templates = (
        "Which of these sits lowest in the image: {cands}?",
        "Among {cands_and}, which one is closest to the bottom edge?",
        "Scanning the picture from top to bottom, which comes last: {cands}?",
        "Of {cands_and}, which object is positioned bottommost?",
    )
    mc_templates = (
        "Which of the following objects sits lowest in the image?",
        "Which object below is closest to the bottom edge of the picture?",
        "Scanning the image from top to bottom, which of these objects comes last?",
        "Which of the listed objects is positioned bottommost?",
    )


# -- 8. count attributed objects --------------------------------------------------------

def _clean_attributes(words: Sequence[str]) -> list[str]:
    """Attributes cleaned, duplicates dropped, in annotation order."""
    out: list[str] = []
    for a in words:
        a = " ".join(a.strip().lower().split())
        if a and a not in out:
            out.append(a)
    return out


def _attrs(g: SceneGraph, i: int) -> list[str]:
    """Object i's attributes, cleaned, duplicates dropped, in annotation order.

    The list is shared (computed once per graph): read it, copy it before handing it out."""
    return _facts(g).attrs[i]


@lru_cache(maxsize=1 << 16)
def _same_attribute(a: str, b: str) -> bool:
    """b says a: the same word, a synonym of the same category ("big" for "large"), or a
    compound that contains it ("dark blue" for "blue")."""
    if a == b:
        return True
    if attribute_category(a) != attribute_category(b):
        return False
    return _related(a, b, _ATTR_INDEX) or (" " not in a and a in b.split())


@register
class CountAttributedObjects(_Base):
    """ProVision's attributed counting (arXiv 2412.07012): how many X are {attr}, asked only
    when every X is annotated in that attribute's category."""

    name = "count_attributed_objects"
    skills = ("calculating", "referencing")
    templates = (
        "How many {attr} {things} are there in the image?",
        "Count the {attr} {things} in this picture.",
        "What is the number of {attr} {things} shown here?",
        "How many of the {things} in the photo are {attr}?",
        "Tell me how many {attr} {things} can be seen.",
    )

    def candidates(self, facts, ctx):
        cands: list[tuple[str, str, int]] = []
        for label, (lo, hi) in facts.ranges.items():
            if lo != hi:
                continue
            member_attrs = [facts.attrs[i] for i in facts.by_label[label]]
            member_cats = [{attribute_category(b) for b in m} for m in member_attrs]
            seen: list[str] = []
            for a in (a for attrs in member_attrs for a in attrs):
                cat = _askable_category(a)
                if a in seen or cat is None:
                    continue
                seen.append(a)
                # Every member must say something in this category, or an unannotated
                # one might have the attribute too.
                if not all(cat in cats for cats in member_cats):
                    continue
                has = [any(_same_attribute(a, b) for b in m) for m in member_attrs]
                # a member that is "blue" may or may not be "dark blue": skip
                if any(not h and any(_near(a, b) and attribute_category(b) == cat for b in m)
                       for h, m in zip(has, member_attrs)):
                    continue
                cands.append((label, a, sum(has)))
        return cands

    def rarity(self, facts, cand, ctx):
        return ctx.freq.attributes[cand[1]]

    def word(self, facts, cand, rng, ctx):
        label, attr, k = cand
        question = self.say(rng, self.templates, attr=attr, things=plural(label))
        answer, options = _count_answer(rng, ctx, k)
        boxes = [facts.box_text[i] for i in facts.by_label[label]
                 if any(_same_attribute(attr, b) for b in facts.attrs[i])]
        return self.qa(question, answer, options, [label], {
            "label": label, "attribute": attr, "count": k, "total": facts.ranges[label][1], "boxes": boxes})


# -- 9. all attributes of an object -----------------------------------------------------

def _attribute_pool(ctx: GenContext, category: str | None, exclude: Sequence[str], need: int,
                    avoid_categories: Sequence[str] = ()) -> list[str]:
    """Distractor attributes seen in the dataset, topped up from the vocabulary when fewer
    than `need`; none equal or near to a word in `exclude`.

    With a category, words of that category; with None, words of no category or of a
    category outside `avoid_categories`. The result is a new list.
    """
    pools = _pools(ctx.freq.sorted_attributes)
    key = (category, frozenset(exclude), need, frozenset(avoid_categories) if category is None else None)
    got = pools.results.get(key)
    if got is None:
        seen, vocabulary = pools.bases(category, avoid_categories)
        near = set().union(*(pools.near(e) for e in exclude))  # w in near: _near(w, e) for an e
        got = [w for w in seen if w not in near]
        if len(got) < need:  # the dataset's words fall short: the vocabulary's too
            got += [w for w in vocabulary if w not in near]
        if len(pools.results) >= _POOL_MEMO:
            pools.results.clear()
        pools.results[key] = got
    return list(got)


_POOL_MEMO = 1 << 14  # remembered pools per dataset vocabulary


class _Pools:
    """Distractor pools for one list of the dataset's attributes: the candidate words per
    category (before leaving out those near the right answer) and recent results."""

    def __init__(self, seen: list[str]):
        self.seen = seen
        self._bases: dict = {}
        self.results: dict = {}
        self._near: dict[str, set[str]] = {}
        self._by_word: dict[str, list[str]] | None = None

    def near(self, e: str) -> set[str]:
        """The words a pool may hold (dataset or vocabulary) that are `_near` to e: e, its
        listed synonyms, and the words sharing a word with it ("dark blue" for "blue")."""
        got = self._near.get(e)
        if got is None:
            if self._by_word is None:
                self._by_word = {}
                vocabulary = [w for c in CATEGORIES for w in attributes_in_category(c)]
                for w in dict.fromkeys(self.seen + vocabulary):
                    for part in w.split():
                        self._by_word.setdefault(part, []).append(w)
            got = {e}
            for k in _ATTR_INDEX.get(e, ()):
                got.update(_ATTRIBUTE_SYNONYMS[k])
            for part in e.split():
                got.update(self._by_word.get(part, ()))
            self._near[e] = got
        return got

    def bases(self, category: str | None, avoid_categories: Sequence[str]) -> tuple[list[str], list[str]]:
        """(dataset words, vocabulary words not among them) that may be distractors for the
        category, each list in the order the pool gives them."""
        key = (category, tuple(avoid_categories) if category is None else ())
        got = self._bases.get(key)
        if got is None:
            def fits(w: str) -> bool:
                cat = attribute_category(w)
                if category is not None:
                    return cat == category and w not in _VAGUE_ATTRIBUTES
                return cat not in avoid_categories and w not in _VAGUE_ATTRIBUTES

            seen = [w for w in self.seen if fits(w)]
            taken = set(seen)
            vocabulary: list[str] = []
            for c in (CATEGORIES if category is None else (category,)):
                for w in attributes_in_category(c):
                    if w not in taken and fits(w):
                        taken.add(w)
                        vocabulary.append(w)
            got = self._bases[key] = (seen, vocabulary)
        return got


_POOLS: list = [None]  # the _Pools of the dataset attribute list last asked about


def _pools(seen: list[str]) -> _Pools:
    pools = _POOLS[0]
    if pools is None or pools.seen is not seen:
        pools = _POOLS[0] = _Pools(seen)
    return pools


@register
class ObjectAttributes(_Base):
    """ProVision's object attributes (arXiv 2412.07012): every attribute of the object at a
    box; wrong options swap each word for another of its category."""

    name = "object_attributes"
    skills = ("grounding", "referencing")
    templates = (
        "What attributes describe the {label} at {box}?",
        "List the properties of the object in region {box}.",
        "Which attributes does the {label} located at {box} have?",
        "Describe the {label} inside the box {box} with its attributes.",
        "What can be said about the appearance and state of the object at {box}?",
    )

    def candidates(self, facts, ctx):
        ok, attrs = facts.referable, facts.attrs
        return [i for i in range(len(attrs)) if ok[i] and attrs[i]]

    def rarity(self, facts, i, ctx):
        freq = ctx.freq.attributes
        return min(freq[a] for a in facts.attrs[i])

    def word(self, facts, i, rng, ctx):
        attrs = facts.attrs[i]
        label, box = facts.g.objects[i].label, facts.box_text[i]
        answer = ", ".join(sorted(attrs))
        options = self._options(rng, ctx, attrs, answer) if rng.random() < ctx.mc_ratio else None
        question = self.say(rng, self.templates, label=label, box=box)
        return self.qa(question, answer, options, [label], {"label": label, "box": box, "attributes": list(attrs)})

    @staticmethod
    def _options(rng: random.Random, ctx: GenContext, attrs: list[str], answer: str) -> list[str] | None:
        """Wrong options of the same length, each slot replaced by a word of the same category."""
        k = ctx.n_choices - 1
        own_cats = [c for c in (attribute_category(a) for a in attrs) if c is not None]
        slots: dict[str | None, int] = {}
        for a in attrs:
            cat = attribute_category(a)
            slots[cat] = slots.get(cat, 0) + 1
        columns: list[list[str]] = []
        for cat, count in slots.items():
            pool = _attribute_pool(ctx, cat, attrs, count * k, own_cats)
            if len(pool) < count * k:
                return None
            picked = rng.sample(pool, count * k)
            columns += [picked[s * k:(s + 1) * k] for s in range(count)]
        distractors = [", ".join(sorted(col[t] for col in columns)) for t in range(k)]
        return as_multiple_choice(rng, answer, distractors, ctx.n_choices)


# -- 10. attribute of a category --------------------------------------------------------

_CATEGORY_NOUN = {"color": "color", "size": "size", "activity": "activity", "state": "state",
                  "material": "material", "texture": "texture", "mood": "mood", "shape": "shape",
                  "orientation": "orientation"}


@register
class ObjectAttributeCategory(_Base):
    """ProVision's attribute of a category (arXiv 2412.07012): the color, material, ... of
    the object at a box; wrong options come from the same category."""

    name = "object_attribute_category"
    skills = ("grounding", "referencing")
    templates = (
        "What is the {noun} of the {label} at {box}?",
        "Which {noun} best describes the {label} located at {box}?",
        "For the {label} inside the region {box}, name its {noun}.",
        "Considering the {label} in box {box}, what is its {noun}?",
    )
    special = {
        "color": ("What color is the {label} at {box}?",
                  "Which color does the {label} in region {box} show?"),
        "material": ("What is the {label} at {box} made of?",
                     "What material was used for the {label} in region {box}?"),
        "shape": ("What shape is the {label} at {box}?",),
        "size": ("How big does the {label} at {box} look?",),
        "activity": ("What is the {label} at {box} doing?",),
    }

    def candidates(self, facts, ctx):
        ok = facts.referable
        cands: list[tuple[int, str, str]] = []
        for i, attrs in enumerate(facts.attrs):
            if not ok[i]:
                continue
            in_cat: dict[str, list[str]] = {}  # category -> the object's words in it
            for a in attrs:
                cat = attribute_category(a)
                if cat is not None and cat not in _SKIPPED_CATEGORIES:
                    in_cat.setdefault(cat, []).append(a)
            for cat in CATEGORIES:
                words = in_cat.get(cat)
                # exactly one word of the category, else the answer would be partial
                if words is not None and len(words) == 1 and words[0] not in _VAGUE_ATTRIBUTES:
                    cands.append((i, cat, words[0]))
        return cands

    def rarity(self, facts, cand, ctx):
        return ctx.freq.attributes[cand[2]]

    def word(self, facts, cand, rng, ctx):
        i, cat, attr = cand
        label, box = facts.g.objects[i].label, facts.box_text[i]
        pool = _attribute_pool(ctx, cat, facts.attrs[i], ctx.n_choices - 1)
        options = maybe_options(rng, ctx, attr, pool)
        question = self.say(rng, self.templates + self.special.get(cat, ()), noun=_CATEGORY_NOUN[cat],
                            label=label, box=box)
        return self.qa(question, attr, options, [label],
                       {"label": label, "box": box, "category": cat, "attribute": attr})


# -- 11-13. relations -------------------------------------------------------------------

def _relations(g: SceneGraph) -> list[tuple[int, str, int]]:
    """(subject, predicate, object) with a usable predicate, duplicates dropped, in order."""
    out: list[tuple[int, str, int]] = []
    for r in g.relations:
        p = _clean_predicate(r.predicate)
        t = (r.subject, p, r.object)
        if _valid_predicate(p) and r.subject != r.object and t not in out:
            out.append(t)
    return out


def _predicate_pool(ctx: GenContext, true_predicates: Sequence[str]) -> list[str]:
    """Wrong predicates seen in the dataset, topped up from the common ones when too few;
    never equal or near to a true one. The result is a new list."""
    seen = ctx.freq.sorted_relations
    memo = _PRED_POOLS
    if memo[0] is not seen:
        memo[:] = [seen, {}]
    key = (frozenset(true_predicates), ctx.n_choices)
    got = memo[1].get(key)
    if got is None:
        if len(memo[1]) >= _POOL_MEMO:
            memo[1].clear()
        got = memo[1][key] = _predicate_pool_of(seen, true_predicates, ctx.n_choices - 1)
    return list(got)


_PRED_POOLS: list = [None, {}]  # [the dataset's sorted predicates, {(true ones, choices): pool}]


def _predicate_pool_of(seen: list[str], true_predicates: Sequence[str], need: int) -> list[str]:
    out: list[str] = []
    for p in seen + [None] + COMMON_PREDICATES:
        if p is None:  # end of the dataset's predicates
            if len(out) >= need:
                break
            continue
        p = _clean_predicate(p)
        if not _valid_predicate(p) or p in out or p in _VAGUE_PREDICATES:
            continue
        if any(_related(p, t, _PRED_INDEX) for t in true_predicates):
            continue
        out.append(p)
    return out


def _between(rels: list[tuple[int, str, int]], a: int, b: int) -> list[str]:
    """Predicates linking objects a and b in either direction."""
    return [p for s, p, o in rels if (s, o) in ((a, b), (b, a))]


class _RelationBetween(_Base):
    """ProVision's relation questions (arXiv 2412.07012): the predicate linking two objects,
    named by their labels (both unique in the image) or by their boxes. A vague predicate
    ("near") is asked only in short-answer form, since a wrong option could hold as well."""

    skills = ("relationship description", "referencing")
    by_box = False

    def candidates(self, facts, ctx):
        if self.by_box:
            ok = facts.referable
            return [(s, p, o) for s, p, o in facts.relations if ok[s] and ok[o]]
        g = facts.g
        return [(s, p, o) for s, p, o in facts.relations if g.unique_label(s) and g.unique_label(o)]

    def rarity(self, facts, rel, ctx):
        return ctx.freq.relations[rel[1]]

    def word(self, facts, rel, rng, ctx):
        s, p, o = rel
        rels = facts.relations
        x, y = facts.g.objects[s].label, facts.g.objects[o].label
        options = maybe_options(rng, ctx, p, _predicate_pool(ctx, _between(rels, s, o)))
        if p in _VAGUE_PREDICATES:
            options = []
        meta = {"subject": x, "object": y, "predicate": p}
        if self.by_box:
            bx, by = facts.box_text[s], facts.box_text[o]
            question = self.say(rng, self.templates, x=x, y=y, bx=bx, by=by)
            meta.update(subject_box=bx, object_box=by)
        else:
            question = self.say(rng, self.templates, x=x, y=y)
            meta["all_predicates"] = [q for ss, q, oo in rels if (ss, oo) == (s, o)]
        return self.qa(question, p, options, [x, y], meta)


@register
class RelationBetweenLabels(_RelationBetween):
    """The relation between two objects named by their (unique) labels (ProVision, arXiv 2412.07012)."""

    name = "relation_between_labels"
    templates = (
        "What is the relationship between the {x} and the {y}?",
        "How is the {x} related to the {y} in this image?",
        "Fill in the relation: the {x} ___ the {y}.",
        "Which predicate best links the {x} to the {y}?",
        "In a word or two, how does the {x} stand with respect to the {y}?",
    )


@register
class RelationBetweenBoxes(_RelationBetween):
    """The relation between two objects named by their boxes (ProVision, arXiv 2412.07012)."""

    name = "relation_between_boxes"
    skills = ("relationship description", "grounding")
    by_box = True
    templates = (
        "What is the relationship between the object at {bx} and the object at {by}?",
        "How is the {x} in region {bx} related to the {y} in region {by}?",
        "Fill in the relation: the object at {bx} ___ the object at {by}.",
        "Which predicate links the {x} located at {bx} to the {y} located at {by}?",
        "Describe how the thing inside {bx} relates to the thing inside {by}.",
    )


@register
class RelationSubject(_Base):
    """ProVision's subject selection (arXiv 2412.07012): which of a few candidates has a
    given relation to an object. Wrong candidates are labels none of whose objects has that
    relation (or a near-synonym) to it; vague predicates are never asked."""

    name = "relation_subject"
    skills = ("relationship description", "referencing")
    short_templates = (
        "Which of these {rel} the {y}: {cands}?",
        "Among {cands_and}, which one {rel} the {y}?",
        "Pick the object that {rel} the {y}: {cands}.",
        "Out of {cands_and}, what {rel} the {y}?",
    )
    mc_templates = (
        "Which of these {rel} the {y}?",
        "Which of the following objects {rel} the {y}?",
        "Pick the object that {rel} the {y}.",
        "In this image, which listed object {rel} the {y}?",
    )

    def candidates(self, facts, ctx):
        g = facts.g
        rels = facts.relations
        labels = sorted(g.label_counts)
        cands: list[tuple[str, str, int, list[str]]] = []
        done: set[tuple[str, str, int]] = set()  # membership only
        clear: dict[tuple[int, str], list[str]] = {}
        for s, p, o in rels:
            x, y = g.objects[s].label, g.objects[o].label
            # a vague predicate ("near") may hold for the wrong candidates too
            if not g.unique_label(o) or x == y or p in _VAGUE_PREDICATES or (x, p, o) in done:
                continue
            done.add((x, p, o))
            if (o, p) not in clear:
                clear[(o, p)] = self._clearly_not(g, rels, labels, p, o)
            # never another name for the subject ("person" for "batter")
            wrong = [lab for lab in clear[(o, p)] if lab not in (x, y, plural(x)) and lab[:-1] != x
                     and not may_name_same(lab, x)]
            if wrong:
                cands.append((x, p, o, wrong))
        return cands

    def rarity(self, facts, cand, ctx):
        return ctx.freq.relations[cand[1]]

    def word(self, facts, cand, rng, ctx):
        x, p, o, wrong = cand
        y = facts.g.objects[o].label
        shown, options, question = self.which(rng, ctx, x, wrong, ctx.n_choices, names=_the,
                                              rel=_be_phrase(p), y=y)
        return self.qa(question, x, options, list(shown) + [y], {
            "subject": x, "predicate": p, "object": y, "candidates": list(shown),
            "object_box": facts.box_text[o]})

    @staticmethod
    def _clearly_not(g: SceneGraph, rels: list[tuple[int, str, int]], labels: list[str], p: str,
                     o: int) -> list[str]:
        """The labels none of whose objects may have `p` to o. Ruled out: o itself; the objects
        with `p` (or a near-synonym) to o; any object with another relation to o, either way,
        unless a vague one like "near" (a bat touching the ball may be about to hit it); any
        object with a relation to one of those subjects, either way (the bat the batter
        holds); and any object whose box lies on or inside a subject's, or holds one (the same
        thing under another name, a part of it, or the whole it is a part of)."""
        subjects = [ss for ss, q, oo in rels if oo == o and _related(q, p, _PRED_INDEX)]
        linked = ({b for a, q, b in rels if (a == o and q not in _VAGUE_PREDICATES) or a in subjects}
                  | {a for a, q, b in rels if (b == o and q not in _VAGUE_PREDICATES) or b in subjects})
        sboxes = [g.objects[ss].box for ss in subjects]
        ruled_out: set[str] = set()  # membership only
        for i, ob in enumerate(g.objects):
            if (i == o or i in subjects or i in linked
                    or any(_same_or_part(ob.box, b) or _same_or_part(b, ob.box) for b in sboxes)):
                ruled_out.add(ob.label)
        return [lab for lab in labels if lab not in ruled_out]
