"""The checks after the judge (issue 16): the blind check, the answer check and the
comparison of answers, over real HTTP to the test server; and a run killed during either
stage asks no answered call again when it is resumed."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import evol
from conftest import evolve_args, popen_cli, read_jsonl, run_cli, write_llava_seeds
from evol.eliminator.agree import agree, normalise, option_index

JUDGE = "You review visual question-answer items"
BLIND = "You answer questions about a picture that you cannot see"
ANSWER = "You answer visual questions about the attached picture"
SAME = "You compare two answers to the same question"


@pytest.mark.parametrize("expected, got, options, same", [
    ("Two.", "2", [], True),
    ("Two, one at each edge.", "2", [], True),
    ("There are 3 cups", "three", [], True),
    ("Yes, it is red.", "yes", [], True),
    ("No", "Yes.", [], False),
    ("The cat", "cat", [], True),
    ("red", "blue", [], False),
    ("B", "dog", ["A. cat", "B. dog"], True),
    ("(b)", "A", ["cat", "dog"], False),
    ("B) dog", "the dog", ["cat", "dog"], True),
    ("The man holds a red umbrella because it is raining hard", "an umbrella", [], None),
    ("It is used to keep the rain off while walking to the station", "to stay dry in the rain on the way", [], None),
])
def test_short_answers_compare_by_words_long_ones_go_to_a_model(expected, got, options, same):
    assert agree(expected, got, options) is same


def test_normalise_and_options():
    assert normalise("The Three  cups!") == "3 cups"
    assert option_index("(c)", ["x", "y", "z"]) == 2
    assert option_index("z", ["A. x", "B. y", "C. z"]) == 2
    assert option_index("D", ["x", "y"]) is None


def _seed(tmp_path):
    rec = {"id": "one", "images": ["coffee.jpg"],
           "caption": "An espresso in a red cup on a red saucer with a small silver spoon, on a wooden table.",
           "objects": [{"label": "cup", "box": [0.29, 0.04, 0.68, 0.76]},
                       {"label": "saucer", "box": [0.13, 0.18, 0.8, 0.97]},
                       {"label": "spoon", "box": [0.54, 0.16, 0.75, 0.5]}],
           "items": [{"id": "one#0", "question": "What is on the saucer under the cup in this photo?",
                      "answer": "A small silver spoon."},
                     {"id": "one#1", "question": "What colour is the cup?", "answer": "Red."}]}
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    return path, rec


Q1 = "What is the capital city of France, where this style of cafe is common?"
Q2 = "What metal does the spoon on the saucer look like it is made of?"


def _planted(rec: dict) -> list:
    """Two rewrites, and a judge fooled by both: the first is answerable without the
    picture (the blind check rejects it), the second's answer is one the picture
    contradicts (the answer check rejects it)."""
    item = lambda sid, q, a: {"source_id": sid, "objects": ["cup"], "skills": ["counting"],  # noqa: E731
                              "format": "short answer", "question": q, "steps": [], "answer": a}
    seed_q = rec["items"][0]["question"]
    fooled = [{"id": e, "improved": True, "score": 6, "reason": "richer"} for e in ("e1", "e2")]
    return [  # first match wins: the checks' prompts also hold the seed's questions
        ((Q1, JUDGE), json.dumps({"verdicts": fooled})),
        ((Q1, BLIND), json.dumps({"answers": [{"id": "q1", "can_tell": True, "answer": "Paris."},
                                              {"id": "q2", "can_tell": False, "answer": ""}]})),
        ((Q2, ANSWER), json.dumps({"answers": [{"id": "q1", "answer": "Silver."}]})),
        ((seed_q, "What colour is the cup?"),
         json.dumps({"items": [item("q1", Q1, "Paris"), item("q2", Q2, "Gold")]})),
    ]


def test_blind_and_answer_checks_reject_with_their_stage_and_reason(tmp_path, server_factory):
    path, rec = _seed(tmp_path)
    srv = server_factory(scripted=_planted(rec), keep_prompts=True)
    out = tmp_path / "run"
    result = evol.evolve(str(path), out=str(out), model="t", base_url=srv.url, image_root=str(evol.shipped(".")),
                         rounds=1, checks="rules,judge,blind,answer", preflight=False, mix={"perceptual": 1})
    assert result.complete
    assert srv.stats()["scripted"] == 4
    answer_prompts = [p["text"] for p in srv.prompts() if ANSWER in p["text"]]
    assert len(answer_prompts) == 1 and Q1 not in answer_prompts[0], "a rejected item goes no further"
    blind_prompts = [p for p in srv.prompts() if BLIND in p["text"]]
    assert len(blind_prompts) == 1 and not blind_prompts[0]["images"], "the blind check sends no picture"
    assert rec["caption"] not in blind_prompts[0]["text"] and "saucer:" not in blind_prompts[0]["text"], \
        "nor the caption or the boxes"
    assert "Paris" not in blind_prompts[0]["text"], "nor the item's answer"
    rejects = {r["item"]: r for r in read_jsonl(out / "rejects.jsonl")}
    blind, answer = rejects["one#0@r1"], rejects["one#1@r1"]
    assert blind["stage"] == "blind" and "'Paris.'" in blind["reason"] and "without the picture" in blind["reason"]
    assert answer["stage"] == "answer" and "'Silver.'" in answer["reason"] and "'Gold'" in answer["reason"]
    stored = read_jsonl(out / "records.jsonl")[0]
    v1, v2 = (it["verdict"] for it in stored["versions"][0]["items"])
    assert v1["stage"] == "blind" and v1["checks"]["judge"] == "richer" and not v1["improved"]
    assert v2["stage"] == "answer" and v2["checks"]["blind"] == "cannot tell without the picture"
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["stages"]
    assert stages["blind"]["examined"] == 2 and stages["blind"]["rejected"] == 1 and stages["blind"]["requests"] == 1
    assert stages["answer"]["examined"] == 1 and stages["answer"]["rejected"] == 1 and stages["answer"]["requests"] == 1
    assert manifest["counts"]["rejects_by_stage"] == {"blind": 1, "answer": 1}


def test_default_checks_make_no_extra_calls(tmp_path, server_factory):
    path, rec = _seed(tmp_path)
    srv = server_factory(keep_prompts=True)
    out = tmp_path / "run"
    evol.evolve(str(path), out=str(out), model="t", base_url=srv.url, image_root=str(evol.shipped(".")),
                rounds=1, preflight=False)
    assert not any(BLIND in p["text"] or ANSWER in p["text"] for p in srv.prompts())
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert set(stages) == {"rules", "judge"}


def test_unknown_or_judgeless_checks_are_refused(tmp_path):
    with pytest.raises(evol.errors.ConfigError, match="unknown check 'eyeball'"):
        evol.evolve("x.jsonl", out=str(tmp_path / "o"), checks="rules,judge,eyeball")
    with pytest.raises(evol.errors.ConfigError, match="judge cannot be left out"):
        evol.evolve("x.jsonl", out=str(tmp_path / "o"), checks="rules,blind")


@pytest.mark.parametrize("marker", [BLIND, ANSWER], ids=["killed-in-blind", "killed-in-answer"])
def test_a_run_killed_during_a_later_check_asks_nothing_answered_again(tmp_path, server_factory, marker):
    n = 6
    seeds = write_llava_seeds(tmp_path, n)
    first = server_factory(keep_prompts=True, improved_rate=1.0, slow=[((marker,), 60.0)])
    out = tmp_path / "run"
    args = evolve_args(seeds, out, first.url, "--rounds", "1", "--checks", "rules,judge,blind,answer",
                       "--no-preflight")
    proc = popen_cli(*args)
    deadline = time.time() + 90
    while time.time() < deadline and sum(marker in p["text"] for p in first.prompts()) < n:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    hanging = [p["text"] for p in first.prompts() if marker in p["text"]]
    assert len(hanging) == n, "every record should be waiting in the stage when killed"
    answered = {p["text"] for p in first.prompts() if marker not in p["text"]}
    assert answered

    second = server_factory(keep_prompts=True, improved_rate=1.0)
    res = run_cli(*evolve_args(seeds, out, second.url, "--rounds", "1", "--checks", "rules,judge,blind,answer",
                               "--no-preflight"))
    assert res.returncode == 0, res.stderr
    asked = [p["text"] for p in second.prompts()]
    assert not answered & set(asked), "a call answered before the kill was asked again"
    assert sum(marker in t for t in asked) == n  # only the calls that hung are asked again
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "blind" in manifest["stages"] and "answer" in manifest["stages"]
    assert len(read_jsonl(out / "records.jsonl")) == n


def test_a_server_dying_during_the_checks_stops_the_run_and_a_rerun_finishes(tmp_path, server_factory):
    """A dead server is never an item's fault: the run stops with one error line and a
    non-zero exit, nothing is written down as a blind-check result, and a rerun on a live
    server finishes, asking nothing answered again."""
    n = 4
    seeds = write_llava_seeds(tmp_path, n)
    first = server_factory(keep_prompts=True, improved_rate=1.0, slow=[((BLIND,), 60.0)])
    out = tmp_path / "run"
    extra = ("--rounds", "1", "--checks", "rules,judge,blind,answer", "--no-preflight")
    proc = popen_cli(*evolve_args(seeds, out, first.url, *extra))
    deadline = time.time() + 90
    while time.time() < deadline and sum(BLIND in p["text"] for p in first.prompts()) < n:
        time.sleep(0.05)
    answered = {p["text"] for p in first.prompts() if BLIND not in p["text"]}
    first.stop()  # the server dies with every record waiting on its blind call
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "error:" in stderr
    assert not [r for r in read_jsonl(out / "rejects.jsonl") if r.get("stage") == "blind"], \
        "a transport fault must not be written down as the item's result"
    assert answered

    second = server_factory(keep_prompts=True, improved_rate=1.0)
    res = run_cli(*evolve_args(seeds, out, second.url, *extra))
    assert res.returncode == 0, res.stderr
    assert not answered & {p["text"] for p in second.prompts()}, "an answered call was asked again"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(read_jsonl(out / "records.jsonl")) == n
