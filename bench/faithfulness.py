"""Planted-failure bench of the eliminator (issue 16): is each kind of bad rewrite caught by
the stage meant for it, and are good rewrites kept?

    python bench/faithfulness.py                  # 20 records per failure shape, as many good ones
    python bench/faithfulness.py --per-shape 5 --keep runs/faith

Seeds are the shipped MMEvol records (same images, captions and objects) copied under new
ids, each seed question made unique with a "(seed N)" tag. The test server plays every
model: the evolve operator's reply is planted per record (one round, one rewrite per
record), and the later calls are scripted as a capable but imperfect model answers them:

* the judge is fooled: it calls every rewrite improved (a second run has a good judge);
* blind (no picture): a confident answer, phrased differently from the item's, for the
  rewrites that do not need the picture; "cannot tell" for the rest, except a confident
  but wrong guess for about a tenth of the good rewrites (which must not reject them);
* answer (with the picture): the true answer; for good rewrites a paraphrase that agrees
  (digits for words, extra words, an option's letter for its text, a long explanation);
* same_answer (long answers): whether the two really say the same.

Failure shapes and the stage meant to catch each:

    invented_object  rules (grounding_object)   names an object the record does not list
    invented_coords  rules (coordinates)        a box that matches no object
    wrong_count      rules (grounding_count)    a count the boxes contradict
    blind_answerable blind                      general knowledge: needs no picture
    wrong_answer     answer                     an answer the picture contradicts
    scaffold         rules (scaffold)           instruction wording ("rewritten question")
    refusal          rules (refusal)            an apology instead of an answer
    source_leak      rules (source_leak)        "according to the caption"
    no_gain          rules (no_gain)            the rewrite equals its parent

The goal (issue 16): at least 95% of each shape caught by its stage, at most 5% of good
rewrites lost. The figures are printed, never enforced: the exit status is non-zero only
when the run itself crashes. Questions to compare against the goal are not made easier
to pass: a paraphrase `evol.eliminator.agree` does not recognise is reported as lost.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ itself must not shadow standard modules (a bench/select.py would hide `select`)
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
REPO = _HERE.parent
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

# the phrases that tell the prompts apart (prompts/*.md)
EVOLVE = "You are a meticulous visual assistant"
JUDGE = "You review visual question-answer items"
BLIND = "You answer questions about a picture that you cannot see"
ANSWER = "You answer visual questions about the attached picture"
SAME = "You compare two answers to the same question"

SHAPES = ("invented_object", "invented_coords", "wrong_count", "blind_answerable", "wrong_answer",
          "scaffold", "refusal", "source_leak", "no_gain")
GOOD = "good"
MEANT = {  # shape -> (stage meant to catch it, rule name for the rules stage)
    "invented_object": ("rules", "grounding_object"),
    "invented_coords": ("rules", "coordinates"),
    "wrong_count": ("rules", "grounding_count"),
    "blind_answerable": ("blind", None),
    "wrong_answer": ("answer", None),
    "scaffold": ("rules", "scaffold"),
    "refusal": ("rules", "refusal"),
    "source_leak": ("rules", "source_leak"),
    "no_gain": ("rules", "no_gain"),
}
GROUNDING_SHAPES = ("invented_object", "wrong_count")
STAGE_ORDER = ("evolve", "rules", "judge", "blind", "answer")
CHECKS = "rules,judge,blind,answer"
MIX = {"perceptual": 1, "reasoning": 1}  # interaction would remap "format" to its task forms


def rule_key(name: str) -> str:
    """A rule's name as compared here ("grounding-object" and "grounding_object" alike)."""
    return name.replace("-", "_").lower()


def rules_present() -> set[str]:
    from evol.eliminator.rules import RULES

    return {rule_key(name) for name, _ in RULES}


# ----------------------------------------------------------------------- the plants
@dataclass
class T:
    """One planted rewrite for one picture.

    `answer` is what the answer check (looking) says, `blind` what the blind check says
    ((can_tell, answer); None: cannot tell), `guess` a confident wrong blind guess used for
    some good rewrites. `correct` says whether the item's answer is what the picture shows
    (decides the scripted same_answer verdicts). `marked`: the question carries a "(ref N)"
    tag so that its later calls can be scripted for this record alone; counting questions
    stay plain (a tag would make them no clear count), and are scripted by their text.
    """

    question: str
    answer: str
    objects: list[str]
    check: str                      # the answer check's reply
    kind: str = ""                  # what sort of rewrite (good ones: how the answers differ)
    options: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    blind: str | None = None        # confident blind answer (blind_answerable)
    guess: str | None = None        # confident wrong blind guess (some good rewrites)
    correct: bool = True
    marked: bool = True
    skills: list[str] = field(default_factory=lambda: ["context understanding"])
    fmt: str = "short answer"


# Boxes as the records list them (`format_box` of the shipped records' objects).
TEMPLATES: dict[str, dict[str, list[T]]] = {
    "invented_object": {
        "astronaut": [
            T("What is the dog sitting beside the astronaut's helmet doing?",
              "The dog is resting its head against the helmet.", ["dog", "helmet"],
              "There is no dog in the picture.", correct=False),
            T("What colour is the laptop lying next to the space shuttle model?", "Silver.",
              ["laptop", "space shuttle model"], "There is no laptop.", correct=False),
        ],
        "cat": [
            T("Where is the butterfly resting on the cat's head?", "On the forehead, above the left eye.",
              ["butterfly", "left eye"], "There is no butterfly on the cat.", correct=False),
            T("Which way is the bird behind the cat flying?", "The bird flies towards the right edge.",
              ["bird"], "No bird is visible.", correct=False),
        ],
        "coffee": [
            T("What colour is the laptop standing behind the espresso cup?", "Black.", ["laptop", "cup"],
              "There is no laptop.", correct=False),
            T("What is the kitten beside the saucer looking at?", "The kitten is looking at the spoon.",
              ["kitten", "saucer", "spoon"], "There is no kitten in the picture.", correct=False),
        ],
        "rocket": [
            T("How high is the helicopter flying above the left tower?",
              "The helicopter hovers just above the top of the left tower.", ["helicopter", "tower"],
              "There is no helicopter in the picture.", correct=False),
            T("What colour is the truck parked at the foot of the rocket?", "Red.", ["truck", "rocket"],
              "There is no truck.", correct=False),
        ],
    },
    "invented_coords": {
        "astronaut": [
            T("What does the woman hold in the region [0.12, 0.52, 0.33, 0.78]?", "A white helmet.",
              ["woman", "helmet"], "Nothing; her hands are empty there.", correct=False),
            T("Where does the flag hang behind the astronaut?", "The flag hangs at [0.05, 0.1, 0.25, 0.6].",
              ["flag"], "Along the left edge of the picture.", correct=False),
        ],
        "cat": [
            T("What colour is the nose at [0.45, 0.6, 0.6, 0.75]?", "Pink.", ["nose"], "Pink.", correct=False),
            T("Which eye is at [0.1, 0.2, 0.25, 0.4]?", "The left eye [0.1, 0.2, 0.25, 0.4].", ["left eye"],
              "No eye is there.", correct=False),
        ],
        "coffee": [
            T("What lies at [0.05, 0.05, 0.2, 0.3], to the left of the cup?", "The spoon [0.05, 0.05, 0.2, 0.3].",
              ["spoon", "cup"], "Only the wooden table.", correct=False),
            T("Where is the cup?", "The cup sits at [0.3, 0.1, 0.55, 0.6] on the saucer.", ["cup", "saucer"],
              "In the middle of the saucer.", correct=False),
        ],
        "rocket": [
            T("Where does the rocket stand?", "The rocket stands at [0.4, 0.2, 0.6, 0.9] between the towers.",
              ["rocket", "tower"], "On the launch pad between the towers.", correct=False),
            T("What stands in the region [0.2, 0.0, 0.3, 1.0]?", "A third lattice tower.", ["tower"],
              "Nothing but the evening sky.", correct=False),
        ],
    },
    "wrong_count": {
        "astronaut": [
            T("How many flags are there in the picture?", "Two.", ["flag"], "1", marked=False, correct=False),
            T("How many helmets can you see?", "Three", ["helmet"], "One.", marked=False, correct=False),
        ],
        "cat": [
            T("How many eyes are visible?", "Three.", ["left eye", "right eye"], "2", marked=False, correct=False),
            T("How many noses can you see in this photo?", "2", ["nose"], "one", marked=False, correct=False),
        ],
        "coffee": [
            T("How many cups are there?", "Two.", ["cup"], "1", marked=False, correct=False),
            T("How many spoons are in the picture?", "There are 3 spoons.", ["spoon"], "One.", marked=False,
              correct=False),
        ],
        "rocket": [
            T("How many towers are there in this picture?", "Three.", ["tower"], "2", marked=False, correct=False),
            T("How many rockets can you see?", "Two rockets.", ["rocket"], "1", marked=False, correct=False),
        ],
    },
    "blind_answerable": {
        "astronaut": [
            T("Which planet does an astronaut like this one circle aboard the International Space Station?",
              "Earth.", ["woman"], "Earth", blind="The Earth"),
            T("Why do astronauts need a pressurised suit and a helmet when they work outside a spacecraft?",
              "Because space has no air and almost no pressure, so the suit and helmet hold oxygen in and keep "
              "the body pressurised.", ["flight suit", "helmet"],
              "Space has no air or pressure, so the suit and helmet keep oxygen and pressure around the body.",
              blind="Space is a vacuum with no breathable air, so the suit and helmet supply oxygen and keep the "
                    "body under pressure."),
        ],
        "cat": [
            T("How many legs does an animal like this one normally have?", "4", ["nose"], "4", blind="Four."),
            T("Which sense do the whiskers of an animal like this mainly serve?", "A",
              ["nose"], "A. Touch", blind="A. Touch", options=["A. Touch", "B. Taste", "C. Hearing", "D. Smell"],
              fmt="multiple choice"),
        ],
        "coffee": [
            T("What is the strong coffee made by forcing hot water through finely ground beans, usually served "
              "in small cups, called?", "Espresso.", ["cup"], "Espresso", blind="espresso"),
            T("Which country does espresso come from?", "Italy", ["cup"], "Italy", blind="Italy."),
        ],
        "rocket": [
            T("What force must any rocket overcome to leave the ground?", "Gravity.", ["rocket"], "Gravity",
              blind="gravity"),
            T("Must a rocket carry its own oxidiser to burn fuel in space?", "Yes, it carries an oxidiser.",
              ["rocket"], "Yes", blind="Yes."),
        ],
    },
    "wrong_answer": {
        "astronaut": [
            T("What colour is the flight suit the astronaut wears?", "Blue.", ["flight suit"], "Orange.",
              correct=False),
            T("Describe what sits in front of the astronaut and what it looks like.",
              "A red helmet with a clear, see-through visor sits on the table in front of her.", ["helmet"],
              "A white helmet with a dark visor rests in front of her, on the right.", correct=False),
        ],
        "cat": [
            T("What colour are the cat's eyes?", "Blue.", ["left eye", "right eye"], "Green.", correct=False),
            T("What colour is the cat's nose?", "A", ["nose"], "B. Pink", correct=False,
              options=["A. Black", "B. Pink", "C. White", "D. Grey"], fmt="multiple choice"),
        ],
        "coffee": [
            T("What colour is the cup?", "Blue.", ["cup"], "Red.", correct=False),
            T("What is the spoon made of?", "Wood.", ["spoon"], "Metal; it is a silver spoon.", correct=False),
        ],
        "rocket": [
            T("At what time of day is the rocket shown?", "At noon.", ["rocket"], "At dusk.", correct=False),
            T("What colour is the rocket?", "Black.", ["rocket"], "White.", correct=False),
        ],
    },
    "scaffold": {
        "astronaut": [
            T("Rewritten question: what colour is the astronaut's flight suit?", "Orange.", ["flight suit"],
              "Orange."),
            T("Where is the flag?", "As in the original answer, the flag hangs at the left edge.", ["flag"],
              "At the left edge."),
        ],
        "cat": [
            T("What colour are the cat's eyes? (This is the rewritten version of the given question.)", "Green.",
              ["left eye"], "Green."),
            T("# Rewritten Prompt: what colour is the nose?", "Pink.", ["nose"], "Pink."),
        ],
        "coffee": [
            T("Given question: what rests on the saucer?", "A small silver spoon.", ["spoon", "saucer"],
              "A spoon."),
            T("What colour is the saucer?", "Red, unlike the original question suggested.", ["saucer"], "Red."),
        ],
        "rocket": [
            T("Original question: how does the rocket stand? Rewritten question: what stands between the towers?",
              "The rocket.", ["rocket"], "The rocket."),
            T("What colour is the rocket? (source_id q1)", "White.", ["rocket"], "White."),
        ],
    },
    "refusal": {
        "astronaut": [
            T("What is the astronaut's name?", "I'm sorry, I cannot identify people from images.", ["woman"],
              "It cannot be told from the picture.", correct=False),
            T("What colour is the visor of the helmet?", "As an AI, I can't see colours in pictures.", ["helmet"],
              "Dark.", correct=False),
        ],
        "cat": [
            T("What breed is the cat?", "Sorry, I am unable to tell the breed.", ["nose"], "A tabby.",
              correct=False),
            T("What colour are the cat's eyes?", "I cannot determine the eye colour.", ["left eye"], "Green.",
              correct=False),
        ],
        "coffee": [
            T("What drink is in the cup?", "I am unable to see what is inside the cup.", ["cup"], "Espresso.",
              correct=False),
            T("What is the spoon made of?", "As a language model I cannot judge materials.", ["spoon"], "Metal.",
              correct=False),
        ],
        "rocket": [
            T("Which rocket is this?", "Sorry, I can't identify rockets.", ["rocket"], "A white rocket.",
              correct=False),
            T("What time of day is it?", "I'm unable to tell the time of day.", ["rocket"], "Dusk.", correct=False),
        ],
    },
    "source_leak": {
        "astronaut": [
            T("According to the caption, what stands on the table to the right?", "A model of the space shuttle.",
              ["space shuttle model"], "A space shuttle model."),
            T("Where is the helmet?", "Its bounding box puts it at the bottom right.", ["helmet"],
              "At the bottom right."),
        ],
        "cat": [
            T("Based on the description, what colour are the cat's eyes?", "Green.", ["left eye"], "Green."),
            T("What colour is the fur?", "The caption says orange and brown stripes.", ["nose"],
              "Orange and brown stripes."),
        ],
        "coffee": [
            T("From the object list, which item is the largest?", "The saucer.", ["saucer"], "The saucer."),
            T("What is the spoon made of?", "The provided description says it is silver.", ["spoon"], "Silver."),
        ],
        "rocket": [
            T("As mentioned in the caption, when is the rocket shown?", "At dusk.", ["rocket"], "At dusk."),
            T("How many towers are listed among the detected objects?", "Two.", ["tower"], "2"),
        ],
    },
    GOOD: {
        "astronaut": [
            T("What colour is the flight suit the astronaut is wearing?", "Orange.", ["flight suit"], "orange",
              kind="short: same word", guess="White."),
            T("Does the flag hang on the left side of the picture?", "Yes, on the left.", ["flag"], "Yes.",
              kind="yes/no: extra words", guess="No.", skills=["grounding"]),
            T("Which object stands on the table at the right?", "A", ["space shuttle model"],
              "A space shuttle model", kind="multiple choice: letter vs text", guess="D. A desk lamp",
              options=["A. A space shuttle model", "B. A globe", "C. A telescope", "D. A desk lamp"],
              fmt="multiple choice"),
            T("What do the objects around the astronaut suggest about why this photo was taken?",
              "The flag behind her, the helmet on the table and the space shuttle model suggest an official "
              "portrait of an astronaut for her space agency.", ["flag", "helmet", "space shuttle model"],
              "It looks like an official astronaut portrait: the national flag, her helmet and a shuttle model "
              "are set up around her on purpose.",
              kind="long: explanation", guess="It was taken at a birthday party, judging by the decorations.",
              skills=["context understanding", "knowledge integration"], fmt="explanation"),
            T("How many flags are there in the picture?", "One.", ["flag"], "1", kind="count: words vs digits",
              marked=False, skills=["calculating"]),
            T("What sits at the bottom right, in front of the astronaut?", "The helmet.", ["helmet"], "A helmet",
              kind="short: articles", guess="A microphone."),
            T("What colour is the visor of the helmet?", "Dark.", ["helmet"], "The visor is dark.",
              kind="short: reply in a sentence", guess="Gold."),
        ],
        "cat": [
            T("What colour are the cat's eyes?", "Green.", ["left eye", "right eye"], "Green",
              kind="short: same word", guess="Yellow."),
            T("How many of the cat's eyes are open?", "Two.", ["left eye", "right eye"], "2",
              kind="number: words vs digits", guess="One.", skills=["calculating"]),
            T("Which pattern does the cat's fur show?", "B. Striped", ["nose"], "B",
              kind="multiple choice: text vs letter", guess="A. Spotted",
              options=["A. Spotted", "B. Striped", "C. Plain", "D. Patched"], fmt="multiple choice"),
            T("Describe the cat's face, including its eyes, nose and whiskers.",
              "It is a tabby with orange and brown stripes, green eyes, a pink nose and white whiskers, looking "
              "just past the camera.", ["left eye", "right eye", "nose"],
              "A striped orange-brown tabby face with green eyes, a pink nose and long white whiskers; the cat "
              "looks slightly away from the camera.", kind="long: description",
              guess="A black cat with yellow eyes and a black nose.", fmt="description"),
            T("How many eyes are visible?", "2", ["left eye", "right eye"], "2", kind="count: same number",
              marked=False, skills=["calculating"]),
            T("Are the cat's whiskers white?", "Yes.", ["nose"], "Yes, they are white.",
              kind="yes/no: extra words", guess="No."),
            T("What colour is the cat's nose?", "Pink.", ["nose"], "The nose is pink.",
              kind="short: reply in a sentence", guess="Black."),
        ],
        "coffee": [
            T("What colour is the saucer?", "Red.", ["saucer"], "Red.", kind="short: same word", guess="White."),
            T("What is the spoon made of?", "C", ["spoon"], "Metal", kind="multiple choice: letter vs text",
              guess="A. Wood", options=["A. Wood", "B. Plastic", "C. Metal", "D. Glass"], fmt="multiple choice"),
            T("Explain how the cup, the saucer and the spoon are arranged on the table.",
              "The red cup stands in the middle of the red saucer, and the small silver spoon rests on the "
              "saucer to the right of the cup.", ["cup", "saucer", "spoon"],
              "The cup sits at the centre of the saucer with the spoon lying on the saucer beside it, on the "
              "right.", kind="long: explanation", guess="The spoon is inside the cup and the saucer is beside it.",
              skills=["relationship description"], fmt="explanation"),
            T("How many cups are there?", "One.", ["cup"], "1", kind="count: words vs digits", marked=False,
              skills=["calculating"]),
            T("How many spoons can you see?", "One spoon.", ["spoon"], "1", kind="count: extra words",
              marked=False, skills=["calculating"]),
            T("Is the inside of the cup white?", "Yes.", ["cup"], "yes", kind="yes/no: same word", guess="No."),
            T("What rests on the saucer beside the cup?", "A spoon.", ["spoon", "saucer"], "The spoon",
              kind="short: articles", guess="A sugar cube."),
        ],
        "rocket": [
            T("What colour is the rocket?", "White.", ["rocket"], "white", kind="short: same word",
              guess="Silver."),
            T("How many towers are there in this picture?", "Two, one at each edge.", ["tower"], "2",
              kind="count: extra words", marked=False, skills=["calculating"]),
            T("How many rockets can you see?", "One.", ["rocket"], "1", kind="count: words vs digits",
              marked=False, skills=["calculating"]),
            T("At what time of day was the picture taken?", "C. Dusk", ["rocket"], "C",
              kind="multiple choice: text vs letter", guess="B. Noon",
              options=["A. Morning", "B. Noon", "C. Dusk", "D. Midnight"], fmt="multiple choice"),
            T("Why are the lights along the ground switched on, and what does that say about the time of day?",
              "They are on because the light is fading: the picture was taken at dusk, when the pad needs "
              "lighting.", ["rocket", "tower"],
              "It is getting dark (dusk), so the launch pad is lit; the lights show the evening hour.",
              kind="long: explanation", guess="The lights are on because it is the middle of the night.",
              skills=["context understanding", "behaviour prediction"], fmt="explanation"),
            T("Does the rocket stand between the two towers?", "Yes.", ["rocket", "tower"], "Yes, between them.",
              kind="yes/no: extra words", guess="No."),
        ],
    },
}
IMAGES = ("astronaut", "cat", "coffee", "rocket")
GUESS_EVERY = 7  # one in this many marked good rewrites gets a confident wrong blind guess (~10% of all)


@dataclass
class Plant:
    """One seed record and what is planted for it."""

    record: dict
    shape: str
    kind: str
    template: T | None
    question: str = ""        # the evolved question (what later calls are keyed by)
    marker: str = ""          # "(ref N)" or "" for a plain counting question
    seed_tag: str = ""        # "(seed N)": the seed question's tag (evolve and judge prompts)
    blind_guess: bool = False
    item: dict = field(default_factory=dict)   # the operator reply's entry

    @property
    def rid(self) -> str:
        return self.record["id"]

    @property
    def child_id(self) -> str:
        return f"{self.rid}#0@r1"


def base_records() -> dict[str, dict]:
    """The shipped MMEvol records, read as evol reads them (boxes normalised), by picture."""
    import evol
    from evol.io import read_records

    out = {}
    for res in read_records(evol.shipped("sample_mmevol.jsonl")):
        rec = res.record
        name = {"astronaut-m": "astronaut", "cat-m": "cat", "coffee-m": "coffee", "rocket-m": "rocket"}[rec.id]
        out[name] = {"images": list(rec.images), "caption": rec.caption,
                     "objects": [{"label": o.label, "box": o.box} for o in rec.objects],
                     "question": rec.items[0].question, "answer": rec.items[0].answer}
    return out


def build_plants(per_shape: int = 20, n_good: int | None = None) -> list[Plant]:
    """`per_shape` records of every failure shape and `n_good` good ones (default: as many as
    all failures together), pictures and variants taken in turn."""
    bases = base_records()
    n_good = per_shape * len(SHAPES) if n_good is None else n_good
    plants: list[Plant] = []
    plan = [(s, j) for s in SHAPES for j in range(per_shape)] + [(GOOD, j) for j in range(n_good)]
    guessable = 0
    for i, (shape, j) in enumerate(plan):
        image = IMAGES[j % len(IMAGES)]
        base = bases[image]
        rid = f"fb{i:04d}"
        seed_tag = f"(seed {i})"
        seed_q = f"{base['question']} {seed_tag}"
        record = {"id": rid, "images": base["images"], "caption": base["caption"], "objects": base["objects"],
                  "items": [{"id": f"{rid}#0", "question": seed_q, "answer": base["answer"]}]}
        if shape == "no_gain":
            variants = [(seed_q, base["answer"]), (seed_q.lower(), base["answer"].rstrip(".")),
                        (seed_q + "  ", base["answer"].upper()), (seed_q.rstrip("?)") + ")?", base["answer"])]
            q, a = variants[(j // len(IMAGES)) % len(variants)]
            p = Plant(record, shape, "copy of the parent", None, question=q, seed_tag=seed_tag)
            p.item = {"objects": [], "skills": [], "format": "short answer", "question": q, "steps": [],
                      "answer": a}
            plants.append(p)
            continue
        options = TEMPLATES[shape][image]
        t = options[(j // len(IMAGES)) % len(options)]
        marker = f"(ref {i})" if t.marked else ""
        question = f"{t.question} {marker}" if marker else t.question
        p = Plant(record, shape, t.kind or shape, t, question=question, marker=marker, seed_tag=seed_tag)
        if shape == GOOD and t.guess and t.marked:
            guessable += 1
            p.blind_guess = guessable % GUESS_EVERY == 3
        p.item = {"objects": t.objects, "skills": t.skills, "format": t.fmt, "question": question,
                  "steps": t.steps, "answer": t.answer, **({"options": t.options} if t.options else {})}
        plants.append(p)
    return plants


def write_seeds(plants: list[Plant], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in plants:
            f.write(json.dumps(p.record, ensure_ascii=False) + "\n")
    return path


def _answers(**entry) -> str:
    return json.dumps({"answers": [{"id": "q1", **entry}]}, ensure_ascii=False)


def _pair_key(got: str) -> str:
    """How `answer_2` appears in a same_answer prompt (JSON, ensure_ascii=False)."""
    return '"answer_2": ' + json.dumps(got, ensure_ascii=False)


def script(plants: list[Plant], judge: str = "fooled") -> list:
    """The scripted replies, first match wins: per record first (keyed by its seed tag or its
    question's ref tag), plain counting questions by their text, catch-alls last."""
    exact: list = []
    plain: list = []
    seen_plain: set = set()
    for p in plants:
        seed_tag = p.seed_tag
        exact.append(((EVOLVE, seed_tag), json.dumps({"items": [{"source_id": "q1", **p.item}]},
                                                      ensure_ascii=False)))
        if judge == "good":
            good = p.shape == GOOD
            verdict = {"id": "e1", "improved": good, "score": 7 if good else 0,
                       "reason": "a richer item that needs the picture" if good else
                       f"rejected: {p.shape.replace('_', ' ')}"}
            exact.append(((JUDGE, seed_tag), json.dumps({"verdicts": [verdict]})))
        t = p.template
        if t is None:
            continue
        key = p.marker or p.question
        # blind: a confident answer for general knowledge, a wrong guess for a few good ones
        if p.marker:
            if t.blind is not None:
                exact.append(((BLIND, key), _answers(can_tell=True, answer=t.blind)))
                exact.append(((SAME, key, _pair_key(t.blind)), _same(True, "both give the same fact")))
            elif p.blind_guess and t.guess:
                exact.append(((BLIND, key), _answers(can_tell=True, answer=t.guess)))
                exact.append(((SAME, key, _pair_key(t.guess)), _same(False, "they describe different things")))
        # answer: what a capable model says looking at the picture
        if p.marker:
            exact.append(((ANSWER, key), _answers(answer=t.check)))
            exact.append(((SAME, key, _pair_key(t.check)),
                          _same(t.correct, "same facts" if t.correct else "a different fact")))
        elif (p.question, p.record["caption"]) not in seen_plain:
            seen_plain.add((p.question, p.record["caption"]))
            caption = p.record["caption"][:60]
            plain.append(((ANSWER, json.dumps(p.question)[1:-1], caption), _answers(answer=t.check)))
    catch_all = [
        ((JUDGE,), json.dumps({"verdicts": [{"id": "e1", "improved": True, "score": 7,
                                             "reason": "richer and harder than before"}]})),
        ((BLIND,), _answers(can_tell=False, answer="")),
    ]
    return exact + plain + catch_all


def _same(same: bool, reason: str) -> str:
    return json.dumps({"verdicts": [{"id": "p1", "same": same, "reason": reason}]})


# ------------------------------------------------------------------------- the run
def run(plants: list[Plant], out: Path, judge: str = "fooled", concurrency: int = 8) -> dict:
    """Evolve the planted seeds against the scripted server; the run's outcome per record."""
    import evol
    from evol.testing.server import ServerConfig, start_in_thread

    seeds = write_seeds(plants, out / "seeds.jsonl")
    srv = start_in_thread(ServerConfig(scripted=script(plants, judge)))
    said = io.StringIO()
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            result = evol.evolve(str(seeds), out=str(out / "run"), model="planted", base_url=srv.url,
                                 image_root=str(evol.shipped(".")), rounds=1, checks=CHECKS, mix=MIX,
                                 preflight=False, concurrency=concurrency, progress=False)
        wall = time.perf_counter() - t0
        stats = srv.stats()
    finally:
        srv.stop()
    return {"result": result, "wall": wall, "server": stats, "said": said.getvalue(),
            **read_outcome(out / "run", plants)}


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_outcome(run_dir: Path, plants: list[Plant]) -> dict:
    """Per record: the stage that rejected its rewrite (None: kept), the rule, the reason,
    and the rejects.jsonl entries."""
    records = {r["id"]: r for r in read_jsonl(run_dir / "records.jsonl")}
    evolve_usage = [0, 0, 0]  # the operator's calls: not a stage of the manifest
    for r in records.values():
        for v in r.get("versions") or []:
            for k, n in enumerate((v.get("usage") or {}).get("evolve") or ()):
                evolve_usage[k] += n
    rejects = read_jsonl(run_dir / "rejects.jsonl")
    by_item = defaultdict(list)
    for r in rejects:
        by_item[r.get("item") or r.get("record")].append(r)
    outcome = {}
    for p in plants:
        rec = records.get(p.rid)
        items = [it for v in (rec or {}).get("versions") or [] for it in v.get("items") or []]
        child = next((it for it in items if it["id"] == p.child_id), None)
        v = (child or {}).get("verdict")
        if child is None or v is None:
            stage, rule, reason = "evolve", None, "; ".join(r["reason"] for r in by_item.get(p.rid, [])) or \
                "no rewrite came back"
        elif v.get("rule"):
            stage, rule, reason = "rules", v["rule"], v.get("reason", "")
        elif v.get("stage"):
            stage, rule, reason = v["stage"], None, v.get("reason", "")
        elif not v.get("improved"):
            stage, rule, reason = "judge", None, v.get("reason", "")
        else:
            stage, rule, reason = None, None, ""
        outcome[p.rid] = {"stage": stage, "rule": rule, "reason": reason, "verdict": v,
                          "rejects": by_item.get(p.child_id, [])}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {"outcome": outcome, "rejects": rejects, "manifest": manifest, "evolve_usage": evolve_usage}


# ----------------------------------------------------------------------- the table
def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f}%" if b else "    -"


def report(plants: list[Plant], res: dict, title: str, goal: bool = True) -> list[str]:
    """Print the figures; return the lines that say where the goal is missed (with `goal`:
    with a good judge the judge catches the blind and answer shapes first, as it should)."""
    present = rules_present()
    outcome = res["outcome"]
    misses: list[str] = []
    print(f"\n== {title}: {len(plants)} records, {res['wall']:.1f} s, run {res['result'].status}")
    head = f"{'shape':18} {'planted':>7} {'caught':>6} {'share':>6}  {'by meant stage':>14}  caught by stage (rule)"
    print(head)
    print("-" * len(head))
    for shape in SHAPES:
        mine = [p for p in plants if p.shape == shape]
        stages = Counter()
        for p in mine:
            o = outcome[p.rid]
            if o["stage"] is not None:
                stages[o["stage"] + (f" ({o['rule']})" if o["rule"] else "")] += 1
        caught = sum(stages.values())
        stage, rule = MEANT[shape]
        meant = sum(1 for p in mine if outcome[p.rid]["stage"] == stage
                    and (rule is None or rule_key(outcome[p.rid]["rule"] or "") == rule))
        by = ", ".join(f"{k}: {n}" for k, n in sorted(stages.items())) or "-"
        note = ""
        if rule and rule not in present:
            note = f"  [rule {rule} not in RULES]"
        print(f"{shape:18} {len(mine):7d} {caught:6d} {_pct(caught, len(mine))}  "
              f"{_pct(meant, len(mine)):>14}  {by}{note}")
        if goal and mine and meant < 0.95 * len(mine):
            misses.append(f"{shape}: {meant}/{len(mine)} caught by {stage}{f' ({rule})' if rule else ''}"
                          f"{note}")
    good = [p for p in plants if p.shape == GOOD]
    lost = [p for p in good if outcome[p.rid]["stage"] is not None]
    print(f"\ngood rewrites: {len(good)}, lost {len(lost)} ({_pct(len(lost), len(good)).strip()}); "
          f"with a wrong blind guess: {sum(p.blind_guess for p in good)}")
    kinds = defaultdict(list)
    for p in good:
        kinds[p.kind].append(p)
    print(f"  {'kind':36} {'total':>5} {'lost':>4}")
    for kind in sorted(kinds):
        ps = kinds[kind]
        n_lost = sum(outcome[p.rid]["stage"] is not None for p in ps)
        print(f"  {kind:36} {len(ps):5d} {n_lost:4d}")
    by_stage = Counter(outcome[p.rid]["stage"] for p in lost)
    if lost:
        print("  lost by stage: " + ", ".join(f"{k}: {n}" for k, n in sorted(by_stage.items())))
        seen = set()
        for p in lost:
            o = outcome[p.rid]
            rule = f" ({o['rule']})" if o["rule"] else ""
            line = f"{o['stage']}{rule}: {o['reason']}"
            if (p.kind, line) in seen:
                continue
            seen.add((p.kind, line))
            print(f"    - [{p.kind}] {line[:220]}")
    if goal and good and len(lost) > 0.05 * len(good):
        where = ", ".join(f"{k}: {n}" for k, n in by_stage.items())
        misses.append(f"good rewrites: {len(lost)}/{len(good)} lost ({where})")
    # the manifest's per-stage figures and what each stage cost
    stages = res["manifest"].get("stages") or {}
    print(f"\n  {'stage':8} {'examined':>8} {'rejected':>8} {'requests':>8} {'tokens in':>10} {'tokens out':>10}")
    ev = res["evolve_usage"]
    print(f"  {'(evolve)':8} {'':8} {'':8} {ev[0]:8d} {ev[1]:10d} {ev[2]:10d}")
    for s in STAGE_ORDER:
        if s not in stages:
            continue
        c = stages[s]
        print(f"  {s:8} {c.get('examined', 0):8d} {c.get('rejected', 0):8d} {c.get('requests', 0):8d} "
              f"{c.get('tokens_in', 0):10d} {c.get('tokens_out', 0):10d}")
    srv = res["server"]
    print(f"  server: {srv.get('requests')} requests, {srv.get('scripted', 0)} answered by the script")
    return misses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-shape", type=int, default=20, help="records per failure shape (default 20)")
    ap.add_argument("--good", type=int, default=None, help="good rewrites (default: as many as all failures)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the seeds and run folders here")
    ap.add_argument("--no-good-judge", action="store_true", help="skip the second run with a good judge")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--verbose", action="store_true", help="also print what evol.evolve said")
    args = ap.parse_args(argv)

    import logging

    logging.getLogger("evol").setLevel(logging.ERROR)  # rejections are expected here: no warnings per item
    plants = build_plants(args.per_shape, args.good)
    present = rules_present()
    missing = [r for r in ("grounding_object", "grounding_count") if r not in present]
    print(f"rules in RULES: {', '.join(sorted(present))}")
    if missing:
        print(f"NOTE: {', '.join(missing)} not in evol/eliminator/rules.py RULES: "
              f"{', '.join(GROUNDING_SHAPES)} have no rule meant for them")
    tmp = None
    root = args.keep
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="evol-faith-")
        root = Path(tmp.name)
    try:
        variants = [("fooled", "judge fooled (improved for every rewrite)")]
        if not args.no_good_judge:
            variants.append(("good", "good judge (rejects every failure it sees)"))
        all_misses = {}
        for judge, title in variants:
            out = root / f"judge-{judge}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            res = run(plants, out, judge, args.concurrency)
            if args.verbose:
                print(res["said"].rstrip())
            all_misses[title] = report(plants, res, title, goal=judge == "fooled")
        misses = all_misses[variants[0][1]]
        print("\n== against the goal, judge fooled (>= 95% of each shape by its stage, <= 5% of good rewrites "
              "lost): " + ("met" if not misses else "missed"))
        for m in misses:
            print(f"  - {m}")
        if args.keep:
            print(f"\nrun folders kept under {root}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
