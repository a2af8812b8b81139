"""A backend for any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, ...).

Images go out as ``image_url`` parts: local references as base64 data URLs made by the
`ImageStore`, http(s)/data URLs as they are.

Structured output: four *dialects* say how a request's JSON schema goes to the server.

* ``json_schema``: ``response_format={"type": "json_schema", "json_schema": {...}}``
  (OpenAI, vLLM, SGLang, recent Ollama): the server constrains decoding.
* ``json_object``: ``response_format={"type": "json_object", "schema": schema}``, what
  llama.cpp's server constrains decoding with (it answers json_schema with HTTP 500 "Input
  should be 'text' or 'json_object'"); a server that honours only plain JSON mode ignores
  the ``schema`` key, so the schema is written into the system message as well.
* ``ollama``: the schema as a top-level ``format`` field next to the messages (what
  Ollama's native API takes), and in the system message as Ollama advises.
* ``prompt``: no structured-output field; the schema is written into the system message
  (see `schema_instruction`). Any server, e.g. ``transformers serve``, which ignores
  ``response_format``.

Whatever the dialect, the reply is dug out of prose or fenced blocks by `extract_json`,
and what a server may not enforce (ranges, counts) is checked after parsing.
``structured="auto"`` (the default) starts with json_schema (or the dialect the preflight,
`evol.backends.preflight`, found to work) and steps down json_schema -> json_object ->
prompt when the server refuses one: a refusal is an error answer of any status but
401/403/408/429 (400, 422 and llama.cpp's 500 included) whose body names response_format,
json_schema, schema, guided decoding or json_object. Each step is one warning in the log;
the refused call is resent at once and does not count as an attempt. A fixed dialect
(``structured="json_schema"`` ...) never steps down: a refusal is then an error.

Failures: 429 makes the shared `Limiter` cool down (Retry-After honoured) and retries;
5xx, timeouts, connection errors and unparseable replies retry with jittered
exponential backoff up to `max_attempts`; a retry after an unusable answer carries another
sampling seed, so that a server which honours the seed can answer differently. What is left after the last attempt
is classed (see `BackendError`): no answer at all is a `TransportError` (the record stays
pending), an unusable answer a `ReplyParseError` (the round fails). 401/403 (the key) and
404 (the address or model) stop the run through the shared `Breaker`, which also stops it
when every call keeps failing by transport. Any other 4xx fails that call at once with the
status and the server's message. Texts taken from the server are scrubbed of the API key,
and URLs of their credentials. A timeout shrinks the shared window too (`Limiter.congested`,
like a 429 without Retry-After): calls were queueing in the server.

Several servers: `base_url` may be a list (or an `EndpointPool` passed as `endpoints`,
shared by the backends of one run that use the same servers): each request goes to the
least-loaded healthy endpoint, and a failing one is set aside (`evol.backends.endpoints`).
The structured-output dialect is settled per endpoint. With one endpoint all of this is
what it was.

Accounting: the backend's `stats` (an `evol.stats.CallStats`) counts each call answered
or failed, and every request sent once under its outcome (ok, retried or failed, by kind;
see `__init__`) with the tokens the server reported for it; `CallStats.http` sums them
for the manifest. An error raised after the last attempt carries what the call sent and
spent (`BackendError.attempts`, `tokens_in`, `tokens_out`).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import os
import time
from typing import Any


class _Lazy:
    """`openai`, imported on first use (~0.4 s): the chat path posts with aiohttp and needs
    the SDK only for the preflight's calls and for its error classes on a failure."""

    def __getattr__(self, name):
        import importlib

        mod = importlib.import_module("openai")
        globals()["openai"] = mod
        return getattr(mod, name)


openai = _Lazy()

from evol.backends.base import (BackendError, Reply, ReplyParseError, Request, RunStopped, TransportError,
                                chat_messages, image_url_part)
from evol.backends.endpoints import Endpoint, EndpointPool
from evol.backends.health import Breaker
from evol.backends.jsonfix import extract_json, schema_instruction
from evol.backends.limits import Limiter, RetryableError, RetryableParseError, retry_policy
from evol.images import ImageError, ImageStore
from evol.redact import redact_url
from evol.stats import CallStats

log = logging.getLogger(__name__)

TOKENS_PER_IMAGE = 800
RETRY_TEMPERATURE = 0.5  # the least temperature of a retry after an unusable answer
_SCHEMA_WORDS = ("response_format", "json_schema", "schema", "guided", "json_object")
DIALECTS = ("json_schema", "json_object", "ollama", "prompt")
STRUCTURED = ("auto", *DIALECTS)
_STRUCTURED = STRUCTURED
STEP_DOWN = {"json_schema": "json_object", "json_object": "prompt"}  # what auto tries next
_NOT_REFUSALS = (401, 403, 408, 429)  # statuses that never mean "this dialect is refused"


class OpenAIBackend:
    """`Backend` over the openai SDK (aiohttp transport, SDK retries off: ours apply)."""

    def __init__(self, model: str, base_url: Any = None, api_key_env: str = "OPENAI_API_KEY", *,
                 images: ImageStore, limiter: Limiter, timeout: float = 120.0,
                 max_attempts: int = 6, image_detail: str | None = "auto",
                 structured: str = "auto", backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 breaker: Breaker | None = None, endpoints: EndpointPool | None = None):
        if structured not in _STRUCTURED:
            raise ValueError(f"structured must be one of {_STRUCTURED}, not {structured!r}")
        self.model = model
        first = "json_schema" if structured == "auto" else structured
        if endpoints is None:
            endpoints = EndpointPool(base_url, limiter.concurrency, breaker=breaker, dialect=first)
        self.pool = endpoints
        self.base_url = self.pool.endpoints[0].url
        self.where = ", ".join(ep.where for ep in self.pool.endpoints)
        self.breaker = self.pool.breaker
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
        # Calls answered and failed, and every request sent (`stats.sent`, its tokens as the
        # server counted them) once under its outcome (`stats.outcomes`): "ok" (a usable
        # answer), "retried_<kind>" (it failed and the call went on to another request) or
        # "failed_<kind>" (the call's last request failed). Kinds: 429, 5xx (and 408),
        # timeout, connection, parse (an unusable answer), refused (a structured-output
        # dialect the server refused: resent at once), 4xx, stopped (the run stopped),
        # cancelled. `CallStats.http` makes the manifest's block of them.
        self.stats = CallStats(by_outcome=True)

    # -- accounting -----------------------------------------------------------------
    def _sending(self) -> None:
        """A request goes out now (inside its slot)."""
        self.stats.sent.requests += 1
        box = _ATTEMPT.get()
        if box is not None:
            box.sends += 1
            box.tokens_in = box.tokens_out = 0

    # -- plumbing -------------------------------------------------------------------
    def _secret(self) -> str:
        return os.environ.get(self.api_key_env) or ""

    def _scrub(self, text: str, limit: int = 300) -> str:
        secret = self._secret()
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        text = " ".join(redact_url(str(text)).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    async def aclose(self) -> None:
        await self.pool.aclose()

    # -- request building ---------------------------------------------------------------
    async def _messages(self, request: Request) -> tuple[list[dict[str, Any]], int]:
        """The chat messages (`chat_messages`), local images as data URLs encoded off the
        event loop, and how many image parts they hold."""
        refs = request.images()
        urls = {ref: await self.images.adata_url(ref) for ref in dict.fromkeys(refs)}
        return chat_messages(request, lambda ref: image_url_part(urls[ref], self.image_detail)), len(refs)

    @staticmethod
    def _with_instruction(messages: list[dict[str, Any]], schema: dict[str, Any]) -> list[dict[str, Any]]:
        extra = schema_instruction(schema)
        return OpenAIBackend._with_system_text(messages, extra)

    @staticmethod
    def _with_system_text(messages: list[dict[str, Any]], extra: str) -> list[dict[str, Any]]:
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

    @property
    def dialect(self) -> str:
        """The dialect requests go out in now (the first endpoint's; each endpoint has its
        own): auto starts at json_schema and may step down."""
        return self.pool.endpoints[0].dialect

    @property
    def fallback(self) -> bool:
        """True once the schema travels in the prompt only (dialect ``prompt``)."""
        return self.dialect == "prompt"

    def use_dialect(self, dialect: str, endpoint: Endpoint | None = None) -> None:
        """Send every request from now on in `dialect` (the preflight's finding), to
        `endpoint` or to every endpoint; under ``structured="auto"`` a refusal may still step
        it down."""
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}, not {dialect!r}")
        for ep in [endpoint] if endpoint is not None else self.pool.endpoints:
            ep.dialect = dialect

    def shape(self, messages: list[dict[str, Any]], request: Request, dialect: str | None = None) -> dict[str, Any]:
        """The body fields that carry the messages and the request's schema in `dialect`
        (the first endpoint's current one by default)."""
        schema = request.schema
        if schema is None:
            return {"messages": messages}
        dialect = dialect or self.dialect
        if dialect == "json_schema":
            return {"messages": messages, "response_format": {"type": "json_schema", "json_schema": {
                "name": request.schema_name, "schema": schema, "strict": False}}}
        body: dict[str, Any] = {"messages": self._with_instruction(messages, schema)}
        if dialect == "json_object":
            body["response_format"] = {"type": "json_object", "schema": schema}
        elif dialect == "ollama":
            body["format"] = schema
        return body

    def step_down(self, refused: str, status: int, message: str, endpoint: Endpoint | None = None) -> bool:
        """After the server (`endpoint`, by default the first) refused `refused`: under auto,
        move it to the next dialect (once, however many calls in flight were refused the
        same way) and say so. False when this backend may not step down (a fixed dialect, or
        nothing below)."""
        if self.structured != "auto" or refused not in STEP_DOWN:
            return False
        ep = endpoint if endpoint is not None else self.pool.endpoints[0]
        if ep.dialect == refused:
            ep.dialect = STEP_DOWN[refused]
            how = ("the schema as response_format json_object" if ep.dialect == "json_object"
                   else "the schema in the prompt")
            log.warning("%s refused response_format %s (HTTP %s: %s); sending %s instead for the rest "
                        "of this run", ep.where, refused, status, message, how)
        return True

    # -- the call -----------------------------------------------------------------------
    async def complete(self, request: Request) -> Reply:
        tag = request.tag or "request"
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
        cost = _Cost(self)
        self.breaker.check()
        try:
            async for attempt in retry_policy(self.max_attempts, self.backoff_base, self.backoff_cap):
                with attempt:
                    attempts += 1
                    cost.begin()
                    try:
                        try:
                            return cost.answered(await self._attempt(request, messages, params, est))
                        except BaseException as exc:
                            cost.failed(exc)
                            raise
                    except RetryableParseError:
                        # the server answered, unusably: the retry gets another sampling seed,
                        # or a server that honours seeds would answer the same again, and at
                        # least RETRY_TEMPERATURE, since a greedy decode (the judge's 0) repeats
                        # itself whatever the seed. (After no answer at all nothing changes, so
                        # a rerun gets what an uninterrupted run would have got.)
                        reseeds += 1
                        if s.seed is not None:
                            params["seed"] = (s.seed + reseeds) % 2**31
                        params["temperature"] = max(s.temperature, RETRY_TEMPERATURE)
                        raise
        except RetryableParseError as exc:
            raise cost.close(ReplyParseError(
                f"{tag}: no usable answer after {attempts} attempt(s): {exc}")) from None
        except RetryableError as exc:
            raise cost.close(TransportError(f"{tag}: no answer after {attempts} attempt(s): {exc}")) from None
        except RunStopped as exc:
            cost.close(exc)
            raise
        except BackendError as exc:
            raise cost.close(BackendError(f"{tag}: {exc}")) from None
        except BaseException:  # cancelled: the request in flight, if any, failed
            cost.close(None)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, request: Request, messages: list[dict[str, Any]], params: dict[str, Any],
                       est: int) -> Reply:
        async with self.limiter.slot(est):
            self.breaker.check()  # it may have tripped while this call waited
            ep = await self.pool.acquire()
            try:
                resp = await self._send(ep, request, messages, params)
            finally:
                self.pool.release(ep)
        _note_usage(resp)
        return self._reply(resp, request)

    async def _send(self, ep: Endpoint, request: Request, messages: list[dict[str, Any]],
                    params: dict[str, Any]) -> Any:
        """One request to `ep` (resent at once in the next dialect when it refuses one); its
        failure classed, counted for the endpoint, and raised as `_attempt` raises it."""
        pool, where = self.pool, ep.where
        at = f"{where}: " if len(pool.endpoints) > 1 else ""  # which server, when there are several
        while True:
            kwargs = dict(params)
            sent = ep.dialect if request.schema is not None else None
            kwargs.update(self.shape(messages, request, sent))
            self._sending()
            pool.sent(ep)
            t0 = time.monotonic()
            try:
                # client.post sends the body as it is: the typed create() walks every
                # message and schema node through its transform layer, which doubles
                # the CPU per request at high concurrency.
                resp = await self._post(ep, kwargs)
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
                    self.limiter.congested()  # calls queue in the server: fewer at once
                    pool.failed(ep, f"the server at {where} did not answer within {self.timeout:g} s", "timeout")
                    raise RetryableError(f"{at}timed out after {self.timeout:g} s", "timeout") from None
                cause = self._scrub(_root_cause(exc))
                pool.failed(ep, f"cannot connect to {where}: {cause}", "connection")
                raise RetryableError(f"cannot connect to {where}: {cause}", "connection") from None
            except openai.APIStatusError as exc:
                status, message = exc.status_code, self._server_message(exc)
                if sent not in (None, "prompt") and schema_refusal(exc):
                    if self.step_down(sent, status, message, ep):
                        self.limiter.discard()  # no answer: its latency says nothing
                        continue  # resend at once in the next dialect; not a failed attempt
                    if self.structured != "auto":  # a fixed dialect: no call can succeed
                        self._misconfigured(ep, f"the server at {where} refused the schema sent as "
                                                f"{sent} (HTTP {status}: {message}): pass --structured auto "
                                                "to find a way it takes")
                if status == 429:
                    self.limiter.cool_down(_retry_after(exc.response.headers))
                    pool.failed(ep, f"the server at {where} kept rate limiting (HTTP 429: {message})", "429")
                    raise RetryableError(f"rate limited (HTTP 429): {message}", "429") from None
                if status >= 500 or status == 408:
                    pool.failed(ep, f"the server at {where} failed (HTTP {status}: {message})", "5xx")
                    raise RetryableError(f"{at}HTTP {status}: {message}", "5xx") from None
                if status in (401, 403):
                    key = (f"the key from {self.api_key_env}" if self._secret()
                           else f"the request without a key ({self.api_key_env} is not set)")
                    self._misconfigured(ep, f"the server at {where} refused {key} (HTTP {status}: {message})")
                if status == 404:
                    self._misconfigured(ep, f"the server at {where} answered HTTP 404 ({message}): "
                                            f"check --base-url and --model {self.model!r}")
                # refused for this request alone, as far as we know; but the same refusal of
                # every call (a prompt longer than the model's context) stops the run
                pool.refused(ep)
                self.breaker.refused(f"the server at {where} refused the request (HTTP {status}: {message})")
                raise BackendError(f"HTTP {status}: {message}") from None
            pool.succeeded(ep, time.monotonic() - t0)
            return resp

    def _session(self, ep: Endpoint):
        session = ep.session
        if session is None:
            import aiohttp

            base = ep.url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
            slots = min(ep.concurrency, self.limiter.concurrency)
            connector = aiohttp.TCPConnector(limit=max(100, 2 * slots), limit_per_host=0,
                                             keepalive_timeout=30, ssl=None if base.startswith("https") else False)
            headers = {"Authorization": f"Bearer {self._secret() or 'EMPTY'}",
                       "Content-Type": "application/json", "Accept": "application/json"}
            session = ep.session = aiohttp.ClientSession(
                connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
                skip_auto_headers=("User-Agent",))
            ep.chat_url = base.rstrip("/") + "/chat/completions"
            ep.proxy = _proxy_for(ep.chat_url)
        return session

    async def _post(self, ep: Endpoint, body: dict[str, Any]) -> Any:
        """POST the chat request with aiohttp directly: the SDK's request building, httpx
        layers and transport cost more CPU than the rest of a call together."""
        return await self.request(ep, "POST", "/chat/completions", body)

    async def request(self, ep: Endpoint, method: str, path: str, body: dict[str, Any] | None = None, *,
                      headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        """One HTTP request to `ep` over its aiohttp session (the chat calls, the preflight's
        calls): the parsed JSON answer. Failures are raised as the openai SDK's error classes
        (imported only then), so they are classed the same way everywhere."""
        import aiohttp

        session = self._session(ep)
        url = ep.chat_url if path == "/chat/completions" else ep.chat_url[:-len("/chat/completions")] + path
        kwargs: dict[str, Any] = {"proxy": ep.proxy}
        if body is not None:
            kwargs["data"] = _dumps(body)
        if headers:
            kwargs["headers"] = headers
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with session.request(method, url, **kwargs) as resp:
                raw, status, got = await resp.read(), resp.status, list(resp.headers.items())
        except asyncio.TimeoutError as exc:
            raise openai.APITimeoutError(request=_http().Request(method, url)) from exc
        except aiohttp.ClientError as exc:
            raise openai.APIConnectionError(request=_http().Request(method, url)) from exc
        try:
            data = _loads(raw)
        except ValueError:
            data = raw.decode("utf-8", "replace")
        if status >= 400:
            http = _http()
            response = http.Response(status, headers=got, content=raw, request=http.Request(method, url))
            text = data.get("error", data) if isinstance(data, dict) else data
            text = text.get("message", text) if isinstance(text, dict) else text
            raise openai.APIStatusError(f"Error code: {status} - {text}", response=response, body=data)
        return data

    def _misconfigured(self, ep: Endpoint, cause: str) -> None:
        """A fault of `ep`'s configuration: with other endpoints usable it is left out and
        the call tried again elsewhere; else the run stops (`RunStopped`)."""
        self.pool.misconfigured(ep, cause)  # raises RunStopped when it was the last
        raise RetryableError(cause, "4xx")

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
        self.stats.sent.tokens_in += tokens_in
        self.stats.sent.tokens_out += tokens_out
        choices = resp.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            raise RetryableError("reply without choices")
        choice = choices[0]
        text = (choice.get("message") or {}).get("content") or ""
        finish = choice.get("finish_reason")
        data = None
        # What a server may not enforce is checked here: that the answer parses, fits the
        # schema's values (ranges, enums, counts, required fields, types) and passes the
        # request's own `validate`. Each failure is a RetryableParseError, so `complete`
        # asks again with another seed, and what fails for good is never cached.
        if request.schema is not None:
            from evol.backends.schemacheck import schema_problem

            problem = None
            try:
                data = extract_json(text)
            except ReplyParseError as exc:
                problem = str(exc)
            else:
                if request.schema.get("type") == "object" and not isinstance(data, dict):
                    problem = f"expected a JSON object, got {type(data).__name__}: {self._scrub(text, 80)!r}"
                else:
                    problem = schema_problem(request.schema, data)
            if problem is not None:
                if finish == "length":  # the answer was never finished: whatever is left of it misleads
                    problem = f"reply cut off at --max-tokens {request.sampling.max_tokens} (finish_reason length)"
                raise RetryableParseError(self._scrub(problem))
        if request.validate is not None:
            problem = request.validate(data)
            if problem:
                raise RetryableParseError(self._scrub(str(problem)))
        return Reply(text=text, data=data, tokens_in=tokens_in, tokens_out=tokens_out,
                     finish_reason=finish)


def schema_refusal(exc: openai.APIStatusError) -> bool:
    """An error answer that refuses the structured-output field: any status but
    401/403/408/429 whose body (read whole, not the shortened message) names it."""
    if exc.status_code in _NOT_REFUSALS:
        return False
    text = f"{exc.body if exc.body is not None else ''} {exc.message or ''}".lower()
    return any(w in text for w in _SCHEMA_WORDS)


# The `_Box` of the attempt the running task is making (set by `_Cost.begin`), so that
# `_sending` and `_note_usage`, deep inside `_attempt`, can say what it sent and got.
_ATTEMPT: contextvars.ContextVar["_Box | None"] = contextvars.ContextVar("evol_openai_attempt", default=None)


class _Box:
    """One attempt: requests sent (more than one when a refused dialect was resent) and
    the tokens of the last answer."""

    __slots__ = ("sends", "tokens_in", "tokens_out")

    def __init__(self) -> None:
        self.sends = self.tokens_in = self.tokens_out = 0


def _note_usage(resp: Any) -> None:
    box = _ATTEMPT.get()
    if box is not None and isinstance(resp, dict):
        usage = resp.get("usage")
        if isinstance(usage, dict):
            try:
                box.tokens_in = int(usage.get("prompt_tokens") or 0)
                box.tokens_out = int(usage.get("completion_tokens") or 0)
            except (TypeError, ValueError):
                pass


def _kind(exc: BaseException) -> str:
    if isinstance(exc, RetryableError):
        return exc.kind
    if isinstance(exc, RunStopped):
        return "stopped"
    if isinstance(exc, BackendError):
        return "4xx"
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"


class _Cost:
    """What one `complete` call sent and spent, attempt by attempt: counts each request
    under its outcome and the call itself in the backend's stats, and tells the reply or
    error what it took.

    A failed attempt is "retried" once the next attempt sends, "failed" when the call ends
    without another request."""

    __slots__ = ("backend", "box", "sends", "tokens_in", "tokens_out", "pending")

    def __init__(self, backend: "OpenAIBackend"):
        self.backend, self.box = backend, _Box()
        self.sends = self.tokens_in = self.tokens_out = 0
        self.pending: tuple[str, int, int] | None = None  # the last failed request, unclassed

    def begin(self) -> None:
        self.box = _Box()
        _ATTEMPT.set(self.box)

    def _sent(self) -> None:
        """This attempt sent: what failed before it was retried."""
        box, outcomes = self.box, self.backend.stats.outcomes
        if self.pending is not None:
            outcomes.add("retried_" + self.pending[0], 1, *self.pending[1:])
            self.pending = None
        if box.sends > 1:  # refused dialects, resent at once
            outcomes.add("retried_refused", box.sends - 1)
        self.sends += box.sends
        self.tokens_in += box.tokens_in
        self.tokens_out += box.tokens_out

    def answered(self, reply: Reply) -> Reply:
        box = self.box
        self._sent()
        self.backend.stats.outcomes.add("ok", 1, box.tokens_in, box.tokens_out)
        self.backend.stats.answered(reply)
        return reply

    def failed(self, exc: BaseException) -> None:
        box = self.box
        if box.sends:
            self._sent()
            self.pending = (_kind(exc), box.tokens_in, box.tokens_out)

    def close(self, exc: BackendError | None) -> BackendError | None:
        if self.pending is not None:
            self.backend.stats.outcomes.add("failed_" + self.pending[0], 1, *self.pending[1:])
            self.pending = None
        if exc is not None:
            exc.attempts, exc.tokens_in, exc.tokens_out = self.sends, self.tokens_in, self.tokens_out
            self.backend.stats.gave_up(exc)
        return exc


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTP(S)_PROXY, NO_PROXY), settled once per
    server: aiohttp's trust_env would look it up again on every request (0.7 ms each)."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    proxy = getproxies().get(urlsplit(url).scheme)
    return proxy if proxy and not proxy_bypass(urlsplit(url).hostname or "") else None


def _http():
    """The HTTP library the openai SDK is built on (httpx2 in its newer releases, httpx
    before): its errors carry that library's request and response objects."""
    try:
        import httpx2 as http
    except ImportError:  # pragma: no cover - older openai releases
        import httpx as http
    return http


try:
    import orjson as _orjson

    def _dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj)

    _loads = _orjson.loads
except ImportError:  # pragma: no cover
    import json as _json

    def _dumps(obj: Any) -> bytes:
        return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = _json.loads


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
