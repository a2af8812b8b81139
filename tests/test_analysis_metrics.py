"""`evol analyze`: metrics per source and round computed by hand on small inputs, bad input
counted (never a crash), the CLI, and memory that does not grow with the file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from evol.analysis import analyze
from evol.analysis.pipeline import AnalysisError


def _item(iid, q, a, parent=None, verdict=None, skills=(), steps=0, objects=(), fmt=None):
    d = {"id": iid, "question": q, "answer": a, "skills": list(skills), "objects": list(objects),
         "steps": [{"manipulation": None, "description": f"step {k}"} for k in range(steps)]}
    if parent:
        d["parent"] = parent
    if verdict:
        d["verdict"] = verdict
    if fmt:
        d["format"] = fmt
    return d


def make_run(folder: Path) -> Path:
    """A hand-made run folder: 4 good records, 2 unreadable lines, rejects and a manifest."""
    folder.mkdir(parents=True)
    a = {"id": "A", "images": ["a.jpg"], "items": [
            _item("A#0", "Describe the image in detail.", "A cat on a sofa.", skills=["grounding", "counting"],
                  objects=["cat"], fmt="detailed description")],
         "versions": [
            {"round": 1, "operator": "reasoning", "items": [
                _item("A#0@r1", "How many cats are on the sofa?", "Yes, one.", parent="A#0", steps=2,
                      skills=["counting", "reasoning", "grounding"], objects=["cat", "sofa"],
                      verdict={"improved": True, "score": 8, "reason": "harder"})]},
            {"round": 2, "operator": "interaction", "items": [
                _item("A#0@r2", "What is the cat holding?", "No toy.", parent="A#0@r1", steps=1,
                      objects=["cat"], verdict={"improved": False, "score": 3, "reason": "answer unsupported"})]}]}
    b = {"id": "B", "images": ["b.jpg"], "items": [_item("B#0", "", "Yes.")],
         "versions": [
            {"round": 1, "operator": "perceptual", "status": "failed", "error": "server error 500", "items": []},
            {"round": 2, "operator": "perceptual", "items": [
                _item("B#0@r2", "I cannot help with that.", "Sorry.", parent="B#0",
                      verdict={"improved": False, "score": 0, "reason": "refusal", "rule": "refusal"}),
                _item("B#1@r2", "Count the chairs.", "Four.", parent="B#0")]}]}
    c = {"id": "C", "images": ["c.jpg"], "items": [_item("C#0", "这张图片里有什么？", "No.")]}
    d = {"id": "D", "images": ["d.jpg"]}
    lines = [json.dumps(a), "{not json", json.dumps(b), json.dumps({"id": "bad", "items": [{"id": "x"}]}),
             json.dumps(c), json.dumps(d)]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rejects = [{"key": "A", "stage": "judge", "reason": "x"}, {"key": "B", "stage": "rules", "reason": "y"},
               {"key": "B", "stage": "judge", "reason": "z"}]
    (folder / "rejects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejects))
    (folder / "manifest.json").write_text(json.dumps({"config": {"model": "m", "rounds": 2}}))
    return folder


def make_provision_seeds(path: Path) -> Path:
    recs = []
    for k, (gen, q, a) in enumerate([("count_objects", "How many cups are there?", "2"),
                                     ("count_objects", "How many plates are there?", "3"),
                                     ("relation_between", "Is the cup on the table?", "yes")]):
        recs.append({"id": f"p{k}", "images": ["x.jpg"], "source": "provision", "meta": {"generator": gen},
                     "items": [_item(f"p{k}#0", q, a, objects=["cup", "table"][: k + 1], fmt="short answer")]})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def rows_by_round(summary: list[dict], source: str) -> dict[int, dict]:
    return {r["round"]: r for r in summary if r["source"] == source}


def test_metrics_by_hand(tmp_path):
    run = make_run(tmp_path / "r1")
    seeds = make_provision_seeds(tmp_path / "seeds.jsonl")
    # the task reading, so that "How many ...?" counts as count/<noun> in the hand-made figures
    # below (the paper's reading, the default, keeps "be"; its rules are tested in test_analysis_verbnoun)
    result = analyze([str(seeds), str(run)], tmp_path / "out", examples=2, reading="task")
    assert result["settings"]["verb_reading"] == "task"
    s = rows_by_round(result["summary"], "r1")
    assert set(s) == {0, 1, 2}
    r0, r1, r2 = s[0], s[1], s[2]
    # round 0: A, B (empty question), C (Chinese); D has no items
    assert (r0["records"], r0["items"]) == (3, 3)
    assert (r0["empty_instructions"], r0["non_english"], r0["verb_noun_parsed"]) == (1, 1, 1)
    assert r0["top_pair"] == "describe/image" and r0["distinct_pairs"] == 1 and r0["pair_entropy_bits"] == 0
    # skills and steps: the mean of the items that have them; none recorded is "no data", not 0
    assert r0["skills_mean"] == 2 and r0["items_without_skills"] == 2 and r0["steps_mean"] is None
    assert r0["items_without_steps"] == 3 and r0["yes_no_answers"] == 2 and r0["yes_share"] == 0.5
    assert r0["judged"] == 0 and r0["score_mean"] is None and r0["unscored"] == 0
    # round 1: A's rewrite kept with 8; B's round failed
    assert (r1["records"], r1["items"], r1["failed_versions"]) == (2, 1, 1)
    assert (r1["judged"], r1["improved_ratio"], r1["score_mean"]) == (1, 1.0, 8.0)
    assert r1["top_pair"] == "count/cat" and r1["steps_mean"] == 2 and r1["skills_mean"] == 3
    assert r1["operators"] == "reasoning 1" and r1["distinct_objects"] == 2
    # round 2: one judged (3, not improved), one rule rejection, one item without verdict
    assert (r2["items"], r2["judged"], r2["rule_rejected"], r2["unscored"]) == (3, 1, 1, 1)
    assert r2["improved_ratio"] == 0.0 and r2["score_mean"] == 3.0
    assert set(r2["operators"].split(", ")) == {"perceptual 2", "interaction 1"}
    # pandas-derived change against round 0
    assert r1["distinct_pairs_vs_round0"] == 0 and r2["distinct_pairs_vs_round0"] == r2["distinct_pairs"] - 1

    p = rows_by_round(result["summary"], "seeds")[0]
    assert p["generators"] == "count_objects 2, relation_between 1"
    assert p["top_pair"] == "count/cup" and p["yes_share"] == 1.0
    # objects: cup in 3 items, table in 2; rare = in at most 2 items, so table is rare
    assert p["distinct_objects"] == 2 and p["rare_object_share"] == 0.5 and p["rare_mention_share"] == 0.4

    src = {x["source"]: x for x in result["sources"]}["r1"]
    assert (src["records"], src["read_errors"], src["records_without_items"]) == (4, 2, 1)
    assert src["records_without_versions"] == 2
    assert src["rejects_by_stage"] == {"judge": 2, "rules": 1}
    assert any("line 2 is not valid JSON" in e for e in src["error_examples"])
    assert any("bad" in e and "question" in e for e in src["error_examples"])

    out = tmp_path / "out"
    for name in result["files"]:
        assert (out / name).is_file(), name
    pairs = pd.read_csv(out / "pairs.csv", keep_default_na=False)
    assert {"describe", "count"} <= set(pairs["verb"])
    dists = pd.read_csv(out / "distributions.csv")
    assert not ((dists.metric.isin(["skills_per_item", "steps_per_item"])) & (dists.value == 0)).any()
    scores = dists[(dists.source == "r1") & (dists.metric == "score")]
    assert sorted(zip(scores["round"], scores["value"])) == [(1, 8.0), (2, 3.0)]
    counts = pd.read_csv(out / "counts.csv", keep_default_na=False)
    status = counts[(counts.source == "r1") & (counts["round"] == 0) & (counts.kind == "verb_noun_status")]
    assert dict(zip(status["name"], status["count"])) == {"ok": 1, "empty": 1, "non_english": 1}
    examples = json.loads((out / "examples.json").read_text())
    assert [e["id"] for e in examples["r1"]] == ["A", "B"]  # the records with versions
    assert examples["r1"][0]["versions"][0]["items"][0]["verdict"]["score"] == 8


def test_kept_only_and_labels(tmp_path):
    run = make_run(tmp_path / "r1")
    result = analyze([str(run), str(run)], tmp_path / "out", labels=["base", "kept"], verbnoun=False)
    assert [i["label"] for i in result["inputs"]] == ["base", "kept"]
    kept = analyze([str(run)], tmp_path / "out2", kept_only=True, verbnoun=False)
    rows = rows_by_round(kept["summary"], "r1")
    assert rows[1]["items"] == 1 and rows[2]["items"] == 0
    assert rows[0]["verb_noun_parsed"] == 0  # parsing was switched off


def test_unusable_inputs_are_named(tmp_path):
    with pytest.raises(AnalysisError, match="input not found"):
        analyze([str(tmp_path / "missing.jsonl")], tmp_path / "out")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(AnalysisError, match="not a run folder"):
        analyze([str(tmp_path / "empty_dir")], tmp_path / "out")
    f = make_provision_seeds(tmp_path / "s.jsonl")
    with pytest.raises(AnalysisError, match="labels"):
        analyze([str(f)], tmp_path / "out", labels=["a", "b"])


def test_llava_json_with_broken_entries(tmp_path):
    data = [
        {"id": "l0", "image": "a.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is the man holding?"}, {"from": "gpt", "value": "A kite."},
            {"from": "human", "value": "Is it windy?"}, {"from": "gpt", "value": "Yes."}]},
        {"id": "l1", "image": "b.jpg", "conversations": "not a list"},
        {"id": "l2", "image": "c.jpg", "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "?"}]},
    ]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(data))
    result = analyze([str(path)], tmp_path / "out")
    row = result["summary"][0]
    assert (row["items"], row["empty_instructions"], row["yes_no_answers"]) == (3, 1, 1)
    assert row["top_pair"] in ("hold/-", "check/-")
    assert result["sources"][0]["read_errors"] == 1


def test_cli_analyze_and_report(tmp_path):
    run = make_run(tmp_path / "r1")
    seeds = make_provision_seeds(tmp_path / "seeds.jsonl")
    out = tmp_path / "cmp"
    res = run_cli("analyze", str(seeds), str(run), "--out", str(out), "--label", "seeds", "--label", "evolved")
    assert res.returncode == 0, res.stderr
    assert "evolved round 2: 3 items" in res.stderr and "2 unreadable records" in res.stderr
    res = run_cli("report", str(out))
    assert res.returncode == 0, res.stderr
    page = (out / "report.html").read_text()
    assert "evolved" in page and "Plotly" in page
    bad = run_cli("analyze", str(tmp_path / "nope.jsonl"), "--out", str(out))
    assert bad.returncode == 1 and "input not found" in bad.stderr
    bad = run_cli("report", str(tmp_path / "nowhere"))
    assert bad.returncode == 1 and "analysis.json" in bad.stderr


# VmHWM, not ru_maxrss: a child forked from a big pytest process inherits the parent's
# ru_maxrss through exec, while VmHWM belongs to the new program alone.
_MEMORY_PROBE = textwrap.dedent("""
    import json, re, sys
    from evol.analysis import analyze
    analyze([sys.argv[1]], sys.argv[2], verbnoun=False)
    status = open("/proc/self/status").read()
    print(json.dumps({"peak_kb": int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1))}))
""")


def write_synthetic(path: Path, n: int, rounds: int = 2) -> Path:
    """n evolved records with varied text, skills, objects and verdicts (deterministic)."""
    nouns = ["cup", "dog", "car", "tree", "lamp", "chair", "boat", "kite", "clock", "bench"]
    with open(path, "w") as f:
        for i in range(n):
            obj = [f"{nouns[i % 10]}", f"thing{i % 997}"]
            items = [_item(f"r{i}#0", f"What is the {nouns[i % 10]} number {i} next to?", "Yes." if i % 3 else "No.",
                           skills=["grounding"], objects=obj)]
            versions = []
            for r in range(1, rounds + 1):
                versions.append({"round": r, "operator": ["perceptual", "reasoning", "interaction"][(i + r) % 3],
                                 "items": [_item(f"r{i}#0@r{r}", f"Describe the {nouns[(i + r) % 10]} in region {i}.",
                                                 "A long answer " * 5, parent=f"r{i}#0", steps=r, objects=obj,
                                                 verdict={"improved": bool((i + r) % 2), "score": (i * 7 + r) % 11,
                                                          "reason": "because " * 4})]})
            f.write(json.dumps({"id": f"r{i}", "images": [f"{i}.jpg"], "caption": "A scene. " * 10,
                                "items": items, "versions": versions}) + "\n")
    return path


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for VmHWM")
def test_memory_does_not_grow_with_the_file(tmp_path):
    """Peak RSS analysing 30,000 records stays within a few MB of analysing 3,000."""
    peaks = {}
    for n in (3_000, 30_000):
        data = write_synthetic(tmp_path / f"d{n}.jsonl", n)
        res = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(data), str(tmp_path / f"o{n}")],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        peaks[n] = json.loads(res.stdout.strip().splitlines()[-1])["peak_kb"] / 1024
    size_mb = (tmp_path / "d30000.jsonl").stat().st_size / 2**20
    print(f"\npeak RSS: 3,000 records {peaks[3_000]:.1f} MB, 30,000 records {peaks[30_000]:.1f} MB "
          f"(file {size_mb:.0f} MB)")
    assert peaks[30_000] - peaks[3_000] < 25, peaks


def test_sunburst_rows_cover_every_parsed_item():
    """sunburst.csv comes from the full counts: top verbs and nouns plus "(other)" on both rings."""
    from evol.analysis.metrics import OTHER, SUN_NOUNS, SUN_VERBS, GroupStats

    g = GroupStats("s", 0)
    for v in range(SUN_VERBS + 8):
        for n in range(SUN_NOUNS + 3):
            for _ in range(v + n + 1):
                g.add_parse(f"verb{v}", f"noun{n}", "ok")
    g.add_parse("verb0", None, "ok")
    g.add_parse(None, None, "no_verb")
    rows = g.sunburst_rows()
    assert sum(r["count"] for r in rows) == sum(g.pairs.values()) == g.summary()["verb_noun_parsed"]
    verbs = {r["verb"] for r in rows}
    assert len(verbs) == SUN_VERBS + 1 and OTHER in verbs
    named = [r for r in rows if r["verb"] == f"verb{SUN_VERBS + 7}"]
    assert len(named) == SUN_NOUNS + 1 and named[-1]["noun"] == OTHER
    # the top verb's counts are its full count, not a top-300 cut
    assert sum(r["count"] for r in named) == sum(c for (v, _), c in g.pairs.items() if v == f"verb{SUN_VERBS + 7}")


def test_diversity_on_equal_size_samples():
    """A big seed file and a small run drawn from the same pairs: the raw distinct count reads as a
    collapse, the equal-size figures do not; per 1,000 items is given beside them."""
    from evol.analysis.metrics import GroupStats, equal_size_diversity

    big, small = GroupStats("seeds", 0), GroupStats("run", 1)
    for i in range(1420):
        big.add_parse(f"v{i % 40}", f"n{i % 7}", "ok")
    for i in range(16):
        small.add_parse(f"v{(i * 37) % 40}", f"n{(i * 37) % 7}", "ok")
    assert len(big.pairs) == 280 and len(small.pairs) == 16  # raw: 280 against 16
    b, s = equal_size_diversity([big, small])
    assert b["equal_sample_size"] == s["equal_sample_size"] == 16
    assert s["distinct_pairs_at_n"] == 16 and 14 <= b["distinct_pairs_at_n"] <= 16
    assert abs(b["pair_entropy_bits_at_n"] - s["pair_entropy_bits_at_n"]) < 0.3
    assert b["distinct_pairs_per_1k"] == round(280 * 1000 / 1420, 2) and s["distinct_pairs_per_1k"] == 1000
    assert equal_size_diversity([big, small]) == [b, s]  # fixed seed: the same figures every time
    empty = equal_size_diversity([GroupStats("x", 0)])[0]
    assert empty["distinct_pairs_at_n"] is None and empty["distinct_pairs_per_1k"] is None


def _example_items(examples: dict) -> list[tuple[str, int, dict]]:
    """(source, round, item view) of every item shown in examples.json."""
    out = []
    for source, records in examples.items():
        for ex in records:
            out += [(source, 0, it) for it in ex["items"]]
            out += [(source, v["round"], it) for v in ex["versions"] for it in v["items"]]
    return out


def test_examples_carry_the_pair_each_item_was_counted_with(tmp_path):
    run = make_run(tmp_path / "r1")
    result = analyze([str(run)], tmp_path / "out", examples=4)
    assert result["settings"]["verb_reading"] == "paper"  # the default: MMEvol's definition
    examples = json.loads((tmp_path / "out" / "examples.json").read_text())
    shown = _example_items(examples)
    by_id = {it["id"]: it["verb_noun"] for _, _, it in shown}
    assert len(by_id) == len(shown) == 7  # every item shown got its pair, seeds and rewrites
    assert by_id["A#0"] == {"verb": "describe", "noun": "image", "status": "ok"}
    assert by_id["B#0"]["status"] == "empty" and by_id["B#0"]["verb"] is None
    assert by_id["C#0"]["status"] == "non_english" and by_id["C#0"]["verb"] is None
    # the pair shown is the pair counted: each one is in pairs.csv for its round
    pairs = pd.read_csv(tmp_path / "out" / "pairs.csv", keep_default_na=False)
    counted = {(r, v, n) for r, v, n in zip(pairs["round"], pairs["verb"], pairs["noun"])}
    for _, rnd, it in shown:
        if it["verb_noun"]["verb"]:
            assert (rnd, it["verb_noun"]["verb"], it["verb_noun"]["noun"] or "") in counted, it


def test_examples_without_parsing_or_skipped_have_no_pair(tmp_path):
    run = make_run(tmp_path / "r1")
    off = analyze([str(run)], tmp_path / "off", examples=4, verbnoun=False)
    assert off["settings"]["verb_reading"] is None and off["settings"]["backend"] is None
    shown = _example_items(json.loads((tmp_path / "off" / "examples.json").read_text()))
    assert shown and not any("verb_noun" in it for _, _, it in shown)
    analyze([str(run)], tmp_path / "kept", examples=4, kept_only=True)
    shown = {it["id"]: it for _, _, it in _example_items(json.loads((tmp_path / "kept" / "examples.json").read_text()))}
    assert "verb_noun" in shown["A#0@r1"]  # kept: counted
    assert "verb_noun" not in shown["A#0@r2"] and "verb_noun" not in shown["B#1@r2"]  # dropped / unscored: not counted


def test_verb_reading_is_passed_through_and_recorded(tmp_path, monkeypatch):
    import evol
    from evol.analysis.verbnoun import READINGS, VerbNounParser
    from evol.config import AnalyzeConfig
    from evol.errors import EvolError

    assert AnalyzeConfig.model_fields["verb_reading"].default == "paper" and READINGS == ("paper", "task")
    seeds = make_provision_seeds(tmp_path / "seeds.jsonl")
    seen = []
    real = VerbNounParser.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.reading)

    monkeypatch.setattr(VerbNounParser, "__init__", spy)
    task = evol.analyze([seeds], tmp_path / "task", verb_reading="task")
    paper = evol.analyze([seeds], tmp_path / "paper")
    assert seen == ["task", "paper"]
    assert task["settings"]["verb_reading"] == "task" and paper["settings"]["verb_reading"] == "paper"
    stored = json.loads((tmp_path / "task" / "analysis.json").read_text())
    assert stored["settings"]["verb_reading"] == "task"
    with pytest.raises(EvolError, match="verb-noun reading 'mmevol'"):
        evol.analyze([seeds], tmp_path / "bad", verb_reading="mmevol")
    with pytest.raises(AnalysisError, match="reading"):
        analyze([str(seeds)], tmp_path / "bad", reading="mmevol")
    # a parser given is used with its own reading; asking for another one is refused
    parser = VerbNounParser("spacy", reading="task")
    assert analyze([str(seeds)], tmp_path / "reuse", parser=parser)["settings"]["verb_reading"] == "task"
    with pytest.raises(AnalysisError, match="'task', not 'paper'"):
        analyze([str(seeds)], tmp_path / "reuse", parser=parser, reading="paper")


def test_cli_takes_verb_reading(tmp_path):
    seeds = make_provision_seeds(tmp_path / "seeds.jsonl")
    res = run_cli("analyze", str(seeds), "--out", str(tmp_path / "a"), "--verb-reading", "task", "--parser", "none")
    assert res.returncode == 0, res.stderr
    # nothing was parsed, so no reading is claimed
    assert json.loads((tmp_path / "a" / "analysis.json").read_text())["settings"]["verb_reading"] is None
    bad = run_cli("analyze", str(seeds), "--out", str(tmp_path / "b"), "--verb-reading", "both")
    assert bad.returncode != 0 and "verb-noun reading 'both'" in bad.stderr
