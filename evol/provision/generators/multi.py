"""Multi-image generators: factual questions over a group of 2-4 scene graphs.

Images are called "Image 1", "Image 2", ... in the order the caller gives them. Three
families:

* select: "which image ...?" with one right image (options are the image names, one per
  image);
* aggregate: totals of an object (or attributed object) over the group, and what every
  image has in common;
* compare: the attributes of one object, or the relation of one pair, image by image.

Every generator first lists all the questions the group can support (iterating lists and
sorted keys only), then draws up to `n` of them without replacement, favouring rare
objects, attributes and relations. When the group supports fewer than `n` questions it
returns fewer, possibly none; nothing loops on the hope of finding more.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from evol.provision.base import (QA, GenContext, Generator, RarePool, as_multiple_choice, number,
                                 register)
from evol.provision.generators.single_basic import _FINITE_VERBS, _be_phrase
from evol.provision.graph import SceneGraph
from evol.provision.vocab import attribute_category, attributes_in_category, is_countable, plural

# ----------------------------------------------------------------------------------------
# wording helpers


def image_name(k: int) -> str:
    """0-based position in the group -> "Image k+1"."""
    return f"Image {k + 1}"


def with_article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def per_image(parts: Sequence[Sequence[str]]) -> str:
    """[["red", "wooden"], ["blue"]] -> "Image 1: red, wooden; Image 2: blue"."""
    return "; ".join(f"{image_name(k)}: {', '.join(p)}" for k, p in enumerate(parts))


def _unique(items: Sequence[str]) -> list[str]:
    out: list[str] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


# ----------------------------------------------------------------------------------------
# facts read from each graph (lists and sorted keys only)


def _labels(graphs: Sequence[SceneGraph]) -> list[str]:
    return sorted({ob.label for g in graphs for ob in g.objects})


def _attr_counts(g: SceneGraph) -> Counter:
    """(attribute, label) -> number of objects with that label carrying that attribute."""
    c: Counter = Counter()
    for ob in g.objects:
        for a in _unique(ob.attributes):
            c[(a, ob.label)] += 1
    return c


def _triples(g: SceneGraph) -> list[tuple[str, str, str]]:
    """(subject label, predicate, object label) for each relation between two objects."""
    out = []
    for r in g.relations:
        if r.subject == r.object:
            continue
        t = (g.objects[r.subject].label, r.predicate, g.objects[r.object].label)
        if t not in out:
            out.append(t)
    return out


def _only_index(graph_has: Sequence[bool]) -> int | None:
    """The one position that is True, or None when zero or several are."""
    hits = [k for k, h in enumerate(graph_has) if h]
    return hits[0] if len(hits) == 1 else None


def _index_of(graph: SceneGraph, label: str) -> int:
    return next(i for i, ob in enumerate(graph.objects) if ob.label == label)


# ----------------------------------------------------------------------------------------
# sampling


@dataclass
class Candidate:
    """One question the group can support, before it is worded."""

    key: tuple  # identifies it; candidates are listed in sorted key order
    rarity: int  # dataset count of what it is about (lower = drawn more often)
    fields: dict[str, str]  # for the question template
    answer: str = ""
    right: int = -1  # select generators: the 0-based right image
    objects: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # generator-private data


def draw(rng: random.Random, candidates: Sequence[Candidate], n: int) -> Iterator[Candidate]:
    """Candidates without replacement, rare ones first more often; at most len(candidates)."""
    pool = sorted(candidates, key=lambda c: c.key)
    pool = RarePool(pool, [c.rarity for c in pool])
    for _ in range(min(n, len(pool.items))):
        yield pool.take(rng)  # lazily: callers draw phrasings from the same rng in between


def _count_options(rng: random.Random, total: int, ctx: GenContext) -> list[str] | None:
    """Numbers near the right count (never below 1) as options."""
    near: list[int] = []
    step = 1
    while len(near) < ctx.n_choices - 1 and step <= ctx.n_choices + total:
        for v in (total - step, total + step) if step > 1 else (total + 1, total - 1):
            if v >= 1 and len(near) < ctx.n_choices - 1:
                near.append(v)
        step += 1
    return as_multiple_choice(rng, number(total, ctx), [number(v, ctx) for v in near], ctx.n_choices)


class MultiGenerator(Generator):
    """Shared driver: list the candidates, draw, word each one."""

    multi = True
    phrasings: tuple[str, ...] = ()

    def candidates(self, graphs: list[SceneGraph], ctx: GenContext) -> list[Candidate]:
        raise NotImplementedError

    def finish(self, c: Candidate, graphs: list[SceneGraph], rng: random.Random,
               ctx: GenContext) -> tuple[str, list[str]] | None:
        """The answer and the options ([] for short answer); None to drop the candidate."""
        raise NotImplementedError

    def generate(self, graphs: list[SceneGraph], rng: random.Random, ctx: GenContext, n: int) -> list[QA]:
        if n <= 0 or len(graphs) < 2:
            return []
        out: list[QA] = []
        for c in draw(rng, self.candidates(graphs, ctx), n):
            done = self.finish(c, graphs, rng, ctx)
            if done is None:
                continue
            answer, options = done
            question = rng.choice(self.phrasings).format(m=len(graphs), **c.fields)
            meta = {"images": [g.image_id for g in graphs], **c.meta}
            out.append(QA(self.name, question, answer, options, objects=list(c.objects),
                          skills=list(self.skills), metadata=meta))
        return out


# ----------------------------------------------------------------------------------------
# select: which image ...


class SelectImage(MultiGenerator):
    """The answer is one image; in multiple choice the options are all the image names."""

    def finish(self, c, graphs, rng, ctx):
        options = [image_name(k) for k in range(len(graphs))] if rng.random() < ctx.mc_ratio else []
        return image_name(c.right), options


def _select(key: tuple, rarity: int, fields: dict, right: int, objects: list[str], meta: dict) -> Candidate:
    return Candidate(key=key, rarity=rarity, fields=fields, right=right, objects=objects,
                     meta={**meta, "answer_image": right + 1})


@register
class ImageHasObject(SelectImage):
    name = "image_has_object"
    skills = ("existence", "context understanding")
    phrasings = (
        "Which image contains {obj}?",
        "In which of the {m} images can you find {obj}?",
        "Only one of these images shows {obj}. Which one is it?",
        "Looking across the images, where does {obj} appear?",
        "Which picture has {obj} in it?",
    )

    def candidates(self, graphs, ctx):
        out = []
        for label in _labels(graphs):
            counts = [g.label_counts[label] for g in graphs]
            right = _only_index([c > 0 for c in counts])
            if right is not None:
                out.append(_select((label,), ctx.freq.objects[label], {"obj": with_article(label)},
                                   right, [label], {"label": label, "counts": counts}))
        return out


@register
class ImageLacksObject(SelectImage):
    name = "image_lacks_object"
    skills = ("existence", "context understanding")
    phrasings = (
        "Which image does not contain {obj}?",
        "In which of the {m} images is there no {label}?",
        "All images but one show {obj}. Which image is missing it?",
        "Which picture has no {label} in it?",
        "One image lacks {obj}. Which image is that?",
    )

    def candidates(self, graphs, ctx):
        out = []
        for label in _labels(graphs):
            counts = [g.label_counts[label] for g in graphs]
            right = _only_index([c == 0 for c in counts])
            if right is not None:
                out.append(_select((label,), ctx.freq.objects[label],
                                   {"obj": with_article(label), "label": label},
                                   right, [label], {"label": label, "counts": counts}))
        return out


def _attributed_pairs(graphs: Sequence[SceneGraph]) -> tuple[list[tuple[str, str]], list[Counter]]:
    per = [_attr_counts(g) for g in graphs]
    pairs = sorted({p for c in per for p in c})
    return pairs, per


class _AttributedSelect(SelectImage):
    skills = ("existence", "referencing", "context understanding")
    want_present = True

    def candidates(self, graphs, ctx):
        pairs, per = _attributed_pairs(graphs)
        out = []
        for attr, label in pairs:
            counts = [c[(attr, label)] for c in per]
            right = _only_index([(x > 0) == self.want_present for x in counts])
            if right is None:
                continue
            phrase = f"{attr} {label}"
            out.append(_select((attr, label), ctx.freq.attributes[attr] + ctx.freq.objects[label],
                               {"obj": with_article(phrase), "bare": phrase}, right, [label],
                               {"label": label, "attribute": attr, "counts": counts,
                                "label_counts": [g.label_counts[label] for g in graphs]}))
        return out


@register
class ImageHasAttributedObject(_AttributedSelect):
    name = "image_has_attributed_object"
    want_present = True
    phrasings = (
        "Which image contains {obj}?",
        "In which of the {m} images is there {obj}?",
        "Only one image shows {obj}. Which one?",
        "Which picture includes {obj}?",
        "Where can {obj} be seen: in which image?",
    )


@register
class ImageLacksAttributedObject(_AttributedSelect):
    name = "image_lacks_attributed_object"
    want_present = False
    phrasings = (
        "Which image does not contain {obj}?",
        "In which of the {m} images is there no {bare}?",
        "Every image except one shows {obj}. Which image is the exception?",
        "Which picture has no {bare} in it?",
        "One of the images is missing {obj}. Which one?",
    )


def _with_relation(subj: str, pred: str, obj: str) -> str:
    """The subject with its relation, readable after "a"/"no": "cat that has a nose" for a
    finite verb, "man riding a horse" or "cup on a table" for a participle or preposition."""
    first = pred.split()[0]
    if first in _FINITE_VERBS or first in ("is", "are"):
        return f"{subj} that {_be_phrase(pred)} {with_article(obj)}"
    return f"{subj} {pred} {with_article(obj)}"


class _RelationSelect(SelectImage):
    skills = ("relationship description", "context understanding")
    want_present = True

    def candidates(self, graphs, ctx):
        per = [_triples(g) for g in graphs]
        out = []
        for subj, pred, obj in sorted({t for ts in per for t in ts}):
            has = [(subj, pred, obj) in ts for ts in per]
            right = _only_index([h == self.want_present for h in has])
            if right is None:
                continue
            bare = _with_relation(subj, pred, obj)
            out.append(_select((subj, pred, obj), ctx.freq.relations[pred],
                               {"rel": with_article(bare), "bare": bare}, right, [subj, obj],
                               {"relation": [subj, pred, obj], "present": has}))
        return out


@register
class ImageHasRelation(_RelationSelect):
    name = "image_has_relation"
    want_present = True
    phrasings = (
        "Which image shows {rel}?",
        "In which of the {m} images is there {rel}?",
        "Only one image contains {rel}. Which image is it?",
        "Which picture depicts {rel}?",
        "Where do you see {rel}: which image?",
    )


@register
class ImageLacksRelation(_RelationSelect):
    name = "image_lacks_relation"
    want_present = False
    phrasings = (
        "Which image does not show {rel}?",
        "In which of the {m} images is there no {bare}?",
        "All images but one contain {rel}. Which image does not?",
        "Which picture is missing {rel}?",
        "One image has no {bare}. Which one?",
    )


class _ExtremeCount(SelectImage):
    """The image with the most (or fewest) X, when that image is the only one."""

    skills = ("calculating", "context understanding")
    most = True

    def candidates(self, graphs, ctx):
        out = []
        for label in _labels(graphs):
            if not is_countable(label):
                continue
            counts = [g.label_counts[label] for g in graphs]
            if self.most:
                # a real comparison: at least two images have some X
                if sum(c > 0 for c in counts) < 2:
                    continue
                target = max(counts)
            else:
                # "fewest" only among images that all have X, so none is trivially empty
                if min(counts) < 1:
                    continue
                target = min(counts)
            right = _only_index([c == target for c in counts])
            if right is not None:
                out.append(_select((label,), ctx.freq.objects[label], {"objs": plural(label)},
                                   right, [label], {"label": label, "counts": counts}))
        return out


@register
class ImageMostObject(_ExtremeCount):
    name = "image_most_object"
    most = True
    phrasings = (
        "Which image has the most {objs}?",
        "In which of the {m} images are there the greatest number of {objs}?",
        "Comparing the images, which one shows more {objs} than any other?",
        "Which picture contains the largest number of {objs}?",
        "Count the {objs} in each image. Which image has the highest count?",
    )


@register
class ImageLeastObject(_ExtremeCount):
    name = "image_least_object"
    most = False
    phrasings = (
        "Which image has the fewest {objs}?",
        "In which of the {m} images are there the smallest number of {objs}?",
        "Every image has some {objs}. Which one has the fewest?",
        "Which picture contains the lowest number of {objs}?",
        "Count the {objs} in each image. Which image has the lowest count?",
    )


# ----------------------------------------------------------------------------------------
# aggregate


class _Total(MultiGenerator):
    skills = ("calculating", "context understanding")

    def finish(self, c, graphs, rng, ctx):
        total = c.extra["total"]
        options = _count_options(rng, total, ctx) if rng.random() < ctx.mc_ratio else None
        return number(total, ctx), options or []


@register
class TotalObjectCount(_Total):
    name = "total_object_count"
    phrasings = (
        "How many {objs} are there in all {m} images together?",
        "Adding up every image, how many {objs} can be seen?",
        "What is the total number of {objs} across these images?",
        "Count the {objs} in each image and add them up. What is the total?",
        "Across the whole set of images, how many {objs} appear?",
    )

    def candidates(self, graphs, ctx):
        out = []
        for label in _labels(graphs):
            if not is_countable(label):
                continue
            counts = [g.label_counts[label] for g in graphs]
            out.append(Candidate(key=(label,), rarity=ctx.freq.objects[label],
                                 fields={"objs": plural(label)}, objects=[label],
                                 meta={"label": label, "counts": counts, "total": sum(counts)},
                                 extra={"total": sum(counts)}))
        return out


@register
class TotalAttributedCount(_Total):
    name = "total_attributed_count"
    skills = ("calculating", "referencing", "context understanding")
    phrasings = (
        "How many {attr} {objs} are there in all {m} images together?",
        "Adding up every image, how many {attr} {objs} can be seen?",
        "What is the total number of {attr} {objs} across these images?",
        "Count the {attr} {objs} in each image and add them up. What is the total?",
        "Across the whole set of images, how many {objs} are {attr}?",
    )

    def candidates(self, graphs, ctx):
        pairs, per = _attributed_pairs(graphs)
        out = []
        for attr, label in pairs:
            if not is_countable(label):
                continue
            counts = [c[(attr, label)] for c in per]
            out.append(Candidate(key=(attr, label),
                                 rarity=ctx.freq.attributes[attr] + ctx.freq.objects[label],
                                 fields={"attr": attr, "objs": plural(label)}, objects=[label],
                                 meta={"label": label, "attribute": attr, "counts": counts,
                                       "total": sum(counts)},
                                 extra={"total": sum(counts)}))
        return out


def _fill(near: list[str], far: list[str], need: int) -> list[str]:
    """Distractors from the group first; dataset-wide ones only to reach `need`."""
    if len(near) >= need:
        return near
    return near + [x for x in far if x not in near][: need - len(near)]


@register
class CommonObject(MultiGenerator):
    """An object every image has. Short answer only when exactly one label is shared;
    otherwise multiple choice whose other options are labels missing from some image."""

    name = "common_object"
    skills = ("existence", "context understanding")
    phrasings = (
        "Which object appears in every one of these images?",
        "What kind of object can be found in all {m} images?",
        "Name the object that all of the images have in common.",
        "Which thing is present in each image?",
        "Looking at all {m} images, which object shows up in every one?",
    )

    def candidates(self, graphs, ctx):
        labels = _labels(graphs)
        common = [l for l in labels if all(g.label_counts[l] > 0 for g in graphs)]
        some = [l for l in labels if l not in common]
        dataset = [l for l, _ in sorted(ctx.freq.objects.items(), key=lambda kv: (-kv[1], kv[0]))
                   if l not in common]
        return [Candidate(key=(label,), rarity=ctx.freq.objects[label], fields={}, answer=label,
                          objects=[label],
                          meta={"label": label, "common": common,
                                "counts": [g.label_counts[label] for g in graphs]},
                          extra={"unique": len(common) == 1, "near": some, "far": dataset})
                for label in common]

    def finish(self, c, graphs, rng, ctx):
        want_mc = rng.random() < ctx.mc_ratio
        if want_mc or not c.extra["unique"]:
            pool = _fill(c.extra["near"], c.extra["far"], ctx.n_choices - 1)
            options = as_multiple_choice(rng, c.answer, pool, ctx.n_choices)
            if options is not None:
                return c.answer, options
        return (c.answer, []) if c.extra["unique"] else None


@register
class CommonAttribute(MultiGenerator):
    """An attribute that some X carries in every image. Short answer when it is the only
    such attribute of X; otherwise multiple choice against attributes not shared by all."""

    name = "common_attribute"
    skills = ("referencing", "context understanding")
    phrasings = (
        "Every image has {obj}. Which attribute does it have in all of them?",
        "What property do the {objs} share across all {m} images?",
        "Across these images, which attribute is common to the {label} in each one?",
        "The {label} appears in all {m} images. What characteristic is the same every time?",
        "Which attribute describes {obj} in each of the images?",
    )

    def candidates(self, graphs, ctx):
        out = []
        for label in _labels(graphs):
            if not all(g.label_counts[label] > 0 for g in graphs):
                continue
            per = [_unique([a for ob in g.objects if ob.label == label for a in ob.attributes])
                   for g in graphs]
            seen = sorted({a for p in per for a in p})
            common = [a for a in seen if all(a in p for p in per)]
            some = [a for a in seen if a not in common]
            for attr in common:
                cat = attribute_category(attr)
                far = [a for a in (attributes_in_category(cat) if cat else []) if a not in common]
                out.append(Candidate(
                    key=(label, attr), rarity=ctx.freq.attributes[attr] + ctx.freq.objects[label],
                    fields={"obj": with_article(label), "objs": plural(label), "label": label},
                    answer=attr, objects=[label],
                    meta={"label": label, "attribute": attr, "common": common, "per_image": per},
                    extra={"unique": len(common) == 1, "near": some, "far": far}))
        return out

    finish = CommonObject.finish


# ----------------------------------------------------------------------------------------
# compare


def _rotations(parts: list[list[str]]) -> list[list[list[str]]]:
    """The per-image lists shifted between images (each a wrong pairing when lists differ)."""
    m = len(parts)
    return [[parts[(k + s) % m] for k in range(m)] for s in range(1, m)]


def _swapped(parts: list[list[str]], alternatives: Callable[[str, list[str]], list[str]],
             rng: random.Random) -> list[list[list[str]]]:
    """For each (image, item): the same lists with that one item replaced by a wrong one."""
    out = []
    for k, p in enumerate(parts):
        for j, item in enumerate(p):
            alts = alternatives(item, p)
            if alts:
                q = [list(x) for x in parts]
                q[k][j] = rng.choice(alts)
                out.append(q)
    return out


def _compare_finish(c: Candidate, rng: random.Random, ctx: GenContext,
                    alternatives: Callable[[str, list[str]], list[str]]) -> tuple[str, list[str]]:
    answer = per_image(c.extra["parts"])
    if rng.random() < ctx.mc_ratio:
        wrong = _rotations(c.extra["parts"]) + _swapped(c.extra["parts"], alternatives, rng)
        options = as_multiple_choice(rng, answer, _unique([per_image(w) for w in wrong]), ctx.n_choices)
        if options is not None:
            return answer, options
    return answer, []


@register
class CompareAttributes(MultiGenerator):
    """The attributes of the one X in each image, listed image by image."""

    name = "compare_attributes"
    skills = ("referencing", "context understanding")
    phrasings = (
        "What attributes does the {label} have in each image?",
        "Describe the {label} in every image: which attributes does it show?",
        "Compare the {label} across the {m} images. What are its attributes in each?",
        "For each image, list the attributes of the {label}.",
        "How does the {label} look in each of the images? Give its attributes per image.",
    )

    def candidates(self, graphs, ctx):
        out = []
        for label in _labels(graphs):
            if not all(g.label_counts[label] == 1 for g in graphs):
                continue  # "the X" must name one object in every image
            parts = [_unique(g.objects[_index_of(g, label)].attributes) for g in graphs]
            if not all(parts):
                continue
            out.append(Candidate(key=(label,), rarity=ctx.freq.objects[label], fields={"label": label},
                                 objects=[label], meta={"label": label, "per_image": parts},
                                 extra={"parts": parts}))
        return out

    def finish(self, c, graphs, rng, ctx):
        def alternatives(attr: str, current: list[str]) -> list[str]:
            cat = attribute_category(attr)
            return [a for a in attributes_in_category(cat) if a not in current] if cat else []

        return _compare_finish(c, rng, ctx, alternatives)


@register
class CompareRelations(MultiGenerator):
    """How the one X relates to the one Y in each image, listed image by image."""

    name = "compare_relations"
    skills = ("relationship description", "context understanding")
    phrasings = (
        "How is the {subj} related to the {obj} in each image?",
        "In every image, what is the relation between the {subj} and the {obj}?",
        "Compare the images: how does the {subj} relate to the {obj} in each one?",
        "For each image, describe the relation of the {subj} to the {obj}.",
        "Image by image, what is the {subj} doing with respect to the {obj}?",
    )

    def candidates(self, graphs, ctx):
        out = []
        shared = [l for l in _labels(graphs) if all(g.label_counts[l] == 1 for g in graphs)]
        for subj in shared:
            for obj in shared:
                if subj == obj:
                    continue
                parts = []
                for g in graphs:
                    si, oi = _index_of(g, subj), _index_of(g, obj)
                    parts.append(_unique([r.predicate for r in g.relations
                                          if r.subject == si and r.object == oi]))
                if not all(parts):
                    continue
                preds = sorted({p for ps in parts for p in ps})
                out.append(Candidate(key=(subj, obj), rarity=sum(ctx.freq.relations[p] for p in preds),
                                     fields={"subj": subj, "obj": obj}, objects=[subj, obj],
                                     meta={"subject": subj, "object": obj, "per_image": parts},
                                     extra={"parts": parts}))
        return out

    def finish(self, c, graphs, rng, ctx):
        group_preds = sorted({r.predicate for g in graphs for r in g.relations})
        dataset = [p for p, _ in sorted(ctx.freq.relations.items(), key=lambda kv: (-kv[1], kv[0]))]
        pool = _unique(group_preds + dataset[:20])

        def alternatives(pred: str, current: list[str]) -> list[str]:
            return [p for p in pool if p not in current]

        return _compare_finish(c, rng, ctx, alternatives)
