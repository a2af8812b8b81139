"""Accounting of what a run sends and spends, and concurrency that fits the server.

Real HTTP to the test server on 127.0.0.1; every check is a count (the server's own
counts against the manifest's), never a wall-clock bound.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from conftest import evolve_args, popen_cli, read_jsonl, run_cli, write_llava_seeds

from evol.backends.base import Message, Request, Text, TransportError
from evol.backends.limits import Limiter
from evol.backends.openai import OpenAIBackend
from evol.images import ImageStore
from evol.rundir import RunDir, invocation_totals
from evol.runner import RunStats
from evol.stats import CallStats


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _outcomes(http: dict, outcome: str, kind: str) -> int:
    return http[outcome].get(kind, {}).get("requests", 0)


def _check_sums(http: dict) -> None:
    """Every request is counted once, under one outcome, with its tokens."""
    parts = [http["ok"], *http["retried"].values(), *http["failed"].values()]
    assert sum(p["requests"] for p in parts) == http["requests"]
    assert sum(p["tokens_in"] for p in parts) == http["tokens_in"]
    assert sum(p["tokens_out"] for p in parts) == http["tokens_out"]


def test_a_server_that_serves_one_call_at_a_time_gets_no_timeouts(tmp_path, server_factory):
    """Capacity one, 0.5 s an answer, --timeout 10, the default --concurrency (64): 24
    records at once would queue 12 s for the last of them. The window starts modest and
    follows latency, so no request times out and none is sent twice."""
    n = 24
    seeds = write_llava_seeds(tmp_path, n)
    srv = server_factory(capacity=1, latency=0.5)
    out = tmp_path / "run"
    args = [a for a in evolve_args(seeds, out, srv.url, "--rounds", "1", "--timeout", "10")]
    at = args.index("--concurrency")
    del args[at:at + 2]  # the default
    res = run_cli(*args, timeout=300)
    assert res.returncode == 0, res.stderr
    stats = srv.stats()
    manifest = _manifest(out)
    http = manifest["http"]
    _check_sums(http)
    assert stats["peak_serving"] == 1
    # every request the server got was answered and used: none timed out, none was resent
    assert http["retried"] == {} and http["failed"] == {}
    assert stats["requests"] == stats["ok"] == http["ok"]["requests"] == http["requests"]
    assert manifest["model_calls"] == stats["requests"]
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == n
    assert sum(v["requests"] for r in records for v in r["versions"]) == stats["requests"]
    assert manifest["config"]["concurrency"] == 64


def test_manifest_counts_every_request_by_outcome_as_the_server_saw_it(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 16)
    srv = server_factory(latency=0.02, fail_429=0.08, fail_500=0.08, garbled=0.08, seed=11)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "2", "--max-attempts", "3"))
    assert res.returncode in (0, 3), res.stderr
    stats = srv.stats()
    manifest = _manifest(out)
    http = manifest["http"]
    _check_sums(http)
    assert stats["status"].get("429") and stats["status"].get("500") and stats["garbled"]
    # the same requests, the same outcomes
    assert http["requests"] == stats["requests"] == manifest["model_calls"]
    assert _outcomes(http, "retried", "429") + _outcomes(http, "failed", "429") == stats["status"]["429"]
    assert _outcomes(http, "retried", "5xx") + _outcomes(http, "failed", "5xx") == stats["status"]["500"]
    parse = _outcomes(http, "retried", "parse") + _outcomes(http, "failed", "parse")
    assert http["ok"]["requests"] + parse == stats["status"]["200"]  # every 200: used, or not
    assert parse >= stats["garbled"]
    assert http["ok"]["tokens_in"] > 0 and http["retried"]["parse"]["tokens_in"] > 0
    assert http["retried"]["429"]["tokens_in"] == 0  # a 429 costs no tokens
    # one invocation: its entry holds the same figures
    (inv,) = manifest["invocations"]
    assert inv["http"] == http and inv["model_calls"] == http["requests"]
    assert inv["status"] == manifest["status"] and inv["wall_s"] == manifest["wall_s"] > 0
    # the summary line says it too
    said = " ".join((res.stdout + res.stderr).split())
    assert f"{http['requests']} requests: {http['ok']['requests']} ok" in said


def test_failed_calls_charge_their_attempts_and_tokens_to_the_round(tmp_path, server_factory):
    """Every answer garbled: each rewrite fails after its 3 attempts; the round's version
    records those 3 requests and what they cost, and the manifest the requests sent."""
    seeds = write_llava_seeds(tmp_path, 4)
    srv = server_factory(garbled=1.0)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1", "--max-attempts", "3"))
    assert res.returncode == 0, res.stderr  # model faults are results
    records = read_jsonl(out / "records.jsonl")
    versions = [v for r in records for v in r["versions"]]
    assert len(versions) == 4 and all(v["status"] == "failed" for v in versions)
    assert all(v["requests"] == 3 and v["tokens_in"] > 0 and v["tokens_out"] > 0 for v in versions)
    manifest = _manifest(out)
    http = manifest["http"]
    assert stats_requests(srv) == 12 == manifest["model_calls"] == http["requests"]
    assert _outcomes(http, "retried", "parse") == 8 and _outcomes(http, "failed", "parse") == 4
    assert http["tokens_in"] == sum(v["tokens_in"] for v in versions) == manifest["tokens"]["in"]
    assert http["tokens_out"] == sum(v["tokens_out"] for v in versions) == manifest["tokens"]["out"]
    assert manifest["invocations"][0]["calls"] == {"answered": 0, "cached": 0, "failed": 4}


def stats_requests(srv) -> int:
    return srv.stats()["requests"]


def test_calls_that_never_got_an_answer_are_counted_too(tmp_path, server_factory):
    """Every request a 500: the records stay pending (nothing is written for them), and the
    manifest still counts every request the server got, where it used to say 0."""
    seeds = write_llava_seeds(tmp_path, 3)
    srv = server_factory(fail_500=1.0)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1", "--max-attempts", "2"))
    assert res.returncode == 3, res.stderr
    assert read_jsonl(out / "records.jsonl") == []
    manifest = _manifest(out)
    http = manifest["http"]
    sent = srv.stats()["requests"]
    assert sent > 0 and manifest["model_calls"] == http["requests"] == sent == srv.stats()["status"]["500"]
    assert _outcomes(http, "retried", "5xx") + _outcomes(http, "failed", "5xx") == sent
    assert manifest["invocations"][0]["calls"]["failed"] == _outcomes(http, "failed", "5xx") > 0


def test_a_killed_invocation_keeps_its_wall_time(tmp_path, server_factory):
    n = 40
    seeds = write_llava_seeds(tmp_path, n)
    srv = server_factory(capacity=2, latency=0.1)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "2", "--concurrency", "2")
    proc = popen_cli(*args)
    seen = {}
    deadline = time.time() + 120
    # the entry is written at the start and updated after 1, 2, 4 ... s: kill once it shows 2 s
    while time.time() < deadline and proc.poll() is None:
        invocations = RunDir(out).read_manifest().get("invocations") or []
        if invocations and invocations[-1].get("wall_s", 0) >= 2:
            seen = invocations[-1]
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert seen and seen["status"] == "running" and seen["model_calls"] > 0, "the kill should land mid-run"
    killed = RunDir(out).read_manifest()["invocations"][-1]
    assert killed["status"] == "running" and killed["wall_s"] >= seen["wall_s"]
    sent_before = srv.stats()["requests"]

    res = run_cli(*args, timeout=300)
    assert res.returncode == 0, res.stderr
    manifest = _manifest(out)
    first, second = manifest["invocations"]
    assert first["status"] == "killed" and first["wall_s"] == killed["wall_s"]
    assert first["model_calls"] == killed["model_calls"] <= sent_before
    assert second["status"] == "complete" and second["model_calls"] == srv.stats()["requests"] - sent_before
    assert manifest["wall_s"] == pytest.approx(first["wall_s"] + second["wall_s"], abs=0.002)
    assert manifest["model_calls"] == first["model_calls"] + second["model_calls"]
    # `evol filter` rewrites the manifest and keeps the totals
    assert run_cli("filter", str(out), "--min-score", "5").returncode == 0
    again = _manifest(out)
    assert again["wall_s"] == manifest["wall_s"] and again["model_calls"] == manifest["model_calls"]


async def test_a_timeout_shrinks_the_window_and_is_counted(tmp_path, server_factory):
    srv = server_factory(fail_timeout=1.0, hang_seconds=30)
    limiter = Limiter(16, adaptive=True)
    backend = OpenAIBackend("mock-vlm", srv.url, "EVOL_ACCOUNTING_NO_KEY", images=ImageStore(tmp_path),
                            limiter=limiter, timeout=0.3, max_attempts=2, backoff_base=0.01)
    request = Request(messages=(Message("user", (Text("hello"),)),), tag="t1")
    try:
        with pytest.raises(TransportError) as info:
            await backend.complete(request)
    finally:
        await backend.aclose()
    assert info.value.attempts == 2 and info.value.tokens_in == 0
    assert limiter.decreases == 2 and limiter.window < 8  # each timeout: half a place off
    st = backend.stats
    assert st.outcomes.count(kind="timeout") == st.sent.requests == 2
    assert st.outcomes.count("retried", "timeout") == 1 and st.outcomes.count("failed", "timeout") == 1
    assert st.outcomes.count("ok") == 0 and (st.calls, st.failed) == (0, 1)
    summary = st.http()
    assert summary["requests"] == 2 and summary["retried"]["timeout"]["requests"] == 1
    assert summary["failed"] == {"timeout": {"requests": 1, "tokens_in": 0, "tokens_out": 0}}


def test_progress_line_shows_errors_by_kind_retries_timeouts_and_tokens_per_second():
    from evol.progress import describe

    source = CallStats(by_outcome=True)
    source.sent.add(10, 900, 100)
    source.outcomes.add("ok", 6, 600, 90)
    source.outcomes.add("retried_429", 2)
    source.outcomes.add("retried_parse", 1, 300, 10)
    source.outcomes.add("failed_timeout", 1)
    stats = RunStats(total=5, started=100.0, backends=[source, CallStats()])
    line = describe(stats, now=110.0)
    assert "1.0 req/s, 100 tok/s" in line
    assert "retries 3 (429 x2, parse x1)" in line and "timeouts 1" in line
    assert "failed requests 1 (timeout x1)" in line and "tokens 900/100" in line and "failed rounds 0" in line


def test_a_new_invocation_marks_one_that_never_finished_as_killed(tmp_path):
    run = RunDir(tmp_path)
    first = run.record_invocation({"status": "running", "wall_s": 3.5, "model_calls": 7})
    assert first == 0 and run.read_manifest()["wall_s"] == 3.5
    second = run.record_invocation({"status": "running", "wall_s": 0.0, "model_calls": 0})
    assert second == 1
    run.record_invocation({"status": "complete", "wall_s": 2.0, "model_calls": 5,
                           "http": {"requests": 5, "ok": {"requests": 5}}}, second)
    manifest = run.read_manifest()
    assert [i["status"] for i in manifest["invocations"]] == ["killed", "complete"]
    assert manifest["wall_s"] == 5.5 and manifest["model_calls"] == 12
    assert manifest["http"] == {"requests": 5, "ok": {"requests": 5}}
    assert invocation_totals([]) == {"wall_s": 0.0, "model_calls": 0}
