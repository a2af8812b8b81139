"""What every programmatic generator shares: its output, its controls, the registry.

A generator is a small class with a `name`, whether it is `multi` (2-4 images), the
`skills` it exercises, and `generate(graphs, rng, ctx, n)` returning at most `n` QAs.
Generators never loop unboundedly: when the graph cannot supply a sample they return
fewer (possibly none). All randomness comes from the `rng` passed in, and iteration is
over lists or sorted keys only, so output never depends on PYTHONHASHSEED.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Callable, Iterable, Sequence, TypeVar

from evol.provision.graph import SceneGraph

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

    def draw(self, rng: random.Random) -> int:
        """Index of a drawn item (left in the pool)."""
        return weighted_index(rng, self.weights)

    def pop(self, k: int):
        self.weights.pop(k)
        return self.items.pop(k)

    def take(self, rng: random.Random):
        return self.pop(self.draw(rng))


def draw_rare(rng: random.Random, items: Sequence[T], count_of: Callable[[T], int], n: int) -> list[T]:
    """Up to n of `items` without replacement, each draw favouring rare ones."""
    pool = RarePool(items, [count_of(x) for x in items])
    return [pool.take(rng) for _ in range(min(n, len(pool.items)))]


def number(n: int, ctx: GenContext) -> str:
    return NUMBER_WORDS[n] if ctx.number_words and 0 <= n < len(NUMBER_WORDS) else str(n)


def fmt_box(box: Sequence[float]) -> str:
    if len(box) == 4:
        return "[%.2f, %.2f, %.2f, %.2f]" % tuple(box)
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def box_texts(graph: SceneGraph) -> list[str]:
    """Every object's normalised box as questions write it (`fmt_box`), kept with the graph."""
    return graph.derived("box_texts", lambda g: [fmt_box(b) for b in g.norm_boxes()])


def as_multiple_choice(rng: random.Random, answer: str, distractors: Sequence[str], n_choices: int) -> list[str] | None:
    """Options with the answer at a random place, or None when there are too few distractors."""
    pool = sorted({d for d in distractors if d != answer})
    if len(pool) < n_choices - 1:
        return None
    options = rng.sample(pool, n_choices - 1) + [answer]
    rng.shuffle(options)
    return options


class Generator:
    name: str = ""
    multi: bool = False
    skills: tuple[str, ...] = ()

    def generate(self, graphs: list[SceneGraph], rng: random.Random, ctx: GenContext, n: int) -> list[QA]:
        raise NotImplementedError


GENERATORS: dict[str, Generator] = {}


def register(cls: type[Generator]) -> type[Generator]:
    if cls.name in GENERATORS:
        raise ValueError(f"generator {cls.name!r} registered twice")
    GENERATORS[cls.name] = cls()
    return cls
