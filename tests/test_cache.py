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
from evol.cache import KEY_VERSION, Cache, CachedBackend, canonical_json, request_key
from evol.backends.base import RunStopped
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


def reference_key(request: Request, model: str, images: ImageStore, image_options=None) -> str:
    """What a key is, written the plain way (json.dumps of the whole canonical dict):
    `request_key` builds the same bytes piece by piece, so caches made before still hit."""
    import hashlib

    messages, has_images = [], False
    for msg in request.messages:
        parts = []
        for part in msg.parts:
            if isinstance(part, Text):
                parts.append(["text", part.text])
            else:
                parts.append(["image", images.content_hash(part.ref)])
                has_images = True
        messages.append([msg.role, parts])
    canon = {"v": KEY_VERSION, "model": model, "sampling": dataclasses.asdict(request.sampling),
             "messages": messages, "schema": request.schema, "schema_name": request.schema_name,
             "template": request.template}
    if has_images:
        canon["max_side"] = images.max_side
        if image_options:
            canon["image_options"] = image_options
    return hashlib.sha256(canonical_json(canon).encode("utf-8")).hexdigest()


def test_key_is_the_canonical_json_byte_for_byte(images: ImageStore):
    odd = "caf\u00e9 \"q\" \\ \n\t\x00\x1f \u2028 \U0001F600 \x7f \u017f"
    schema = {"b": [1, 2.5, None, True], "a": {"z": odd, "y": 1e-7, "x": 10**20}}
    requests = [
        make_request(),
        make_request(schema=None),
        make_request(schema=schema, schema_name=odd, template=odd),
        make_request(messages=(Message.text("system", odd), Message("user", (Image("x.png"), Text(odd))))),
        make_request(sampling=Sampling(temperature=1e-5, top_p=0.95, max_tokens=7, seed=2**40)),
        make_request(sampling=Sampling(temperature=1e17, top_p=1, seed=None)),
    ]
    for req in requests:
        for model, options in (("m", None), (odd, {"detail": "low"}), ("m", {"detail": "high", "z": [1.5]})):
            for _ in range(2):  # the second time the schema's dump is remembered
                assert request_key(req, model, images, options) == reference_key(req, model, images, options)
    # a key made before this was written (json.dumps of the whole canon) is still the key
    assert request_key(make_request(), "m", images) == reference_key(make_request(), "m", images)
    lone = make_request(messages=(Message.text("user", "\ud800"),))
    with pytest.raises(UnicodeEncodeError):
        request_key(lone, "m", images)


async def test_puts_of_one_loop_pass_share_a_commit(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    cache = Cache(path)
    other = sqlite3.connect(path)
    count = lambda: other.execute("SELECT COUNT(*) FROM replies").fetchone()[0]  # noqa: E731
    for i in range(3):
        cache.put(f"k{i}", "{}")
    assert cache.get("k2") == "{}"  # this connection sees them at once
    assert count() == 0  # others: once committed, before the loop waits again
    await asyncio.sleep(0)
    assert count() == 3
    cache.put("k3", "{}")
    cache.delete("k0")
    cache.close()  # commits what is open
    assert count() == 3 and Cache(path).get("k3") == "{}" and Cache(path).get("k0") is None
    other.close()


async def test_a_failed_deferred_commit_stops_the_next_write(tmp_path: Path):
    cache = Cache(tmp_path / "c.sqlite")
    real = cache._db

    class Failing:
        in_transaction = property(lambda self: real.in_transaction)

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)

        def close(self):
            real.close()

    cache._db = Failing()
    cache.put("k", "{}")
    await asyncio.sleep(0)
    with pytest.raises(RunStopped, match="c.sqlite"):
        cache.put("k2", "{}")
    assert cache.get("k") is None  # rolled back: a rerun asks again
    cache.close()


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
