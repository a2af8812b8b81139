"""Constrained decoding on the embedded default: N judge calls, how many answers parse.

Builds N real judge requests (the judge prompt and schema a run uses, text-only: caption
and boxes instead of pixels) from the seeds written from the shipped scene graphs, each
comparing a seed item with a lightly changed rewrite, sends them all to SmolLM2-135M
through the transformers backend (batched), and counts the answers that are valid JSON
*and* that `Judge.parse` accepts (a verdict for the right ids, a score, a reason).

    python bench/constrained.py --calls 100
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bench/ itself must not be on the path: bench/select.py would shadow the standard `select`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

from evol.backends.base import BackendError, Sampling  # noqa: E402
from evol.samples import shipped  # noqa: E402
from evol.backends.hf import HFBackend, HFEngine  # noqa: E402
from evol.backends.local import embedded_model, model_source  # noqa: E402
from evol.eliminator.judge import Judge  # noqa: E402
from evol.images import ImageStore  # noqa: E402

_TWISTS = (" Explain how you can tell.", " Name the object it refers to.", " Answer in one word.",
           " Give the box as well.", " Say which part of the picture shows it.")


def seed_records(n: int):
    """n seed records from the shipped scene graphs (written once to a temporary file, cycled)."""
    import tempfile

    import evol
    from evol.io import read_records

    out = Path(tempfile.mkdtemp(prefix="evol-bench-")) / "seeds.jsonl"
    evol.seed.shipped_samples(out)
    records = [r.record for r in read_records(str(out), "auto") if r.record is not None]
    return [records[i % len(records)] for i in range(n)]


def build(n: int, max_tokens: int):
    judge = Judge()
    out = []
    for k, rec in enumerate(seed_records(n)):
        pairs = [(it, it.model_copy(update={"id": it.id + "@r1", "question": it.question + _TWISTS[k % len(_TWISTS)]}))
                 for it in rec.items]
        request = judge.build(rec, pairs, 1, send_image=False, sampling=Sampling(0.0, 1.0, max_tokens, k))
        out.append((request, pairs))
    return judge, out


async def send(backend: HFBackend, requests):
    return await asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--model", help="model folder or .gguf file [the embedded SmolLM2-135M-Instruct]")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    t0 = time.perf_counter()
    source = model_source(args.model) if args.model else embedded_model()
    engine = HFEngine(source, images=ImageStore(shipped()), device=args.device, max_new_tokens=args.max_tokens)
    load_s = time.perf_counter() - t0
    judge, work = build(args.calls, args.max_tokens)
    backend = HFBackend(engine, max_batch=args.batch)
    t1 = time.perf_counter()
    results = asyncio.run(send(backend, [r for r, _ in work]))
    wall = time.perf_counter() - t1
    parsed, usable, problems = 0, 0, Counter()
    for res, (_, pairs) in zip(results, work):
        if isinstance(res, BaseException):
            problems[type(res).__name__ + ": " + str(res).split(": ", 1)[-1][:60]] += 1
            continue
        try:
            json.loads(res.text)
            parsed += 1
        except ValueError:
            problems["not strict JSON"] += 1
            continue
        try:
            verdicts = judge.parse(res, pairs)
        except BackendError as exc:
            problems[f"judge.parse: {str(exc)[:60]}"] += 1
            continue
        usable += len(verdicts) == len(pairs)
    s = engine.stats
    print(f"model: {source.describe()}, device {engine.device}, load {load_s:.1f} s, batch <= {args.batch}")
    print(f"judge calls: {len(work)}; parseable JSON answers: {parsed}/{len(work)}; "
          f"a verdict for every item: {usable}/{len(work)}")
    print(f"time: {wall:.1f} s for the calls ({wall / len(work):.2f} s per call); "
          f"{s.tokens_in} prompt tokens, {s.tokens_out} generated ({s.tokens_out / wall:.1f} tokens/s)")
    for what, n in problems.most_common(5):
        print(f"  {n} x {what}")


if __name__ == "__main__":
    main()
