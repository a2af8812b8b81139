"""Throughput of a whole evolve run against the local test server.

Starts the test server in its own process (latency L, lognormal spread S), writes N
records with a small image each, runs one evolution round (an operator call and a judge
call per record: 2N requests) with concurrency C through the real runner, cache and
client, and prints achieved requests/s, the ideal C/L, their ratio, and the framework's
CPU seconds per request (this process only; the server's CPU is not counted).

    python bench/throughput.py --records 1000 --concurrency 128 --latency 1 --spread 0.3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

import evol
import evol.api  # noqa: F401  (imported up front: module loading is not throughput)
import evol.backends.openai  # noqa: F401


def start_server(latency: float, spread: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "evol.testing.server", "--port", "0",
         "--latency", str(latency), "--spread", str(spread)],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        proc.kill()
        raise SystemExit(f"test server did not start: {line!r}")
    return proc, line.split()[1]


def write_inputs(folder: Path, n: int) -> Path:
    Image.new("RGB", (64, 48), (120, 160, 200)).save(folder / "img.png")
    seeds = folder / "seeds.jsonl"
    with open(seeds, "w") as f:
        for i in range(n):
            f.write(json.dumps({
                "id": f"rec{i}", "image": "img.png",
                "conversations": [
                    {"from": "human", "value": f"<image>\nWhat colour is region {i}?"},
                    {"from": "gpt", "value": "It is a pale blue."},
                ],
            }) + "\n")
    return seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--spread", type=float, default=0.3)
    args = ap.parse_args()

    proc, url = start_server(args.latency, args.spread)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            seeds = write_inputs(tmp_path, args.records)
            cpu0, t0 = time.process_time(), time.perf_counter()
            evol.evolve(seeds, tmp_path / "run", rounds=1, model="bench", base_url=url, image_root=str(tmp_path),
                        concurrency=args.concurrency, timeout=60, api_key_env="EVOL_BENCH_NO_KEY", preflight=False,
                        progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            stats = json.load(urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats"))
    finally:
        proc.terminate()
        proc.wait(10)
    requests = stats["requests"]
    achieved = requests / wall
    ideal = args.concurrency / args.latency
    print(f"requests            {requests}")
    print(f"wall seconds        {wall:.2f}")
    print(f"achieved req/s      {achieved:.1f}")
    print(f"ideal C/L req/s     {ideal:.1f}")
    print(f"ratio               {achieved / ideal:.3f}")
    print(f"framework CPU/request {cpu / requests * 1000:.2f} ms ({cpu:.1f} CPU s in all)")


if __name__ == "__main__":
    main()
