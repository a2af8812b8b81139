"""Single-image generators 1-13: right answers on hand-made graphs, nothing to ask -> [],
same seed -> same output, output independent of PYTHONHASHSEED."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from evol.provision.base import GENERATORS, Frequencies, GenContext, fmt_box
from evol.provision.generators import single_basic as sb
from evol.provision.graph import Relation, SceneGraph, SGObject
from evol.provision.vocab import attribute_category

REPO = Path(__file__).resolve().parent.parent

NAMES = ["count_objects", "most_frequent_object", "least_frequent_object", "leftmost_object",
         "rightmost_object", "topmost_object", "bottommost_object", "count_attributed_objects",
         "object_attributes", "object_attribute_category", "relation_between_labels",
         "relation_between_boxes", "relation_subject"]
SKILLS = {"grounding", "referencing", "calculating", "OCR", "existence", "relationship description",
          "context understanding", "behaviour prediction", "knowledge integration"}
POSITIONAL = {"leftmost_object", "rightmost_object", "topmost_object", "bottommost_object"}


def ob(label, box, *attrs):
    return SGObject(label=label, box=tuple(float(v) for v in box), attributes=list(attrs))


def graph(objects, relations=(), w=100, h=100):
    return SceneGraph(image_id="t", image="t.jpg", width=w, height=h, objects=list(objects),
                      relations=[Relation(*r) for r in relations]).validate()


def run(name, g, seed=0, n=50, mc=0.5, **kw):
    return GENERATORS[name].generate([g], random.Random(seed), GenContext(mc_ratio=mc, **kw), n)


def check_mc(qa, k):
    assert len(qa.options) == k, qa
    assert qa.options.count(qa.answer) == 1, qa
    assert len(set(qa.options)) == k, qa


def check_common(qas, name):
    for qa in qas:
        assert qa.generator == name
        assert qa.question and qa.answer
        assert qa.skills and set(qa.skills) <= SKILLS
        assert qa.objects
        assert qa.metadata["form"] == ("mc" if qa.options else "short")
        if qa.options:
            check_mc(qa, 3 if name in POSITIONAL else 4)


def short_and_mc(name, g, n=50):
    """All QAs in short form, then all as multiple choice (where distractors allow)."""
    short = run(name, g, mc=0.0, n=n)
    mc = run(name, g, mc=1.0, n=n)
    check_common(short, name)
    check_common(mc, name)
    assert all(not qa.options for qa in short)
    return short, mc


# -- scenes ---------------------------------------------------------------------------------

def kitchen():
    """3 separate cups, 2 plates, 1 fork, 1 knife; grass and a batter are not countable."""
    return graph([
        ob("cup", (0, 0, 10, 10), "red", "ceramic"), ob("cup", (20, 0, 30, 10), "red", "ceramic"),
        ob("cup", (40, 0, 50, 10), "blue", "glass"),
        ob("plate", (0, 30, 20, 40), "white"), ob("plate", (30, 30, 50, 40), "white"),
        ob("fork", (60, 30, 65, 45)), ob("knife", (70, 30, 75, 45)),
        ob("grass", (0, 60, 100, 100)), ob("batter", (80, 0, 95, 20)),
    ])


def diagonal():
    """cup, plate, fork apart on both axes (cup top-left, fork bottom-right); the lamp
    overlaps the plate on both axes; two chairs are not label-unique."""
    return graph([
        ob("cup", (10, 10, 20, 20)), ob("plate", (40, 40, 60, 60)), ob("fork", (80, 80, 90, 90)),
        ob("lamp", (45, 45, 70, 70)),
        ob("chair", (0, 0, 5, 5)), ob("chair", (95, 95, 100, 100)),
    ])


# -- 1. count objects -------------------------------------------------------------------

def test_count_objects_answers_and_options():
    short, mc = short_and_mc("count_objects", kitchen())
    assert {qa.objects[0]: qa.answer for qa in short} == {"cup": "3", "plate": "2", "fork": "1", "knife": "1"}
    assert all(plural in qa.question for qa, plural in zip(sorted(short, key=lambda q: q.objects[0]),
                                                          ["cups", "forks", "knives", "plates"]))
    by = {qa.objects[0]: qa for qa in mc}
    assert sorted(by["cup"].options, key=int) == ["2", "3", "4", "5"] and by["cup"].answer == "3"
    assert sorted(by["fork"].options, key=int) == ["1", "2", "3", "4"] and by["fork"].answer == "1"
    assert sorted(by["plate"].options, key=int) == ["1", "2", "3", "4"]
    assert len(run("count_objects", kitchen(), n=2)) == 2


def test_count_objects_number_words():
    qas = run("count_objects", kitchen(), mc=1.0, number_words=True)
    cup = next(qa for qa in qas if qa.objects == ["cup"])
    assert cup.answer == "three" and "five" in cup.options


def test_count_objects_skips_ambiguous_boxes():
    g = graph([ob("cup", (0, 0, 50, 50)), ob("cup", (5, 5, 20, 20)), ob("cup", (60, 0, 70, 10)),
               ob("plate", (0, 60, 10, 70)), ob("plate", (0, 60, 10, 71)),  # near-duplicate
               ob("bowl", (20, 60, 30, 70)), ob("bowls", (40, 60, 60, 80)),  # group label beside
               ob("person", (0, 80, 5, 90)), ob("people", (10, 80, 30, 99)),  # irregular plural
               ob("fork", (80, 80, 90, 90))])
    assert [qa.objects for qa in run("count_objects", g, mc=0)] == [["fork"]]


def test_count_objects_nothing_to_ask():
    g = graph([ob("grass", (0, 0, 100, 50)), ob("sky", (0, 50, 100, 100)), ob("batter", (10, 10, 20, 20))])
    t = time.perf_counter()
    assert run("count_objects", g) == []
    assert run("count_objects", kitchen(), n=0) == []
    assert time.perf_counter() - t < 1


# -- 2-3. most / least frequent ---------------------------------------------------------

def test_most_frequent():
    counts = {"cup": 3, "plate": 2, "fork": 1, "knife": 1}
    short, mc = short_and_mc("most_frequent_object", kitchen())
    for qas in (short, mc):
        assert {qa.answer for qa in qas} == {"cup", "plate"}
        for qa in qas:
            cands = qa.metadata["labels"]
            assert qa.answer in cands and len(cands) >= 2
            assert all(counts[c] < counts[qa.answer] for c in cands if c != qa.answer)
            if not qa.options:
                assert all(c in qa.question for c in cands)
    cup = next(qa for qa in mc if qa.answer == "cup")
    assert sorted(cup.options) == ["cup", "fork", "knife", "plate"]
    plate = next(qa for qa in mc if qa.answer == "plate")  # only fork and knife below it
    assert plate.options == [] and "cup" not in plate.question


def test_least_frequent():
    counts = {"cup": 3, "plate": 2, "fork": 1, "knife": 1}
    short, mc = short_and_mc("least_frequent_object", kitchen())
    for qas in (short, mc):
        assert {qa.answer for qa in qas} == {"fork", "knife", "plate"}
        for qa in qas:
            assert all(counts[c] > counts[qa.answer] for c in qa.metadata["labels"] if c != qa.answer)
    fork = next(qa for qa in short if qa.answer == "fork")
    assert "knife" not in fork.question


def test_frequency_ignores_container_boxes():
    # cups: a group box holding two cups (3 boxes, 2 cups); forks: 4 -> fork most, cup least
    g = graph([ob("cup", (0, 0, 40, 20)), ob("cup", (2, 2, 15, 15)), ob("cup", (20, 2, 35, 15)),
               *[ob("fork", (10 * k, 50, 10 * k + 5, 60)) for k in range(4)]])
    assert [qa.answer for qa in run("most_frequent_object", g, mc=0)] == ["fork"]
    assert [qa.answer for qa in run("least_frequent_object", g, mc=0)] == ["cup"]
    # with three forks the order depends on whether the group box is a cup: ask nothing
    g3 = graph(g.objects[:6])
    assert run("most_frequent_object", g3) == [] and run("least_frequent_object", g3) == []


def test_frequency_nothing_to_ask():
    one_label = graph([ob("cup", (0, 0, 10, 10)), ob("cup", (20, 0, 30, 10)), ob("sky", (0, 50, 100, 100))])
    tie = graph([ob("cup", (0, 0, 10, 10)), ob("plate", (20, 0, 30, 10))])
    for name in ("most_frequent_object", "least_frequent_object"):
        assert run(name, one_label) == [] and run(name, tie) == []


# -- 4-7. positional --------------------------------------------------------------------

@pytest.mark.parametrize("name,answer", [("leftmost_object", "cup"), ("topmost_object", "cup"),
                                         ("rightmost_object", "fork"), ("bottommost_object", "fork")])
def test_positional(name, answer):
    short, mc = short_and_mc(name, diagonal())
    for qas in (short, mc):
        assert [qa.answer for qa in qas] == [answer]  # plate/lamp never have two apart beyond them
        qa = qas[0]
        cands = qa.metadata["labels"]
        assert len(cands) == 3 and answer in cands and "chair" not in cands
        assert not {"plate", "lamp"} <= set(cands)  # they overlap each other
    assert sorted(mc[0].options) == sorted(mc[0].metadata["labels"])
    assert all(f"the {c}" in short[0].question for c in short[0].metadata["labels"])


def test_positional_uses_three_options_even_with_more_choices():
    qas = run("leftmost_object", diagonal(), mc=1.0, n_choices=5)
    assert len(qas[0].options) == 3


@pytest.mark.parametrize("name", sorted(POSITIONAL))
def test_positional_nothing_to_ask(name):
    overlapping = graph([ob("cup", (10, 10, 50, 50)), ob("plate", (40, 40, 80, 80)),
                         ob("fork", (30, 30, 90, 90))])
    duplicates = graph([ob("cup", (0, 0, 10, 10)), ob("cup", (40, 40, 50, 50)), ob("plate", (80, 80, 90, 90)),
                        ob("fork", (20, 20, 30, 30))])
    assert run(name, overlapping) == [] and run(name, duplicates) == []


# -- 8. count attributed objects --------------------------------------------------------

def test_count_attributed_objects():
    short, mc = short_and_mc("count_attributed_objects", kitchen())
    got = {(qa.metadata["attribute"], qa.objects[0]): qa.answer for qa in short}
    assert got == {("red", "cup"): "2", ("blue", "cup"): "1", ("ceramic", "cup"): "2",
                   ("glass", "cup"): "1", ("white", "plate"): "2"}
    red = next(qa for qa in short if qa.metadata["attribute"] == "red")
    assert "red cups" in red.question or ("cups" in red.question and "red" in red.question)
    red_mc = next(qa for qa in mc if qa.metadata["attribute"] == "red")
    assert sorted(red_mc.options, key=int) == ["1", "2", "3", "4"]


def test_count_attributed_needs_every_member_described():
    # one cup has no color: "How many red cups?" could be wrong, so no color questions on cups
    g = graph([ob("cup", (0, 0, 10, 10), "red"), ob("cup", (20, 0, 30, 10), "red"),
               ob("cup", (40, 0, 50, 10)),
               ob("plate", (0, 30, 20, 40), "large"), ob("plate", (30, 30, 50, 40), "big")])
    qas = run("count_attributed_objects", g, mc=0)
    assert {(qa.metadata["attribute"], qa.answer) for qa in qas} == {("large", "2"), ("big", "2")}


def test_count_attributed_compound_colors():
    # "blue" counts the dark blue cup; "dark blue" is not asked (the plain blue one may be dark)
    g = graph([ob("cup", (0, 0, 10, 10), "blue"), ob("cup", (20, 0, 30, 10), "dark blue"),
               ob("cup", (40, 0, 50, 10), "red")])
    got = {qa.metadata["attribute"]: qa.answer for qa in run("count_attributed_objects", g, mc=0)}
    assert got == {"blue": "2", "red": "1"}


def test_count_attributed_nothing_to_ask():
    g = graph([ob("cup", (0, 0, 10, 10)), ob("grass", (0, 50, 100, 100), "green")])
    assert run("count_attributed_objects", g) == []


# -- 9. all attributes of an object -----------------------------------------------------

def test_object_attributes():
    g = graph([ob("table", (10, 20, 60, 80), "wooden", "brown"), ob("cup", (70, 10, 80, 20)),
               ob("dog", (0, 0, 5, 5), "furry", "striped")])
    short, mc = short_and_mc("object_attributes", g)
    by = {qa.objects[0]: qa for qa in short}
    assert set(by) == {"table", "dog"}
    assert by["table"].answer == "brown, wooden"
    assert fmt_box([0.1, 0.2, 0.6, 0.8]) in by["table"].question
    for qa in mc:
        own = set(qa.metadata["attributes"])
        for opt in qa.options:
            words = opt.split(", ")
            assert len(words) == len(own)
            if opt != qa.answer:
                assert not own & set(words)
    table = next(qa for qa in mc if qa.objects == ["table"])
    for opt in table.options:  # each slot swapped for a word of the same category
        assert sorted(attribute_category(w) for w in opt.split(", ")) == ["color", "material"]


def test_object_attributes_uses_dataset_words():
    freq = Frequencies()
    g = graph([ob("table", (10, 20, 60, 80), "wooden")])
    freq.add(graph([ob("x", (0, 0, 1, 1), "plastic"), ob("y", (0, 0, 1, 1), "paper"),
                    ob("z", (0, 0, 1, 1), "stone")]))
    qas = run("object_attributes", g, mc=1.0, freq=freq)
    # enough dataset words of the category: the vocabulary is not used
    assert sorted(qas[0].options) == ["paper", "plastic", "stone", "wooden"]
    # too few: topped up from the vocabulary's materials
    few = Frequencies()
    few.add(graph([ob("x", (0, 0, 1, 1), "plastic")]))
    opts = run("object_attributes", g, mc=1.0, freq=few)[0].options
    assert len(opts) == 4 and all(attribute_category(o) == "material" for o in opts)
    assert "wooden" in opts and "wood" not in opts


def test_object_attributes_nothing_to_ask():
    same_box = graph([ob("man", (0, 0, 50, 50), "tall"), ob("person", (0, 0, 50, 50), "tall")])
    bare = graph([ob("cup", (0, 0, 10, 10))])
    assert run("object_attributes", same_box) == [] and run("object_attributes", bare) == []


# -- 10. attribute of a category --------------------------------------------------------

def test_object_attribute_category():
    g = graph([ob("table", (10, 20, 60, 80), "wooden", "brown", "large")])
    short, mc = short_and_mc("object_attribute_category", g)
    assert {qa.metadata["category"]: qa.answer for qa in short} == {
        "color": "brown", "material": "wooden", "size": "large"}
    assert len(mc) == 3 and all(len(qa.options) == 4 for qa in mc)
    for qa in mc:
        cat = qa.metadata["category"]
        assert all(attribute_category(o) == cat for o in qa.options)
        if cat == "size":
            assert not {"big", "huge"} & set(qa.options)  # synonyms of the answer
        if cat == "color":
            assert not {"dark", "light", "dark brown", "light brown", "brunette"} & set(qa.options)


def test_object_attribute_category_nothing_to_ask():
    g = graph([ob("cup", (0, 0, 10, 10), "red", "white"), ob("man", (20, 0, 30, 10), "male", "young"),
               ob("sky", (0, 50, 100, 100), "dark")])
    assert run("object_attribute_category", g) == []


# -- 11-13. relations -------------------------------------------------------------------

def riders():
    return graph([
        ob("man", (10, 10, 40, 60)), ob("horse", (0, 30, 60, 90)), ob("hat", (15, 5, 30, 15)),
        ob("dog", (70, 70, 80, 80)), ob("dog", (85, 70, 95, 80)), ob("ball", (72, 85, 76, 89)),
    ], relations=[(0, "riding", 1), (0, "wearing", 2), (3, "chasing", 5), (4, "near", 0),
                  (0, "of", 1)])


def test_relation_between_labels():
    short, mc = short_and_mc("relation_between_labels", riders())
    got = {(qa.objects[0], qa.objects[1]): qa.answer for qa in short}
    assert got == {("man", "horse"): "riding", ("man", "hat"): "wearing"}  # not the dogs, not "of"
    ride = next(qa for qa in mc if qa.answer == "riding")
    assert not {"on", "sitting on", "riding on", "on top of", "near"} & set(ride.options)
    assert "man" in ride.question and "horse" in ride.question


def test_vague_predicates_only_in_short_form():
    g = graph([ob("lamp", (0, 0, 10, 10)), ob("table", (20, 0, 60, 40)), ob("cup", (30, 5, 40, 15))],
              relations=[(0, "near", 1), (2, "on", 1)])
    for name in ("relation_between_labels", "relation_between_boxes"):
        qas = run(name, g, mc=1.0)
        assert {qa.answer: bool(qa.options) for qa in qas} == {"near": False, "on": True}
    # which of these is near the table? the cup is near it as well: not asked
    assert [qa.metadata["predicate"] for qa in run("relation_subject", g)] == ["on"]


def test_relation_distractors_from_dataset():
    freq = Frequencies()
    freq.add(graph([ob("a", (0, 0, 1, 1)), ob("b", (0, 0, 1, 1))],
                   relations=[(0, "behind", 1), (0, "pulling", 1), (0, "under", 1), (0, "next to", 1)]))
    qa = run("relation_between_labels", riders(), seed=3, mc=1.0, n=1, freq=freq)[0]
    assert sorted(o for o in qa.options if o != qa.answer) == ["behind", "pulling", "under"]


def test_relation_between_labels_nothing_to_ask():
    g = graph([ob("dog", (0, 0, 10, 10)), ob("dog", (20, 0, 30, 10)), ob("ball", (40, 0, 50, 10))],
              relations=[(0, "chasing", 2), (1, "near", 2)])
    assert run("relation_between_labels", g) == []
    assert run("relation_between_labels", graph([ob("cup", (0, 0, 10, 10))])) == []


def test_relation_between_boxes():
    short, mc = short_and_mc("relation_between_boxes", riders())
    got = {(qa.metadata["subject_box"], qa.metadata["object_box"]): qa.answer for qa in short}
    assert got[("[0.70, 0.70, 0.80, 0.80]", "[0.72, 0.85, 0.76, 0.89]")] == "chasing"
    assert got[("[0.85, 0.70, 0.95, 0.80]", "[0.10, 0.10, 0.40, 0.60]")] == "near"
    assert len(got) == 4
    for qa in short:
        assert qa.metadata["subject_box"] in qa.question and qa.metadata["object_box"] in qa.question
    chase = next(qa for qa in mc if qa.answer == "chasing")
    assert len(chase.options) == 4


def test_relation_between_boxes_nothing_to_ask():
    no_rel = graph([ob("cup", (0, 0, 10, 10)), ob("table", (0, 5, 50, 50))])
    same_box = graph([ob("man", (0, 0, 10, 10)), ob("person", (0, 0, 10, 10)), ob("hat", (2, 0, 8, 3))],
                     relations=[(0, "wearing", 2), (1, "wearing", 2)])
    assert run("relation_between_boxes", no_rel) == [] and run("relation_between_boxes", same_box) == []


def table_scene():
    return graph([
        ob("table", (0, 50, 100, 100)), ob("cup", (10, 40, 20, 55)), ob("plate", (30, 45, 50, 55)),
        ob("lamp", (80, 0, 90, 30)), ob("chair", (60, 40, 75, 90)), ob("book", (50, 0, 60, 10)),
        ob("clock", (0, 0, 10, 10)), ob("handle", (12, 42, 15, 50)),
        ob("boy", (62, 0, 72, 20)), ob("hat", (64, 0, 70, 5)),
    ], relations=[(1, "on", 0), (2, "on top of", 0), (4, "next to", 0), (1, "has", 7), (8, "wears", 9)])


def test_relation_subject():
    short, mc = short_and_mc("relation_subject", table_scene())
    on = [qa for qa in short + mc if qa.metadata["predicate"] in ("on", "on top of")]
    assert {qa.answer for qa in on} == {"cup", "plate"}
    for qa in on:
        wrong = set(qa.metadata["candidates"]) - {qa.answer}
        # never the other thing on the table, nor the cup's handle (part of a thing on it)
        assert wrong and wrong <= {"lamp", "chair", "book", "clock", "boy", "hat"}
    on_mc = [qa for qa in mc if qa.metadata["predicate"] in ("on", "on top of")]
    assert on_mc and all(len(qa.options) == 4 for qa in on_mc)
    cup = next(qa for qa in short if qa.answer == "cup" and qa.metadata["predicate"] == "on")
    assert "is on the table" in cup.question
    # "wears" reads as a verb; vague "next to" and "has" are not asked
    wears = [qa for qa in short + mc if qa.metadata["predicate"] == "wears"]
    assert wears and all("is wears" not in qa.question and "wears the hat" in qa.question for qa in wears)
    assert {qa.metadata["predicate"] for qa in short + mc} == {"on", "on top of", "wears"}


def test_relation_subject_nothing_to_ask():
    no_rel = graph([ob("cup", (0, 0, 10, 10)), ob("table", (0, 5, 50, 50))])
    # every other label is also on the table
    all_on = graph([ob("table", (0, 50, 100, 100)), ob("cup", (10, 40, 20, 55)),
                    ob("plate", (30, 45, 50, 55))],
                   relations=[(1, "on", 0), (2, "sitting on", 0)])
    assert run("relation_subject", no_rel) == [] and run("relation_subject", all_on) == []


# -- for all --------------------------------------------------------------------------------

def everything():
    """One scene that gives every generator something to ask."""
    objs = kitchen().objects + [
        ob("table", (5, 50, 55, 58), "wooden", "brown"), ob("lamp", (88, 60, 98, 99), "metal")]
    return graph(objs, relations=[(0, "on", 9), (3, "on", 9), (10, "near", 9), (5, "beside", 6)])


def dump(qas):
    return [asdict(qa) for qa in qas]


@pytest.mark.parametrize("name", NAMES)
def test_each_generator_is_registered_and_deterministic(name):
    g = everything()
    a = run(name, g, seed=7, n=5)
    assert a, name
    assert len(a) <= 5
    check_common(a, name)
    assert dump(a) == dump(run(name, g, seed=7, n=5))


def test_seeds_change_output():
    g = everything()
    outs = {json.dumps(dump(run("count_objects", g, seed=s, n=3))) for s in range(6)}
    assert len(outs) > 1


SCRIPT = """
import json, random
from dataclasses import asdict
from evol.provision.base import GENERATORS, GenContext, Frequencies
import tests.test_gen_single_basic as t
g = t.everything()
freq = Frequencies(); freq.add(g)
out = {}
for name in t.NAMES:
    qas = GENERATORS[name].generate([g], random.Random(11), GenContext(mc_ratio=0.5, freq=freq), 6)
    out[name] = [asdict(q) for q in qas]
print(json.dumps(out, sort_keys=True))
"""


def test_output_independent_of_hash_seed():
    outs = []
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert json.loads(outs[0]) and all(json.loads(outs[0])[n] for n in NAMES)
    assert outs[0] == outs[1] == outs[2]


def test_plural():
    assert [sb.plural(w) for w in ("cup", "person", "bus", "cherry", "knife", "traffic light", "sheep")] == [
        "cups", "people", "buses", "cherries", "knives", "traffic lights", "sheep"]


def _pool_by_definition(ctx, category, exclude, need, avoid):
    """_attribute_pool spelled out word by word: the dataset's words that fit, then (when
    fewer than `need`) the vocabulary's, never a vague word or one near an excluded one."""
    from evol.provision.vocab import CATEGORIES, attributes_in_category

    def fits(w):
        cat = attribute_category(w)
        ok = cat == category if category is not None else cat not in avoid
        return ok and w not in sb._VAGUE_ATTRIBUTES and not any(sb._near(w, e) for e in exclude)

    out = [w for w in sorted(ctx.freq.attributes) if fits(w)]
    if len(out) < need:
        for c in (CATEGORIES if category is None else (category,)):
            out += [w for w in attributes_in_category(c) if w not in out and fits(w)]
    return out


def test_distractor_pools_match_their_definition():
    """The pools are remembered and filtered through precomputed near-word sets; whatever
    the dataset and the right answer, they must hold exactly the words the rule gives."""
    from collections import Counter

    from evol.provision.vocab import CATEGORIES, _attribute_table

    rnd = random.Random(3)
    vocab = sorted(_attribute_table())
    odd = ["dark blue", "light blue", "off white", "snow covered", "zorblax", "blue green", "wooden brown"]
    for _ in range(12):
        freq = Frequencies()
        words = rnd.sample(vocab, rnd.randint(0, 150)) + odd[:rnd.randint(0, 7)]
        freq.attributes = Counter({w: rnd.randint(1, 40) for w in words})
        ctx = GenContext(freq=freq)
        for _ in range(40):
            category = rnd.choice([*CATEGORIES, None])
            exclude = rnd.sample(vocab + odd, rnd.randint(0, 4))
            need, avoid = rnd.randint(0, 20), tuple(rnd.sample(CATEGORIES, rnd.randint(0, 3)))
            want = _pool_by_definition(ctx, category, exclude, need, avoid)
            got = sb._attribute_pool(ctx, category, exclude, need, avoid)
            assert got == want, (category, exclude, need, avoid)
            got.append("mutated")  # the caller owns the list it gets
            assert sb._attribute_pool(ctx, category, exclude, need, avoid) == want


def test_box_text_fast_path_matches_the_general_format():
    for box in ([0.1, 0.25, 0.5, 1.0], (0, 1, 0.333, 0.6666), [0.005, 0.015, 0.125, 0.995]):
        assert fmt_box(box) == "[" + ", ".join(f"{v:.2f}" for v in box) + "]"
    assert fmt_box([0.5, 0.25]) == "[0.50, 0.25]"


def test_weighted_draw_is_the_standard_librarys():
    """Rare-first draws skip `random.choices`' overhead but must draw the same index and
    leave the generator in the same state, or seeds files would change."""
    from evol.provision.base import weighted_index

    rnd = random.Random(9)
    for trial in range(300):
        weights = [rnd.choice([1.0, 0.5, 0.05, rnd.random()]) for _ in range(rnd.randint(1, 40))]
        a, b = random.Random(trial), random.Random(trial)
        assert [weighted_index(a, weights) for _ in range(5)] == [
            b.choices(range(len(weights)), weights=weights, k=1)[0] for _ in range(5)]
        assert a.getstate() == b.getstate()
    with pytest.raises(ValueError):
        weighted_index(random.Random(0), [0.0, 0.0])
