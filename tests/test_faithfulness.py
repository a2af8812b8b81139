"""The planted-failure run of bench/faithfulness.py, small (issue 16): every planted failure
is rejected by the stage meant for it with a readable reason, no good rewrite is lost, and
the manifest's per-stage counts agree with rejects.jsonl.

One run covers every planted variant once (8 per failure shape: two per picture; 28 good
rewrites), with a judge fooled into keeping everything, so the rules and the later checks
must do the work. Known gaps (`KNOWN_GAPS`) are reported by their own test, as expected
failures with the reason, and leave the others strict.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter

import pytest

from conftest import REPO

PER_SHAPE, N_GOOD = 8, 28

# (shape, the planted question or answer it starts with) -> why the stage misses it today
# (shape, start of the planted question or answer) -> why the stage meant for it misses it.
# Both gaps found when the bench was written are closed: a cat's parts no longer ground an
# invented "bird" (grounding._whole_of_parts), and "Two, one at each edge." agrees with "2".
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def _bench():
    name = "evol_bench_faithfulness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "faithfulness.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while the class is made
        spec.loader.exec_module(mod)
    return sys.modules[name]


fb = _bench()


def _gap(p) -> str | None:
    for (shape, start), why in KNOWN_GAPS.items():
        if p.shape == shape and p.template is not None and (
                p.template.question.startswith(start) or p.template.answer.startswith(start)):
            return why
    return None


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    plants = fb.build_plants(PER_SHAPE, N_GOOD)
    res = fb.run(plants, tmp_path_factory.mktemp("faith"), judge="fooled", concurrency=8)
    return plants, res


def _rule_missing(rule: str | None) -> str | None:
    if rule is not None and rule not in fb.rules_present():
        return (f"rule {rule!r} is not in evol/eliminator/rules.py RULES (the grounding rules of issue 16); "
                f"nothing is meant to catch this shape yet")
    return None


def test_the_run_is_complete_and_every_call_scripted(planted):
    plants, res = planted
    assert res["result"].complete
    assert res["server"]["requests"] == res["server"]["scripted"], "a call the script did not foresee"
    assert len({p.rid for p in plants}) == len(plants) == PER_SHAPE * len(fb.SHAPES) + N_GOOD
    assert all(res["outcome"][p.rid]["stage"] != "evolve" for p in plants), "every planted rewrite parsed"


@pytest.mark.parametrize("shape", [s for s in fb.SHAPES if fb.MEANT[s][0] == "rules"])
def test_rule_shapes_are_rejected_by_their_rule(planted, shape):
    stage, rule = fb.MEANT[shape]
    why = _rule_missing(rule)
    if why:
        pytest.skip(why)
    plants, res = planted
    mine = [p for p in plants if p.shape == shape and not _gap(p)]
    assert mine
    for p in mine:
        o = res["outcome"][p.rid]
        assert o["stage"] == "rules" and fb.rule_key(o["rule"] or "") == rule, (p.question, o)
        assert len(o["reason"].split()) >= 4, f"reason too short to read: {o['reason']!r}"
        entries = o["rejects"]
        assert len(entries) == 1 and entries[0]["stage"] == "rule" and entries[0]["reason"] == o["reason"]


@pytest.mark.parametrize("shape, words", [("blind_answerable", "without the picture"),
                                          ("wrong_answer", "disagrees with the picture")])
def test_later_shapes_are_rejected_by_their_check(planted, shape, words):
    stage, _ = fb.MEANT[shape]
    plants, res = planted
    mine = [p for p in plants if p.shape == shape and not _gap(p)]
    assert mine
    for p in mine:
        o = res["outcome"][p.rid]
        assert o["stage"] == stage, (p.question, o)
        assert words in o["reason"], o["reason"]
        assert o["verdict"]["checks"]["judge"], "the fooled judge's own reason is kept"
        entries = o["rejects"]
        assert len(entries) == 1 and entries[0]["stage"] == stage and entries[0]["reason"] == o["reason"]


def test_no_good_rewrite_is_lost(planted):
    plants, res = planted
    good = [p for p in plants if p.shape == fb.GOOD and not _gap(p)]
    assert len(good) >= N_GOOD - 4
    lost = [(p.kind, p.question, res["outcome"][p.rid]["reason"]) for p in good if res["outcome"][p.rid]["stage"]]
    assert not lost
    for p in good:
        checks = res["outcome"][p.rid]["verdict"]["checks"]
        assert set(checks) >= {"blind", "answer"}, checks
        if p.blind_guess:
            assert "differs" in checks["blind"], "a confident wrong blind guess must not reject"
    assert any(p.blind_guess for p in good), "some good rewrite gets a wrong blind guess"
    assert {p.kind.split(":")[0] for p in good} >= {"short", "long", "multiple choice", "count", "yes/no"}


def test_known_gaps(planted):
    """Each known gap still misses (an expected failure, with why) or is closed (passes:
    then drop it from KNOWN_GAPS)."""
    plants, res = planted
    open_gaps = []
    matched = set()
    for p in plants:
        why = _gap(p)
        if not why:
            continue
        matched.add(why)
        o = res["outcome"][p.rid]
        if p.shape == fb.GOOD:
            missed = o["stage"] is not None
        else:
            stage, rule = fb.MEANT[p.shape]
            missed = o["stage"] != stage or (rule is not None and fb.rule_key(o["rule"] or "") != rule)
        if missed:
            open_gaps.append(f"{p.shape}: {p.question!r}: {why} (got {o['stage']}: {o['reason'][:120]})")
    assert matched == set(KNOWN_GAPS.values()), "every known gap names a planted rewrite"
    if open_gaps:
        pytest.xfail("known gaps still open:\n" + "\n".join(dict.fromkeys(open_gaps)))


def test_manifest_stage_counts_agree_with_rejects(planted):
    plants, res = planted
    stages = res["manifest"]["stages"]
    rejected = Counter({"rule": "rules"}.get(r["stage"], r["stage"]) for r in res["rejects"] if r.get("item"))
    assert not [r for r in res["rejects"] if not r.get("item")], "no record-level rejects"
    examined = len(plants)
    for s in ("rules", "judge", "blind", "answer"):
        c = stages[s]
        assert c.get("examined", 0) == examined, (s, c)
        assert c.get("rejected", 0) == rejected[s], (s, c, rejected)
        examined -= rejected[s]
    assert dict(res["manifest"]["counts"]["rejects_by_stage"]) == {
        k: n for k, n in Counter(r["stage"] for r in res["rejects"]).items()}
    for s in ("judge", "blind", "answer"):
        assert stages[s]["requests"] >= stages[s]["examined"] > 0 and stages[s]["tokens_in"] > 0
    # what the outcome read per record agrees with the manifest too
    by_stage = Counter(o["stage"] for o in res["outcome"].values() if o["stage"])
    assert {s: by_stage[s] for s in ("rules", "judge", "blind", "answer")} == \
        {s: stages[s].get("rejected", 0) for s in ("rules", "judge", "blind", "answer")}
