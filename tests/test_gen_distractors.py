"""Wrong options are never true of the picture(s).

A multiple-choice distractor, an object offered as "not common", an image offered as the
one "without" something, and a candidate offered as not doing something must all be false
of the image(s): other names for the same thing (human / person / batter), usual parts
(a batter's hand), things tied to the subject by the graph's relations (the bat the batter
swings), and near-synonyms (gray / silver) never stand in as wrong answers.
"""

from __future__ import annotations

import random

import pytest

from evol.provision import generators  # noqa: F401  (registers them all)
from evol.provision.base import GENERATORS, Frequencies, GenContext
from evol.provision.graph import Relation, SceneGraph, SGObject
from evol.provision.vocab import may_name_same, may_show


def sg(image_id: str, objects: list, relations: list = (), boxes: list | None = None) -> SceneGraph:
    """objects: labels or (label, [attributes]); relations: (subject, predicate, object)."""
    obs = []
    for i, o in enumerate(objects):
        label, attrs = (o, []) if isinstance(o, str) else o
        box = boxes[i] if boxes else (10 * i, 10 * i, 10 * i + 8, 10 * i + 8)
        obs.append(SGObject(label=label, box=box, attributes=list(attrs)))
    return SceneGraph(image_id, f"{image_id}.jpg", 200, 200, obs,
                      [Relation(s, p, o) for s, p, o in relations]).validate()


def dataset(*graphs: SceneGraph, extra: tuple[str, ...] = ()) -> Frequencies:
    freq = Frequencies()
    for g in graphs:
        freq.add(g)
    for label in extra:  # names the dataset has elsewhere
        freq.objects[label] += 5
    return freq


def run_all(name: str, graphs: list[SceneGraph], freq: Frequencies, seeds: int = 30, **ctx):
    ctx = {"mc_ratio": 1.0, **ctx}
    return [qa for seed in range(seeds)
            for qa in GENERATORS[name].generate(graphs, random.Random(seed), GenContext(freq=freq, **ctx), 10)]


PEOPLE_AND_PARTS = ("human", "person", "man", "woman", "player", "people", "hand", "head", "arm", "face")


# -- the vocabulary -----------------------------------------------------------------------------

def test_names_that_may_stand_for_the_same_thing():
    assert may_name_same("human", "batter") and may_name_same("batters", "person")
    assert may_name_same("animal", "dogs") and may_name_same("cup", "mug") and may_name_same("car", "automobile")
    assert not may_name_same("dog", "cat") and not may_name_same("bat", "ball") and not may_name_same("cup", "table")
    assert may_show("batter", "hand") and may_show("car", "wheel") and may_show("tree", "leaves")
    assert not may_show("table", "cup") and not may_show("hand", "batter")


# -- multi-image: "not common", "not present" -----------------------------------------------------

def test_common_object_never_offers_another_name_for_the_shared_thing():
    # few objects missing from some image, so the dataset's common names fill the options
    group = [sg("a", ["batter", "bat"]), sg("b", ["batter"]), sg("c", ["batter", "glove"])]
    freq = dataset(*group, extra=PEOPLE_AND_PARTS + ("car", "horse", "kite"))
    freq.objects["human"] += 50  # the dataset's most common name
    qas = run_all("common_object", group, freq)
    assert qas and all(qa.answer == "batter" for qa in qas)
    offered = {o for qa in qas for o in qa.options if o != qa.answer}
    assert offered and not offered & set(PEOPLE_AND_PARTS), offered
    # every wrong option is missing, under any name, from some image
    for o in offered:
        assert not all(any(may_show(l, o) for l in g.label_counts) for g in group), o


def test_select_never_points_at_one_image_when_another_may_fit():
    group = [sg("a", ["batter", "bat"]), sg("b", ["person", "dog"]), sg("c", ["tree", "dog"])]
    freq = dataset(*group)
    has = run_all("image_has_object", group, freq)
    # "which image contains a batter / a person?": each of a, b may show a person
    assert not [qa for qa in has if qa.metadata["label"] in ("batter", "person")]
    assert {qa.metadata["label"] for qa in has} >= {"bat", "tree"}
    lacks = run_all("image_lacks_object", group, freq)
    # "which image has no dog?" -> a; "which image has no person?" would be c, but a "tree"
    # image with no person is fine, while an image with a batter is no answer to it
    for qa in lacks:
        right = group[qa.metadata["answer_image"] - 1]
        assert not any(may_show(l, qa.metadata["label"]) for l in right.label_counts), qa.question


def test_attributed_select_needs_the_other_images_known_without_it():
    red = sg("a", [("car", ["red"])])
    blue = sg("b", [("car", ["blue"])])
    bare = sg("c", [("car", [])])  # its color is unknown: it may be red
    dark_red = sg("d", [("car", ["dark red"])])
    freq = dataset(red, blue, bare, dark_red)
    assert [qa.answer for qa in run_all("image_has_attributed_object", [red, blue], freq)
            if qa.metadata["attribute"] == "red"] != []
    for group in ([red, bare], [red, dark_red], [red, blue, bare]):
        assert not [qa for qa in run_all("image_has_attributed_object", group, freq)
                    if qa.metadata["attribute"] == "red"], [g.image_id for g in group]
        assert not [qa for qa in run_all("image_lacks_attributed_object", group, freq)
                    if qa.metadata["attribute"] == "red" and qa.answer != "Image 1"]


def test_relation_select_ignores_images_that_say_it_in_other_words():
    a = sg("a", ["man", "horse"], [(0, "riding", 1)])
    b = sg("b", ["person", "horse"], [(0, "riding on", 1)])
    c = sg("c", ["man", "horse"], [(0, "next to", 1)])
    freq = dataset(a, b, c)
    has = run_all("image_has_relation", [a, b, c], freq)
    assert not [qa for qa in has if qa.metadata["relation"][1].startswith("riding")]
    assert not [qa for qa in run_all("image_lacks_relation", [a, b, c], freq)
                if qa.metadata["relation"] == ["man", "next to", "horse"] and qa.answer != "Image 3"]


def test_common_attribute_distractors_are_known_false_and_not_near():
    g1 = sg("a", [("car", ["gray", "large"])])
    g2 = sg("b", [("car", ["gray", "silver", "small"])])
    freq = dataset(g1, g2)
    qas = run_all("common_attribute", [g1, g2], freq)
    assert qas and {qa.answer for qa in qas} == {"gray"}
    offered = {o for qa in qas for o in qa.options if o != "gray"}
    assert "silver" not in offered and "dark gray" not in offered and "light gray" not in offered
    assert offered, "the other colors of the category are known to be false of the car"


# -- single image ------------------------------------------------------------------------------

def ballgame() -> SceneGraph:
    boxes = [(50, 40, 90, 160), (80, 30, 130, 60), (140, 45, 146, 51), (55, 40, 75, 55), (10, 100, 40, 160),
             (150, 120, 190, 190), (0, 160, 200, 200)]
    return sg("game", ["batter", "bat", "ball", "helmet", "catcher", "bench", "grass"],
              [(0, "about to hit", 2), (0, "holding", 1), (0, "wearing", 3), (4, "behind", 0),
               (5, "on", 6)], boxes=boxes)


def test_relation_subject_never_offers_what_is_tied_to_the_subject():
    g = ballgame()
    freq = dataset(g)
    qas = [qa for qa in run_all("relation_subject", [g], freq, mc_ratio=0.5)
           if qa.metadata["predicate"] == "about to hit"]
    assert qas and all(qa.answer == "batter" for qa in qas)
    for qa in qas:
        wrong = set(qa.metadata["candidates"]) - {"batter"}
        # the bat the batter holds, the helmet it wears, the catcher (a person), the ball itself
        assert not wrong & {"bat", "helmet", "catcher", "ball"}, qa.question
        assert wrong <= {"bench", "grass"}


def test_relation_subject_never_offers_a_part_or_the_whole():
    g = sg("k", ["man", "hand", "cup", "lamp", "sofa"], [(0, "holding", 2), (0, "has", 1)],
           boxes=[(20, 20, 80, 180), (60, 90, 75, 105), (70, 85, 85, 100), (150, 10, 170, 40), (100, 120, 190, 190)])
    qas = [qa for qa in run_all("relation_subject", [g], dataset(g)) if qa.metadata["predicate"] == "holding"]
    assert qas and all("hand" not in qa.metadata["candidates"] for qa in qas)


def test_object_question_never_offers_another_name_for_the_answer():
    g = sg("s", [("batter", ["swinging"]), ("bat", ["wooden"]), "person", "hand", "tree", "car", "dog"],
           [(0, "holding", 1)])
    freq = dataset(g, extra=("human", "player", "man"))
    qas = [qa for qa in run_all("sg_object_qa", [g], freq) if qa.answer == "batter"]
    assert qas
    for qa in qas:
        assert not set(qa.options) & {"person", "human", "player", "man", "hand"}, qa.options


def test_frequency_rivals_are_never_other_names_for_the_answer():
    # 3 men and 2 people: "person" may count the men too, so it is no rival of "man"
    g = sg("f", ["man", "man", "man", "person", "person", "cup"])
    freq = dataset(g)
    most = run_all("most_frequent_object", [g], freq)
    assert {qa.answer for qa in most} == {"man", "person"}  # each beats the cup
    least = run_all("least_frequent_object", [g], freq)
    assert least and all(qa.answer == "cup" for qa in least)
    for qa in most + least:
        assert not [c for c in qa.metadata["labels"] if c != qa.answer and may_name_same(c, qa.answer)]
    # "fewest": an answer that other names may count more of is never asked
    g2 = sg("f2", ["person", "man", "man", "cup", "cup", "cup"])  # up to 3 people, 3 cups
    assert not [qa for qa in run_all("least_frequent_object", [g2], dataset(g2)) if qa.answer == "person"]


def test_depth_pairs_never_pit_two_names_for_one_thing():
    import numpy as np

    g = sg("d", ["man", "person", "tree"], boxes=[(0, 0, 50, 50), (60, 0, 110, 50), (120, 0, 170, 50)])
    depth = np.zeros((200, 200), dtype=np.uint8)
    depth[0:50, 0:50], depth[0:50, 60:110], depth[0:50, 120:170] = 200, 120, 40
    g.depth = depth
    qas = run_all("closer_object", [g], dataset(g)) + run_all("farther_object", [g], dataset(g))
    assert qas
    assert all(set(qa.objects) != {"man", "person"} for qa in qas)
