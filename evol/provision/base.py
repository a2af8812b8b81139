"""What every programmatic generator shares: its output, its controls, its template, the registry.

The generators re-implement, in our own code, the programmatic data generators of
ProVision (Zhang et al., arXiv 2412.07012): factual questions and answers written from
scene graphs by templates, with no language model.

A generator is a small class with a `name`, whether it is `multi` (2-4 images), the
`skills` it exercises, and `generate(graphs, rng, ctx, n)` returning at most `n` QAs.
All of them follow one template, `DrawnGenerator`: read the facts of the image(s),
list the questions they answer without doubt, draw up to `n` of them favouring rare
objects, attributes and relations, and word each one. Generators never loop unboundedly:
when the graph cannot supply a sample they return fewer (possibly none). All randomness
comes from the `rng` passed in, and iteration is over lists or sorted keys only, so
output never depends on PYTHONHASHSEED.
"""

from __future__ import annotations

import math
import random
import weakref
from bisect import bisect
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Callable, Iterable, Sequence, TypeVar

from evol.provision.graph import SceneGraph
from evol.records import format_box

T = TypeVar("T")

LETTERS = "ABCDEFGH"
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen", "nineteen", "twenty"]


@dataclass
class QA:
    generator: str
    question: str
    answer: str
    options: list[str] = field(default_factory=list)  # empty for short-answer form
    objects: list[str] = field(default_factory=list)
    skills: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # what the generator used
    images: list[str] = field(default_factory=list)  # image paths, filled by the caller


@dataclass
class Frequencies:
    """Dataset-wide counts used to favour rare objects, attributes and relations."""

    objects: Counter = field(default_factory=Counter)
    attributes: Counter = field(default_factory=Counter)
    relations: Counter = field(default_factory=Counter)

    _sorted_attributes: list[str] | None = field(default=None, repr=False, compare=False)
    _sorted_relations: list[str] | None = field(default=None, repr=False, compare=False)

    def add(self, graph: SceneGraph) -> None:
        for ob in graph.objects:
            self.objects[ob.label] += 1
            self.attributes.update(ob.attributes)
        self.relations.update(r.predicate for r in graph.relations)
        self._sorted_attributes = self._sorted_relations = None

    @staticmethod
    def parts(graph: SceneGraph) -> tuple[tuple[tuple[str, list[str]], ...], tuple[str, ...]]:
        """What `add` counts of a graph, small enough to send between processes."""
        return tuple((ob.label, ob.attributes) for ob in graph.objects), tuple(r.predicate for r in graph.relations)

    def add_parts(self, objects: Iterable[tuple[str, list[str]]], predicates: Iterable[str]) -> None:
        """`add` for a graph given as `parts(graph)`: the same counts, updated in the same order."""
        for label, attributes in objects:
            self.objects[label] += 1
            self.attributes.update(attributes)
        self.relations.update(predicates)
        self._sorted_attributes = self._sorted_relations = None

    @property
    def sorted_attributes(self) -> list[str]:
        """Every attribute seen, sorted: the same list object until the next `add` (or a key
        added to the counter directly), since generators ask often and key caches on it."""
        if self._sorted_attributes is None or len(self._sorted_attributes) != len(self.attributes):
            self._sorted_attributes = sorted(self.attributes)
        return self._sorted_attributes

    @property
    def sorted_relations(self) -> list[str]:
        """Every predicate seen, sorted; kept like `sorted_attributes`."""
        if self._sorted_relations is None or len(self._sorted_relations) != len(self.relations):
            self._sorted_relations = sorted(self.relations)
        return self._sorted_relations


@dataclass
class GenContext:
    mc_ratio: float = 0.5  # share of QAs in multiple-choice form
    n_choices: int = 4  # options per MC question (positional generators use 3)
    number_words: bool = False  # "three" instead of "3" in answers
    depth_gap: int = 20  # minimum depth difference (0-255) for depth comparisons
    freq: Frequencies = field(default_factory=Frequencies)


def weight_rare(count: int) -> float:
    """Sampling weight that falls with how common a thing is in the dataset."""
    w = _WEIGHTS.get(count)
    if w is None:
        w = 1.0 / math.sqrt(1 + count)
        if len(_WEIGHTS) < 1 << 16:
            _WEIGHTS[count] = w
    return w


_WEIGHTS: dict[int, float] = {}  # count -> weight_rare(count), for the counts met so far


def rare_weights(counts: Iterable[int]) -> list[float]:
    """`[weight_rare(c) for c in counts]`, with the weights looked up once computed."""
    known = _WEIGHTS
    return [known[c] if c in known else weight_rare(c) for c in counts]


def weighted_index(rng: random.Random, weights: Sequence[float]) -> int:
    """`rng.choices(range(len(weights)), weights=weights, k=1)[0]`, step for step as the
    standard library does it (cumulative sums, one `random()`, bisect), so the draws and
    the generator's state afterwards are the same, without the call's general overhead."""
    cum = list(accumulate(weights))
    total = cum[-1] + 0.0
    if total <= 0.0 or not math.isfinite(total):
        raise ValueError("weights must have a positive, finite total")
    return bisect(cum, rng.random() * total, 0, len(cum) - 1)


def pick_rare(rng: random.Random, items: Sequence[T], count_of: Callable[[T], int]) -> T:
    """Draw one of `items`, favouring those whose dataset count is low."""
    return items[weighted_index(rng, rare_weights([count_of(x) for x in items]))]


class RarePool:
    """Items drawn without replacement, favouring rare ones (weights as in `pick_rare`).

    The weights are computed once, not again on every draw.
    """

    def __init__(self, items: Sequence, counts: Sequence[int]):
        self.items = list(items)
        self.weights = rare_weights(counts)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def draw(self, rng: random.Random) -> int:
        """Index of a drawn item (left in the pool)."""
        return weighted_index(rng, self.weights)

    def pop(self, k: int):
        self.weights.pop(k)
        return self.items.pop(k)

    def take(self, rng: random.Random):
        return self.pop(self.draw(rng))


def number(n: int, ctx: GenContext) -> str:
    return NUMBER_WORDS[n] if ctx.number_words and 0 <= n < len(NUMBER_WORDS) else str(n)


def fmt_box(box: Sequence[float]) -> str:
    """A box as the generators' questions write it: two decimals (`evol.records.format_box`)."""
    return format_box(box, 2)


def box_texts(graph: SceneGraph) -> list[str]:
    """Every object's normalised box as questions write it (`fmt_box`), kept with the graph."""
    return graph.derived("box_texts", lambda g: [fmt_box(b) for b in g.norm_boxes()])


def maybe_options(rng: random.Random, ctx: GenContext, answer: str, distractors: Sequence[str],
                  n_choices: int | None = None) -> list[str]:
    """Options for a QA drawn as multiple choice (a share `ctx.mc_ratio` of them) when enough
    distractors exist; [] for the short-answer form. One `rng.random()` decides the form."""
    if rng.random() < ctx.mc_ratio:
        return as_multiple_choice(rng, answer, distractors, n_choices or ctx.n_choices) or []
    return []


def as_multiple_choice(rng: random.Random, answer: str, distractors: Sequence[str], n_choices: int) -> list[str] | None:
    """Options with the answer at a random place, or None when there are too few distractors."""
    pool = sorted({d for d in distractors if d != answer})
    if len(pool) < n_choices - 1:
        return None
    options = rng.sample(pool, n_choices - 1) + [answer]
    rng.shuffle(options)
    return options


class LastGraph:
    """`build(graph)` for the graph asked about last, remembered by a weak reference: the
    generators of one module share it while they run over the same image, and it never
    keeps a graph alive."""

    def __init__(self, build: Callable[[SceneGraph], T]):
        self.build = build
        self._ref: weakref.ref | None = None
        self._value: Any = None

    def __call__(self, graph: SceneGraph):
        ref = self._ref
        if ref is not None and ref() is graph:
            return self._value
        value = self.build(graph)
        try:
            self._ref, self._value = weakref.ref(graph), value
        except TypeError:  # not weak-referenceable: just do not remember it
            pass
        return value


class Generator:
    """A ProVision-style generator (arXiv 2412.07012): scene graph(s) in, factual QAs out."""

    name: str = ""
    multi: bool = False
    skills: tuple[str, ...] = ()

    def generate(self, graphs: list[SceneGraph], rng: random.Random, ctx: GenContext, n: int) -> list[QA]:
        raise NotImplementedError


# When a `DrawnGenerator` draws, relative to wording (the order of the rng calls):
FIRST = "first"  # draw up to n candidates, then word each; one that cannot be worded is dropped
EACH = "each"  # draw one candidate, word it, draw the next; at most n draws
FILL = "fill"  # draw and word until n QAs are written or the candidates run out


class DrawnGenerator(Generator):
    """The one template of the generators, as ProVision (arXiv 2412.07012) builds them:
    candidates, a rare-first draw, then wording.

    A subclass says what to read (`facts`, once per call; None when the image(s) cannot
    support the generator), what it could ask (`candidates`, each with the dataset count
    of what it is about, `rarity`) and how to write one drawn candidate (`word`, returning
    a QA or None to drop it). `pool` may be replaced by any object with `__bool__` and
    `take(rng)`; a `take` that answers None is a draw that found nothing. `draw` says when
    the draws happen (FIRST, EACH or FILL above); each generator keeps the order it was
    written with, so its output for a given seed stays the same.
    """

    min_graphs: int = 1
    draw: str = FIRST

    def facts(self, graphs: list[SceneGraph], ctx: GenContext) -> Any:
        return graphs[0]

    def candidates(self, facts: Any, ctx: GenContext) -> Sequence:
        raise NotImplementedError

    def rarity(self, facts: Any, item: Any, ctx: GenContext) -> int:
        """How common what `item` asks about is in the dataset (lower: drawn more often)."""
        return 0

    def pool(self, facts: Any, ctx: GenContext) -> Any:
        items = self.candidates(facts, ctx)
        return RarePool(items, [self.rarity(facts, c, ctx) for c in items])

    def word(self, facts: Any, item: Any, rng: random.Random, ctx: GenContext) -> QA | None:
        raise NotImplementedError

    def generate(self, graphs: list[SceneGraph], rng: random.Random, ctx: GenContext, n: int) -> list[QA]:
        if n <= 0 or len(graphs) < self.min_graphs:
            return []
        facts = self.facts(graphs, ctx)
        if facts is None:
            return []
        pool = self.pool(facts, ctx)
        out: list[QA] = []
        if self.draw == FILL:
            while pool and len(out) < n:
                item = pool.take(rng)
                qa = None if item is None else self.word(facts, item, rng, ctx)
                if qa is not None:
                    out.append(qa)
            return out
        draws = range(min(n, len(pool)))
        items = [pool.take(rng) for _ in draws] if self.draw == FIRST else (pool.take(rng) for _ in draws)
        for item in items:
            qa = self.word(facts, item, rng, ctx)
            if qa is not None:
                out.append(qa)
        return out

    # class attributes that hold phrasings: tuples of templates, or dicts of them
    WORDING_FIELDS = ("templates", "phrasings", "short_templates", "mc_templates", "special")

    def wordings(self) -> list[str]:
        """Every phrasing this generator may write, slots unfilled (for tests that render them all)."""
        out: list[str] = []
        for name in self.WORDING_FIELDS:
            value = getattr(self, name, None) or ()
            for group in value.values() if isinstance(value, dict) else [value]:
                out += [t for t in group if t not in out]
        return out

    @staticmethod
    def say(rng: random.Random, templates: Sequence[str], **fields: Any) -> str:
        """One of the phrasings, drawn with one `rng.choice`, its slots filled."""
        return rng.choice(templates).format(**fields)

    def qa(self, question: str, answer: str, options: Sequence[str] | None, objects: Sequence[str],
           metadata: dict[str, Any]) -> QA:
        return QA(self.name, question, answer, list(options or []), objects=list(objects),
                  skills=list(self.skills), metadata=metadata)


GENERATORS: dict[str, Generator] = {}


def register(cls: type[Generator]) -> type[Generator]:
    if cls.name in GENERATORS:
        raise ValueError(f"generator {cls.name!r} registered twice")
    GENERATORS[cls.name] = cls()
    return cls
