"""A backend for any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, ...).

Images go out as ``image_url`` parts: local references as base64 data URLs made by the
`ImageStore`, http(s)/data URLs as they are.

Structured output, and the fallback. When a request carries a JSON schema the backend
first sends it as ``response_format={"type": "json_schema", ...}``, which lets servers
constrain decoding. Some servers reject that with a 400 (older vLLM builds, llama.cpp
variants, proxies). The first such 400 (one whose message mentions response_format,
json_schema or guided decoding) switches this backend to *prompt mode* for the rest of
the run, with one warning in the log: the schema is then written into the system
message (see `schema_instruction`) and the reply is dug out of prose or fenced blocks
by `extract_json`. The rejected call is resent at once and does not count as an attempt.
``structured="json_schema"`` never falls back; ``structured="prompt"`` starts in prompt
mode.

Failures: 429 makes the shared `Limiter` cool down (Retry-After honoured) and retries;
5xx, timeouts, connection errors and unparseable replies retry with jittered
exponential backoff up to `max_attempts`; a retry after an unusable answer carries another
sampling seed, so that a server which honours the seed can answer differently. What is left after the last attempt
is classed (see `BackendError`): no answer at all is a `TransportError` (the record stays
pending), an unusable answer a `ReplyParseError` (the round fails). 401/403 (the key) and
404 (the address or model) stop the run through the shared `Breaker`, which also stops it
when every call keeps failing by transport. Any other 4xx fails that call at once with the
status and the server's message. Texts taken from the server are scrubbed of the API key,
and URLs of their credentials.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from typing import Any

import openai

from evol.backends.base import (BackendError, Image, Reply, ReplyParseError, Request, RunStopped, Text,
                                TransportError)
from evol.backends.health import Breaker
from evol.backends.jsonfix import extract_json, schema_instruction
from evol.backends.limits import Limiter, RetryableError, RetryableParseError, retry_policy
from evol.images import ImageError, ImageStore, is_url
from evol.redact import redact_url

log = logging.getLogger(__name__)

TOKENS_PER_IMAGE = 800
_SCHEMA_WORDS = ("response_format", "json_schema", "guided")
_STRUCTURED = ("auto", "json_schema", "prompt")


class OpenAIBackend:
    """`Backend` over the openai SDK (aiohttp transport, SDK retries off: ours apply)."""

    def __init__(self, model: str, base_url: str | None, api_key_env: str = "OPENAI_API_KEY", *,
                 images: ImageStore, limiter: Limiter, timeout: float = 120.0,
                 max_attempts: int = 6, image_detail: str | None = "auto",
                 structured: str = "auto", backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 breaker: Breaker | None = None):
        if structured not in _STRUCTURED:
            raise ValueError(f"structured must be one of {_STRUCTURED}, not {structured!r}")
        self.model = model
        self.base_url = base_url
        self.where = redact_url(base_url) or "the default OpenAI endpoint"
        self.breaker = breaker if breaker is not None else Breaker()
        self.api_key_env = api_key_env
        self.images = images
        self.limiter = limiter
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.image_detail = image_detail
        # part of the cache key ("auto", the default, adds nothing: keys made before stay valid)
        self.image_options = {"detail": image_detail} if image_detail and image_detail != "auto" else None
        self.structured = structured
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.fallback = structured == "prompt"
        self._client: openai.AsyncOpenAI | None = None
        self.stats: dict[str, int] = dict(
            requests_sent=0, retries=0, errors_429=0, errors_5xx=0, timeouts=0,
            connection_errors=0, parse_failures=0, tokens_in=0, tokens_out=0)

    # -- plumbing -------------------------------------------------------------------
    def _secret(self) -> str:
        return os.environ.get(self.api_key_env) or ""

    def _scrub(self, text: str, limit: int = 300) -> str:
        secret = self._secret()
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        text = " ".join(redact_url(str(text)).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def _ensure_client(self) -> openai.AsyncOpenAI:
        # created on first use so that it belongs to the running event loop
        if self._client is None:
            # Keep-alive for every slot: the SDK keeps only 100 idle connections, so above
            # that concurrency each answer closed a socket and the next call opened one.
            slots = self.limiter.concurrency
            limits = _http_limits(max_connections=max(100, 2 * slots),
                                  max_keepalive_connections=max(20, slots))
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._secret() or "EMPTY", max_retries=0,
                timeout=self.timeout, http_client=openai.DefaultAioHttpClient(limits=limits))
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- request building ---------------------------------------------------------------
    async def _messages(self, request: Request) -> tuple[list[dict[str, Any]], int]:
        out, n_images = [], 0
        for msg in request.messages:
            parts: list[dict[str, Any]] = []
            for part in msg.parts:
                if isinstance(part, Text):
                    parts.append({"type": "text", "text": part.text})
                elif isinstance(part, Image):
                    url = part.ref if is_url(part.ref) else await self.images.adata_url(part.ref)
                    image_url = {"url": url}
                    if self.image_detail:
                        image_url["detail"] = self.image_detail
                    parts.append({"type": "image_url", "image_url": image_url})
                    n_images += 1
            if len(parts) == 1 and parts[0]["type"] == "text":
                out.append({"role": msg.role, "content": parts[0]["text"]})
            else:
                out.append({"role": msg.role, "content": parts})
        return out, n_images

    @staticmethod
    def _with_instruction(messages: list[dict[str, Any]], schema: dict[str, Any]) -> list[dict[str, Any]]:
        extra = schema_instruction(schema)
        messages = list(messages)
        for i, msg in enumerate(messages):
            if msg["role"] == "system":
                content = msg["content"]
                if isinstance(content, str):
                    content = f"{content}\n\n{extra}" if content else extra
                else:
                    content = [*content, {"type": "text", "text": extra}]
                messages[i] = {**msg, "content": content}
                return messages
        return [{"role": "system", "content": extra}, *messages]

    # -- the call -----------------------------------------------------------------------
    async def complete(self, request: Request) -> Reply:
        tag = request.tag or "request"
        client = self._ensure_client()
        try:
            messages, n_images = await self._messages(request)
        except ImageError as exc:
            raise BackendError(f"{tag}: {exc}") from None
        s = request.sampling
        est = request.text_chars() // 4 + n_images * TOKENS_PER_IMAGE + s.max_tokens
        params: dict[str, Any] = dict(model=self.model, temperature=s.temperature,
                                      top_p=s.top_p, max_tokens=s.max_tokens)
        if s.seed is not None:
            params["seed"] = s.seed
        attempts = reseeds = 0
        self.breaker.check()
        try:
            async for attempt in retry_policy(self.max_attempts, self.backoff_base, self.backoff_cap):
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        self.stats["retries"] += 1
                    try:
                        return await self._attempt(client, request, messages, params, est)
                    except RetryableParseError:
                        # the server answered, unusably: the retry gets another sampling seed,
                        # or a server that honours seeds would answer the same again. (After
                        # no answer at all the seed stays, so a rerun gets what an
                        # uninterrupted run would have got.)
                        reseeds += 1
                        if s.seed is not None:
                            params["seed"] = (s.seed + reseeds) % 2**31
                        raise
        except RetryableParseError as exc:
            raise ReplyParseError(
                f"{tag}: no usable JSON after {attempts} attempt(s): {exc}") from None
        except RetryableError as exc:
            raise TransportError(f"{tag}: no answer after {attempts} attempt(s): {exc}") from None
        except RunStopped:
            raise
        except BackendError as exc:
            raise BackendError(f"{tag}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, client: openai.AsyncOpenAI, request: Request,
                       messages: list[dict[str, Any]], params: dict[str, Any], est: int) -> Reply:
        schema = request.schema
        while True:
            kwargs = dict(params)
            if schema is not None and self.fallback:
                kwargs["messages"] = self._with_instruction(messages, schema)
            else:
                kwargs["messages"] = messages
                if schema is not None:
                    kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                        "name": request.schema_name, "schema": schema, "strict": False}}
            async with self.limiter.slot(est):
                self.breaker.check()  # it may have tripped while this call waited
                self.stats["requests_sent"] += 1
                try:
                    # client.post sends the body as it is: the typed create() walks every
                    # message and schema node through its transform layer, which doubles
                    # the CPU per request at high concurrency.
                    resp = await client.post("/chat/completions", body=kwargs, cast_to=object)
                    break
                except openai.APIConnectionError as exc:  # includes APITimeoutError
                    if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
                        self.stats["timeouts"] += 1
                        self.breaker.failure(f"the server at {self.where} did not answer within {self.timeout:g} s")
                        raise RetryableError(f"timed out after {self.timeout:g} s") from None
                    self.stats["connection_errors"] += 1
                    cause = self._scrub(_root_cause(exc))
                    self.breaker.failure(f"cannot connect to {self.where}: {cause}")
                    raise RetryableError(f"cannot connect to {self.where}: {cause}") from None
                except openai.APIStatusError as exc:
                    status, message = exc.status_code, self._server_message(exc)
                    if status == 429:
                        self.stats["errors_429"] += 1
                        self.limiter.cool_down(_retry_after(exc.response.headers))
                        self.breaker.failure(f"the server at {self.where} kept rate limiting (HTTP 429: {message})")
                        raise RetryableError(f"rate limited (HTTP 429): {message}") from None
                    if status >= 500 or status == 408:
                        if status >= 500:
                            self.stats["errors_5xx"] += 1
                        self.breaker.failure(f"the server at {self.where} failed (HTTP {status}: {message})")
                        raise RetryableError(f"HTTP {status}: {message}") from None
                    if status in (401, 403):
                        key = (f"the key from {self.api_key_env}" if self._secret()
                               else f"the request without a key ({self.api_key_env} is not set)")
                        self.breaker.stop(f"the server at {self.where} refused {key} (HTTP {status}: {message})")
                        self.breaker.check()
                    if status == 404:
                        self.breaker.stop(f"the server at {self.where} answered HTTP 404 ({message}): "
                                          f"check --base-url and --model {self.model!r}")
                        self.breaker.check()
                    if (status == 400 and "response_format" in kwargs and self.structured == "auto"
                            and any(w in message.lower() for w in _SCHEMA_WORDS)):
                        self._switch_to_prompt_mode(message)
                        continue  # resend at once in prompt mode; not a failed attempt
                    raise BackendError(f"HTTP {status}: {message}") from None
        self.breaker.success()
        return self._reply(resp, request)

    def _switch_to_prompt_mode(self, message: str) -> None:
        if not self.fallback:
            self.fallback = True
            log.warning(
                "%s rejected response_format json_schema (HTTP 400: %s); sending the schema "
                "in the prompt instead for the rest of this run", self.where, message)

    def _server_message(self, exc: openai.APIStatusError) -> str:
        body = exc.body
        if isinstance(body, dict):
            inner = body.get("error", body)
            text = inner.get("message") if isinstance(inner, dict) else inner
            if text is None:
                text = body.get("detail") or body.get("message") or body
        elif body is not None:
            text = body
        else:
            text = exc.message
        return self._scrub(str(text))

    def _reply(self, resp: Any, request: Request) -> Reply:
        if not isinstance(resp, dict):
            raise RetryableError(f"reply is not a JSON object: {self._scrub(str(resp), 80)!r}")
        usage = resp.get("usage") or {}
        tokens_in = int(usage.get("prompt_tokens") or 0)
        tokens_out = int(usage.get("completion_tokens") or 0)
        self.stats["tokens_in"] += tokens_in
        self.stats["tokens_out"] += tokens_out
        choices = resp.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            raise RetryableError("reply without choices")
        choice = choices[0]
        text = (choice.get("message") or {}).get("content") or ""
        data = None
        if request.schema is not None:
            try:
                data = extract_json(text)
            except ReplyParseError as exc:
                self.stats["parse_failures"] += 1
                raise RetryableParseError(self._scrub(str(exc))) from None
            if request.schema.get("type") == "object" and not isinstance(data, dict):
                self.stats["parse_failures"] += 1
                raise RetryableParseError(
                    f"expected a JSON object, got {type(data).__name__}: {self._scrub(text, 80)!r}")
        return Reply(text=text, data=data, tokens_in=tokens_in, tokens_out=tokens_out,
                     finish_reason=choice.get("finish_reason"))


def _http_limits(**kw: int):
    """Connection limits in the HTTP library this openai release uses (httpx2, or httpx before)."""
    try:
        import httpx2 as http
    except ImportError:  # older openai releases
        import httpx as http
    return http.Limits(**kw)


def _causes(exc: BaseException):
    seen = 0
    while exc is not None and seen < 8:
        yield exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def _refused(exc: BaseException) -> bool:
    """True for a failed connect that the SDK's aiohttp transport reports as a timeout."""
    return any(isinstance(e, OSError) and not isinstance(e, TimeoutError) for e in _causes(exc))


def _root_cause(exc: BaseException) -> str:
    last = exc
    for last in _causes(exc):
        pass
    return str(last) or type(last).__name__


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (delta or HTTP date), else None."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
