"""Resume after kill -9, and a run under injected faults, at a size bigger than the tests.

1. An uninterrupted run of N records (2 rounds) against the test server.
2. The same run killed with SIGKILL halfway, then rerun: compares llava.json and
   records.jsonl with (1) and prints how many requests the server saw against (1).
3. A run with 20% injected transport faults (429, 500, timeouts) and --max-attempts 2: it
   must exit 3 with records pending; a rerun against a fault-free server must send exactly
   the calls the faulty run got no answer to (and what follows them), and end equal to (1).
   Then a run with 5% garbled replies: the rounds that fail on them are counted, and a
   rerun with --retry-failed completes them.
4b. With --stops only: a 401 server, a closed port and a full disk (a 256 KiB file-size
   limit): seconds to the non-zero exit, the one line printed, and whether a rerun against
   a working server equals (1) while sending only what was never answered.
4. With --rate-limits [K] only: the run of (1) fault-free, then with 4% 429s that carry no
   Retry-After, K times each; prints both wall times and their ratio (target: <= 1.25).
5. With --memory [N] only: peak RSS of a run with N records in flight (default 8), each
   with its own 100-megapixel picture, against the same run with a small picture.
6. With --capacity-one [N] only: N records (default 64), 1 round, the default
   --concurrency (64) and --timeout 120, against a server that serves one call at a time,
   2 s each: requests sent, timeouts, usable replies, requests per usable reply (target:
   no timeout, at most 1.1), wall time. (With all 64 let in at once the last ones would
   wait 128 s in the server's queue and time out; fewer than 61 records cannot show it,
   as a record has one call in flight at a time.)

    python bench/resilience.py --records 300 --concurrency 32 --latency 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import sqlite3
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


def cache_keys(run: Path) -> set[str]:
    db = sqlite3.connect(run / "cache.sqlite")
    try:
        return {k for (k,) in db.execute("SELECT key FROM replies")}
    finally:
        db.close()


def error_line(stderr: bytes) -> str:
    found = [x for x in stderr.decode(errors="replace").splitlines() if x.startswith("error:")]
    return " | ".join(found) or "(no error line)"


def stops(a: argparse.Namespace, env: dict) -> None:
    """Section 4b: a run that cannot succeed stops at once, and a rerun finishes it."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seeds = write_inputs(root, a.records)

        def args(url: str, out: Path, *extra: str) -> list[str]:
            return cli("evolve", str(seeds), "--out", str(out), "--model", "bench", "--base-url", url,
                       "--image-root", str(root), "--rounds", "2", "--concurrency", str(a.concurrency), *extra)

        ref_srv = start_in_thread(ServerConfig(latency=a.latency, spread=0.3))
        subprocess.run(args(ref_srv.url, root / "ref"), check=True, capture_output=True,
                       env={**env, "OPENAI_API_KEY": "k"})
        ref_srv.stop()
        ref_keys = cache_keys(root / "ref")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        limit = 256 * 1024

        def small_disk() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        cases = (("401 (wrong key)", dict(api_key="right"), None, "wrong"),
                 ("closed port", None, None, "right"),
                 ("full disk", {}, small_disk, "right"))
        for name, server_kw, preexec, key in cases:
            srv = start_in_thread(ServerConfig(latency=a.latency, spread=0.3, **(server_kw or {}))) \
                if server_kw is not None else None
            out = root / name.split()[0]
            t0 = time.perf_counter()
            if preexec is None:  # the preflight's verdict first: nothing is written as done
                res = subprocess.run(args(srv.url if srv else closed, root / "preflight"), capture_output=True,
                                     env={**env, "OPENAI_API_KEY": key})
                print(f"{name}, preflight: exit {res.returncode} after {time.perf_counter() - t0:.1f} s; "
                      f"{error_line(res.stderr)}")
                t0 = time.perf_counter()
            # then the run's own stop, with the preflight off (a server that breaks mid-run)
            res = subprocess.run(args(srv.url if srv else closed, out, "--no-preflight"), capture_output=True,
                                 preexec_fn=preexec, env={**env, "OPENAI_API_KEY": key})
            wall = time.perf_counter() - t0
            answered = cache_keys(out) if (out / "cache.sqlite").exists() else set()
            print(f"{name}: exit {res.returncode} after {wall:.1f} s; {error_line(res.stderr)}")
            good = srv or start_in_thread(ServerConfig(latency=a.latency, spread=0.3))
            before = good.stats()["requests"]
            again = subprocess.run(args(good.url, out), capture_output=True, env={**env, "OPENAI_API_KEY": "right"})
            sent = good.stats()["requests"] - before
            good.stop()
            same = (out / "llava.json").read_bytes() == (root / "ref" / "llava.json").read_bytes()
            print(f"  rerun: exit {again.returncode}; sent {sent} = never answered {len(ref_keys - answered)}; "
                  f"answers kept from the stopped run {len(answered)}; llava.json equal to uninterrupted: {same}")


def rate_limits(a: argparse.Namespace, env: dict) -> None:
    """Section 4: 429s without Retry-After must slow a run down a little, not stall it."""
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seeds = write_inputs(root, a.records)
        for k in range(a.rate_limits):
            walls = {}
            for name, fail_429 in (("fault-free", 0.0), ("429s", 0.04)):
                srv = start_in_thread(ServerConfig(latency=a.latency, spread=0.3, fail_429=fail_429,
                                                   retry_after=None, seed=k + 1))
                out = root / f"{name}-{k}"
                t0 = time.perf_counter()
                subprocess.run(cli("evolve", str(seeds), "--out", str(out), "--model", "bench",
                                   "--base-url", srv.url, "--image-root", str(root), "--rounds", "2",
                                   "--concurrency", str(a.concurrency), "--api-key-env", "EVOL_BENCH_NO_KEY"),
                               check=True, capture_output=True, env=env)
                walls[name] = time.perf_counter() - t0
                stats = srv.stats()
                srv.stop()
                print(f"run {k + 1} {name}: {stats['requests']} requests, status {stats['status']}, "
                      f"{len(lines(out / 'records.jsonl'))}/{a.records} records written; "
                      f"wall {walls[name]:.1f} s", flush=True)
            ratios.append(walls["429s"] / walls["fault-free"])
            print(f"run {k + 1}: 4% 429s without Retry-After / fault-free = {ratios[-1]:.2f}x "
                  "(target <= 1.25x)", flush=True)
    if len(ratios) > 1:
        print("ratios: " + ", ".join(f"{r:.2f}" for r in ratios) + f"; worst {max(ratios):.2f}x")


# Writes N 10000 x 10000 pictures (even: JPEG, odd: PNG) to argv[1]. Run in a process of its
# own: Linux charges a child the peak RSS of the process that started it (the child's
# memory at exec is the parent's), so the bench process itself must stay small.
_MAKE_BIG_IMAGES = """
import sys
from pathlib import Path
from PIL import Image
root, n = Path(sys.argv[1]), int(sys.argv[2])
base = Image.linear_gradient("L").resize((10000, 10000), Image.Resampling.BILINEAR)
big = Image.merge("RGB", (base, base.transpose(Image.Transpose.ROTATE_90),
                          base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
for i in range(n):  # every record its own file, own bytes: a marker square moves
    big.paste((255, 40 * i % 256, 0), (100 * i, 100 * i, 100 * i + 100, 100 * i + 100))
    if i % 2 == 0:
        big.save(root / f"big{i}.jpg", quality=90)
    else:
        big.save(root / f"big{i}.png", compress_level=1)
"""


def _peak_rss_mb(cmd: list[str], env: dict, log: Path) -> tuple[int, float]:
    """Run cmd; its exit code and its own peak RSS in MB (os.wait4: this child only)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def memory(a: argparse.Namespace, env: dict) -> None:
    """Section 5: peak memory of a run with N records in flight, each with its own
    100-megapixel picture (10000 x 10000; half JPEG, half PNG), --max-side at its default.

    Each such picture is ~300 MB once decoded. What keeps the run bounded: the pixel
    count is read from the header, at most os.cpu_count() full decodes run at once in the
    process, and JPEGs that are sent downscaled are decoded at a reduced DCT scale. The
    same run with one small picture is measured first, as the baseline.
    """
    import resource

    n = a.memory
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, "-c", _MAKE_BIG_IMAGES, str(root), str(n)], check=True)
        names = [f"big{i}.jpg" if i % 2 == 0 else f"big{i}.png" for i in range(n)]
        write_inputs(root, 1)  # img.png, the small picture of the baseline
        conv = [{"from": "human", "value": "<image>\nWhat colour is the gradient?"},
                {"from": "gpt", "value": "It goes from black to white."}]
        results = {}
        for label, pics in (("small", ["img.png"] * n), ("100-megapixel", names)):
            seeds = root / f"{label}.jsonl"
            seeds.write_text("".join(json.dumps({"id": f"m{i}", "image": pic, "conversations": conv}) + "\n"
                                     for i, pic in enumerate(pics)))
            srv = start_in_thread(ServerConfig(latency=a.latency))
            out, log = root / f"run-{label}", root / f"{label}.log"
            t0 = time.perf_counter()
            rc, peak = _peak_rss_mb(cli("evolve", str(seeds), "--out", str(out), "--model", "bench",
                                        "--base-url", srv.url, "--image-root", str(root), "--rounds", "1",
                                        "--concurrency", str(n), "--api-key-env", "EVOL_BENCH_NO_KEY"),
                                    env, log)
            wall = time.perf_counter() - t0
            requests = srv.stats()["requests"]
            srv.stop()
            if rc != 0:
                print(log.read_text()[-2000:])
            results[label] = peak
            print(f"{n} records in flight, {label} images: exit {rc}, {len(lines(out / 'records.jsonl'))} written, "
                  f"{len(lines(out / 'rejects.jsonl'))} reject entries, {requests} requests, wall {wall:.1f} s; "
                  f"peak RSS {peak:.0f} MB", flush=True)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
        print(f"peak RSS with {n} x 100-megapixel images: {results['100-megapixel']:.0f} MB "
              f"(+{results['100-megapixel'] - results['small']:.0f} MB over the small-image run; at most "
              f"os.cpu_count() = {os.cpu_count()} decodes at once; this bench process, {own:.0f} MB, is a floor "
              "under both figures)")


def capacity_one(a: argparse.Namespace, env: dict) -> None:
    """Section 6: the window must fit a server that queues what it cannot serve."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seeds = write_inputs(root, a.capacity_one)
        srv = start_in_thread(ServerConfig(capacity=1, latency=2.0))
        out = root / "run"
        t0 = time.perf_counter()
        res = subprocess.run(cli("evolve", str(seeds), "--out", str(out), "--model", "bench", "--base-url", srv.url,
                                 "--image-root", str(root), "--rounds", "1", "--timeout", "120",
                                 "--api-key-env", "EVOL_BENCH_NO_KEY"), capture_output=True, env=env)
        wall = time.perf_counter() - t0
        stats = srv.stats()
        srv.stop()
        http = json.loads((out / "manifest.json").read_text()).get("http") or {}
        timeouts = sum(http.get(o, {}).get("timeout", {}).get("requests", 0) for o in ("retried", "failed"))
        usable = http.get("ok", {}).get("requests", 0)
        print(f"capacity one, 2 s per answer, {a.capacity_one} records, --concurrency 64 --timeout 120: "
              f"exit {res.returncode}; {stats['requests']} requests sent, {timeouts} timeouts, {usable} usable "
              f"replies, {stats['requests'] / max(1, usable):.2f} requests per usable reply (target <= 1.1); "
              f"at most {stats['peak_serving']} served at once; wall {wall:.1f} s "
              f"(the server alone: {2 * usable:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--rate-limits", type=int, nargs="?", const=1, default=0, metavar="K",
                    help="run only section 4 (429s without Retry-After), K times")
    ap.add_argument("--stops", action="store_true",
                    help="run only section 4b (401, closed port, full disk: stop and rerun)")
    ap.add_argument("--memory", type=int, nargs="?", const=8, default=0, metavar="N",
                    help="run only section 5 (peak memory, N records with 100-megapixel images)")
    ap.add_argument("--capacity-one", type=int, nargs="?", const=64, default=0, metavar="N",
                    help="run only section 6 (a server serving one call at a time, N records)")
    a = ap.parse_args()
    env = {**os.environ, "EVOL_BENCH_NO_KEY": ""}
    if a.capacity_one:
        return capacity_one(a, env)
    if a.rate_limits:
        return rate_limits(a, env)
    if a.memory:
        return memory(a, env)
    if a.stops:
        return stops(a, env)
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

        ref_keys = cache_keys(root / "ref")
        srv = start_in_thread(ServerConfig(latency=a.latency, fail_429=0.07, fail_500=0.07, fail_timeout=0.06,
                                           hang_seconds=5, seed=1))
        out = root / "faults"
        t0 = time.perf_counter()
        res = subprocess.run(args(srv.url, out, "--timeout", "2", "--max-attempts", "2"), capture_output=True, env=env)
        wall = time.perf_counter() - t0
        stats = srv.stats()
        srv.stop()
        pending = [x.strip() for x in res.stderr.decode().splitlines() if "records pending" in x or
                   x.strip().startswith("pending:")]
        answered = cache_keys(out)
        print(f"20% transport faults, --max-attempts 2: exit {res.returncode}; {stats['requests']} requests, "
              f"status {stats['status']}, timeouts {stats['timeouts']}; wall {wall:.1f} s")
        print("  " + " / ".join(pending[:2]))
        clean = start_in_thread(ServerConfig(latency=a.latency, spread=0.3))
        again = subprocess.run(args(clean.url, out), capture_output=True, env=env)
        sent = clean.stats()["requests"]
        clean.stop()
        same = (out / "llava.json").read_bytes() == (root / "ref" / "llava.json").read_bytes()
        print(f"  rerun fault-free: exit {again.returncode}; sent {sent} = never answered before "
              f"{len(ref_keys - answered)} (of {len(ref_keys)}); llava.json equal to uninterrupted: {same}; records equal: "
              f"{by_id(out / 'records.jsonl') == by_id(root / 'ref' / 'records.jsonl')}")

        srv = start_in_thread(ServerConfig(latency=a.latency, garbled=0.05, seed=2))
        out = root / "garbled"
        res = subprocess.run(args(srv.url, out, "--max-attempts", "2"), capture_output=True, env=env)
        srv.stop()
        records = lines(out / "records.jsonl")
        failed = sum(any(v["status"] != "judged" for v in r["versions"]) for r in records)
        print(f"5% garbled replies, --max-attempts 2: exit {res.returncode}; {len(records)}/{a.records} records "
              f"written, {failed} with a failed round (model faults)")
        clean = start_in_thread(ServerConfig(latency=a.latency, spread=0.3))
        again = subprocess.run(args(clean.url, out, "--retry-failed"), capture_output=True, env=env)
        records = lines(out / "records.jsonl")
        failed = sum(any(v["status"] != "judged" for v in r["versions"]) for r in records)
        print(f"  rerun --retry-failed: exit {again.returncode}; {clean.stats()['requests']} requests; "
              f"{len(records)} records, {failed} with a failed round")
        clean.stop()


if __name__ == "__main__":
    main()
