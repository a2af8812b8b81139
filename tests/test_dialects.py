"""Structured-output dialects: how the schema goes to each kind of server, and auto's step-down.

The backend tests talk real HTTP to small endpoints on 127.0.0.1; the CLI tests run
`evol evolve` as a subprocess against the test server playing llama.cpp, Ollama, vLLM and
`transformers serve` (`ServerConfig.profile`). Nothing here bounds wall-clock time: the
server counts what it was sent.
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from conftest import evolve_args, read_jsonl, run_cli, write_llava_seeds
from evol.backends.base import BackendError, Message, Request, RunStopped, Sampling
from evol.backends.jsonfix import schema_instruction
from evol.backends.limits import Limiter
from evol.backends.openai import OpenAIBackend
from evol.images import ImageStore

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def request(system: bool = True) -> Request:
    msgs = ((Message.text("system", "You answer."),) if system else ()) + (Message.text("user", "Say hi."),)
    return Request(messages=msgs, schema=SCHEMA, schema_name="answer", sampling=Sampling(max_tokens=64), tag="t")


def completion(content: str) -> web.Response:
    return web.json_response({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    })


@asynccontextmanager
async def endpoint(refuse: dict[str, tuple[int, str]]):
    """A chat endpoint that refuses the dialects in `refuse` ({kind: (status, message)})
    and otherwise answers prose around the JSON; yields (url, bodies received)."""
    bodies: list[dict] = []

    async def handler(req):
        body = await req.json()
        bodies.append(body)
        fmt = body.get("response_format") or {}
        kind = fmt.get("type") or ("format" if "format" in body else "prompt")
        if kind in refuse:
            status, message = refuse[kind]
            return web.json_response({"error": {"message": message, "type": "server_error", "code": status}},
                                     status=status)
        return completion('Sure! Here it is:\n```json\n{"answer": "hi"}\n```')

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", bodies
    finally:
        await runner.cleanup()


def backend(url: str, structured: str = "auto") -> OpenAIBackend:
    return OpenAIBackend("m", url, images=ImageStore(None), limiter=Limiter(4, default_cool_down=0.01),
                         max_attempts=3, backoff_base=0.001, backoff_cap=0.002, timeout=10.0,
                         structured=structured)


def kinds(bodies: list[dict]) -> list[str]:
    return [(b.get("response_format") or {}).get("type") or ("format" if "format" in b else "prompt") for b in bodies]


# ------------------------------------------------------------------- request building

async def test_each_dialect_sends_the_schema_its_own_way():
    async with endpoint({}) as (url, bodies):
        for dialect in ("json_schema", "json_object", "ollama", "prompt"):
            b = backend(url, dialect)
            try:
                reply = await b.complete(request())
            finally:
                await b.aclose()
            assert reply.data == {"answer": "hi"}  # prose around the JSON is dug out whatever the dialect
    js, jo, ol, pr = bodies
    assert js["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": SCHEMA, "strict": False}}
    assert js["messages"][0] == {"role": "system", "content": "You answer."} and "format" not in js
    assert jo["response_format"] == {"type": "json_object", "schema": SCHEMA} and "format" not in jo
    assert ol["format"] == SCHEMA and "response_format" not in ol
    assert "response_format" not in pr and "format" not in pr
    for body in (jo, ol, pr):  # the schema is in the system message too
        assert schema_instruction(SCHEMA) in body["messages"][0]["content"]
        assert body["messages"][0]["content"].startswith("You answer.")


async def test_prompt_dialect_adds_a_system_message_when_there_is_none():
    async with endpoint({}) as (url, bodies):
        b = backend(url, "ollama")
        try:
            await b.complete(request(system=False))
        finally:
            await b.aclose()
    assert bodies[0]["messages"][0] == {"role": "system", "content": schema_instruction(SCHEMA)}


# ------------------------------------------------------------------------ step-down

@pytest.mark.parametrize("status", [400, 422, 500, 501])
async def test_auto_steps_down_on_a_refusal_of_any_status(status, caplog):
    caplog.set_level(logging.WARNING, logger="evol.backends.openai")
    refuse = {"json_schema": (status, "Input should be 'text' or 'json_object'"),
              "json_object": (status, "response_format json_object is not supported")}
    async with endpoint(refuse) as (url, bodies):
        b = backend(url)
        try:
            first = await b.complete(request())
            second = await b.complete(request())
        finally:
            await b.aclose()
    assert first.data == second.data == {"answer": "hi"}
    # each refused call was resent at once in the next dialect; none counted as an attempt
    assert kinds(bodies) == ["json_schema", "json_object", "prompt", "prompt"]
    assert b.dialect == "prompt" and b.stats.outcomes.count("retried") == b.stats.outcomes.count("retried", "refused")
    assert b.stats.outcomes.count(kind="5xx") == 0
    steps = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(steps) == 2 and "json_schema" in steps[0] and "json_object" in steps[1]


async def test_a_server_error_that_names_no_schema_is_retried_not_a_refusal():
    async with endpoint({"json_schema": (500, "internal error")}) as (url, bodies):
        b = backend(url)
        try:
            with pytest.raises(BackendError, match="HTTP 500"):
                await b.complete(request())
        finally:
            await b.aclose()
    assert kinds(bodies) == ["json_schema"] * 3 and b.dialect == "json_schema"


@pytest.mark.parametrize("dialect", ["json_schema", "json_object", "ollama"])
async def test_a_fixed_dialect_never_steps_down(dialect):
    kind = "format" if dialect == "ollama" else dialect
    async with endpoint({kind: (500, "unsupported response_format / schema")}) as (url, bodies):
        b = backend(url, dialect)
        try:
            with pytest.raises(RunStopped, match=f"refused the schema sent as {dialect}.*--structured auto"):
                await b.complete(request())
            with pytest.raises(RunStopped):  # the run is stopped: nothing more goes out
                await b.complete(request())
        finally:
            await b.aclose()
    assert kinds(bodies) == [kind] and b.dialect == dialect


async def test_calls_in_flight_refused_together_step_down_once(caplog):
    caplog.set_level(logging.WARNING, logger="evol.backends.openai")
    import asyncio

    refuse = {"json_schema": (500, "Input should be 'text' or 'json_object'")}
    async with endpoint(refuse) as (url, bodies):
        b = backend(url)
        try:
            replies = await asyncio.gather(*[b.complete(request()) for _ in range(4)])
        finally:
            await b.aclose()
    assert all(r.data == {"answer": "hi"} for r in replies)
    assert b.dialect == "json_object"  # not on to prompt because of stale json_schema refusals
    assert kinds(bodies).count("json_object") == 4 and "prompt" not in kinds(bodies)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# ------------------------------------------------------------ the CLI against each profile

def _judged(out, n: int) -> list[dict]:
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == n
    assert all(v["status"] == "judged" for r in records for v in r["versions"]), records
    return records


def _scores(records: list[dict]) -> list[float]:
    return [it["verdict"]["score"] for r in records for v in r["versions"] for it in v["items"]
            if it.get("verdict") and it["verdict"].get("rule") is None]


def _server_block(out) -> dict:
    return json.loads((out / "manifest.json").read_text())["server"]


def test_llamacpp_negotiates_json_object_once_and_every_record_uses_it(tmp_path, server_factory):
    srv = server_factory(profile="llamacpp")
    seeds = write_llava_seeds(tmp_path, 12)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "2"))
    assert res.returncode == 0, res.stderr
    records = _judged(out, 12)
    stats = srv.stats()
    # the negotiation was the preflight's: its text check as json_schema, refused (with the
    # image check sent beside it, unless the refusal came first), then json_object
    assert stats["preflight"]["formats"].get("json_schema") in (1, 2)
    assert stats["preflight"]["status"].get("500") == stats["preflight"]["formats"].get("json_schema")
    # every call of the run went out as json_object; none as json_schema, none refused
    assert stats["formats"] == {"json_object": stats["requests"]} and stats["requests"] >= 2 * 2 * 12
    assert "500" not in stats["status"]
    # llama.cpp does not enforce "maximum": the out-of-range scores it sent were caught
    # after parsing and asked again, so none reached the records
    assert stats.get("overshot", 0) >= 1
    assert stats["requests"] > 2 * 2 * 12
    assert _scores(records) and all(0 <= s <= 10 for s in _scores(records))
    server = _server_block(out)
    assert server["dialect"] == "json_object" and server["images"] == "seen" and server["send_images"] is True
    assert "takes the schema as response_format json_object" in res.stderr


def test_llamacpp_without_preflight_steps_down_during_the_run(tmp_path, server_factory):
    srv = server_factory(profile="llamacpp")
    seeds = write_llava_seeds(tmp_path, 10)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1", "--no-preflight"))
    assert res.returncode == 0, res.stderr
    _judged(out, 10)
    stats = srv.stats()
    assert "preflight" not in stats
    # only the calls already in flight when the first refusal came back were refused
    assert 1 <= stats["formats"]["json_schema"] <= 16  # --concurrency 16
    assert stats["status"]["500"] == stats["formats"]["json_schema"]
    assert stats["formats"]["json_object"] == stats["status"]["200"]
    log = (out / "evol.log").read_text()
    assert log.count("refused response_format json_schema") == 1
    assert "server" not in json.loads((out / "manifest.json").read_text())


def test_ollama_auto_and_its_own_format_field(tmp_path, server_factory):
    seeds = write_llava_seeds(tmp_path, 6)
    srv = server_factory(profile="ollama")
    res = run_cli(*evolve_args(seeds, tmp_path / "auto", srv.url, "--rounds", "1"))
    assert res.returncode == 0, res.stderr
    _judged(tmp_path / "auto", 6)
    assert _server_block(tmp_path / "auto")["dialect"] == "json_object"
    assert srv.stats()["preflight"]["status"]["400"] in (1, 2)  # the text check, and the image check beside it

    srv = server_factory(profile="ollama")
    res = run_cli(*evolve_args(seeds, tmp_path / "native", srv.url, "--rounds", "1", "--structured", "ollama"))
    assert res.returncode == 0, res.stderr
    _judged(tmp_path / "native", 6)
    stats = srv.stats()
    assert stats["formats"] == {"format": stats["requests"]} and "400" not in stats["status"]
    assert set(stats["preflight"]["formats"]) == {"format"}
    assert _server_block(tmp_path / "native")["dialect"] == "ollama"
    manifest = json.loads((tmp_path / "native" / "manifest.json").read_text())
    assert manifest["config"]["structured"] == "ollama"


def test_vllm_takes_json_schema_and_lists_the_model(tmp_path, server_factory):
    srv = server_factory(profile="vllm", model_id="test-vlm")
    seeds = write_llava_seeds(tmp_path, 6)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1"))
    assert res.returncode == 0, res.stderr
    _judged(out, 6)
    stats = srv.stats()
    assert stats["formats"] == {"json_schema": stats["requests"]}
    assert stats["preflight"]["requests"] == 2  # the schema check, and the same with a picture
    assert _server_block(out) | {"preflight_s": 0} == {
        "dialect": "json_schema", "models_listed": True, "images": "seen", "image_tokens": 85,
        "send_images": True, "preflight_s": 0}
    assert "note:" not in res.stderr and "warning:" not in res.stderr


def test_a_server_that_ignores_response_format_is_answered_through_the_prompt(tmp_path, server_factory):
    srv = server_factory(profile="noschema", keep_prompts=True)
    seeds = write_llava_seeds(tmp_path, 6)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "2"))
    assert res.returncode == 0, res.stderr
    _judged(out, 6)
    stats = srv.stats()
    assert _server_block(out)["dialect"] == "prompt"
    assert stats["formats"] == {"none": stats["requests"]}
    # every answer came as prose around a fenced block, and every one was parsed: no retry
    run_prompts = [p for p in srv.prompts() if not p["preflight"]]
    assert len(run_prompts) == stats["requests"] == 2 * 2 * 6
    assert all("follows this JSON schema:" in p["text"] for p in run_prompts)
    assert "takes the schema in the prompt" in res.stderr


def test_structured_is_checked(tmp_path):
    seeds = write_llava_seeds(tmp_path, 1)
    res = run_cli(*evolve_args(seeds, tmp_path / "run", "http://127.0.0.1:9/v1", "--structured", "xml"))
    assert res.returncode == 1 and "structured" in res.stderr and "json_object" in res.stderr
