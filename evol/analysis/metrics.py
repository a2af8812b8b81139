"""Diversity and quality metrics per source and per round, aggregated as records stream by.

Every input (a run folder, a seed file, a LLaVA file) is one *source*; round 0 holds a
record's own items, round r the items of its version r. Nothing here keeps items: each
one updates counters of bounded size (verb-noun pairs, lengths, scores, labels), so the
memory needed depends on how varied the data is, not on how many records it has.
`pandas` turns the counters into tables at the end.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evol.analysis.textclean import yes_no_answer
from evol.records import Item, Record

NO_NOUN = ""  # how a missing noun is stored in pair keys and tables
TOP_PAIRS = 300  # pairs kept per group in pairs.csv (the distinct count covers all)
SUN_VERBS, SUN_NOUNS = 12, 6  # verbs, and nouns per verb, named in sunburst.csv (the rest go to "(other)")
OTHER = "(other)"  # the wedge for every verb / noun not named
TOP_LABELS = 300  # objects / skills kept per group in counts.csv
ERROR_EXAMPLES = 20  # read errors quoted per source
LABEL_CHARS = 60  # longer object / skill / format labels are cut (they are free text from a model)
RARE_MAX = 2  # an object label seen in at most this many items of a group is "rare"


def entropy_bits(counts: Counter) -> float:
    total = sum(counts.values())
    if not total:
        return 0.0
    return -sum((n / total) * math.log2(n / total) for n in counts.values() if n)


@dataclass
class GroupStats:
    """Everything measured over the items of one (source, round)."""

    source: str
    round: int
    records: int = 0
    items: int = 0
    vn_status: Counter = field(default_factory=Counter)
    pairs: Counter = field(default_factory=Counter)  # (verb, noun or "") -> items
    skills_per_item: Counter = field(default_factory=Counter)
    skills: Counter = field(default_factory=Counter)
    steps_per_item: Counter = field(default_factory=Counter)
    items_without_skills: int = 0
    items_without_steps: int = 0
    formats: Counter = field(default_factory=Counter)
    operators: Counter = field(default_factory=Counter)
    generators: Counter = field(default_factory=Counter)
    record_sources: Counter = field(default_factory=Counter)
    scores: Counter = field(default_factory=Counter)  # score rounded to 0.5 -> items
    judged: int = 0  # items the judge scored (rule rejections not included)
    improved: int = 0
    rule_rejected: int = 0
    unscored: int = 0  # evolved items without any verdict
    failed_versions: int = 0
    question_words: Counter = field(default_factory=Counter)
    answer_words: Counter = field(default_factory=Counter)
    yes: int = 0
    no: int = 0
    objects: Counter = field(default_factory=Counter)
    items_without_objects: int = 0

    def add_item(self, item: Item, record: Record, operator: str | None) -> None:
        self.items += 1
        # an item without skills / steps has none recorded: "no data", never a zero in the means
        if item.skills:
            self.skills_per_item[len(item.skills)] += 1
        else:
            self.items_without_skills += 1
        self.skills.update(s.strip().lower()[:LABEL_CHARS] for s in item.skills if s and s.strip())
        if item.steps:
            self.steps_per_item[len(item.steps)] += 1
        else:
            self.items_without_steps += 1
        self.formats[(item.format or "unspecified").strip().lower()[:LABEL_CHARS]] += 1
        if operator is not None:
            self.operators[operator] += 1
        generator = record.meta.get("generator") if isinstance(record.meta, dict) else None
        if isinstance(generator, str):
            self.generators[generator] += 1
        self.record_sources[record.source or "unknown"] += 1
        self.question_words[len(item.question.split())] += 1
        self.answer_words[len(item.answer.split())] += 1
        polar = yes_no_answer(item.question, item.answer)
        if polar == "yes":
            self.yes += 1
        elif polar == "no":
            self.no += 1
        labels = {o.strip().lower()[:LABEL_CHARS] for o in item.objects if o and o.strip()}
        if labels:
            self.objects.update(labels)
        else:
            self.items_without_objects += 1
        if self.round > 0:
            v = item.verdict
            if v is None:
                self.unscored += 1
            elif v.rule:
                self.rule_rejected += 1
            else:
                self.judged += 1
                self.improved += bool(v.improved)
                self.scores[round(v.score * 2) / 2] += 1

    def add_parse(self, verb: str | None, noun: str | None, status: str) -> None:
        self.vn_status[status] += 1
        if verb is not None:
            self.pairs[(verb, noun or NO_NOUN)] += 1

    # ---------------------------------------------------------------- summaries
    def summary(self) -> dict[str, Any]:
        parsed = sum(self.pairs.values())
        verbs: Counter = Counter()
        nouns: Counter = Counter()
        for (v, n), c in self.pairs.items():
            verbs[v] += c
            if n:
                nouns[n] += c
        top = self.pairs.most_common(1)
        rare = [n for n in self.objects.values() if n <= RARE_MAX]
        mentions = sum(self.objects.values())
        return {
            "source": self.source,
            "round": self.round,
            "records": self.records,
            "items": self.items,
            "verb_noun_parsed": parsed,
            "distinct_verbs": len(verbs),
            "distinct_nouns": len(nouns),
            "distinct_pairs": len(self.pairs),
            "pair_entropy_bits": round(entropy_bits(self.pairs), 4),
            "verb_entropy_bits": round(entropy_bits(verbs), 4),
            "top_pair": _pair_name(top[0][0]) if top else None,
            "top_pair_share": round(top[0][1] / parsed, 4) if top and parsed else None,
            "empty_instructions": self.vn_status.get("empty", 0),
            "non_english": self.vn_status.get("non_english", 0),
            "no_verb": self.vn_status.get("no_verb", 0) + self.vn_status.get("parse_error", 0),
            "skills_mean": _mean(self.skills_per_item),  # over items with skills recorded; None: no data
            "items_without_skills": self.items_without_skills,
            "distinct_skills": len(self.skills),
            "steps_mean": _mean(self.steps_per_item),  # over items with steps recorded; None: no data
            "items_without_steps": self.items_without_steps,
            "judged": self.judged,
            "score_mean": _mean(self.scores),
            "score_median": _quantile(self.scores, 0.5),
            "improved_ratio": round(self.improved / self.judged, 4) if self.judged else None,
            "rule_rejected": self.rule_rejected,
            "unscored": self.unscored,
            "failed_versions": self.failed_versions,
            "question_words_mean": _mean(self.question_words),
            "question_words_p90": _quantile(self.question_words, 0.9),
            "answer_words_mean": _mean(self.answer_words),
            "answer_words_p90": _quantile(self.answer_words, 0.9),
            "yes_no_answers": self.yes + self.no,
            "yes_share": round(self.yes / (self.yes + self.no), 4) if self.yes + self.no else None,
            "distinct_objects": len(self.objects),
            "rare_object_share": round(len(rare) / len(self.objects), 4) if self.objects else None,
            "rare_mention_share": round(sum(rare) / mentions, 4) if mentions else None,
            "items_without_objects": self.items_without_objects,
            "top_objects": ", ".join(o[:30] for o, _ in self.objects.most_common(5)) or None,
            "distinct_formats": len(self.formats),
            "operators": _inline(self.operators),
            "generators": _inline(self.generators),
        }

    def pair_rows(self) -> list[dict[str, Any]]:
        parsed = sum(self.pairs.values()) or 1
        return [{"source": self.source, "round": self.round, "verb": v, "noun": n, "count": c,
                 "share": round(c / parsed, 6)}
                for (v, n), c in self.pairs.most_common(TOP_PAIRS)]

    def sunburst_rows(self) -> list[dict[str, Any]]:
        """Verb -> noun rings from the full pair counts: the top verbs, the top nouns of each,
        and an "(other)" wedge on both rings, so the counts add up to every parsed item."""
        verbs: Counter = Counter()
        nouns: dict[str, Counter] = {}
        for (v, n), c in self.pairs.items():
            verbs[v] += c
            nouns.setdefault(v, Counter())[n] += c
        rows = []
        top = verbs.most_common(SUN_VERBS)
        for verb, total in top:
            shown = 0
            for noun, c in nouns[verb].most_common(SUN_NOUNS):
                rows.append((verb, noun, c))
                shown += c
            if total > shown:
                rows.append((verb, OTHER, total - shown))
        rest = sum(verbs.values()) - sum(c for _, c in top)
        if rest > 0:
            rows.append((OTHER, OTHER, rest))
        return [{"source": self.source, "round": self.round, "verb": v, "noun": n, "count": c} for v, n, c in rows]

    def distribution_rows(self) -> list[dict[str, Any]]:
        rows = []
        for metric, counter in (("skills_per_item", self.skills_per_item), ("steps_per_item", self.steps_per_item),
                                ("score", self.scores), ("question_words", self.question_words),
                                ("answer_words", self.answer_words)):
            rows += [{"source": self.source, "round": self.round, "metric": metric, "value": value, "count": c}
                     for value, c in sorted(counter.items())]
        return rows

    def count_rows(self) -> list[dict[str, Any]]:
        rows = []
        for kind, counter, limit in (("operator", self.operators, None), ("format", self.formats, None),
                                     ("generator", self.generators, None), ("record_source", self.record_sources, None),
                                     ("verb_noun_status", self.vn_status, None), ("skill", self.skills, TOP_LABELS),
                                     ("object", self.objects, TOP_LABELS)):
            rows += [{"source": self.source, "round": self.round, "kind": kind, "name": name, "count": c}
                     for name, c in counter.most_common(limit)]
        return rows


def equal_size_diversity(groups: list[GroupStats], seed: int = 0, draws: int = 5) -> list[dict[str, Any]]:
    """Diversity normalised for size, one dict per group (same order).

    Distinct pairs and pair entropy are measured on samples of equal size: the smallest
    group's number of parsed items, drawn without replacement from each group's full pair
    counts (seeded, mean of `draws` draws), so a large seed file and a small run compare
    fairly. Also distinct pairs per 1,000 parsed items."""
    import numpy as np

    sizes = [sum(g.pairs.values()) for g in groups]
    n = min((x for x in sizes if x > 0), default=0)
    rng = np.random.default_rng(seed)
    out = []
    for g, size in zip(groups, sizes):
        row: dict[str, Any] = {"equal_sample_size": n or None, "distinct_pairs_at_n": None,
                               "pair_entropy_bits_at_n": None,
                               "distinct_pairs_per_1k": round(len(g.pairs) * 1000 / size, 2) if size else None}
        if size and n:
            counts = np.fromiter(g.pairs.values(), dtype=np.int64, count=len(g.pairs))
            distinct, ent = [], []
            for _ in range(draws if size > n else 1):
                sample = counts if size == n else rng.multivariate_hypergeometric(counts, n)
                sample = sample[sample > 0]
                distinct.append(len(sample))
                p = sample / n
                ent.append(float(-(p * np.log2(p)).sum()))
            row["distinct_pairs_at_n"] = round(sum(distinct) / len(distinct), 2)
            row["pair_entropy_bits_at_n"] = round(sum(ent) / len(ent), 4)
        out.append(row)
    return out


@dataclass
class SourceStats:
    """Per input: how much was read, and everything that was wrong with it."""

    label: str
    path: str
    kind: str  # "run" or "file"
    records: int = 0
    read_errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    records_without_items: int = 0
    records_without_versions: int = 0
    rejects_by_stage: Counter = field(default_factory=Counter)
    manifest: dict[str, Any] = field(default_factory=dict)

    def add_error(self, message: str) -> None:
        self.read_errors += 1
        if len(self.error_examples) < ERROR_EXAMPLES:
            self.error_examples.append(message)

    def row(self) -> dict[str, Any]:
        stages = self.stages()
        return {
            "source": self.label, "path": self.path, "kind": self.kind, "records": self.records,
            "read_errors": self.read_errors, "records_without_items": self.records_without_items,
            "records_without_versions": self.records_without_versions,
            "rejects_by_stage": dict(self.rejects_by_stage), "error_examples": list(self.error_examples),
            "manifest": {**self.manifest, "stages": stages} if stages else self.manifest,
        }

    def stages(self) -> dict[str, Any] | None:
        """A run folder's per-stage elimination figures, as its manifest keeps them ("stages":
        stage -> examined, rejected, requests, tokens_in, tokens_out); None for a file or a
        run made before they were kept."""
        if "stages" in self.manifest:
            return self.manifest["stages"] or None
        if self.kind != "run":
            return None
        from pathlib import Path

        from evol.rundir import RunDir

        stages = RunDir(Path(self.path)).read_manifest().get("stages")
        return stages if isinstance(stages, dict) and stages else None


class ExampleSampler:
    """A fixed-size, seeded reservoir of records to show in the report.

    Records with evolved versions are preferred: they fill the reservoir first, and
    records without versions are kept only while there are too few of those.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self._rng = random.Random(seed)
        self._evolved: list[dict] = []
        self._plain: list[dict] = []
        self._seen_evolved = 0
        self._seen_plain = 0
        self._offered = 0  # position in the input, to show examples in input order

    def offer(self, record: Record) -> dict | None:
        """Maybe keep `record`; returns its example when it was taken (a later record may
        still replace it), else None."""
        self._offered += 1
        if self.size <= 0:
            return None
        if record.versions:
            self._seen_evolved += 1
            return _reservoir(self._evolved, self._seen_evolved, self.size, record, self._rng, self._offered)
        if len(self._evolved) < self.size:
            self._seen_plain += 1
            return _reservoir(self._plain, self._seen_plain, self.size, record, self._rng, self._offered)
        return None

    def examples(self) -> list[dict]:
        chosen = self._evolved + self._plain[: max(0, self.size - len(self._evolved))]
        return sorted(chosen, key=lambda e: e["order"])


def _reservoir(bucket: list[dict], seen: int, size: int, record: Record, rng: random.Random,
               order: int) -> dict | None:
    """Reservoir step; the new example when `record` was taken, else None."""
    if len(bucket) < size:
        bucket.append(example_of(record, order))
        return bucket[-1]
    j = rng.randrange(seen)
    if j < size:
        bucket[j] = example_of(record, order)
        return bucket[j]
    return None


def item_views(example: dict | None, version: int | None, count: int) -> list[dict | None]:
    """The example's views of a record's first `count` items (`version` None: its own
    items, else the index of the version in `record.versions`), None where the example
    does not show the item (no example, or past the items and versions it keeps)."""
    views: list[dict] = []
    if example is not None:
        if version is None:
            views = example["items"]
        elif version < len(example["versions"]):
            views = example["versions"][version]["items"]
    return [views[i] if i < len(views) else None for i in range(count)]


def set_parsed_pair(view: dict, verb: str | None, noun: str | None, status: str) -> None:
    """Record on an example item the verb-noun pair its question was counted with."""
    view["verb_noun"] = {"verb": verb, "noun": noun, "status": status}


def _clip(text: str, n: int = 700) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def example_of(record: Record, order: int = 0) -> dict[str, Any]:
    """A compact, JSON-ready view of a record: seed items beside their evolved versions."""
    def item_view(it: Item) -> dict[str, Any]:
        view: dict[str, Any] = {"id": it.id, "question": _clip(it.question), "answer": _clip(it.answer),
                                "parent": it.parent, "format": it.format, "skills": it.skills[:6],
                                "steps": len(it.steps)}
        if it.verdict is not None:
            view["verdict"] = {"improved": it.verdict.improved, "score": it.verdict.score,
                               "reason": _clip(it.verdict.reason, 400), "rule": it.verdict.rule}
            if getattr(it.verdict, "stage", None):  # a later check (blind, answer) rejected it
                view["verdict"]["stage"] = it.verdict.stage
        return view

    return {
        "order": order,
        "id": record.id,
        "images": record.images[:4],
        "caption": _clip(record.caption, 400),
        "source": record.source,
        "generator": record.meta.get("generator") if isinstance(record.meta, dict) else None,
        "items": [item_view(it) for it in record.items[:4]],
        "versions": [{"round": v.round, "operator": v.operator, "status": v.status, "error": v.error,
                      "items": [item_view(it) for it in v.items[:4]]} for v in record.versions[:8]],
    }


def _mean(counter: Counter) -> float | None:
    total = sum(counter.values())
    if not total:
        return None
    return round(sum(float(k) * n for k, n in counter.items()) / total, 4)


def _quantile(counter: Counter, q: float) -> float | None:
    total = sum(counter.values())
    if not total:
        return None
    target, seen = q * total, 0
    for value in sorted(counter):
        seen += counter[value]
        if seen >= target:
            return float(value)
    return float(max(counter))


def _pair_name(pair: tuple[str, str]) -> str:
    verb, noun = pair
    return f"{verb}/{noun or '-'}"


def _inline(counter: Counter, n: int = 6) -> str | None:
    if not counter:
        return None
    return ", ".join(f"{k} {v}" for k, v in counter.most_common(n))
