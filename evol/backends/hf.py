"""A `Backend` on transformers: local models, batched, with JSON answers by construction.

Two halves:

- `HFEngine` (heavy, loop-agnostic, one per loaded model): loads a checkpoint folder or a
  GGUF file, turns a list of `Request`s into one left-padded batch and runs
  ``model.generate`` on it, with `RowController` deciding each row's tokens (its JSON
  grammar, temperature, top-p, seed and token limit). Vision-language models (a
  ``vision_config`` in ``config.json``) go through ``AutoProcessor`` +
  ``AutoModelForImageTextToText`` with the processor's chat template and any number of
  images per request; text models through ``AutoTokenizer`` + ``AutoModelForCausalLM``,
  and the image parts of a request are left out (a run with a text model uses
  ``--no-images``, so operators put the caption and boxes into the text instead).
- `HFBackend` (light, one per event loop): the async face. Requests that arrive together
  are queued; one worker drains the queue into batches of up to `max_batch` and runs
  each batch in a thread, so the event loop stays free while the model works.

Every answer to a request with a schema is decoded under that schema (made finite by
`bounded_schema`), so even SmolLM2-135M returns JSON that parses; an answer cut off by the
token limit fails with `ReplyParseError` saying so.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting make every small op of a decode step crawl when
# the cores are shared (measured 7x slower per step on the 2-core dev VM under load);
# this only takes effect if torch has not been imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import asyncio  # noqa: E402
import contextlib
import functools
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from evol.backends.base import BackendError, Reply, ReplyParseError, Request, chat_messages
from evol.backends.batching import BatchingBackend, Job
from evol.backends.jsonfix import extract_json
from evol.backends.local import EMBEDDED_NAME, ModelSource, bounded_schema, embedded_model
from evol.backends.schemacheck import schema_problem
from evol.images import ImageError, ImageStore
from evol.stats import CallStats

#: (max string length, max list length) for the embedded default; see `load_hf_backend`.
EMBEDDED_BOUNDS: tuple[int, int] = (200, 5)

log = logging.getLogger(__name__)


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str | None) -> Any:
    """bfloat16 on GPUs and on CPUs with bf16 instructions (about twice float32's speed on
    the 2-core dev VM for SmolLM2), float32 elsewhere."""
    import torch

    if dtype and dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read(200_000)
    except OSError:
        flags = ""
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


class HFEngine:
    """One loaded model and everything needed to run batches of requests through it."""

    def __init__(self, source: ModelSource, *, images: ImageStore | None = None, device: str = "auto",
                 dtype: str | None = None, max_new_tokens: int = 1024, max_string: int | None = None,
                 max_items: int | None = None, cache: str | None = "auto"):
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.source = source
        self.images = images or ImageStore(None)
        self.device = pick_device(device)
        self.max_new_tokens = max_new_tokens
        self.max_string, self.max_items = max_string, max_items
        # a preallocated KV cache halves the time per decode step on CPU (no concatenation per
        # step); on GPUs transformers would compile the model for every new cache shape
        self.cache = ("static" if self.device == "cpu" else None) if cache == "auto" else cache
        self.vision = not source.text_only
        torch_dtype = pick_dtype(self.device, dtype)
        kw: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        t0 = time.monotonic()
        try:
            if self.vision:
                self.processor = transformers.AutoProcessor.from_pretrained(source.folder, **kw)
                self.tokenizer = self.processor.tokenizer
                model_cls = transformers.AutoModelForImageTextToText
            else:
                self.processor = None
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(source.folder, **kw)
                model_cls = transformers.AutoModelForCausalLM
            if self.device != "cpu":
                kw["device_map"] = self.device  # weights go straight to the GPU, not through host memory
            with _quiet_gguf():
                self.model = model_cls.from_pretrained(source.folder, dtype=torch_dtype, **kw).eval()
            if self.device == "cpu":
                self.model.to("cpu")
        except (OSError, ValueError, ImportError) as exc:
            raise BackendError(f"cannot load model {source.describe()}: {exc}") from None
        self.load_s = time.monotonic() - t0
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.tokenizer.chat_template and not (self.processor and self.processor.chat_template):
            raise BackendError(f"model {source.describe()} has no chat template")
        from evol.backends.decoding import GrammarCache

        vocab = self.model.get_output_embeddings().weight.shape[0]
        self.grammars = GrammarCache(self.tokenizer, vocab_size=vocab)
        self.vocab_size = vocab
        eos = self.tokenizer.eos_token_id
        self.stop_ids = sorted(set(self.grammars.stop_ids) | ({eos} if eos is not None else set()))
        self.stats = CallStats()  # every request decoded, and every batch
        self._lock = threading.Lock()
        self._warned_images = False

    # -- prompts --------------------------------------------------------------------
    def _chat(self, request: Request) -> tuple[list[dict[str, Any]], list[Any]]:
        """The request as chat-template messages (`chat_messages`: an ``{"type": "image"}``
        placeholder per picture), and its pictures in order, as pixels (`ImageStore.load`)."""
        if not self.vision:
            if request.images() and not self._warned_images:
                self._warned_images = True
                log.warning("%s is a text-only model: image parts are left out (run with --no-images "
                            "so the prompts describe the pictures in words)", self.source.describe())
            return chat_messages(request, None, content="joined"), []
        pictures: list[Any] = []

        def image(ref: str) -> dict[str, Any]:
            pictures.append(self.images.load(ref))
            return {"type": "image"}

        return chat_messages(request, image, content="parts"), pictures

    def _render(self, messages: list[dict[str, Any]]) -> str:
        owner = self.processor if self.vision else self.tokenizer
        return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # -- one batch ------------------------------------------------------------------
    def run(self, requests: list[Request]) -> list[Reply | BackendError]:
        """Answer a batch: a `Reply` or a `BackendError` per request, in order."""
        with self._lock:
            return self._run(requests)

    def _run(self, requests: list[Request]) -> list[Reply | BackendError]:
        results: list[Reply | BackendError | None] = [None] * len(requests)
        ready: list[_Prepared] = []
        for i, req in enumerate(requests):
            try:
                messages, imgs = self._chat(req)
                ready.append(_Prepared(i, req, self._render(messages), imgs, self._row_spec(req)))
            except ImageError as exc:
                results[i] = BackendError(f"{req.tag or 'request'}: {exc}")
            except Exception as exc:  # a template or schema this model cannot take
                results[i] = BackendError(f"{req.tag or 'request'}: cannot prepare the request: {exc}")
        for group in _by_length(ready):
            for p, reply in zip(group, self._generate_group(group)):
                results[p.index] = reply
        return results  # type: ignore[return-value]

    def _generate_group(self, group: list[_Prepared]) -> list[Reply | BackendError]:
        try:
            return self._generate([p.prompt for p in group], [im for p in group for im in p.images],
                                  [p.row for p in group], [p.request for p in group])
        except Exception as exc:
            if _out_of_memory(exc) and len(group) > 1:  # halve the batch and try again
                log.warning("out of memory on a batch of %d; splitting it", len(group))
                self._free_memory()
                half = len(group) // 2
                return self._generate_group(group[:half]) + self._generate_group(group[half:])
            log.exception("batch of %d failed", len(group))
            return [BackendError(f"{p.request.tag or 'request'}: generation failed: {exc!r}") for p in group]

    def _free_memory(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _row_spec(self, request: Request):
        from evol.backends.decoding import RowSpec

        s = request.sampling
        grammar = None
        if request.schema is not None:
            grammar = self.grammars.json_schema(bounded_schema(request.schema, self.max_string, self.max_items))
        return RowSpec(grammar=grammar, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
                       max_new_tokens=max(1, min(s.max_tokens, self.max_new_tokens)))

    def _generate(self, prompts: list[str], pictures: list[Any], rows: list, requests: list[Request]) -> list[Reply | BackendError]:
        import torch

        from evol.backends.decoding import RowController

        if self.vision:
            inputs = self.processor(text=prompts, images=pictures or None, padding=True,
                                    add_special_tokens=False, return_tensors="pt")
        else:
            inputs = self.tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
        inputs = inputs.to(self.device)
        controller = RowController(rows, self.stop_ids, self.vocab_size, banned=self.grammars.control_ids)
        t0 = time.monotonic()
        with torch.inference_mode():
            try:
                out = self._decode(inputs, controller, rows)
            except Exception as exc:
                if self.cache is None:
                    raise
                log.warning("%s: generation with a %s KV cache failed (%r); using the default cache from now on",
                            self.source.describe(), self.cache, exc)
                self.cache = None
                controller = RowController(rows, self.stop_ids, self.vocab_size, banned=self.grammars.control_ids)
                out = self._decode(inputs, controller, rows)
        elapsed = time.monotonic() - t0
        prompt_len = inputs["input_ids"].shape[1]
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        replies: list[Reply | BackendError] = []
        for i, (req, row) in enumerate(zip(requests, rows)):
            tokens = out[i, prompt_len:].tolist()
            n = next((k for k, t in enumerate(tokens) if t in self.stop_ids), len(tokens))
            text = self.tokenizer.decode(tokens[:n], skip_special_tokens=True)
            stopped = n < len(tokens) and not controller.at_limit[i]  # the model chose to stop
            reply = Reply(text=text, tokens_in=int(lengths[i]), tokens_out=n + (1 if stopped else 0),
                          finish_reason="stop" if stopped else "length")
            result = self._with_data(req, reply, controller.broken[i], row.max_new_tokens)
            self.stats.ran(reply, usable=isinstance(result, Reply))
            replies.append(result)
        self.stats.batch(len(requests), elapsed)
        return replies

    def _decode(self, inputs: Any, controller: Any, rows: list) -> Any:
        from transformers import LogitsProcessorList

        return self.model.generate(
            **inputs, max_new_tokens=max(r.max_new_tokens for r in rows) + 1, do_sample=False,
            num_beams=1, temperature=None, top_p=None, top_k=None, cache_implementation=self.cache,
            logits_processor=LogitsProcessorList([controller]),
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.stop_ids)

    @staticmethod
    def _with_data(request: Request, reply: Reply, broken: str | None,
                   limit: int | None = None) -> Reply | BackendError:
        """The reply with its parsed JSON, or the `ReplyParseError` that fails this request
        alone: no JSON, cut off at the token limit `limit`, outside the schema's values, or
        refused by the request's `validate` (a local backend does not ask again)."""
        tag = request.tag or "request"
        if request.schema is not None:
            if broken:
                return ReplyParseError(f"{tag}: constrained decoding broke off ({broken})")
            try:
                reply.data = json.loads(reply.text, strict=False)  # the usual case: the schema's JSON
            except ValueError:
                if reply.finish_reason == "length":  # a part of it would parse, but it is not the answer
                    return ReplyParseError(
                        f"{tag}: reply cut off at --max-tokens {limit or request.sampling.max_tokens} "
                        f"(finish_reason length): {reply.text[:80]!r}...")
                try:
                    reply.data = extract_json(reply.text)
                except ReplyParseError as exc:
                    return ReplyParseError(f"{tag}: no usable JSON: {exc}")
            problem = schema_problem(request.schema, reply.data)
            if problem:
                return ReplyParseError(f"{tag}: {problem}")
        if request.validate is not None:
            problem = request.validate(reply.data)
            if problem:
                return ReplyParseError(f"{tag}: {problem}")
        return reply


@dataclass
class _Prepared:
    """A request turned into its prompt text, images and decoding spec; `index` in the batch."""

    index: int
    request: Request
    prompt: str
    images: list[Any]
    row: Any

    @property
    def size(self) -> int:  # a cheap stand-in for the prompt's length in tokens
        return len(self.prompt)


def _by_length(ready: list[_Prepared], spread: float = 1.5) -> list[list[_Prepared]]:
    """Split a batch where prompt sizes differ by more than `spread`: padding a 900-token judge
    prompt to a 2,000-token operator prompt would double its prefill, which dominates on CPU."""
    groups: list[list[_Prepared]] = []
    for p in sorted(ready, key=lambda p: p.size):
        if groups and p.size <= spread * max(1, groups[-1][0].size):
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


@contextlib.contextmanager
def _quiet_gguf():
    """transformers draws a tqdm bar per GGUF tensor whatever its own progress setting."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


class HFBackend(BatchingBackend):
    """`Backend` over an `HFEngine`; requests that arrive together are decoded as one batch."""

    worker_name = "hf-backend-worker"

    def __init__(self, engine: HFEngine, *, name: str | None = None, max_batch: int = 8,
                 batch_window: float = 0.02):
        super().__init__()
        self.engine = engine
        self.model = name or engine.source.describe()
        self.max_batch = max(1, max_batch)
        self.batch_window = batch_window

    @property
    def text_only(self) -> bool:
        return not self.engine.vision

    @property
    def stats(self) -> CallStats:
        """The engine's `CallStats`: every request it decoded, and every batch."""
        return self.engine.stats

    async def _gather(self, queue: asyncio.Queue[Job]) -> list[Job]:
        """Up to `max_batch` jobs: what is queued, and what arrives within `batch_window`."""
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        deadline = loop.time() + self.batch_window
        while len(batch) < self.max_batch:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return batch

    def _run_batch(self, requests: list[Request]) -> list[Reply | BackendError]:
        return self.engine.run(requests)


def load_hf_backend(path: str | None, *, images: ImageStore, device: str = "auto", max_batch: int = 8,
                    max_new_tokens: int = 1024, name: str | None = None, max_string: int | None = None,
                    max_items: int | None = None) -> HFBackend:
    """An `HFBackend` on the model at `path`, or on the embedded default when `path` is None.

    `max_string`/`max_items` bound the JSON that constrained decoding lets the model write.
    """
    from evol.backends.local import model_source

    source = embedded_model() if path is None else model_source(path)
    # The embedded 135M model rambles: short strings and lists keep its answers finishing
    # on CPU. Real models get the schema as the prompt wrote it.
    default = EMBEDDED_BOUNDS if path is None else (None, None)
    engine = HFEngine(source, images=images, device=device, max_new_tokens=max_new_tokens,
                      max_string=max_string or default[0], max_items=max_items or default[1])
    label = name or (EMBEDDED_NAME if path is None else str(path))
    return HFBackend(engine, name=label, max_batch=max_batch)
