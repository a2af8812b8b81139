"""The real `evol evolve` CLI, end to end over HTTP against the local test server."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import FAKE_KEY, evolve_args, popen_cli, read_jsonl, run_cli, write_llava_seeds


def _account(out: Path, n_input: int, min_score: float = 0) -> tuple[list[dict], list[dict]]:
    """Check that every input record is in records.jsonl or rejected, and every
    evolved item is kept or has a reject entry; return (records, rejects)."""
    records = read_jsonl(out / "records.jsonl")
    rejects = read_jsonl(out / "rejects.jsonl")
    final = {r["key"] for r in rejects if r["final"]}
    done = {r["meta"]["key"] for r in records}
    assert not (final & done)
    assert len(done) + len(final) == n_input == len(records) + sum(r["final"] for r in rejects)
    rejected_items = {r["item"] for r in rejects if "item" in r}
    failed_rounds = {(r["record"], r["round"]) for r in rejects if r["stage"] == "evolve"}
    llava_ids = {e["id"] for e in json.loads((out / "llava.json").read_text())}
    for rec in records:
        for v in rec["versions"]:
            if v["status"] == "failed":
                assert (rec["id"], v["round"]) in failed_rounds
            for it in v["items"]:
                v_ = it.get("verdict")
                kept = bool(v_ and v_["improved"] and v_["score"] >= min_score)
                assert kept == (it["id"] in llava_ids), it["id"]
                assert kept or it["id"] in rejected_items, it["id"]
                assert kept != (it["id"] in rejected_items), f"{it['id']} is both kept and rejected"
    below = {r["item"] for r in rejects if r["stage"] == "threshold"}
    assert below == {it["id"] for rec in records for v in rec["versions"] for it in v["items"]
                     if it.get("verdict") and it["verdict"]["improved"] and it["verdict"]["score"] < min_score}
    return records, rejects


def test_evolve_writes_run_folder(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 12)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, server.url, "--rounds", "3", "--seed", "7"))
    assert res.returncode == 0, res.stderr
    for name in ("llava.json", "records.jsonl", "rejects.jsonl", "manifest.json", "cache.sqlite"):
        assert (out / name).exists(), name
    records, rejects = _account(out, 12)
    assert len(records) == 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["rounds"]) == {"1", "2", "3"}
    assert sum(r["versions"] for r in manifest["operators"].values()) == sum(len(r["versions"]) for r in records)
    assert manifest["tokens"]["in"] > 0 and manifest["tokens"]["out"] > 0
    assert manifest["rounds"]["1"]["kept_ratio"] is not None
    assert manifest["config"]["api_key_env"] == "OPENAI_API_KEY"
    assert manifest["prompts"] and manifest["wall_s"] > 0

    # LLaVA output: one <image> per image, at the start of the first human turn.
    llava = json.loads((out / "llava.json").read_text())
    assert llava, "some items should survive"
    assert manifest["counts"]["llava_entries"] == len(llava)
    by_record = {r["id"]: r for r in records}
    for entry in llava:
        rec = by_record[entry["record"]]
        human = entry["conversations"][0]["value"]
        assert human.count("<image>") == len(rec["images"])
        assert human.startswith("<image>\n" * len(rec["images"]))
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        assert images == rec["images"]

    # Lineage: every evolved item names a parent from the seed or an earlier kept version.
    for rec in records:
        known = {it["id"] for it in rec["items"]}
        for v in rec["versions"]:
            assert v["operator"] in ("perceptual", "reasoning", "interaction")
            for it in v["items"]:
                assert it["parent"] in known
            known |= {it["id"] for it in v["items"] if it.get("verdict") and it["verdict"]["improved"]}
    # Eliminated items carry a readable reason.
    assert all(r["reason"] for r in rejects)

    # The API key is in no file of the run folder.
    for f in out.rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes(), f


def test_rerun_of_finished_run_makes_no_request(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 6)
    out = tmp_path / "run"
    assert run_cli(*evolve_args(seeds, out, server.url, "--rounds", "2")).returncode == 0
    first = (out / "llava.json").read_text()
    sent = server.stats()["requests"]
    res = run_cli(*evolve_args(seeds, out, server.url, "--rounds", "2"))
    assert res.returncode == 0, res.stderr
    assert server.stats()["requests"] == sent
    assert (out / "llava.json").read_text() == first
    assert len(read_jsonl(out / "records.jsonl")) == 6


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, server_factory):
    n, conc = 40, 8
    seeds = write_llava_seeds(tmp_path, n)
    ref_srv = server_factory(latency=0.05)
    ref = tmp_path / "ref"
    assert run_cli(*evolve_args(seeds, ref, ref_srv.url, "--rounds", "2", "--concurrency", str(conc))).returncode == 0
    uninterrupted = ref_srv.stats()["requests"]

    srv = server_factory(latency=0.05)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "2", "--concurrency", str(conc))
    proc = popen_cli(*args)
    deadline = time.time() + 60
    while time.time() < deadline and len(read_jsonl(out / "records.jsonl")) < n // 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_jsonl(out / "records.jsonl"))
    assert 0 < done_before < n, "the kill should land halfway"
    # The killed run wrote no final manifest, but its settings were recorded at the start:
    # resuming with another seed would mix two runs, and is refused before any call.
    refused = run_cli(*args, "--seed", "5")
    assert refused.returncode == 1 and "other settings (seed)" in " ".join(refused.stderr.split())
    assert len(read_jsonl(out / "records.jsonl")) == done_before
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert (out / "llava.json").read_text() == (ref / "llava.json").read_text()
    _account(out, n)
    # Only calls that were in flight at the kill may be sent twice.
    assert srv.stats()["requests"] <= uninterrupted + conc


def test_bad_input_is_rejected_and_the_run_goes_on(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 3)
    (tmp_path / "images" / "corrupt.jpg").write_bytes(b"this is not a jpeg at all")
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    conv = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A thing."}]
    bad = [
        '{"id": "broken", "image": "coffee.jpg", "conversations": [',
        json.dumps({"id": "missing", "image": "nope.jpg", "conversations": conv}),
        json.dumps({"id": "corrupt", "image": "corrupt.jpg", "conversations": conv}),
        json.dumps({"id": "escape", "image": "../secret.png", "conversations": conv}),
        json.dumps({"id": "absolute", "image": str(secret), "conversations": conv}),
        json.dumps({"id": "badtype", "images": ["coffee.jpg"], "caption": {"not": "text"}, "items": []}),
    ]
    with open(seeds, "a") as f:
        f.write("\n".join(bad) + "\n")
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, server.url, "--rounds", "1"))
    assert res.returncode == 0, res.stderr
    records, rejects = _account(out, 9)
    assert {r["id"] for r in records} == {"s0", "s1", "s2"}
    final = {r["record"] or r["key"]: r for r in rejects if r["final"]}
    assert len(final) == 6
    reasons = {k: v["reason"].lower() for k, v in final.items()}
    broken = next(k for k in reasons if k.startswith("line:"))
    assert "line:" in broken
    assert "not found" in reasons["missing"]
    assert "corrupt" in reasons["corrupt"] or "not an image" in reasons["corrupt"]
    assert "outside" in reasons["escape"] and "outside" in reasons["absolute"]
    assert "caption" in reasons["badtype"]
    # Each one is named in a warning on stderr.
    for name in ("missing", "corrupt", "escape", "absolute", "badtype"):
        assert name in res.stderr
    # The server saw operator calls for the three good records only.
    assert server.stats()["by_schema"]["evolved_items"]["requests"] == 3
    for f in out.rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes()


def test_filter_reapplies_threshold_without_requests(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 10)
    out = tmp_path / "run"
    assert run_cli(*evolve_args(seeds, out, server.url, "--rounds", "2")).returncode == 0
    before = json.loads((out / "llava.json").read_text())
    sent = server.stats()["requests"]
    res = run_cli("filter", str(out), "--min-score", "6")
    assert res.returncode == 0, res.stderr
    after = json.loads((out / "llava.json").read_text())
    assert server.stats()["requests"] == sent
    scores = {it["id"]: it["verdict"]["score"] for rec in read_jsonl(out / "records.jsonl")
              for v in rec["versions"] for it in v["items"] if it.get("verdict")}
    assert {e["id"] for e in after} == {e["id"] for e in before if scores[e["id"]] >= 6}
    assert len(after) < len(before)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["thresholds"]["min_score"] == 6
    # rejects.jsonl follows the threshold in force: the items it drops, each with its reason
    _, rejects = _account(out, 10, min_score=6)
    below = [r for r in rejects if r["stage"] == "threshold"]
    assert below and all("below --min-score 6" in r["reason"] for r in below)
    assert manifest["counts"]["rejects_by_stage"]["threshold"] == len(below)
    assert run_cli("filter", str(out), "--min-score", "0").returncode == 0
    _, rejects = _account(out, 10)
    assert not [r for r in rejects if r["stage"] == "threshold"]
    assert json.loads((out / "llava.json").read_text()) == before


def test_dry_run_calls_nothing(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 5)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, server.url, "--rounds", "3", "--dry-run"))
    assert res.returncode == 0, res.stderr
    assert "requests: at most 30" in res.stderr
    assert server.stats()["requests"] == 0
    assert not (out / "cache.sqlite").exists()
    # the config file's keys match the flags, --dry-run's too
    cfg = tmp_path / "dry.yaml"
    cfg.write_text("dry-run: true\nrounds: 2\n")
    res = run_cli(*evolve_args(seeds, out, server.url, "--config", str(cfg)))
    assert res.returncode == 0, res.stderr
    assert "requests: at most 20" in res.stderr and server.stats()["requests"] == 0
    assert not (out / "cache.sqlite").exists()


def test_yaml_config_keys_match_flags(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 4)
    out = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"rounds: 1\nmodel: test-vlm\nbase-url: {server.url}\nimage_root: {tmp_path / 'images'}\n"
        f"mix: interaction=1\nseed: 3\n"
    )
    res = run_cli("evolve", str(seeds), "--out", str(out), "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["rounds"] == 1 and manifest["config"]["seed"] == 3
    assert set(manifest["operators"]) == {"interaction"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 1\nno_such_flag: 2\n")
    res = run_cli("evolve", str(seeds), "--out", str(tmp_path / "r2"), "--config", str(bad))
    assert res.returncode == 1 and "no_such_flag" in res.stderr


def test_server_without_structured_output(tmp_path, server_factory):
    srv = server_factory(no_schema=True)
    seeds = write_llava_seeds(tmp_path, 5)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1"))
    assert res.returncode == 0, res.stderr
    records, _ = _account(out, 5)
    assert all(rec["versions"][0]["status"] == "judged" for rec in records)
    assert json.loads((out / "llava.json").read_text())


def test_judge_without_image_and_resume_guard(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 5)  # record s0 has two images, the others one
    with_image, without = server_factory(), server_factory()
    assert run_cli(*evolve_args(seeds, tmp_path / "a", with_image.url, "--rounds", "1")).returncode == 0
    out = tmp_path / "run"
    assert run_cli(*evolve_args(seeds, out, without.url, "--rounds", "1", "--judge-no-image")).returncode == 0
    seen, seen_default = without.stats()["by_schema"], with_image.stats()["by_schema"]
    assert seen["evolved_items"] == {"requests": 5, "images": 6}
    assert seen["verdicts"]["requests"] >= 1 and seen["verdicts"]["images"] == 0
    assert seen_default["verdicts"]["images"] >= seen_default["verdicts"]["requests"] > 0
    # Rerunning into the same folder with other settings is refused, naming the setting.
    server = without
    res = run_cli(*evolve_args(seeds, out, server.url, "--rounds", "1", "--seed", "99"))
    assert res.returncode == 1 and "seed" in res.stderr


def test_eliminated_chain_retries_with_a_fresh_request(tmp_path, server_factory):
    """Every rewrite is eliminated and the operator is always the same, so each round starts
    from the seed again: the request must still differ (its own seed), not replay the cache."""
    srv = server_factory(improved_rate=0.0)
    seeds = write_llava_seeds(tmp_path, 4)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "3", "--mix", "reasoning=1"))
    assert res.returncode == 0, res.stderr
    records, rejects = _account(out, 4)
    assert srv.stats()["requests"] == 4 * 3 * 2
    for rec in records:
        questions = [it["question"] for v in rec["versions"] for it in v["items"]]
        assert len(questions) == 3 * len(rec["items"]) and len(set(questions)) == len(questions)
        assert all(it["parent"] in {s["id"] for s in rec["items"]} for v in rec["versions"] for it in v["items"])
    assert json.loads((out / "llava.json").read_text()) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["invocations"][-1]["cached_calls"] == 0


def test_duplicate_ids_are_rejected_once_across_reruns(tmp_path, server):
    seeds = write_llava_seeds(tmp_path, 4)
    lines = seeds.read_text().splitlines()
    seeds.write_text("\n".join(lines + [lines[1], lines[2]]) + "\n")  # s1 and s2 twice
    out = tmp_path / "run"
    args = evolve_args(seeds, out, server.url, "--rounds", "1")
    assert run_cli(*args).returncode == 0
    records, rejects = _account(out, 6)
    dups = sorted(r["key"] for r in rejects if r["reason"] == "duplicate record id")
    assert dups == ["s1@4", "s2@5"] and len(records) == 4
    # As if the run had died before the first s1 was written, after its duplicate's reject.
    kept = [line for line in (out / "records.jsonl").read_text().splitlines() if '"id":"s1"' not in line]
    (out / "records.jsonl").write_text("\n".join(kept) + "\n")
    sent = server.stats()["requests"]
    assert run_cli(*args).returncode == 0
    records, rejects = _account(out, 6)
    assert sorted(r["key"] for r in rejects if r["reason"] == "duplicate record id") == ["s1@4", "s2@5"]
    assert sorted(r["id"] for r in records) == ["s0", "s1", "s2", "s3"]
    assert server.stats()["requests"] == sent, "s1 came back from the cache"


def test_progress_counts_resumed_records_and_gives_an_eta():
    from evol.runner import RunStats

    stats = RunStats(total=10, skipped_done=5, started=100.0)
    assert stats.accounted == 5 and stats.eta(now=101.0) is None, "no pace yet"
    stats.records_done, stats.records_rejected = 2, 1
    assert stats.accounted == 8, "the bar counts records an earlier invocation finished"
    assert stats.eta(now=106.0) == pytest.approx(2 * 6 / 3)


def test_rounds_have_no_barriers(tmp_path, server_factory):
    """One record's calls take 600 s (more than the test ever waits); the nine others go
    through all three rounds and are written while that record is still in its first call."""
    srv = server_factory(latency=0.01, slow=[(["picture 0?"], 600.0)], improved_rate=1.0)
    seeds = write_llava_seeds(tmp_path, 10)
    out = tmp_path / "run"
    proc = popen_cli(*evolve_args(seeds, out, srv.url, "--rounds", "3", "--timeout", "900"))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(read_jsonl(out / "records.jsonl")) < 9:
            time.sleep(0.02)
        written = read_jsonl(out / "records.jsonl")
        slow_calls = srv.stats().get("slow", 0)
    finally:
        proc.kill()
        proc.wait()
    assert sorted(r["id"] for r in written) == [f"s{i}" for i in range(1, 10)], "s0 is still running"
    rounds = [[v["round"] for v in r["versions"]] for r in written]
    assert all(r == [1, 2, 3][:len(r)] for r in rounds) and sum(len(r) == 3 for r in rounds) >= 5, \
        "the fast records went through their rounds"
    assert slow_calls == 1, "meanwhile s0 made only its first call: no round waited for it"


def test_help_shows_the_defaults_in_brackets():
    res = run_cli("evolve", "--help")
    text = " ".join(res.stdout.split())
    assert res.returncode == 0
    assert "auto, cpu, cuda or cuda:N [auto]" in text and "Send pixels to the model [yes]" in text
    assert "Evolution rounds [3]" in text and "Requests in flight at most [64]" in text


def test_flags_come_from_the_settings_models():
    """One source for each setting: every field of the config models is a flag of its
    command, with the model's default in the help, and nothing else is."""
    from evol import config

    for cmd, models in ((("evolve",), (config.EvolveConfig, config.RunOptions)),
                        (("seed", "svit"), (config.SvitConfig,)), (("seed", "provision"), (config.ProvisionConfig,)),
                        (("analyze",), (config.AnalyzeConfig,)), (("select",), (config.SelectConfig,))):
        text = run_cli(*cmd, "--help").stdout
        for model in models:
            for name, field in model.model_fields.items():
                cli = (field.json_schema_extra or {}).get("cli", {})
                if cli.get("argument"):
                    continue
                flag = cli.get("flag") or "--" + name.replace("_", "-")
                first = (flag if isinstance(flag, str) else flag[0]).split("/")[0]
                assert first in text, f"evol {' '.join(cmd)}: {name} has no flag {first}"
