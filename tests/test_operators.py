"""Operators, prompts, the operator mix and the per-record generator."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import evol.prompts as prompts_mod
from evol.backends.base import Image, Reply, ReplyParseError, Sampling, Text
from evol.operators import DEFAULT_MIX, OPERATORS, choose_operator, record_rng
from evol.operators.base import BuildOptions, ParseResult
from evol.operators.interaction import TASK_FORMS, form_problem, task_form
from evol.prompts import PromptError, load_prompt, prompt_versions
from evol.records import Item, Obj, Record, Step

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\$\{?[A-Za-z_]")


def make_record(boxes: bool = True, images: tuple[str, ...] = ("img/a.jpg", "img/b.jpg")) -> Record:
    objects = [Obj(label="dog", box=[0.1, 0.2, 0.45, 0.8]), Obj(label="frisbee", box=[0.5, 0.1, 0.6, 0.2])]
    if not boxes:
        objects = [Obj(label="dog"), Obj(label="frisbee")]
    return Record(
        id="rec7",
        images=list(images),
        caption="A dog leaps for a red frisbee in a park; a price tag reads $5.",
        objects=objects,
        items=[
            Item(id="rec7#0", question="What is the dog doing?", answer="Jumping to catch a frisbee.",
                 skills=["context understanding"], steps=[Step(manipulation="Grounding(dog)", description="dog found")]),
            Item(id="rec7#1", question="What colour is the frisbee?", answer="Red.", objects=["frisbee"]),
            Item(id="rec7#2@r1", question="Which option shows the dog?", answer="A",
                 options=["A. dog", "B. cat"], parent="rec7#2"),
        ],
    )


def entry(sid: str, question: str, answer: str = "An answer.", **extra) -> dict:
    return {"source_id": sid, "objects": ["dog"], "skills": ["grounding"], "format": "short answer",
            "question": question, "steps": [{"manipulation": "Grounding(dog)", "description": "seen"}],
            "answer": answer, **extra}


# ------------------------------------------------------------------------ prompts
def test_prompt_files_have_versions_and_ids():
    versions = prompt_versions()
    for name in ("evolve_common", "evolve_perceptual", "evolve_reasoning", "evolve_interaction", "judge"):
        assert isinstance(versions[name], int) and versions[name] >= 1
        p = load_prompt(name)
        assert p.id == f"{name}@v{p.version}"
        assert not p.text.startswith("version:")
    assert load_prompt("judge") is load_prompt("judge")  # cached


def test_render_names_missing_placeholders():
    common = load_prompt("evolve_common")
    with pytest.raises(PromptError, match=r"\$caption.*\$objects|\$objects.*\$caption"):
        common.render(items="x", objective="y", n=1, boxes_rule="z")


def test_prompt_file_without_version_line_is_refused(tmp_path, monkeypatch):
    (tmp_path / "bad.md").write_text("no version here\nHello $name\n")
    (tmp_path / "good.md").write_text("version: 3\nHello $name, it costs $$5\n")
    monkeypatch.setattr(prompts_mod, "PROMPT_DIR", tmp_path)
    load_prompt.cache_clear()
    try:
        with pytest.raises(PromptError, match="version"):
            load_prompt("bad")
        good = load_prompt("good")
        assert good.id == "good@v3"
        assert good.render(name="Ann") == "Hello Ann, it costs $5\n"
        with pytest.raises(PromptError, match="bad prompt name"):
            load_prompt("../good")
    finally:
        load_prompt.cache_clear()


@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("boxes", [True, False])
def test_rendered_request_has_no_leftover_placeholders(name, boxes):
    req = OPERATORS[name].build(make_record(boxes), make_record(boxes).items, 1, BuildOptions())
    for msg in req.messages:
        for part in msg.parts:
            if isinstance(part, Text):
                text = part.text.replace("reads $5", "")  # the caption's own dollar sign
                assert not PLACEHOLDER.search(text), PLACEHOLDER.search(text)
    # values are inserted verbatim, never expanded again
    assert "a price tag reads $5" in req.messages[0].parts[0].text


def test_interaction_prompt_offers_every_task_form():
    text = load_prompt("evolve_interaction").text
    assert len(TASK_FORMS) == 17
    for form in TASK_FORMS:
        assert f"- {form}:" in text, form


# ------------------------------------------------------------------------ build
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_build_request_shape(name):
    rec = make_record()
    op = OPERATORS[name]
    sampling = Sampling(temperature=0.3, seed=11)
    req = op.build(rec, rec.items, 2, BuildOptions(sampling=sampling))
    system, user = req.messages
    assert (system.role, user.role) == ("system", "user")
    assert [p.ref for p in user.parts if isinstance(p, Image)] == ["img/a.jpg", "img/b.jpg"]
    assert isinstance(user.parts[-1], Text) and "q1, q2, q3" in user.parts[-1].text
    assert req.images() == rec.images
    assert req.sampling == sampling
    assert req.template == f"{load_prompt('evolve_common').id}+{load_prompt('evolve_' + name).id}"
    assert req.tag == f"rec7/r2/{name}"
    text = system.parts[0].text
    assert load_prompt("evolve_" + name).text.strip()[:60] in text  # the operator's objective
    assert "- dog: [0.1, 0.2, 0.45, 0.8]" in text
    section = text.split("## Items\n", 1)[1].split("\n\n", 1)[0]
    shown = [json.loads(line) for line in section.splitlines()]
    assert [s["id"] for s in shown] == ["q1", "q2", "q3"]
    assert [s["question"] for s in shown] == [it.question for it in rec.items]
    assert "options" in shown[2] and "options" not in shown[0]
    assert "rec7#0" not in text  # real ids stay out of the prompt


def test_build_schema():
    rec = make_record()
    req = OPERATORS["reasoning"].build(rec, rec.items[:2], 1, BuildOptions())
    assert req.schema_name == "evolved_items"
    items = req.schema["properties"]["items"]
    assert items["minItems"] == items["maxItems"] == 2
    entry_schema = items["items"]
    assert entry_schema["properties"]["source_id"]["enum"] == ["q1", "q2"]
    assert set(entry_schema["required"]) == {"source_id", "objects", "skills", "format", "question", "steps", "answer"}
    assert "options" in entry_schema["properties"]
    assert req.schema["required"] == ["items"]


def test_send_images_false_has_no_image_parts():
    rec = make_record()
    req = OPERATORS["perceptual"].build(rec, rec.items, 1, BuildOptions(send_images=False))
    assert req.images() == []
    assert all(isinstance(p, Text) for m in req.messages for p in m.parts)
    assert "No picture is attached" in req.messages[1].parts[-1].text


def test_box_rule_follows_the_record():
    with_boxes = OPERATORS["reasoning"].build(make_record(True), make_record().items, 1).messages[0].parts[0].text
    without = OPERATORS["reasoning"].build(make_record(False), make_record().items, 1).messages[0].parts[0].text
    assert "write no coordinates anywhere" in without and "write no coordinates anywhere" not in with_boxes
    assert "- dog\n" in without


# ------------------------------------------------------------------------ parse
def test_parse_pairs_children_by_source_id_even_reversed():
    rec = make_record()
    parents = rec.items
    data = {"items": [entry("q3", "New third?"), entry("q2", "New second?"), entry("q1", "New first?")]}
    result = OPERATORS["perceptual"].parse(rec, parents, 2, Reply(text="", data=data))
    assert isinstance(result, ParseResult) and result.problems == []
    by_parent = {c.parent: c for c in result.items}
    assert by_parent["rec7#0"].question == "New first?"
    assert by_parent["rec7#1"].question == "New second?"
    assert by_parent["rec7#2@r1"].question == "New third?"
    assert by_parent["rec7#0"].id == "rec7#0@r2"
    assert by_parent["rec7#2@r1"].id == "rec7#2@r2"
    odd = Item(id="ann@lab#0@r1", question="Where?", answer="Here.")  # an "@" inside the record id
    kid = OPERATORS["reasoning"].parse(rec, [odd], 2, Reply(text="", data={"items": [entry("q1", "Q?")]})).items[0]
    assert kid.id == "ann@lab#0@r2" and kid.parent == "ann@lab#0@r1"
    assert all(c.verdict is None for c in result.items)
    assert by_parent["rec7#0"].steps[0].manipulation == "Grounding(dog)"


def test_parse_skips_unknown_and_repeated_ids():
    rec = make_record()
    data = {"items": [entry("q9", "Stray?"), entry("q1", "First?"), entry("q1", "Again?"), entry("q2", "Second?")]}
    result = OPERATORS["reasoning"].parse(rec, rec.items[:2], 1, Reply(text="", data=data))
    assert [c.question for c in result.items] == ["First?", "Second?"]
    assert any("unknown source_id 'q9'" in p for p in result.problems)
    assert any("repeats source_id 'q1'" in p for p in result.problems)


def test_parse_reports_invalid_entries_and_missing_parents():
    rec = make_record()
    data = {"items": [
        {k: v for k, v in entry("q1", "No answer?").items() if k != "answer"},
        entry("q2", "Fine?", steps=[{"manipulation": "", "description": "just thinking"}, "a bare step"],
              format="Fill-in-the-Blanks"),
        entry("q3", "Bad skills?", skills="grounding"),
    ]}
    result = OPERATORS["interaction"].parse(rec, rec.items, 1, Reply(text="", data=data))
    assert [c.parent for c in result.items] == ["rec7#1"]
    child = result.items[0]
    assert child.steps[0].manipulation is None and child.steps[1].description == "a bare step"
    assert child.format == "fill in the blank"  # mapped onto the interaction operator's forms
    assert any("rec7#0" in p and "answer" in p for p in result.problems)
    assert any("rec7#2@r1" in p and "skills" in p for p in result.problems)

    data = {"items": [entry("q1", "Only one?", format="multiple choice")]}
    result = OPERATORS["interaction"].parse(rec, rec.items[:2], 1, Reply(text="", data=data))
    assert any("no rewrite for item rec7#1 (q2)" in p for p in result.problems)


@pytest.mark.parametrize("written, form", [
    *((f, f) for f in TASK_FORMS),
    ("Multiple-Choice", "multiple choice"), ("multiple choice questions", "multiple choice"),
    ("MCQ", "multiple choice"), ("multiple choise", "multiple choice"),
    ("true/false", "multiple choice"), ("Yes-No", "multiple choice"), ("yes/no question", "multiple choice"),
    ("fill_in_the_blanks", "fill in the blank"), ("Text-Image-Matching", "text-image matching"),
    ("Depth ordering", "depth order"), ("OCR", "text detection"), ("art types", "art type"),
    ("a region selection task", "region selection"),
    ("json-string", None), ("short answer", None), ("string", None), ("", None), (None, None),
])
def test_task_forms_map_onto_the_seventeen(written, form):
    assert task_form(written) == form


def test_interaction_drops_a_rewrite_whose_form_is_near_none():
    rec = make_record()
    op = OPERATORS["interaction"]
    fmt = op.schema(2)["properties"]["items"]["items"]["properties"]["format"]
    assert fmt["anyOf"][0]["enum"] == list(TASK_FORMS)  # listed, yet other text fits: mapped or dropped here
    data = {"items": [entry("q1", "Which box holds the dog?", format="json-string"),
                      entry("q2", "Is the frisbee red?", format="True/False")]}
    result = op.parse(rec, rec.items[:2], 1, Reply(text="", data=data))
    assert [(c.parent, c.format) for c in result.items] == [("rec7#1", "multiple choice")]
    [problem] = [p for p in result.problems if "rec7#0" in p]
    assert "'json-string' is not one of the 17 task forms" in problem and all(f in problem for f in TASK_FORMS)
    assert form_problem("json-string") in problem
    with pytest.raises(ReplyParseError, match="json-string"):
        op.parse(rec, rec.items[:1], 1, Reply(text="", data={"items": [entry("q1", "Q?", format="json-string")]}))
    # the other operators keep their own forms
    kept = OPERATORS["perceptual"].parse(rec, rec.items[:1], 1, Reply(text="", data={"items": [entry("q1", "Q?")]}))
    assert kept.items[0].format == "short answer"


@pytest.mark.parametrize("data", [None, {"items": []}, {"nope": 1}, ["not", "a", "dict"],
                                  {"items": [entry("q7", "Unknown?")]}])
def test_parse_raises_when_nothing_usable(data):
    rec = make_record()
    with pytest.raises(ReplyParseError):
        OPERATORS["perceptual"].parse(rec, rec.items, 1, Reply(text="garbage", data=data))


# ------------------------------------------------------------------------ mix and rng
def test_choose_operator_equal_thirds_and_reproducible():
    rng = random.Random(2024)
    draws = [choose_operator(rng, DEFAULT_MIX) for _ in range(3000)]
    counts = Counter(draws)
    assert set(counts) == set(OPERATORS)
    for name in OPERATORS:
        assert 880 <= counts[name] <= 1120, counts
    again = random.Random(2024)
    assert [choose_operator(again, DEFAULT_MIX) for _ in range(3000)] == draws
    # the order of the mix's keys does not change the draws
    reordered = dict(reversed(list(DEFAULT_MIX.items())))
    third = random.Random(2024)
    assert [choose_operator(third, reordered) for _ in range(3000)] == draws


def test_choose_operator_weights_need_not_sum_to_one():
    rng = random.Random(5)
    counts = Counter(choose_operator(rng, {"reasoning": 3, "interaction": 1, "perceptual": 0}) for _ in range(2000))
    assert counts["perceptual"] == 0
    assert 1380 <= counts["reasoning"] <= 1620, counts


@pytest.mark.parametrize("mix, match", [
    ({"reasoning": 1, "telepathy": 1, "zoom": 2}, "telepathy, zoom"),
    ({}, "empty"),
    ({"reasoning": -1}, "reasoning"),
    ({"reasoning": 0, "interaction": 0}, "zero"),
    ({"reasoning": float("nan")}, "reasoning"),
])
def test_choose_operator_rejects_bad_mix(mix, match):
    with pytest.raises(ValueError, match=match):
        choose_operator(random.Random(0), mix)


def _rng_sample(seed: int, rid: str, rnd: int) -> list[float]:
    rng = record_rng(seed, rid, rnd)
    return [rng.random() for _ in range(5)]


def test_record_rng_is_keyed_and_stable_across_processes():
    here = _rng_sample(7, "rec-ä/42", 2)
    assert here == _rng_sample(7, "rec-ä/42", 2)
    assert here != _rng_sample(7, "rec-ä/42", 3)
    assert here != _rng_sample(8, "rec-ä/42", 2)
    assert here != _rng_sample(7, "rec-ä/43", 2)
    code = ("import json; from evol.operators import record_rng; r = record_rng(7, 'rec-ä/42', 2); "
            "print(json.dumps([r.random() for _ in range(5)]))")
    for hashseed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
        assert json.loads(out.stdout) == here


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_requests_share_one_schema_object_per_item_count(name):
    """The cache key dumps a schema object once (evol.cache), so requests with as many items
    share one, equal to what `schema(n)` makes."""
    from evol.eliminator.judge import Judge

    op, rec = OPERATORS[name], make_record()
    first = op.build(rec, rec.items, 1)
    again = op.build(rec, rec.items, 2)
    assert first.schema is again.schema and first.schema == op.schema(len(rec.items))
    assert op.build(rec, rec.items[:1], 1).schema == op.schema(1)
    pairs = [(rec.items[0], rec.items[0])]
    judge = Judge()
    assert judge.build(rec, pairs, 1).schema is judge.build(rec, pairs, 2).schema == judge.schema(1)
