"""Seeds from a folder laid out the way ProVision's public sample is: stage files named as
ProVision names them, mask pickles in `seg_masks/`, depth maps in `depth_masks/`, images in
`images/`. `write_seeds(annotations=DIR)` finds the arrays there with no masks/depth given."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np

from conftest import SEEDS, read_jsonl
from evol.provision.graph import GraphError, SceneGraph
from evol.provision.loaders import BESIDE_STAGE_FILES, load_provision, read_provision
from evol.provision.seed import write_seeds

SAMPLES = SEEDS / "scene_graphs"
# ProVision's file names for the stages (its notebooks/baseball_sample_annotations/)
PROVISION_NAMES = {
    "detection": "object-detection-annotations.json",
    "segmentation": "segmentation-annotations.json",
    "depth": "depth-estimation-annotations.json",
    "attributes": "image-attributes-annotations.json",
    "relations": "relation-annotations-parsed.json",
}
MASK_QUESTIONS = {"point_same_object", "point_different_object"}  # need instance masks
DEPTH_QUESTIONS = {"closer_point", "farther_point", "closer_object", "farther_object"}  # need depth maps


def provision_like(folder: Path, *, mask_name: str = "{id}_mask.pkl") -> Path:
    """The shipped sample graphs rewritten in ProVision's own layout under `folder`: plain
    (uncompressed) mask pickles named `<id>_mask.pkl` in seg_masks/, `<id>_depth.npy` in
    depth_masks/, the photos in images/, `data_path`s as ProVision records them, and a raw
    relation file beside the parsed one. `mask_name` is the seg_mask_id recorded."""
    (folder / "seg_masks").mkdir(parents=True)
    (folder / "depth_masks").mkdir()
    (folder / "images").mkdir()
    raw: dict = {}
    for stage, name in PROVISION_NAMES.items():
        data = json.loads((SAMPLES / f"{stage}.json").read_text())
        for image_id, entry in data.items():
            photo = Path(entry["data_path"]).name
            entry["data_path"] = f"sample_data/images/{photo}"
            entry["source"] = None
            ann = entry["annotation"]
            if stage == "segmentation":
                stored = gzip.decompress((SAMPLES / "seg_masks" / ann["seg_mask_id"]).read_bytes())
                (folder / "seg_masks" / f"{image_id}_mask.pkl").write_bytes(stored)
                ann["seg_mask_id"] = mask_name.format(id=image_id)
            if stage == "depth":
                shutil.copy(SAMPLES / "depth_masks" / ann["depth_mask_id"], folder / "depth_masks")
                assert ann["depth_mask_id"] == f"{image_id}_depth.npy"
            if stage == "detection":
                shutil.copy(SEEDS / photo, folder / "images" / photo)
                stale = image_id == "coffee"  # as in ProVision's sample: a raw entry with another size
                raw[image_id] = {"data_path": entry["data_path"], "source": None, "annotation": {
                    "width": 401 if stale else ann["width"], "height": 400 if stale else ann["height"],
                    "raw_relations": "Objects:\nregion1: thing\n\nRelations:\nregion1: region1 near"}}
        (folder / name).write_text(json.dumps(data, indent=4))
    (folder / "relation-annotations.json").write_text(json.dumps(raw, indent=4))
    return folder


def generators_of(path: Path) -> set[str]:
    return {r["meta"]["generator"] for r in read_jsonl(path)}


def test_provision_layout_gives_depth_and_mask_questions_with_no_folders_named(tmp_path):
    folder = provision_like(tmp_path / "annotations")
    out = tmp_path / "s.jsonl"
    result = write_seeds(out, annotations=folder, image_root=folder / "images", group_sizes=[2], seed=5)
    assert result.records > 0 and result.images == 4 and result.skipped == [] and result.notes == []
    assert result.masks_dir == folder / "seg_masks" and result.depth_dirs[0] == folder / "depth_masks"
    made = generators_of(out)
    assert made >= MASK_QUESTIONS and made >= DEPTH_QUESTIONS, sorted(made)
    for r in read_jsonl(out):
        assert all((folder / "images" / image).is_file() for image in r["images"])
    assert result.rejects.read_text() == ""
    # the defaults are ProVision's folders: naming them changes nothing, and the graphs,
    # hence every QA, are the shipped sample's (same ids, same image file names)
    named = tmp_path / "named.jsonl"
    write_seeds(named, annotations=folder, masks=folder / "seg_masks", depth=folder / "depth_masks",
                image_root=folder / "images", group_sizes=[2], seed=5)
    shipped = tmp_path / "shipped.jsonl"
    write_seeds(shipped, annotations=SAMPLES, image_root=SEEDS, group_sizes=[2], seed=5)
    assert out.read_bytes() == named.read_bytes() == shipped.read_bytes()


def test_nothing_usable_writes_no_record_and_says_why(tmp_path):
    folder = provision_like(tmp_path / "annotations")
    shutil.rmtree(folder / "depth_masks")  # the depth stage names files that are nowhere
    out = tmp_path / "s.jsonl"
    result = write_seeds(out, annotations=folder, image_root=folder / "images")
    assert result.records == 0 and result.images == 0 and len(result.skipped) == 4
    assert out.read_text() == "" and len(read_jsonl(result.rejects)) == 4
    (kind, count), = result.top_reasons()
    assert count == 4 and "depth file" in kind and "missing" in kind and str(folder) in kind
    assert "astronaut" not in kind  # the image-specific part is gone
    assert "depth file" in result.summary()[-1] and "(4 images)" in result.summary()[-1]


def test_raw_relations_alone_are_ignored_whatever_size_they_give(tmp_path):
    folder = provision_like(tmp_path / "annotations")
    (folder / PROVISION_NAMES["relations"]).unlink()  # only the raw (free-text) relations left
    graphs = {g.image_id: g for g in load_provision(folder, masks_dir=None, image_root=None)}
    assert all(isinstance(g, SceneGraph) and not g.relations and "not parsed" in g.meta["relations"]
               for g in graphs.values()), graphs


def test_depth_maps_beside_the_stage_files_still_work(tmp_path):
    """The layout evol's sample used to have: depth .npy files in the annotation folder."""
    folder = provision_like(tmp_path / "annotations")
    for p in (folder / "depth_masks").iterdir():
        p.rename(folder / p.name)
    (folder / "depth_masks").rmdir()
    graphs = list(load_provision(folder, masks_dir=None, image_root=None))
    assert all(isinstance(g, SceneGraph) and g.depth is not None for g in graphs)
    # and per file: one map left in depth_masks/, the rest beside the stage files
    (folder / "depth_masks").mkdir()
    (folder / "rocket_depth.npy").rename(folder / "depth_masks" / "rocket_depth.npy")
    graphs = {g.image_id: g for g in load_provision(folder, masks_dir=None, image_root=None)}
    assert all(isinstance(g, SceneGraph) and g.depth is not None for g in graphs.values())


def test_provision_mask_names_and_npy_masks_are_accepted(tmp_path):
    # ProVision's docs record seg_mask_id as <id>_mask.npy while its code writes <id>_mask.pkl
    folder = provision_like(tmp_path / "npy_id", mask_name="{id}_mask.npy")
    want = {g.image_id: g for g in load_provision(SAMPLES, masks_dir=BESIDE_STAGE_FILES, image_root=None)}
    got = {g.image_id: g for g in load_provision(folder, masks_dir=BESIDE_STAGE_FILES, image_root=None)}
    for image_id, g in got.items():
        assert isinstance(g, SceneGraph), g
        assert all(np.array_equal(a, b) for a, b in zip(g.masks, want[image_id].masks))
    # masks stored as one .npy array (objects, height, width): read without unpickling
    for image_id, g in want.items():
        (folder / "seg_masks" / f"{image_id}_mask.pkl").unlink()
        np.save(folder / "seg_masks" / f"{image_id}_mask.npy", np.stack(g.masks))
    got = {g.image_id: g for g in load_provision(folder, masks_dir=BESIDE_STAGE_FILES, image_root=None)}
    for image_id, g in got.items():
        assert isinstance(g, SceneGraph), g
        assert all(np.array_equal(a, b) for a, b in zip(g.masks, want[image_id].masks))


def test_one_stage_file_finds_the_folders_beside_it(tmp_path):
    """A single file carrying every stage's fields: seg_masks/ and depth_masks/ are looked
    for in that file's folder."""
    folder = provision_like(tmp_path / "annotations")
    merged: dict = {}
    for name in PROVISION_NAMES.values():
        for image_id, entry in json.loads((folder / name).read_text()).items():
            merged.setdefault(image_id, {**entry, "annotation": {}})["annotation"].update(entry["annotation"])
        (folder / name).unlink()
    (folder / "relation-annotations.json").unlink()
    one = folder / "all-stages.json"
    one.write_text(json.dumps(merged))
    images = read_provision(one, masks_dir=BESIDE_STAGE_FILES, image_root=None)
    assert images.masks_dir == folder / "seg_masks" and images.depth_dirs[0] == folder / "depth_masks"
    out = tmp_path / "s.jsonl"
    result = write_seeds(out, annotations=one, image_root=folder / "images")
    assert result.images == 4 and not result.skipped
    assert generators_of(out) >= MASK_QUESTIONS | DEPTH_QUESTIONS


def test_without_seg_masks_there_are_no_mask_questions_and_a_note(tmp_path):
    folder = provision_like(tmp_path / "annotations")
    shutil.rmtree(folder / "seg_masks")
    out = tmp_path / "s.jsonl"
    result = write_seeds(out, annotations=folder, image_root=folder / "images")
    assert result.records > 0 and result.images == 4 and result.masks_dir is None
    assert any("seg_masks" in note for note in result.notes)
    made = generators_of(out)
    assert not made & MASK_QUESTIONS and {"closer_point", "farther_point"} <= made


class _Sneaky:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_default_masks_folder_is_read_through_the_restricted_unpickler(tmp_path):
    folder = provision_like(tmp_path / "annotations")
    marker = tmp_path / "pwned"
    (folder / "seg_masks" / "chelsea_mask.pkl").write_bytes(pickle.dumps([_Sneaky(marker)]))
    # a mask id may not leave seg_masks/ for the annotation folder or anywhere else
    seg = json.loads((folder / PROVISION_NAMES["segmentation"]).read_text())
    seg["coffee"]["annotation"]["seg_mask_id"] = "../coffee_mask.pkl"
    (folder / PROVISION_NAMES["segmentation"]).write_text(json.dumps(seg))
    shutil.copy(folder / "seg_masks" / "coffee_mask.pkl", folder / "coffee_mask.pkl")
    graphs = {g.image_id: g for g in load_provision(folder, masks_dir=BESIDE_STAGE_FILES, image_root=None)}
    assert isinstance(graphs["chelsea"], GraphError) and "not allowed" in str(graphs["chelsea"])
    assert isinstance(graphs["coffee"], GraphError) and "outside" in str(graphs["coffee"])
    assert not marker.exists()
    assert isinstance(graphs["rocket"], SceneGraph) and graphs["rocket"].masks is not None


def test_layout_runs_the_same_in_worker_processes(tmp_path):
    folder = provision_like(tmp_path / "annotations")
    one = write_seeds(tmp_path / "one.jsonl", annotations=folder, image_root=folder / "images", group_sizes=[3])
    many = write_seeds(tmp_path / "many.jsonl", annotations=folder, image_root=folder / "images", group_sizes=[3],
                       workers=2)
    assert one.out.read_bytes() == many.out.read_bytes() and one.records == many.records > 0
    assert (one.asked, one.produced, one.ungrouped) == (many.asked, many.produced, many.ungrouped)


def test_the_readme_command_on_provision_layout(tmp_path):
    """`evol seed provision --annotations DIR --image-root DIR/images --out s.jsonl`, as the
    README gives it: depth and mask questions, exit 0; and with nothing usable, exit 1 with
    the commonest reason on the error line."""
    from conftest import run_cli

    folder = provision_like(tmp_path / "annotations")
    out = tmp_path / "s.jsonl"
    res = run_cli("seed", "provision", "--annotations", str(folder), "--image-root", str(folder / "images"),
                  "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert generators_of(out) >= MASK_QUESTIONS | DEPTH_QUESTIONS
    assert f"seed records from 4 images to {out}" in " ".join(res.stderr.split())
    shutil.rmtree(folder / "depth_masks")
    res = run_cli("seed", "provision", "--annotations", str(folder), "--image-root", str(folder / "images"),
                  "--out", str(tmp_path / "none.jsonl"))
    text = " ".join(res.stderr.split())
    assert res.returncode == 1 and "error: wrote 0 seed records (0 usable images, 4 skipped): 4 x depth file" in text, text
