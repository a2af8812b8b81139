"""`write_seeds`, the whole seed-provision run as a library call: settings checked before
anything is written, one pipeline for any number of workers, files written atomically,
skip reasons grouped by kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SEEDS, copy_samples, edit_stage, read_jsonl
from evol.provision import parallel
from evol.provision.seed import ProvisionResult, reason_kind, write_seeds

SAMPLES = SEEDS / "scene_graphs"


def many_images(folder: Path, copies: int = 3) -> Path:
    """The shipped graphs `copies` times over (ids "<name>-<k>"), with an image whose box
    leaves the picture and one whose mask file is corrupt (found only when masks load)."""
    copy_samples(folder)
    (folder / "seg_masks" / "broken.pkl").write_bytes(b"not a pickle")
    for stage in ("detection", "segmentation", "depth", "attributes", "relations"):
        data = json.loads((folder / f"{stage}.json").read_text())
        many = {f"{name}-{k}": json.loads(json.dumps(entry)) for k in range(copies) for name, entry in data.items()}
        if stage == "detection":
            ann = many["chelsea-1"]["annotation"]
            ann["bboxes"][0] = [ann["width"] - 5, 0, ann["width"] + 50, 10]
        if stage == "segmentation":
            many["rocket-0"]["annotation"]["seg_mask_id"] = "broken.pkl"
        (folder / f"{stage}.json").write_text(json.dumps(many))
    return folder


@pytest.mark.parametrize("bad, message", [
    (dict(), "exactly one of annotations"),
    (dict(annotations=SAMPLES, vg=SAMPLES), "exactly one of annotations"),
    (dict(annotations=SAMPLES, generators=["no_such_generator"]), "no_such_generator"),
    (dict(annotations=SAMPLES, group_sizes=[1, 2]), "group size"),
    (dict(annotations=SAMPLES, group_sizes=[]), "group_sizes"),
    (dict(annotations=SAMPLES, per_generator=0), "per_generator"),
    (dict(annotations=SAMPLES, choices=1), "choices"),
    (dict(annotations=SAMPLES, mc_ratio=1.5), "mc_ratio"),
    (dict(annotations=SAMPLES, workers=0), "workers"),
    (dict(annotations=SAMPLES, depth_gap=300), "depth_gap"),
    (dict(annotations=SAMPLES, single=False), "no generator to run"),
    (dict(vg=SAMPLES, masks=SAMPLES / "seg_masks"), "masks and depth"),
    (dict(annotations=SAMPLES, vg_ids=["1"]), "vg_ids"),
])
def test_bad_settings_raise_before_anything_is_written(tmp_path, bad, message):
    out = tmp_path / "s.jsonl"
    with pytest.raises(ValueError, match=message):
        write_seeds(out, **bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing, message", [
    (dict(annotations="NOPE"), "NOPE"),
    (dict(annotations=SAMPLES, masks="NOPE"), "masks_dir"),
    (dict(annotations=SAMPLES, depth="NOPE"), "depth_dir"),
    (dict(annotations=SAMPLES, image_root="NOPE"), "image_root"),
    (dict(vg="NOPE"), "image_data.json"),
])
def test_missing_inputs_raise_file_not_found(tmp_path, missing, message):
    missing = {k: (tmp_path / v if v == "NOPE" else v) for k, v in missing.items()}
    with pytest.raises(FileNotFoundError, match=message):
        write_seeds(tmp_path / "s.jsonl", **missing)
    assert not (tmp_path / "s.jsonl").exists()


def test_result_counts_what_was_written(tmp_path):
    result = write_seeds(tmp_path / "out" / "s.jsonl", annotations=SAMPLES, image_root=SEEDS, group_sizes=[3],
                         per_generator=1, seed=2)
    assert isinstance(result, ProvisionResult)
    records = read_jsonl(result.out)
    assert result.records == len(records) > 0 and result.images == 4 and result.ungrouped == 1
    assert result.rejects == tmp_path / "out" / "s.rejects.jsonl" and result.rejects.read_text() == ""
    made = {}
    for r in records:
        made[r["meta"]["generator"]] = made.get(r["meta"]["generator"], 0) + 1
    assert {k: v for k, v in result.produced.items() if v} == made
    assert sum(result.asked.values()) >= sum(result.produced.values())
    assert result.short == {k: (result.produced[k], a) for k, a in sorted(result.asked.items())
                            if result.produced[k] < a}
    lines = result.summary()
    assert lines[0].startswith(f"wrote {result.records} seed records from 4 images")
    assert any("the last 1 image(s) were too few" in line and "(3)" in line for line in lines)
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.parametrize("group_sizes", [None, [2, 3]])
def test_any_number_of_workers_writes_the_same_files_and_result(tmp_path, group_sizes):
    folder = many_images(tmp_path / "graphs")
    got = {}
    for workers in (1, 2, 3):
        r = write_seeds(tmp_path / f"w{workers}.jsonl", annotations=folder, image_root=SEEDS, group_sizes=group_sizes,
                        seed=4, mc_ratio=0.3, workers=workers)
        got[workers] = (r.out.read_bytes(), r.rejects.read_bytes(), r.records, r.images, r.skipped, r.asked,
                        r.produced, r.ungrouped)
    assert got[1] == got[2] == got[3]
    text, rejects, records, images, skipped, *_ = got[1]
    assert records == text.count(b"\n") > 0 and images == 10 and len(skipped) == 2
    assert [json.loads(line) for line in rejects.decode().splitlines()] == [
        {"stage": "scene graph", "reason": reason} for reason in skipped]
    assert "rocket-0" in skipped[0] and "chelsea-1" in skipped[1]


def test_visual_genome_through_write_seeds(tmp_path):
    from test_provision_loaders import write_vg

    write_vg(tmp_path / "vg")
    every = write_seeds(tmp_path / "all.jsonl", vg=tmp_path / "vg")
    some = write_seeds(tmp_path / "some.jsonl", vg=tmp_path / "vg", vg_ids=[1, "77"])
    assert every.images == 3 and every.records > 0 and every.masks_dir is None
    assert some.images == 1 and len(some.skipped) == 1 and "77" in some.skipped[0]
    assert {i for r in read_jsonl(some.out) for i in r["meta"]["image_ids"]} == {"1"}
    again = write_seeds(tmp_path / "w2.jsonl", vg=tmp_path / "vg", workers=2)
    assert again.out.read_bytes() == every.out.read_bytes()


def test_a_failed_run_leaves_the_previous_file_alone(tmp_path, monkeypatch):
    out = tmp_path / "s.jsonl"
    first = write_seeds(out, annotations=SAMPLES, image_root=SEEDS)
    before = out.read_bytes()
    real = parallel.provision_jsonl

    def breaks_midway(*args, **kwargs):
        blocks = real(*args, **kwargs)
        yield next(blocks)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(parallel, "provision_jsonl", breaks_midway)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_seeds(out, annotations=SAMPLES, image_root=SEEDS, seed=9)
    assert out.read_bytes() == before and first.records == before.count(b"\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "s.rejects.jsonl"]


def test_skip_reasons_are_grouped_by_kind(tmp_path):
    folder = copy_samples(tmp_path / "graphs")
    for name in ("astronaut", "chelsea", "coffee"):
        (folder / "depth_masks" / f"{name}_depth.npy").unlink()
    edit_stage(folder, "attributes", lambda d: d["rocket"]["annotation"]["attributes"].pop())
    result = write_seeds(tmp_path / "s.jsonl", annotations=folder, image_root=SEEDS)
    assert result.records == 0 and len(result.skipped) == 4
    where = f"{folder / 'depth_masks'} or {folder}"
    assert result.top_reasons() == [(f"depth file '…' is missing from {where}", 3),
                                    ("N attribute lists for N objects", 1)]
    assert result.top_reasons(1) == [(f"depth file '…' is missing from {where}", 3)]
    assert "(3 images)" in result.summary()[-1] and "(1 image)" in result.summary()[-1]


def test_reason_kind_strips_what_is_particular_to_an_image():
    assert reason_kind("image 'a-1': mask file 'a-1.pkl' cannot be read: invalid load key, 'x'.") == \
        "mask file '…' cannot be read: invalid load key, '…'."
    assert reason_kind("image \"it's\": object 3 box [1, 2, 900, 4] lies outside the 640x480 image") == \
        "object N box […] lies outside the 640x480 image"
    assert reason_kind("image '7': relation 2 [0, 'on', 17] points past the 6 objects") == \
        "relation N […] points past the N objects"
    assert reason_kind("image 'x': depth file 'x.npy' is missing from /data/run-3/depth_masks") == \
        "depth file '…' is missing from /data/run-3/depth_masks"


def test_runs_in_threads_side_by_side_do_not_mix(tmp_path):
    """workers=1 keeps its state per run: two runs at once write what each writes alone."""
    from concurrent.futures import ThreadPoolExecutor

    settings = [dict(seed=1, group_sizes=[2]), dict(seed=2, per_generator=3, mc_ratio=0.2)]
    alone = [write_seeds(tmp_path / f"alone{k}.jsonl", annotations=SAMPLES, image_root=SEEDS, **kw).out.read_bytes()
             for k, kw in enumerate(settings)]
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(write_seeds, tmp_path / f"together{k}.jsonl", annotations=SAMPLES, image_root=SEEDS, **kw)
                for k, kw in enumerate(settings)]
        together = [job.result().out.read_bytes() for job in jobs]
    assert together == alone and alone[0] != alone[1]
