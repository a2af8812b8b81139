"""`evol seed svit` end to end over real HTTP, with planted bad replies the filters must catch."""

from __future__ import annotations

import json
import random

from conftest import SEEDS, read_jsonl, run_cli

from evol.eliminator.rules import written_item_problem
from evol.records import Item, Obj, Record
from evol.seeding.llm import derived_rng
from evol.seeding.sources import graph_record, notes
from evol.seeding.svit import TASKS, description_requests, plan

MARK = {  # a phrase only that task's prompt contains
    "conversation": "Write a conversation between",
    "reasoning": "need real reasoning",
    "description": "Write the reply: a thorough",
    "referring": "point at particular things",
}
CUP = [0.41, 0.52, 0.5, 0.66]


def _records(path):
    recs = [
        {"id": "kitchen", "image": "coffee.jpg", "caption": "A cup of coffee on a saucer, PLANT-K.",
         "det": [{"label": "cup", "box": CUP}, {"label": "saucer", "box": [0.3, 0.6, 0.7, 0.8]}]},
        {"id": "street", "image": "rocket.jpg", "caption": "A rocket on a launch pad, PLANT-S.",
         "det": [{"label": "rocket", "box": [0.4, 0.1, 0.6, 0.9]}]},
        {"id": "cat", "image": "chelsea.jpg", "caption": "A tabby cat lies on a rug.",
         "det": [{"label": "cat", "box": [0.1, 0.2, 0.8, 0.9]}]},
        {"id": "park", "image": "astronaut.jpg", "caption": "A dog runs across a park, PLANT-P.",
         "det": [{"label": "dog", "box": [0.2, 0.3, 0.6, 0.8]}]},
    ]
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
        f.write("{broken json\n")
        f.write(json.dumps({"id": "bare", "image": "x.jpg"}) + "\n")  # nothing to write from
    return path


def _planted():
    turns = {"turns": [
        {"question": "What is on the saucer?", "answer": "A cup of coffee sits on the saucer.",
         "objects": ["cup", "saucer"], "skills": ["referencing"]},
        {"question": "Is the cup full?", "answer": "According to the caption, the cup holds coffee.",
         "objects": ["cup"], "skills": ["existence"]},
        {"question": "what is on the SAUCER", "answer": "A cup of coffee sits on the saucer",  # a repeat
         "objects": ["cup", "saucer"], "skills": ["referencing"]},
    ]}
    reasoning = {"items": [
        {"question": "Why is the rocket on the pad?", "answer": "I'm sorry, but I cannot determine that.",
         "steps": ["a", "b"], "objects": ["rocket"], "skills": []},
        {"question": "What is likely to happen next to the rocket?", "answer": "It will probably be launched soon, "
         "since rockets stand upright on a pad only while being prepared for flight.",
         "steps": ["The rocket stands upright on a pad.", "Rockets are raised there before launch."],
         "objects": ["rocket"], "skills": ["behaviour prediction"]},
    ]}
    description = {"description": "Please provide the image so that I can describe it for you."}
    referring = {"items": [
        {"question": f"What is inside the region [{', '.join(map(str, CUP))}]?",
         "answer": f"The cup [{', '.join(map(str, CUP))}] of coffee.", "objects": ["cup"], "skills": ["referencing"]},
        {"question": "What is at [0.1, 0.1, 0.2, 0.2]?", "answer": "A spoon [0.1, 0.1, 0.2, 0.2].",
         "objects": ["spoon"], "skills": []},
        {"question": "Where is the saucer?", "answer": "Its bounding box is near the bottom.",
         "objects": ["saucer"], "skills": []},
    ]}
    # seen in a real run: the same question twice, answered "yes" then "no"; an <img> tag with a URL
    contradiction = {"turns": [
        {"question": "Is the dog running?", "answer": "Yes.", "objects": ["dog"], "skills": ["existence"]},
        {"question": "Where is the dog?", "answer": "On the grass of the park.", "objects": ["dog"], "skills": []},
        {"question": "is the dog  running", "answer": "No.", "objects": ["dog"], "skills": ["existence"]},
    ]}
    markup = {"description": 'A brown dog runs across a park. <img src="https://example.com/dog.jpg"> '
                             "The grass is short and green."}
    url = {"items": [
        {"question": "Why is the dog running?", "answer": "It is chasing a ball; see www.dogs-at-play.com for more.",
         "steps": ["The dog runs.", "Dogs chase balls."], "objects": ["dog"], "skills": []},
    ]}
    return [
        (("PLANT-K", MARK["conversation"]), json.dumps(turns)),
        (("PLANT-S", MARK["reasoning"]), json.dumps(reasoning)),
        (("PLANT-K", MARK["description"]), json.dumps(description)),
        (("PLANT-K", MARK["referring"]), json.dumps(referring)),
        (("PLANT-P", MARK["conversation"]), json.dumps(contradiction)),
        (("PLANT-P", MARK["description"]), json.dumps(markup)),
        (("PLANT-P", MARK["reasoning"]), json.dumps(url)),
    ]


def _fitting_seed() -> int:
    """A run seed whose drawn item counts fit the planted replies (a reply with more items
    than its schema allows is asked again, then fails): street reasoning 2, kitchen referring 3."""
    def n(task, rid, seed):
        return plan(task, Record(id=rid), derived_rng(seed, "svit", rid, task)).vars["n"]
    return next(s for s in range(1000) if n("reasoning", "street", s) == 2 and n("referring", "kitchen", s) >= 3)


def test_svit_end_to_end_filters_planted_replies_and_resumes(tmp_path, server_factory):
    srv = server_factory(scripted=_planted())
    inp = _records(tmp_path / "records.jsonl")
    out = tmp_path / "seeds_svit.jsonl"
    args = ["seed", "svit", str(inp), "--tasks", ",".join(TASKS), "--model", "m", "--base-url", srv.url,
            "--out", str(out), "--concurrency", "4", "--timeout", "10", "--seed", str(_fitting_seed())]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    records = read_jsonl(out)
    rejects = read_jsonl(out.with_name("seeds_svit.rejects.jsonl"))
    by_id = {r["id"]: r for r in records}

    # every good input gets conversation, reasoning and description records the evolver reads
    for rid in ("kitchen", "street", "cat"):
        for task in ("conversation", "reasoning"):
            rec = by_id[f"{rid}-{task}"]
            assert rec["source"] == f"svit/{task}" and rec["meta"]["seed_of"] == rid
            assert rec["objects"] and rec["images"] and all(it["question"] and it["answer"] for it in rec["items"])
    assert by_id["cat-description"]["items"][0]["question"] in description_requests()

    # planted faults: each caught, with its reason, and absent from the output
    def rule_for(record, stage):
        return {e.get("rule") for e in rejects if e["record"] == record and e["stage"] == stage}

    conv = by_id["kitchen-conversation"]["items"]
    assert [it["question"] for it in conv] == ["What is on the saucer?"]
    assert {"source_leak", "repeated_turn"} <= rule_for("kitchen", "svit/conversation")
    assert [it["question"] for it in by_id["street-reasoning"]["items"]] == [
        "What is likely to happen next to the rocket?"]
    assert len(by_id["street-reasoning"]["items"][0]["steps"]) == 2
    assert "refusal" in rule_for("street", "svit/reasoning")
    assert "kitchen-description" not in by_id
    assert "asks_for_input" in rule_for("kitchen", "svit/description")
    ref = by_id["kitchen-referring"]["items"]
    assert len(ref) == 1 and "[0.41, 0.52, 0.5, 0.66]" in ref[0]["answer"]
    assert {"coordinates", "source_leak"} <= rule_for("kitchen", "svit/referring")
    # the test server's filler text names no box: referring items citing none are dropped
    assert "no_box" in rule_for("cat", "svit/referring")
    # contradicting turns drop the whole conversation; markup and made-up web addresses are caught
    assert "park-conversation" not in by_id and "park-description" not in by_id and "park-reasoning" not in by_id
    why = {e.get("rule"): e["reason"] for e in rejects if e["record"] == "park"}
    assert "'Is the dog running?' twice" in why["contradiction"] and "'Yes.' then 'No.'" in why["contradiction"]
    assert "markup" in why and "<img src=" in why["markup"]
    assert "url" in why and "www.dogs-at-play.com" in why["url"]
    text = out.read_text()
    for bad in ("According to the caption", "I'm sorry", "Please provide", "bounding box is", "<img", "www."):
        assert bad not in text

    # bad input is named and the run went on
    reasons = [e["reason"] for e in rejects if e["stage"] == "read"]
    assert any("line 5 is not valid JSON" in r for r in reasons)
    assert any(e.get("rule") == "no_notes" and e["record"] == "bare" for e in rejects)
    assert srv.stats()["scripted"] == 7
    manifest = json.loads(out.with_name("seeds_svit.manifest.json").read_text())
    assert manifest["model_calls"] == 16 and manifest["cached_calls"] == 0
    print(f"\nsvit: {len(records)} records, {len(rejects)} rejects; by rule: {manifest['rejects_by_reason']}")

    # a rerun repeats no call and writes the same file
    first, calls = out.read_bytes(), srv.stats()["requests"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == first and srv.stats()["requests"] == calls
    assert json.loads(out.with_name("seeds_svit.manifest.json").read_text())["cached_calls"] == 16


def test_svit_from_scene_graphs_and_evolvable(tmp_path, server):
    out = tmp_path / "sg.jsonl"
    res = run_cli("seed", "svit", "--annotations", str(SEEDS / "scene_graphs"), "--image-root", str(SEEDS),
                  "--tasks", "conversation,description", "--model", "m", "--base-url", server.url, "--out", str(out))
    assert res.returncode == 0, res.stderr
    records = read_jsonl(out)
    assert {r["source"] for r in records} == {"svit/conversation", "svit/description"}
    assert len(records) == 8 and all((SEEDS / r["images"][0]).is_file() for r in records)
    run = tmp_path / "run"
    res = run_cli("evolve", str(out), "--out", str(run), "--model", "m", "--base-url", server.url,
                  "--image-root", str(SEEDS), "--rounds", "1")
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(run / "records.jsonl")) == 8


def test_graph_notes_carry_regions_with_unit_boxes():
    from evol.provision.loaders import load_provision

    graph = next(g for g in load_provision(SEEDS / "scene_graphs", masks_dir=None, image_root=SEEDS)
                 if not isinstance(g, Exception))
    rec = graph_record(graph)
    regions = rec.meta["regions"]
    assert regions and all(0 <= v <= 1 for r in regions for v in r["box"])
    shown = notes(rec)
    assert shown["caption"] == rec.caption and shown["regions"].count("\n") + 1 == min(len(regions), 24)
    assert all(o.label in shown["objects"] for o in rec.objects[:40])


def test_plans_are_per_record_and_requests_pass_the_filters():
    rec = Record(id="r", caption="A dog.", objects=[Obj(label="dog", box=[0.1, 0.1, 0.5, 0.5])])
    a = plan("conversation", rec, random.Random(1))
    assert a == plan("conversation", rec, random.Random(1))
    topics = {plan("conversation", rec, random.Random(s)).topic for s in range(40)}
    assert len(topics) == 8
    pool = description_requests()
    assert len(pool) == len(set(pool)) >= 12
    for request in pool:  # our own requests must never trip the leak checks
        item = Item(id="x", question=request, answer="A brown dog lies on green grass in the sun.")
        assert written_item_problem(item, rec, given_question=True) is None, request


def test_seed_commands_take_the_backend_flags(tmp_path):
    """`--backend` reaches the seed commands: a local backend reads --model as a path and says what is wrong."""
    missing = tmp_path / "no-such-model"
    for cmd in (("seed", "svit"), ("seed", "instruct", "--grow", "0")):
        res = run_cli(*cmd, "--annotations", str(SEEDS / "scene_graphs"), "--image-root", str(SEEDS),
                      "--out", str(tmp_path / "out.jsonl"), "--backend", "hf", "--model", str(missing))
        assert res.returncode != 0
        assert "does not exist" in res.stdout + res.stderr and str(missing) in res.stdout + res.stderr
        res = run_cli(*cmd, "--annotations", str(SEEDS / "scene_graphs"), "--out", str(tmp_path / "out.jsonl"),
                      "--backend", "carrier-pigeon", "--model", "m")
        assert res.returncode != 0 and "unknown backend" in res.stdout + res.stderr
