"""Resume after kill -9, and a run under injected faults, at a size bigger than the tests.

1. An uninterrupted run of N records (2 rounds) against the test server.
2. The same run killed with SIGKILL halfway, then rerun: compares llava.json and
   records.jsonl with (1) and prints how many requests the server saw against (1).
3. A run with 20% injected faults (429, 500, timeouts, garbled replies, 5% each):
   prints how every input record is accounted for.

    python bench/resilience.py --records 300 --concurrency 32 --latency 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evol.testing.server import ServerConfig, start_in_thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import write_inputs  # noqa: E402


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "evol.cli", *args]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in lines(path)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    a = ap.parse_args()
    env = {**os.environ, "EVOL_BENCH_NO_KEY": ""}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seeds = write_inputs(root, a.records)

        def args(url: str, out: Path, *extra: str) -> list[str]:
            return cli("evolve", str(seeds), "--out", str(out), "--model", "bench", "--base-url", url,
                       "--image-root", str(root), "--rounds", "2", "--concurrency", str(a.concurrency),
                       "--api-key-env", "EVOL_BENCH_NO_KEY", *extra)

        ref_srv = start_in_thread(ServerConfig(latency=a.latency, spread=0.3))
        subprocess.run(args(ref_srv.url, root / "ref"), check=True, capture_output=True, env=env)
        uninterrupted = ref_srv.stats()["requests"]
        ref_srv.stop()

        srv = start_in_thread(ServerConfig(latency=a.latency, spread=0.3))
        out = root / "killed"
        proc = subprocess.Popen(args(srv.url, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        while len(lines(out / "records.jsonl")) < a.records // 2 and proc.poll() is None:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        at_kill, sent_before = len(lines(out / "records.jsonl")), srv.stats()["requests"]
        subprocess.run(args(srv.url, out), check=True, capture_output=True, env=env)
        resumed_total = srv.stats()["requests"]
        srv.stop()
        same_llava = (out / "llava.json").read_bytes() == (root / "ref" / "llava.json").read_bytes()
        same_records = by_id(out / "records.jsonl") == by_id(root / "ref" / "records.jsonl")
        print(f"uninterrupted run: {uninterrupted} requests")
        print(f"killed at {at_kill}/{a.records} records after {sent_before} requests; rerun sent "
              f"{resumed_total - sent_before}; total {resumed_total} = uninterrupted + {resumed_total - uninterrupted} "
              f"(calls in flight at most {a.concurrency})")
        print(f"llava.json identical: {same_llava}; records identical: {same_records}")

        srv = start_in_thread(ServerConfig(latency=a.latency, fail_429=0.05, fail_500=0.05, fail_timeout=0.05,
                                           garbled=0.05, hang_seconds=5, seed=1))
        out = root / "faults"
        t0 = time.perf_counter()
        subprocess.run(args(srv.url, out, "--timeout", "2"), check=True, capture_output=True, env=env)
        wall = time.perf_counter() - t0
        stats = srv.stats()
        srv.stop()
        records, rejects = lines(out / "records.jsonl"), lines(out / "rejects.jsonl")
        final = sum(r["final"] for r in rejects)
        llava = json.loads((out / "llava.json").read_text())
        items = sum(len(v["items"]) for r in records for v in r["versions"])
        item_rejects = sum(1 for r in rejects if "item" in r)
        failed_calls = sum(1 for r in rejects if r["stage"] == "evolve" or r["reason"].startswith("judge failed"))
        print(f"faults: {stats['requests']} requests, status {stats['status']}, timeouts {stats['timeouts']}, "
              f"garbled {stats['garbled']}; wall {wall:.1f} s")
        print(f"records: {a.records} in = {len(records)} written + {final} rejected whole")
        print(f"evolved items: {items} = {len(llava)} kept + {item_rejects} rejected with a reason; "
              f"reject entries naming a call that failed for good: {failed_calls}")


if __name__ == "__main__":
    main()
