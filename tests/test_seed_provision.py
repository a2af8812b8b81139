"""`evol seed provision` end to end: shipped scene graphs -> seed records -> the evolver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO, SEEDS, read_jsonl, run_cli

GRAPHS = SEEDS / "scene_graphs"


def seed_args(out, *extra):
    return ["seed", "provision", "--annotations", str(GRAPHS), "--masks", str(GRAPHS / "masks"),
            "--image-root", str(SEEDS), "--out", str(out), "--per-generator", "2", "--mc-ratio", "0.5",
            "--seed", "7", *extra]


def test_same_seed_same_file_under_any_hash_seed(tmp_path):
    outs = []
    for hs in ("1", "777"):
        out = tmp_path / f"seeds-{hs}.jsonl"
        res = subprocess.run([sys.executable, "-m", "evol.cli", *seed_args(out, "--images", "2")],
                             capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": hs})
        assert res.returncode == 0, res.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 1000
    other = tmp_path / "other.jsonl"
    assert run_cli(*seed_args(other)[:-1], "8").returncode == 0
    assert other.read_bytes() != outs[0]


def test_seed_records_cover_generators_and_feed_the_evolver(tmp_path, server):
    out = tmp_path / "seeds.jsonl"
    res = run_cli(*seed_args(out, "--images", "2,3"))
    assert res.returncode == 0, res.stderr
    records = read_jsonl(out)
    generators = {r["meta"]["generator"] for r in records}
    assert len(generators) >= 25, sorted(generators)
    assert any(len(r["images"]) > 1 for r in records)
    for r in records:
        assert r["source"] == "provision" and r["caption"]
        item = r["items"][0]
        assert item["question"] and item["answer"] and item["skills"]
        if item["options"]:
            assert item["answer"] in item["options"]
        for ob in r["objects"]:
            assert all(0 <= v <= 1 for v in ob["box"])
        for img in r["images"]:
            assert (SEEDS / img).is_file()
    some = tmp_path / "some.jsonl"
    some.write_text("".join(json.dumps(r) + "\n" for r in records[:6]))
    run = tmp_path / "run"
    res = run_cli("evolve", str(some), "--out", str(run), "--model", "m", "--base-url", server.url,
                  "--image-root", str(SEEDS), "--rounds", "1")
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(run / "records.jsonl")) == 6


def test_bad_graphs_are_named_skipped_and_counted(tmp_path):
    folder = tmp_path / "graphs"
    shutil.copytree(GRAPHS, folder)
    det = json.loads((folder / "detection.json").read_text())
    rel = json.loads((folder / "relations.json").read_text())
    first, second = sorted(det)[:2]
    w = det[first]["annotation"]["width"]
    det[first]["annotation"]["bboxes"][0] = [w - 5, 0, w + 50, 10]  # box outside the image
    rel[second]["annotation"]["relations"].append([0, "near", 999])  # index out of range
    (folder / "detection.json").write_text(json.dumps(det))
    (folder / "relations.json").write_text(json.dumps(rel))
    out = tmp_path / "seeds.jsonl"
    res = run_cli("seed", "provision", "--annotations", str(folder), "--masks", str(folder / "masks"),
                  "--image-root", str(SEEDS), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert first in res.stderr and second in res.stderr and "2 images skipped" in res.stderr
    rejects = read_jsonl(tmp_path / "seeds.rejects.jsonl")
    assert len(rejects) == 2 and any(first in r["reason"] for r in rejects)
    images = {i for r in read_jsonl(out) for i in r["meta"]["image_ids"]}
    assert first not in images and second not in images and len(images) == len(det) - 2


def test_unknown_generator_and_missing_input_are_clear(tmp_path):
    res = run_cli(*seed_args(tmp_path / "x.jsonl", "--generators", "no_such_thing"))
    assert res.returncode == 2 and "no_such_thing" in res.stderr
    res = run_cli("seed", "provision", "--annotations", str(tmp_path / "nope"), "--out", str(tmp_path / "y.jsonl"))
    assert res.returncode == 2 and "nope" in res.stderr


def test_demo_runs_the_whole_pipeline_offline(tmp_path):
    out = tmp_path / "demo"
    res = run_cli("demo", "--out", str(out), "--rounds", "1", "--backend", "openai")
    assert res.returncode == 0, res.stderr
    seeds = read_jsonl(out / "seeds.jsonl")
    records = read_jsonl(out / "records.jsonl")
    assert seeds and len(records) + sum(r["final"] for r in read_jsonl(out / "rejects.jsonl")) == len(seeds)
    assert json.loads((out / "llava.json").read_text())
    assert json.loads((out / "manifest.json").read_text())["counts"]["records_out"] == len(records)


def test_every_generator_names_skills_from_the_shared_ability_list():
    """Seeds and evolved items must speak of the same nine abilities (see prompts/evolve_common.md)."""
    import evol.provision.generators  # noqa: F401
    from evol.provision.base import GENERATORS

    nine = {"grounding", "referencing", "calculating", "OCR", "existence", "relationship description",
            "context understanding", "behaviour prediction", "knowledge integration"}
    prompt = (REPO / "prompts" / "evolve_common.md").read_text()
    assert all(f"- {a}:" in prompt for a in nine)
    assert len(GENERATORS) == 38 and sum(g.multi for g in GENERATORS.values()) == 14
    for name, gen in GENERATORS.items():
        assert gen.skills and set(gen.skills) <= nine, (name, gen.skills)
