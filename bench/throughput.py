"""Throughput, CPU per request and start-up of a whole evolve run against the local test server.

Starts the test server in its own process (latency L, lognormal spread S), writes N
records with a small image each, runs one evolution round (an operator call and a judge
call per record: 2N requests) with concurrency C through the real runner, cache and
client, preflight included, and prints:

* achieved requests/s, the ideal C/L and their ratio;
* the framework's CPU per request (this process only, from the call to its return; the
  server's CPU is not counted);
* start-up: seconds from the start of the `evol.evolve` call to the first chat request of
  the run the server receives (the preflight's calls are counted apart), and to the first
  request of any kind (the preflight's first);
* unless ``--no-cold``: the same for a fresh ``python -m evol.cli evolve`` process, from
  its launch (imports included), on a few records.

The server stamps its first requests with the wall clock (``time.time()``), so the figures
span the two processes.

    python bench/throughput.py --records 2000 --concurrency 128 --latency 0.5
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

SERVE = "--serve"  # argv[1] of the server process this bench starts


def serve(argv: list[str]) -> None:
    """The test server, with the wall-clock time of its first requests added to /stats."""
    import evol.testing.server as server

    first: dict[str, float] = {}

    def stamped(handler, name: str):
        async def wrapper(request):
            now = time.time()
            first.setdefault("first_any", now)
            if name == "chat" and not request.headers.get(server.PREFLIGHT_HEADER):
                first.setdefault("first_chat", now)
            return await handler(request)
        return wrapper

    stats = server._stats

    async def stats_with_times(request):
        resp = await stats(request)
        body = json.loads(resp.body)
        body.update(first)
        return server.web.json_response(body)

    server._chat = stamped(server._chat, "chat")
    server._models = stamped(server._models, "models")
    server._model = stamped(server._model, "model")
    server._stats = stats_with_times
    server.main(argv)


def start_server(latency: float, spread: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), SERVE, "--port", "0",
         "--latency", str(latency), "--spread", str(spread)],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        proc.kill()
        raise SystemExit(f"test server did not start: {line!r}")
    return proc, line.split()[1]


def server_stats(url: str) -> dict:
    return json.load(urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats"))


def write_inputs(folder: Path, n: int) -> Path:
    from PIL import Image

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


def cold_start(args: argparse.Namespace, tmp: Path, seeds: Path) -> tuple[float | None, float | None]:
    """Seconds from launching `python -m evol.cli evolve` to its first chat request and to
    its first request of any kind, against a server of its own."""
    proc, url = start_server(args.latency, args.spread)
    try:
        t0 = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "evol.cli", "evolve", str(seeds), "--out", str(tmp / "cold"), "--rounds", "1",
             "--model", "bench", "--base-url", url, "--image-root", str(tmp), "--limit", "4",
             "--api-key-env", "EVOL_BENCH_NO_KEY", *([] if args.preflight else ["--no-preflight"])],
            capture_output=True, text=True, env={**os.environ, "TERM": "dumb"})
        if done.returncode != 0:
            print(f"cold run failed ({done.returncode}): {done.stderr[-500:]}", file=sys.stderr)
        stats = server_stats(url)
    finally:
        proc.terminate()
        proc.wait(10)
    return (stats["first_chat"] - t0 if "first_chat" in stats else None,
            stats["first_any"] - t0 if "first_any" in stats else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--spread", type=float, default=0.3)
    ap.add_argument("--no-preflight", dest="preflight", action="store_false",
                    help="skip the preflight (its HTTP round trips are part of start-up)")
    ap.add_argument("--no-cold", dest="cold", action="store_false",
                    help="skip the fresh-process start-up measurement")
    args = ap.parse_args()

    import evol
    import evol.api  # noqa: F401  (imported up front: module loading is not throughput)
    import evol.backends.openai  # noqa: F401

    proc, url = start_server(args.latency, args.spread)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            seeds = write_inputs(tmp_path, args.records)
            cpu0, t0, wall0 = time.process_time(), time.perf_counter(), time.time()
            evol.evolve(seeds, tmp_path / "run", rounds=1, model="bench", base_url=url, image_root=str(tmp_path),
                        concurrency=args.concurrency, timeout=60, api_key_env="EVOL_BENCH_NO_KEY",
                        preflight=args.preflight, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            stats = server_stats(url)
            cold = cold_start(args, tmp_path, seeds) if args.cold else None
    finally:
        proc.terminate()
        proc.wait(10)
    requests = stats["requests"]
    first_chat = stats["first_chat"] - wall0
    first_any = stats.get("first_any", stats["first_chat"]) - wall0
    achieved = requests / wall
    ideal = args.concurrency / args.latency
    print(f"requests              {requests} (+{stats.get('preflight', {}).get('requests', 0)} preflight)")
    print(f"wall seconds          {wall:.2f}")
    print(f"achieved req/s        {achieved:.1f}")
    print(f"ideal C/L req/s       {ideal:.1f}")
    print(f"ratio                 {achieved / ideal:.3f}")
    print(f"framework CPU/request {cpu / requests * 1000:.2f} ms ({cpu:.2f} CPU s in all)")
    print(f"start-up (call)       {first_chat:.3f} s to the first request of the run "
          f"({first_any:.3f} s to the first of the preflight)")
    if cold is not None:
        chat, any_ = cold
        fmt = lambda v: "n/a" if v is None else f"{v:.3f} s"  # noqa: E731
        print(f"start-up (process)    {fmt(chat)} from `python -m evol.cli evolve` to the first request of the run "
              f"({fmt(any_)} to the first of the preflight)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == SERVE:
        serve(sys.argv[2:])
    else:
        main()
