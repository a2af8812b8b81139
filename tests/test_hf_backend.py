"""The transformers backend: a tiny LLaVA built here (images), the shipped SmolLM2 (text), the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from conftest import SEEDS, run_cli, write_llava_seeds
from evol.backends.base import BackendError, Image, Message, ReplyParseError, Request, Sampling, Text
from evol.backends.hf import HFBackend, HFEngine
from evol.backends.local import ModelPathError, bounded_schema, embedded_model, model_source
from evol.images import ImageStore
from evol.records import Record

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string"},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "tags": {"type": "array", "items": {"type": "string"}},
        "ok": {"type": "boolean"},
    },
    "required": ["label", "count", "tags", "ok"],
}


def read_jsonl(path: Path) -> list[dict]:
    """JSONL split on newlines only (str.splitlines would also split at U+2028, U+0085 ... that a
    model with random weights writes inside strings)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def ask(*parts, schema=SCHEMA, seed=1, temperature=1.0, max_tokens=200, tag="t") -> Request:
    return Request(messages=(Message.text("system", "Answer briefly."), Message("user", tuple(parts))),
                   schema=schema, sampling=Sampling(temperature, 1.0, max_tokens, seed), tag=tag)


def check_answer(reply) -> None:
    """The reply is strict JSON (no raw control characters) that meets SCHEMA and its bounds."""
    data = json.loads(reply.text)  # strict: raises on a raw newline or tab inside a string
    assert data == reply.data
    assert list(data) == ["label", "count", "tags", "ok"]
    assert isinstance(data["label"], str) and len(data["label"]) <= 8
    assert isinstance(data["count"], int) and 0 <= data["count"] <= 9
    assert isinstance(data["tags"], list) and len(data["tags"]) <= 2 and all(isinstance(t, str) for t in data["tags"])
    assert isinstance(data["ok"], bool)
    assert reply.tokens_in > 0 and reply.tokens_out > 0 and reply.finish_reason == "stop"


@pytest.fixture(scope="module")
def tiny_engine(tiny_vlm_dir):
    # small bounds so that a model with random weights reaches the end of the JSON quickly
    return HFEngine(model_source(tiny_vlm_dir), images=ImageStore(SEEDS), max_new_tokens=200,
                    max_string=8, max_items=2)


async def test_tiny_vlm_batches_requests_with_images_and_answers_in_schema(tiny_engine):
    assert tiny_engine.vision and not model_source(tiny_engine.source.folder).text_only
    backend = HFBackend(tiny_engine, max_batch=8)
    before = tiny_engine.stats.batches
    requests = [
        ask(Image("coffee.jpg"), Text("What is on the table?"), seed=1, tag="one"),
        ask(Image("coffee.jpg"), Image("chelsea.jpg"), Text("What is on the table?"), seed=2, tag="two"),
        ask(Text("What is on the table?"), seed=3, temperature=0.0, tag="none"),
    ]
    try:
        replies = await asyncio.gather(*(backend.complete(r) for r in requests))
    finally:
        await backend.aclose()
    assert tiny_engine.stats.batches == before + 1, "requests that arrive together share one generate call"
    for reply in replies:
        check_answer(reply)
    one, two, none = (r.tokens_in for r in replies)
    per_image = one - none
    assert per_image > 0 and two - one == per_image, "each image adds its own image tokens to the prompt"


async def test_a_seed_gives_the_same_answer_and_another_seed_another(tiny_engine):
    backend = HFBackend(tiny_engine)
    req = ask(Image("rocket.jpg"), Text("Describe it."), seed=7, temperature=1.0, schema=None, max_tokens=24)
    try:
        first = await backend.complete(req)
        again = await backend.complete(req)
        other = await backend.complete(ask(Image("rocket.jpg"), Text("Describe it."), seed=8, temperature=1.0,
                                           schema=None, max_tokens=24))
    finally:
        await backend.aclose()
    assert first.text == again.text and first.tokens_out == again.tokens_out
    assert other.text != first.text
    assert first.data is None and first.finish_reason == "length" and first.tokens_out == 24


async def test_a_missing_image_fails_its_own_request_only(tiny_engine):
    backend = HFBackend(tiny_engine)
    try:
        results = await asyncio.gather(
            backend.complete(ask(Image("no_such_photo.jpg"), Text("What?"), tag="rec9/r1/judge")),
            backend.complete(ask(Image("chelsea.jpg"), Text("What?"))),
            return_exceptions=True)
    finally:
        await backend.aclose()
    assert isinstance(results[0], BackendError)
    assert "rec9/r1/judge" in str(results[0]) and "no_such_photo.jpg" in str(results[0])
    check_answer(results[1])


async def test_an_answer_cut_off_by_the_token_limit_is_a_parse_error(tiny_engine):
    backend = HFBackend(tiny_engine)
    try:
        with pytest.raises(ReplyParseError, match=r"rec1/r2/reasoning: reply cut off at --max-tokens 4 \(finish_reason length\)"):
            await backend.complete(ask(Text("Long answer please"), max_tokens=4, tag="rec1/r2/reasoning"))
    finally:
        await backend.aclose()


async def test_smollm2_judges_in_valid_json_from_text_alone(smollm2_engine, caplog):
    """The embedded default on real judge prompts: every answer parses and carries verdicts."""
    from evol.eliminator.judge import Judge
    from evol.io import read_records

    assert not smollm2_engine.vision
    records = [r.record for r in read_records(str(SEEDS / "sample_mmevol.jsonl"))][:3]
    judge = Judge()
    requests, pairs_of = [], []
    for k, rec in enumerate(records):
        pairs = [(it, it.model_copy(update={"id": it.id + "@r1", "question": it.question + " Explain why."}))
                 for it in rec.items[:2]]
        pairs_of.append(pairs)
        requests.append(judge.build(rec, pairs, 1, send_image=k != 0))  # the first one still has an image part
    backend = HFBackend(smollm2_engine, max_batch=8)
    with caplog.at_level(logging.WARNING, logger="evol.backends.hf"):
        try:
            replies = await asyncio.gather(*(backend.complete(r) for r in requests))
        finally:
            await backend.aclose()
    assert any("text-only model" in m for m in caplog.messages)
    for reply, pairs in zip(replies, pairs_of):
        assert json.loads(reply.text) == reply.data
        verdicts = judge.parse(reply, pairs)
        assert verdicts and set(verdicts) <= {child.id for _, child in pairs}
        assert all(0 <= v.score <= 10 for v in verdicts.values())


def test_prompts_of_very_different_length_are_decoded_apart():
    from evol.backends.hf import _by_length, _Prepared

    ready = [_Prepared(i, None, "x" * n, [], None) for i, n in enumerate([2000, 900, 1950, 1000, 2100])]
    groups = _by_length(ready)
    assert [[p.index for p in g] for g in groups] == [[1, 3], [2, 0, 4]]


def test_bounded_schema_adds_bounds_and_keeps_tighter_ones():
    schema = {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "string", "maxLength": 3}, "c": {"type": "string", "enum": ["x"]},
        "d": {"type": "array", "items": {"type": "string"}, "minItems": 7}, "e": {"type": ["string", "null"]}}}
    out = bounded_schema(schema, max_string=50, max_items=4)
    p = out["properties"]
    assert p["a"]["maxLength"] == 50 and p["b"]["maxLength"] == 3 and "maxLength" not in p["c"]
    assert p["d"]["maxItems"] == 7 and p["d"]["items"]["maxLength"] == 50 and p["e"]["maxLength"] == 50
    assert "maxLength" not in schema["properties"]["a"], "the caller's schema is not changed"
    long = {"type": "object", "properties": {"essay": {"type": "string", "minLength": 300}}}
    assert bounded_schema(long, max_string=200, max_items=5)["properties"]["essay"]["maxLength"] == 300, \
        "a cap never goes below the schema's own minimum"
    free = bounded_schema(schema, max_string=None, max_items=None)["properties"]
    assert "maxLength" not in free["a"] and free["b"]["maxLength"] == 3 and "maxItems" not in free["d"]


def test_only_the_embedded_default_gets_short_strings_unless_asked(tiny_vlm_dir):
    from evol.backends.hf import load_hf_backend

    named = load_hf_backend(str(tiny_vlm_dir), images=ImageStore(SEEDS))
    assert (named.engine.max_string, named.engine.max_items) == (None, None)
    asked = load_hf_backend(str(tiny_vlm_dir), images=ImageStore(SEEDS), max_string=40, max_items=3)
    assert (asked.engine.max_string, asked.engine.max_items) == (40, 3)


def test_model_paths_are_checked_with_clear_reasons(tmp_path):
    with pytest.raises(ModelPathError, match="does not exist"):
        model_source(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelPathError, match="not a .gguf file"):
        model_source(tmp_path / "weights.bin")
    with pytest.raises(ModelPathError, match="neither a config.json nor a .gguf"):
        model_source(tmp_path)
    emb = embedded_model()
    assert emb.text_only and emb.gguf_file and (emb.folder / emb.gguf_file).stat().st_size > 50_000_000
    assert model_source(emb.folder / emb.gguf_file) == emb and model_source(emb.folder) == emb


def test_no_backend_flags_mean_the_embedded_default_text_only(tmp_path):
    seeds = write_llava_seeds(tmp_path, 3)
    res = run_cli("evolve", str(seeds), "--out", str(tmp_path / "run"), "--image-root", str(tmp_path / "images"),
                  "--dry-run")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stderr.split())
    assert "embedded SmolLM2-135M-Instruct" in text and "not for real data" in text
    assert "text-only model: images are not sent" in text


@pytest.mark.parametrize("args, message", [
    (["--backend", "hf", "--model", "/nonexistent/model"], "does not exist"),
    (["--backend", "hf", "--base-url", "http://127.0.0.1:9/v1"], "--base-url is for --backend openai"),
    (["--backend", "vllm"], "--backend vllm needs --model"),
    (["--backend", "llamafile", "--model", "x"], "unknown backend 'llamafile'"),
])
def test_bad_backend_flags_fail_before_anything_runs(tmp_path, args, message):
    seeds = write_llava_seeds(tmp_path, 1)
    res = run_cli("evolve", str(seeds), "--out", str(tmp_path / "run"), *args)
    assert res.returncode == 1 and message in " ".join(res.stderr.split())
    assert not (tmp_path / "run").exists()


def test_same_seeds_same_layout_with_the_openai_and_the_hf_backend(tmp_path, server, tiny_vlm_dir):
    """One seed file, evolved against the test server and by the tiny LLaVA (with images): the
    same run folder. The tiny model's weights are random; with short JSON strings and lists it
    still writes answers in the schema, so both runs judge and keep items."""
    seeds = write_llava_seeds(tmp_path, 3)
    common = ["--image-root", str(tmp_path / "images"), "--rounds", "2", "--max-tokens", "600"]
    a, b = tmp_path / "openai", tmp_path / "hf"
    res_a = run_cli("evolve", str(seeds), "--out", str(a), "--model", "test-vlm", "--base-url", server.url, *common)
    res_b = run_cli("evolve", str(seeds), "--out", str(b), "--backend", "hf", "--model", str(tiny_vlm_dir), *common,
                    "--max-string", "6", "--max-items", "1", timeout=240)
    assert res_a.returncode == 0, res_a.stderr
    assert res_b.returncode == 0, res_b.stderr
    files = {p.name for p in a.iterdir()}
    assert files == {p.name for p in b.iterdir()} >= {"records.jsonl", "rejects.jsonl", "llava.json", "manifest.json",
                                                     "cache.sqlite", "evol.log"}
    for run, backend in ((a, "openai"), (b, "hf")):
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["config"]["backend"] == backend
        # what only a server has: the preflight's findings ("server") and HTTP outcomes ("http")
        server_only = {"server", "http"}
        assert set(manifest) - server_only == set(json.loads((a / "manifest.json").read_text())) - server_only
        records = [Record.model_validate(r) for r in read_jsonl(run / "records.jsonl")]
        finals = sum(r["final"] for r in read_jsonl(run / "rejects.jsonl"))
        assert len(records) + finals == 3 and manifest["counts"]["records_out"] == len(records)
        assert all(len(r.versions) == 2 for r in records), "every record went through both rounds"
        assert isinstance(json.loads((run / "llava.json").read_text()), list)
    config = json.loads((b / "manifest.json").read_text())["config"]
    assert config["model"] == str(tiny_vlm_dir) and config["send_images"] is True, "a vision model gets the pixels"
    assert json.loads((a / "llava.json").read_text()), "the test server's run keeps items"
    # The tiny model's weights are random, so which items it keeps is chance; but with bounded
    # strings every one of its replies is complete JSON in the schema: nothing is rejected
    # for being cut off or unparseable, only for what the (random) content says.
    reasons = [r["reason"] for r in read_jsonl(b / "rejects.jsonl")]
    assert not [r for r in reasons if "cut off" in r or "JSON" in r], reasons
    written = [it for r in read_jsonl(b / "records.jsonl") for v in r["versions"] for it in v["items"]]
    for entry in json.loads((b / "llava.json").read_text()):
        assert [t["from"] for t in entry["conversations"]] == ["human", "gpt"] and entry["image"]
    assert written or reasons, "the hf run wrote evolved items or said why not"
    assert all(len(it["question"]) <= 6 for it in written), "the hf run's items are the tiny model's, bounded as asked"
