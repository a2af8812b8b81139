"""Verb-noun parser accuracy on the hand-labelled sets, overall and per shape.

    python bench/verbnoun_accuracy.py                       # dev set and gold file
    python bench/verbnoun_accuracy.py --holdout             # the held-out set too
    python bench/verbnoun_accuracy.py --misses dev          # list what the dev set misses
    python bench/verbnoun_accuracy.py --reading task        # the task-verb reading instead

The labelled sets are in tests/data (see tests/data/README_verbnoun.md, which also gives
each set's history: which were scored once unseen, and with what result). The held-out
sets are scored only when asked.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
REPO = _HERE.parent
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import csv  # noqa: E402
from collections import defaultdict  # noqa: E402

DATA = REPO / "tests" / "data"
SETS = {"dev": DATA / "verbnoun_dev.tsv", "gold": DATA / "verbnoun_gold.tsv",
        "holdout_v2": DATA / "verbnoun_holdout_v2.tsv", "holdout_v3": DATA / "verbnoun_holdout_v3.tsv",
        "holdout_v4": DATA / "verbnoun_holdout_v4.tsv", "holdout_v5": DATA / "verbnoun_holdout_v5.tsv",
        "holdout_v6": DATA / "verbnoun_holdout_v6.tsv", "holdout_v1": DATA / "verbnoun_holdout.tsv"}
HELD_OUT = ("holdout_v2", "holdout_v3", "holdout_v4", "holdout_v5", "holdout_v6", "holdout_v1")


def load(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    for r in rows:
        r["instruction"] = r["instruction"].replace("\\n", "\n")
        r["verb"] = None if r["verb"] == "-" else r["verb"]
        r["noun"] = None if r["noun"] == "-" else r["noun"]
    return rows


def score(parser, rows: list[dict]) -> dict:
    got = list(parser.parse_many(r["instruction"] for r in rows))
    shapes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    verb = noun = pair = 0
    misses = []
    for r, (v, n) in zip(rows, got):
        ok = (v, n) == (r["verb"], r["noun"])
        verb += v == r["verb"]
        noun += n == r["noun"]
        pair += ok
        shapes[r["shape"]][0] += ok
        shapes[r["shape"]][1] += 1
        if not ok:
            misses.append(f"[{r['shape']}] {r['instruction'][:150]!r} -> {v}/{n or '-'}, "
                          f"want {r['verb']}/{r['noun'] or '-'}")
    n = len(rows)
    return {"n": n, "pair": pair / n, "verb": verb / n, "noun": noun / n,
            "shapes": {k: (a, b) for k, (a, b) in shapes.items()}, "misses": misses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--holdout", action="store_true", help="score the held-out sets too (all seen by now: "
                    "tests/data/README_verbnoun.md gives their history)")
    ap.add_argument("--misses", nargs="*", default=[], help="sets whose misses to list")
    ap.add_argument("--reading", default="paper", choices=["paper", "task"])
    args = ap.parse_args()
    from evol.analysis.verbnoun import VerbNounParser

    parser = VerbNounParser(reading=args.reading)
    names = ["dev", "gold"] + (list(HELD_OUT) if args.holdout else [])
    for name in names:
        s = score(parser, load(SETS[name]))
        print(f"{name:8s} {s['n']:4d} items: pair {s['pair']:.1%}  verb {s['verb']:.1%}  noun {s['noun']:.1%}")
        print("   " + "  ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(s["shapes"].items())))
        if name in args.misses:
            print("   misses:\n     " + "\n     ".join(s["misses"]))


if __name__ == "__main__":
    main()
