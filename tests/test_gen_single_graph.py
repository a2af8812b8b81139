"""Scene-graph generators (reference subgraphs) and the graph caption, on hand-made graphs."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evol.provision.base import GENERATORS, Frequencies, GenContext
from evol.provision.caption import describe_graph, plural
from evol.provision.generators import single_graph  # noqa: F401  (registers the generators)
from evol.provision.generators.single_graph import too_close
from evol.provision.graph import Relation, SceneGraph, SGObject
from evol.provision.vocab import attribute_category

REPO = Path(__file__).resolve().parent.parent
ALL = ["sg_object_qa", "sg_attribute_qa", "sg_relation_qa"]


def graph(objects, relations, w=100, h=80) -> SceneGraph:
    """objects: (label, [attributes]) with made-up boxes; relations: (s, predicate, o)."""
    obs = [SGObject(label=lab, box=(k, k, k + 10, k + 10), attributes=list(attrs))
           for k, (lab, attrs) in enumerate(objects)]
    rels = [Relation(s, p, o) for s, p, o in relations]
    return SceneGraph("g", "g.jpg", w, h, obs, rels).validate()


def run(name, g, seed=0, n=6, **ctx):
    return GENERATORS[name].generate([g], random.Random(seed), GenContext(**ctx), n)


def kitchen():
    objects = [
        ("man", ["standing", "tall"]),    # 0
        ("man", ["sitting"]),             # 1
        ("table", ["wooden", "brown"]),   # 2
        ("cup", ["white"]),               # 3
        ("cup", ["red"]),                 # 4
        ("table", ["metal", "gray"]),     # 5
        ("chair", ["wooden"]),            # 6
        ("dog", ["black", "small"]),      # 7
    ]
    relations = [(0, "next to", 2), (1, "sitting on", 6), (3, "on", 2), (4, "on", 5),
                 (6, "near", 5), (7, "under", 5), (0, "holding", 3)]
    return graph(objects, relations)


def matches(g: SceneGraph, meta: dict, *, with_label: bool) -> list[int]:
    """Brute force: every object the reference in `meta` fits (no bit sets, no shortcuts)."""
    attrs = meta["attributes"]
    label = g.objects[meta["object"]].label
    out = []
    for o, ob in enumerate(g.objects):
        if with_label and ob.label != label:
            continue
        if not all(a in ob.attributes for a in attrs):
            continue
        if "relation" in meta:
            def fits_nb(k):
                nb = g.objects[k]
                return (nb.label == meta["neighbour_label"]
                        and all(a in nb.attributes for a in meta["neighbour_attributes"]))
            ok = any(r.predicate == meta["relation"] and (
                (meta["direction"] == "subject" and r.subject == o and fits_nb(r.object)) or
                (meta["direction"] == "object" and r.object == o and fits_nb(r.subject)))
                for r in g.relations if r.subject != r.object)
            if not ok:
                continue
        out.append(o)
    return out


def neighbour_unique(g: SceneGraph, meta: dict) -> bool:
    hits = [k for k, ob in enumerate(g.objects) if ob.label == meta["neighbour_label"]
            and all(a in ob.attributes for a in meta["neighbour_attributes"])]
    return hits == [meta["neighbour"]]


# -- 22 -----------------------------------------------------------------------------------------
def test_object_qa_reference_is_unique_and_answer_right():
    g = kitchen()
    total = 0
    for seed in range(25):
        for qa in run("sg_object_qa", g, seed=seed, mc_ratio=0.5):
            total += 1
            meta = qa.metadata["target"]
            t = meta["object"]
            assert qa.answer == g.objects[t].label
            assert matches(g, meta, with_label=False) == [t], qa.question
            assert neighbour_unique(g, meta)
            assert meta["neighbour_label"] in qa.question and meta["relation"] in qa.question
            assert all(a in qa.question for a in meta["attributes"])
            assert " object " in qa.question  # the label itself is what is asked
            if qa.options:
                assert len(qa.options) == 4 and len(set(qa.options)) == 4 and qa.answer in qa.options
    assert total >= 25


def test_object_qa_known_answer():
    g = graph([("cup", ["white"]), ("table", ["wooden"])], [(0, "on", 1)])
    qas = [qa for seed in range(10) for qa in run("sg_object_qa", g, seed=seed, n=2)]
    by_answer = {qa.answer: qa.question for qa in qas}
    assert set(by_answer) == {"cup", "table"}
    assert "that is on the" in by_answer["cup"] and "table" in by_answer["cup"]
    assert "cup is on" in by_answer["table"]


def test_object_qa_options_avoid_synonyms_and_are_four():
    g = graph([("man", []), ("person", []), ("bench", []), ("tree", []), ("car", []), ("sign", [])],
              [(0, "sitting on", 2)])
    ctx = dict(mc_ratio=1.0, freq=Frequencies())
    for seed in range(10):
        for qa in run("sg_object_qa", g, seed=seed, **ctx):
            assert len(qa.options) == 4 and qa.answer in qa.options
            if qa.answer == "man":
                assert "person" not in qa.options


def test_object_qa_tops_up_options_from_the_dataset_or_falls_back_to_short_answer():
    g = graph([("cup", ["white"]), ("table", ["wooden"])], [(0, "on", 1)])
    freq = Frequencies()
    for lab, k in (("tree", 9), ("car", 7), ("person", 5), ("cup", 50), ("mug", 40), ("dog", 1)):
        freq.objects[lab] = k
    for seed in range(5):
        for qa in run("sg_object_qa", g, seed=seed, mc_ratio=1.0, freq=freq):
            assert len(qa.options) == 4 and qa.answer in qa.options
            assert "dog" not in qa.options  # the most common labels come first
            if qa.answer == "cup":
                assert "mug" not in qa.options  # too close in meaning
    # two labels and no dataset counts: too few wrong options, so short answer
    qas = run("sg_object_qa", g, mc_ratio=1.0)
    assert qas and all(qa.options == [] for qa in qas)


# -- 23 -----------------------------------------------------------------------------------------
def test_attribute_qa_right_attribute_and_same_category_options():
    g = kitchen()
    total = 0
    for seed in range(25):
        for qa in run("sg_attribute_qa", g, seed=seed, mc_ratio=1.0):
            total += 1
            meta = qa.metadata["target"]
            t, cat = meta["object"], qa.metadata["category"]
            ob = g.objects[t]
            assert qa.answer in ob.attributes and attribute_category(qa.answer) == cat
            assert matches(g, meta, with_label=True) == [t], qa.question
            assert ob.label in qa.question and meta["relation"] in qa.question
            assert not any(attribute_category(a) == cat for a in meta["attributes"])  # no give-away
            assert len(qa.options) == 4 and qa.answer in qa.options
            for opt in qa.options:
                assert attribute_category(opt) == cat
                if opt != qa.answer:
                    assert opt not in ob.attributes and not too_close(qa.answer, opt)
    assert total >= 25


def test_attribute_qa_known_answer():
    # two cups; only "the cup that is on the table" is white
    g = graph([("cup", ["white"]), ("cup", ["red"]), ("table", [])], [(0, "on", 2), (1, "next to", 2)])
    qas = [qa for seed in range(10) for qa in run("sg_attribute_qa", g, seed=seed, n=2)]
    assert qas
    for qa in qas:
        if "on the table" in qa.question:
            assert qa.answer == "white"
        else:
            assert "next to the table" in qa.question and qa.answer == "red"
        assert "color" in qa.question
        assert qa.answer not in qa.question


# -- 24 -----------------------------------------------------------------------------------------
def test_relation_qa_answer_and_options():
    g = kitchen()
    total = 0
    for seed in range(25):
        for qa in run("sg_relation_qa", g, seed=seed, mc_ratio=1.0):
            total += 1
            s, o = qa.metadata["subject"]["object"], qa.metadata["object"]["object"]
            preds = sorted({r.predicate for r in g.relations if (r.subject, r.object) == (s, o)})
            assert preds == [qa.answer]
            assert matches(g, qa.metadata["subject"], with_label=True) == [s]
            assert matches(g, qa.metadata["object"], with_label=True) == [o]
            for side in ("subject", "object"):
                assert qa.metadata[side].get("neighbour") not in (s, o)  # not described by the asked pair
            assert len(qa.options) == 4 and len(set(qa.options)) == 4 and qa.answer in qa.options
            for opt in qa.options:
                if opt != qa.answer:
                    assert not too_close(qa.answer, opt)
    assert total >= 25


def test_relation_qa_known_answer_and_no_synonym_distractors():
    g = graph([("dog", ["brown"]), ("car", ["red"]), ("tree", []), ("bench", []), ("sign", [])],
              [(0, "next to", 1), (2, "near", 3), (4, "behind", 3), (3, "under", 2)])
    qas = [qa for seed in range(20) for qa in run("sg_relation_qa", g, seed=seed, mc_ratio=1.0)]
    dog_car = [qa for qa in qas if qa.objects == ["dog", "car"]]
    assert dog_car
    for qa in dog_car:
        assert qa.answer == "next to"
        assert "near" not in qa.options and "beside" not in qa.options


def test_relation_qa_skips_pairs_with_two_predicates():
    g = graph([("man", []), ("horse", [])], [(0, "on", 1), (0, "riding", 1)])
    assert run("sg_relation_qa", g) == []


# -- nothing to ask -----------------------------------------------------------------------------
def test_nothing_to_ask():
    # two identical white cups on the same table: no reference can tell the cups apart,
    # and the table can only be reached through "the white cup", which is not unique
    twins = graph([("cup", ["white"]), ("cup", ["white"]), ("table", [])], [(0, "on", 2), (1, "on", 2)])
    no_rel = graph([("cup", ["white"]), ("table", ["wooden"])], [])
    self_only = graph([("cup", ["white"])], [(0, "on", 0)])
    empty = graph([], [])
    t0 = time.perf_counter()
    for name in ALL:
        for g in (twins, no_rel, self_only, empty):
            assert run(name, g) == [], (name, g.objects)
    # many look-alike objects: still nothing, and found quickly
    crowd = graph([("cup", ["white"])] * 40 + [("table", [])], [(k, "on", 40) for k in range(40)])
    for name in ALL:
        assert run(name, crowd) == []
    assert time.perf_counter() - t0 < 1.0


# -- common -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output_and_fields(name):
    a, b = run(name, kitchen(), seed=5), run(name, kitchen(), seed=5)
    assert a and a == b
    for qa in a:
        assert qa.generator == name and qa.objects and qa.skills and qa.metadata
    assert len(run(name, kitchen(), n=1)) == 1 and run(name, kitchen(), n=0) == []


@pytest.mark.parametrize("name", ALL)
def test_question_phrasings_vary(name):
    starts = {qa.question.split(" the ")[0] for seed in range(60) for qa in run(name, kitchen(), seed=seed)}
    assert len(starts) >= 4


def test_output_independent_of_hash_seed():
    code = ("import json, random; from evol.provision.base import GENERATORS, GenContext; "
            "import evol.provision.generators.single_graph; import tests.test_gen_single_graph as t; "
            "from evol.provision.caption import describe_graph; g = t.kitchen(); "
            "print(json.dumps([describe_graph(g)] + [[q.question, q.answer, q.options] for n in t.ALL "
            "for q in GENERATORS[n].generate([g], random.Random(1), GenContext(), 3)]))")
    outs = []
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        outs.append(json.loads(res.stdout))
    assert outs[0] == outs[1] and len(outs[0]) > 3


# -- caption ------------------------------------------------------------------------------------
def test_caption_mentions_objects_counts_attributes_and_relations():
    g = kitchen()
    text = describe_graph(g)
    for word in ("two men", "two tables", "two cups", "a wooden chair", "a black small dog", "wooden", "white"):
        assert word in text, (word, text)
    assert "next to" in text and "sitting on" in text
    assert text == describe_graph(kitchen())  # deterministic, also for an equal new graph
    assert text.endswith(".") and text[0].isupper()


def test_caption_small_cases():
    assert "a white cup" in describe_graph(graph([("cup", ["white"])], []))
    assert describe_graph(graph([], [])).strip()
    one = describe_graph(graph([("person", []), ("person", []), ("person", []), ("umbrella", [])], [(0, "holding", 3)]))
    assert "three people" in one and "an umbrella" in one and "holding" in one
    assert plural("bus") == "buses" and plural("box") == "boxes" and plural("strawberry") == "strawberries"
    # a rng picks which relations are told, reproducibly
    g = graph([("a", []), ("b", []), ("c", []), ("d", [])], [(0, "on", 1), (1, "on", 2), (2, "on", 3), (3, "on", 0)])
    assert describe_graph(g, random.Random(4)) == describe_graph(g, random.Random(4))
