"""`evol seed instruct`: grow, cluster and summarise the bank, match pictures, answer; filters catch plants."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from conftest import FAKE_KEY, REPO, read_jsonl, run_cli

from evol.operators.interaction import TASK_FORMS
from evol.samples import shipped
from evol.seeding.commands import default_clusters
from evol.seeding.embed import TfidfEmbedder, make_embedder, spacy_packages_with_vectors
from evol.seeding.instruct import Group, Matcher, clean_instruction, instruction_problem, read_bank
from evol.records import Obj, Record

BANK = REPO / "seeds" / "instructions.txt"
ANSWER_MARK = "The request:"


def _records(path):
    recs = [
        {"id": "coffee", "image": "coffee.jpg", "caption": "A cup of coffee on a saucer, PLANT-LEAK.",
         "det": [{"label": "cup", "box": [0.41, 0.52, 0.5, 0.66]}]},
        {"id": "rocket", "image": "rocket.jpg", "caption": "A rocket on a launch pad, PLANT-REFUSE.",
         "det": [{"label": "rocket", "box": [0.4, 0.1, 0.6, 0.9]}]},
        {"id": "cat", "image": "chelsea.jpg", "caption": "A tabby cat lies on a rug.",
         "det": [{"label": "cat", "box": [0.1, 0.2, 0.8, 0.9]}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + "[1, 2]\n")
    return path


def test_instruct_end_to_end(tmp_path, server_factory):
    planted = [
        (("PLANT-LEAK", ANSWER_MARK), json.dumps({"answer": "Based on the provided description, a cup sits there."})),
        (("PLANT-REFUSE", ANSWER_MARK), json.dumps({"answer": "I'm sorry, I can't help with that request."})),
    ]
    srv = server_factory(scripted=planted)
    out = tmp_path / "seeds_instruct.jsonl"
    args = ["seed", "instruct", str(_records(tmp_path / "r.jsonl")), "--bank", str(BANK), "--grow", "30",
            "--per-image", "2", "--model", "m", "--base-url", srv.url, "--out", str(out), "--timeout", "10"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    bank = json.loads(out.with_name("seeds_instruct.bank.json").read_text())
    seeds = read_bank(BANK)
    assert bank["seeds"] == seeds and len(bank["grown"]) == 30
    assert bank["embedder"] in ("tfidf",) + tuple(f"spacy:{p}" for p in spacy_packages_with_vectors())
    groups = bank["groups"]
    assert len(groups) == default_clusters(len(seeds) + 30)
    members = [m for g in groups for m in g["members"]]
    assert sorted(members) == sorted(seeds + bank["grown"])  # every instruction in exactly one group
    instructions = {g["instruction"] for g in groups}

    records = read_jsonl(out)
    rejects = read_jsonl(out.with_name("seeds_instruct.rejects.jsonl"))
    by_id = {r["id"]: r for r in records}
    cat = by_id["cat-instruct"]
    assert cat["source"] == "instruct" and len(cat["items"]) == 2
    assert {it["question"] for it in cat["items"]} <= instructions
    assert len({it["question"] for it in cat["items"]}) == 2
    assert [m["group"] for m in cat["meta"]["matched"]] and cat["objects"][0]["box"]
    names = {g["id"]: g["name"] for g in groups}
    assert all(m["name"] == names[m["group"]] for m in cat["meta"]["matched"])
    assert all(g["form"] in TASK_FORMS for g in groups) and all(it["format"] in TASK_FORMS for it in cat["items"])
    # the planted leak and refusal are rejected with their reasons; those records produce nothing
    assert "coffee-instruct" not in by_id and "rocket-instruct" not in by_id
    rules = {(e["record"], e.get("rule")) for e in rejects}
    assert ("coffee", "source_leak") in rules and ("rocket", "refusal") in rules
    assert any(e["stage"] == "read" and "expected a JSON object" in e["reason"] for e in rejects)
    assert srv.stats()["scripted"] == 4
    manifest = json.loads(out.with_name("seeds_instruct.manifest.json").read_text())
    grow_calls = manifest["bank"]["grow_calls"]
    assert grow_calls >= 3  # at most 10 new instructions per call
    assert manifest["model_calls"] == grow_calls + len(groups) + 6  # + one summary per group + the answers
    matching = manifest["matching"]
    # cat, coffee and rocket were matched (the latter two's answers then rejected)
    assert matching["pictures"] == 3 and 0 <= matching["no_similar_group"] <= 3
    zero = sum(1 for r in records if max(m["similarity"] for m in r["meta"]["matched"]) == 0)
    assert zero <= matching["no_similar_group"]
    if matching["no_similar_group"]:
        assert "were like no instruction group" in " ".join(res.stderr.split())
    print(f"\ninstruct: bank {len(seeds)}+{len(bank['grown'])} -> {len(groups)} groups ({bank['embedder']}); "
          f"{manifest['model_calls']} calls; rejects {manifest['rejects_by_reason']}")

    # a rerun rebuilds the same bank and output from the cache alone
    first, calls = out.read_bytes(), srv.stats()["requests"]
    assert run_cli(*args).returncode == 0
    assert out.read_bytes() == first and srv.stats()["requests"] == calls
    assert json.loads(out.with_name("seeds_instruct.bank.json").read_text()) == bank


def test_default_bank_from_another_folder_with_form_markup_and_url_checks(tmp_path, server_factory):
    """The default --bank is the shipped one wherever evol runs; a group whose task form is near
    none of the 17 gets no answers (each rejected with the reason); markup and web addresses are caught."""
    first = read_bank(shipped("instructions.txt"))[0]
    planted = [
        (("PLANT-LEAK", ANSWER_MARK), json.dumps({"answer": "A cup of coffee ![cup](https://example.com/c.png)."})),
        (("PLANT-REFUSE", ANSWER_MARK), json.dumps({"answer": "A rocket waits; more at https://rockets.example.org"})),
        (("were grouped together", first), json.dumps(
            {"name": "odd group", "instruction": "Write something short inspired by this photo.", "form": "json-string"})),
    ]
    srv = server_factory(scripted=planted)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "COLUMNS": "200"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "evol.cli", *args], capture_output=True, text=True, env=env,
                              timeout=120, cwd=elsewhere)

    assert "the shipped instruction bank" in " ".join(cli("seed", "instruct", "--help").stdout.split())
    res = cli("seed", "instruct", str(_records(tmp_path / "r.jsonl")), "--grow", "0", "--clusters", "3",
              "--per-image", "3", "--model", "m", "--base-url", srv.url, "--out", "seeds.jsonl", "--timeout", "10")
    assert res.returncode == 0, res.stderr
    out = elsewhere / "seeds.jsonl"
    bank = json.loads(out.with_name("seeds.bank.json").read_text())
    assert bank["seeds"] == read_bank(BANK) and bank["grown"] == []
    odd = [g for g in bank["groups"] if first in g["members"]]
    assert len(odd) == 1 and odd[0]["form"] == "json-string"
    assert all(g["form"] in TASK_FORMS for g in bank["groups"] if g is not odd[0])

    by_id = {r["id"]: r for r in read_jsonl(out)}
    rejects = read_jsonl(out.with_name("seeds.rejects.jsonl"))
    assert set(by_id) == {"cat-instruct"} and len(by_id["cat-instruct"]["items"]) == 2
    assert all(it["format"] in TASK_FORMS for it in by_id["cat-instruct"]["items"])
    assert odd[0]["instruction"] not in {it["question"] for it in by_id["cat-instruct"]["items"]}
    form_rejects = [e for e in rejects if e.get("rule") == "task_form"]
    assert sorted(e["record"] for e in form_rejects) == ["cat", "coffee", "rocket"]
    assert all("'json-string' is not one of the 17 task forms" in e["reason"] and all(f in e["reason"] for f in TASK_FORMS)
               for e in form_rejects)
    why = {(e["record"], e.get("rule")): e["reason"] for e in rejects}
    assert "![cup](https://example.com/c.png)" in why[("coffee", "markup")]
    assert "https://rockets.example.org" in why[("rocket", "url")]
    manifest = json.loads(out.with_name("seeds.manifest.json").read_text())
    assert manifest["model_calls"] == 3 + 3 * 2  # the summaries, then no call for the odd group's answers
    assert srv.stats()["scripted"] == 1 + 2 + 2  # the odd summary; coffee's and rocket's two answers each


def test_instruction_checks():
    bank = ["Write a short poem inspired by this photo."]
    assert clean_instruction("  3. \"Write a limerick about the scene.\" ") == "Write a limerick about the scene."
    assert clean_instruction(None) == ""
    assert instruction_problem("Write a short poem inspired by this picture.", bank).startswith("near-duplicate")
    assert instruction_problem("Poem.", bank).startswith("too short")
    assert "refusal" in instruction_problem("Sorry, I cannot write instructions.", bank)
    assert "asks for input" in instruction_problem("Please provide the image first, then I will help.", bank)
    assert instruction_problem("Plan a picnic menu for the people in this scene.", bank) is None


def test_matching_prefers_shared_content_and_breaks_ties_by_record():
    groups = [
        Group(0, "recipe", "Suggest a recipe using the food shown.", ["Cook a meal with the pasta and tomatoes."]),
        Group(1, "travel tips", "Give travel tips for this place.", ["Plan a trip to the beach and the sea."]),
        Group(2, "poem", "Write a poem about this photo.", ["Compose verses about the mood."]),
    ]
    m = Matcher(groups, TfidfEmbedder(), seed=0)
    food = Record(id="a", caption="A plate of pasta with tomatoes and basil.", objects=[Obj(label="plate")])
    beach = Record(id="b", caption="Waves roll onto the beach under a clear sky by the sea.")
    assert m.match(food, 1)[0][0].name == "recipe" and m.match(food, 1)[0][1] > 0
    assert m.match(beach, 1)[0][0].name == "travel tips"
    # no shared words at all: a per-record draw, the same every time
    firsts = {m.match(Record(id=f"x{i}", caption="Zebra."), 1)[0][0].id for i in range(30)}
    assert len(firsts) == 3
    assert m.match(Record(id="x1", caption="Zebra."), 3) == m.match(Record(id="x1", caption="Zebra."), 3)


def test_embedders_give_unit_rows():
    tf = make_embedder("tfidf").fit(["write a poem", "plan a trip"])
    v = tf.encode(["a poem about a trip", "nothing shared"])
    assert np.allclose(np.linalg.norm(v[0]), 1) and np.allclose(v[1], 0)
    auto = make_embedder("auto")
    assert auto.name == (f"spacy:{spacy_packages_with_vectors()[0]}" if spacy_packages_with_vectors() else "tfidf")
