"""The offline vLLM backend: its request building without vLLM, the engine itself where installed."""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image as PILImage

from conftest import SEEDS
from evol.backends.base import BackendError, Image, Message, ReplyParseError, Request, Sampling, Text
from evol.backends.vllm import reply_from_output, request_messages, sampling_params, sampling_spec
from evol.images import ImageError, ImageStore

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def make_request(*user_parts, schema=SCHEMA, sampling=Sampling(0.3, 0.9, 300, 11)) -> Request:
    return Request(messages=(Message.text("system", "Be exact."), Message("user", tuple(user_parts))),
                   schema=schema, sampling=sampling, tag="rec1/r1/perceptual")


def answer_all(backend, requests) -> list:
    """Every request sent at once; answers or exceptions in order; the backend closed after."""
    async def go():
        try:
            return await asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_messages_carry_text_as_strings_and_images_as_data_urls():
    images = ImageStore(SEEDS, max_side=64)
    msgs = request_messages(make_request(Image("coffee.jpg"), Image("rocket.jpg"), Text("Compare them.")), images)
    assert msgs[0] == {"role": "system", "content": "Be exact."}
    parts = msgs[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"] and parts[2]["text"] == "Compare them."
    for part in parts[:2]:
        head, _, payload = part["image_url"]["url"].partition(",")
        assert head == "data:image/jpeg;base64"
        with PILImage.open(io.BytesIO(base64.b64decode(payload))) as img:
            assert max(img.size) == 64, "downscaled like the OpenAI backend's images"
    with pytest.raises(ImageError, match="image not found: missing.jpg"):
        request_messages(make_request(Image("missing.jpg"), Text("?")), images)


def test_sampling_spec_follows_the_request():
    spec = sampling_spec(make_request(Text("hi")), max_tokens=128)
    assert spec == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 128, "json": SCHEMA, "seed": 11}
    plain = sampling_spec(make_request(Text("hi"), schema=None, sampling=Sampling(0.0, 1.0, 64, None)))
    assert plain == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "json": None}


@dataclass
class _Params:
    """Records the keyword arguments it was built with, like vllm's classes take them."""

    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, **kw: Any) -> "_Params":
        return cls(kw)


def test_schema_becomes_structured_outputs_or_guided_decoding_by_vllm_version():
    spec = sampling_spec(make_request(Text("hi")))
    new = SimpleNamespace(SamplingParams=_Params.make, StructuredOutputsParams=_Params.make,
                          GuidedDecodingParams=_Params.make)
    params = sampling_params(spec, new)
    assert params.kwargs["structured_outputs"].kwargs == {"json": SCHEMA}
    assert "guided_decoding" not in params.kwargs and "json" not in params.kwargs
    assert params.kwargs["temperature"] == 0.3 and params.kwargs["seed"] == 11
    old = SimpleNamespace(SamplingParams=_Params.make, GuidedDecodingParams=_Params.make)
    assert sampling_params(spec, old).kwargs["guided_decoding"].kwargs == {"json": SCHEMA}
    with pytest.raises(BackendError, match="no structured"):
        sampling_params(spec, SimpleNamespace(SamplingParams=_Params.make))
    assert "structured_outputs" not in sampling_params(sampling_spec(make_request(Text("x"), schema=None)), new).kwargs


def _output(text: str, finish: str = "stop") -> SimpleNamespace:
    return SimpleNamespace(prompt_token_ids=[1] * 17,
                           outputs=[SimpleNamespace(text=text, token_ids=[5] * 9, finish_reason=finish)])


def test_replies_are_parsed_and_a_cut_answer_says_so():
    reply = reply_from_output(make_request(Text("hi")), _output('{"answer": "two cups"}'))
    assert reply.data == {"answer": "two cups"} and (reply.tokens_in, reply.tokens_out) == (17, 9)
    with pytest.raises(ReplyParseError, match=r"rec1/r1/perceptual: reply cut off at --max-tokens 300 "
                                              r"\(finish_reason length\)"):
        reply_from_output(make_request(Text("hi")), _output('{"answer": "two', "length"))
    with pytest.raises(ReplyParseError, match=r"--max-tokens 64 \(finish_reason length\)"):
        reply_from_output(make_request(Text("hi")), _output('{"answer": "two', "length"), 64)


def test_vllm_engine_answers_in_schema_with_images(request):
    """Runs only where vLLM and a GPU are present (never on the CPU dev machines)."""
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    from evol.backends.vllm import load_vllm_backend

    tiny_vlm_dir = request.getfixturevalue("tiny_vlm_dir")
    backend = load_vllm_backend(str(tiny_vlm_dir), images=ImageStore(SEEDS), max_model_len=1024,
                                gpu_memory_utilization=0.2, enforce_eager=True)
    reqs = [make_request(Image("coffee.jpg"), Text("What is it?"), sampling=Sampling(0.7, 1.0, 64, k)) for k in range(3)]

    results = answer_all(backend, reqs)
    assert backend.stats.batches == 1, "requests that arrive together go to the engine together"
    for res in results:
        assert not isinstance(res, BackendError) or "cut off" in str(res)


class _FakeLLM:
    """Stands in for ``vllm.LLM``: records each ``chat`` call and answers every conversation."""

    def __init__(self, fail: bool = False):
        self.calls: list[tuple[list, list]] = []
        self.fail = fail

    def chat(self, convs, sampling_params, use_tqdm=False):
        self.calls.append((convs, sampling_params))
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        return [_output('{"answer": "%d parts"}' % len(c[-1]["content"])) for c in convs]


def _fake_sp() -> SimpleNamespace:
    return SimpleNamespace(SamplingParams=_Params.make, StructuredOutputsParams=_Params.make)


def test_requests_arriving_together_make_one_engine_call_and_a_bad_image_fails_alone():
    from evol.backends.vllm import VLLMBackend

    llm = _FakeLLM()
    backend = VLLMBackend(llm, name="fake", images=ImageStore(SEEDS, max_side=32), sp=_fake_sp())
    reqs = [make_request(Image("coffee.jpg"), Text(f"Question {k}?"), sampling=Sampling(0.5, 1.0, 64, k))
            for k in range(5)]
    reqs.insert(2, make_request(Image("no-such.jpg"), Text("Where?")))

    results = answer_all(backend, reqs)
    st = backend.stats  # the request with the missing image never reached the engine
    assert len(llm.calls) == 1 and (st.sent.requests, st.batches, st.largest_batch) == (5, 1, 5)
    convs, params = llm.calls[0]
    assert [p.kwargs["seed"] for p in params] == [0, 1, 2, 3, 4]
    assert all(p.kwargs["structured_outputs"].kwargs == {"json": SCHEMA} for p in params)
    assert all(c[1]["content"][0]["image_url"]["url"].startswith("data:image/") for c in convs)
    assert isinstance(results[2], BackendError) and "rec1/r1/perceptual" in str(results[2])
    assert [r.data for k, r in enumerate(results) if k != 2] == [{"answer": "2 parts"}] * 5


def test_an_engine_failure_fails_that_batch_with_a_reason():
    from evol.backends.vllm import VLLMBackend

    backend = VLLMBackend(_FakeLLM(fail=True), name="fake", images=ImageStore(SEEDS), sp=_fake_sp())

    results = answer_all(backend, [make_request(Text(f"q{k}")) for k in range(3)])
    assert all(isinstance(r, BackendError) and "CUDA out of memory" in str(r) for r in results)


def test_only_vision_models_get_an_image_limit():
    from evol.backends.vllm import engine_options

    assert engine_options({"max_model_len": 512}, text_only=True, max_images=8) == {"max_model_len": 512}
    assert engine_options({}, text_only=False, max_images=3) == {"limit_mm_per_prompt": {"image": 3}}
    assert engine_options({"limit_mm_per_prompt": {"image": 1}}, text_only=False, max_images=3) == \
        {"limit_mm_per_prompt": {"image": 1}}


def test_an_engine_that_will_not_start_is_one_clear_backend_error(monkeypatch):
    """vLLM raises all kinds of errors at start (a text model with an image limit, no GPU):
    they reach the CLI as a BackendError naming the model, and a text model gets no image limit."""
    import sys

    from evol.backends.vllm import load_vllm_backend

    seen = {}

    def refuse(**kw):
        seen.update(kw)
        raise ValueError("limit_mm_per_prompt is only supported for multimodal models")

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(LLM=refuse))
    with pytest.raises(BackendError, match=r"vLLM could not start on /models/x: limit_mm_per_prompt"):
        load_vllm_backend("/models/x", images=ImageStore(SEEDS))
    assert seen["limit_mm_per_prompt"] == {"image": 8}
    seen.clear()
    with pytest.raises(BackendError):
        load_vllm_backend("/models/text", images=ImageStore(SEEDS), text_only=True)
    assert seen["model"] == "/models/text" and "limit_mm_per_prompt" not in seen
