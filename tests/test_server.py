"""Tests for the mock OpenAI-compatible server, over real HTTP on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import aiohttp
import openai
import pytest

from evol.testing import server as server_mod
from evol.testing.server import ServerConfig, start_in_thread

SCHEMA = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "minItems": 2, "maxItems": 4, "items": {"$ref": "#/$defs/item"}},
        "kind": {"type": "string", "enum": ["count", "color", "position"]},
        "score": {"type": "integer", "minimum": 3, "maximum": 5},
        "ratio": {"type": ["null", "number"], "minimum": 0, "maximum": 1},
        "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        "version": {"const": 2},
    },
    "required": ["items", "kind", "score", "ratio", "note", "version"],
    "$defs": {
        "item": {
            "type": "object",
            "properties": {
                "question": {"type": "string"},
                "improved": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["question", "improved", "tags"],
        }
    },
}


def check(value, schema, root=SCHEMA):
    """A tiny validator for the schema features SCHEMA uses."""
    if "$ref" in schema:
        return check(value, root["$defs"][schema["$ref"].split("/")[-1]], root)
    if "const" in schema:
        assert value == schema["const"]
        return
    if "enum" in schema:
        assert value in schema["enum"]
        return
    if "anyOf" in schema:
        assert isinstance(value, str) and value  # the generator picks the first non-null
        return
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[1]
    if kind == "object":
        assert isinstance(value, dict)
        assert set(schema["required"]) <= set(value)
        for key, sub in schema["properties"].items():
            check(value[key], sub, root)
    elif kind == "array":
        assert isinstance(value, list)
        assert schema.get("minItems", 1) <= len(value) <= schema.get("maxItems", 3)
        for item in value:
            check(item, schema["items"], root)
    elif kind == "string":
        assert isinstance(value, str) and len(value.split()) >= 8
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
        assert schema["minimum"] <= value <= schema["maximum"]
    elif kind == "number":
        assert isinstance(value, (int, float)) and schema["minimum"] <= value <= schema["maximum"]
    elif kind == "boolean":
        assert isinstance(value, bool)


def schema_format(schema=SCHEMA):
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def user(text):
    return [{"role": "user", "content": text}]


def client(url, timeout=10.0):
    return openai.AsyncOpenAI(base_url=url, api_key="test", max_retries=0, timeout=timeout)


async def ask(c, messages, response_format=None, model="mock"):
    extra = {"response_format": response_format} if response_format else {}
    resp = await c.chat.completions.create(model=model, messages=messages, **extra)
    return resp.choices[0].message.content


@pytest.fixture(scope="module")
def server():
    srv = start_in_thread(ServerConfig())
    yield srv
    srv.stop()


async def test_schema_answer_is_valid_and_questions_end_with_question_mark(server):
    c = client(server.url)
    for i in range(20):
        doc = json.loads(await ask(c, user(f"image {i}"), schema_format()))
        check(doc, SCHEMA)
        assert all(item["question"].endswith("?") for item in doc["items"])
    await c.close()


async def test_usage_counts_text_and_images(server):
    c = client(server.url)
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "x" * 400},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]}]
    resp = await c.chat.completions.create(model="mock", messages=messages)
    assert resp.usage.prompt_tokens == 100 + 85
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.choices[0].finish_reason == "stop" and resp.model == "mock"
    await c.close()


async def test_content_is_deterministic_per_body(server):
    c = client(server.url)
    first = await ask(c, user("describe the scene"), schema_format())
    again = await ask(c, user("describe the scene"), schema_format())
    other = await ask(c, user("describe the other scene"), schema_format())
    assert first == again
    assert first != other
    plain = {await ask(c, user(f"caption {i}")) for i in range(10)}
    assert len(plain) == 10  # varied sentences for different requests
    await c.close()


async def test_enum_ids_are_spread_over_array_items(server):
    ids = [f"q{i}" for i in range(6)]
    schema = {"type": "object", "properties": {"items": {
        "type": "array", "minItems": 6, "maxItems": 6,
        "items": {"type": "object", "properties": {
            "id": {"type": "string", "enum": ids}, "keep": {"type": "boolean"}}}}}}
    c = client(server.url)
    doc = json.loads(await ask(c, user("judge"), schema_format(schema)))
    assert [item["id"] for item in doc["items"]] == ids
    await c.close()


async def test_improved_rate_is_honoured():
    srv = start_in_thread(ServerConfig(improved_rate=0.0))
    try:
        schema = {"type": "object", "properties": {"improved": {"type": "boolean"}}}
        c = client(srv.url)
        answers = [json.loads(await ask(c, user(f"r{i}"), schema_format(schema))) for i in range(10)]
        assert not any(a["improved"] for a in answers)
        await c.close()
    finally:
        srv.stop()


async def test_fault_rates_are_roughly_honoured():
    # Hangs last far longer than the test: a request still pending once the server has
    # answered every other one is a hang, so no client timeout has to race the server.
    cfg = ServerConfig(fail_429=0.2, fail_500=0.1, fail_timeout=0.1, garbled=0.1,
                       hang_seconds=600.0, seed=7)
    srv = start_in_thread(cfg)
    c = client(srv.url, timeout=120.0)
    gate = asyncio.Semaphore(100)
    outcomes: dict[str, int] = {}

    async def one(i):
        async with gate:
            try:
                content = await ask(c, user(f"fault probe {i}"), schema_format())
                json.loads(content)
                kind = "ok"
            except openai.RateLimitError:
                kind = "429"
            except openai.InternalServerError:
                kind = "500"
            except json.JSONDecodeError:
                kind = "garbled"
            outcomes[kind] = outcomes.get(kind, 0) + 1

    n = 200
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    deadline = time.monotonic() + 120  # only keeps a broken server from hanging the test
    while True:
        stats = srv.stats()
        if sum(outcomes.values()) + stats["timeouts"] == n:
            break  # every request answered or known (server-side) to hang
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise t.exception()
        assert time.monotonic() < deadline, (stats, outcomes)
        await asyncio.sleep(0.01)
    hung = [t for t in tasks if not t.done()]
    # hung requests did not block others: all the rest were answered while they hang
    outcomes["timeout"] = len(hung)
    for t in hung:
        t.cancel()
    await asyncio.gather(*hung, return_exceptions=True)
    await c.close()
    srv.stop()
    for kind, p in (("429", 0.2), ("500", 0.1), ("timeout", 0.1), ("garbled", 0.1), ("ok", 0.5)):
        assert abs(outcomes.get(kind, 0) - n * p) < 4 * (n * p * (1 - p)) ** 0.5 + 1, outcomes
    assert stats["requests"] == n
    assert stats["status"]["429"] == outcomes["429"]
    assert stats["status"]["500"] == outcomes["500"]
    assert stats["timeouts"] == outcomes["timeout"]
    assert stats["garbled"] == outcomes["garbled"]
    assert stats["ok"] == outcomes["ok"]


async def test_retry_of_a_failed_request_can_succeed():
    srv = start_in_thread(ServerConfig(fail_429=0.5, seed=1))
    c = client(srv.url)
    try:
        failures = 0
        for _ in range(30):
            try:
                await ask(c, user("same request every time"))
                break
            except openai.RateLimitError as exc:
                assert exc.response.headers.get("retry-after") == "0"
                failures += 1
        else:
            pytest.fail("never succeeded")
        total = srv.stats()["status"]
        assert total.get("429", 0) == failures and total["200"] == 1
    finally:
        await c.close()
        srv.stop()


async def test_no_schema_mode():
    srv = start_in_thread(ServerConfig(no_schema=True))
    c = client(srv.url)
    try:
        with pytest.raises(openai.BadRequestError):
            await ask(c, user("hello"), schema_format())
        prompt = "Look at the picture. Reply with JSON that follows this JSON schema:\n  " \
                 + json.dumps(SCHEMA) + "\nNo other text."
        content = await ask(c, user(prompt))
        match = re.search(r"```json\s*(.*?)```", content, re.S)
        assert match and content.strip()[0] != "{"  # prose around a fenced block
        check(json.loads(match.group(1)), SCHEMA)
        plain = await ask(c, user("just say something"))
        assert "```" not in plain and plain.endswith(".")
        assert srv.stats()["status"]["400"] == 1
    finally:
        await c.close()
        srv.stop()


async def test_latency_mean_is_honoured(monkeypatch):
    # what the server itself sleeps, and how many requests sleep at once (server-side,
    # so a busy machine cannot skew it); client timings only get lower and loose bounds
    real_wait, waits, sleeping, peak = server_mod._wait, [], [0], [0]

    async def wait(state, seconds):
        waits.append(seconds)
        sleeping[0] += 1
        peak[0] = max(peak[0], sleeping[0])
        try:
            await real_wait(state, seconds)
        finally:
            sleeping[0] -= 1

    monkeypatch.setattr(server_mod, "_wait", wait)
    srv = start_in_thread(ServerConfig(latency=0.2, spread=0.5, seed=3))
    body = {"model": "mock", "messages": user("latency")}

    async def timed(session):
        t0 = time.monotonic()
        async with session.post(srv.url + "/chat/completions", json=body) as resp:
            assert resp.status == 200
            await resp.read()
        return time.monotonic() - t0

    try:
        async with aiohttp.ClientSession() as session:
            took = await asyncio.gather(*(timed(session) for _ in range(50)))
    finally:
        srv.stop()
    mean = sum(took) / len(took)
    assert 0.15 < mean < 2.0, mean  # draws average 0.19; the rest is client overhead
    assert len(waits) == 50 and sum(waits) / 50 <= 0.2  # the draws, less the server's own work
    assert max(took) - min(took) > 0.05  # spread makes latencies differ
    assert peak[0] >= 10, peak  # requests ran concurrently (serially: 1)


async def test_stop_is_quick_and_closes_the_port():
    srv = start_in_thread(ServerConfig(fail_timeout=1.0, hang_seconds=600))
    c = client(srv.url, timeout=600)
    pending = asyncio.create_task(ask(c, user("hang")))
    while srv.stats()["timeouts"] == 0:
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    await asyncio.to_thread(srv.stop)
    assert time.monotonic() - t0 < 30.0  # loose: a hang is 600 s
    # the hang is cut short: the request ends (answer or error) without waiting 600 s
    await asyncio.wait_for(asyncio.gather(pending, return_exceptions=True), 30.0)
    with pytest.raises(openai.APIConnectionError):
        await ask(c, user("after stop"))
    await c.close()


async def test_cli_prints_listening_line_and_serves_stats():
    proc = subprocess.Popen(
        [sys.executable, "-m", "evol.testing.server", "--port", "0", "--latency", "0.01",
         "--fail-429", "0", "--no-schema"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
        match = re.fullmatch(r"listening (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert match, line
        url = match.group(1)
        c = client(url)
        with pytest.raises(openai.BadRequestError):  # --no-schema reached the config
            await ask(c, user("x"), schema_format())
        await ask(c, user("hello there"))
        await c.close()
        async with aiohttp.ClientSession() as session:
            async with session.get(url.removesuffix("/v1") + "/stats") as resp:
                stats = await resp.json()
            async with session.get(url + "/models") as resp:
                models = await resp.json()
        assert stats["requests"] == 2 and stats["ok"] == 1 and stats["status"]["400"] == 1
        assert models["data"][0]["id"]
    finally:
        proc.terminate()
        out, err = await asyncio.to_thread(proc.communicate, timeout=10)
    assert proc.returncode == 0, err
    assert out == "" and err == ""
