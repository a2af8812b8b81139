"""The English of every generator: each template rendered, each text checked against known faults.

Every generator runs over the shipped scene graphs (seeds/scene_graphs) and over small
graphs built here to reach each template's branches: one and many objects of a label,
plural names (people, buses, knives), every attribute category, predicates of each form
("on", "sitting on", "has", "walks on", "is near"), short answer and multiple choice, digits
and number words, groups of two, three and four images. Every template of every generator
must be rendered at least once, and no question, answer or option may show a known fault.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from evol.provision import generators  # noqa: F401  (registers them all)
from evol.provision.base import GENERATORS, Frequencies, GenContext
from evol.provision.graph import Relation, SceneGraph, SGObject

REPO = Path(__file__).resolve().parent.parent
GRAPHS = REPO / "seeds" / "scene_graphs"

# -- the known faults -----------------------------------------------------------------------

_NUMBERS = r"(?:[02-9]|\d{2,}|zero|two|three|four|five|six|seven|eight|nine|ten)"
_NOUNS = r"(?:object|image|picture|item|thing|time|instance)"
_FINITE = (r"(?:is|are|has|have|does|walks|sits|stands|holds|wears|rides|hangs|looks|leans|lies|grows|eats"
           r"|carries|hits|throws|covers|contains)")

# (name, pattern): a text showing the pattern has the fault, whatever the group size
FAULTS: list[tuple[str, re.Pattern]] = [(name, re.compile(rx, re.I)) for name, rx in [
    ("'in all 2' for two images", r"\bin all (?:2|two)\b"),
    ("'all 2 images'", r"\ball (?:2|two) (?:images|pictures)\b"),
    ("the same word twice in a row", r"\b([a-z]+) \1\b"),
    ("two articles in a row", r"\b(?:the|a|an) (?:the|a|an)\b"),
    ("a reference repeats its own word",
     r"\b(?!that\b|this\b|there\b)([a-z]{4,})\b(?: [a-z]+){0,3} that (?:is |are )?\1\b"),
    ("'does it have' after activity, state, mood or material",
     r"\b(?:what|which) (?:activity|state|mood|material)\b[^?]*\bhave\?"),
    ("'a' before a vowel sound", r"\ba (?!uni|use|usu|uti|ute|uro|eu|one|once|ewe)[aeiou]"),
    ("'an' before a consonant sound",
     r"\ban (?:(?!hour|honest|honou?r|heir)[b-df-hj-np-tv-z]|uni|use|usu|uti|eu|one\b)"),
    ("one with a plural noun", r"\b(?:1|one) " + _NOUNS + r"s\b"),
    ("a number above one with a singular noun", r"\b" + _NUMBERS + r" " + _NOUNS + r"\b(?!s| points?\b)"),
    ("a verb after 'is'", r"\b(?:is|are) " + _FINITE + r"\b"),
    ("'have' after a singular subject", r"\b(?:which one|which of these|that|what) have\b"),
    ("two spaces", r"\s{2}"),
    ("a space before punctuation", r"\s[?.,:;!]"),
    ("an unfilled slot", r"[{}]"),
    ("an empty value", r"\bNone\b|\[\]|\(\)|''|\"\""),
    ("space at either end", r"^\s|\s$"),
]]
# faults that depend on how many images the question is about
FAULTS_FOR_TWO = [(name, re.compile(rx, re.I)) for name, rx in [
    ("'all' of two images", r"\ball (?:of )?(?:the |these )?(?:images|pictures)\b"),
    ("'but one' or 'except one' of two images", r"\b(?:but|except) one\b"),
    ("'any other' of two images", r"\bany other\b"),
    ("'every one of' two images", r"\bevery one of\b"),
]]
FAULTS_FOR_MANY = [("'both' for more than two images", re.compile(r"\bboth\b", re.I))]


def faults_in(text: str, group_size: int = 1, *, sentence: bool = True) -> list[str]:
    """The names of the known faults the text shows; a `sentence` must also start with a
    capital letter and end with "?" or "."."""
    if not text or not text.strip():
        return ["empty text"]
    found = [name for name, rx in FAULTS if rx.search(text)]
    if group_size == 2:
        found += [name for name, rx in FAULTS_FOR_TWO if rx.search(text)]
    elif group_size > 2:
        found += [name for name, rx in FAULTS_FOR_MANY if rx.search(text)]
    if sentence and not re.match(r"^[A-Z]", text):
        found.append("does not start with a capital letter")
    if sentence and not re.search(r"[?.]$", text):
        found.append("does not end with '?' or '.'")
    return found


def reference_repeats(qa) -> list[str]:
    """For the scene-graph generators: a reference whose attributes share a word with its own
    relation, or (attribute questions) a reference that says the asked attribute."""
    refs = [qa.metadata[k] for k in ("target", "subject", "object") if isinstance(qa.metadata.get(k), dict)]
    out = []
    function_words = {"on", "in", "of", "to", "at", "by", "the", "a", "with", "is", "top", "front"}
    for ref in refs:
        said = set(ref.get("relation", "").split()) - function_words
        words = {w for a in ref.get("attributes", []) + ref.get("neighbour_attributes", []) for w in a.split()}
        if said & words:
            out.append(f"reference says {sorted(said & words)} twice")
        relation = qa.metadata.get("relation")  # the asked predicate (relation questions)
        asked = set(str(qa.metadata.get("attribute", "")).split())
        if isinstance(relation, str):
            asked |= set(relation.split()) - function_words
        if asked & (said | words):
            out.append(f"reference gives away {sorted(asked & (said | words))}")
    return out


def check(qa, group_size: int = 1) -> list[str]:
    problems = [f"question: {f}" for f in faults_in(qa.question, group_size)]
    problems += [f"answer: {f}" for f in faults_in(qa.answer, group_size, sentence=False)]
    for opt in qa.options:
        problems += [f"option {opt!r}: {f}" for f in faults_in(opt, group_size, sentence=False)]
    if qa.options and (qa.answer not in qa.options or len(set(qa.options)) != len(qa.options)):
        problems.append("options: answer missing or an option repeated")
    problems += reference_repeats(qa)
    return problems


# -- the checker itself catches the faults it names --------------------------------------------

BAD = [
    ("How many cats are there in all 2 images together?", 2),
    ("What kind of object can be found in all 2 images?", 2),
    ("What is the swinging batter that is swinging the bat doing?", 1),
    ("Considering the batter in box [0.10, 0.20, 0.30, 0.40], what activity does it have?", 1),
    ("Which image contains a apple?", 2),
    ("Which image contains an banana?", 2),
    ("Which image contains an uniform?", 2),
    ("Compare the cat across the 2 image.", 2),
    ("Only 1 objects is here.", 1),
    ("What is the the cup on?", 1),
    ("Which of these is walks on the street: the man or the dog?", 1),
    ("Which of these have the table: the cup or the dog?", 1),
    ("All images but one show a cat. Which image is missing it?", 2),
    ("What property do the cats share across both images?", 3),
    ("What is the {c} of the cup?", 1),
    ("What is the  cup on ?", 1),
    ("which image has a cat?", 2),
]
GOOD = [
    ("How many cats are there in both images together?", 2),
    ("How many cats are there in all three images together?", 3),
    ("What is the batter that is holding the bat doing?", 1),
    ("Considering the batter in box [0.10, 0.20, 0.30, 0.40], what is its activity?", 1),
    ("Which image contains an apple, a uniform or an hour glass?", 2),
    ("Of the two image points (0.10, 0.20) and (0.30, 0.40), which one is closer?", 1),
    ("Which of these walks on the street: the man or the dog?", 1),
    ("Fill in the relation: the cup ___ the table.", 1),
]


@pytest.mark.parametrize("text,m", BAD)
def test_checker_flags_known_faults(text, m):
    assert faults_in(text, m), text


@pytest.mark.parametrize("text,m", GOOD)
def test_checker_passes_good_english(text, m):
    assert faults_in(text, m) == [], text


# -- graphs that reach every template ----------------------------------------------------------

def scene(image_id: str, objects: list, relations: list = (), size=(240, 180)) -> SceneGraph:
    """objects: (label, [attributes]) laid out on a grid of separate boxes, each with its own
    depth (farther down the list = farther away) and a mask filling its box."""
    w, h = size
    cols = 6
    cw, ch = w // cols, h // ((len(objects) + cols - 1) // cols)
    obs, masks = [], []
    depth = np.full((h, w), 5, dtype=np.uint8)
    for k, (label, attrs) in enumerate(objects):
        x, y = (k % cols) * cw, (k // cols) * ch
        box = (x + 2, y + 2, x + cw - 2, y + ch - 2)
        obs.append(SGObject(label=label, box=box, attributes=list(attrs)))
        depth[box[1]:box[3], box[0]:box[2]] = 250 - 30 * k % 240
        m = np.zeros((h, w), dtype=bool)
        m[box[1]:box[3], box[0]:box[2]] = True
        masks.append(m)
    rels = [Relation(s, p, o) for s, p, o in relations]
    return SceneGraph(image_id, f"{image_id}.jpg", w, h, obs, rels, depth=depth, masks=masks).validate()


def table(text: str) -> list[tuple[str, list[str]]]:
    """'label: attr, attr' lines -> (label, [attributes]), in order (object 0 first)."""
    rows = [line.split(":") for line in text.strip().splitlines()]
    return [(label.strip(), [a.strip() for a in attrs.split(",") if a.strip()]) for label, attrs in rows]


STREET = """
man: standing, tall, happy
woman: sitting, smiling, calm
dog: black, small, running, furry
dog: white, small, sleeping
cup: white, ceramic, full
cup: red, plastic, empty
cup: white, ceramic, empty
table: wooden, brown, rectangular
chair: metal, gray, upright
bus: yellow, large, parked
umbrella: blue, open, round
knife: silver, shiny, sharp
knife: silver, metal, dull
sheep: white, fluffy, grazing
hat: red, woolen, tilted
street: gray, wet
bench: wooden, green
apple: red, round, fresh
"""


def street() -> SceneGraph:
    return scene("street", table(STREET),
                 [(0, "holding", 4), (1, "sitting on", 8), (5, "on", 7), (6, "on", 7), (0, "walks on", 15),
                  (0, "wearing", 14), (1, "has", 10), (2, "is near", 0), (9, "parked on", 15), (3, "under", 16),
                  (11, "on", 7), (13, "behind", 16), (17, "on", 7), (1, "looking at", 2), (1, "have", 17)])


BALLGAME = """
batter: swinging, focused
bat: wooden, brown
ball: white, round, small
helmet: black, shiny
catcher: crouching, alert
glove: brown, leather
umpire: standing
grass: green, short
fence: metal, tall
"""


def ballgame() -> SceneGraph:
    """The issue's scene: a swinging batter that is swinging the bat."""
    return scene("ballgame", table(BALLGAME),
                 [(0, "swinging", 1), (0, "about to hit", 2), (0, "wearing", 3), (4, "wearing", 5),
                  (4, "behind", 0), (6, "behind", 4), (1, "above", 7), (8, "behind", 6)])


def group_member(k: int) -> SceneGraph:
    """Four images of one kind of scene that differ in what the group generators ask about."""
    objects = [("cat", [["white"], ["black"], ["white"], ["gray"]][k] + ["small"]),
               ("table", ["wooden", ["round", "square", "round", "oval"][k]]),
               ("batter", ["swinging"])]
    objects += [("cup", ["red" if k % 2 else "blue"])] * (k + 1)
    if k != 1:
        objects.append(("dog", ["brown"]))
    if k == 2:
        objects.append(("umbrella", ["open"]))
    if k == 0:
        objects.append(("uniform", ["blue"]))
    if k != 3:
        objects.append(("egg", ["white"]))
    relations = [(0, "on" if k % 2 else "under", 1), (2, "has", 0 if k else 1), (2, "walks on", 1)]
    return scene(f"img{k}", objects, relations)


def shipped_graphs() -> list[SceneGraph]:
    from evol.provision.loaders import load_provision

    masks = GRAPHS / "seg_masks" if (GRAPHS / "seg_masks").is_dir() else GRAPHS / "masks"
    return [g for g in load_provision(GRAPHS, masks_dir=masks, image_root=REPO / "seeds")
            if isinstance(g, SceneGraph)]


def contexts(freq: Frequencies) -> list[GenContext]:
    return [GenContext(mc_ratio=0.0, freq=freq), GenContext(mc_ratio=1.0, freq=freq),
            GenContext(mc_ratio=0.5, number_words=True, freq=freq), GenContext(mc_ratio=1.0, n_choices=3, freq=freq)]


def groups(graphs: list[SceneGraph]) -> list[list[SceneGraph]]:
    return [graphs[:2], graphs[1:3], graphs[:3], graphs[1:4], graphs[:4], graphs[2:4]]


# -- rendering everything --------------------------------------------------------------------

def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{[a-z_]+\}", template)
    return re.compile("^" + "(.+?)".join(re.escape(p) for p in parts) + "$", re.S)


@pytest.fixture(scope="module")
def rendered():
    """(generator name, group size, QA) for every QA of every generator over every graph,
    context and seed used here."""
    shipped = shipped_graphs()
    synthetic = [street(), ballgame()]
    members = [group_member(k) for k in range(4)]
    freq = Frequencies()
    for g in shipped + synthetic + members:
        freq.add(g)
    freq.objects["human"] += 3  # a name the dataset has and no image here shows
    single = shipped + synthetic + members
    out = []
    for ci, ctx in enumerate(contexts(freq)):
        for name, gen in sorted(GENERATORS.items()):
            sets = groups(members) + groups(shipped) if gen.multi else [[g] for g in single]
            for gi, graphs in enumerate(sets):
                for seed in range(6):
                    rng = random.Random(f"{name}-{ci}-{gi}-{seed}")
                    out += [(name, len(graphs), qa) for qa in gen.generate(graphs, rng, ctx, 6)]
    return out


def test_every_template_is_rendered(rendered):
    missing = []
    for name, gen in sorted(GENERATORS.items()):
        questions = [qa.question for n, _, qa in rendered if n == name]
        for template in gen.wordings():
            rx = _pattern(template)
            if not any(rx.match(q) for q in questions):
                missing.append(f"{name}: {template}")
    assert not missing, "templates never rendered:\n" + "\n".join(missing)


def test_no_known_fault_in_any_question_answer_or_option(rendered):
    bad = []
    for name, m, qa in rendered:
        for problem in check(qa, m):
            bad.append(f"{name} ({m} image{'s' if m > 1 else ''}): {problem}\n    Q: {qa.question}\n"
                       f"    A: {qa.answer}  options: {qa.options}")
    if bad:
        kinds: dict[str, list[str]] = {}
        for b in dict.fromkeys(bad):
            kinds.setdefault(b.split("\n")[0].split(": ", 1)[1], []).append(b)
        pytest.fail(f"{len(bad)} faults; an example of each kind:\n" + "\n".join(v[0] for v in kinds.values()))


def test_group_wording_reads_for_two_three_and_four_images(rendered):
    """The words for the group follow its size: "both images", "all three images", ..."""
    seen = {m: [qa.question for n, mm, qa in rendered if mm == m and GENERATORS[n].multi] for m in (2, 3, 4)}
    assert any("both images" in q for q in seen[2])
    assert any("all three images" in q for q in seen[3]) and any("all four images" in q for q in seen[4])
    assert any("of the two images" in q for q in seen[2]) and any("of the three images" in q for q in seen[3])


def test_generators_cite_provision():
    """Each generator, and each module that implements them, says it follows ProVision."""
    import sys

    for name, gen in GENERATORS.items():
        doc = type(gen).__dict__.get("__doc__") or ""
        assert "2412.07012" in doc, name
        module = sys.modules[type(gen).__module__]
        assert "ProVision" in module.__doc__ and "2412.07012" in module.__doc__, module.__name__
