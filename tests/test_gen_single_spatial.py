"""Spatial generators on small hand-made scene graphs whose right answers are known.

Depth convention under test: HIGHER depth values are CLOSER to the camera.
"""

from __future__ import annotations

import random
import re
import time

import numpy as np
import pytest

from evol.provision.base import GENERATORS, GenContext
from evol.provision.generators import single_spatial  # noqa: F401  (registers the generators)
from evol.provision.graph import SceneGraph, SGObject

W, H = 40, 30
POINT = re.compile(r"\((\d\.\d\d), (\d\.\d\d)\)")
ALL = ["point_same_object", "point_different_object", "closer_point", "farther_point",
       "closer_object", "farther_object", "closer_to_anchor", "farther_to_anchor"]


def rect(x1, y1, x2, y2, w=W, h=H):
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def graph(objects, masks=None, depth=None, w=W, h=H) -> SceneGraph:
    """objects: (label, box) pairs."""
    obs = [SGObject(label=label, box=box) for label, box in objects]
    return SceneGraph("t", "t.jpg", w, h, obs, [], depth, masks).validate()


def run(name, g, seed=0, n=6, **ctx):
    return GENERATORS[name].generate([g], random.Random(seed), GenContext(**ctx), n)


def points(question: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in POINT.findall(question)]


def pixel(p, w=W, h=H):
    """The pixel a two-decimal point names (grid value k -> floor(k * size / 100))."""
    return (round(p[0] * 100) * w) // 100, (round(p[1] * 100) * h) // 100


def test_all_registered():
    for name in ALL:
        assert name in GENERATORS and not GENERATORS[name].multi


# -- 14-15: points on the same object -----------------------------------------------------------
def two_boxes():
    objs = [("box", (2, 2, 18, 13)), ("ball", (21, 14, 39, 29))]
    return graph(objs, masks=[rect(2, 2, 18, 13), rect(21, 14, 39, 29)])


@pytest.mark.parametrize("name", ["point_same_object", "point_different_object"])
def test_point_object_answers_match_the_masks(name):
    g = two_boxes()
    owner = g.instance_map
    seen = 0
    for seed in range(20):
        for qa in run(name, g, seed=seed, mc_ratio=0.5):
            seen += 1
            pts = points(qa.question)
            anchor = tuple(qa.metadata["anchor_point"])
            assert len(pts) == 3 and anchor in pts
            p, q = [x for x in pts if x != anchor]
            answer = points(qa.answer)[0]
            assert answer in (p, q)
            other = q if answer == p else p
            a_own = owner[pixel(anchor)[1], pixel(anchor)[0]]
            ans_own = owner[pixel(answer)[1], pixel(answer)[0]]
            oth_own = owner[pixel(other)[1], pixel(other)[0]]
            assert a_own >= 0
            if name == "point_same_object":
                assert ans_own == a_own and oth_own != a_own
            else:
                assert ans_own != a_own and oth_own == a_own
            assert qa.skills and qa.objects and qa.metadata["object_label"] in ("box", "ball")
            if qa.options:
                assert sorted(points(o)[0] for o in qa.options) == sorted([p, q])
    assert seen >= 20


def test_points_avoid_overlaps_and_follow_the_instance_map():
    # a small "cup" mask lies on a big "table" mask: points on the overlap are ambiguous
    masks = [rect(0, 0, 40, 30), rect(10, 8, 20, 18)]
    g = graph([("table", (0, 0, 40, 30)), ("cup", (10, 8, 20, 18))], masks=masks)
    for seed in range(15):
        for qa in run("point_same_object", g, seed=seed):
            anchor = tuple(qa.metadata["anchor_point"])
            assert anchor in points(qa.question)
            x, y = pixel(anchor)
            label = qa.metadata["object_label"]
            assert g.instance_map[y, x] == (0 if label == "table" else 1)
            for p in points(qa.question):
                px, py = pixel(p)
                assert int(masks[0][py, px]) + int(masks[1][py, px]) == 1, "point on an overlap"


def test_point_object_needs_masks_and_somewhere_exclusive():
    g = graph([("box", (2, 2, 18, 13))])
    assert run("point_same_object", g) == [] and run("point_different_object", g) == []
    # every object covers exactly the same pixels: no point belongs to just one of them
    same = [rect(0, 0, 40, 30)] * 3
    g = graph([("a", (0, 0, 40, 30)), ("b", (0, 0, 40, 30)), ("c", (0, 0, 40, 30))], masks=same)
    assert run("point_same_object", g) == []


def test_point_object_mc_and_short_forms():
    g = two_boxes()
    mc = run("point_same_object", g, mc_ratio=1.0)
    assert mc and all(len(qa.options) == 2 and qa.answer in qa.options for qa in mc)
    short = run("point_same_object", g, mc_ratio=0.0)
    assert short and all(qa.options == [] for qa in short)


# -- 16-17: points closer / farther ----------------------------------------------------------
def split_depth(left: int, right: int) -> np.ndarray:
    d = np.zeros((H, W), dtype=np.uint8)
    d[:, :20] = left
    d[:, 20:] = right
    return d


def test_closer_point_uses_higher_value_as_closer():
    # left half 200 (near), right half 50 (far): the reference's inversion would fail here
    g = graph([], depth=split_depth(200, 50))
    near = run("closer_point", g, n=8)
    far = run("farther_point", g, n=8)
    assert near and far
    for qa in near:
        assert points(qa.answer)[0][0] < 0.5, qa.question
        assert qa.metadata["closer_point"][0] < 0.5
    for qa in far:
        assert points(qa.answer)[0][0] >= 0.5, qa.question
    for qa in near + far:
        p, q = points(qa.question)
        assert points(qa.answer)[0] in (p, q)
        assert (p[0] < 0.5) != (q[0] < 0.5)  # one point on each side


def test_point_depth_names_the_objects_under_the_points():
    halves = [rect(0, 0, 20, 30), rect(20, 0, 40, 30)]
    g = graph([("wall", (0, 0, 20, 30)), ("sea", (20, 0, 40, 30))], masks=halves, depth=split_depth(30, 220))
    qas = run("closer_point", g, n=4)
    assert qas
    for qa in qas:
        assert sorted(qa.objects) == ["sea", "wall"]
        assert points(qa.answer)[0][0] >= 0.5  # the sea half is the near one here


def test_point_depth_gap_threshold():
    g = graph([], depth=split_depth(100, 90))  # 10 apart
    assert run("closer_point", g, depth_gap=20) == []
    assert run("farther_point", g, depth_gap=20) == []
    assert run("closer_point", g, depth_gap=10)
    flat = graph([], depth=np.full((H, W), 128, dtype=np.uint8))
    assert run("closer_point", flat, depth_gap=1) == []
    assert run("closer_point", graph([])) == []  # no depth at all


# -- 18-19: objects closer / farther ----------------------------------------------------------
def depth_scene():
    """dog at 200 (nearest), cat at 190, car at 60 (farthest); dog-cat gap is only 10."""
    boxes = [("dog", (0, 0, 10, 10)), ("cat", (12, 0, 22, 10)), ("car", (25, 0, 40, 30))]
    masks = [rect(*b) for _, b in boxes]
    d = np.full((H, W), 5, dtype=np.uint8)
    for m, v in zip(masks, (200, 190, 60)):
        d[m] = v
    return graph(boxes, masks=masks, depth=d)


def test_closer_and_farther_object():
    g = depth_scene()
    assert g.object_depths == [200, 190, 60]
    for seed in range(10):
        near = run("closer_object", g, seed=seed)
        far = run("farther_object", g, seed=seed)
        assert len(near) == 2 and len(far) == 2  # dog-car and cat-car; dog-cat is under the gap
        for qa in near:
            assert "car" in qa.question and qa.answer in ("dog", "cat")
        for qa in far:
            assert qa.answer == "car"
        for qa in near + far:
            assert {"dog", "cat"} != set(qa.objects)


def test_object_depth_gap_and_missing_depth():
    g = depth_scene()
    assert run("closer_object", g, depth_gap=150) == []
    assert len(run("closer_object", g, depth_gap=5, n=10)) == 3
    no_depth = graph([("dog", (0, 0, 10, 10)), ("car", (25, 0, 40, 30))])
    assert run("closer_object", no_depth) == [] and run("farther_to_anchor", no_depth) == []


def test_duplicate_labels_are_named_with_boxes():
    boxes = [("car", (0, 0, 10, 10)), ("car", (20, 10, 40, 30))]
    d = np.zeros((H, W), dtype=np.uint8)
    d[0:10, 0:10] = 240
    d[10:30, 20:40] = 30
    g = graph(boxes, masks=[rect(*b) for _, b in boxes], depth=d)
    (qa,) = run("closer_object", g, mc_ratio=1.0)
    assert qa.answer == "car at [0.00, 0.00, 0.25, 0.33]"
    assert "car at [0.50, 0.33, 1.00, 1.00]" in qa.question
    assert sorted(qa.options) == sorted(["car at [0.00, 0.00, 0.25, 0.33]", "car at [0.50, 0.33, 1.00, 1.00]"])


# -- 20-21: closer / farther to an anchor in depth ---------------------------------------------
def anchor_scene(values):
    labels = ["lamp", "cup", "vase", "book"][: len(values)]
    boxes = [(lab, (10 * k, 0, 10 * k + 10, 30)) for k, lab in enumerate(labels)]
    masks = [rect(*b) for _, b in boxes]
    d = np.zeros((H, W), dtype=np.uint8)
    for m, v in zip(masks, values):
        d[m] = v
    return graph(boxes, masks=masks, depth=d)


def test_closer_and_farther_to_anchor():
    values = [100, 110, 200, 0]
    g = anchor_scene(values)
    labels = [ob.label for ob in g.objects]
    total = 0
    for name in ("closer_to_anchor", "farther_to_anchor"):
        for seed in range(10):
            for qa in run(name, g, seed=seed, n=4):
                total += 1
                c = qa.metadata["anchor"]
                i, j = qa.metadata["objects"]
                di, dj = abs(values[i] - values[c]), abs(values[j] - values[c])
                assert abs(di - dj) >= 20
                want = (i if di < dj else j) if name == "closer_to_anchor" else (i if di > dj else j)
                assert qa.answer == labels[want], qa.question
                assert f"the {labels[c]}" in qa.question
    assert total > 0
    # lamp anchor: cup (10 away) is nearer in depth than vase (100 away)
    qas = [qa for seed in range(30) for qa in run("closer_to_anchor", g, seed=seed)
           if qa.metadata["anchor"] == 0 and sorted(qa.metadata["objects"]) == [1, 2]]
    assert qas and all(qa.answer == "cup" for qa in qas)


def test_anchor_difference_of_differences_threshold():
    g = anchor_scene([100, 110, 125])  # best difference of differences is 15
    assert run("closer_to_anchor", g, depth_gap=20) == []
    assert run("farther_to_anchor", g, depth_gap=20) == []
    assert run("closer_to_anchor", g, depth_gap=15)
    assert run("closer_to_anchor", anchor_scene([100, 200])) == []  # needs three objects


# -- common ---------------------------------------------------------------------------------------
def full_scene():
    g = depth_scene()
    return g


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output(name):
    g = full_scene()
    a = run(name, g, seed=3)
    b = run(name, full_scene(), seed=3)
    assert a and a == b
    for qa in a:
        assert qa.generator == name and qa.question.strip() and qa.answer
        assert qa.skills and isinstance(qa.metadata, dict) and qa.metadata


@pytest.mark.parametrize("name", ALL)
def test_question_phrasings_vary(name):
    g = full_scene()
    texts = {POINT.sub("P", qa.question) for seed in range(40) for qa in run(name, g, seed=seed, n=2)}
    for lab in ("dog", "cat", "car"):
        texts = {t.replace(lab, "X") for t in texts}
    assert len(texts) >= 4


def test_respects_n_and_nothing_to_ask_is_prompt():
    g = full_scene()
    for name in ALL:
        assert len(run(name, g, n=1)) <= 1
        assert run(name, g, n=0) == []
    # 640x480, 30 identical masks, flat depth: nothing can be asked, and that is found fast
    w, h = 640, 480
    mask = np.ones((h, w), dtype=bool)
    big = graph([(f"o{k}", (0, 0, w, h)) for k in range(30)], masks=[mask] * 30,
                depth=np.full((h, w), 90, dtype=np.uint8), w=w, h=h)
    t0 = time.perf_counter()
    for name in ALL:
        assert run(name, big) == []
    assert time.perf_counter() - t0 < 1.0
