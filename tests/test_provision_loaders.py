"""Loading scene graphs: ProVision stage files (the shipped samples and broken copies of
them), Visual Genome, and the compact JSON form."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from conftest import copy_samples, edit_stage
from evol.provision.graph import GraphError, Relation, SceneGraph
from evol.provision.loaders import common, graph_from_json, graph_to_json, load_provision, load_visual_genome
from evol.provision.vocab import attribute_category, is_countable, normalize_attribute

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "seeds"
SAMPLES = SEEDS / "scene_graphs"
EXPECTED_OBJECTS = {"astronaut": 10, "chelsea": 7, "coffee": 6, "rocket": 9}


def load_all(folder: Path, masks: bool = True, **kw) -> dict[str, SceneGraph | GraphError]:
    out = {}
    for g in load_provision(folder, masks_dir=folder / "seg_masks" if masks else None,
                            image_root=kw.pop("image_root", SEEDS), **kw):
        assert g.image_id not in out
        out[g.image_id] = g
    return out


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A private copy of the shipped samples to break."""
    return copy_samples(tmp_path / "sg")


def find(g: SceneGraph, label: str) -> int:
    return next(i for i, o in enumerate(g.objects) if o.label == label)


def has_relation(g: SceneGraph, subject: str, predicate: str, obj: str) -> bool:
    return any(g.objects[r.subject].label == subject and r.predicate == predicate
               and g.objects[r.object].label == obj for r in g.relations)


# --- the shipped samples ------------------------------------------------------------------
def test_samples_load_complete():
    graphs = load_all(SAMPLES)
    assert list(graphs) == list(EXPECTED_OBJECTS)
    for image_id, g in graphs.items():
        assert isinstance(g, SceneGraph), g
        assert len(g.objects) == EXPECTED_OBJECTS[image_id]
        assert (SEEDS / g.image).is_file()  # stale data_path -> file name under image_root
        assert g.depth is not None and g.depth.dtype == np.uint8 and g.depth.shape == (g.height, g.width)
        assert g.masks is not None and len(g.masks) == len(g.objects)
        for ob, m in zip(g.objects, g.masks):
            x1, y1, x2, y2 = ob.box
            assert m.shape == (g.height, g.width) and m.any()
            assert not m[:, :x1].any() and not m[:y1].any()  # every mask lies inside its box
            assert not m[:, x2:].any() and not m[y2:].any()
        assert g.relations and all(0 <= r.subject < len(g.objects) and 0 <= r.object < len(g.objects)
                                   for r in g.relations)
        with_vocab = [a for o in g.objects for a in o.attributes if attribute_category(a)]
        assert len(with_vocab) == sum(len(o.attributes) for o in g.objects), image_id
    coffee, rocket, astronaut = graphs["coffee"], graphs["rocket"], graphs["astronaut"]
    assert has_relation(coffee, "cup", "on", "saucer")
    assert has_relation(coffee, "coffee", "in", "cup")
    assert has_relation(astronaut, "woman", "wearing", "flight suit")
    assert rocket.label_counts["tower"] == 4
    assert {"white", "black"} <= set(astronaut.objects[find(astronaut, "helmet")].attributes)
    assert coffee.source == "evol-samples" and coffee.meta["seg_mask_id"] == "coffee.pkl.gz"


def test_painted_depth_points_the_right_way():
    """Higher depth = closer: objects in front score above the surfaces behind them."""
    graphs = load_all(SAMPLES)
    c = graphs["coffee"]
    d = c.object_depths
    for front in ("cup", "saucer", "spoon"):
        assert d[find(c, front)] > d[find(c, "table")] + 50, (front, d)
    assert d[find(c, "cup")] > d[find(c, "saucer")]  # the cup stands on the saucer
    # raw pixels too: inside the cup is nearer than the table's far top-left corner,
    # and the table comes nearer down the frame
    assert c.depth[150, 290] > c.depth[20, 20] + 80
    assert c.depth[380, 580] > c.depth[20, 20] + 50
    a = graphs["astronaut"]
    d = a.object_depths
    helmet = find(a, "helmet")
    for behind in ("table", "flag", "woman", "space shuttle model"):
        assert d[helmet] > d[find(a, behind)], (behind, d)
    assert a.depth[450, 400] > a.depth[300, 450] + 100  # helmet vs the table behind it


def test_masks_are_not_loaded_without_masks_dir(monkeypatch):
    def refuse(path):
        raise AssertionError(f"opened a pickle: {path}")

    monkeypatch.setattr(common, "load_mask_file", refuse)
    graphs = load_all(SAMPLES, masks=False)
    assert list(graphs) == list(EXPECTED_OBJECTS)
    for g in graphs.values():
        assert isinstance(g, SceneGraph) and g.masks is None and g.depth is not None
        assert "not loaded" in g.meta["masks"] and g.meta["seg_mask_id"].endswith(".pkl.gz")


def test_image_path_relative_to_image_root(copy):
    def point_into_root(data):
        data["coffee"]["data_path"] = str(SEEDS / "coffee.jpg")

    for stage in ("detection", "segmentation", "depth", "attributes", "relations"):
        edit_stage(copy, stage, point_into_root)
    graphs = load_all(copy, image_root=REPO)
    assert graphs["coffee"].image == "seeds/coffee.jpg"
    assert graphs["rocket"].image == "rocket.jpg"  # stale path: file name only
    assert graphs["coffee"].meta["data_path"] == str(SEEDS / "coffee.jpg")


# --- broken inputs: one image fails, named; the rest still load ----------------------------
def _extra_attributes_entry(folder):
    edit_stage(folder, "attributes", lambda d: d.update(
        ghost={"data_path": "ghost.jpg", "source": None,
               "annotation": {"width": 10, "height": 10, "attributes": [["red"]]}}))
    return "ghost", "no detection entry"


def _box_outside(folder):
    def change(d):
        d["chelsea"]["annotation"]["bboxes"][1] = [135, 85, 500, 148]  # image is 451 wide
    edit_stage(folder, "detection", change)
    edit_stage(folder, "segmentation", change)
    return "chelsea", "outside"


def _relation_past_objects(folder):
    edit_stage(folder, "relations", lambda d: d["coffee"]["annotation"]["relations"].append([0, "on", 17]))
    return "coffee", "points past the 6 objects"


def _mask_shape(folder):
    masks = [sparse.csr_matrix(np.ones((100, 100), bool)) for _ in range(9)]
    (folder / "seg_masks" / "rocket.pkl.gz").write_bytes(gzip.compress(pickle.dumps(masks)))
    return "rocket", "mask 0 shape (100, 100)"


def _missing_npy(folder):
    (folder / "depth_masks" / "astronaut_depth.npy").unlink()
    return "astronaut", "depth file 'astronaut_depth.npy' is missing"


def _corrupt_npy(folder):
    (folder / "depth_masks" / "astronaut_depth.npy").write_bytes(b"\x93NUMPY garbage")
    return "astronaut", "cannot be read"


def _depth_shape(folder):
    np.save(folder / "depth_masks" / "chelsea_depth.npy", np.zeros((301, 451), np.uint8))
    return "chelsea", "depth map shape (301, 451)"


def _corrupt_pickle(folder):
    (folder / "seg_masks" / "astronaut.pkl.gz").write_bytes(b"not a pickle")
    return "astronaut", "mask file 'astronaut.pkl.gz' cannot be read"


def _missing_pickle(folder):
    (folder / "seg_masks" / "coffee.pkl.gz").unlink()
    return "coffee", "mask file 'coffee.pkl.gz' is missing"


def _attribute_count(folder):
    edit_stage(folder, "attributes", lambda d: d["rocket"]["annotation"]["attributes"].pop())
    return "rocket", "8 attribute lists for 9 objects"


def _segmentation_labels(folder):
    edit_stage(folder, "segmentation", lambda d: d["coffee"]["annotation"]["labels"].reverse())
    return "coffee", "segmentation labels differ"


def _missing_relations_entry(folder):
    edit_stage(folder, "relations", lambda d: d.pop("chelsea"))
    return "chelsea", "no relations entry"


BREAKAGES = [_extra_attributes_entry, _box_outside, _relation_past_objects, _mask_shape, _missing_npy,
             _corrupt_npy, _depth_shape, _corrupt_pickle, _missing_pickle, _attribute_count,
             _segmentation_labels, _missing_relations_entry]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_gives_graph_error_for_that_image_only(copy, breakage):
    bad_id, reason = breakage(copy)
    graphs = load_all(copy)
    err = graphs.pop(bad_id)
    assert isinstance(err, GraphError), err
    assert err.image_id == bad_id and reason in str(err) and repr(bad_id) in str(err)
    good = {k: v for k, v in graphs.items() if k in EXPECTED_OBJECTS}
    assert len(good) == len(EXPECTED_OBJECTS) - (bad_id in EXPECTED_OBJECTS)
    assert all(isinstance(g, SceneGraph) for g in good.values())


def test_missing_stage_file_raises_before_iterating(tmp_path):
    files = [SAMPLES / "detection.json", tmp_path / "attributes.json"]
    with pytest.raises(FileNotFoundError, match="attributes.json"):
        load_provision(files, masks_dir=None, image_root=None)  # no next() needed


def test_explicit_files_and_depth_dir(tmp_path):
    depth_dir = tmp_path / "depth"
    depth_dir.mkdir()
    for p in (SAMPLES / "depth_masks").glob("*_depth.npy"):
        shutil.copy(p, depth_dir / p.name)
    files = [SAMPLES / "attributes.json", SAMPLES / "depth.json", SAMPLES / "detection.json"]
    graphs = list(load_provision(files, masks_dir=None, depth_dir=depth_dir, image_root=None))
    assert [g.image_id for g in graphs] == list(EXPECTED_OBJECTS)  # detection order
    assert all(isinstance(g, SceneGraph) and g.depth is not None and not g.relations for g in graphs)
    assert graphs[0].objects[0].attributes  # attributes merged in
    assert "seg_mask_id" not in graphs[0].meta


def test_raw_relations_are_ignored(copy):
    raw = {k: {**v, "annotation": {"width": v["annotation"]["width"], "height": v["annotation"]["height"],
                                   "raw_relations": "the cup is on the saucer"}}
           for k, v in json.loads((copy / "relations.json").read_text()).items()}
    (copy / "raw_relations.json").write_text(json.dumps(raw))
    graphs = load_all(copy)  # parsed relations present: raw ones play no part
    assert has_relation(graphs["coffee"], "cup", "on", "saucer") and "relations" not in graphs["coffee"].meta
    (copy / "relations.json").unlink()
    (copy / "notes.json").write_text(json.dumps(["not", "a", "stage", "file"]))
    with pytest.warns(UserWarning, match="notes.json"):
        graphs = load_all(copy)
    assert all(isinstance(g, SceneGraph) and not g.relations and "not parsed" in g.meta["relations"]
               for g in graphs.values())


def test_normalisation_of_labels_attributes_and_predicates(copy):
    def change_det(d):
        d["coffee"]["annotation"]["labels"][0] = "  Cup "

    def change_seg(d):
        d["coffee"]["annotation"]["labels"][0] = "cup"

    def change_attrs(d):
        d["coffee"]["annotation"]["attributes"][0] = ["Grey and White", "red", "colour ful"]

    def change_rels(d):
        d["coffee"]["annotation"]["relations"] = [[3, "of", 0], [0, " ON ", 1], ["2", "next  to", 0]]

    edit_stage(copy, "detection", change_det)
    edit_stage(copy, "segmentation", change_seg)
    edit_stage(copy, "attributes", change_attrs)
    edit_stage(copy, "relations", change_rels)
    g = load_all(copy)["coffee"]
    assert isinstance(g, SceneGraph), g
    assert g.objects[0].label == "cup"
    assert g.objects[0].attributes == ["gray", "white", "red", "color ful"]
    assert g.relations == [Relation(0, "on", 1), Relation(2, "next to", 0)]
    assert g.meta["dropped_relations"] == 1


def test_vocabulary():
    assert normalize_attribute("Black and White") == ["black", "white"]
    assert normalize_attribute(" grey, metalic.") == ["gray", "metallic"]
    assert normalize_attribute("upside down") == ["upside down"]
    assert attribute_category("gray") == "color" and attribute_category("wooden") == "material"
    assert attribute_category("zorblax") is None
    assert is_countable("cups") and is_countable("benches") and is_countable("people")
    assert is_countable("teddy bears") and not is_countable("batter") and not is_countable("grass")


# --- safety of mask pickles ------------------------------------------------------------------
class _Sneaky:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_mask_pickle_cannot_run_code(copy, tmp_path):
    marker = tmp_path / "pwned"
    (copy / "seg_masks" / "chelsea.pkl.gz").write_bytes(pickle.dumps([_Sneaky(marker)]))
    err = load_all(copy)["chelsea"]
    assert isinstance(err, GraphError) and "not allowed" in str(err)
    assert not marker.exists()


def test_mask_id_cannot_leave_masks_dir(copy):
    edit_stage(copy, "segmentation", lambda d: d["rocket"]["annotation"].update(seg_mask_id="../rocket.pkl.gz"))
    shutil.copy(copy / "seg_masks" / "rocket.pkl.gz", copy / "rocket.pkl.gz")
    err = load_all(copy)["rocket"]
    assert isinstance(err, GraphError) and "outside masks_dir" in str(err)


# --- Visual Genome -----------------------------------------------------------------------------
def write_vg(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = [
        {"image_id": 1, "width": 800, "height": 600, "url": "https://example.org/VG_100K/1.jpg"},
        {"image_id": 2, "width": 400, "height": 300, "url": "https://example.org/VG_100K_2/2.jpg"},
        {"image_id": 3, "width": 100, "height": 100, "url": "https://example.org/VG_100K/3.jpg"},
    ]
    objects = [
        {"image_id": 1, "objects": [
            {"object_id": 10, "x": 100, "y": 200, "w": 50, "h": 80, "names": ["Man"], "synsets": ["man.n.01"]},
            {"object_id": 11, "x": 300, "y": 100, "w": 200, "h": 150, "names": ["horse", "pony"]},
            {"object_id": 12, "x": 750, "y": 550, "w": 100, "h": 100, "names": ["grass"]},  # clipped
            {"object_id": 13, "x": 10, "y": 10, "w": 0, "h": 30, "names": ["speck"]},  # empty: dropped
        ]},
        {"image_id": 2, "objects": [{"object_id": 20, "x": 0, "y": 0, "w": 40, "h": 40, "names": ["dog"]}]},
        {"image_id": 3, "objects": []},
    ]
    attributes = [
        {"image_id": 1, "attributes": [
            {"object_id": 10, "names": ["man"], "attributes": ["Standing", "grey and white "]},
            {"object_id": 11, "names": ["horse"], "attributes": ["brown"]},
            {"object_id": 99, "names": ["ghost"], "attributes": ["invisible"]},
        ]},
        {"image_id": 2, "attributes": [{"object_id": 20, "names": ["dog"]}]},
        {"image_id": 3, "attributes": []},
    ]
    relationships = [
        {"image_id": 1, "relationships": [
            {"relationship_id": 1, "predicate": "RIDING", "subject": {"object_id": 10}, "object": {"object_id": 11}},
            {"relationship_id": 2, "predicate": "of", "subject": {"object_id": 11}, "object": {"object_id": 10}},
            {"relationship_id": 3, "predicate": "wears", "subject": {"object_id": 10},
             "object": {"object_id": 14, "x": 110, "y": 190, "w": 30, "h": 20, "name": "hat"}},
            {"relationship_id": 4, "predicate": "on", "subject": {"object_id": 11}, "object": {"object_id": 12}},
        ]},
        {"image_id": 2, "relationships": []},
        {"image_id": 3, "relationships": []},
    ]
    for name, data in (("image_data", images), ("objects", objects), ("attributes", attributes),
                       ("relationships", relationships)):
        (folder / f"{name}.json").write_text(json.dumps(data))


def test_visual_genome(tmp_path):
    vg = tmp_path / "vg"
    write_vg(vg)
    (tmp_path / "images" / "VG_100K_2").mkdir(parents=True)
    (tmp_path / "images" / "VG_100K_2" / "2.jpg").write_bytes(b"")
    graphs = list(load_visual_genome(vg, image_root=tmp_path / "images"))
    assert [g.image_id for g in graphs] == ["1", "2", "3"]
    g1, g2, g3 = graphs
    assert all(isinstance(g, SceneGraph) for g in graphs)
    assert (g1.width, g1.height, g1.image) == (800, 600, "1.jpg")
    assert g2.image == "VG_100K_2/2.jpg"  # found under image_root
    assert [o.label for o in g1.objects] == ["man", "horse", "grass", "hat"]
    assert g1.objects[0].box == (100, 200, 150, 280)
    assert g1.objects[2].box == (750, 550, 800, 600)
    assert g1.objects[0].attributes == ["standing", "gray", "white"]
    assert g1.objects[1].attributes == ["brown"]
    assert g1.relations == [Relation(0, "riding", 1), Relation(0, "wears", 3), Relation(1, "on", 2)]
    assert g1.meta["clipped_boxes"] == 1 and g1.meta["dropped_objects"] == 1 and g1.meta["dropped_relations"] == 1
    assert g3.objects == [] and g2.objects[0].attributes == []


def test_visual_genome_selected_ids_and_missing_entries(tmp_path):
    vg = tmp_path / "vg"
    write_vg(vg)
    got = list(load_visual_genome(vg, image_ids=[2, "77"]))
    assert [g.image_id for g in got] == ["2", "77"]
    assert isinstance(got[0], SceneGraph) and got[0].objects[0].label == "dog"
    assert isinstance(got[1], GraphError) and "not in image_data.json" in str(got[1])
    # an image with no relationships entry is an error for that image only
    rels = json.loads((vg / "relationships.json").read_text())
    (vg / "relationships.json").write_text(json.dumps([r for r in rels if r["image_id"] != 2]))
    got = {g.image_id: g for g in load_visual_genome(vg)}
    assert isinstance(got["2"], GraphError) and "no relationships entry" in str(got["2"])
    assert isinstance(got["1"], SceneGraph) and isinstance(got["3"], SceneGraph)
    (vg / "objects.json").unlink()
    with pytest.raises(FileNotFoundError, match="objects.json"):
        load_visual_genome(vg)


# --- compact JSON -----------------------------------------------------------------------------
def test_graph_json_round_trip():
    g = load_all(SAMPLES)["astronaut"]
    line = json.dumps(graph_to_json(g))
    d = json.loads(line)
    assert d["depth"] == "astronaut_depth.npy" and d["masks"] == "astronaut.pkl.gz"
    back = graph_from_json(d, depth_dir=SAMPLES / "depth_masks", masks_dir=SAMPLES / "seg_masks")
    assert [(o.label, tuple(o.box), o.attributes) for o in back.objects] == \
        [(o.label, tuple(o.box), o.attributes) for o in g.objects]
    assert back.relations == g.relations and (back.width, back.height, back.image) == (g.width, g.height, g.image)
    assert np.array_equal(back.depth, g.depth)
    assert all(np.array_equal(a, b) for a, b in zip(back.masks, g.masks))
    no_arrays = graph_from_json(d)
    assert no_arrays.depth is None and no_arrays.masks is None
    d["relations"].append([0, "on", 40])
    with pytest.raises(GraphError, match="points past"):
        graph_from_json(d)
