"""Answers are checked before they are kept: schema values, a request's own `validate`, cut-offs.

Over real HTTP against the test server: an unusable answer is asked for again (the server
counts each try), fails with a readable reason when it stays unusable, is never clamped
into range and never cached (a second call asks the server again).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import evolve_args, read_jsonl, run_cli, write_llava_seeds
from evol.backends.base import Message, Reply, ReplyParseError, Request, Sampling
from evol.backends.hf import HFEngine
from evol.backends.limits import Limiter
from evol.backends.openai import OpenAIBackend
from evol.backends.schemacheck import schema_problem
from evol.backends.vllm import VLLMBackend, reply_from_output
from evol.cache import Cache, CachedBackend, request_key
from evol.eliminator.judge import Judge, check_verdicts
from evol.images import ImageStore
from evol.operators import OPERATORS
from evol.operators.base import BuildOptions, check_items
from evol.records import Item, Record

JUDGE_SCHEMA = Judge().schema(2)
ATTEMPTS = 3


# ------------------------------------------------------------------ the schema check

@pytest.mark.parametrize("data, reason", [
    ({"verdicts": [{"id": "e1", "improved": True, "score": 18, "reason": "x"}] * 2},
     "verdicts[0].score 18 is above the maximum 10"),
    ({"verdicts": [{"id": "e1", "improved": False, "score": -20, "reason": "x"}] * 2},
     "verdicts[0].score -20 is below the minimum 0"),
    ({"verdicts": [{"id": "e1", "improved": True, "score": 5, "reason": "x"},
                   {"id": "e7", "improved": True, "score": 5, "reason": "x"}]},
     'verdicts[1].id "e7" is not one of "e1", "e2"'),
    ({"verdicts": [{"id": "e1", "improved": True, "score": 5, "reason": "x"}]},
     "verdicts has 1 items, fewer than the minimum 2"),
    ({"verdicts": [{"id": "e1", "improved": "yes", "score": 5, "reason": "x"}] * 2},
     'verdicts[0].improved should be true or false, got string "yes"'),
    ({"verdicts": [{"id": "e1", "improved": True, "score": 5.5, "reason": "x"}] * 2},
     "verdicts[0].score should be an integer, got number 5.5"),
    ({"verdicts": [{"id": "e1", "improved": True, "score": 5}] * 2},
     "verdicts[0] lacks the required field 'reason'"),
    ({"answer": []}, "the answer lacks the required field 'verdicts'"),
])
def test_schema_problem_names_the_field_and_the_value(data, reason):
    assert schema_problem(JUDGE_SCHEMA, data) == reason


def test_schema_problem_accepts_what_fits_and_checks_lengths():
    good = {"verdicts": [{"id": "e1", "improved": True, "score": 10, "reason": "x"},
                         {"id": "e2", "improved": False, "score": 0.0, "reason": "y"}]}
    assert schema_problem(JUDGE_SCHEMA, good) is None
    assert schema_problem(None, {"anything": 1}) is None
    text = {"type": "object", "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 4},
                                             "n": {"type": "number", "exclusiveMaximum": 1}}}
    assert schema_problem(text, {"s": "a"}) == "s has 1 characters, fewer than the minimum 2"
    assert schema_problem(text, {"s": "abcde"}) == "s has 5 characters, more than the maximum 4"
    assert schema_problem(text, {"n": 1}) == "n 1 is not below 1"
    assert "not a finite number" in schema_problem(text, {"n": math.nan})
    assert schema_problem({"type": ["string", "null"]}, None) is None
    ref = {"$defs": {"k": {"enum": ["a", "b"]}}, "type": "array", "items": {"$ref": "#/$defs/k"}}
    assert schema_problem(ref, ["a", "c"]) == '[1] "c" is not one of "a", "b"'


def test_the_operator_schemas_accept_a_generated_answer():
    from evol.testing.server import _Generator

    for name, op in OPERATORS.items():
        schema = op.schema(3)
        doc = _Generator(random.Random(1), schema, 0.8).value(schema)
        assert schema_problem(schema, doc) is None, name
        assert check_items(doc) is None, name


# ------------------------------------------------------------ validate and the cache key

def test_validate_is_not_part_of_the_cache_key_nor_of_equality(tmp_path):
    msgs = (Message.text("user", "Judge this."),)
    plain = Request(msgs, schema=JUDGE_SCHEMA, tag="a")
    checked = Request(msgs, schema=JUDGE_SCHEMA, tag="a", validate=check_verdicts)
    other = Request(msgs, schema=JUDGE_SCHEMA, tag="a", validate=lambda data: "never")
    images = ImageStore(tmp_path)
    keys = {request_key(r, "m", images) for r in (plain, checked, other)}
    assert len(keys) == 1
    assert plain == checked == other
    bare = [Request(msgs, validate=v) for v in (None, check_verdicts)]  # a schema dict makes no hash
    assert hash(bare[0]) == hash(bare[1])


def test_judge_and_operator_requests_carry_their_validate():
    record, pairs = _judge_case("PLANT")
    assert Judge().build(record, pairs, 1, send_image=False).validate is check_verdicts
    assert OPERATORS["perceptual"].build(record, [pairs[0][0]], 1, BuildOptions(send_images=False)).validate is check_items


@pytest.mark.parametrize("entry, reason", [
    ({"improved": True, "score": 18, "reason": "Harder."}, "verdict e1: score 18 is above the maximum 10"),
    ({"improved": False, "score": -20, "reason": "Worse."}, "verdict e1: score -20 is below the minimum 0"),
    ({"improved": True, "score": 0, "reason": "Better."}, "verdict e1: improved is true with score 0"),
    ({"improved": True, "score": 0.5, "reason": "Better."}, "verdict e1: improved is true with score 0.5"),
    ({"improved": True, "score": 7, "reason": " \n "}, "verdict e1: the reason is empty"),
    ({"improved": True, "score": 7, "reason": ""}, "verdict e1: the reason is empty"),
    ({"improved": True, "score": 7}, "verdict e1: gives no reason"),
])
def test_invalid_verdicts_are_refused(entry, reason):
    data = {"verdicts": [{"id": "e1", **entry}, {"id": "e2", "improved": False, "score": 3, "reason": "ok"}]}
    assert check_verdicts(data).startswith(reason)
    record, pairs = _judge_case("PLANT")
    with pytest.raises(ReplyParseError, match="invalid verdict"):
        Judge().parse(Reply(text=json.dumps(data), data=data), pairs)  # never clamped


def test_unreadable_verdicts_are_refused_by_validate_and_skipped_by_parse():
    for entry, reason in [({"improved": True, "score": math.inf, "reason": "x"}, "verdict e1: score Infinity is not a number"),
                          ({"improved": "maybe", "score": 5, "reason": "x"}, 'verdict e1: improved "maybe" is not true or false')]:
        data = {"verdicts": [{"id": "e1", **entry}, {"id": "e2", "improved": False, "score": 3, "reason": "ok"}]}
        assert check_verdicts(data) == reason
        record, pairs = _judge_case("PLANT")
        assert set(Judge().parse(Reply(text="", data=data), pairs)) == {"rv#1@r1"}


def test_score_zero_not_improved_is_a_valid_verdict():
    data = {"verdicts": [{"id": "e1", "improved": False, "score": 0, "reason": "Needs no picture."},
                         {"id": "e2", "improved": True, "score": 1, "reason": "Slightly harder."}]}
    assert check_verdicts(data) is None
    record, pairs = _judge_case("PLANT")
    out = Judge().parse(Reply(text="", data=data), pairs)
    assert [(v.improved, v.score) for v in out.values()] == [(False, 0.0), (True, 1.0)]


@pytest.mark.parametrize("data, reason", [
    ({"nope": []}, "the reply has no 'items' list"),
    ({"items": []}, "the reply's items list is empty"),
    ({"items": ["text"]}, "item 1 is str, not an object"),
    ({"items": [{"source_id": "q1", "question": "Why?", "answer": "So."},
                {"source_id": "q2", "question": "  ", "answer": "So."}]}, "item 2 (q2) has an empty question"),
    ({"items": [{"source_id": "q1", "question": "Why?"}]}, "item 1 (q1) has no answer"),
])
def test_unusable_items_are_refused(data, reason):
    assert check_items(data) == reason


# -------------------------------------------------------------- over HTTP: OpenAI backend

def _judge_case(plant: str) -> tuple[Record, list[tuple[Item, Item]]]:
    record = Record(id="rv", images=[], caption=f"A red kite over a beach. {plant}")
    pairs = []
    for i in range(2):
        parent = Item(id=f"rv#{i}", question=f"What flies {i}?", answer="A kite.")
        child = Item(id=f"rv#{i}@r1", parent=parent.id, question=f"What colour is kite {i}?", answer="Red.")
        pairs.append((parent, child))
    return record, pairs


def _backend(url: str, tmp_path: Path, **kw) -> tuple[CachedBackend, OpenAIBackend]:
    images = ImageStore(tmp_path)
    inner = OpenAIBackend("mock-vlm", url, images=images, limiter=Limiter(2), max_attempts=ATTEMPTS,
                          backoff_base=0.001, backoff_cap=0.005, timeout=10.0, **kw)
    return CachedBackend(inner, Cache(tmp_path / "cache.sqlite"), images), inner


def _verdicts(*entries: dict) -> str:
    return json.dumps({"verdicts": [{"id": f"e{i + 1}", **e} for i, e in enumerate(entries)]})


OK_VERDICT = {"improved": False, "score": 3, "reason": "About the same."}
JUDGE_CASES = [
    ("PLANT-18", _verdicts({"improved": True, "score": 18, "reason": "Much harder."}, OK_VERDICT),
     "verdicts[0].score 18 is above the maximum 10"),
    ("PLANT-MINUS", _verdicts(OK_VERDICT, {"improved": False, "score": -20, "reason": "Worse."}),
     "verdicts[1].score -20 is below the minimum 0"),
    ("PLANT-ZERO", _verdicts({"improved": True, "score": 0, "reason": "Better."}, OK_VERDICT),
     "verdict e1: improved is true with score 0"),
    ("PLANT-NOREASON", _verdicts(OK_VERDICT, {"improved": True, "score": 6, "reason": "   "}),
     "verdict e2: the reason is empty"),
]


@pytest.mark.parametrize("structured", ["auto", "prompt"])
@pytest.mark.parametrize("plant, content, reason", JUDGE_CASES, ids=[c[0] for c in JUDGE_CASES])
async def test_invalid_verdicts_are_retried_then_fail_and_are_never_cached(
        tmp_path, server_factory, plant, content, reason, structured):
    srv = server_factory(scripted=[((plant,), content)])
    backend, inner = _backend(srv.url, tmp_path, structured=structured)
    record, pairs = _judge_case(plant)
    request = Judge().build(record, pairs, 1, send_image=False, sampling=Sampling(temperature=0.0, seed=5))
    try:
        for call in (1, 2):
            with pytest.raises(ReplyParseError) as info:
                await backend.complete(request)
            message = str(info.value)
            assert "rv/r1/judge" in message and reason in message, message
            assert f"after {ATTEMPTS} attempt(s)" in message
            # every attempt reached the server, and the second call asked again: nothing cached
            assert srv.stats()["scripted"] == ATTEMPTS * call
            assert len(backend.cache) == 0
        assert inner.stats.outcomes.count(kind="parse") == 2 * ATTEMPTS
        assert inner.stats.outcomes.count("retried") == 2 * (ATTEMPTS - 1) and inner.stats.failed == 2
    finally:
        await backend.aclose()
        backend.cache.close()


async def test_retries_of_an_invalid_answer_carry_new_seeds(tmp_path):
    from aiohttp import web

    seeds: list = []
    temperatures: list = []

    async def handler(req):
        body = await req.json()
        seeds.append(body.get("seed"))
        temperatures.append(body.get("temperature"))
        score = 18 if len(seeds) < 3 else 7  # the third try is a good answer
        return web.json_response({"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": _verdicts({"improved": True, "score": score, "reason": "Harder."},
                                                      OK_VERDICT)}}], "usage": {}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    backend, _ = _backend(url, tmp_path)
    record, pairs = _judge_case("X")
    request = Judge().build(record, pairs, 1, send_image=False, sampling=Sampling(temperature=0.0, seed=5))
    try:
        reply = await backend.complete(request)
        assert reply.data["verdicts"][0]["score"] == 7
        assert len(seeds) == 3 and len(set(seeds)) == 3 and seeds[0] == 5
        # a greedy judge would repeat itself whatever the seed: retries are warmed
        assert temperatures[0] == 0.0 and all(t >= 0.5 for t in temperatures[1:])
        assert len(backend.cache) == 1  # only the good answer is kept
        assert (await backend.complete(request)).cached and len(seeds) == 3
    finally:
        await backend.aclose()
        backend.cache.close()
        await runner.cleanup()


async def test_an_item_with_an_empty_question_is_retried_then_fails_uncached(tmp_path, server_factory):
    plant = "PLANT-EMPTY-Q"
    items = [{"source_id": "q1", "objects": [], "skills": [], "format": "open", "question": "",
              "steps": [], "answer": "A kite."}]
    srv = server_factory(scripted=[((plant,), json.dumps({"items": items}))])
    backend, _ = _backend(srv.url, tmp_path)
    record, pairs = _judge_case(plant)
    request = OPERATORS["perceptual"].build(record, [pairs[0][0]], 1, BuildOptions(send_images=False))
    try:
        for call in (1, 2):
            with pytest.raises(ReplyParseError, match=r"rv/r1/perceptual: .*item 1 \(q1\) has an empty question"):
                await backend.complete(request)
            assert srv.stats()["scripted"] == ATTEMPTS * call and len(backend.cache) == 0
    finally:
        await backend.aclose()
        backend.cache.close()


CUT = '{"verdicts": [{"id": "e1", "improved": true, "score": 7, "reason": "Harder."}, {"id": "e2", "impro'


@pytest.mark.parametrize("content", [CUT, '["first", "sec', '{"verdicts": ['])
async def test_a_reply_cut_off_at_max_tokens_says_so(tmp_path, server_factory, content):
    srv = server_factory(scripted=[(("PLANT-CUT",), {"content": content, "finish_reason": "length"})])
    backend, inner = _backend(srv.url, tmp_path)
    record, pairs = _judge_case("PLANT-CUT")
    request = Judge().build(record, pairs, 1, send_image=False, sampling=Sampling(temperature=0.0, max_tokens=77))
    try:
        with pytest.raises(ReplyParseError) as info:
            await backend.complete(request)
        assert srv.stats()["scripted"] == ATTEMPTS and len(backend.cache) == 0
    finally:
        await backend.aclose()
        backend.cache.close()
    message = str(info.value)
    assert "reply cut off at --max-tokens 77 (finish_reason length)" in message, message
    assert "expected a JSON object" not in message and "lacks" not in message


async def test_a_complete_answer_with_finish_reason_length_is_kept(tmp_path, server_factory):
    good = _verdicts({"improved": True, "score": 7, "reason": "Harder."}, OK_VERDICT)
    srv = server_factory(scripted=[(("PLANT-LEN-OK",), {"content": good, "finish_reason": "length"})])
    backend, _ = _backend(srv.url, tmp_path)
    record, pairs = _judge_case("PLANT-LEN-OK")
    try:
        reply = await backend.complete(Judge().build(record, pairs, 1, send_image=False))
    finally:
        await backend.aclose()
        backend.cache.close()
    assert reply.finish_reason == "length" and reply.data == json.loads(good)


# ------------------------------------------------------------------- the evolve run

def test_an_invalid_judge_verdict_fails_the_round_with_its_reason(tmp_path, server_factory):
    bad = {"improved": True, "score": 18, "reason": "Much harder."}
    judge = "You review visual question-answer items"
    srv = server_factory(scripted=[
        ((judge, "Give your verdicts on e1."), _verdicts(bad)),
        ((judge, "Give your verdicts on e1, e2."), _verdicts(bad, OK_VERDICT)),
    ])
    seeds = write_llava_seeds(tmp_path, 1)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "1", "--max-attempts", "2")
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    (record,) = read_jsonl(out / "records.jsonl")
    (version,) = record["versions"]
    assert version["status"] == "judge_failed", version
    assert "score 18 is above the maximum 10" in version["error"]
    assert all(it.get("verdict") is None for it in version["items"])  # never clamped to 10
    rejects = read_jsonl(out / "rejects.jsonl")
    assert any(r["stage"] == "judge" and "score 18 is above the maximum 10" in r["reason"] for r in rejects)
    asked = srv.stats()["by_schema"]["verdicts"]["requests"]
    assert asked == 2  # both attempts reached the server

    res = run_cli(*args, "--retry-failed")
    assert res.returncode == 0, res.stderr
    assert srv.stats()["by_schema"]["verdicts"]["requests"] == 2 * asked  # not cached: asked again


# ------------------------------------------------------------- local backends

def _judge_request(**kw) -> Request:
    record, pairs = _judge_case("LOCAL")
    return Judge().build(record, pairs, 1, send_image=False, **kw)


def test_hf_fails_a_request_its_validate_refuses():
    bad = _verdicts({"improved": True, "score": 0, "reason": "Better."}, OK_VERDICT)
    out = HFEngine._with_data(_judge_request(), Reply(text=bad, finish_reason="stop"), None, 100)
    assert isinstance(out, ReplyParseError)
    assert str(out).startswith("rv/r1/judge: verdict e1: improved is true with score 0")
    out = HFEngine._with_data(_judge_request(), Reply(text=bad.replace('"score": 0', '"score": 12'),
                                                       finish_reason="stop"), None, 100)
    assert isinstance(out, ReplyParseError) and "verdicts[0].score 12 is above the maximum 10" in str(out)
    good = _verdicts({"improved": True, "score": 4, "reason": "Better."}, OK_VERDICT)
    out = HFEngine._with_data(_judge_request(), Reply(text=good, finish_reason="stop"), None, 100)
    assert isinstance(out, Reply) and out.data == json.loads(good)
    out = HFEngine._with_data(_judge_request(), Reply(text=CUT, finish_reason="length"), None, 33)
    assert isinstance(out, ReplyParseError) and "reply cut off at --max-tokens 33 (finish_reason length)" in str(out)


def _vllm_output(text: str, finish: str = "stop") -> SimpleNamespace:
    return SimpleNamespace(prompt_token_ids=[1] * 5,
                           outputs=[SimpleNamespace(text=text, token_ids=[2] * 3, finish_reason=finish)])


def test_vllm_fails_only_the_request_its_validate_refuses():
    good = _verdicts({"improved": True, "score": 4, "reason": "Better."}, OK_VERDICT)
    bad = _verdicts(OK_VERDICT, {"improved": False, "score": 2, "reason": ""})

    class FakeLLM:
        def chat(self, convs, sampling_params, use_tqdm=False):
            return [_vllm_output(good), _vllm_output(bad), _vllm_output(CUT, "length")]

    params = SimpleNamespace(SamplingParams=lambda **kw: SimpleNamespace(**kw),
                             StructuredOutputsParams=lambda **kw: SimpleNamespace(**kw))
    backend = VLLMBackend(FakeLLM(), name="fake", images=ImageStore(None), max_tokens=50, sp=params)
    reqs = [_judge_request(sampling=Sampling(max_tokens=500)) for _ in range(3)]
    first, second, third = backend._run_batch(reqs)
    assert isinstance(first, Reply) and first.data == json.loads(good)
    assert isinstance(second, ReplyParseError) and str(second) == "rv/r1/judge: verdict e2: the reason is empty"
    assert isinstance(third, ReplyParseError)
    assert str(third) == "rv/r1/judge: reply cut off at --max-tokens 50 (finish_reason length)"
    assert backend.stats.batches == 1  # one batch, one engine call
    assert (backend.stats.calls, backend.stats.failed) == (1, 2)
    with pytest.raises(ReplyParseError, match="verdict e2: the reason is empty"):
        reply_from_output(_judge_request(), _vllm_output(bad))
