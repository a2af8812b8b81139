"""The later elimination stages (blind, answer) in the dry run, the run's summary and the report."""

from __future__ import annotations

import html
import json
import re

import pytest

from conftest import FAKE_KEY, evolve_args, run_cli, write_llava_seeds

from evol.analysis import analyze
from evol.analysis.report import stage_rows, write_report
from evol.config import EvolveConfig
from evol.dryrun import (CHARS_PER_TOKEN, JUDGE_OUT_TOKENS_PER_ITEM, OUT_TOKENS_PER_ITEM, ROUND_GROWTH, estimate,
                         image_tokens)
from evol.images import ImageStore
from evol.io import read_records
from evol.operators import OPERATORS, choose_operator, record_rng
from evol.operators.base import BuildOptions
from evol.backends.base import Sampling


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def _cfg(seeds, **kw) -> EvolveConfig:
    return EvolveConfig(input=str(seeds), out=str(seeds.parent / "out"), model="m", base_url="http://127.0.0.1:9",
                        image_root=str(seeds.parent / "images"), **kw)


def _estimate(seeds, **kw):
    cfg = _cfg(seeds, **kw)
    return estimate(cfg, ImageStore(seeds.parent / "images", cfg.max_side))


def _reference(cfg: EvolveConfig) -> tuple[int, list[int], list[int]]:
    """The estimate of operator and judge as `evol.dryrun` made it before the later checks."""
    opts = BuildOptions(sampling=Sampling(max_tokens=cfg.max_tokens), send_images=cfg.send_images)
    per_image = image_tokens(cfg.max_side) if cfg.send_images else 0
    requests, evolver, judge = 0, [0, 0], [0, 0]
    for res in read_records(cfg.input, cfg.input_format):
        rec = res.record
        op = OPERATORS[choose_operator(record_rng(cfg.seed, rec.id, 1), cfg.mix)]
        op_in = op.build(rec, rec.items, 1, opts).text_chars() // CHARS_PER_TOKEN + per_image * len(rec.images)
        judge_in = op_in + len(rec.items) * OUT_TOKENS_PER_ITEM
        growth = 1.0
        for _ in range(cfg.rounds):
            requests += 2
            evolver[0] += int(op_in * growth)
            evolver[1] += int(len(rec.items) * OUT_TOKENS_PER_ITEM * growth)
            judge[0] += int(judge_in * growth)
            judge[1] += len(rec.items) * JUDGE_OUT_TOKENS_PER_ITEM
            growth *= ROUND_GROWTH
    return requests, evolver, judge


def test_default_checks_estimate_as_before(tmp_path):
    seeds = write_llava_seeds(tmp_path, 7)
    cfg = _cfg(seeds, rounds=3, price_in=1.0, price_out=2.0)
    est = estimate(cfg, ImageStore(seeds.parent / "images", cfg.max_side))
    requests, evolver, judge = _reference(cfg)
    assert (est.requests, est.evolver_tokens, est.judge_tokens) == (requests, evolver, judge)
    assert (est.tokens_in, est.tokens_out) == (evolver[0] + judge[0], evolver[1] + judge[1])
    assert list(est.stages) == ["operator", "judge"]
    assert est.stages["operator"]["requests"] == est.stages["judge"]["requests"] == 7 * 3
    # naming the default stages changes nothing
    same = _estimate(seeds, rounds=3, checks="judge,rules")
    assert (same.requests, same.tokens_in, same.tokens_out) == (est.requests, est.tokens_in, est.tokens_out)


def test_later_checks_add_a_call_and_a_comparison_per_record_and_round_on_the_judge(tmp_path):
    seeds = write_llava_seeds(tmp_path, 6)
    base = _estimate(seeds, rounds=2, price_in=1.0, price_out=4.0)
    blind = _estimate(seeds, rounds=2, checks="rules,judge,blind", price_in=1.0, price_out=4.0)
    both = _estimate(seeds, rounds=2, checks="rules,judge,blind,answer", price_in=1.0, price_out=4.0)
    per = 6 * 2  # records x rounds
    assert blind.requests == base.requests + 2 * per
    assert both.requests == base.requests + 4 * per
    assert list(both.stages) == ["operator", "judge", "blind", "answer"]
    assert both.stages["blind"]["requests"] == both.stages["answer"]["requests"] == 2 * per
    assert sum(s["requests"] for s in both.stages.values()) == both.requests
    # the operator and the judge are estimated as without the checks; the checks are the judge's
    for est in (blind, both):
        assert est.stages["operator"] == base.stages["operator"] and est.stages["judge"] == base.stages["judge"]
        assert est.evolver_tokens == base.evolver_tokens
        extra_in = sum(s["tokens_in"] for k, s in est.stages.items() if k in ("blind", "answer"))
        extra_out = sum(s["tokens_out"] for k, s in est.stages.items() if k in ("blind", "answer"))
        assert est.judge_tokens == [base.judge_tokens[0] + extra_in, base.judge_tokens[1] + extra_out]
        assert est.tokens_in == base.tokens_in + extra_in > base.tokens_in
        assert est.cost["judge"]["tokens_in"] == est.judge_tokens[0]
        assert est.cost["evolver"] == base.cost["evolver"]
        assert est.cost["money"] > base.cost["money"]
    assert both.stages["blind"] == blind.stages["blind"]


def test_blind_sends_no_image_tokens_and_answer_sends_them_only_to_a_seeing_judge(tmp_path):
    seeds = write_llava_seeds(tmp_path, 5)
    checks = "rules,judge,blind,answer"
    small = _estimate(seeds, checks=checks, max_side=512)
    large = _estimate(seeds, checks=checks, max_side=2048)
    blind_judge = _estimate(seeds, checks=checks, max_side=2048, judge_image=False)
    assert small.stages["blind"] == large.stages["blind"] == blind_judge.stages["blind"]
    assert large.stages["answer"]["tokens_in"] > small.stages["answer"]["tokens_in"]
    assert blind_judge.stages["answer"]["tokens_in"] < small.stages["answer"]["tokens_in"]
    no_images = _estimate(seeds, checks=checks, max_side=2048, send_images=False)
    assert no_images.stages["answer"] == blind_judge.stages["answer"]
    # the judge's own estimate leaves the pictures out too when it does not see them
    per_image = large.stages["judge"]["tokens_in"] - blind_judge.stages["judge"]["tokens_in"]
    assert per_image > 0 and large.stages["operator"] == blind_judge.stages["operator"]


def test_dry_run_prints_requests_per_stage(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 4)
    srv = server_factory()
    plain = run_cli(*evolve_args(seeds, tmp_path / "run", srv.url, "--dry-run", "--rounds", "2"))
    assert plain.returncode == 0, plain.stderr
    text = " ".join((plain.stdout + plain.stderr).split())
    assert "requests: at most 16 (operator 8, judge 8)" in text
    checked = run_cli(*evolve_args(seeds, tmp_path / "run", srv.url, "--dry-run", "--rounds", "2",
                                   "--checks", "rules,judge,blind,answer"))
    assert checked.returncode == 0, checked.stderr
    text = " ".join((checked.stdout + checked.stderr).split())
    assert "requests: at most 48 (operator 8, judge 8, blind 16, answer 16;" in text
    assert "at most one comparison of answers" in text
    assert srv.stats()["requests"] == 0


@pytest.fixture(scope="module")
def checked_run(tmp_path_factory):
    """A run with every stage against the test server, through the CLI, and its analysis."""
    from evol.testing.server import ServerConfig, start_in_thread

    tmp = tmp_path_factory.mktemp("stages")
    seeds = write_llava_seeds(tmp, 8)
    srv = start_in_thread(ServerConfig())
    try:
        res = run_cli(*evolve_args(seeds, tmp / "run", srv.url, "--rounds", "1",
                                   "--checks", "rules,judge,blind,answer"))
    finally:
        srv.stop()
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    analyze([str(tmp / "run")], tmp / "analysis", labels=["<checked>"], verbnoun=False)
    return res, manifest, tmp / "analysis"


def test_the_summary_says_what_each_later_check_did(checked_run):
    res, manifest, _ = checked_run
    text = " ".join((res.stdout + res.stderr).split())
    stages = manifest["stages"]
    assert set(stages) == {"rules", "judge", "blind", "answer"}
    assert stages["blind"]["examined"] and stages["answer"]["examined"]  # the test server lets some through
    for stage, why in (("blind", "answerable without the picture"), ("answer", "answer disagrees with the picture")):
        s = stages[stage]
        assert (f"{stage} check: {s['examined']:,} examined, {s.get('rejected', 0):,} rejected ({why}), "
                f"{s['requests']:,} requests") in text


def test_no_check_lines_without_later_checks(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 3)
    srv = server_factory()
    res = run_cli(*evolve_args(seeds, tmp_path / "run", srv.url, "--rounds", "1"))
    assert res.returncode == 0, res.stderr
    assert "blind check:" not in res.stdout + res.stderr and "answer check:" not in res.stdout + res.stderr


def _cells(page: str, source: str) -> dict[str, list[str]]:
    """The "Elimination stages" table's rows for one source: stage -> its cells' text."""
    section = page.split("<h2>Elimination stages</h2>", 1)[1].split("<h2>", 1)[0]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", section):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        if cells and cells[0] == source:
            rows[cells[1]] = cells[2:]
    return rows


def test_the_report_shows_the_stages_as_the_manifest_counts_them(checked_run):
    _, manifest, folder = checked_run
    page = write_report(folder).read_text(encoding="utf-8")
    assert "<h2>Elimination stages</h2>" in page
    assert "&lt;checked&gt;" in page and "<checked>" not in page  # the label is escaped
    rows = _cells(page, "<checked>")
    assert list(rows) == ["rules", "judge", "blind", "answer"]
    for stage, s in manifest["stages"].items():
        examined, rejected, share, requests, t_in, t_out = rows[stage]
        assert examined == f"{s['examined']:,}"
        assert rejected == f"{s.get('rejected', 0):,}"
        want_share = s.get("rejected", 0) / s["examined"]
        assert float(share) == pytest.approx(want_share, abs=6e-4)  # shown to 3 decimals
        assert requests == f"{s.get('requests', 0):,}"
        assert (t_in, t_out) == (f"{s.get('tokens_in', 0):,}", f"{s.get('tokens_out', 0):,}")
    # an example item a later check dropped says which
    examples = json.loads((folder / "examples.json").read_text())
    dropped = [it["verdict"]["stage"] for recs in examples.values() for rec in recs for v in rec["versions"]
               for it in v["items"] if (it.get("verdict") or {}).get("stage")]
    for stage in set(dropped):
        assert f"dropped by the {stage} check" in page
    # the reject list by stage counts the later checks too
    by_stage = manifest["counts"]["rejects_by_stage"]
    sources = json.loads((folder / "sources.json").read_text())
    assert sources[0]["rejects_by_stage"] == by_stage
    for stage in ("blind", "answer"):
        if by_stage.get(stage):
            assert f"{stage} {by_stage[stage]}" in page


def test_stage_rows_say_no_data_where_the_manifest_is_silent():
    sources = [{"source": "old", "manifest": {"model": "m"}},
               {"source": "new", "manifest": {"stages": {
                   "rules": {"examined": 10},
                   "judge": {"examined": 10, "requests": 4, "tokens_in": 100, "tokens_out": 20, "rejected": 5},
                   "blind": {"examined": 5, "rejected": 1},
                   "<b>x</b>": {"examined": "many"}}}}]
    rows = {r["stage"]: r for r in stage_rows(sources)}
    assert all(r["source"] == "new" for r in rows.values())
    assert rows["rules"]["rejected"] == 0 and rows["rules"]["requests"] == 0 and rows["rules"]["share"] == 0
    assert rows["judge"]["share"] == 0.5 and rows["judge"]["tokens_out"] == 20
    assert rows["blind"]["share"] == 0.2 and rows["blind"]["requests"] is None and rows["blind"]["tokens_in"] is None
    assert rows["<b>x</b>"]["examined"] is None and rows["<b>x</b>"]["share"] is None
    assert stage_rows([{"source": "file", "manifest": {}}]) == []
