"""Multi-image generators: factual questions over a group of 2-4 scene graphs.

These are ProVision's multi-image generators (arXiv 2412.07012), written anew. Images are
called "Image 1", "Image 2", ... in the order the caller gives them. Three families:

* select: "which image ...?" with one right image (options are the image names, one per
  image);
* aggregate: totals of an object (or attributed object) over the group, and what every
  image has in common;
* compare: the attributes of one object, or the relation of one pair, image by image.

Every generator follows the shared template (`base.DrawnGenerator`): it lists all the
questions the group can support (iterating lists and sorted keys only), then draws up to
`n` of them without replacement, favouring rare objects, attributes and relations. When
the group supports fewer than `n` questions it returns fewer, possibly none; nothing loops
on the hope of finding more.

No wrong option is true of the pictures: an image offered as the one without X has
nothing that may be called X (a "batter" is a "person"; a "hand" goes with a person), and
an attribute or object offered as not shared is known to be absent from some image.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from evol.provision.base import (EACH, NUMBER_WORDS, DrawnGenerator, GenContext, RarePool, as_multiple_choice,
                                 number, register)
from evol.provision.generators.single_graph import _most_common, too_close
from evol.provision.graph import SceneGraph
from evol.provision.vocab import (article, askable_attribute, attribute_category, attributes_in_category,
                                  is_countable, may_name_same, may_show, plural, verb_phrase)

# ----------------------------------------------------------------------------------------
# wording helpers

with_article = article  # "an apple", "a uniform"


def image_name(k: int) -> str:
    """0-based position in the group -> "Image k+1"."""
    return f"Image {k + 1}"


def group_fields(m: int) -> dict[str, str]:
    """How the phrasings name a group of m images: {m} "two", {all_m} "both images" (for
    two) or "all three images"."""
    word = NUMBER_WORDS[m] if m < len(NUMBER_WORDS) else str(m)
    return {"m": word, "all_m": "both images" if m == 2 else f"all {word} images"}


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


def _labels(graphs: Sequence[SceneGraph], least: int = 0, most: int | None = None) -> list[str]:
    """The labels of the group, sorted; with `least` / `most`, only those that every image
    has at least / at most that many of."""
    labels = sorted({ob.label for g in graphs for ob in g.objects})
    if least or most is not None:
        top = most if most is not None else float("inf")
        labels = [l for l in labels if all(least <= g.label_counts[l] <= top for g in graphs)]
    return labels


def _attr_counts(g: SceneGraph) -> Counter:
    """(attribute, label) -> number of objects with that label carrying that attribute, for
    the attributes a question may name (the vague-word filter: `askable_attribute`)."""
    c: Counter = Counter()
    for ob in g.objects:
        for a in _unique(ob.attributes):
            if askable_attribute(a):
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


def _may_show(g: SceneGraph, label: str) -> bool:
    """The image may show a `label`: an object of that name, of another name for it, or
    one it is a usual part of."""
    return any(may_show(present, label) for present in g.label_counts)


def _known_without(g: SceneGraph, label: str, attr: str) -> bool:
    """Every object of the image that may be a `label` is annotated in `attr`'s category
    with nothing near `attr`: the image has no `attr` `label` (none at all is fine too)."""
    cat = attribute_category(attr)
    for ob in g.objects:
        if not may_name_same(ob.label, label):
            continue
        if cat is None or not any(attribute_category(a) == cat for a in ob.attributes):
            return False
        if any(too_close(attr, a) for a in ob.attributes):
            return False
    return True


def _may_relate(triples: list[tuple[str, str, str]], subj: str, pred: str, obj: str) -> bool:
    """An image with these `_triples` has a relation that may say the same: names that may
    name the same things and a predicate near in meaning."""
    return any(may_name_same(s, subj) and may_name_same(o, obj) and too_close(pred, p) for s, p, o in triples)


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


class MultiGenerator(DrawnGenerator):
    """The template over a group of images: the candidates are `Candidate`s listed in sorted
    key order, drawn one at a time (rare first), and each is finished and worded. Phrasings
    may name the group with {m} ("three") and {all_m} ("both images", "all four images")."""

    multi = True
    min_graphs = 2
    draw = EACH
    phrasings: tuple[str, ...] = ()

    def facts(self, graphs, ctx):
        return graphs

    def pool(self, graphs, ctx):
        pool = sorted(self.candidates(graphs, ctx), key=lambda c: c.key)
        return RarePool(pool, [c.rarity for c in pool])

    def candidates(self, graphs: list[SceneGraph], ctx: GenContext) -> list[Candidate]:
        raise NotImplementedError

    def finish(self, c: Candidate, graphs: list[SceneGraph], rng: random.Random,
               ctx: GenContext) -> tuple[str, list[str]] | None:
        """The answer and the options ([] for short answer); None to drop the candidate."""
        raise NotImplementedError

    def word(self, graphs, c, rng, ctx):
        done = self.finish(c, graphs, rng, ctx)
        if done is None:
            return None
        answer, options = done
        question = self.say(rng, self.phrasings, **group_fields(len(graphs)), **c.fields)
        return self.qa(question, answer, options, c.objects, {"images": [g.image_id for g in graphs], **c.meta})


# ----------------------------------------------------------------------------------------
# select: which image ...


class SelectImage(MultiGenerator):
    """The answer is one image; in multiple choice the options are all the image names, so
    the question is asked only when no other image may fit it."""

    def finish(self, c, graphs, rng, ctx):
        options = [image_name(k) for k in range(len(graphs))] if rng.random() < ctx.mc_ratio else []
        return image_name(c.right), options


def _select(key: tuple, rarity: int, fields: dict, right: int, objects: list[str], meta: dict) -> Candidate:
    return Candidate(key=key, rarity=rarity, fields=fields, right=right, objects=objects,
                     meta={**meta, "answer_image": right + 1})


class _LabelSelect(SelectImage):
    """The one image singled out by how many of an object each image has."""

    def right_image(self, graphs: list[SceneGraph], label: str, counts: list[int]) -> int | None:
        raise NotImplementedError

    def fields(self, label: str) -> dict[str, str]:
        return {"obj": with_article(label), "label": label, "objs": plural(label)}

    def candidates(self, graphs, ctx):
        out = []
        for label in _labels(graphs):
            counts = [g.label_counts[label] for g in graphs]
            right = self.right_image(graphs, label, counts)
            if right is not None:
                out.append(_select((label,), ctx.freq.objects[label], self.fields(label), right, [label],
                                   {"label": label, "counts": counts}))
        return out


class _ObjectSelect(_LabelSelect):
    """The one image that has (or, the one that lacks) an object. "Has": no other image may
    show one; "lacks": the image may not show one under any name, the others have it."""

    skills = ("existence", "context understanding")
    want_present = True

    def right_image(self, graphs, label, counts):
        if self.want_present:
            right = _only_index([c > 0 for c in counts])
            maybe = [k for k, g in enumerate(graphs) if k != right and _may_show(g, label)]
        else:
            right = _only_index([c == 0 for c in counts])
            maybe = [right] if right is not None and _may_show(graphs[right], label) else []
        return None if maybe else right


@register
class ImageHasObject(_ObjectSelect):
    """Which image has an X (ProVision, arXiv 2412.07012)."""

    name = "image_has_object"
    want_present = True
    phrasings = (
        "Which image contains {obj}?",
        "In which of the {m} images can you find {obj}?",
        "Only one of these images shows {obj}. Which one is it?",
        "Looking across the images, where does {obj} appear?",
        "Which picture has {obj} in it?",
    )


@register
class ImageLacksObject(_ObjectSelect):
    """Which image has no X (ProVision, arXiv 2412.07012)."""

    name = "image_lacks_object"
    want_present = False
    phrasings = (
        "Which image does not contain {obj}?",
        "In which of the {m} images is there no {label}?",
        "Just one of the {m} images has no {label}. Which image is it?",
        "Which picture has no {label} in it?",
        "One image lacks {obj}. Which image is that?",
    )


def _attributed_pairs(graphs: Sequence[SceneGraph]) -> tuple[list[tuple[str, str]], list[Counter]]:
    per = [_attr_counts(g) for g in graphs]
    pairs = sorted({p for c in per for p in c})
    return pairs, per


class _AttributedSelect(SelectImage):
    """The one image with (or without) an {attr} X. Every other image (for "has"), or the
    right one (for "lacks"), must be known to have no {attr} X: each of its objects that may
    be an X is annotated in the attribute's category with nothing near it."""

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
            without = [k for k in range(len(graphs)) if k != right] if self.want_present else [right]
            if not all(_known_without(graphs[k], label, attr) for k in without):
                continue
            phrase = f"{attr} {label}"
            out.append(_select((attr, label), ctx.freq.attributes[attr] + ctx.freq.objects[label],
                               {"obj": with_article(phrase), "bare": phrase}, right, [label],
                               {"label": label, "attribute": attr, "counts": counts,
                                "label_counts": [g.label_counts[label] for g in graphs]}))
        return out


@register
class ImageHasAttributedObject(_AttributedSelect):
    """Which image has an {attr} X (ProVision, arXiv 2412.07012)."""

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
    """Which image has no {attr} X (ProVision, arXiv 2412.07012)."""

    name = "image_lacks_attributed_object"
    want_present = False
    phrasings = (
        "Which image does not contain {obj}?",
        "In which of the {m} images is there no {bare}?",
        "Just one of the {m} images shows no {bare}. Which image is the exception?",
        "Which picture has no {bare} in it?",
        "One of the images is missing {obj}. Which one?",
    )


def _with_relation(subj: str, pred: str, obj: str) -> str:
    """The subject with its relation, readable after "a"/"no": "cat that has a nose" for a
    finite verb, "man riding a horse" or "cup on a table" for a participle or preposition."""
    phrase = verb_phrase(pred)
    if phrase != "is " + pred:  # a verb of its own ("has", "walks on"), or "is ..." already
        return f"{subj} that {phrase} {with_article(obj)}"
    return f"{subj} {pred} {with_article(obj)}"


class _RelationSelect(SelectImage):
    """The one image with (or without) a relation; no other image (for "has"), nor the
    right one (for "lacks"), may have a relation that says the same in other words."""

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
            without = [k for k in range(len(graphs)) if k != right] if self.want_present else [right]
            if any(_may_relate(per[k], subj, pred, obj) for k in without):
                continue
            bare = _with_relation(subj, pred, obj)
            out.append(_select((subj, pred, obj), ctx.freq.relations[pred],
                               {"rel": with_article(bare), "bare": bare}, right, [subj, obj],
                               {"relation": [subj, pred, obj], "present": has}))
        return out


@register
class ImageHasRelation(_RelationSelect):
    """Which image shows X {pred} Y (ProVision, arXiv 2412.07012)."""

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
    """Which image does not show X {pred} Y (ProVision, arXiv 2412.07012)."""

    name = "image_lacks_relation"
    want_present = False
    phrasings = (
        "Which image does not show {rel}?",
        "In which of the {m} images is there no {bare}?",
        "Just one of the {m} images does not show {rel}. Which image is it?",
        "Which picture is missing {rel}?",
        "One image has no {bare}. Which one?",
    )


class _ExtremeCount(_LabelSelect):
    """The image with the most (or fewest) X, when that image is the only one."""

    skills = ("calculating", "context understanding")
    most = True

    def right_image(self, graphs, label, counts):
        if not is_countable(label):
            return None
        if self.most:
            # a real comparison: at least two images have some X
            if sum(c > 0 for c in counts) < 2:
                return None
            target = max(counts)
        else:
            # "fewest" only among images that all have X, so none is trivially empty
            if min(counts) < 1:
                return None
            target = min(counts)
        return _only_index([c == target for c in counts])


@register
class ImageMostObject(_ExtremeCount):
    """Which image has the most X (ProVision, arXiv 2412.07012)."""

    name = "image_most_object"
    most = True
    phrasings = (
        "Which image has the most {objs}?",
        "Which of the {m} images has the greatest number of {objs}?",
        "Comparing the images, which one shows the most {objs}?",
        "Which picture contains the largest number of {objs}?",
        "Count the {objs} in each image. Which image has the highest count?",
    )


@register
class ImageLeastObject(_ExtremeCount):
    """Which image has the fewest X, among images that all have some (ProVision, arXiv 2412.07012)."""

    name = "image_least_object"
    most = False
    phrasings = (
        "Which image has the fewest {objs}?",
        "Which of the {m} images has the smallest number of {objs}?",
        "Each image has some {objs}. Which one has the fewest?",
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
    """How many X the images hold together (ProVision, arXiv 2412.07012)."""

    name = "total_object_count"
    phrasings = (
        "How many {objs} are there in {all_m} together?",
        "Adding up every image, how many {objs} can be seen?",
        "What is the total number of {objs} across these images?",
        "Count the {objs} in each image and add them up. What is the total?",
        "Across the whole set of images, how many {objs} appear?",
    )

    def candidates(self, graphs, ctx):
        out = []
        for label in filter(is_countable, _labels(graphs)):
            counts = [g.label_counts[label] for g in graphs]
            out.append(Candidate(key=(label,), rarity=ctx.freq.objects[label],
                                 fields={"objs": plural(label)}, objects=[label],
                                 meta={"label": label, "counts": counts, "total": sum(counts)},
                                 extra={"total": sum(counts)}))
        return out


def _annotated_in(graphs: Sequence[SceneGraph], label: str, category: str | None) -> bool:
    """Every X in every image says something in the category, so an X without the
    attribute is known not to have it."""
    return category is not None and all(
        any(attribute_category(a) == category for a in ob.attributes)
        for g in graphs for ob in g.objects if ob.label == label)


@register
class TotalAttributedCount(_Total):
    """How many {attr} X the images hold together (ProVision, arXiv 2412.07012); asked only
    when every X of the group is annotated in the attribute's category."""

    name = "total_attributed_count"
    skills = ("calculating", "referencing", "context understanding")
    phrasings = (
        "How many {attr} {objs} are there in {all_m} together?",
        "Adding up every image, how many {attr} {objs} can be seen?",
        "What is the total number of {attr} {objs} across these images?",
        "Count the {attr} {objs} in each image and add them up. What is the total?",
        "Across the whole set of images, how many {objs} are {attr}?",
    )

    def candidates(self, graphs, ctx):
        pairs, per = _attributed_pairs(graphs)
        out = []
        for attr, label in pairs:
            if not is_countable(label) or not _annotated_in(graphs, label, attribute_category(attr)):
                continue
            counts = [c[(attr, label)] for c in per]
            out.append(Candidate(key=(attr, label),
                                 rarity=ctx.freq.attributes[attr] + ctx.freq.objects[label],
                                 fields={"attr": attr, "objs": plural(label)}, objects=[label],
                                 meta={"label": label, "attribute": attr, "counts": counts,
                                       "total": sum(counts)},
                                 extra={"total": sum(counts)}))
        return out


def _fill(near: list[str], far, need: int) -> list[str]:
    """Distractors from the group first; dataset-wide ones (`far`: a list, or a function
    giving an iterable, called only when needed) only to reach `need`."""
    if len(near) >= need:
        return near
    out = list(near)
    for x in far() if callable(far) else far:
        if len(out) >= need:
            break
        if x not in out:
            out.append(x)
    return out


class _Common(MultiGenerator):
    """What every image shares. Short answer only when exactly one thing is shared;
    otherwise multiple choice whose other options are known to be missing from some image."""

    skills = ("existence", "context understanding")

    def finish(self, c, graphs, rng, ctx):
        want_mc = rng.random() < ctx.mc_ratio
        if want_mc or not c.extra["unique"]:
            pool = _fill(c.extra["near"], c.extra["far"], ctx.n_choices - 1)
            options = as_multiple_choice(rng, c.answer, pool, ctx.n_choices)
            if options is not None:
                return c.answer, options
        return (c.answer, []) if c.extra["unique"] else None


@register
class CommonObject(_Common):
    """An object every image has (ProVision, arXiv 2412.07012). A wrong option is a name
    that some image may not show under any name ("human" is never offered beside a "batter")."""

    name = "common_object"
    phrasings = (
        "Which object appears in each of these images?",
        "What kind of object can be found in {all_m}?",
        "Name the object that the images have in common.",
        "Which thing is present in each image?",
        "Looking at {all_m}, which object shows up in each of them?",
    )

    def candidates(self, graphs, ctx):
        labels = _labels(graphs)
        common = _labels(graphs, least=1)

        def missing_somewhere(label: str) -> bool:
            return label not in common and not all(_may_show(g, label) for g in graphs)

        some = [l for l in labels if missing_somewhere(l)]

        def dataset():  # the dataset's most common names, as far as needed
            return filter(missing_somewhere, _most_common(ctx.freq.objects))

        return [Candidate(key=(label,), rarity=ctx.freq.objects[label], fields={}, answer=label,
                          objects=[label],
                          meta={"label": label, "common": common,
                                "counts": [g.label_counts[label] for g in graphs]},
                          extra={"unique": len(common) == 1, "near": some, "far": dataset})
                for label in common]


@register
class CommonAttribute(_Common):
    """An attribute some X carries in every image (ProVision, arXiv 2412.07012). A wrong
    option is a word of the same kind that some image is known not to have on its X."""

    name = "common_attribute"
    skills = ("referencing", "context understanding")
    phrasings = (
        "Each image has {obj}. Which attribute does it have in each of them?",
        "What property do the {objs} share across {all_m}?",
        "Across these images, which attribute is common to the {label} in each one?",
        "The {label} appears in {all_m}. What characteristic is the same every time?",
        "Which attribute describes {obj} in each of the images?",
    )

    def candidates(self, graphs, ctx):
        out = []
        for label in _labels(graphs, least=1):
            per = [_unique([a for ob in g.objects if ob.label == label for a in ob.attributes])
                   for g in graphs]
            seen = sorted({a for p in per for a in p})
            shared = [a for a in seen if all(a in p for p in per)]  # vague words too, for `unique`
            common = [a for a in shared if askable_attribute(a)]

            def wrong(a: str) -> bool:
                return (askable_attribute(a) and a not in shared and not any(too_close(c, a) for c in shared)
                        and any(_known_without(g, label, a) for g in graphs))

            some = [a for a in seen if wrong(a)]
            for attr in common:
                cat = attribute_category(attr)
                far = [a for a in (attributes_in_category(cat) if cat else []) if wrong(a)]
                out.append(Candidate(
                    key=(label, attr), rarity=ctx.freq.attributes[attr] + ctx.freq.objects[label],
                    fields={"obj": with_article(label), "objs": plural(label), "label": label},
                    answer=attr, objects=[label],
                    meta={"label": label, "attribute": attr, "common": common, "per_image": per},
                    extra={"unique": len(shared) == 1, "near": some, "far": far}))
        return out


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


class _Compare(MultiGenerator):
    """The answer lists something image by image; wrong options pair the lists with the
    wrong images, or swap one item for one that is clearly not it (`alternatives`, drawing
    on what `choices` gives once per question)."""

    def choices(self, graphs: list[SceneGraph], ctx: GenContext) -> Any:
        return None

    def alternatives(self, choices: Any, item: str, current: list[str]) -> list[str]:
        raise NotImplementedError

    def finish(self, c, graphs, rng, ctx):
        answer = per_image(c.extra["parts"])
        if rng.random() < ctx.mc_ratio:
            choices = self.choices(graphs, ctx)
            wrong = _rotations(c.extra["parts"]) + _swapped(
                c.extra["parts"], lambda item, current: self.alternatives(choices, item, current), rng)
            options = as_multiple_choice(rng, answer, _unique([per_image(w) for w in wrong]), ctx.n_choices)
            if options is not None:
                return answer, options
        return answer, []


@register
class CompareAttributes(_Compare):
    """The attributes of the one X in each image (ProVision, arXiv 2412.07012)."""

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
        for label in _labels(graphs, least=1, most=1):  # "the X" must name one object in every image
            parts = [_unique(g.objects[_index_of(g, label)].attributes) for g in graphs]
            if not all(parts):
                continue
            out.append(Candidate(key=(label,), rarity=ctx.freq.objects[label], fields={"label": label},
                                 objects=[label], meta={"label": label, "per_image": parts},
                                 extra={"parts": parts}))
        return out

    def alternatives(self, choices, attr, current):
        """Words of the same category, neither vague nor near any of the object's own."""
        cat = attribute_category(attr)
        if not cat:
            return []
        return [a for a in attributes_in_category(cat)
                if a not in current and askable_attribute(a) and not any(too_close(c, a) for c in current)]


@register
class CompareRelations(_Compare):
    """How the one X relates to the one Y in each image (ProVision, arXiv 2412.07012)."""

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
        shared = _labels(graphs, least=1, most=1)
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

    def choices(self, graphs, ctx):
        """Predicates of the group and the dataset's 20 most common ones."""
        group_preds = sorted({r.predicate for g in graphs for r in g.relations})
        dataset = [p for p, _ in sorted(ctx.freq.relations.items(), key=lambda kv: (-kv[1], kv[0]))]
        return _unique(group_preds + dataset[:20])

    def alternatives(self, pool, pred, current):
        """Predicates of the pool, none near the true ones."""
        return [p for p in pool if p not in current and not any(too_close(c, p) for c in current)]
