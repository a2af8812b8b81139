"""A `Backend` on offline vLLM (`vllm.LLM` in this process, no server).

vLLM schedules continuously: it is fastest when it is handed many requests at once. The
backend therefore gathers the requests that arrive within a short window (and all those
that arrive while the engine is busy) and passes the whole list to one ``LLM.chat`` call
in a worker thread. Images travel as ``image_url`` parts holding data URLs made by the
`ImageStore` (the same downscaling as the OpenAI backend); a JSON schema becomes the
engine's structured-output constraint (``StructuredOutputsParams`` in current vLLM,
``GuidedDecodingParams`` in releases before 0.12).

The request-building functions (`request_messages`, `sampling_spec`, `sampling_params`) are
plain functions so they can be tested where vLLM is not installed (it needs a GPU and a
CUDA build of torch: ``pip install 'evol[vllm]'`` on such a machine).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import ModuleType
from typing import Any

from evol.backends.base import BackendError, Reply, ReplyParseError, Request, chat_messages, image_url_part
from evol.backends.batching import BatchingBackend, Job
from evol.backends.jsonfix import extract_json
from evol.backends.schemacheck import schema_problem
from evol.images import ImageError, ImageStore
from evol.stats import CallStats

log = logging.getLogger(__name__)


def request_messages(request: Request, images: ImageStore) -> list[dict[str, Any]]:
    """The request as chat messages (`chat_messages`); local images become data URLs."""
    return chat_messages(request, lambda ref: image_url_part(images.data_url(ref)))


def sampling_spec(request: Request, max_tokens: int | None = None) -> dict[str, Any]:
    """Engine-independent sampling settings: the keyword arguments of ``SamplingParams``
    plus ``json`` (the schema to constrain to, or None)."""
    s = request.sampling
    spec: dict[str, Any] = {
        "temperature": max(0.0, s.temperature),
        "top_p": s.top_p if 0 < s.top_p <= 1 else 1.0,
        "max_tokens": min(s.max_tokens, max_tokens) if max_tokens else s.max_tokens,
        "json": request.schema,
    }
    if s.seed is not None:
        spec["seed"] = s.seed
    return spec


def sampling_params(spec: dict[str, Any], sp: ModuleType) -> Any:
    """``vllm.sampling_params.SamplingParams`` for `spec`; `sp` is that module."""
    kwargs = {k: v for k, v in spec.items() if k != "json"}
    schema = spec.get("json")
    if schema is not None:
        if hasattr(sp, "StructuredOutputsParams"):
            kwargs["structured_outputs"] = sp.StructuredOutputsParams(json=schema)
        elif hasattr(sp, "GuidedDecodingParams"):
            kwargs["guided_decoding"] = sp.GuidedDecodingParams(json=schema)
        else:
            raise BackendError("this vLLM offers no structured (JSON-schema) decoding")
    return sp.SamplingParams(**kwargs)


def reply_from_output(request: Request, output: Any, max_tokens: int | None = None) -> Reply:
    """A `Reply` from one ``RequestOutput``; `ReplyParseError` when the schema was not met
    (its values included: not every structured-output backend enforces ranges or counts)
    or the request's `validate` refuses it. `max_tokens` is the token limit the engine was
    given (the request's own when None), named when the answer was cut off there."""
    return _checked(request, _raw_reply(output), max_tokens)


def _raw_reply(output: Any) -> Reply:
    """The text and token counts of one ``RequestOutput``, not yet checked."""
    done = output.outputs[0]
    return Reply(text=done.text, tokens_in=len(output.prompt_token_ids or ()),
                 tokens_out=len(done.token_ids or ()), finish_reason=done.finish_reason)


def _checked(request: Request, reply: Reply, max_tokens: int | None) -> Reply:
    tag = request.tag or "request"
    if request.schema is not None:
        try:
            reply.data = extract_json(reply.text)
            problem = schema_problem(request.schema, reply.data)
        except ReplyParseError as exc:
            problem = f"no usable JSON: {exc}"
        if problem:
            if reply.finish_reason == "length":
                limit = max_tokens or request.sampling.max_tokens
                problem = f"reply cut off at --max-tokens {limit} (finish_reason length)"
            raise ReplyParseError(f"{tag}: {problem}")
    if request.validate is not None:
        problem = request.validate(reply.data)
        if problem:
            raise ReplyParseError(f"{tag}: {problem}")
    return reply


class VLLMBackend(BatchingBackend):
    """`Backend` over a ``vllm.LLM``; pending requests go to the engine together."""

    worker_name = "vllm-backend-worker"

    def __init__(self, llm: Any, *, name: str, images: ImageStore, window: float = 0.05,
                 max_tokens: int | None = None, sp: ModuleType | None = None):
        if sp is None:
            from vllm import sampling_params as sp  # the caller has loaded vLLM already

        super().__init__()
        self.llm, self.model, self.images = llm, name, images
        self.window, self.max_tokens = window, max_tokens
        self._sp = sp  # vllm.sampling_params, or a stand-in with the same names (tests)
        self.stats = CallStats()  # every request the engine ran; one batch per engine call

    async def _gather(self, queue: asyncio.Queue[Job]) -> list[Job]:
        """Everything queued after a short window: vLLM schedules the whole list itself."""
        jobs = [await queue.get()]
        await asyncio.sleep(self.window)  # let the requests arriving together join
        while not queue.empty():
            jobs.append(queue.get_nowait())
        return jobs

    def _run_batch(self, requests: list[Request]) -> list[Reply | BackendError]:
        results: list[Reply | BackendError | None] = [None] * len(requests)
        convs, params, idx = [], [], []
        for i, req in enumerate(requests):
            try:
                convs.append(request_messages(req, self.images))
                params.append(sampling_params(sampling_spec(req, self.max_tokens), self._sp))
                idx.append(i)
            except ImageError as exc:
                results[i] = BackendError(f"{req.tag or 'request'}: {exc}")
            except BackendError as exc:
                results[i] = BackendError(f"{req.tag or 'request'}: {exc}")
        if idx:
            t0 = time.monotonic()
            try:
                outputs = self.llm.chat(convs, sampling_params=params, use_tqdm=False)
            except Exception as exc:
                log.exception("vLLM failed on %d requests", len(idx))
                outputs = [BackendError(f"vLLM failed: {exc!r}")] * len(idx)
            self.stats.batch(len(idx), time.monotonic() - t0)
            for i, out in zip(idx, outputs):
                if isinstance(out, BackendError):
                    results[i] = BackendError(f"{requests[i].tag or 'request'}: {out}")
                    continue
                raw = _raw_reply(out)
                try:
                    limit = sampling_spec(requests[i], self.max_tokens)["max_tokens"]
                    results[i] = _checked(requests[i], raw, limit)
                except BackendError as exc:
                    results[i] = exc
                self.stats.ran(raw, usable=isinstance(results[i], Reply))
        return results  # type: ignore[return-value]


def load_vllm_backend(path: str, *, images: ImageStore, name: str | None = None, max_images: int = 8,
                      text_only: bool = False, **engine_kw: Any) -> VLLMBackend:
    """Start vLLM on the model at `path` (a local folder) in this process.

    Only vision models get an image limit: vLLM refuses ``limit_mm_per_prompt`` for a text
    model, and a text model's requests carry the caption and boxes instead of pixels.
    """
    try:
        import vllm
    except ImportError:
        raise BackendError(
            "vllm is not installed: on a machine with an NVIDIA GPU run pip install 'evol[vllm]' "
            "(it brings its own CUDA build of torch), or use --backend hf") from None
    engine_kw = engine_options(engine_kw, text_only=text_only, max_images=max_images)
    try:
        llm = vllm.LLM(model=path, **engine_kw)
    except Exception as exc:  # vLLM raises many kinds: the CLI shows one clear line
        raise BackendError(f"vLLM could not start on {path}: {exc}") from exc
    return VLLMBackend(llm, name=name or path, images=images)


def engine_options(engine_kw: dict[str, Any], *, text_only: bool, max_images: int) -> dict[str, Any]:
    """The keyword arguments for ``vllm.LLM``: the caller's, plus an image limit for vision models."""
    out = dict(engine_kw)
    if not text_only:
        out.setdefault("limit_mm_per_prompt", {"image": max_images})
    return out
