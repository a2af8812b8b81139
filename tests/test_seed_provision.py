"""`evol seed provision` end to end: shipped scene graphs -> seed records -> the evolver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SEEDS, read_jsonl, run_cli

GRAPHS = SEEDS / "scene_graphs"


def seed_args(out, *extra):
    return ["seed", "provision", "--annotations", str(GRAPHS), "--masks", str(GRAPHS / "seg_masks"),
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
    res = run_cli("seed", "provision", "--annotations", str(folder), "--masks", str(folder / "seg_masks"),
                  "--image-root", str(SEEDS), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert first in res.stderr and second in res.stderr and "2 images skipped" in res.stderr
    rejects = read_jsonl(tmp_path / "seeds.rejects.jsonl")
    assert len(rejects) == 2 and any(first in r["reason"] for r in rejects)
    images = {i for r in read_jsonl(out) for i in r["meta"]["image_ids"]}
    assert first not in images and second not in images and len(images) == len(det) - 2


def test_unknown_generator_and_missing_input_are_clear(tmp_path):
    res = run_cli(*seed_args(tmp_path / "x.jsonl", "--generators", "no_such_thing"))
    assert res.returncode == 1 and "no_such_thing" in res.stderr
    res = run_cli("seed", "provision", "--annotations", str(tmp_path / "nope"), "--out", str(tmp_path / "y.jsonl"))
    assert res.returncode == 1 and "nope" in res.stderr


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


def _sample_graphs():
    from evol.provision.loaders import load_provision

    return [g for g in load_provision(GRAPHS, masks_dir=GRAPHS / "seg_masks", image_root=SEEDS)
            if not isinstance(g, Exception)]


def test_records_built_without_validation_are_the_validated_records():
    """seed.py builds records directly, skipping pydantic validation: they must equal what
    validation gives, field for field, and the per-image rng the one derived_rng gives."""
    from evol.provision.base import Frequencies, GenContext
    from evol.provision.seed import _rng_maker, derived_rng, provision_records
    from evol.records import Record

    graphs = _sample_graphs()
    freq = Frequencies()
    for g in graphs:
        freq.add(g)
    records = list(provision_records(graphs, ctx=GenContext(freq=freq), seed=3, group_sizes=[2]))
    assert len(records) > 50 and any(len(r.images) == 2 for r in records)
    for r in records:
        again = Record.model_validate_json(r.model_dump_json())
        assert again == r and again.model_dump() == r.model_dump()
        assert r.model_fields_set == again.model_fields_set == set(Record.model_fields)
        assert r.items[0].model_fields_set == set(type(r.items[0]).model_fields)
        assert all(ob == type(ob)(label=ob.label, box=ob.box, image=ob.image) for ob in r.objects)
    make = _rng_maker(5, "img-1", "img-2")
    for name in ("count_objects", "sg_relation_qa"):
        assert make(name).getrandbits(64) == derived_rng(5, "img-1", "img-2", name).getrandbits(64)


def test_direct_model_builder_falls_back_when_the_model_does_not_fit():
    from pydantic import BaseModel

    from evol.provision.seed import _builder

    class Pair(BaseModel):
        a: int
        b: list[int] = []

    fast = _builder(Pair, ("a", "b"))({"a": 1, "b": [2]})
    assert fast == Pair(a=1, b=[2]) and fast.model_fields_set == {"a", "b"}
    slow = _builder(Pair, ("a",))({"a": 1})  # names other than the fields: plain model_construct
    assert slow == Pair(a=1) and slow.model_fields_set == {"a"}


def test_a_streamed_graph_is_freed_without_the_cycle_collector():
    """Per-graph caches must not form reference cycles through the graph: a stream would
    otherwise keep every image's masks until the cyclic collector happens to run."""
    import gc
    import weakref

    from evol.provision.base import Frequencies, GenContext
    from evol.provision.seed import provision_records

    graphs = _sample_graphs()
    assert all(g.masks is not None and g.depth is not None for g in graphs)
    freq = Frequencies()
    for g in graphs:
        freq.add(g)
    refs = [weakref.ref(g) for g in graphs]
    gc.collect()
    gc.disable()
    try:
        stream = iter(graphs)
        del graphs, g
        n = sum(1 for _ in provision_records(stream, ctx=GenContext(freq=freq), seed=1))
        assert n > 50
        assert [r() is None for r in refs[:-1]] == [True] * (len(refs) - 1)  # the last may stay cached
    finally:
        gc.enable()


def _single_names() -> list[str]:
    from evol.provision.base import GENERATORS
    import evol.provision.seed  # noqa: F401  (registers every generator)

    return sorted(name for name, gen in GENERATORS.items() if not gen.multi)


@pytest.mark.parametrize("name", _single_names())
def test_every_single_image_generator_yields_nothing_for_an_empty_graph(name):
    """No objects: nothing to ask, with or without a depth map and masks, and no retry loop."""
    import random
    import time

    import numpy as np

    from evol.provision.base import GENERATORS, GenContext
    from evol.provision.graph import SceneGraph

    bare = SceneGraph("e", "e.jpg", 64, 48, [], [], None, None).validate()
    mapped = SceneGraph("e", "e.jpg", 64, 48, [], [], np.full((48, 64), 128, np.uint8), []).validate()
    for g in (bare, mapped):
        t = time.perf_counter()
        assert GENERATORS[name].generate([g], random.Random(0), GenContext(), 1000) == []
        assert time.perf_counter() - t < 0.1


def test_multi_image_records_carry_every_images_boxes_and_leftovers_are_named(tmp_path):
    out = tmp_path / "multi.jsonl"
    graphs = SEEDS / "scene_graphs"
    res = run_cli("seed", "provision", "--annotations", str(graphs), "--masks", str(graphs / "seg_masks"),
                  "--image-root", str(SEEDS), "--out", str(out), "--images", "3", "--no-single", "--seed", "1")
    assert res.returncode == 0, res.stderr
    recs = read_jsonl(out)
    assert recs and all(len(r["images"]) == 3 for r in recs)
    for r in recs:
        assert {o["image"] for o in r["objects"]} == {0, 1, 2}, "boxes of every image, each saying which"
        assert all(0 <= v <= 1 for o in r["objects"] for v in o["box"])
    assert "the last 1 image(s) were too few" in " ".join(res.stderr.split())


# --workers: the same files from worker processes ------------------------------------------
def _many_graphs(folder, copies=4):
    """The shipped graphs `copies` times over (ids "<name>-<k>", interleaved), with bad
    images: two that fail on their stage entries (seen by the frequency pass) and two whose
    mask file is corrupt (found only when masks load, after grouping was planned)."""
    shutil.copytree(GRAPHS, folder, ignore=shutil.ignore_patterns("*.py", "*.md"))
    (folder / "seg_masks" / "broken.pkl").write_bytes(b"not a pickle")
    for stage in ("detection", "segmentation", "depth", "attributes", "relations"):
        path = folder / f"{stage}.json"
        data = json.loads(path.read_text())
        many = {f"{name}-{k}": json.loads(json.dumps(entry)) for k in range(copies) for name, entry in data.items()}
        if stage == "detection":
            ann = many["chelsea-1"]["annotation"]
            ann["bboxes"][0] = [ann["width"] - 5, 0, ann["width"] + 50, 10]  # box outside the image
        if stage == "relations":
            many["coffee-2"]["annotation"]["relations"].append([0, "near", 999])  # index out of range
        if stage == "segmentation":
            for bad in ("rocket-0", "astronaut-3"):
                many[bad]["annotation"]["seg_mask_id"] = "broken.pkl"
        path.write_text(json.dumps(many))
    return folder


def _outputs(out):
    return out.read_bytes(), out.with_name(out.stem + ".rejects.jsonl").read_bytes()


@pytest.mark.parametrize("extra", [[], ["--images", "2,3"]])
def test_workers_write_the_same_files_as_one_process(tmp_path, extra):
    got = {}
    for w in ("1", "2"):
        out = tmp_path / f"w{w}.jsonl"
        res = run_cli(*seed_args(out, *extra, "--workers", w))
        assert res.returncode == 0, res.stderr
        got[w] = (*_outputs(out), res.stderr.replace(str(out.with_suffix("")), "OUT"))
    assert got["1"] == got["2"] and len(got["1"][0]) > 1000


def test_workers_keep_bad_images_groups_and_rejects_in_order(tmp_path):
    folder = _many_graphs(tmp_path / "graphs")
    got = {}
    for w in ("1", "2"):
        out = tmp_path / f"w{w}.jsonl"
        res = run_cli("seed", "provision", "--annotations", str(folder), "--masks", str(folder / "seg_masks"),
                      "--image-root", str(SEEDS), "--out", str(out), "--images", "2,3", "--seed", "3",
                      "--workers", w, env={"PYTHONHASHSEED": str(w)})
        assert res.returncode == 0, res.stderr
        got[w] = (*_outputs(out), res.stderr.replace(str(out.with_suffix("")), "OUT"))
    assert got["1"] == got["2"]
    assert "4 images skipped" in " ".join(got["2"][2].split())
    rejects = [json.loads(line)["reason"] for line in got["2"][1].decode().splitlines()]
    assert [r.split("'")[1] for r in rejects] == ["rocket-0", "chelsea-1", "coffee-2", "astronaut-3"]
    groups = [r["meta"]["image_ids"] for r in map(json.loads, got["2"][0].decode().splitlines())
              if len(r["images"]) > 1]
    assert ["astronaut-0", "chelsea-0"] in groups and ["coffee-0", "astronaut-1", "coffee-1"] in groups


@pytest.mark.parametrize("sizes", [None, [2, 3], [4]])
def test_parallel_records_equal_one_process_records_when_guesses_fail(tmp_path, monkeypatch, sizes):
    """Small chunks, and masks that fail only when read: grouping planned from the frequency
    pass goes wrong and is planned again, and the records still equal `provision_records`'s,
    in worker processes and in this one (workers=1 runs the same chunks here)."""
    from evol.provision import parallel
    from evol.provision.base import Frequencies, GenContext
    from evol.provision.loaders import load_provision, read_provision
    from evol.provision.seed import SeedReport, provision_records

    folder = _many_graphs(tmp_path / "graphs")
    load = lambda masks: load_provision(folder, masks_dir=folder / "seg_masks" if masks else None, image_root=SEEDS)
    freq = Frequencies()
    for g in load(False):
        if not isinstance(g, Exception):
            freq.add(g)
    one = SeedReport()
    want = "".join(r.model_dump_json(exclude_none=True) + "\n" for r in provision_records(
        load(True), ctx=GenContext(freq=freq, mc_ratio=0.3), seed=9, group_sizes=sizes, report=one)).encode()
    plans = []
    plan = parallel._plan
    monkeypatch.setattr(parallel, "_plan", lambda *a: plans.append(a[3]) or plan(*a))
    for source, chunk, workers in ((read_provision(folder, masks_dir=folder / "seg_masks", image_root=SEEDS), 1, 2),
                                   (read_provision(folder, masks_dir=folder / "seg_masks", image_root=SEEDS), 3, 2),
                                   (read_provision(folder, masks_dir=folder / "seg_masks", image_root=SEEDS), 2, 1),
                                   (load, 2, 2), (load, 3, 1)):
        plans.clear()
        many = SeedReport()
        got = b"".join(parallel.provision_jsonl(source, ctx=GenContext(mc_ratio=0.3), seed=9, group_sizes=sizes,
                                                report=many, workers=workers, chunk_size=chunk))
        assert got == want
        assert (many.images, many.skipped, many.ungrouped) == (one.images, one.skipped, one.ungrouped)
        assert many.asked == one.asked and many.produced == one.produced
        if sizes and source is not load:
            assert len(plans) > 1  # a guess failed and the rest was planned again


def test_parallel_runs_under_spawn_too():
    """Where fork is missing, workers are spawned: what they are given must pickle."""
    from evol.provision import parallel
    from evol.provision.base import GenContext
    from evol.provision.loaders import read_provision

    def run(method):
        source = read_provision(GRAPHS, masks_dir=GRAPHS / "seg_masks", image_root=SEEDS)
        return b"".join(parallel.provision_jsonl(source, ctx=GenContext(), seed=4, group_sizes=[3], workers=2,
                                                 chunk_size=1, start_method=method))

    assert run("spawn") == run("fork") != b""
