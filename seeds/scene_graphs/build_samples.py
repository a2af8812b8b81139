"""Write the sample scene graphs in this folder from the hand-written annotations below.

The objects, boxes, attributes and relations were written for this project by looking at
the photos in `seeds/`. Masks are simple shapes (ellipses, polygons, rectangles) drawn
inside each box; depth maps are hand-made layer paintings (higher = closer).

    python seeds/scene_graphs/build_samples.py

Outputs, in ProVision's own layout: the five stage files (detection/segmentation/depth/
attributes/relations .json), `depth_masks/<id>_depth.npy` (one per image), and
`seg_masks/<id>.pkl.gz` (a gzip-compressed pickled list of scipy sparse boolean masks, one
per object).
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import sparse

HERE = Path(__file__).resolve().parent
SEEDS = HERE.parent
STALE_ROOT = "/datasets/provision/images"  # data_path as a pipeline elsewhere would record it

# Each object: label, box [x1, y1, x2, y2] in pixels, detection score, attributes, mask
# shapes (drawn, then clipped to the box), and for hand-made depth a value 0-255 (higher =
# closer), optionally a (top, bottom) pair for surfaces that come nearer down the frame.
E = "ellipse"
P = "polygon"
R = "rect"
A = "annulus"

SAMPLES = {
    "astronaut": {
        "file": "astronaut.jpg", "size": (512, 512), "background": (30, 50),
        "objects": [
            ("woman", [20, 14, 368, 512], 0.97, ["smiling", "happy", "posing", "female"],
             [(E, [152, 14, 302, 195]), (P, [(30, 300), (110, 235), (130, 170), (300, 170), (330, 260),
                                             (365, 330), (368, 512), (20, 512)])], 150),
            ("hair", [152, 14, 302, 125], 0.88, ["short", "light brown", "wavy"],
             [(E, [152, 14, 302, 160])], 155),
            ("face", [172, 60, 280, 190], 0.93, ["smiling"], [(E, [172, 60, 280, 190])], 165),
            ("flight suit", [20, 150, 368, 512], 0.91, ["orange"],
             [(P, [(30, 300), (110, 235), (130, 170), (300, 170), (330, 260), (365, 330), (368, 512),
                   (20, 512)])], 160),
            ("helmet", [275, 342, 512, 512], 0.95, ["white", "black", "shiny", "round"],
             [(E, [275, 335, 515, 575])], 215),
            ("flag", [0, 0, 95, 512], 0.9, ["red", "white", "blue", "striped"],
             [(P, [(0, 0), (50, 0), (95, 200), (95, 512), (0, 512)])], 60),
            ("space shuttle model", [352, 0, 470, 285], 0.83, ["white", "small", "upright"],
             [(P, [(392, 0), (440, 0), (455, 150), (470, 270), (352, 270), (360, 200), (385, 80)])], 85),
            ("patch", [133, 348, 210, 425], 0.8, ["round", "blue"], [(E, [133, 348, 210, 425])], 175),
            ("ring", [112, 148, 305, 295], 0.78, ["metal", "round", "black"],
             [(A, [112, 148, 305, 295], 26)], 170),
            ("table", [362, 268, 512, 460], 0.7, ["black"], [(R, [362, 268, 512, 460])], 80),
        ],
        "relations": [
            [0, "wearing", 3], [0, "has", 1], [0, "has", 2], [4, "in front of", 0], [5, "behind", 0],
            [5, "left of", 0], [6, "on", 9], [6, "behind", 0], [7, "on", 3], [8, "attached to", 3],
            [4, "in front of", 9],
        ],
        "cut": {5: [0], 9: [4]},  # object -> the objects in front of it, cut out of its mask
    },
    "chelsea": {
        "file": "chelsea.jpg", "size": (451, 300), "background": (30, 40),
        "objects": [
            ("cat", [0, 0, 398, 300], 0.98, ["brown", "striped", "furry", "alert"],
             [(P, [(0, 0), (398, 0), (398, 150), (380, 300), (0, 300)])], 150),
            ("eye", [135, 85, 203, 148], 0.94, ["green", "round", "open"], [(E, [135, 85, 203, 148])], 175),
            ("eye", [295, 108, 345, 165], 0.92, ["green", "round", "open"], [(E, [295, 108, 345, 165])], 170),
            ("nose", [240, 220, 295, 262], 0.9, ["pink"], [(P, [(240, 220), (295, 220), (268, 262)])], 220),
            ("ear", [345, 0, 400, 75], 0.72, ["pointed", "furry"],
             [(P, [(345, 75), (380, 0), (400, 0), (400, 75)])], 152),
            ("whiskers", [0, 195, 240, 300], 0.76, ["white", "long", "thin"],
             [(P, [(240, 240), (0, 195), (0, 300), (120, 300)])], 190),
            ("forehead", [150, 0, 300, 90], 0.8, ["striped", "brown"], [(E, [150, -40, 300, 90])], 160),
        ],
        "relations": [
            [0, "has", 1], [0, "has", 2], [0, "has", 3], [0, "has", 4], [0, "has", 5], [1, "left of", 2],
            [3, "below", 1], [5, "left of", 3], [6, "above", 1],
        ],
    },
    "coffee": {
        "file": "coffee.jpg", "size": (600, 400), "background": (60, 140),
        "objects": [
            ("cup", [172, 15, 412, 300], 0.97, ["red", "white", "ceramic", "round"],
             [(E, [172, 15, 412, 190]), (P, [(180, 100), (410, 100), (390, 210), (330, 280), (260, 290),
                                             (200, 240)]), (E, [195, 225, 258, 300])], 190),
            ("saucer", [75, 70, 482, 390], 0.95, ["red", "round", "shiny", "ceramic"],
             [(E, [75, 70, 482, 390])], (140, 175)),
            ("spoon", [322, 65, 425, 328], 0.9, ["silver", "metal", "shiny", "small"],
             [(P, [(410, 65), (425, 75), (385, 245), (372, 240)]), (E, [322, 238, 405, 328])], 185),
            ("coffee", [205, 100, 372, 195], 0.86, ["brown", "creamy"], [(E, [205, 100, 372, 195])], 170),
            ("table", [0, 0, 600, 400], 0.93, ["wooden", "brown"], [(R, [0, 0, 600, 400])], (60, 140)),
            ("handle", [195, 225, 258, 300], 0.74, ["red", "curved"], [(E, [195, 225, 258, 300])], 195),
        ],
        "relations": [
            [0, "on", 1], [2, "on", 1], [1, "on", 4], [3, "in", 0], [0, "has", 5], [2, "next to", 0],
        ],
        "cut": {4: [0, 1, 2], 1: [0, 2]},
        "paint": [4, 1, 0, 5, 3, 2],  # far to near; the coffee sits inside the cup, below its rim
    },
    "rocket": {
        "file": "rocket.jpg", "size": (640, 427), "background": (0, 0),
        "objects": [
            ("rocket", [305, 125, 338, 405], 0.96, ["white", "tall", "upright"],
             [(P, [(321, 125), (338, 160), (338, 405), (305, 405), (305, 160)])], 110),
            ("tower", [0, 0, 90, 427], 0.92, ["metal", "tall", "black"],
             [(P, [(40, 0), (90, 0), (86, 427), (0, 427)])], 200),
            ("tower", [555, 0, 640, 427], 0.91, ["metal", "tall", "black"],
             [(P, [(558, 0), (618, 0), (640, 200), (640, 427), (570, 427)])], 200),
            ("tower", [165, 120, 207, 400], 0.85, ["metal", "tall", "thin"],
             [(P, [(195, 120), (207, 120), (205, 400), (165, 400)])], 120),
            ("tower", [432, 120, 480, 427], 0.84, ["metal", "tall", "thin"],
             [(P, [(440, 120), (452, 120), (480, 427), (432, 427)])], 125),
            ("sky", [0, 0, 640, 370], 0.9, ["blue", "dark", "clear"], [(R, [0, 0, 640, 370])], 0),
            ("light", [98, 400, 122, 425], 0.7, ["bright", "lit"], [(E, [98, 400, 122, 425])], 180),
            ("light", [350, 382, 375, 408], 0.68, ["bright", "lit"], [(E, [350, 382, 375, 408])], 118),
            ("launch pad", [265, 400, 380, 427], 0.75, ["white", "concrete"], [(R, [265, 400, 380, 427])], 115),
        ],
        "relations": [
            [0, "on", 8], [1, "left of", 0], [2, "right of", 0], [3, "left of", 0], [4, "right of", 0],
            [5, "behind", 0], [7, "near", 8], [6, "left of", 8],
        ],
        "cut": {5: [0, 1, 2, 3, 4]},
        # the ground band at the bottom of the frame, nearer towards the bottom
        "ground": ([0, 370, 640, 427], (90, 130)),
    },
}


def draw_mask(shapes: list, box: list[int], width: int, height: int) -> np.ndarray:
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        kind, spec = shape[0], shape[1]
        if kind == E:
            draw.ellipse(spec, fill=1)
        elif kind == R:
            draw.rectangle([spec[0], spec[1], spec[2] - 1, spec[3] - 1], fill=1)
        elif kind == P:
            draw.polygon(spec, fill=1)
        elif kind == A:  # a ring: an ellipse with an inner ellipse cut out
            inset = shape[2]
            draw.ellipse(spec, fill=1)
            draw.ellipse([spec[0] + inset, spec[1] + inset, spec[2] - inset, spec[3] - inset], fill=0)
    mask = np.array(canvas, dtype=bool)
    x1, y1, x2, y2 = box
    clip = np.zeros_like(mask)
    clip[y1:y2, x1:x2] = True
    return mask & clip


def painted_depth(sample: dict, masks: list[np.ndarray]) -> np.ndarray:
    """A layer painting: background, then objects from far to near, each at its value."""
    width, height = sample["size"]
    rows = np.arange(height, dtype=np.float32)[:, None]
    top, bottom = sample["background"]
    depth = np.broadcast_to(top + (bottom - top) * rows / max(1, height - 1), (height, width)).copy()
    if "ground" in sample:
        (x1, y1, x2, y2), (t, b) = sample["ground"]
        ramp = t + (b - t) * (rows[y1:y2] - y1) / max(1, y2 - y1 - 1)
        depth[y1:y2, x1:x2] = ramp
    layers = []
    for ob, mask in zip(sample["objects"], masks):
        value = ob[5]
        order = value if isinstance(value, (int, float)) else min(value)  # a ramp paints at its far end
        layers.append((order, value, ob[1], mask))
    if "paint" in sample:
        layers = [layers[i] for i in sample["paint"]]
    else:
        layers.sort(key=lambda t: t[0])
    for _, value, box, mask in layers:
        if isinstance(value, tuple):
            t, b = value
            y1, y2 = box[1], box[3]
            ramp = np.clip(t + (b - t) * (rows - y1) / max(1, y2 - y1 - 1), min(t, b), max(t, b))
            layer = np.broadcast_to(ramp, (height, width))
        else:
            layer = np.full((height, width), value, dtype=np.float32)
        depth[mask] = layer[mask]
    return np.clip(np.round(depth), 0, 255).astype(np.uint8)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()

    stages: dict[str, dict] = {s: {} for s in ("detection", "segmentation", "depth", "attributes", "relations")}
    (HERE / "seg_masks").mkdir(exist_ok=True)
    (HERE / "depth_masks").mkdir(exist_ok=True)
    for image_id, sample in SAMPLES.items():
        width, height = sample["size"]
        with Image.open(SEEDS / sample["file"]) as im:
            assert im.size == (width, height), (image_id, im.size)
        labels = [ob[0] for ob in sample["objects"]]
        boxes = [ob[1] for ob in sample["objects"]]
        masks = [draw_mask(ob[4], ob[1], width, height) for ob in sample["objects"]]
        for i, in_front in sample.get("cut", {}).items():
            masks[i] = masks[i] & ~np.logical_or.reduce([masks[j] for j in in_front])
        assert all(m.any() for m in masks), image_id

        depth_file = f"{image_id}_depth.npy"
        np.save(HERE / "depth_masks" / depth_file, painted_depth(sample, masks))

        mask_file = f"{image_id}.pkl.gz"
        payload = pickle.dumps([sparse.csr_matrix(m) for m in masks], protocol=4)
        (HERE / "seg_masks" / mask_file).write_bytes(gzip.compress(payload, 9, mtime=0))

        def entry(fields: dict) -> dict:
            return {"data_path": f"{STALE_ROOT}/{sample['file']}", "source": "evol-samples",
                    "annotation": {"width": width, "height": height, **fields}}

        stages["detection"][image_id] = entry(
            {"labels": labels, "bboxes": boxes, "det_scores": [ob[2] for ob in sample["objects"]]})
        stages["segmentation"][image_id] = entry({"seg_mask_id": mask_file, "labels": labels, "bboxes": boxes})
        stages["depth"][image_id] = entry({"depth_mask_id": depth_file})
        stages["attributes"][image_id] = entry({"attributes": [ob[3] for ob in sample["objects"]]})
        stages["relations"][image_id] = entry({"relations": sample["relations"]})

    for name, data in stages.items():
        (HERE / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
