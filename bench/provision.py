"""Speed of programmatic seeding: scene graphs with depth and masks, all generators.

Writes ProVision-format stage files for N synthetic 640x480 images (10 objects each,
attributes, relations, a depth map and instance masks), laid out as ProVision lays out its
sample (mask pickles in seg_masks/, depth maps in depth_masks/), then runs the 24 single-image
generators over them as `evol seed provision` does (graphs streamed: each one loaded with
its depth and masks, then its QAs generated). Prints milliseconds per image and QAs per
second for generation (the issue's figure: per-graph depth and mask work included) and
for loading, taking the fastest of a few passes since the machine is shared.

`--workers 1,2` also times the whole run as `evol seed provision --workers N` makes it
(`write_seeds`: wall time from reading the stage files to the seed file written, masks and
depth maps found by default: frequency pass, loading, generation, serialisation), once per
N given.

    python bench/provision.py --images 240 [--passes 3] [--preload] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from scipy import sparse

from evol.provision.base import Frequencies, GenContext
from evol.provision.loaders import load_provision
from evol.provision.seed import SeedReport, provision_records, write_seeds

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
        np.save(folder / "depth_masks" / f"{iid}.npy", depth)
        with open(folder / "seg_masks" / f"{iid}.pkl", "wb") as f:
            pickle.dump(masks, f)
    for name, data in stages.items():
        (folder / f"{name}.json").write_text(json.dumps(data))


@dataclass
class Pass:
    images: int
    qas: int
    count_s: float  # first pass: stage files without masks, for the dataset frequencies
    load_s: float  # graphs with depth maps and masks
    generate_s: float  # generators and records, per-graph depth/mask work included
    generators: int  # generators run on each image
    short: int  # generators that produced fewer QAs than asked


def _timed(graphs: Iterator, spent: list[float]) -> Iterator:
    """The loader's graphs, adding the time spent inside the loader to spent[0]."""
    while True:
        t0 = time.perf_counter()
        try:
            g = next(graphs)
        except StopIteration:
            spent[0] += time.perf_counter() - t0
            return
        spent[0] += time.perf_counter() - t0
        yield g


def one_pass(folder: Path, per_generator: int, preload: bool) -> Pass:
    """One run over the dataset as `evol seed provision` does it: a first pass counts how
    common objects, attributes and predicates are (no masks read), then each graph is
    loaded with its depth map and masks and its QAs are generated straight away.

    With `preload`, every graph is loaded before generation starts, and generation runs
    on graphs that have sat in memory (colder caches, ~3.5 MB of masks per image held).
    """
    def load(masks: bool):
        return load_provision(folder, masks_dir=folder / "seg_masks" if masks else None, image_root=folder)

    t0 = time.perf_counter()
    freq = Frequencies()
    for g in load(masks=False):
        if not isinstance(g, Exception):
            freq.add(g)
    count_s = time.perf_counter() - t0
    ctx = GenContext(freq=freq)
    report = SeedReport()
    spent = [0.0]
    if preload:
        t0 = time.perf_counter()
        graphs: Iterable = list(load(masks=True))
        spent[0] = time.perf_counter() - t0
    else:
        graphs = _timed(iter(load(masks=True)), spent)
    t0 = time.perf_counter()
    n_qa = sum(1 for _ in provision_records(graphs, ctx=ctx, seed=7, per_generator=per_generator, report=report))
    total = time.perf_counter() - t0
    generate_s = total if preload else total - spent[0]
    short = sum(1 for k, v in report.produced.items() if v < report.asked[k])
    return Pass(report.images, n_qa, count_s, spent[0], generate_s, len(report.asked), short)


def cli_pass(folder: Path, per_generator: int, workers: int) -> tuple[float, int, int]:
    """One whole run as `evol seed provision --workers N` makes it (`write_seeds`, masks and
    depth maps found beside the stage files): (wall seconds, images, QAs)."""
    t0 = time.perf_counter()
    result = write_seeds(folder.parent / "out.jsonl", annotations=folder, image_root=folder, seed=7,
                         per_generator=per_generator, workers=workers)
    return time.perf_counter() - t0, result.images, result.records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--per-generator", type=int, default=2)
    ap.add_argument("--passes", type=int, default=3, help="timed runs over the dataset; the fastest is reported")
    ap.add_argument("--preload", action="store_true", help="load every graph before generation starts")
    ap.add_argument("--workers", default="", help="also time the CLI's whole run with these worker counts, e.g. 1,2")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "annotations"
        (folder / "seg_masks").mkdir(parents=True)
        (folder / "depth_masks").mkdir()
        write_dataset(folder, args.images)
        runs = [one_pass(folder, args.per_generator, args.preload) for _ in range(max(1, args.passes))]
        cli = {w: [cli_pass(folder, args.per_generator, w) for _ in range(max(1, args.passes))] for w in counts}

    best = min(runs, key=lambda r: r.generate_s)
    n, q = best.images, best.qas
    gen_ms = [r.generate_s / r.images * 1000 for r in runs]
    whole_s = best.count_s + best.load_s + best.generate_s
    print(f"images              {n} (640x480, 10 objects each, depth map + instance masks)")
    print(f"QAs                 {q} ({args.per_generator} asked of each of {best.generators} single-image generators "
          f"per image; {best.short} of them found fewer)")
    print(f"generate            {best.generate_s / n * 1000:.2f} ms/image   {q / best.generate_s:,.0f} QA/s   "
          f"(fastest of {len(runs)} passes: {', '.join(f'{x:.2f}' for x in gen_ms)} ms/image; "
          f"{'graphs preloaded' if args.preload else 'streamed as the CLI does'})")
    print(f"load                {best.load_s / n * 1000:.2f} ms/image   (stage files, depth .npy, mask pickles)")
    print(f"whole run           {whole_s / n * 1000:.2f} ms/image   {q / whole_s:,.0f} QA/s   "
          f"(frequency pass {best.count_s / n * 1000:.2f} + load + generate)")
    for w, passes in cli.items():
        wall, n_img, n_qa = min(passes)
        label = f"CLI run, {w} worker{'s' if w > 1 else ''}"
        print(f"{label:<19} {wall / n_img * 1000:.2f} ms/image   {n_qa / wall:,.0f} QA/s   (wall, JSON lines "
              f"written; passes: {', '.join(f'{p[0] / n_img * 1000:.2f}' for p in passes)} ms/image)")


if __name__ == "__main__":
    main()
