"""`--ray`: evolve, seed provision and analyze over Ray give what one process gives (issue 14).

One Ray cluster for the module: two simulated nodes (`ray.cluster_utils.Cluster`, one CPU
each) with HOME and RAY_TMPDIR in a temporary folder. Model calls go over HTTP to test
servers on 127.0.0.1, whose answers depend only on the request.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'evol[ray]')")

import evol  # noqa: E402
from evol.analysis.pipeline import OUTPUT_FILES  # noqa: E402
from evol.distributed.evolve import shard_dirs, shard_of  # noqa: E402
from evol.rundir import RunDir  # noqa: E402
from evol.samples import shipped  # noqa: E402
from evol.testing.server import ServerConfig, start_in_thread  # noqa: E402

from conftest import FAKE_KEY, read_jsonl, write_llava_seeds  # noqa: E402

SHARDS, CONCURRENCY = 4, 4
# record s7 is slow (every request that quotes its question), so that its shard is surely
# still running when the test kills the shard's worker
SERVER = dict(latency=0.02, slow=[(["picture 7?"], 1.5)])


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    home = Path(tempfile.mkdtemp(prefix="evray"))  # short: Ray's socket paths must fit 107 bytes
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("RAY_TMPDIR", str(home))
        mp.setenv("OPENAI_API_KEY", FAKE_KEY)  # the workers inherit the environment
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        c.add_node(num_cpus=1)
        ray.init(address=c.address, configure_logging=False)
        try:
            yield c
        finally:
            ray.shutdown()
            c.shutdown()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    """24 LLaVA records with real photos, plus what the reading loop rejects: a repeated
    id, a line that is not JSON, and a record with no question/answer pair."""
    folder = tmp_path_factory.mktemp("seeds")
    path = write_llava_seeds(folder, 24)
    lines = path.read_text().splitlines()
    lines.insert(5, lines[2])  # s2 again
    lines.insert(9, "{not json")
    lines.append(json.dumps({"id": "empty", "image": "coffee.jpg", "conversations": []}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _settings(seeds: Path, url: str) -> dict:
    return dict(model="test-vlm", base_url=url, image_root=str(seeds.parent / "images"), rounds=2,
                concurrency=CONCURRENCY, timeout=10, progress=False)


def _evolve(seeds: Path, out: Path, **extra):
    server = start_in_thread(ServerConfig(**SERVER))
    try:
        result = evol.evolve(seeds, out, **_settings(seeds, server.url), **extra)
        return result, server.stats()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def one_process(seeds, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    result, stats = _evolve(seeds, out)
    assert result.complete
    return out, stats


def _by_id(path: Path) -> dict[str, dict]:
    rows = read_jsonl(path)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a record written twice"
    return {r["id"]: r for r in rows}


def _sorted_rejects(path: Path) -> list[str]:
    return sorted(json.dumps(e, sort_keys=True) for e in read_jsonl(path))


def _same_outputs(a: Path, b: Path) -> None:
    assert _by_id(b / "records.jsonl") == _by_id(a / "records.jsonl")
    assert (b / "llava.json").read_bytes() == (a / "llava.json").read_bytes()
    assert _sorted_rejects(b / "rejects.jsonl") == _sorted_rejects(a / "rejects.jsonl")
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    for key in ("counts", "rounds", "operators", "tokens", "thresholds"):
        assert mb[key] == ma[key], key
    other = ("out", "base_url")  # another folder, another test server
    assert {k: v for k, v in mb["config"].items() if k not in other} == \
        {k: v for k, v in ma["config"].items() if k not in other}


def test_evolve_on_ray_equals_one_process(cluster, seeds, one_process, tmp_path):
    base, base_stats = one_process
    out = tmp_path / "run"
    result, stats = _evolve(seeds, out, ray=cluster.address, ray_shards=SHARDS)
    assert result.complete and result.status == "complete"
    _same_outputs(base, out)
    # every request once, as from one process
    assert stats["requests"] == base_stats["requests"]
    # the merged journal is in input order; every record sits in the shard its id hashes to
    records = read_jsonl(out / "records.jsonl")
    assert [r["meta"]["index"] for r in records] == sorted(r["meta"]["index"] for r in records)
    for k, d in enumerate(shard_dirs(RunDir(out), SHARDS)):
        for r in read_jsonl(d.records):
            assert shard_of(r["id"], SHARDS) == k
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ray"] == {"shards": SHARDS} and manifest["status"] == "complete"
    assert manifest["counts"]["records_rejected"] == 3  # the repeated id, the broken line, no items

    # a rerun of the same command resumes: nothing is asked again, the outputs stay
    again, again_stats = _evolve(seeds, out, ray=cluster.address)
    assert again.complete
    assert again_stats["requests"] == 0
    _same_outputs(base, out)
    # without --ray the folder is refused: its journals and caches are in the shards
    with pytest.raises(evol.EvolError, match="resume it with --ray"):
        _evolve(seeds, out)


def test_killed_worker_reruns_its_shard(cluster, seeds, one_process, tmp_path):
    base, base_stats = one_process
    out = tmp_path / "run"
    shard = shard_dirs(RunDir(out), SHARDS)[shard_of("s7", SHARDS)]
    killed: list[int] = []

    def kill_mid_run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            lock, records = shard.root / ".lock", shard.records
            if lock.exists() and records.exists() and records.read_text().count("\n") >= 1:
                pid = int(lock.read_text() or 0)
                if pid and pid != os.getpid():
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    assert b"ray::" in cmdline, cmdline  # a Ray worker, running the shard
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_mid_run, daemon=True)
    watcher.start()
    result, stats = _evolve(seeds, out, ray=cluster.address, ray_shards=SHARDS)
    watcher.join()
    assert killed, "the shard's worker was never seen running"
    assert result.complete
    _same_outputs(base, out)  # no record lost, none twice
    # Ray ran the shard again, which resumed: its killed invocation is on record
    invocations = json.loads(shard.manifest.read_text())["invocations"]
    assert [i["status"] for i in invocations] == ["killed", "complete"]
    assert invocations[1]["records_resumed"] >= 1
    # extra requests: at most those in flight when the worker died
    extra = stats["requests"] - base_stats["requests"]
    assert 0 <= extra <= CONCURRENCY
    top = json.loads((out / "manifest.json").read_text())["invocations"][-1]
    assert top["killed"] == 1 and top["shard_invocations"] == len([n for n in _shard_sizes(out) if n]) + 1


def _shard_sizes(out: Path) -> list[int]:
    return [len(read_jsonl(d.root / "keys.jsonl")) for d in shard_dirs(RunDir(out), SHARDS)]


def test_seed_provision_on_ray_is_byte_identical(cluster, tmp_path):
    common = dict(annotations=str(shipped("scene_graphs")), image_root=str(shipped()), images=[2], seed=3)
    one = evol.seed.provision(tmp_path / "one.jsonl", **common)
    on_ray = evol.seed.provision(tmp_path / "ray.jsonl", ray=cluster.address, workers=2, **common)
    assert one.records > 50 and on_ray.records == one.records
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "ray.rejects.jsonl").read_bytes() == (tmp_path / "one.rejects.jsonl").read_bytes()


def test_analyze_on_ray_is_identical(cluster, seeds, one_process, tmp_path):
    base, _ = one_process
    inputs = [str(seeds), str(base)]
    one = evol.analyze(inputs, tmp_path / "one")
    on_ray = evol.analyze(inputs, tmp_path / "ray", ray=cluster.address)  # an actor per CPU: 2
    assert one["items"] == on_ray["items"] > 50
    for name in OUTPUT_FILES:
        a, b = (tmp_path / d / name for d in ("one", "ray"))
        if name == "analysis.json":  # when it was made and how long it took differ
            drop = ("created", "wall_s", "items_per_s")
            a, b = ({k: v for k, v in json.loads(p.read_text()).items() if k not in drop} for p in (a, b))
            assert a == b
        else:
            assert b.read_bytes() == a.read_bytes(), name


def test_a_server_that_is_down_is_said_as_in_one_process(cluster, seeds, tmp_path):
    import socket

    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    settings = {**_settings(seeds, url), "timeout": 2, "max_attempts": 1}
    with pytest.raises(evol.EvolError) as one:
        evol.evolve(seeds, tmp_path / "one", **settings)
    with pytest.raises(evol.EvolError) as on_ray:
        evol.evolve(seeds, tmp_path / "ray", ray=cluster.address, ray_shards=2, **settings)
    assert str(on_ray.value).startswith("shard 00")
    assert str(one.value) in str(on_ray.value)


def test_a_shard_task_asks_for_a_gpu_only_when_its_backend_loads_a_model_on_one():
    """With --backend vllm (or hf on cuda) Ray must place one shard per GPU; an HTTP backend
    asks for none. (No GPU here: the engine itself is tested in tests/test_vllm_backend.py.)"""
    from evol.config import EvolveConfig
    from evol.distributed.evolve import task_options

    def options(**kw):
        return task_options(EvolveConfig(input="in.jsonl", out="run", **kw))

    assert options(backend="vllm", model="/models/m")["num_gpus"] == 1
    assert options(backend="hf", model="/models/m", device="cuda:1")["num_gpus"] == 1
    assert "num_gpus" not in options(backend="hf", model="/models/m", device="cpu")
    assert "num_gpus" not in options(backend="openai", model="m", base_url="http://127.0.0.1:1/v1")
    assert options(backend="openai", model="m")["max_retries"] == 3
