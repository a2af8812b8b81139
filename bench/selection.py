"""Coverage of `evol select` against random subsets on a synthetic run with a known skew.

    python bench/selection.py --records 20000 --size 2000 --floor 6 [--parser]

Writes a synthetic evolved run (most items ask a few verb-noun pairs about a few objects;
yes/no answers lean 80% to "yes"; multiple-choice answers lean to "A"), selects a mix
greedily and prints, for verb-noun pairs and objects, how many distinct ones the mix
covers against each of 20 random subsets of the same size, the yes/no ratio and timings.
Pairs come from the generator's known templates, or with --parser from
evol.analysis.verbnoun (slower: spaCy parses every question).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from evol.rundir import iter_records_in_order
from evol.seeding.select import answer_balance, coverage, gather_candidates, greedy_select, random_baseline
from evol.seeding.synthetic import write_synthetic_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--floor", type=float, default=6.0)
    ap.add_argument("--subsets", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parser", action="store_true", help="pairs from VerbNounParser instead of the known templates")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = write_synthetic_run(Path(tmp), args.records, seed=args.seed)
        t1 = time.perf_counter()
        excluded: Counter = Counter()
        pairs = None if args.parser else run.pairs_fn()
        cands = gather_candidates(iter_records_in_order(run.path), min_score=args.floor, pairs=pairs, excluded=excluded)
        t2 = time.perf_counter()
        sel = greedy_select(cands, args.size, seed=args.seed)
        t3 = time.perf_counter()
    mix, full = coverage(cands, sel.chosen), coverage(cands, range(len(cands)))
    rand = random_baseline(cands, len(sel.chosen), args.subsets, args.seed)
    print(f"synthetic run: {args.records} records, {len(cands)} candidates at score >= {args.floor:g} "
          f"({excluded['below_min_score']} below); mix of {len(sel.chosen)} (asked {args.size})"
          + (f"; short: {sel.shortfall}" if sel.shortfall else ""))
    for kind in ("pairs", "objects", "skills", "forms"):
        r = [x[kind] for x in rand]
        beats = sum(mix[kind] > v for v in r)
        print(f"  {kind:8s} mix {mix[kind]:6d} | full {full[kind]:6d} | random min/mean/max "
              f"{min(r)}/{sum(r) / len(r):.1f}/{max(r)} | mix beats {beats}/{len(r)} random subsets")
    a, f = answer_balance(cands, sel.chosen), answer_balance(cands, range(len(cands)))
    print(f"  yes/no   mix {a['yes']} yes / {a['no']} no = {a['yes_ratio']:.3f} yes | full set {f['yes_ratio']:.3f}")
    print(f"  letters  mix {a['letters']} | full set {f['letters']}")
    print(f"timings: write {t1 - t0:.2f} s, candidates{' + parse' if args.parser else ''} {t2 - t1:.2f} s, "
          f"greedy {t3 - t2:.2f} s ({len(cands) / max(t3 - t2, 1e-9):,.0f} candidates/s)")


if __name__ == "__main__":
    main()
