"""The vague-word filter in every generator that draws attributes.

Words like "colorful", "pale", "dark" or "bright" make questions no one can grade: they are
never the attribute a question is about, never a wrong option, and never a word a reference
names an object by. The same holds for the categories never asked ("other", gender).
"""

from __future__ import annotations

import random

import pytest

from evol.provision import generators  # noqa: F401  (registers them all)
from evol.provision.base import GENERATORS, Frequencies, GenContext
from evol.provision.graph import Relation, SceneGraph, SGObject
from evol.provision.vocab import UNASKED_CATEGORIES, VAGUE_ATTRIBUTES, askable_attribute, attribute_category

VAGUE = ["colorful", "pale", "dark", "bright", "light", "multicolored"]


def scene(image_id: str, shade: int = 0) -> SceneGraph:
    """Every object carries vague words; some carry nothing else in their category. The
    cars' colors differ between images (red in the first only, green in all but the first)."""
    v = VAGUE[shade:] + VAGUE[:shade]
    red = "red" if shade == 0 else "green"
    objects = [
        ("woman", [v[0], "female", "smiling"]),
        ("shirt", [v[1]]),  # its only color word is vague
        ("car", [v[2], red, "metal"]),
        ("car", [v[3], "blue", "metal"]),
        ("table", [v[4], "wooden"]),
        ("cup", [v[5], "white"]),
        ("cup", [v[0], "white"]),
        ("lamp", ["bright", "old"]),
    ]
    obs = [SGObject(label=l, box=(12 * i, 12 * i, 12 * i + 10, 12 * i + 10), attributes=a)
           for i, (l, a) in enumerate(objects)]
    rels = [Relation(0, "wearing", 1), Relation(5, "on", 4), Relation(6, "on", 4), Relation(2, "next to", 3),
            Relation(7, "on", 4), Relation(0, "near", 2)]
    return SceneGraph(image_id, f"{image_id}.jpg", 200, 200, obs, rels).validate()


def unaskable(word: str) -> bool:
    return word in VAGUE_ATTRIBUTES or attribute_category(word) in UNASKED_CATEGORIES


ATTRIBUTE_GENERATORS = sorted(name for name, g in GENERATORS.items()
                              if name in {"count_attributed_objects", "object_attribute_category", "sg_attribute_qa",
                                          "sg_object_qa", "sg_relation_qa", "image_has_attributed_object",
                                          "image_lacks_attributed_object", "total_attributed_count",
                                          "common_attribute", "compare_attributes"})


def test_the_filter():
    assert not askable_attribute("colorful") and not askable_attribute("pale") and not askable_attribute("female")
    assert askable_attribute("red") and askable_attribute("wooden")


@pytest.mark.parametrize("name", ATTRIBUTE_GENERATORS)
def test_vague_words_are_never_asked_offered_or_used_to_refer(name):
    graphs = [scene("a", 0), scene("b", 2), scene("c", 4)]
    freq = Frequencies()
    for g in graphs:
        freq.add(g)
    gen = GENERATORS[name]
    qas = []
    for seed in range(40):
        for mc in (0.0, 1.0):
            group = graphs[: 2 + seed % 2] if gen.multi else [graphs[seed % 3]]
            qas += gen.generate(group, random.Random(seed), GenContext(mc_ratio=mc, freq=freq), 8)
    assert qas, name
    for qa in qas:
        meta = qa.metadata
        asked = meta.get("attribute")
        assert not (asked and unaskable(asked)), (name, qa.question)
        refs = [meta[k] for k in ("target", "subject", "object") if isinstance(meta.get(k), dict)]
        for ref in refs:
            words = ref.get("attributes", []) + ref.get("neighbour_attributes", [])
            assert not [w for w in words if unaskable(w)], (name, qa.question)
        if name == "compare_attributes":  # options list the real attributes: no new vague word
            real = {a for g in graphs for ob in g.objects for a in ob.attributes}
            for opt in qa.options:
                words = {w.strip() for part in opt.split(";") for w in part.split(":")[-1].split(",")}
                assert not [w for w in words - real if unaskable(w)], (name, opt)
        elif name not in ("sg_object_qa", "sg_relation_qa"):
            assert not [o for o in qa.options if unaskable(o)], (name, qa.options)
    # the shirt's only color is vague: nobody asks for it
    if name == "sg_attribute_qa":
        assert not [qa for qa in qas if qa.answer in VAGUE]
