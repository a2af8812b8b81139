"""The request cache: keys, hits, shared in-flight calls, durability."""
from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage

from evol.backends.base import Backend, BackendError, Image, Message, Reply, Request, Sampling, Text
from evol.cache import Cache, CachedBackend, request_key
from evol.images import ImageStore


class FakeBackend:
    model = "fake-model"

    def __init__(self, delay: float = 0.0, fail_first: int = 0):
        self.calls: list[Request] = []
        self.delay, self.fail_first = delay, fail_first
        self.closed = False

    async def complete(self, request: Request) -> Reply:
        self.calls.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if len(self.calls) <= self.fail_first:
            raise BackendError("boom")
        return Reply(text='{"n": %d}' % len(self.calls), data={"n": len(self.calls)},
                     tokens_in=10, tokens_out=5, finish_reason="stop")

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture()
def images(tmp_path: Path) -> ImageStore:
    root = tmp_path / "img"
    root.mkdir()
    PILImage.new("RGB", (8, 8), (1, 2, 3)).save(root / "x.png")
    return ImageStore(root)


def make_request(**kw) -> Request:
    base = dict(
        messages=(Message("system", (Text("be precise"),)),
                  Message("user", (Text("what is shown?"), Image("x.png")))),
        schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        template="evolve@v1",
        tag="rec1/r1/evolve",
    )
    base.update(kw)
    return Request(**base)


async def test_hit_avoids_the_inner_call(tmp_path: Path, images: ImageStore):
    inner = FakeBackend()
    backend = CachedBackend(inner, Cache(tmp_path / "c.sqlite"), images)
    assert isinstance(backend, Backend) and backend.model == "fake-model"
    first = await backend.complete(make_request())
    second = await backend.complete(make_request())
    assert len(inner.calls) == 1
    assert not first.cached and second.cached
    assert second.data == first.data and second.tokens_in == 10 and second.finish_reason == "stop"
    assert (backend.stats.cached, backend.stats.calls) == (1, 1)


def test_key_covers_what_shapes_the_answer(tmp_path: Path, images: ImageStore):
    req = make_request()
    key = request_key(req, "m", images)
    assert key == request_key(make_request(), "m", images)  # stable
    assert request_key(dataclasses.replace(req, tag="other/tag"), "m", images) == key
    changed = [
        request_key(req, "m2", images),
        request_key(dataclasses.replace(req, sampling=Sampling(temperature=0.1)), "m", images),
        request_key(dataclasses.replace(req, sampling=Sampling(seed=3)), "m", images),
        request_key(dataclasses.replace(req, schema=None), "m", images),
        request_key(dataclasses.replace(req, schema_name="other"), "m", images),
        request_key(dataclasses.replace(req, template="evolve@v2"), "m", images),
        request_key(make_request(messages=(Message.text("user", "what is shown?"),)), "m", images),
        request_key(req, "m", ImageStore(images.root, max_side=512)),
        request_key(req, "m", images, {"detail": "low"}),
    ]
    text_only = make_request(messages=(Message.text("user", "what is shown?"),))
    assert request_key(text_only, "m", images, {"detail": "low"}) == request_key(text_only, "m", images)
    assert key not in changed and len(set(changed)) == len(changed)
    # same path, new pixels -> new key
    PILImage.new("RGB", (9, 8), (9, 9, 9)).save(images.root / "x.png")
    assert request_key(req, "m", images) != key


async def test_concurrent_identical_requests_share_one_call(tmp_path: Path, images: ImageStore):
    inner = FakeBackend(delay=0.05)
    backend = CachedBackend(inner, Cache(tmp_path / "c.sqlite"), images)
    replies = await asyncio.gather(*[backend.complete(make_request(tag=f"t{i}")) for i in range(5)])
    assert len(inner.calls) == 1
    assert {r.data["n"] for r in replies} == {1}
    assert sum(not r.cached for r in replies) == 1  # only one reply spent tokens
    assert (backend.stats.calls, backend.stats.cached, backend.stats.shared) == (1, 4, 4)


async def test_failures_are_not_cached(tmp_path: Path, images: ImageStore):
    inner = FakeBackend(fail_first=1)
    cache = Cache(tmp_path / "c.sqlite")
    backend = CachedBackend(inner, cache, images)
    with pytest.raises(BackendError, match="boom"):
        await backend.complete(make_request())
    assert len(cache) == 0
    reply = await backend.complete(make_request())
    assert reply.data == {"n": 2} and len(inner.calls) == 2 and len(cache) == 1


async def test_cancelling_the_only_caller_cancels_the_call(tmp_path: Path, images: ImageStore):
    inner = FakeBackend(delay=600)  # never ends by itself: only cancelling ends it
    backend = CachedBackend(inner, Cache(tmp_path / "c.sqlite"), images)
    one = asyncio.ensure_future(backend.complete(make_request()))
    two = asyncio.ensure_future(backend.complete(make_request()))
    await asyncio.sleep(0.01)
    one.cancel()
    await asyncio.sleep(0.01)
    assert backend._flights, "the other caller still waits on the call"
    two.cancel()
    await asyncio.gather(one, two, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert not backend._flights


async def test_survives_reopen(tmp_path: Path, images: ImageStore):
    path = tmp_path / "c.sqlite"
    cache = Cache(path)
    await CachedBackend(FakeBackend(), cache, images).complete(make_request())
    cache.close()
    inner = FakeBackend()
    backend = CachedBackend(inner, Cache(path), images)
    reply = await backend.complete(make_request())
    assert reply.cached and reply.data == {"n": 1} and inner.calls == []


def test_put_is_committed_at_once_even_if_killed(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    code = (
        "import os, signal, sys\n"
        "from evol.cache import Cache\n"
        "c = Cache(sys.argv[1])\n"
        "c.put('k1', '{\"text\": \"hi\"}')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)],
                          cwd=Path(__file__).resolve().parents[1], timeout=30)
    assert proc.returncode == -9
    assert Cache(path).get("k1") == '{"text": "hi"}'


def test_schema_of_the_table(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    Cache(path).put("k", "{}")
    db = sqlite3.connect(path)
    cols = [(r[1], r[2]) for r in db.execute("PRAGMA table_info(replies)")]
    assert cols == [("key", "TEXT"), ("reply", "TEXT"), ("created", "REAL")]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_writes_are_cheap_enough_for_the_event_loop(tmp_path: Path):
    cache = Cache(tmp_path / "c.sqlite")
    # what keeps a commit cheap: a WAL append without fsync (timings belong in bench/)
    assert cache._conn().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert cache._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reply = Reply(text="x" * 2000, data={"items": ["y" * 100] * 10}).to_json()
    n = 500
    t0 = time.perf_counter()
    for i in range(n):
        cache.put(f"key{i}", reply)
    per_write = (time.perf_counter() - t0) / n
    # loose, for a busy machine (~50 us measured): 150 writes/s must not take the whole loop
    assert per_write * 150 < 1.0, f"{per_write * 1e6:.0f} us per write"


async def test_image_errors_become_backend_errors(tmp_path: Path, images: ImageStore):
    backend = CachedBackend(FakeBackend(), Cache(tmp_path / "c.sqlite"), images)
    with pytest.raises(BackendError, match="image not found: gone.png"):
        await backend.complete(make_request(messages=(Message("user", (Image("gone.png"),)),)))
    await backend.aclose()
    assert backend.inner.closed
