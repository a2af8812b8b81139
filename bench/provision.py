"""Speed of programmatic seeding: scene graphs with depth and masks, all generators.

Writes ProVision-format stage files for N synthetic 640x480 images (10 objects each,
attributes, relations, a depth map and instance masks), then times (a) loading plus
generation per image, as `evol seed provision` runs it, and (b) generation alone on
graphs already in memory. Prints milliseconds per image and QAs per second.

    python bench/provision.py --images 240
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import sparse

from evol.provision.base import Frequencies, GenContext
from evol.provision.loaders import load_provision
from evol.provision.seed import SeedReport, provision_records

LABELS = ["person", "dog", "car", "tree", "bench", "cup", "bottle", "chair", "table", "lamp", "bicycle", "sign"]
ATTRS = ["red", "blue", "wooden", "metal", "small", "large", "standing", "parked", "green", "white"]
PREDICATES = ["next to", "on", "behind", "in front of", "near", "under", "holding"]
W, H = 640, 480


def write_dataset(folder: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    stages = {name: {} for name in ("detection", "segmentation", "depth", "attributes", "relations")}
    yy, xx = np.mgrid[0:H, 0:W]
    for k in range(n):
        iid = f"img{k:05d}"
        boxes, labels, masks = [], [], []
        depth = np.clip((yy * 255 // H), 0, 255).astype(np.uint8)  # lower in the frame = closer
        for _ in range(10):
            w, h = rng.randint(40, 200), rng.randint(40, 200)
            x1, y1 = rng.randint(0, W - w - 1), rng.randint(0, H - h - 1)
            boxes.append([x1, y1, x1 + w, y1 + h])
            labels.append(rng.choice(LABELS))
            cx, cy = x1 + w / 2, y1 + h / 2
            m = ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1
            masks.append(sparse.csr_matrix(m))
            depth[m] = rng.randint(0, 255)
        base = {"width": W, "height": H}
        entry = lambda ann: {"data_path": f"/stale/path/{iid}.jpg", "source": "bench", "annotation": {**base, **ann}}
        stages["detection"][iid] = entry({"labels": labels, "bboxes": boxes, "det_scores": [0.9] * 10})
        stages["segmentation"][iid] = entry({"seg_mask_id": f"{iid}.pkl", "labels": labels, "bboxes": boxes})
        stages["depth"][iid] = entry({"depth_mask_id": f"{iid}.npy"})
        stages["attributes"][iid] = entry({"attributes": [rng.sample(ATTRS, rng.randint(1, 3)) for _ in range(10)]})
        stages["relations"][iid] = entry({"relations": [
            [rng.randrange(10), rng.choice(PREDICATES), rng.randrange(10)] for _ in range(8)]})
        np.save(folder / f"{iid}.npy", depth)
        with open(folder / "masks" / f"{iid}.pkl", "wb") as f:
            pickle.dump(masks, f)
    for name, data in stages.items():
        (folder / f"{name}.json").write_text(json.dumps(data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--per-generator", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "masks").mkdir()
        write_dataset(folder, args.images)
        load = lambda: load_provision(folder, masks_dir=folder / "masks", image_root=folder)

        t0 = time.perf_counter()
        freq = Frequencies()
        graphs = []
        for g in load():
            if not isinstance(g, Exception):
                freq.add(g)
                graphs.append(g)
        load_s = time.perf_counter() - t0
        ctx = GenContext(freq=freq)

        t0 = time.perf_counter()
        report = SeedReport()
        n_qa = sum(1 for _ in provision_records(graphs, ctx=ctx, seed=7, per_generator=args.per_generator, report=report))
        gen_s = time.perf_counter() - t0

    n = len(graphs)
    print(f"images                      {n} (640x480, 10 objects, depth + masks)")
    print(f"QAs                         {n_qa} ({args.per_generator} asked per generator per image)")
    print(f"load ms/image               {load_s / n * 1000:.2f}")
    print(f"generate ms/image           {gen_s / n * 1000:.2f}  ({n_qa / gen_s:.0f} QA/s; per-graph depth/mask work included)")
    print(f"load + generate ms/image    {(load_s + gen_s) / n * 1000:.2f}")
    short = {k: v for k, v in report.produced.items() if v < report.asked[k]}
    print(f"generators that produced fewer than asked: {len(short)} of {len(report.asked)}")


if __name__ == "__main__":
    main()
