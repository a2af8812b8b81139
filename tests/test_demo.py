"""`evol demo`: seeds, evolution, elimination, analysis and report in one command, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from evol.records import Record


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def check_demo_folder(out: Path, records_asked: int, stderr: str) -> dict:
    seeds = read_jsonl(out / "seeds.jsonl")
    assert len(seeds) == records_asked
    assert len({s["images"][0] for s in seeds}) >= min(3, records_asked), "seeds are spread over the photos"
    records = [Record.model_validate(r) for r in read_jsonl(out / "records.jsonl")]
    finals = sum(r["final"] for r in read_jsonl(out / "rejects.jsonl"))
    assert len(records) + finals == len(seeds)
    assert isinstance(json.loads((out / "llava.json").read_text()), list)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["records_out"] == len(records)
    text = " ".join(stderr.split())
    assert "demo finished in" in text and str(out / "records.jsonl") in text
    report = out / "analysis" / "report.html"
    assert "analysis skipped" not in text and report.exists() and str(report) in text
    return manifest


def test_demo_against_the_test_server(tmp_path):
    out = tmp_path / "demo"
    res = run_cli("demo", "--out", str(out), "--backend", "openai", "--records", "6", "--rounds", "2")
    assert res.returncode == 0, res.stderr
    manifest = check_demo_folder(out, 6, res.stderr)
    assert manifest["config"]["backend"] == "openai" and manifest["counts"]["llava_entries"] > 0


def test_demo_on_vllm_needs_a_model_and_says_so(tmp_path):
    res = run_cli("demo", "--out", str(tmp_path / "demo"), "--backend", "vllm")
    assert res.returncode == 1 and "--backend vllm needs --model" in " ".join(res.stderr.split())
    assert not (tmp_path / "demo").exists()


def test_demo_offline_with_a_local_vision_model(tmp_path, tiny_vlm_dir):
    out = tmp_path / "demo"
    res = run_cli("demo", "--out", str(out), "--model", str(tiny_vlm_dir), "--records", "3", "--max-tokens", "60",
                  timeout=240)
    assert res.returncode == 0, res.stderr
    manifest = check_demo_folder(out, 3, res.stderr)
    assert manifest["config"]["backend"] == "hf" and manifest["config"]["model"] == str(tiny_vlm_dir)
    assert manifest["config"]["send_images"] is True


@pytest.mark.skipif(not os.environ.get("EVOL_SLOW_TESTS"), reason="about 3 minutes on 2 cores: set EVOL_SLOW_TESTS=1")
def test_demo_with_the_embedded_default(tmp_path):
    out = tmp_path / "demo"
    res = run_cli("demo", "--out", str(out), timeout=900)
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stderr.split())
    assert "embedded SmolLM2-135M-Instruct" in text and "not for real data" in text
    manifest = check_demo_folder(out, 8, res.stderr)
    assert manifest["config"]["send_images"] is False and manifest["invocations"][0]["model_calls"] > 0
