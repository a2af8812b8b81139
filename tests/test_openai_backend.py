"""The OpenAI backend over real HTTP on 127.0.0.1, plus its helpers (JSON repair, limits)."""
from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import socket
import time
import types
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image as PILImage

from evol.backends import limits as limits_mod
from evol.backends.base import (Backend, BackendError, Image, Message, ReplyParseError, Request,
                                Sampling, Text)
from evol.backends.jsonfix import extract_json, schema_instruction, strip_trailing_commas
from evol.backends.limits import Limiter, RetryableError, retry_policy
from evol.backends.openai import OpenAIBackend
from evol.images import ImageStore
from evol.testing.server import ServerConfig, start_in_thread

SECRET = "sk-evoltest-DO-NOT-LEAK-7f3a9c21e4b8"
KEY_ENV = "EVOL_TEST_API_KEY"
SCHEMA = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "question": {"type": "string"}, "answer": {"type": "string"}}}},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["items", "score"],
}


# ------------------------------------------------------------------------- jsonfix

@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('  [1, 2]\n', [1, 2]),
    ('Sure!\n```json\n{"a": [1, 2]}\n```\nBye', {"a": [1, 2]}),
    ('```\n{"a": 2}\n```', {"a": 2}),
    ('```python\nx = {1}\n```\n```json\n{"a": 3}\n```', {"a": 3}),
    ('Here you go: {"a": "has } and { and \\" inside", "b": [1]} hope it helps', {"a": 'has } and { and " inside', "b": [1]}),
    ('See [note] then {"a": 4}', {"a": 4}),
    ('{"a": [1, 2, ], "b": {"c": 1,},}', {"a": [1, 2], "b": {"c": 1}}),
    ('prose first {"a": "x,}", "b": 2,} after', {"a": "x,}", "b": 2}),
])
def test_extract_json_tolerates_wrappers(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", [
    "", "   ", "I could not produce the requested structure, sorry.",
    '{"items": [{"question": "unterminated', "```json\nnot json\n```",
])
def test_extract_json_raises_with_an_excerpt(text):
    with pytest.raises(ReplyParseError) as info:
        extract_json(text)
    assert len(str(info.value)) < 200
    if text.strip():
        assert " ".join(text.split())[:10] in str(info.value)


def test_trailing_commas_inside_strings_are_kept():
    assert strip_trailing_commas('{"a": ",]", "b": [1,],}') == '{"a": ",]", "b": [1]}'


def test_schema_instruction_carries_the_compact_schema():
    text = schema_instruction(SCHEMA)
    marker = "follows this JSON schema:"
    assert marker in text
    rest = text[text.index(marker) + len(marker):].lstrip()
    parsed, _ = json.JSONDecoder().raw_decode(rest)
    assert parsed == SCHEMA and json.dumps(SCHEMA, separators=(",", ":")) in text


# -------------------------------------------------------------------------- limits

async def test_concurrency_is_never_exceeded():
    limiter, peak, now = Limiter(3), [0], [0]

    async def call():
        async with limiter.slot(10):
            now[0] += 1
            peak[0] = max(peak[0], now[0])
            await asyncio.sleep(0.01)
            now[0] -= 1

    await asyncio.gather(*[call() for _ in range(20)])
    assert peak[0] == 3 and limiter.in_flight == 0


class VirtualClock:
    """Stands in for the clock and `asyncio.sleep` of evol.backends.limits: time moves only
    when every task sleeps, straight to the next wake-up, so the limiter's schedule is
    checked exactly and no test depends on how busy the machine is."""

    def __init__(self, monkeypatch):
        self.now, self._sleepers, self._seq = 0.0, [], itertools.count()
        monkeypatch.setattr(limits_mod, "time", types.SimpleNamespace(
            **{**vars(time), "monotonic": lambda: self.now}))
        monkeypatch.setattr(limits_mod, "asyncio", types.SimpleNamespace(
            **{**vars(asyncio), "sleep": self.sleep}))

    async def sleep(self, seconds):
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), wake))
        await wake

    async def run(self, *coros):
        """Run the coroutines to the end; returns their results."""
        everything = asyncio.ensure_future(asyncio.gather(*coros))
        while True:
            for _ in range(50):  # no I/O here: a few loop turns bring every task to a sleep
                await asyncio.sleep(0)
            if everything.done():
                return everything.result()
            assert self._sleepers, "no task can run and none sleeps"
            self.now, _, wake = heapq.heappop(self._sleepers)
            wake.set_result(None)


async def test_rpm_is_roughly_honoured(monkeypatch):
    clock = VirtualClock(monkeypatch)
    limiter = Limiter(100, rpm=1200)  # 20/s, about one second of burst
    starts = []

    async def call():
        async with limiter.slot(1):
            starts.append(clock.now)

    await clock.run(*[call() for _ in range(30)])
    # the burst of 20 at once, no more; the other 10 at 20/s
    assert sorted(starts) == pytest.approx([0.0] * 20 + [k / 20 for k in range(1, 11)])


async def test_tpm_is_roughly_honoured(monkeypatch):
    clock = VirtualClock(monkeypatch)
    limiter = Limiter(100, tpm=60_000)  # 1000 tokens/s, about one second of burst
    starts = []

    async def call():
        async with limiter.slot(250):
            starts.append(clock.now)

    await clock.run(*[call() for _ in range(6)])
    assert sorted(starts) == pytest.approx([0.0] * 4 + [0.25, 0.5])


async def test_cool_down_delays_new_calls(monkeypatch):
    clock = VirtualClock(monkeypatch)
    limiter = Limiter(4, default_cool_down=0.2)

    async def call():
        t0 = clock.now
        async with limiter.slot(1):
            return clock.now - t0

    limiter.cool_down()  # default
    assert await clock.run(call()) == [pytest.approx(0.2)]
    limiter.cool_down(0.1)

    async def extend():
        await clock.sleep(0.05)
        limiter.cool_down(0.25)  # extended while a call waits

    waited, _ = await clock.run(call(), extend())
    assert waited == pytest.approx(0.3)


async def test_unlimited_hot_path_never_sleeps(monkeypatch):
    sleeps = []
    real_sleep = asyncio.sleep
    monkeypatch.setattr(limits_mod.asyncio, "sleep", lambda s, *a: sleeps.append(s) or real_sleep(s, *a))
    limiter = Limiter(8, rpm=6_000_000, tpm=6_000_000_000)
    t0 = time.perf_counter()
    for _ in range(2000):
        async with limiter.slot(500):
            pass
    assert sleeps == []
    assert (time.perf_counter() - t0) / 2000 < 200e-6


async def test_retry_policy_retries_only_retryable_errors():
    calls = []

    async def run(exc_for_call):
        calls.clear()
        async for attempt in retry_policy(4, base=0.001, cap=0.005):
            with attempt:
                calls.append(1)
                exc = exc_for_call(len(calls))
                if exc:
                    raise exc
                return "ok"

    assert await run(lambda n: RetryableError("again") if n < 3 else None) == "ok" and len(calls) == 3
    with pytest.raises(BackendError, match="final"):
        await run(lambda n: BackendError("final"))
    assert len(calls) == 1
    with pytest.raises(RetryableError, match="try 4"):
        await run(lambda n: RetryableError(f"try {n}"))
    assert len(calls) == 4


# ------------------------------------------------------------------------ backend

@pytest.fixture()
def root(tmp_path: Path) -> Path:
    PILImage.new("RGB", (300, 150), (10, 120, 200)).save(tmp_path / "pic.png")
    return tmp_path


@pytest.fixture()
def make(root: Path, monkeypatch):
    """Builds backends with fast test timings; each test closes its own in `finally`."""
    monkeypatch.setenv(KEY_ENV, SECRET)

    def factory(url: str, **kw) -> OpenAIBackend:
        opts = dict(images=ImageStore(root, max_side=128), api_key_env=KEY_ENV,
                    limiter=Limiter(kw.pop("concurrency", 4), default_cool_down=0.01),
                    max_attempts=4, backoff_base=0.005, backoff_cap=0.02, timeout=10.0)
        opts.update(kw)
        return OpenAIBackend("mock-vlm", url, **opts)

    return factory


@pytest.fixture(scope="module")
def server():
    srv = start_in_thread(ServerConfig())
    yield srv
    srv.stop()


@asynccontextmanager
async def stub(handler):
    """A tiny chat-completions endpoint of our own, for replies the test server never gives."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def completion(content: str) -> web.Response:
    return web.json_response({
        "id": "x", "object": "chat.completion", "created": 0, "model": "mock-vlm",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    })


def request(tag="rec1/r1/evolve", schema=SCHEMA, system=True, images=()) -> Request:
    user = Message("user", (Text("Ask a harder question about the picture."),
                            *(Image(ref) for ref in images)))
    msgs = ((Message.text("system", "You evolve questions."),) if system else ()) + (user,)
    return Request(messages=msgs, schema=schema, sampling=Sampling(max_tokens=256), tag=tag)


async def test_schema_answer_is_parsed(server, make):
    backend = make(server.url, image_detail="low")
    assert isinstance(backend, Backend)
    try:
        reply = await backend.complete(request(images=("pic.png", "https://example.org/a.jpg")))
    finally:
        await backend.aclose()
    assert isinstance(reply.data, dict) and set(reply.data) == {"items", "score"}
    assert 1 <= reply.data["score"] <= 5 and json.loads(reply.text) == reply.data
    assert reply.finish_reason == "stop" and not reply.cached
    assert reply.tokens_in >= 2 * 85  # the server counts 85 per image part
    assert reply.tokens_out > 0
    st = backend.stats
    assert st.sent.requests == 1 and st.sent.tokens_in == st.tokens_in == reply.tokens_in and st.calls == 1


async def test_payload_shape(root, make):
    bodies = []

    async def handler(req):
        bodies.append(await req.json())
        return completion('{"items": [], "score": 3}')

    async with stub(handler) as url:
        backend = make(url, image_detail="low")
        try:
            await backend.complete(request(images=("pic.png", "https://example.org/a.jpg")))
            await backend.complete(Request((Message.text("user", "hi"),),
                                           sampling=Sampling(temperature=0.2, seed=7)))
        finally:
            await backend.aclose()
    first, second = bodies
    assert first["model"] == "mock-vlm" and first["max_tokens"] == 256 and "seed" not in first
    assert first["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": SCHEMA, "strict": False}}
    assert first["messages"][0] == {"role": "system", "content": "You evolve questions."}
    parts = first["messages"][1]["content"]
    assert parts[0]["type"] == "text"
    assert parts[1]["image_url"]["url"].startswith("data:image/") and parts[1]["image_url"]["detail"] == "low"
    assert parts[2]["image_url"] == {"url": "https://example.org/a.jpg", "detail": "low"}
    assert second["seed"] == 7 and second["temperature"] == 0.2 and "response_format" not in second


@pytest.mark.parametrize("system", [True, False])
async def test_no_schema_server_triggers_one_fallback(make, caplog, system):
    caplog.set_level(logging.WARNING, logger="evol.backends.openai")
    srv = start_in_thread(ServerConfig(no_schema=True))
    backend = make(srv.url, concurrency=1)
    try:
        replies = [await backend.complete(request(tag=f"t{i}", system=system)) for i in range(3)]
    finally:
        await backend.aclose()
        srv.stop()
    assert all(isinstance(r.data, dict) and "items" in r.data for r in replies)
    # auto steps down one dialect: json_object with the schema (the full chain down to the
    # prompt is in test_dialects.py)
    assert json.loads(replies[0].text) == replies[0].data
    assert backend.dialect == "json_object" and srv.stats()["status"].get("400") == 1
    # the refused requests were resent at once: none was an attempt of its own
    retried = backend.stats.outcomes.count("retried")
    assert backend.stats.sent.requests == 4 and retried == backend.stats.outcomes.count("retried", "refused") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "json_schema" in warnings[0].getMessage()


async def test_injected_faults_are_all_recovered(make):
    srv = start_in_thread(ServerConfig(fail_429=0.1, fail_500=0.1, garbled=0.1, seed=5))
    backend = make(srv.url, max_attempts=10)
    n = 40
    try:
        replies = await asyncio.gather(*[backend.complete(request(tag=f"r{i}")) for i in range(n)])
    finally:
        await backend.aclose()
        srv.stop()
    assert all(isinstance(r.data, dict) for r in replies)
    st, server_stats = backend.stats, srv.stats()
    retried = st.outcomes.count("retried")
    assert all(st.outcomes.count("retried", kind) > 0 for kind in ("429", "5xx", "parse"))
    assert retried == sum(st.outcomes.count("retried", kind) for kind in ("429", "5xx", "parse"))
    assert st.sent.requests == server_stats["requests"] == n + retried <= n * 10
    assert st.outcomes.count("failed") == 0 and st.outcomes.count("ok") == st.calls == n


async def test_timeout_is_retried(make):
    # with seed 1 the fault rng's first draw is a hang, the second is not
    srv = start_in_thread(ServerConfig(fail_timeout=0.5, hang_seconds=600, seed=1))
    backend = make(srv.url, timeout=1.0)
    t0 = time.monotonic()
    try:
        reply = await backend.complete(request())
    finally:
        await backend.aclose()
        srv.stop()
    assert isinstance(reply.data, dict)
    assert backend.stats.outcomes.count(kind="timeout") >= 1 and srv.stats()["timeouts"] >= 1
    assert time.monotonic() - t0 < 60  # loose: the hang is 600 s, so the hung call was given up


async def test_other_400_is_not_retried_and_hides_the_key(make, caplog):
    caplog.set_level(logging.DEBUG)
    hits = []

    async def handler(req):
        hits.append(1)  # a careless server that echoes the credentials back
        msg = f"max_tokens too large for this model (auth was {req.headers.get('Authorization')})"
        return web.json_response({"error": {"message": msg, "type": "invalid_request_error"}},
                                 status=400)

    async with stub(handler) as url:
        backend = make(url)
        try:
            with pytest.raises(BackendError) as info:
                await backend.complete(request(tag="rec9/r2/judge"))
        finally:
            await backend.aclose()
    text = str(info.value)
    assert hits == [1] and backend.stats.outcomes.count("retried") == 0
    assert backend.stats.outcomes.count("failed", "4xx") == backend.stats.failed == 1
    assert "400" in text and "max_tokens too large" in text and "rec9/r2/judge" in text
    assert SECRET not in text and SECRET not in repr(info.value)
    assert info.value.__cause__ is None
    assert SECRET not in caplog.text


async def test_429_retry_after_cools_the_shared_limiter(make):
    calls = []

    async def handler(req):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.json_response({"error": {"message": "slow down"}}, status=429,
                                     headers={"Retry-After": "0.3"})
        return completion('{"items": [], "score": 2}')

    async with stub(handler) as url:
        backend = make(url)
        try:
            reply = await backend.complete(request())
        finally:
            await backend.aclose()
    assert reply.data == {"items": [], "score": 2}
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.28
    assert backend.stats.outcomes.count(kind="429") == 1


async def test_garbage_forever_raises_parse_error_naming_the_tag(make):
    srv = start_in_thread(ServerConfig(garbled=1.0))
    backend = make(srv.url, max_attempts=3)
    try:
        with pytest.raises(ReplyParseError, match="rec5/r1/evolve") as info:
            await backend.complete(request(tag="rec5/r1/evolve"))
    finally:
        await backend.aclose()
        srv.stop()
    assert "3 attempt" in str(info.value)
    assert backend.stats.sent.requests == 3 == srv.stats()["requests"]


async def test_5xx_forever_gives_up_after_max_attempts(make):
    srv = start_in_thread(ServerConfig(fail_500=1.0))
    backend = make(srv.url, max_attempts=3)
    try:
        with pytest.raises(BackendError, match="HTTP 500") as info:
            await backend.complete(request(tag="rec6"))
    finally:
        await backend.aclose()
        srv.stop()
    assert not isinstance(info.value, ReplyParseError) and "rec6" in str(info.value)
    assert srv.stats()["requests"] == 3


async def test_connection_errors_are_retried_then_reported(make, caplog):
    caplog.set_level(logging.DEBUG)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    backend = make(f"http://127.0.0.1:{port}/v1", max_attempts=2)
    try:
        with pytest.raises(BackendError, match="cannot connect to") as info:
            await backend.complete(request())
    finally:
        await backend.aclose()
    assert backend.stats.outcomes.count(kind="connection") == 2
    assert SECRET not in str(info.value) and SECRET not in caplog.text


async def test_key_never_logged_across_faults_and_fallback(make, caplog):
    caplog.set_level(logging.DEBUG)
    srv = start_in_thread(ServerConfig(no_schema=True, fail_429=0.2, fail_500=0.2, seed=2))
    backend = make(srv.url, max_attempts=10)
    try:
        await asyncio.gather(*[backend.complete(request(tag=f"k{i}")) for i in range(8)])
    finally:
        await backend.aclose()
        srv.stop()
    assert caplog.text and SECRET not in caplog.text


async def test_missing_image_is_a_backend_error_without_a_call(server, make):
    backend = make(server.url)
    before = server.stats()["requests"]
    try:
        with pytest.raises(BackendError, match="image not found: nope.png"):
            await backend.complete(request(images=("nope.png",)))
    finally:
        await backend.aclose()
    assert server.stats()["requests"] == before and backend.stats.sent.requests == 0


def test_the_environment_proxy_is_settled_once_per_server(monkeypatch):
    """Chat calls go over aiohttp without trust_env (it looked the proxy up on every
    request): the proxy the environment names is found once per server, NO_PROXY honoured."""
    from evol.backends.openai import _proxy_for

    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert _proxy_for("http://gpu1:8000/v1/chat/completions") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert _proxy_for("http://gpu1:8000/v1/chat/completions") == "http://proxy.internal:3128"
    assert _proxy_for("http://127.0.0.1:8000/v1/chat/completions") is None
    assert _proxy_for("https://api.example.com/v1/chat/completions") is None  # no HTTPS_PROXY set
