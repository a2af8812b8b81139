"""`evol seed instruct`: grow, cluster and summarise the bank, match pictures, answer; filters catch plants."""

from __future__ import annotations

import json

import numpy as np
from conftest import REPO, read_jsonl, run_cli

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
