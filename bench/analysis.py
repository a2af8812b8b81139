"""Analysis benchmarks: verb-noun parser speed beside raw spaCy, and analysis memory.

    python bench/analysis.py                       # parser speed on 20,000 instructions
    python bench/analysis.py --processes 2         # ... with 2 worker processes too
    python bench/analysis.py --memory 20000,200000 # peak RSS of `analyze` on generated files

Instructions are generated from the shapes of tests/data/verbnoun_gold.tsv with other
nouns swapped in. "Raw spaCy" is `nlp.pipe` over the same cleaned texts with only the
components a dependency parse needs (tok2vec + parser), the same batch size and the same
number of processes (spaCy's own `n_process`); the parser adds the tagger, the rules and
the lemmas of two words per instruction.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ itself must not shadow standard modules (a bench/select.py would hide `select`)
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
REPO = _HERE.parent
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

NOUNS = ("cup table dog cat man woman car bus tree lamp chair book phone bag kite boat horse bird clock "
         "window bench bottle plate umbrella bicycle sign laptop flower girl boy").split()


def make_instructions(n: int, seed: int = 0) -> list[str]:
    with open(REPO / "tests" / "data" / "verbnoun_gold.tsv", encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    base = [r["instruction"].replace("\\n", "\n")
            for r in csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)]
    rng = random.Random(seed)
    swap = re.compile(r"\b(dog|cat|car|table|man|cup|image|picture)\b")
    return [swap.sub(lambda m: rng.choice(NOUNS), rng.choice(base)) for _ in range(n)]


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (pool workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn(). CPU time is what a busy shared machine cannot
    distort: instructions per CPU-second x cores is the speed on that many idle cores."""
    w, c = time.perf_counter(), _cpu_s()
    fn()
    return time.perf_counter() - w, _cpu_s() - c


def bench_speed(n: int, processes: list[int], batch_size: int, repeat: int) -> None:
    """Raw spaCy and the parser run alternately `repeat` times; the best run of each counts
    (on a shared machine the best run is the one least slowed by others)."""
    from evol.analysis.verbnoun import VerbNounParser, clean_instruction, load_spacy

    texts = make_instructions(n)
    cleaned = [clean_instruction(t) for t in texts]
    raw_nlp = load_spacy(("tok2vec", "parser"))
    print(f"{n:,} instructions, batch {batch_size}, best of {repeat}; "
          f"machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for nproc in processes:
        parser = VerbNounParser(n_process=nproc, batch_size=batch_size)
        list(raw_nlp.pipe(cleaned[:300], batch_size=batch_size))  # warm up
        list(VerbNounParser.parse_many(parser, texts[:300]))
        raw_runs, our_runs, pairs = [], [], []
        for _ in range(repeat):
            raw_runs.append(_timed(lambda: [None for _ in raw_nlp.pipe(cleaned, batch_size=batch_size,
                                                                           n_process=nproc)]))
            pairs.clear()
            our_runs.append(_timed(lambda: pairs.extend(parser.parse_many(texts))))
        raw_wall, raw_cpu = min(raw_runs)
        wall, cpu = min(our_runs)
        found = sum(v is not None for v, _ in pairs) / n
        print(f"  processes={nproc}: raw spaCy (tok2vec+parser) {n / raw_wall:,.0f} instr/s ({n / raw_cpu:,.0f} per "
              f"CPU-s) | verb-noun parser {n / wall:,.0f} instr/s ({n / cpu:,.0f} per CPU-s, cleaning included) | "
              f"parser time / raw time {wall / raw_wall:.2f}x | verb found {found:.1%}")
    print(f"  machine load after: {os.getloadavg()[0]:.1f}")


_PROBE = """
import json, re, sys, time
from evol.analysis import analyze
t = time.perf_counter()
r = analyze([sys.argv[1]], sys.argv[2], n_process=int(sys.argv[3]), verbnoun=sys.argv[4] == "1")
wall = time.perf_counter() - t
from evol.analysis.report import write_report
t = time.perf_counter()
page = write_report(sys.argv[2])
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({"peak_mb": hwm / 1024, "items": r["items"], "wall_s": wall, "report_s": time.perf_counter() - t,
                  "report_kb": page.stat().st_size / 1024}))
"""


def write_records(path: Path, n: int, seed: int = 0) -> None:
    """n evolved records (a seed item and two judged rounds each) with varied text."""
    texts = make_instructions(3 * n if n <= 50_000 else 150_000, seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            def item(k: int, r: int) -> dict:
                d = {"id": f"r{i}#0" + (f"@r{r}" if r else ""), "question": texts[(3 * i + k) % len(texts)],
                     "answer": "Yes." if (i + k) % 4 == 0 else f"A {NOUNS[(i + k) % len(NOUNS)]} near the window.",
                     "skills": ["grounding", "counting", "reasoning"][: 1 + (i + r) % 3],
                     "objects": [NOUNS[(i * 7 + k) % len(NOUNS)], f"object{i % 5003}"],
                     "steps": [{"description": f"look at part {s}"} for s in range(r)]}
                if r:
                    d["parent"] = f"r{i}#0" + (f"@r{r - 1}" if r > 1 else "")
                    d["verdict"] = {"improved": (i + r) % 3 != 0, "score": (i * 7 + r) % 11, "reason": "clearer"}
                return d
            rec = {"id": f"r{i}", "images": [f"img/{i}.jpg"], "caption": "A room with a table and chairs.",
                   "items": [item(0, 0)],
                   "versions": [{"round": r, "operator": ["perceptual", "reasoning", "interaction"][(i + r) % 3],
                                 "items": [item(r, r)]} for r in (1, 2)]}
            f.write(json.dumps(rec) + "\n")


def bench_memory(sizes: list[int], processes: int, parse: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            data = Path(tmp) / f"records{n}.jsonl"
            write_records(data, n)
            mb = data.stat().st_size / 2**20
            res = subprocess.run([sys.executable, "-c", _PROBE, str(data), str(Path(tmp) / f"out{n}"),
                                  str(processes), "1" if parse else "0"],
                                 capture_output=True, text=True, cwd=REPO)
            if res.returncode != 0:
                print(res.stderr[-3000:])
                raise SystemExit(1)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"  {n:,} records ({mb:,.0f} MB, {r['items']:,} items, verb-noun {'on' if parse else 'off'}): "
                  f"peak RSS {r['peak_mb']:,.1f} MB, {r['wall_s']:.1f} s ({r['items'] / r['wall_s']:,.0f} items/s); "
                  f"report {r['report_kb']:,.0f} KB in {r['report_s']:.1f} s")


def bench_long_instructions() -> None:
    """Cleaning cost of huge instructions full of unclosed tags: with the length cut (what
    `analyze` does) and without it (the patterns alone, which must grow linearly)."""
    from evol.analysis import textclean

    units = ("What is in <box> ", "Look at <|box_start|> 1 ", "Find <quad> the ", "Where [1, 2, 3 ",
             "Translate \" the ", "Say 'hi ", "Fix ```py x ")
    for unit in units:
        text = unit * (5_000_000 // len(unit))
        t0 = time.perf_counter()
        textclean.clean_instruction(text)
        cut = time.perf_counter() - t0
        limit, textclean.RAW_LIMIT = textclean.RAW_LIMIT, 10 ** 9
        try:
            times = []
            for n in (100_000, 200_000, 400_000):
                t0 = time.perf_counter()
                textclean.clean_instruction(text[:n])
                times.append(time.perf_counter() - t0)
        finally:
            textclean.RAW_LIMIT = limit
        print(f"{unit.strip()!r:28} 5 MB: {cut:.3f} s; without the cut 100/200/400 KB: "
              + " / ".join(f"{x:.3f}" for x in times) + " s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instructions", type=int, default=20_000)
    ap.add_argument("--processes", default="1", help="comma-separated process counts, e.g. 1,2")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    ap.add_argument("--memory", default="", help="record counts for the memory run, e.g. 20000,200000")
    ap.add_argument("--no-parse", action="store_true", help="memory run without the verb-noun parser")
    ap.add_argument("--long", action="store_true", help="cleaning time of 5 MB instructions with unclosed tags")
    args = ap.parse_args()
    if args.long:
        bench_long_instructions()
        return
    procs = [int(p) for p in args.processes.split(",")]
    if args.memory:
        print("analysis memory (peak RSS of the whole `analyze` process):")
        bench_memory([int(s) for s in args.memory.split(",")], max(procs), not args.no_parse)
    else:
        bench_speed(args.instructions, procs, args.batch_size, args.repeat)


if __name__ == "__main__":
    main()
