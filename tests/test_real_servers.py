"""evol against a real third-party OpenAI-compatible server: `transformers serve`.

The test server (evol.testing.server) answers the way evol expects; these tests put evol
in front of a server it did not write. `transformers serve` (the serving extra of
transformers, in the `test` extra) runs a tiny LLaVA built here (tests/tiny_vlm.py:
random weights, real processor, chat template and image tokens) on 127.0.0.1, offline,
for the module: `transformers serve MODEL_DIR --host 127.0.0.1 --port P --device cpu`,
the model pinned, requests naming it by its path. The model writes nonsense, so what is
checked is what can be checked honestly: the pictures evol sends reach the model (each
adds its image tokens to the prompt); `evol evolve` runs with its preflight, which must
find that the server ignores response_format (dialect "prompt") and sees pictures; the
run completes (exit 0: unusable replies are model faults, a round's result, not the
run's); every request got an HTTP answer (no record pending, no transport fault, only
200s in the server's own access log); every answer is accounted for (the server's count
of chat completions is the records' requests plus the preflight's few), and the run
folder has its manifest. About 35 s on 2 cores, 20 of them starting the server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import SEEDS, evolve_args, read_jsonl, run_cli, write_llava_seeds

try:
    from transformers.utils.import_utils import is_serve_available
except ImportError:  # pragma: no cover - transformers without the serve command
    is_serve_available = None
if is_serve_available is None or not is_serve_available():
    pytest.skip("`transformers serve` needs the serving extra: pip install 'transformers[serving]' "
                "(part of evol's `test` extra)", allow_module_level=True)

START_DEADLINE_S = 180  # importing torch and transformers on a loaded 2-core machine takes a while
RECORDS = 3
MAX_ATTEMPTS = 2
ACCESS = re.compile(r'"(GET|POST|OPTIONS) (\S+) HTTP/[\d.]+" (\d{3})')
# what a transport fault, a refused request or an evol bug leaves in an error or reject reason
NOT_MODEL_FAULTS = ("no answer after", "cannot connect", "timed out", "HTTP ", "internal error",
                    "the run stopped")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, proc: subprocess.Popen, url: str, model: str, log: Path):
        self.proc, self.url, self.model, self.log = proc, url, model, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def access(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request, from the server's own access log."""
        return [(m, p, int(s)) for m, p, s in ACCESS.findall(self.log_text())]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down on Ctrl+C
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory):
    """`transformers serve` running the tiny LLaVA on a free port of 127.0.0.1, offline."""
    from tiny_vlm import build_tiny_llava_for_serving

    root = tmp_path_factory.mktemp("transformers-serve")
    model = str(build_tiny_llava_for_serving(root / "tiny-llava"))
    port = _free_port()
    log = root / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HOME": str(root / "hf-home"), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "transformers.cli.transformers", "serve", model,
             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    served = Served(proc, f"http://127.0.0.1:{port}/v1", model, log)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{served.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(served.url + "/models", timeout=5) as resp:
                    listed = json.load(resp)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not answer /v1/models within {START_DEADLINE_S} s:\n"
                                f"{served.log_text()[-3000:]}")
                time.sleep(0.5)
        assert [m["id"] for m in listed["data"]] == [model]
        yield served
    finally:
        served.stop()


async def test_images_reach_the_model(transformers_serve):
    """evol's image parts (base64 data URLs) are decoded by the server's processor: each
    photo adds the same number of prompt tokens (the image's features)."""
    from evol.backends.base import Image, Message, Request, Sampling, Text
    from evol.backends.limits import Limiter
    from evol.backends.openai import OpenAIBackend
    from evol.images import ImageStore

    backend = OpenAIBackend(transformers_serve.model, transformers_serve.url, api_key_env="EVOL_NO_KEY",
                            images=ImageStore(SEEDS), limiter=Limiter(2), timeout=120, max_attempts=1)
    try:
        async def prompt_tokens(*images: str) -> int:
            parts = (*(Image(name) for name in images), Text("What is shown?"))
            reply = await backend.complete(Request(messages=(Message("user", parts),),
                                                   sampling=Sampling(0.0, 1.0, 1, 0), tag="img"))
            return reply.tokens_in

        none = await prompt_tokens()
        one = await prompt_tokens("coffee.jpg")
        two = await prompt_tokens("coffee.jpg", "chelsea.jpg")
    finally:
        await backend.aclose()
    assert one > none
    assert two - one == one - none


def test_evolve_through_transformers_serve(transformers_serve, tmp_path):
    seeds = write_llava_seeds(tmp_path, RECORDS)
    out = tmp_path / "run"
    before = len(transformers_serve.access())
    args = evolve_args(seeds, out, transformers_serve.url, "--rounds", "1", "--max-tokens", "24",
                       "--max-attempts", str(MAX_ATTEMPTS))
    args[args.index("--model") + 1] = transformers_serve.model
    args[args.index("--concurrency") + 1] = "2"  # the server generates one request at a time
    args[args.index("--timeout") + 1] = "120"
    t0 = time.monotonic()
    proc = run_cli(*args, timeout=600)
    wall = time.monotonic() - t0
    detail = f"exit {proc.returncode} after {wall:.0f} s\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"

    # complete: unusable replies are the records' results (exit 3 would mean records pending)
    assert proc.returncode == 0, detail
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete", detail
    assert manifest["pending"]["records"] == 0, manifest["pending"]
    assert manifest["counts"]["records_out"] == RECORDS

    # every record ran its round; a round was judged, or failed on an unusable reply
    records = read_jsonl(out / "records.jsonl")
    assert sorted(r["id"] for r in records) == [f"s{i}" for i in range(RECORDS)]
    versions = [v for r in records for v in r["versions"]]
    assert len(versions) == RECORDS and all(v["round"] == 1 for v in versions)
    for v in versions:
        assert v["status"] in ("judged", "failed", "judge_failed"), v
        if v["status"] != "judged":  # the model's fault, never a missing answer
            assert not any(w in v["error"] for w in NOT_MODEL_FAULTS), v["error"]
    for entry in read_jsonl(out / "rejects.jsonl"):
        assert not entry["final"], entry  # no record rejected whole (images, internal errors)
        assert not any(w in entry["reason"] for w in NOT_MODEL_FAULTS), entry

    # the server's own count: every request it got was answered 200, and every answer
    # reached evol's parser: the records account for each one (a round's `requests`
    # counts every attempt), the preflight's few calls aside
    access = transformers_serve.access()[before:]
    assert [a for a in access if a[2] != 200] == [], access
    chat = sum(1 for _, path, _ in access if path == "/v1/chat/completions")
    sent = sum(v["requests"] for v in versions)
    assert sent >= len(versions)
    http = manifest.get("http")
    if isinstance(http, dict):  # evol's own count by outcome: only unusable replies went wrong
        assert http["requests"] == sent, http
        assert set(http.get("retried") or {}) | set(http.get("failed") or {}) <= {"parse"}, http
    preflight = chat - sent
    server = manifest.get("server")
    if server is not None:  # the preflight's findings: transformers serve ignores response_format
        # (its answers follow no schema), and its LLaVA sees pictures: evol sends them
        assert server["dialect"] == "prompt" and server["images"] == "seen" and server["send_images"], server
    assert (1 <= preflight <= 8) if "server" in manifest else preflight == 0, (chat, sent, manifest.get("server"))
    print(f"\nevolve through transformers serve: {wall:.1f} s, {chat} chat completions ({preflight} preflight), "
          f"{sum(v['status'] == 'judged' for v in versions)}/{len(versions)} rounds judged, "
          f"server check {manifest.get('server')}")
