"""`evol export`: every format reads back as the same items."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from evol.records import Item, Obj, Record, Step, Verdict, Version
from evol.rundir import RunDir, finalize
from evol.seeding.export import FORMATS, canonical, export_items, iter_input_records, read_export, write_export


def _item(i: int, score: float, **kw) -> Item:
    return Item(id=f"r{i}#0@r1", parent=f"r{i}#0", question=kw.pop("question", f"Question {i} – ünïcode “quoted”?"),
                answer=f"Answer {i}.\nSecond line.", verdict=Verdict(improved=score > 0, score=score, reason="ok"), **kw)


def _run(folder) -> RunDir:
    run = RunDir(folder)
    run.create()
    recs = [
        Record(id="r0", images=["a.jpg"], caption="c", objects=[Obj(label="cup", box=[0.1, 0.1, 0.2, 0.2])],
               items=[Item(id="r0#0", question="Seed question?", answer="Seed answer.")],
               versions=[Version(round=1, operator="reasoning", items=[_item(
                   0, 8, steps=[Step(manipulation="Grounding(cup)", description="The cup is at [0.1, 0.1, 0.2, 0.2]."),
                                Step(description="So it is small.")], skills=["grounding"], objects=["cup"])])]),
        Record(id="r1", images=["a.jpg", "b.jpg"], items=[Item(id="r1#0", question="Which?", answer="A")],
               versions=[Version(round=1, operator="interaction", items=[_item(
                   1, 7, options=["A. left", "B. right"], format="multiple choice")])]),
        Record(id="r2", images=[], items=[Item(id="r2#0", question="Text only?", answer="Yes.")],
               versions=[Version(round=1, operator="perceptual", items=[_item(2, 4)])]),  # below a floor of 6
        Record(id="r3", images=["c.png"], items=[Item(id="r3#0", question="Rejected?", answer="No.")],
               versions=[Version(round=1, operator="perceptual", items=[_item(3, 0)])]),  # not improved
    ]
    with open(run.records, "w") as f:
        for k, rec in enumerate(recs):
            rec.meta.update(key=rec.id, index=k)
            f.write(rec.model_dump_json(exclude_none=True) + "\n")
    finalize(run, {"input": "test"}, min_score=6, include_seeds=True)
    return run


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_round_trips(tmp_path, fmt):
    run = _run(tmp_path / "run")
    out = tmp_path / ("ds" if fmt == "datasets" else f"out.{fmt}")
    res = run_cli("export", str(run.root), "--format", fmt, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "read back and matched 6" in res.stderr.replace("\n", " ")
    expected = [canonical(rec, it) for rec in iter_input_records(run.root) for it in export_items(rec, 6, True)]
    assert [e["id"] for e in expected] == ["r0#0", "r0#0@r1", "r1#0", "r1#0@r1", "r2#0", "r3#0"]
    assert list(read_export(out, fmt)) == expected
    if fmt in ("parquet", "datasets"):
        files = [out] if fmt == "parquet" else sorted((out / "data").glob("train-*.parquet"))
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        assert rows[1]["steps"][0] == {"manipulation": "Grounding(cup)", "description": "The cup is at [0.1, 0.1, 0.2, 0.2]."}
        assert rows[1]["score"] == 8 and rows[0]["score"] is None and rows[3]["options"] == ["A. left", "B. right"]
        assert rows[3]["question"].startswith("Question 1 – ünïcode")
    if fmt == "datasets":
        readme = (out / "README.md").read_text()
        assert "path: data/train-*" in readme and "num_examples: 6" in readme
        info = json.loads((out / "dataset_info.json").read_text())
        assert info["splits"]["train"]["num_examples"] == 6 and set(info["features"]) == set(rows[0])
    if fmt == "llava":  # the same entries the run's own llava.json holds
        assert json.loads(out.read_text()) == json.loads(run.llava.read_text())


def test_datasets_folder_loads_with_the_datasets_package(tmp_path, monkeypatch):
    """The real `datasets` package reads the folder by its card alone and by data_dir, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    run = _run(tmp_path / "run")
    out = tmp_path / "ds"
    res = run_cli("export", str(run.root), "--format", "datasets", "--out", str(out))
    assert res.returncode == 0, res.stderr
    by_card = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    by_dir = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train",
                                   cache_dir=str(tmp_path / "cache2"))
    expected = list(read_export(out, "datasets"))
    assert by_card.num_rows == by_dir.num_rows == len(expected) == 6
    assert [r["id"] for r in by_card] == [e["id"] for e in expected]
    row = by_card[1]
    assert row["score"] == 8.0 and row["steps"][0]["manipulation"] == "Grounding(cup)"
    assert row["conversations"][0] == {"from": "human", "value": "<image>\nQuestion 0 – ünïcode “quoted”?"}
    assert by_card.features["images"].feature.dtype == "string"
    assert by_card.info.splits["train"].num_examples == 6


def test_floor_and_seed_flags_and_empty_export(tmp_path):
    run = _run(tmp_path / "run")
    out = tmp_path / "hi.jsonl"
    res = run_cli("export", str(run.root), "--format", "sharegpt", "--out", str(out), "--min-score", "7.5", "--no-seeds")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["r0#0@r1"] and lines[0]["images"] == ["a.jpg"]
    assert lines[0]["conversations"][0]["value"].startswith("<image>\nQuestion 0")
    empty = tmp_path / "empty.parquet"
    write_export(iter(()), "parquet", empty)
    assert list(read_export(empty, "parquet")) == [] and pq.read_table(empty).num_rows == 0


def test_export_of_a_seed_file_and_bad_input(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    rec = Record(id="s", images=["x.jpg"], items=[Item(id="s#0", question="Q?", answer="A.")], source="svit/conversation")
    seeds.write_text(rec.model_dump_json() + "\n{not json\n")
    out = tmp_path / "seeds.json"
    res = run_cli("export", str(seeds), "--format", "llava", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert [e["id"] for e in json.loads(out.read_text())] == ["s#0"]
    assert "not valid JSON" in res.stderr
    res = run_cli("export", str(tmp_path / "missing"), "--format", "llava", "--out", str(out))
    assert res.returncode == 1 and "no such run folder" in res.stderr
    res = run_cli("export", str(seeds), "--format", "csv", "--out", str(out))
    assert res.returncode == 1 and "unknown export format" in res.stderr
