"""`evol select`: the greedy mix beats random subsets on coverage and balances answers."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from conftest import read_jsonl, run_cli

from evol.rundir import iter_records_in_order
from evol.seeding.select import (Candidate, coverage, gather_candidates, greedy_select, letter_of, objective,
                                 random_baseline, yes_no_of)
from evol.seeding.synthetic import write_synthetic_run
from evol.records import Item


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("syn"), 3000, seed=3)


def test_mix_covers_more_than_random_subsets_and_balances_answers(synthetic):
    excluded = Counter()
    cands = gather_candidates(iter_records_in_order(synthetic.path), min_score=6, pairs=synthetic.pairs_fn(),
                              excluded=excluded)
    assert excluded["below_min_score"] > 0 and all(c.score >= 6 for c in cands)
    size = 300
    sel = greedy_select(cands, size, seed=0)
    assert len(sel.chosen) == size and sel.shortfall is None and len(set(sel.chosen)) == size
    mix = coverage(cands, sel.chosen)
    randoms = random_baseline(cands, size, 20, seed=0)
    print(f"\nselect {size} of {len(cands)}: pairs mix {mix['pairs']} vs random {[r['pairs'] for r in randoms]}")
    print(f"objects mix {mix['objects']} vs random {[r['objects'] for r in randoms]}")
    for kind in ("pairs", "objects"):
        assert all(mix[kind] > r[kind] for r in randoms), kind
    yes = sum(cands[i].yes_no == "yes" for i in sel.chosen)
    no = sum(cands[i].yes_no == "no" for i in sel.chosen)
    print(f"yes/no in mix: {yes}/{no} = {yes / (yes + no):.3f} (full set "
          f"{sum(c.yes_no == 'yes' for c in cands) / sum(bool(c.yes_no) for c in cands):.3f})")
    assert 0.45 <= yes / (yes + no) <= 0.55 and yes + no >= 30
    letters = Counter(cands[i].letter for i in sel.chosen if cands[i].letter)
    assert set(letters) == set("ABCD") and max(letters.values()) - min(letters.values()) <= 1
    assert sel.objective == pytest.approx(objective(cands, sel.chosen))
    rng = random.Random(5)
    assert all(sel.objective > objective(cands, rng.sample(range(len(cands)), size)) for _ in range(5))


def test_lazy_greedy_takes_a_largest_gain_at_every_step():
    rng = random.Random(2)
    words = [f"w{i}" for i in range(12)]
    cands = [Candidate(i, f"i{i}", (rng.choice(words[:4]), rng.choice(words)),
                       tuple(rng.sample(words, rng.randint(0, 3))), (rng.choice("xyz"),), rng.choice("abc"))
             for i in range(60)]
    sel = greedy_select(cands, 25, balance=())
    for step, pick in enumerate(sel.chosen):
        before = sel.chosen[:step]
        base = objective(cands, before)
        best = max(objective(cands, before + [i]) - base for i in range(len(cands)) if i not in before)
        assert objective(cands, before + [pick]) - base == pytest.approx(best), step


def test_yes_no_balance_is_a_hard_limit():
    cands = [Candidate(i, f"i{i}", ("see", f"n{i}"), yes_no="yes") for i in range(50)]
    cands += [Candidate(50 + i, f"o{i}", ("have", f"m{i}")) for i in range(5)]
    sel = greedy_select(cands, 20)
    assert sum(cands[i].yes_no == "yes" for i in sel.chosen) == 1  # no "no" answers at all to pair with
    assert len(sel.chosen) == 6 and "held back" in sel.shortfall
    assert len(greedy_select(cands, 20, balance=()).chosen) == 20


def test_answer_classes():
    assert yes_no_of(Item(id="a", question="Is it red?", answer="Yes, it is.")) == "yes"
    assert yes_no_of(Item(id="a", question="Is it red?", answer="no.")) == "no"
    assert yes_no_of(Item(id="a", question="Is it?", answer="Nothing here.")) is None
    opts = ["A. cat", "B. dog", "C. cow"]
    assert letter_of(Item(id="a", question="?", answer="B. dog", options=opts)) == "B"
    assert letter_of(Item(id="a", question="?", answer="(C) because it moos", options=opts)) == "C"
    assert letter_of(Item(id="a", question="?", answer="A", options=opts)) == "A"
    assert letter_of(Item(id="a", question="?", answer="It is a dog.", options=opts)) is None


def test_select_cli_with_the_verb_noun_parser(tmp_path):
    pytest.importorskip("evol.analysis.verbnoun")
    run = write_synthetic_run(tmp_path / "run", 500, seed=4)
    out = tmp_path / "mix.json"
    res = run_cli("select", str(run.path.parent), "--size", "80", "--balance", "yes-no,letters",
                  "--min-score", "6", "--out", str(out))
    assert res.returncode == 0, res.stderr
    mix = json.loads(out.read_text())
    assert len(mix) == 80 and len({e["id"] for e in mix}) == 80
    kept = {}
    for rec in read_jsonl(run.path):
        for it in rec["versions"][0]["items"]:
            kept[it["id"]] = it
    assert all(kept[e["id"]]["verdict"]["score"] >= 6 for e in mix)
    assert all(e["conversations"][1]["value"] == kept[e["id"]]["answer"] for e in mix)
    rep = json.loads((tmp_path / "mix.report.json").read_text())
    cov = rep["coverage"]
    print(f"\nCLI (real parser): pairs mix {cov['pairs']['mix']} / full {cov['pairs']['full']} / random mean "
          f"{cov['pairs']['random']['mean']}; objects {cov['objects']['mix']} / {cov['objects']['full']} / "
          f"{cov['objects']['random']['mean']}; yes ratio {rep['answers']['mix']['yes_ratio']}")
    assert cov["pairs"]["mix"] > cov["pairs"]["random"]["max"]
    assert cov["objects"]["mix"] > cov["objects"]["random"]["max"]
    assert 0.45 <= rep["answers"]["mix"]["yes_ratio"] <= 0.55
    assert rep["answers"]["full"]["yes_ratio"] > 0.7 and rep["selected"] == 80
    assert "pairs: mix" in res.stderr and "yes ratio" in res.stderr
