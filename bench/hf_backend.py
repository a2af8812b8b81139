"""Throughput of the transformers backend on real evolve and judge requests.

Builds requests the way a run does (operator prompts, then judge prompts, on the seeds
written from the shipped scene graphs; text-only models get captions and boxes instead of
pixels), sends them all at once through `HFBackend` (which batches up to --batch), and
prints requests/s, generated tokens/s, prompt tokens/s and the share of valid JSON.

    python bench/hf_backend.py                                  # embedded SmolLM2, CPU
    python bench/hf_backend.py --device cuda --batch 32 --requests 256
    python bench/hf_backend.py --model path/to/Qwen2-VL-2B-Instruct --device cuda
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
import time  # noqa: E402

from evol.backends.base import BackendError, Sampling  # noqa: E402
from evol.samples import shipped  # noqa: E402
from evol.backends.hf import HFBackend, HFEngine  # noqa: E402
from evol.backends.local import embedded_model, model_source  # noqa: E402
from evol.eliminator.judge import Judge  # noqa: E402
from evol.images import ImageStore  # noqa: E402
from evol.operators import OPERATORS  # noqa: E402
from evol.operators.base import BuildOptions  # noqa: E402


def seed_records(n: int):
    """n seed records from the shipped scene graphs (written once to a temporary file, cycled)."""
    import tempfile

    import evol
    from evol.io import read_records

    out = Path(tempfile.mkdtemp(prefix="evol-bench-")) / "seeds.jsonl"
    evol.seed.shipped_samples(out)
    records = [r.record for r in read_records(str(out), "auto") if r.record is not None]
    return [records[i % len(records)] for i in range(n)]


def build_requests(n: int, send_images: bool, max_tokens: int, kind: str):
    ops = list(OPERATORS)
    judge = Judge()
    requests = []
    for k, rec in enumerate(seed_records(n)):
        sampling = Sampling(0.7, 1.0, max_tokens, k)
        if kind == "evolve" or (kind == "mixed" and k % 2 == 0):
            op = OPERATORS[ops[k % len(ops)]]
            requests.append(op.build(rec, rec.items, 1, BuildOptions(sampling, send_images)))
        else:  # judge the seed item against itself: a real judge prompt of the usual size
            pairs = [(it, it) for it in rec.items]
            requests.append(judge.build(rec, pairs, 1, send_image=send_images,
                                        sampling=Sampling(0.0, 1.0, max_tokens, k)))
    return requests


async def run(backend: HFBackend, requests) -> tuple[float, list]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True)
    return time.perf_counter() - t0, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder or .gguf file [the embedded SmolLM2-135M-Instruct]")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda [auto]")
    ap.add_argument("--dtype", default=None, help="float32, bfloat16, float16 [auto]")
    ap.add_argument("--batch", type=int, default=8, help="requests decoded together at most [8]")
    ap.add_argument("--requests", type=int, default=16, help="requests sent [16]")
    ap.add_argument("--kind", choices=("evolve", "judge", "mixed"), default="mixed")
    ap.add_argument("--max-tokens", type=int, default=256, help="answer length limit [256]")
    args = ap.parse_args()

    source = model_source(args.model) if args.model else embedded_model()
    t0 = time.perf_counter()
    engine = HFEngine(source, images=ImageStore(shipped()), device=args.device, dtype=args.dtype,
                      max_new_tokens=args.max_tokens)
    load_s = time.perf_counter() - t0
    requests = build_requests(args.requests, engine.vision, args.max_tokens, args.kind)
    backend = HFBackend(engine, max_batch=args.batch)
    wall, results = asyncio.run(run(backend, requests))
    ok = sum(1 for r in results if not isinstance(r, BaseException))
    bad = [r for r in results if isinstance(r, BackendError)]
    s = engine.stats
    import torch

    print(f"model: {source.describe()} ({'vision' if engine.vision else 'text-only'}), device {engine.device}, "
          f"dtype {next(engine.model.parameters()).dtype}, torch threads {torch.get_num_threads()}, load {load_s:.1f} s")
    print(f"requests: {len(requests)} {args.kind}, batch <= {args.batch} (largest {s.largest_batch}), "
          f"{s.batches} generate calls, max {args.max_tokens} new tokens")
    print(f"wall: {wall:.1f} s  ->  {len(requests) / wall:.3f} requests/s")
    print(f"tokens: {s.tokens_in} prompt ({s.tokens_in / wall:.0f}/s), {s.tokens_out} generated "
          f"({s.tokens_out / wall:.1f}/s)")
    print(f"valid JSON answers: {ok}/{len(requests)}")
    for r in bad[:3]:
        print(f"  failed: {r}")


if __name__ == "__main__":
    main()
