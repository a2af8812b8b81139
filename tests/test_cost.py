"""Money: tokens x prices per million, evolver and judge apart, against the servers' own counts."""

from __future__ import annotations

import pytest

from conftest import FAKE_KEY, evolve_args, run_cli, write_llava_seeds

import evol


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def _run(seeds, out, url, **kw):
    return evol.evolve(str(seeds), str(out), model="test-vlm", base_url=url, image_root=str(seeds.parent / "images"),
                       concurrency=8, timeout=5, rounds=2, progress=False, **kw)


def _billed(srv, price_in, price_out) -> float:
    st = srv.stats()
    return (st["tokens_in"] * price_in + st["tokens_out"] * price_out) / 1e6


def test_money_is_the_servers_tokens_times_the_prices(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 10)
    srv = server_factory(garbled=0.1, seed=3)  # unusable answers are paid for too
    res = _run(seeds, tmp_path / "run", srv.url, price_in=2.5, price_out=10.0)
    assert res.exit_code == 0
    cost = res.manifest["cost"]
    st = srv.stats()
    both = cost["evolver"]["tokens_in"] + cost["judge"]["tokens_in"]
    assert both == st["tokens_in"] == res.manifest["http"]["tokens_in"]
    assert cost["evolver"]["tokens_out"] + cost["judge"]["tokens_out"] == st["tokens_out"]
    # the judge is the same model on the same server: it costs the evolver's prices
    assert cost["money"] == pytest.approx(_billed(srv, 2.5, 10.0), abs=2e-6)
    assert res.manifest["invocations"][0]["cost"]["money"] == pytest.approx(cost["money"], abs=1e-9)


def test_a_judge_of_its_own_is_priced_apart(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 8)
    evolver, judge = server_factory(), server_factory()
    res = _run(seeds, tmp_path / "run", evolver.url, judge_base_url=judge.url, judge_model="strong-judge",
               price_in=0.1, price_out=0.2, judge_price_in=3.0, judge_price_out=15.0)
    assert res.exit_code == 0
    cost = res.manifest["cost"]
    assert cost["evolver"]["money"] == pytest.approx(_billed(evolver, 0.1, 0.2), abs=1e-6)
    assert cost["judge"]["money"] == pytest.approx(_billed(judge, 3.0, 15.0), abs=1e-6)
    assert cost["money"] == pytest.approx(cost["evolver"]["money"] + cost["judge"]["money"], abs=1e-6)


def test_unknown_prices_leave_money_unknown_and_cached_calls_cost_nothing(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 6)
    srv = server_factory()
    out = tmp_path / "run"
    first = _run(seeds, out, srv.url, judge_base_url=srv.url, judge_model="judge-b", price_in=1.0, price_out=1.0)
    assert first.manifest["cost"]["judge"]["money"] is None  # a judge of its own: its prices are its own
    assert first.manifest["cost"]["money"] == first.manifest["cost"]["evolver"]["money"] > 0
    sent = srv.stats()["requests"]
    (out / "records.jsonl").unlink()  # every record runs again, every call from the cache
    again = _run(seeds, out, srv.url, judge_base_url=srv.url, judge_model="judge-b", price_in=1.0, price_out=1.0)
    assert again.exit_code == 0 and srv.stats()["requests"] == sent
    last = again.manifest["invocations"][-1]["cost"]
    assert last["money"] == 0 and last["evolver"]["tokens_in"] == 0
    assert again.manifest["cost"]["money"] == pytest.approx(first.manifest["cost"]["money"])


def test_dry_run_prints_the_expected_cost(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 5)
    srv = server_factory()
    res = run_cli(*evolve_args(seeds, tmp_path / "run", srv.url, "--dry-run", "--price-in", "2", "--price-out", "8"))
    assert res.returncode == 0, res.stderr
    text = " ".join((res.stdout + res.stderr).split())
    assert "cost: about" in text and "evolver" in text and "judge" in text
    assert srv.stats()["requests"] == 0
    est = evol.evolve(str(seeds), str(tmp_path / "run"), model="test-vlm", base_url=srv.url, dry_run=True,
                      image_root=str(seeds.parent / "images"), price_in=2, price_out=8, progress=False).estimate
    c = est.cost
    assert c["money"] == pytest.approx((est.tokens_in * 2 + est.tokens_out * 8) / 1e6, abs=2e-6)
    assert c["money"] > 0
    bare = run_cli(*evolve_args(seeds, tmp_path / "run", srv.url, "--dry-run"))
    assert "cost: unknown" in " ".join((bare.stdout + bare.stderr).split())
