"""The 14 multi-image generators on small hand-made image groups whose answers are known."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from evol.provision.base import GENERATORS, Frequencies, GenContext
from evol.provision.generators import multi as M
from evol.provision.graph import Relation, SceneGraph, SGObject

REPO = Path(__file__).resolve().parent.parent

MULTI_NAMES = [
    "image_has_object", "image_lacks_object", "image_has_attributed_object",
    "image_lacks_attributed_object", "image_has_relation", "image_lacks_relation",
    "image_most_object", "image_least_object", "total_object_count", "total_attributed_count",
    "common_object", "common_attribute", "compare_attributes", "compare_relations",
]


def sg(image_id: str, objects: list, relations: list = ()) -> SceneGraph:
    """objects: labels or (label, [attributes]); relations: (subject, predicate, object) indices."""
    obs = []
    for i, o in enumerate(objects):
        label, attrs = (o, []) if isinstance(o, str) else o
        obs.append(SGObject(label=label, box=(i, i, i + 10, i + 10), attributes=list(attrs)))
    rels = [Relation(s, p, o) for s, p, o in relations]
    return SceneGraph(image_id=image_id, image=f"{image_id}.jpg", width=200, height=200,
                      objects=obs, relations=rels).validate()


def run(name: str, graphs, *, n: int = 50, seed: int = 0, **ctx_kw):
    return GENERATORS[name].generate(graphs, random.Random(seed), GenContext(**ctx_kw), n)


def answers(qas, key: str = "label") -> dict:
    return {qa.metadata[key] if isinstance(qa.metadata[key], str) else tuple(qa.metadata[key]): qa.answer
            for qa in qas}


def image_options(m: int) -> list[str]:
    return [f"Image {k}" for k in range(1, m + 1)]


# -- registry and shape ---------------------------------------------------------------------


def test_all_fourteen_registered_as_multi_with_four_phrasings():
    for name in MULTI_NAMES:
        gen = GENERATORS[name]
        assert gen.multi is True, name
        assert gen.skills, name
        assert len(set(gen.phrasings)) >= 4, name
    assert sorted(n for n, g in GENERATORS.items() if g.multi and isinstance(g, M.MultiGenerator)) == sorted(MULTI_NAMES)


def test_plural_and_article():
    assert [M.plural(w) for w in ["cat", "bus", "person", "man", "tennis ball", "cherry", "boy", "knife"]] == \
        ["cats", "buses", "people", "men", "tennis balls", "cherries", "boys", "knives"]
    assert M.with_article("apple") == "an apple" and M.with_article("red car") == "a red car"


# -- select ---------------------------------------------------------------------------------


def test_image_has_object():
    g = [sg("a", ["cat", "dog"]), sg("b", ["dog"]), sg("c", ["dog", "cup"])]
    qas = run("image_has_object", g, mc_ratio=1.0)
    assert answers(qas) == {"cat": "Image 1", "cup": "Image 3"}  # dog is everywhere: no question
    for qa in qas:
        assert qa.options == image_options(3)
        assert qa.metadata["label"] in qa.question and qa.objects == [qa.metadata["label"]]
    cat = next(q for q in qas if q.metadata["label"] == "cat")
    assert cat.metadata["counts"] == [1, 0, 0] and cat.metadata["answer_image"] == 1


def test_image_lacks_object():
    g = [sg("a", ["cat", "dog"]), sg("b", ["dog"]), sg("c", ["cat", "dog", "cup"])]
    qas = run("image_lacks_object", g, mc_ratio=0.0)
    # cat is missing only from image 2; cup is missing from two images; dog from none
    assert answers(qas) == {"cat": "Image 2"}
    assert qas[0].options == []


def test_image_has_and_lacks_attributed_object():
    g = [sg("a", [("car", ["red"])]), sg("b", [("car", ["blue"])]), sg("c", [("car", ["blue"]), "tree"])]
    has = run("image_has_attributed_object", g, mc_ratio=1.0)
    assert {(q.metadata["attribute"], q.metadata["label"]): q.answer for q in has} == {("red", "car"): "Image 1"}
    assert "red car" in has[0].question and has[0].options == image_options(3)
    lacks = run("image_lacks_attributed_object", g, mc_ratio=1.0)
    assert {(q.metadata["attribute"], q.metadata["label"]): q.answer for q in lacks} == {("blue", "car"): "Image 1"}
    assert lacks[0].metadata["counts"] == [0, 1, 1]


def test_image_has_and_lacks_relation():
    g = [sg("a", ["man", "horse"], [(0, "riding", 1)]),
         sg("b", ["man", "horse"], [(0, "next to", 1)]),
         sg("c", ["horse", "man"], [(1, "next to", 0)])]
    has = run("image_has_relation", g, mc_ratio=1.0)
    assert answers(has, "relation") == {("man", "riding", "horse"): "Image 1"}
    assert "man riding a horse" in has[0].question and has[0].options == image_options(3)
    lacks = run("image_lacks_relation", g)
    assert answers(lacks, "relation") == {("man", "next to", "horse"): "Image 1"}


def test_image_most_and_least_object():
    g = [sg("a", ["cat"] * 3 + ["dog"] + ["cup"]),
         sg("b", ["cat", "dog", "dog"]),
         sg("c", ["cat", "dog", "dog", "batter", "batter"])]
    most = run("image_most_object", g, mc_ratio=1.0)
    # cat: 3,1,1 -> image 1; dog: 1,2,2 tie; cup in one image only; batter is not countable
    assert answers(most) == {"cat": "Image 1"}
    assert most[0].metadata["counts"] == [3, 1, 1] and most[0].options == image_options(3)
    assert "cats" in most[0].question
    least = run("image_least_object", g)
    # cat: min 1 tied; dog: 1,2,2 -> image 1; cup is absent from two images
    assert answers(least) == {"dog": "Image 1"}


def test_least_needs_the_object_in_every_image():
    g = [sg("a", ["cat", "cat"]), sg("b", ["cat", "cat", "cat"]), sg("c", ["dog"])]
    assert run("image_least_object", g) == []
    assert answers(run("image_most_object", g)) == {"cat": "Image 2"}


def test_select_options_follow_group_size():
    g = [sg("a", ["cat"]), sg("b", ["dog"])]
    qas = run("image_has_object", g, mc_ratio=1.0, n_choices=4)
    assert answers(qas) == {"cat": "Image 1", "dog": "Image 2"}
    assert all(q.options == ["Image 1", "Image 2"] for q in qas)
    g4 = g + [sg("c", ["dog"]), sg("d", ["dog", "cup"])]
    qas = run("image_has_object", g4, mc_ratio=1.0)
    assert all(q.options == image_options(4) for q in qas)
    assert answers(qas) == {"cat": "Image 1", "cup": "Image 4"}


# -- aggregate ------------------------------------------------------------------------------


def test_total_object_count():
    g = [sg("a", ["cat", "cat", "batter"]), sg("b", ["cat", "cat", "cat"]), sg("c", ["tree"])]
    qas = run("total_object_count", g, mc_ratio=1.0)
    assert answers(qas) == {"cat": "5", "tree": "1"}
    for qa in qas:
        assert len(qa.options) == 4 and len(set(qa.options)) == 4 and qa.answer in qa.options
        assert all(int(o) >= 1 for o in qa.options)
    cat = next(q for q in qas if q.metadata["label"] == "cat")
    assert cat.metadata["counts"] == [2, 3, 0] and "cats" in cat.question
    words = run("total_object_count", g, mc_ratio=0.0, number_words=True)
    assert answers(words) == {"cat": "five", "tree": "one"} and all(q.options == [] for q in words)


def test_total_attributed_count():
    g = [sg("a", [("cat", ["black"]), ("cat", ["black"]), ("cat", ["white"])]),
         sg("b", [("cat", ["black", "black"]), ("batter", ["tall"])])]
    qas = run("total_attributed_count", g, mc_ratio=1.0, n_choices=3)
    got = {(q.metadata["attribute"], q.metadata["label"]): q.answer for q in qas}
    assert got == {("black", "cat"): "3", ("white", "cat"): "1"}
    for qa in qas:
        assert len(qa.options) == 3 and qa.answer in qa.options
    black = next(q for q in qas if q.metadata["attribute"] == "black")
    assert black.metadata["counts"] == [2, 1]
    assert "black" in black.question and "cats" in black.question


def test_common_object_unique():
    g = [sg("a", ["cat", "dog"]), sg("b", ["cat", "cup"]), sg("c", ["tree", "cat"])]
    sa = run("common_object", g, mc_ratio=0.0)
    assert [(q.answer, q.options) for q in sa] == [("cat", [])]
    mc = run("common_object", g, mc_ratio=1.0)
    assert len(mc) == 1 and mc[0].answer == "cat"
    assert sorted(mc[0].options) == ["cat", "cup", "dog", "tree"]


def test_common_object_several_shared_needs_multiple_choice():
    g = [sg("a", ["cat", "dog"]), sg("b", ["dog", "cat"])]
    # two shared labels and no label missing anywhere: no unambiguous question at all
    assert run("common_object", g, mc_ratio=0.0) == []
    assert run("common_object", g, mc_ratio=1.0) == []
    freq = Frequencies(objects=Counter({"cat": 5, "dog": 5, "car": 3, "tree": 2, "cup": 1}))
    qas = run("common_object", g, mc_ratio=0.0, freq=freq)  # short answer impossible: MC instead
    assert sorted(q.answer for q in qas) == ["cat", "dog"]
    for qa in qas:
        assert len(qa.options) == 4 and qa.answer in qa.options
        other = "dog" if qa.answer == "cat" else "cat"
        assert other not in qa.options  # the one other right answer never shows as a distractor


def test_common_attribute():
    g = [sg("a", [("car", ["red", "metal"]), ("tree", ["green"])]),
         sg("b", [("car", ["small", "red"]), ("tree", ["tall"])])]
    sa = run("common_attribute", g, mc_ratio=0.0)
    assert [(q.metadata["label"], q.answer, q.options) for q in sa] == [("car", "red", [])]
    mc = run("common_attribute", g, mc_ratio=1.0)
    assert len(mc) == 1 and mc[0].answer == "red" and len(mc[0].options) == 4
    assert mc[0].metadata["per_image"] == [["red", "metal"], ["small", "red"]]


def test_common_attribute_two_shared_only_as_choice():
    g = [sg("a", [("car", ["red", "metal"])]), sg("b", [("car", ["metal", "red"])])]
    sa = run("common_attribute", g, mc_ratio=0.0)
    assert sorted(q.answer for q in sa) == ["metal", "red"]
    for qa in sa:
        assert len(qa.options) == 4
        assert ({"metal", "red"} - {qa.answer}).isdisjoint(qa.options)


# -- compare --------------------------------------------------------------------------------


def test_compare_attributes():
    g = [sg("a", [("car", ["red", "wooden"]), "tree"]), sg("b", ["tree", ("car", ["blue"])])]
    sa = run("compare_attributes", g, mc_ratio=0.0)
    assert [(q.metadata["label"], q.answer) for q in sa] == [("car", "Image 1: red, wooden; Image 2: blue")]
    mc = run("compare_attributes", g, mc_ratio=1.0)
    assert len(mc[0].options) == 4 and len(set(mc[0].options)) == 4
    assert mc[0].answer in mc[0].options
    assert all(o.startswith("Image 1: ") and "; Image 2: " in o for o in mc[0].options)


def test_compare_attributes_needs_one_object_per_image():
    g = [sg("a", [("car", ["red"]), ("car", ["blue"])]), sg("b", [("car", ["blue"])])]
    assert run("compare_attributes", g) == []


def test_compare_relations():
    g = [sg("a", ["man", "horse", "tree"], [(0, "riding", 1), (2, "behind", 1)]),
         sg("b", ["horse", "man"], [(1, "next to", 0), (1, "looking at", 0)])]
    qas = run("compare_relations", g, mc_ratio=0.0)
    assert [(q.metadata["subject"], q.metadata["object"], q.answer) for q in qas] == \
        [("man", "horse", "Image 1: riding; Image 2: next to, looking at")]
    mc = run("compare_relations", g, mc_ratio=1.0)
    assert len(mc[0].options) == 4 and mc[0].answer in mc[0].options and len(set(mc[0].options)) == 4


# -- bounded, balanced, deterministic -------------------------------------------------------

EMPTY_GROUPS = [
    [sg("a", []), sg("b", [])],
    [sg("a", []), sg("b", []), sg("c", []), sg("d", [])],
]


@pytest.mark.parametrize("name", MULTI_NAMES)
def test_nothing_to_ask_returns_empty_fast(name):
    for group in EMPTY_GROUPS:
        t = time.perf_counter()
        assert run(name, group, n=1000) == []
        assert time.perf_counter() - t < 0.1
    single = [sg("a", [("cat", ["red"]), "dog"], [(0, "near", 1)])]
    assert run(name, single, n=1000) == []  # a group needs two images or more


def rich_group(seed: int = 3, m: int = 3) -> list[SceneGraph]:
    r = random.Random(seed)
    labels = ["cat", "dog", "cup", "car", "tree", "man", "horse", "bottle", "batter"]
    attrs = ["red", "blue", "black", "wooden", "small", "open", "shiny"]
    preds = ["on", "next to", "holding", "behind", "riding"]
    out = []
    for k in range(m):
        obs = [(r.choice(labels), r.sample(attrs, r.randint(0, 2))) for _ in range(r.randint(4, 9))]
        rels = [(r.randrange(len(obs)), r.choice(preds), r.randrange(len(obs))) for _ in range(6)]
        out.append(sg(f"img{k}", obs, rels))
    return out


@pytest.mark.parametrize("name", MULTI_NAMES)
def test_bounded_when_n_exceeds_supply(name):
    group = rich_group()
    t = time.perf_counter()
    qas = run(name, group, n=1000, mc_ratio=0.5)
    assert time.perf_counter() - t < 0.1
    assert len(qas) < 1000
    keys = [json.dumps(q.metadata, sort_keys=True) for q in qas]
    assert len(keys) == len(set(keys))  # drawn without replacement
    for qa in qas:
        assert qa.generator == name and qa.question and qa.answer
        assert not qa.options or qa.answer in qa.options


def test_rich_group_yields_from_most_generators():
    groups = [rich_group(s) for s in range(8)]
    produced = {name: sum(len(run(name, g, n=5)) for g in groups) for name in MULTI_NAMES}
    assert sum(1 for v in produced.values() if v) >= 10, produced


def test_same_seed_same_output_and_phrasings_vary():
    group = rich_group()
    for name in MULTI_NAMES:
        a = run(name, group, n=20, seed=11)
        b = run(name, group, n=20, seed=11)
        assert a == b, name
    g = [sg("a", ["cat"]), sg("b", ["dog"])]
    questions = {q.question for s in range(60) for q in run("image_has_object", g, n=1, seed=s)}
    assert len({q.replace("a cat", "X").replace("a dog", "X") for q in questions}) >= 4


def test_rare_objects_are_favoured():
    g = [sg("a", ["cat"]), sg("b", ["cup"])]
    freq = Frequencies(objects=Counter({"cat": 10000, "cup": 0}))
    first = Counter(run("image_has_object", g, n=1, seed=s, freq=freq)[0].metadata["label"] for s in range(200))
    assert first["cup"] > 150


_SCRIPT = """
import json, random, sys
sys.path.insert(0, {tests!r})
from test_gen_multi import MULTI_NAMES, rich_group
from evol.provision.base import GENERATORS, GenContext
from dataclasses import asdict
out = {{}}
for s in range(3):
    group = rich_group(s)
    for name in MULTI_NAMES:
        qas = GENERATORS[name].generate(group, random.Random(5), GenContext(mc_ratio=0.5), 6)
        out[f"{{s}}/{{name}}"] = [asdict(q) for q in qas]
print(json.dumps(out, sort_keys=True))
"""


def _dump(hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    script = _SCRIPT.format(tests=str(Path(__file__).resolve().parent))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_output_independent_of_hash_seed():
    a, b = _dump("1"), _dump("4242")
    assert a == b
    assert sum(len(v) for v in json.loads(a).values()) > 20


def test_relation_phrases_read_as_english():
    from evol.provision.generators.multi import _with_relation

    assert _with_relation("cat", "has", "nose") == "cat that has a nose"
    assert _with_relation("man", "riding", "horse") == "man riding a horse"
    assert _with_relation("cup", "on", "table") == "cup on a table"
    assert _with_relation("dog", "is near", "car") == "dog that is near a car"
    g = [sg("a", ["cat", "nose"], [(0, "has", 1)]), sg("b", ["cat", "nose"], []), sg("c", ["cat", "nose"], [])]
    assert "a cat that has a nose" in run("image_has_relation", g)[0].question
