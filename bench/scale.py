"""Several capacity-limited servers from one process, and over Ray (issue 14).

Starts K test servers, each in its own process, each serving at most C requests at once
with latency L (a replica of a GPU server: the rest queue), writes R records with a small
image, and evolves them for one round (an operator and a judge call per record: 2R
requests) with every server given as a --base-url and --concurrency C per server. Prints,
for K = 1, 2, 4: requests/s beside the ideal K*C/L and their ratio, and the framework's CPU
per request (this process only; the servers' CPU is not counted). With --ray, each K is
also run over Ray (shards as Ray tasks on this machine, sharing the endpoints), on a Ray
started once beforehand, as a cluster is before `--ray auto`.

    python bench/scale.py --k 1,2,4 --capacity 32 --latency 1 --requests 4000 [--ray]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import write_inputs  # noqa: E402

import evol  # noqa: E402
import evol.api  # noqa: E402,F401  (loaded up front: module loading is not throughput)


def start_servers(k: int, capacity: int, latency: float) -> list[tuple[subprocess.Popen, str]]:
    servers = []
    for _ in range(k):
        proc = subprocess.Popen([sys.executable, "-m", "evol.testing.server", "--port", "0", "--latency",
                                 str(latency), "--spread", "0", "--capacity", str(capacity)],
                                stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline().strip()
        if not line.startswith("listening "):
            proc.kill()
            raise SystemExit(f"test server did not start: {line!r}")
        servers.append((proc, line.split()[1]))
    return servers


def served(url: str) -> int:
    return json.load(urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats"))["requests"]


def run_once(k: int, args: argparse.Namespace, ray: str | None) -> dict:
    servers = start_servers(k, args.capacity, args.latency)
    urls = [url for _, url in servers]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            seeds = write_inputs(folder, args.requests // 2)
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = evol.evolve(seeds, folder / "run", rounds=1, model="bench", base_url=urls,
                                 concurrency=args.capacity, image_root=str(folder), timeout=120,
                                 api_key_env="EVOL_BENCH_NO_KEY", preflight=False, progress=False,
                                 **({"ray": ray} if ray else {}))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            per_server = [served(url) for url in urls]
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(10)
    requests = sum(per_server)
    ideal = k * args.capacity / args.latency
    return {"k": k, "ray": bool(ray), "complete": result.complete, "requests": requests, "per_server": per_server,
            "wall_s": wall, "req_s": requests / wall, "ideal": ideal, "ratio": requests / wall / ideal,
            "cpu_ms": cpu / requests * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", default="1,2,4", help="Server counts to try.")
    ap.add_argument("--capacity", type=int, default=32, help="Requests each server serves at once (C).")
    ap.add_argument("--latency", type=float, default=1.0, help="Seconds per request (L).")
    ap.add_argument("--requests", type=int, default=4000, help="Requests per run (2 per record).")
    ap.add_argument("--ray", action="store_true", help="Also run each K with --ray local.")
    args = ap.parse_args()
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="evol-ray-"))
    if args.ray:  # a cluster that is already up, as with `ray start --head` and --ray auto: its start is not timed
        import ray

        t0 = time.perf_counter()
        ray.init(include_dashboard=False, configure_logging=False)
        print(f"(Ray started in {time.perf_counter() - t0:.1f} s, not counted below; "
              f"{int(ray.cluster_resources().get('CPU', 0))} CPUs)")
    print(f"{'K':>2} {'mode':>7} {'requests':>8} {'wall s':>7} {'req/s':>7} {'ideal':>6} {'ratio':>6} "
          f"{'CPU ms/req':>10}  per server")
    for k in (int(x) for x in args.k.split(",")):
        for ray in ([None, "local"] if args.ray else [None]):
            r = run_once(k, args, ray)
            cpu = f"{r['cpu_ms']:10.2f}" if not ray else f"{'(driver)':>10}"
            print(f"{k:>2} {'ray' if ray else 'process':>7} {r['requests']:>8} {r['wall_s']:>7.1f} {r['req_s']:>7.1f} "
                  f"{r['ideal']:>6.0f} {r['ratio']:>6.3f} {cpu}  {r['per_server']}"
                  + ("" if r["complete"] else "  INCOMPLETE"), flush=True)


if __name__ == "__main__":
    main()
