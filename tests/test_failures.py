"""Failure classes end to end: a server, network or disk failure is never a record's result.

Each test drives the real CLI as a subprocess against the local test server (127.0.0.1)
and checks the three promises of README "When things fail": the run stops (or finishes)
with one clear line and a documented exit code; a rerun against a working server finishes
it with the output an uninterrupted run gives; and no call answered before is sent again
(checked by comparing the cache keys of an uninterrupted run with what the rerun sent).
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAKE_KEY, REPO, evolve_args, popen_cli, read_jsonl, run_cli, write_llava_seeds


def _keys(run: Path) -> set[str]:
    db = sqlite3.connect(run / "cache.sqlite")
    try:
        return {k for (k,) in db.execute("SELECT key FROM replies")}
    finally:
        db.close()


def _reference(tmp_path: Path, server_factory, seeds: Path, *extra: str) -> tuple[Path, set[str]]:
    """An uninterrupted run on a fault-free server: its output and every request it made."""
    srv = server_factory()
    ref = tmp_path / "ref"
    res = run_cli(*evolve_args(seeds, ref, srv.url, *extra))
    assert res.returncode == 0, res.stderr
    keys = _keys(ref)
    assert len(keys) == srv.stats()["requests"]  # every request distinct, every answer cached
    return ref, keys


def _same_output(out: Path, ref: Path) -> None:
    assert (out / "llava.json").read_text() == (ref / "llava.json").read_text()
    strip = lambda recs: sorted(json.dumps(r, sort_keys=True) for r in recs)  # noqa: E731
    assert strip(read_jsonl(out / "records.jsonl")) == strip(read_jsonl(ref / "records.jsonl"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["pending"]["records"] == 0


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wrong_key_stops_at_once_and_a_rerun_completes(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 12)
    ref, ref_keys = _reference(tmp_path, server_factory, seeds, "--rounds", "2")
    srv = server_factory(api_key="the-right-key")
    out = tmp_path / "run"
    # the run's own stop (a key revoked mid-run); the preflight's is in test_preflight.py
    args = evolve_args(seeds, out, srv.url, "--rounds", "2", "--no-preflight")
    res = run_cli(*args)  # conftest sends FAKE_KEY: refused
    assert res.returncode == 3, res.stderr
    errors = _error_lines(res.stderr)
    assert len(errors) == 1 and "refused the key from OPENAI_API_KEY (HTTP 401" in errors[0], res.stderr
    assert "12 records pending" in res.stderr
    # the first refusal stops every new call: at most the calls already in flight were sent
    assert srv.stats()["requests"] <= 16
    assert read_jsonl(out / "records.jsonl") == [] and not (out / "rejects.jsonl").read_text().strip()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and "HTTP 401" in manifest["pending"]["stopped"]
    for f in out.rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes()
    assert FAKE_KEY not in res.stderr + res.stdout

    res = run_cli(*args, env={"OPENAI_API_KEY": "the-right-key"})
    assert res.returncode == 0, res.stderr
    _same_output(out, ref)
    assert srv.stats()["status"].get("200", 0) == len(ref_keys)


def test_closed_port_stops_and_a_rerun_elsewhere_completes(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 10)
    ref, ref_keys = _reference(tmp_path, server_factory, seeds, "--rounds", "2")
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{_free_port()}/v1"
    # the run's own stop (a server dying mid-run); the preflight's is in test_preflight.py
    res = run_cli(*evolve_args(seeds, out, url, "--rounds", "2", "--no-preflight"))
    assert res.returncode == 3, res.stderr
    errors = _error_lines(res.stderr)
    assert len(errors) == 1 and f"cannot connect to {url}" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert read_jsonl(out / "records.jsonl") == []
    status = run_cli("status", str(out))
    assert status.returncode == 0 and "10 pending" in status.stderr, status.stderr

    srv = server_factory()
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "2"))
    assert res.returncode == 0, res.stderr
    _same_output(out, ref)
    assert srv.stats()["requests"] == len(ref_keys)


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_stops_keeps_every_answer_and_a_rerun_completes(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 40)
    ref, ref_keys = _reference(tmp_path, server_factory, seeds, "--rounds", "2")
    srv = server_factory()
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "2")
    env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "COLUMNS": "200"}
    # files may grow to 256 KiB at most, like a disk that fills up during the run
    res = subprocess.run([sys.executable, "-m", "evol.cli", *args], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=300, preexec_fn=_limit_file_size(256 * 1024))
    assert res.returncode == 3, res.stderr
    errors = _error_lines(res.stderr)
    assert errors and all("disk full writing" in e for e in errors), res.stderr
    assert "Traceback" not in res.stderr
    answered_before = _keys(out)
    assert 0 < len(answered_before) < len(ref_keys)
    assert answered_before <= ref_keys
    # nothing was written down as a record's result because of the disk
    for entry in read_jsonl(out / "rejects.jsonl"):
        assert "disk" not in entry["reason"] and "internal" not in entry["stage"], entry

    sent_before = srv.stats()["requests"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    _same_output(out, ref)
    # the rerun sent exactly the calls whose answers were not kept
    assert srv.stats()["requests"] - sent_before == len(ref_keys - answered_before)


def test_injected_faults_leave_records_pending_and_a_rerun_sends_only_what_is_missing(tmp_path, server_factory):
    """20% transport faults, 2 tries per call: some calls never get an answer."""
    n = 30
    seeds = write_llava_seeds(tmp_path, n)
    ref, ref_keys = _reference(tmp_path, server_factory, seeds, "--rounds", "2")
    faulty = server_factory(fail_429=0.07, fail_500=0.07, fail_timeout=0.06, hang_seconds=3, seed=3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, faulty.url, "--rounds", "2", "--timeout", "1", "--max-attempts", "2"))
    assert res.returncode == 3, res.stderr
    stats = faulty.stats()
    assert stats["status"].get("429", 0) and stats["status"].get("500", 0) and stats["timeouts"]
    pending = int(re.search(r"(\d+) records pending", res.stderr).group(1))
    done = read_jsonl(out / "records.jsonl")
    assert pending > 0 and len(done) + pending == n
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["pending"]["records"] == pending
    # no transport fault was written down as a failed round or a reject
    assert all(v["status"] == "judged" for rec in done for v in rec["versions"])
    assert not (out / "rejects.jsonl").read_text().count('"stage":"evolve"')
    answered = _keys(out)

    clean = server_factory()
    res = run_cli(*evolve_args(seeds, out, clean.url, "--rounds", "2"))
    assert res.returncode == 0, res.stderr
    _same_output(out, ref)
    assert clean.stats()["requests"] == len(ref_keys - answered)


def test_unusable_replies_fail_the_round_and_retry_failed_reopens_them(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 20)
    garbling = server_factory(garbled=0.3, seed=5)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, garbling.url, "--rounds", "1", "--max-attempts", "1")
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr  # model faults are results: the run is complete
    status_of = {r["id"]: r["versions"][0]["status"] for r in read_jsonl(out / "records.jsonl")}
    failed = {k for k, v in status_of.items() if v != "judged"}
    operator_failed = {k for k, v in status_of.items() if v == "failed"}
    assert operator_failed and failed - operator_failed  # both the operator's and the judge's replies
    status = run_cli("status", str(out))
    assert f"{len(failed)} with a failed round" in status.stderr and "--retry-failed" in status.stderr

    clean = server_factory()
    assert run_cli(*evolve_args(seeds, out, clean.url, "--rounds", "1")).returncode == 0
    assert clean.stats()["requests"] == 0  # without the flag, a failed round is a result
    res = run_cli(*evolve_args(seeds, out, clean.url, "--rounds", "1", "--retry-failed"))
    assert res.returncode == 0, res.stderr
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == 20 and len({r["id"] for r in records}) == 20
    assert all(r["versions"][0]["status"] == "judged" for r in records)
    # only the failed calls were asked again (a judge that failed after a good rewrite: the
    # judge call alone), and each failed record's judge call
    seen = clean.stats()["by_schema"]
    assert seen["evolved_items"]["requests"] == len(operator_failed)
    assert seen["verdicts"]["requests"] <= len(failed)


def test_second_process_on_the_same_folder_refuses_at_once(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 30)
    srv = server_factory(latency=0.3)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "2", "--concurrency", "4")
    first = popen_cli(*args)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and srv.stats()["requests"] == 0:
            time.sleep(0.05)
        assert srv.stats()["requests"] > 0
        second = run_cli(*args)
        assert second.returncode == 1
        errors = _error_lines(second.stderr)
        assert len(errors) == 1 and f"in use by process {first.pid}" in errors[0], second.stderr
        refused_filter = run_cli("filter", str(out))
        assert refused_filter.returncode == 1 and "in use" in refused_filter.stderr
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == 30 and len({r["id"] for r in records}) == 30
    ids = [e["id"] for e in json.loads((out / "llava.json").read_text())]
    assert len(ids) == len(set(ids))
    assert srv.stats()["requests"] == len(_keys(out))


def test_sigterm_is_resumable_like_ctrl_c(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 30)
    ref, _ = _reference(tmp_path, server_factory, seeds, "--rounds", "2", "--concurrency", "4")
    srv = server_factory(latency=0.1)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "2", "--concurrency", "4")
    proc = popen_cli(*args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_jsonl(out / "records.jsonl")) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    _same_output(out, ref)


def test_records_without_a_question_answer_pair_are_rejected(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 2)
    bad = [
        {"id": "empty", "image": "coffee.jpg", "conversations": []},
        {"id": "question-only", "image": "coffee.jpg", "conversations": [{"from": "human", "value": "What?"}]},
        {"id": "answer-first", "image": "coffee.jpg",
         "conversations": [{"from": "gpt", "value": "A cup."}, {"from": "human", "value": "Thanks"}]},
    ]
    with open(seeds, "a") as f:
        f.write("".join(json.dumps(b) + "\n" for b in bad))
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, server.url, "--rounds", "1"))
    assert res.returncode == 0, res.stderr
    final = {r["record"]: r for r in read_jsonl(out / "rejects.jsonl") if r["final"]}
    assert set(final) == {"empty", "question-only", "answer-first"}
    for name, entry in final.items():
        assert "no usable question/answer pair" in entry["reason"] and name in res.stderr
    assert server.stats()["by_schema"]["evolved_items"]["requests"] == 2


def test_file_system_problems_are_one_error_line(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 2)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (evolve_args(seeds, a_file, server.url), "a_file"),                  # --out is a file
        (evolve_args(seeds, a_file / "sub", server.url), "a_file"),          # --out under a file
        (evolve_args(tmp_path / "images", tmp_path / "o1", server.url), "folder"),  # input is a folder
    ]
    for args, word in cases:
        res = run_cli(*args)
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("error:") and word in res.stderr
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.jsonl"
        locked.write_text(seeds.read_text())
        locked.chmod(0)
        res = run_cli(*evolve_args(locked, tmp_path / "o2", server.url))
        assert res.returncode == 1 and "cannot read input" in res.stderr


def test_run_guard_knows_the_input_by_content_not_by_name(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    assert run_cli(*evolve_args(seeds, out, server.url, "--rounds", "1")).returncode == 0
    other_name = tmp_path / "sub" / ".." / "seeds.jsonl"
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.jsonl"
    link.symlink_to(seeds)
    for name in (other_name, link):
        args = evolve_args(seeds, out, server.url, "--rounds", "1")
        args[1] = str(name)
        res = run_cli(*args)
        assert res.returncode == 0, res.stderr
    with open(seeds, "a") as f:
        f.write(json.dumps({"id": "late", "image": "coffee.jpg",
                            "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]})
                + "\n")
    res = run_cli(*evolve_args(seeds, out, server.url, "--rounds", "1"))
    assert res.returncode == 1 and "input changed" in res.stderr, res.stderr


def test_credentials_in_the_base_url_are_refused_and_never_written(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 2)
    out = tmp_path / "run"
    url = server.url.replace("http://", "http://someone:SECRET-IN-URL@")
    res = run_cli(*evolve_args(seeds, out, url, "--rounds", "1"))
    assert res.returncode == 1, res.stderr
    assert "SECRET-IN-URL" not in res.stderr + res.stdout
    assert "holds credentials" in res.stderr and "http://***@127.0.0.1" in res.stderr
    assert server.stats()["requests"] == 0
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert b"SECRET-IN-URL" not in f.read_bytes(), f
    res = run_cli("seed", "svit", str(seeds), "--model", "m", "--base-url", url, "--out", str(tmp_path / "s.jsonl"))
    assert res.returncode == 1 and "holds credentials" in res.stderr and "SECRET-IN-URL" not in res.stderr


def test_seed_commands_stop_on_a_dead_server_and_finish_on_a_rerun(tmp_path, server):
    from conftest import SEEDS

    url = f"http://127.0.0.1:{_free_port()}/v1"
    args = ["seed", "svit", "--annotations", str(SEEDS / "scene_graphs"), "--image-root", str(SEEDS),
            "--model", "m", "--out", str(tmp_path / "s.jsonl"), "--tasks", "reasoning"]
    res = run_cli(*args, "--base-url", url)
    assert res.returncode == 3, res.stderr
    assert len(_error_lines(res.stderr)) == 1 and f"cannot connect to {url}" in res.stderr
    assert not read_jsonl(tmp_path / "s.rejects.jsonl")  # no record blamed for the server
    res = run_cli(*args, "--base-url", server.url)
    assert res.returncode == 0, res.stderr
    assert read_jsonl(tmp_path / "s.jsonl")


def test_a_journal_holding_a_record_twice_counts_it_once(tmp_path, server):
    from evol.rundir import RunDir, finalize

    seeds = write_llava_seeds(tmp_path, 4)
    out = tmp_path / "run"
    assert run_cli(*evolve_args(seeds, out, server.url, "--rounds", "1")).returncode == 0
    expected = (out / "llava.json").read_text()
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    with open(out / "records.jsonl", "a") as f:
        f.writelines(lines[:2])  # two records written again, as a second writer would have
    manifest = finalize(RunDir(out), {}, min_score=0, include_seeds=False)
    assert (out / "llava.json").read_text() == expected
    assert manifest["counts"]["records_out"] == 4


def test_run_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    from evol.rundir import RunDir, RunLocked

    run = RunDir(tmp_path / "run")
    run.create()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from evol.rundir import RunDir; from pathlib import Path; "
         "lock = RunDir(Path(sys.argv[1])).lock(); print('locked', flush=True); time.sleep(600)", str(run.root)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"process {holder.pid}"):
            run.lock()
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock
        holder.wait()
    with run.lock():
        pass


def test_a_json_array_input_that_stops_counts_its_pending_records(tmp_path):
    seeds = write_llava_seeds(tmp_path, 5)
    array = tmp_path / "seeds.json"
    array.write_text(json.dumps(read_jsonl(seeds)))
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{_free_port()}/v1"
    args = evolve_args(seeds, out, url, "--no-preflight")
    args[1] = str(array)
    res = run_cli(*args)
    assert res.returncode == 3 and "5 records pending" in res.stderr, res.stderr
    status = run_cli("status", str(out))
    assert status.returncode == 0 and "5 input records: 0 done" in status.stderr and "5 pending" in status.stderr


def test_urls_are_shown_without_their_credentials():
    from evol.redact import redact_url, url_credentials_problem

    assert redact_url("http://u:p@ss@host:8/v1?x=1") == "http://***@host:8/v1?x=1"
    assert redact_url("see https://a:b@h/x and http://h/y") == "see https://***@h/x and http://h/y"
    assert redact_url("http://h:80/v1") == "http://h:80/v1" and redact_url(None) is None
    assert url_credentials_problem("http://h/v1") is None
    problem = url_credentials_problem("http://user:KEY@h/v1")
    assert "KEY" not in problem and "http://***@h/v1" in problem
