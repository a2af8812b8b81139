"""Choose a training mix: a subset that covers as much as possible, with balanced answers.

SVIT found that a subset picked for diversity trains better than a random one of the same
size, and that balancing yes/no answers helps further. Here:

Objective. Every candidate item has features of four kinds: the verb-noun pair of its
question (`evol.analysis.verbnoun`), the objects it is about, its skills, and its task form
(`format`, or one inferred: multiple choice, yes/no, ...). For a mix S,

    f(S) = sum over kinds k of  w_k * sum over features x of kind k of  log2(1 + n_S(x))

where n_S(x) counts the items of S having x. The first item with a feature earns w_k,
the second 0.58 w_k, the third 0.42 w_k...: a new pair or object is worth most, but
repeats still count a little, so a rare feature is never starved and a common one
is not dropped entirely. f is monotone submodular, so greedy selection (taking the
largest gain each time) is within 1 - 1/e of the best mix; gains only shrink, so it runs
lazily from a heap. Ties are broken by a seeded random order, not by input order.

Constraints. Items below the judge-score floor never enter. With balance "yes-no", a
yes/no item may be taken only while its answer (yes or no) is not ahead of the other: the
mix holds them within one of each other. With "letters", a multiple-choice item may be
taken only while its correct letter is not ahead of the least-used letter that still has
candidates. A blocked item waits until its class may be taken again.
"""

from __future__ import annotations

import heapq
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from evol.analysis.textclean import yes_no_answer
from evol.records import Item, Record

WEIGHTS: dict[str, float] = {"pair": 1.0, "object": 1.0, "skill": 0.5, "form": 0.5}
BALANCES = ("yes-no", "letters")
_LETTER = re.compile(r"^\W*(?:option\s+)?\(?([A-H])\)?(?:[.):,\s]|$)")

PairsFn = Callable[[Iterable[str]], Iterable[tuple[str | None, str | None]]]


@dataclass(slots=True)
class Candidate:
    """One item that may enter the mix, reduced to what selection needs."""

    record: int  # position of its record in the input
    item: str  # item id
    pair: tuple[str, str] | None = None
    objects: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    form: str = ""
    yes_no: str | None = None
    letter: str | None = None
    score: float | None = None

    def features(self) -> list[tuple[str, str]]:
        out = [("object", o) for o in self.objects] + [("skill", s) for s in self.skills]
        if self.pair is not None:
            out.append(("pair", f"{self.pair[0]} {self.pair[1]}"))
        if self.form:
            out.append(("form", self.form))
        return out


# ----------------------------------------------------------------- item features
def yes_no_of(item: Item) -> str | None:
    if item.options:
        return None
    return yes_no_answer(item.question, item.answer)


def letter_of(item: Item) -> str | None:
    """The correct option's letter of a multiple-choice item, from its answer."""
    if not item.options:
        return None
    answer = item.answer.strip()
    for i, opt in enumerate(item.options):
        if answer == opt.strip():
            return chr(ord("A") + i) if i < 26 else None
    m = _LETTER.match(answer)
    return m.group(1).upper() if m else None


def form_of(item: Item) -> str:
    if item.format and item.format.strip():
        return " ".join(item.format.lower().split())
    if item.options:
        return "multiple choice"
    if yes_no_of(item):
        return "yes/no"
    return "short answer" if len(item.answer.split()) <= 8 else "open answer"


def candidate(record_pos: int, item: Item) -> Candidate:
    objects = tuple(dict.fromkeys(" ".join(o.lower().split()) for o in item.objects if o.strip()))
    skills = tuple(dict.fromkeys(s.strip().lower() for s in item.skills if s.strip()))
    return Candidate(record_pos, item.id, None, objects, skills, form_of(item), yes_no_of(item), letter_of(item),
                     item.verdict.score if item.verdict else None)


def candidate_items(record: Record, min_score: float, include_seeds: bool) -> list[Item]:
    """The items of a record that may enter the mix.

    Evolved items must be kept by the judge with at least `min_score` (the run's
    llava.json rule); seed items enter with `include_seeds`, or when the record has no
    versions at all (a seed file, e.g. from `evol seed svit`), if they carry no verdict
    below the floor.
    """
    out = [it for it in record.kept_items(min_score)]
    if include_seeds or not record.versions:
        out = [it for it in record.items if it.verdict is None or it.verdict.score >= min_score] + out
    return out


def default_pairs() -> PairsFn:
    from evol.analysis.verbnoun import VerbNounParser

    return VerbNounParser().parse_many


def gather_candidates(records: Iterable[Record], *, min_score: float = 0.0, include_seeds: bool = False,
                      pairs: PairsFn | None = None, excluded: Counter | None = None) -> list[Candidate]:
    """Candidates of every record, with verb-noun pairs parsed from their questions (streamed)."""
    cands: list[Candidate] = []
    excluded = excluded if excluded is not None else Counter()

    def questions() -> Iterator[str]:
        for pos, rec in enumerate(records):
            allowed = candidate_items(rec, min_score, include_seeds)
            below = sum(1 for v in rec.versions for it in v.items
                        if it.passes() and not it.passes(min_score))
            excluded["below_min_score"] += below
            for item in allowed:
                cands.append(candidate(pos, item))
                yield item.question

    parse = pairs or default_pairs()
    for i, (verb, noun) in enumerate(parse(questions())):
        if verb and noun:
            cands[i].pair = (verb, noun)
    return cands


# ---------------------------------------------------------------------- the greedy
@dataclass
class Selection:
    chosen: list[int]  # indices into the candidate list, in the order they were taken
    objective: float
    shortfall: str | None = None


def _gain(feats: Sequence[tuple[int, float]], counts: list[int]) -> float:
    return sum(w * (math.log2(2 + counts[f]) - math.log2(1 + counts[f])) for f, w in feats)


def objective(cands: Sequence[Candidate], chosen: Iterable[int], weights: dict[str, float] = WEIGHTS) -> float:
    """f(S) for the candidates at `chosen` (see the module docstring)."""
    counts: Counter = Counter()
    for i in chosen:
        counts.update(cands[i].features())
    return sum(weights.get(kind, 0.0) * math.log2(1 + n) for (kind, _), n in counts.items())


@dataclass
class _Gate:
    """Balance classes: which class each candidate is in, and how many of each are taken.

    With `fixed` classes (yes/no) every one of them counts, even one the pool lacks: a
    pool without a single "no" gives a mix with at most one "yes". Otherwise only the
    classes that still have candidates count, so letters balance as far as the pool allows.
    """

    cls: list[str | None]
    fixed: tuple[str, ...] = ()
    taken: Counter = field(default_factory=Counter)
    left: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.left = Counter(c for c in self.cls if c is not None)

    def open(self, c: str | None) -> bool:
        if c is None:
            return True
        classes = self.fixed or [k for k, v in self.left.items() if v > 0 or k == c]
        return self.taken[c] <= min(self.taken[k] for k in classes)

    def take(self, c: str | None) -> None:
        if c is not None:
            self.taken[c] += 1
            self.left[c] -= 1


def greedy_select(cands: Sequence[Candidate], size: int, *, balance: Sequence[str] = BALANCES,
                  weights: dict[str, float] = WEIGHTS, seed: int = 0) -> Selection:
    """Pick up to `size` candidates maximising f under the balance constraints (lazy greedy)."""
    unknown = set(balance) - set(BALANCES)
    if unknown:
        raise ValueError(f"unknown balance {sorted(unknown)}; known: {', '.join(BALANCES)}")
    ids: dict[tuple[str, str], int] = {}
    feats: list[list[tuple[int, float]]] = []
    for c in cands:
        row = []
        for kind, value in c.features():
            w = weights.get(kind, 0.0)
            if w > 0:
                row.append((ids.setdefault((kind, value), len(ids)), w))
        feats.append(row)
    counts = [0] * len(ids)
    gates = []
    if "yes-no" in balance:
        gates.append(_Gate([c.yes_no for c in cands], fixed=("yes", "no")))
    if "letters" in balance:
        gates.append(_Gate([c.letter for c in cands]))

    order = list(range(len(cands)))
    random.Random(seed).shuffle(order)
    rank = {i: r for r, i in enumerate(order)}
    heap = [(-_gain(feats[i], counts), rank[i], i) for i in range(len(cands))]
    heapq.heapify(heap)
    # Items of a blocked class wait in a heap of their own. While the class is open, one
    # proxy entry (index < 0) carrying the best waiting bound sits in the main heap; when
    # it comes up, that class's best item moves back. Gains are upper bounds throughout,
    # so the lazy greedy stays exact without re-pushing every waiting item each time.
    keys: list[tuple[int, str]] = []
    key_ids: dict[tuple[int, str], int] = {}
    parked: list[list[tuple[float, int, int]]] = []
    proxied: list[bool] = []

    def park(key: tuple[int, str], entry: tuple[float, int, int]) -> None:
        k = key_ids.get(key)
        if k is None:
            k = key_ids[key] = len(keys)
            keys.append(key)
            parked.append([])
            proxied.append(False)
        heapq.heappush(parked[k], entry)

    def offer_proxies() -> None:
        for k, (gi, c) in enumerate(keys):
            if parked[k] and not proxied[k] and gates[gi].open(c):
                heapq.heappush(heap, (parked[k][0][0], parked[k][0][1], -1 - k))
                proxied[k] = True

    chosen: list[int] = []
    total = 0.0
    while heap and len(chosen) < size:
        neg, r, i = heapq.heappop(heap)
        if i < 0:  # a proxy: bring its class's best waiting item back, and the next proxy
            k = -1 - i
            proxied[k] = False
            if parked[k] and gates[keys[k][0]].open(keys[k][1]):
                heapq.heappush(heap, heapq.heappop(parked[k]))
            offer_proxies()
            continue
        blocked = next((gi for gi, g in enumerate(gates) if not g.open(g.cls[i])), None)
        if blocked is not None:
            park((blocked, gates[blocked].cls[i]), (neg, r, i))
            continue
        gain = _gain(feats[i], counts)
        if heap and gain < -heap[0][0] - 1e-12:  # stale: someone else may now be better
            heapq.heappush(heap, (-gain, r, i))
            continue
        chosen.append(i)
        total += gain
        for f, _ in feats[i]:
            counts[f] += 1
        for g in gates:
            g.take(g.cls[i])
        offer_proxies()
    shortfall = None
    if len(chosen) < size:
        waiting = sum(len(v) for v in parked)
        shortfall = (f"only {len(chosen)} of {size}: {len(cands)} candidates"
                     + (f", {waiting} held back to keep answers balanced" if waiting else ""))
    return Selection(chosen, total, shortfall)


# ------------------------------------------------------------------------ report
def coverage(cands: Sequence[Candidate], idx: Iterable[int]) -> dict[str, int]:
    seen: dict[str, set] = {k: set() for k in WEIGHTS}
    for i in idx:
        for kind, value in cands[i].features():
            seen[kind].add(value)
    return {f"{k}s": len(v) for k, v in seen.items()}


def answer_balance(cands: Sequence[Candidate], idx: Iterable[int]) -> dict[str, object]:
    idx = list(idx)
    yn = Counter(cands[i].yes_no for i in idx if cands[i].yes_no)
    letters = Counter(cands[i].letter for i in idx if cands[i].letter)
    n_yn = yn["yes"] + yn["no"]
    return {"yes": yn["yes"], "no": yn["no"], "yes_ratio": round(yn["yes"] / n_yn, 4) if n_yn else None,
            "letters": dict(sorted(letters.items()))}


def random_baseline(cands: Sequence[Candidate], size: int, n: int, seed: int) -> list[dict[str, int]]:
    """Coverage of `n` uniformly random subsets of the same size."""
    rng = random.Random(seed + 1)
    size = min(size, len(cands))
    return [coverage(cands, rng.sample(range(len(cands)), size)) for _ in range(n)]


def report(cands: Sequence[Candidate], sel: Selection, *, size: int, baselines: int, seed: int,
           excluded: Counter, balance: Sequence[str]) -> dict[str, object]:
    mix, full = coverage(cands, sel.chosen), coverage(cands, range(len(cands)))
    rand = random_baseline(cands, len(sel.chosen), baselines, seed) if baselines else []
    baseline = {k: {"mean": round(sum(r[k] for r in rand) / len(rand), 2), "max": max(r[k] for r in rand)}
                for k in mix} if rand else {}
    return {
        "objective": "f(S) = sum_k w_k * sum_x log2(1 + n_S(x)), greedy under the balance constraints",
        "weights": WEIGHTS, "balance": list(balance),
        "size_asked": size, "selected": len(sel.chosen), "candidates": len(cands),
        "excluded": dict(excluded), "shortfall": sel.shortfall, "objective_value": round(sel.objective, 3),
        "coverage": {k: {"mix": mix[k], "full": full[k], "share": round(mix[k] / full[k], 4) if full[k] else None,
                         **({"random": baseline[k]} if baseline else {})} for k in mix},
        "random_subsets": len(rand),
        "answers": {"mix": answer_balance(cands, sel.chosen), "full": answer_balance(cands, range(len(cands)))},
        "forms": {"mix": dict(Counter(cands[i].form for i in sel.chosen).most_common(20)),
                  "full": dict(Counter(c.form for c in cands).most_common(20))},
    }
