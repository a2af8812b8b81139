"""Shared test helpers: seed files with real images, the CLI as a subprocess, the test server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evol.testing.server import ServerConfig, start_in_thread

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"
FAKE_KEY = "sk-evol-test-DO-NOT-LEAK-4242"


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "evol.cli", *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO,
    )


def popen_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "evol.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )


def copy_samples(folder: Path) -> Path:
    """A private copy of the shipped scene graphs (stage files, seg_masks/, depth_masks/) to break."""
    shutil.copytree(SEEDS / "scene_graphs", folder, ignore=shutil.ignore_patterns("*.py", "*.md"))
    return folder


def edit_stage(folder: Path, stage: str, change) -> None:
    """Apply `change` to the parsed stage file `folder/<stage>.json` and write it back."""
    path = folder / f"{stage}.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_llava_seeds(folder: Path, n: int, images: tuple[str, ...] = ("coffee.jpg", "chelsea.jpg")) -> Path:
    """n LLaVA records, each with one or two real photos copied into `folder/images`."""
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for name in images:
        shutil.copy(SEEDS / name, img_dir / name)
    path = folder / "seeds.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            imgs = [images[i % len(images)]] if i % 5 else list(images)
            f.write(json.dumps({
                "id": f"s{i}",
                "image": imgs[0] if len(imgs) == 1 else imgs,
                "conversations": [
                    {"from": "human", "value": "<image>\n" * len(imgs) + f"What is shown in picture {i}?"},
                    {"from": "gpt", "value": f"A scene with an object numbered {i}."},
                    {"from": "human", "value": "What colour dominates?"},
                    {"from": "gpt", "value": "Warm reds and browns."},
                ],
            }) + "\n")
    return path


@pytest.fixture
def server_factory():
    servers = []

    def make(**kw):
        srv = start_in_thread(ServerConfig(**kw))
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def server(server_factory):
    return server_factory()


def evolve_args(seeds: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "evolve", str(seeds), "--out", str(out), "--model", "test-vlm", "--base-url", url,
        "--image-root", str(seeds.parent / "images"), "--concurrency", "16", "--timeout", "5", *extra,
    ]


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A tiny LLaVA (random weights, real processor and chat template) saved once per session."""
    from tiny_vlm import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def smollm2_engine():
    """The embedded SmolLM2-135M-Instruct loaded once per session (about 10-20 s on 2 cores)."""
    from evol.backends.hf import HFEngine
    from evol.backends.local import embedded_model
    from evol.images import ImageStore

    return HFEngine(embedded_model(), images=ImageStore(SEEDS), max_new_tokens=256)
