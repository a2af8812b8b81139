"""The Python API: the README's example runs as written, inputs may be in memory (dicts, a
`datasets.Dataset` with decoded images), results load back as a Dataset, errors are
`EvolError`, and nothing but the CLI's own entry point imports the CLI."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import pytest

import evol
from conftest import REPO, SEEDS, read_jsonl

README = REPO / "README.md"


def readme_python() -> str:
    """The first ```python block of the README's "From Python" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_python())
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"^\d+ seed records in seeds.jsonl$", res.stdout, re.M), res.stdout
    assert re.search(r"^complete \d+ kept items in runs/py/llava\.json$", res.stdout, re.M), res.stdout
    kept = len(json.loads((tmp_path / "runs/py/llava.json").read_text()))
    assert re.search(rf"^{kept} \['", res.stdout, re.M), "to_dataset() holds one row per kept item"
    assert (tmp_path / "runs/py/analysis/report.html").stat().st_size > 10_000
    assert read_jsonl(tmp_path / "runs/rows/records.jsonl")[0]["id"] == "mug"


def _rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "image": "coffee.jpg", "conversations": [
        {"from": "human", "value": f"<image>\nWhat is on saucer {i}?"}, {"from": "gpt", "value": "A cup of coffee."}]}
        for i in range(n)]


def test_in_memory_rows_resume_without_new_calls(tmp_path, server):
    out = tmp_path / "run"
    args = dict(base_url=server.url, model="test-vlm", image_root=str(SEEDS), rounds=1, progress=False,
                api_key_env="EVOL_TEST_NO_KEY")
    first = evol.evolve(_rows(4), out, **args)
    assert first.complete and first.counts["records_out"] == 4
    mtime = (out / "input.jsonl").stat().st_mtime_ns
    sent = server.stats()["requests"]
    again = evol.evolve(iter(_rows(4)), out, **args)  # a generator this time: same content
    assert again.complete and server.stats()["requests"] == sent, "a resumed run asks nothing again"
    assert (out / "input.jsonl").stat().st_mtime_ns == mtime, "the same rows leave the input file as it was"
    with pytest.raises(evol.EvolError, match="another input or the input changed"):
        evol.evolve(_rows(5), out, **args)


def test_a_dataset_with_decoded_images_evolves_and_loads_back(tmp_path, server):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    photo = Image.open(SEEDS / "chelsea.jpg").convert("RGB")
    rows = [{"id": f"d{i}", "image": photo, "conversations": [
        {"from": "human", "value": "<image>\nWhat animal is this?"}, {"from": "gpt", "value": "A cat."}]}
        for i in range(3)]
    ds = datasets.Dataset.from_list(rows, features=datasets.Features({
        "id": datasets.Value("string"), "image": datasets.Image(),
        "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}]}))
    run = evol.evolve(ds, tmp_path / "run", base_url=server.url, model="test-vlm", rounds=1, include_seeds=True,
                      progress=False, api_key_env="EVOL_TEST_NO_KEY")
    assert run.complete and run.counts["records_out"] == 3
    assert sorted(p.name for p in (tmp_path / "run/input_images").iterdir()) == ["0_0.png", "1_0.png", "2_0.png"]
    back = run.to_dataset()
    assert back.num_rows == len(json.loads(run.llava.read_text()))
    assert {"conversations", "images"} <= set(back.column_names)
    seeds_only = evol.load_dataset(run.run_dir, min_score=11)  # no evolved item passes 11: the seeds
    assert seeds_only.num_rows == 3 and set(seeds_only["score"]) == {None}


def test_problems_before_a_run_are_evol_errors(tmp_path):
    with pytest.raises(evol.EvolError, match="input file not found"):
        evol.evolve(tmp_path / "missing.jsonl", tmp_path / "run")
    with pytest.raises(evol.ConfigError, match="rounds"):
        evol.evolve(SEEDS / "sample_llava.json", tmp_path / "run", rounds=0)
    with pytest.raises(evol.ConfigError, match="unknown setting 'no_such_setting'"):
        evol.evolve(SEEDS / "sample_llava.json", tmp_path / "run", no_such_setting=1)
    with pytest.raises(evol.EvolError, match="not a run folder"):
        evol.status(tmp_path)
    graphs = tmp_path / "graphs"  # every box lies outside its image: no usable graph
    graphs.mkdir()
    bad = {"cup": {"data_path": "cup.jpg", "annotation": {"width": 10, "height": 10, "labels": ["cup"],
                                                          "bboxes": [[50, 50, 90, 90]]}}}
    (graphs / "detection.json").write_text(json.dumps(bad))
    with pytest.raises(evol.NoRecords, match=r"wrote 0 seed records \(0 usable images, 1 skipped\): 1 x .*box"):
        evol.seed.provision(tmp_path / "s.jsonl", annotations=str(graphs))


def test_api_docstrings_follow_one_template():
    """What it does, Args/Returns, an example, and the settings of its model; the papers."""
    for fn in (evol.evolve, evol.analyze, evol.select, evol.export, evol.seed.provision, evol.seed.svit,
               evol.seed.instruct):
        doc = fn.__doc__
        assert "Example:" in doc and "Returns:" in doc and "Settings (" in doc, fn.__name__
    for fn, arxiv in ((evol.evolve, "2409.05840"), (evol.seed.provision, "2412.07012"),
                      (evol.seed.svit, "2307.04087"), (evol.seed.instruct, "2406.19736")):
        assert f"arXiv {arxiv}" in fn.__doc__, fn.__name__
    assert "2304.12244" in evol.evolve.__doc__


def test_nothing_imports_the_cli():
    """The CLI is a thin layer: library code, benches and tests go through the API (tests
    run the CLI itself as `python -m evol.cli`)."""
    offenders = []
    for folder in ("evol", "bench", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            if path == REPO / "evol" / "cli.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                if any(n == "evol.cli" or n.startswith("evol.cli.") for n in names):
                    offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    assert len((REPO / "evol" / "cli.py").read_text().splitlines()) <= 250


def test_seed_and_analyze_take_records_in_memory(tmp_path, server):
    rows = read_jsonl(SEEDS / "sample_mmevol.jsonl")  # MMEvol records: caption and boxes
    res = evol.seed.svit(tmp_path / "svit.jsonl", rows, tasks="conversation,description", model="m",
                         base_url=server.url, image_root=str(SEEDS), api_key_env="EVOL_TEST_NO_KEY")
    assert res.out.with_name("svit.input.jsonl").exists()
    written = read_jsonl(res.out)
    assert res.records == len(written) > 0 and {r["source"] for r in written} <= {"svit/conversation",
                                                                                 "svit/description"}
    table = evol.analyze([rows, res.out], tmp_path / "analysis", labels=["mmevol", "svit"], parser="none")
    assert [row["source"] for row in table["summary"]][:2] == ["mmevol", "svit"]
    assert sum(row["items"] for row in table["summary"] if row["source"] == "svit") >= res.records
