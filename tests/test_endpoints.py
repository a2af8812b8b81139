"""Several servers for one run, and a judge on servers of its own.

Real HTTP to test servers on 127.0.0.1; every check is a count (the servers' own counts,
the cache, the manifest), never a wall-clock bound.
"""

from __future__ import annotations

import sqlite3

import pytest

from conftest import FAKE_KEY, read_jsonl, write_llava_seeds

import evol
from evol.errors import EvolError
from evol.testing.server import ServerConfig, start_in_thread


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def _run(seeds, out, urls, **kw):
    settings = dict(model="test-vlm", base_url=urls, image_root=str(seeds.parent / "images"), concurrency=4,
                    timeout=5, rounds=1, progress=False)
    settings.update(kw)
    return evol.evolve(str(seeds), str(out), **settings)


def _answered(srv) -> int:
    return srv.stats()["status"].get("200", 0)


def _cached(out) -> int:
    with sqlite3.connect(out / "cache.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]


def _accounted(out) -> int:
    done = {r["meta"]["key"] if "key" in r.get("meta", {}) else r["id"] for r in read_jsonl(out / "records.jsonl")}
    final = {e["key"] for e in read_jsonl(out / "rejects.jsonl") if e.get("final")}
    return len(done | final)


def test_calls_spread_over_the_servers_and_each_is_counted(tmp_path, server_factory):
    n = 24
    seeds = write_llava_seeds(tmp_path, n)
    servers = [server_factory(latency=0.05) for _ in range(3)]
    res = _run(seeds, tmp_path / "run", [s.url for s in servers])
    assert res.exit_code == 0 and res.counts["records_out"] == n
    got = [s.stats()["requests"] for s in servers]
    assert all(g > 0 for g in got), got
    rows = res.manifest["invocations"][0]["endpoints"]["evolver"]
    assert [r["url"] for r in rows] == [s.url for s in servers]
    # the manifest's per-server counts are the servers' own
    assert [r["requests"] for r in rows] == got
    assert [r["answered"] for r in rows] == [_answered(s) for s in servers]
    assert all(r["errors"] == 0 and r["mean_latency_s"] > 0 for r in rows)
    assert sum(got) == res.manifest["http"]["requests"] == 2 * n  # operator + judge per record
    assert [r["requests"] for r in res.manifest["endpoints"]["evolver"]] == got
    assert res.manifest["config"]["base_url"] == [s.url for s in servers]


def test_a_server_that_dies_mid_run_leaves_the_run_to_the_others(tmp_path, server_factory):
    n = 30
    seeds = write_llava_seeds(tmp_path, n)
    dying = server_factory(latency=0.05, die_after=6)
    others = [server_factory(latency=0.05) for _ in range(2)]
    res = _run(seeds, tmp_path / "run", [dying.url] + [s.url for s in others], rounds=2)
    assert res.exit_code == 0, res.stopped
    assert res.counts["records_out"] == n and _accounted(tmp_path / "run") == n
    assert _answered(dying) >= 6 and all(_answered(s) > 0 for s in others)
    rows = {r["url"]: r for r in res.manifest["invocations"][0]["endpoints"]["evolver"]}
    assert rows[dying.url]["set_aside"] >= 1 and rows[dying.url]["errors"] >= 1
    # every answered call was used once: the cache holds one reply per call answered
    assert _cached(tmp_path / "run") == res.manifest["http"]["ok"]["requests"]


def test_all_servers_down_stops_the_run_and_a_rerun_after_a_restart_asks_nothing_again(tmp_path, server_factory):
    n = 30
    seeds = write_llava_seeds(tmp_path, n)
    a = server_factory(latency=0.02, die_after=8)
    b = server_factory(latency=0.02, die_after=8)
    out = tmp_path / "run"
    first = _run(seeds, out, [a.url, b.url], rounds=2, max_attempts=3)
    assert first.exit_code == 3 and first.pending
    assert "cannot connect" in first.stopped
    assert not any("cannot connect" in str(v.get("error")) for r in read_jsonl(out / "records.jsonl")
                   for v in r["versions"])  # a transport failure is never a record's result
    before = _cached(out)
    ports = [int(s.url.rsplit(":", 1)[1].split("/")[0]) for s in (a, b)]
    a.stop(), b.stop()
    again = [start_in_thread(ServerConfig(latency=0.02), port) for port in ports]
    try:
        second = _run(seeds, out, [s.url for s in again], rounds=2, max_attempts=3)
        assert second.exit_code == 0 and second.counts["records_out"] == n
        asked = sum(_answered(s) for s in again)
        assert asked == _cached(out) - before  # only calls never answered were sent
    finally:
        for s in again:
            s.stop()


def test_a_changed_server_list_on_resume_sends_no_answered_call_again(tmp_path, server_factory):
    n = 20
    seeds = write_llava_seeds(tmp_path, n)
    out = tmp_path / "run"
    lone = server_factory(latency=0.02, die_after=10)
    first = _run(seeds, out, [lone.url], rounds=2, max_attempts=2)
    assert first.exit_code == 3
    before = _cached(out)
    assert before >= 10
    fresh = [server_factory(latency=0.02) for _ in range(2)]
    second = _run(seeds, out, [s.url for s in fresh], rounds=2)
    assert second.exit_code == 0 and second.counts["records_out"] == n
    assert sum(_answered(s) for s in fresh) == _cached(out) - before
    assert second.manifest["config"]["base_url"] == [s.url for s in fresh]


def test_a_server_that_fails_the_preflight_is_left_out(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 8)
    good = server_factory()
    wrong = server_factory(model_id="another-model")  # does not serve test-vlm
    res = _run(seeds, tmp_path / "run", [wrong.url, good.url])
    assert res.exit_code == 0
    assert wrong.stats()["requests"] == 0 and good.stats()["requests"] == 16
    left = [e for e in res.manifest["server"]["endpoints"] if "left_out" in e]
    assert [e["url"] for e in left] == [wrong.url] and "does not serve model" in left[0]["left_out"]


def test_no_server_passing_the_preflight_is_one_error(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 4)
    keyed = [server_factory(api_key="another-key") for _ in range(2)]
    with pytest.raises(EvolError) as err:
        _run(seeds, tmp_path / "run", [s.url for s in keyed])
    text = str(err.value)
    assert "none of the 2 servers passed the preflight" in text and "HTTP 401" in text
    assert FAKE_KEY not in text and all(s.stats()["requests"] == 0 for s in keyed)


def test_a_judge_on_its_own_server_gets_exactly_the_judge_calls(tmp_path, server_factory):
    n = 12
    seeds = write_llava_seeds(tmp_path, n)
    evolver, judge = server_factory(), server_factory()
    res = _run(seeds, tmp_path / "run", [evolver.url], judge_base_url=[judge.url], judge_model="judge-vlm",
               judge_concurrency=2, rounds=2)
    assert res.exit_code == 0
    e, j = evolver.stats(), judge.stats()
    assert set(e["by_schema"]) == {"evolved_items"} and set(j["by_schema"]) == {"verdicts"}
    judged = sum(1 for r in read_jsonl(tmp_path / "run" / "records.jsonl") for v in r["versions"]
                 if any(it.get("verdict") and not it["verdict"].get("rule") for it in v["items"]))
    assert j["requests"] == judged and e["requests"] == 2 * n
    assert res.manifest["judge"] == {"backend": "openai", "model": "judge-vlm", "servers": [judge.url]}
    assert [r["requests"] for r in res.manifest["endpoints"]["judge"]] == [j["requests"]]
    assert [r["requests"] for r in res.manifest["endpoints"]["evolver"]] == [e["requests"]]


def test_a_local_evolver_with_a_judge_over_http(tmp_path, server_factory, tiny_vlm_dir):
    """The tiny LLaVA evolves on this machine (hf backend) and a server judges: the server
    gets exactly the judge calls, nothing else."""
    n = 3
    seeds = write_llava_seeds(tmp_path, n)
    judge = server_factory()
    res = evol.evolve(str(seeds), str(tmp_path / "run"), backend="hf", model=str(tiny_vlm_dir),
                      image_root=str(seeds.parent / "images"), rounds=1, max_tokens=600, max_string=6, max_items=1,
                      judge_base_url=[judge.url], judge_model="judge-vlm", progress=False)
    assert res.exit_code == 0
    stats = judge.stats()
    judged = sum(1 for r in read_jsonl(tmp_path / "run" / "records.jsonl") for v in r["versions"]
                 if any(it.get("verdict") and not it["verdict"].get("rule") for it in v["items"]))
    assert judged > 0, "with this seed the tiny model's rewrites pass the rules: the judge is asked"
    assert stats["requests"] == judged and set(stats["by_schema"]) <= {"verdicts"}
    assert res.manifest["config"]["backend"] == "hf"
    assert res.manifest["judge"] == {"backend": "openai", "model": "judge-vlm", "servers": [judge.url]}


def test_resuming_with_another_judge_model_is_refused(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 4)
    srv = server_factory()
    out = tmp_path / "run"
    assert _run(seeds, out, [srv.url], judge_base_url=[srv.url], judge_model="judge-a").exit_code == 0
    with pytest.raises(EvolError, match="judge_model"):
        _run(seeds, out, [srv.url], judge_base_url=[srv.url], judge_model="judge-b")


def test_yaml_lists_servers_with_their_own_concurrency(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 8)
    a, b = server_factory(), server_factory()
    config = tmp_path / "run.yaml"
    config.write_text(f"base-url:\n  - {a.url}\n  - url: {b.url}\n    concurrency: 2\n")
    res = evol.evolve(str(seeds), str(tmp_path / "run"), config=str(config), model="test-vlm",
                      image_root=str(seeds.parent / "images"), rounds=1, progress=False)
    assert res.exit_code == 0
    rows = res.manifest["invocations"][0]["endpoints"]["evolver"]
    assert [r["concurrency"] for r in rows] == [64, 2]
    assert res.manifest["config"]["base_url"] == [a.url, {"url": b.url, "concurrency": 2}]
