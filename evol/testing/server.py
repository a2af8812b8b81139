"""A small OpenAI-compatible chat-completions server for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with synthetic but schema-valid
content, and can inject latency and faults (429, 500, hangs, garbled JSON)
so that the real CLI can be exercised over real HTTP.  It can also play a
provider that checks the API key (``api_key``: anything else gets a 401) and a
GPU replica that serves at most ``capacity`` requests at once (the rest queue).
Two random sources are kept apart on purpose:

* the *content* rng is seeded from the request body, so the same request
  always gets the same answer (caching and resume logic can be tested);
* the *fault* rng is seeded once from ``ServerConfig.seed`` and advances per
  request, so a retry of a failed request may well succeed.

Dialect profiles (``ServerConfig.profile``) play the servers people run, as far as
structured output, model lists and images go:

* ``None`` (the default) and ``"vllm"``: ``response_format`` json_schema and json_object
  (with or without a ``schema`` key) are honoured; a top-level ``format`` is ignored.
* ``"llamacpp"``: json_schema is answered with HTTP 500 ("Input should be 'text' or
  'json_object'"), as llama.cpp's server does; ``{"type": "json_object", "schema": ...}``
  is honoured, except that ``maximum`` is not enforced: now and then (seeded by the
  request, so the same request gets the same answer) the first integer field that has a
  maximum gets maximum + 1.
* ``"ollama"``: a top-level ``format`` (a JSON schema) is honoured; json_schema gets a
  400 naming it; json_object is plain JSON mode (its ``schema`` key is ignored).
* ``"noschema"``: ignores ``response_format`` and ``format`` altogether and answers prose
  around whatever JSON it writes, like ``transformers serve``.
* ``"textonly"``: takes image parts but drops them before "the model" sees anything:
  answers do not depend on them and ``prompt_tokens`` does not count them (elsewhere each
  image counts 85 prompt tokens).

``/v1/models`` lists ``model_id`` (``mock-vlm`` when unset); ``/v1/models/{id}`` knows
every id when ``model_id`` is unset (the server takes any model name) and only
``model_id`` when it is set, when a chat request naming another model gets a 404 too.
Requests sent by evol's preflight (header ``X-Evol-Preflight``) are answered like any
other but without injected faults, and counted apart under ``stats()["preflight"]``, so
that the counts and the fault sequence a test sees are those of the run itself.
``stats()["tokens_in"]``/``["tokens_out"]`` sum the usage of every answered request (what
a provider would bill); ``die_after`` plays a replica that dies mid-run.
``stats()["formats"]`` counts the structured-output field each request arrived with
(json_schema, json_object, format, none), refused ones included; with ``keep_prompts``
the text of every chat request is kept for `RunningServer.prompts`.

Run it standalone with ``python -m evol.testing.server --port 0 ...``.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import json
import math
import random
import re
import signal
import threading
import time
import typing
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SCHEMA_MARKER = "follows this JSON schema:"
MODEL_ID = "mock-vlm"
PROFILES = ("vllm", "llamacpp", "ollama", "noschema", "textonly")
PREFLIGHT_HEADER = "X-Evol-Preflight"
TOKENS_PER_IMAGE = 85
_PREFLIGHT = contextvars.ContextVar("evol_preflight", default=False)
LLAMACPP_REFUSAL = ("1 validation error for ResponseFormat: type: Input should be 'text' or 'json_object' "
                    "[type=literal_error, input_value='json_schema', input_type=str]")
OLLAMA_REFUSAL = "invalid response_format type 'json_schema': use 'json_object' or the format field"

# No animal or vehicle names (words the grounding rule looks for in an item's text): the
# placeholder text must not name things the record's pictures do not hold.
_WORDS = """red blue green yellow small large wooden metal glass striped bright dark shiny round
square tall narrow distant nearby cluttered empty crowded quiet person child calm soft wide
pale tree bench table chair window door lamp cup bottle book sign shadow reflection sky cloud
mountain river road street building bridge smooth kitchen shelf plate apple banana faint hat
jacket bag clock fence grass wall floor ceiling corner left right behind beside under above near
center foreground background top bottom edge holding sitting standing walking leaning facing
parked hanging stacked visible partially blurred counted compared scene image photo region
texture color pattern outline silhouette label number text logo""".split()

_PROSE = (
    ("Here is the requested output.", "Let me know if anything should change."),
    ("Sure! Below is the JSON you asked for.", "I hope this helps."),
    ("I looked at the input carefully; the result follows.", "All fields are filled in."),
)


@dataclass
class ServerConfig:
    latency: float = 0.0        # mean seconds per answer
    spread: float = 0.0         # lognormal sigma; the mean stays `latency`; 0 = fixed
    fail_429: float = 0.0       # probability of 429 (immediate, Retry-After: `retry_after`)
    retry_after: float | None = 0.0  # Retry-After seconds sent with a 429; None: no header
    fail_500: float = 0.0       # probability of 500
    fail_timeout: float = 0.0   # probability of hanging `hang_seconds` first
    hang_seconds: float = 30.0
    garbled: float = 0.0        # probability of a 200 whose content is not valid JSON
    no_schema: bool = False     # reject json_schema response_format with a 400
    improved_rate: float = 0.8  # P(boolean property "improved" is true)
    seed: int = 0               # seeds the fault rng only
    api_key: str | None = None  # when set, a request without "Authorization: Bearer <it>" gets 401
    capacity: int | None = None  # when set, at most this many requests are served at once;
                                 # the others queue (429s and 4xx answer at once, unqueued)
    # Planted replies: (substrings, content) pairs. A request whose message text holds
    # every substring of an entry gets that entry's content verbatim (first match wins),
    # so tests can plant a bad reply for one record and see the filters catch it. The
    # content may also be {"content": str, "finish_reason": str}: a reply cut off at
    # max_tokens is {"content": '{"items": [', "finish_reason": "length"}.
    scripted: list = field(default_factory=list)
    # Slow requests: (substrings, seconds) pairs. A request whose message text holds every
    # substring takes that long instead of `latency` (first match wins): one slow record.
    slow: list = field(default_factory=list)
    profile: str | None = None  # None, vllm, llamacpp, ollama, noschema, textonly (module doc)
    model_id: str | None = None  # when set: the one model listed and served; else any name
    no_models: bool = False      # True: no /v1/models at all (404), like some servers
    keep_prompts: bool = False   # keep every chat request's text (RunningServer.prompts)
    die_after: int | None = None  # a replica that dies: after answering this many chat requests
                                  # (preflight ones aside) it shuts down, connections and all


# ----------------------------------------------------------------- generation

class _Generator:
    """Builds a JSON value that satisfies a (subset of) JSON Schema."""

    def __init__(self, rng: random.Random, root: dict, improved_rate: float, overshoot: float = 0.0,
                 prompt_labels: list | None = None):
        self.rng, self.root, self.improved_rate = rng, root, improved_rate
        self.prompt_labels = prompt_labels or []
        # llama.cpp's grammars ignore `maximum`: P(the first bounded integer exceeds it)
        self.overshoot, self.overshot, self.overshot_value = overshoot, False, False

    def resolve(self, schema) -> dict:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref, node = schema["$ref"], self.root
            if not ref.startswith("#/"):
                return {}
            for part in ref[2:].split("/"):
                node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
            schema, seen = node, seen + 1
        return schema if isinstance(schema, dict) else {}

    def sentence(self, question: bool = False) -> str:
        words = self.rng.choices(_WORDS, k=self.rng.randint(8, 20))
        return " ".join(words).capitalize() + ("?" if question else ".")

    def value(self, schema, name: str | None = None, override: dict | None = None):
        s, rng = self.resolve(schema), self.rng
        if "const" in s:
            return s["const"]
        if s.get("enum"):
            return rng.choice(s["enum"])
        for key in ("anyOf", "oneOf"):
            if key in s:
                options = [self.resolve(o) for o in s[key]] or [{}]
                pick = next((o for o in options if o.get("type") != "null"), options[0])
                return self.value(pick, name, override)
        kind = s.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in s else "array" if "items" in s else "string"
        if kind == "object":
            override = override or {}
            doc = {k: override[k] if k in override else self.value(v, k)
                   for k, v in s.get("properties", {}).items()}
            # like a judge that follows its prompt: score 0 only for a rewrite not improved
            if doc.get("improved") is True and type(doc.get("score")) in (int, float) and 0 <= doc["score"] < 1:
                doc["score"] = 1
            return doc
        if kind == "array":
            return self.labels(s) if name == "objects" else self.array(s)
        if kind == "boolean":
            rate = self.improved_rate if name == "improved" else 0.5
            return rng.random() < rate
        if kind in ("integer", "number"):
            return self.number(s, kind == "integer")
        if kind == "null":
            return None
        return self.sentence(question=name == "question")

    def labels(self, s: dict) -> list:
        """An "objects" list: labels of the prompt's object list ("- cup: [...]"), like a model
        that names what the picture holds; placeholder words when the prompt lists none."""
        if not self.prompt_labels:
            return self.array(s)
        return self.rng.sample(self.prompt_labels, k=min(len(self.prompt_labels), self.rng.randint(1, 2)))

    def array(self, s: dict) -> list:
        """Array of 1..3 items by default.

        When the items are objects carrying an enum property (callers put item
        ids there), element i gets the i-th enum value so each id shows up once.
        """
        lo, hi = s.get("minItems"), s.get("maxItems")
        if lo is None:
            lo = 1 if hi is None else min(1, hi)
        hi = max(lo, 3 if hi is None else hi)
        count = self.rng.randint(lo, hi)
        items = self.resolve(s.get("items", {}))
        enums = {k: self.resolve(v)["enum"] for k, v in items.get("properties", {}).items()
                 if self.resolve(v).get("enum")}
        out = []
        for i in range(count):
            override = {k: vals[i] for k, vals in enums.items() if i < len(vals)}
            out.append(self.value(items, None, override))
        return out

    def number(self, s: dict, integer: bool):
        step = 1 if integer else 0.001
        lo, hi = s.get("minimum"), s.get("maximum")
        if type(s.get("exclusiveMinimum")) in (int, float):  # not draft-4 booleans
            lo = s["exclusiveMinimum"] + step
        if type(s.get("exclusiveMaximum")) in (int, float):
            hi = s["exclusiveMaximum"] - step
        if lo is None:
            lo = 1 if hi is None else min(1, hi)
        hi = max(lo, lo + 9 if hi is None else hi)
        if integer:
            if self.overshoot and not self.overshot and s.get("maximum") is not None:
                self.overshot = True
                if self.rng.random() < self.overshoot:
                    self.overshot_value = True
                    return math.floor(s["maximum"]) + 1
            return self.rng.randint(math.ceil(lo), max(math.ceil(lo), math.floor(hi)))
        return min(max(round(self.rng.uniform(lo, hi), 3), lo), hi)


def _message_text(messages) -> tuple[str, int]:
    """All text in the messages, plus the number of image parts."""
    texts, images = [], 0
    for msg in messages or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") in ("image_url", "image", "input_image"):
                    images += 1
    return "\n".join(texts), images


_OBJECT_LINE = re.compile(r"^- ([^:\n(]{1,60}?)(?: \(image \d+\))?(?::|$)", re.MULTILINE)


def _object_labels(text: str) -> list:
    """The labels of a "Detected objects:" list in the prompt, in order, once each."""
    at = text.find("Detected objects:")
    if at < 0:
        return []
    block = text[at:at + 4000].split("\n\n")[0]
    return list(dict.fromkeys(m.group(1).strip() for m in _OBJECT_LINE.finditer(block)))


def _schema_in_text(text: str):
    """The JSON schema right after the marker in the prompt, or None."""
    at = text.find(SCHEMA_MARKER)
    if at >= 0:
        with contextlib.suppress(ValueError):
            schema, _ = json.JSONDecoder().raw_decode(text[at + len(SCHEMA_MARKER):].lstrip())
            return schema if isinstance(schema, dict) else None
    return None


def make_content(body: dict, improved_rate: float = 0.8, *, overshoot: float = 0.0,
                 chatty: bool = False, flags: dict | None = None) -> str:
    """Deterministic answer text for a request body (faults aside).

    With a json_schema response_format, a json_object one (its ``schema`` if it has one,
    else the schema in the prompt) or a top-level ``format`` schema, the answer is bare
    JSON. Otherwise a schema embedded in the prompt is answered like a chatty model
    would: prose around a fenced block, so clients have to extract the JSON tolerantly;
    with no schema anywhere the answer is a sentence (`chatty`: prose around a JSON object).
    `flags`, when given, gets ``overshot``: True when a value was put above its maximum.
    """
    fmt = body.get("response_format") or {}
    fmt_schema = body.get("format") if isinstance(body.get("format"), dict) else None
    # like a real server honouring `seed`: same request and seed, same answer
    canon = json.dumps([body.get("model"), body.get("messages"), fmt or None, body.get("seed")]
                       + ([fmt_schema] if fmt_schema is not None else []),
                       sort_keys=True, separators=(",", ":"))
    rng = random.Random(hashlib.sha256(canon.encode()).digest())
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
    elif kind == "json_object" and isinstance(fmt.get("schema"), dict):
        schema = fmt["schema"]
    elif fmt_schema is not None:
        schema, kind = fmt_schema, "format"
    else:
        schema = _schema_in_text(_message_text(body.get("messages"))[0])
    gen = _Generator(rng, schema or {}, improved_rate, overshoot,
                     _object_labels(_message_text(body.get("messages"))[0]))
    if schema is None:
        if kind == "json_object":
            return json.dumps({"answer": gen.sentence()})
        if chatty:
            head, tail = rng.choice(_PROSE)
            return f"{head} {json.dumps({'answer': gen.sentence()})} {tail}"
        return gen.sentence()
    doc = gen.value(schema)
    if flags is not None:
        flags["overshot"] = gen.overshot_value
    if kind in ("json_schema", "json_object", "format"):
        return json.dumps(doc)
    head, tail = rng.choice(_PROSE)
    return f"{head}\n\n```json\n{json.dumps(doc, indent=2)}\n```\n\n{tail}"


def _first_match(entries: list, body: dict) -> Any:
    """The value of the first (substrings, value) entry whose substrings all occur in the prompt."""
    text = _message_text(body.get("messages"))[0]
    for needles, value in entries:
        needles = [needles] if isinstance(needles, str) else needles
        if all(n in text for n in needles):
            return value
    return None


def _planted(cfg: ServerConfig, body: dict) -> str | None:
    """The content of the first `cfg.scripted` entry that matches the prompt."""
    return _first_match(cfg.scripted, body)


# --------------------------------------------------------------------- server

@dataclass
class _State:
    cfg: ServerConfig
    rng: random.Random
    stopping: asyncio.Event
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict = field(default_factory=lambda: {
        "requests": 0, "ok": 0, "status": {}, "timeouts": 0, "garbled": 0, "by_schema": {}})
    gate: asyncio.Semaphore | None = None  # `capacity` slots, made on the server's loop
    die: Any = None  # `die_after`: shuts the server down (set by `_start`)
    prompts: list = field(default_factory=list)  # `keep_prompts`: one dict per chat request

    def _table(self) -> dict:
        """The counters of this request: the run's, or the preflight's apart (caller holds lock)."""
        if not _PREFLIGHT.get():
            return self.counts
        return self.counts.setdefault("preflight", {"requests": 0, "ok": 0, "status": {}, "by_schema": {},
                                                    "formats": {}})

    def serving(self, delta: int) -> None:
        """Requests being served now (`capacity` set): "serving" and its peak "peak_serving"."""
        with self.lock:
            now = self.counts["serving"] = self.counts["serving"] + delta
            self.counts["peak_serving"] = max(self.counts["peak_serving"], now)

    def bump(self, *keys: str) -> None:
        """Count under each key; HTTP codes ("429") go into the status table."""
        with self.lock:
            counts = self._table()
            for key in keys:
                table = counts["status"] if key.isdigit() else counts
                table[key] = table.get(key, 0) + 1

    def billed(self, tokens_in: int, tokens_out: int) -> None:
        """The usage of one answered request: "tokens_in", "tokens_out"."""
        with self.lock:
            table = self._table()
            table["tokens_in"] = table.get("tokens_in", 0) + tokens_in
            table["tokens_out"] = table.get("tokens_out", 0) + tokens_out

    def arrived_with(self, fmt: str) -> None:
        """Count the structured-output field a request came with (refused ones included)."""
        with self.lock:
            table = self._table().setdefault("formats", {})
            table[fmt] = table.get(fmt, 0) + 1

    def seen(self, schema_name: str, images: int) -> None:
        """Per response-format schema name: answered requests and image parts they carried."""
        with self.lock:
            entry = self._table()["by_schema"].setdefault(schema_name, {"requests": 0, "images": 0})
            entry["requests"] += 1
            entry["images"] += images

    def snapshot(self) -> dict:
        with self.lock:
            return json.loads(json.dumps(self.counts))  # a deep copy

    def pick_fault(self) -> str | None:
        """One draw from the fault rng picks at most one fault."""
        roll, cfg = self.rng.random(), self.cfg
        for name, p in (("429", cfg.fail_429), ("500", cfg.fail_500),
                        ("timeout", cfg.fail_timeout), ("garbled", cfg.garbled)):
            if roll < p:
                return name
            roll -= p
        return None

    def delay(self) -> float:
        cfg = self.cfg
        if cfg.latency <= 0:
            return 0.0
        if cfg.spread <= 0:
            return cfg.latency
        mu = math.log(cfg.latency) - cfg.spread ** 2 / 2
        return self.rng.lognormvariate(mu, cfg.spread)


_STATE = web.AppKey("state", _State)


def _error(status: int, message: str, kind: str, headers=None, code=None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": status if code is None else code}}
    return web.json_response(body, status=status, headers=headers)


def _unauthorized(request: web.Request, state: _State) -> web.Response | None:
    """A 401 like OpenAI's when `api_key` is set and the request does not carry it."""
    key = state.cfg.api_key
    if key is None:
        return None
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
        return None
    state.bump("401")  # the message never repeats the key, given or expected
    return _error(401, "Incorrect API key provided", "invalid_request_error", code="invalid_api_key")


@contextlib.asynccontextmanager
async def _served(state: _State):
    """Holds one of `capacity` slots (a no-op without one); yields when service starts."""
    if state.gate is None:
        yield
        return
    async with state.gate:
        state.serving(1)
        try:
            yield
        finally:
            state.serving(-1)


async def _wait(state: _State, seconds: float) -> None:
    """Sleep, but wake at once when the server is stopping."""
    if seconds > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), seconds)


def _arrived_format(body: dict) -> str:
    """The structured-output field a request carries: json_schema, json_object, format or none."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
        return fmt["type"]
    return "format" if isinstance(body.get("format"), dict) else "none"


def _refused(cfg: ServerConfig, state: _State, body: dict, sent: str) -> web.Response | None:
    """The answer of a server that does not take this structured-output field, or None."""
    if sent == "json_schema" and cfg.profile == "llamacpp":
        state.bump("500")
        return _error(500, LLAMACPP_REFUSAL, "server_error")
    if sent == "json_schema" and cfg.profile == "ollama":
        state.bump("400")
        return _error(400, OLLAMA_REFUSAL, "invalid_request_error")
    if cfg.no_schema and sent == "json_schema":
        state.bump("400")
        return _error(400, "response_format json_schema is not supported", "invalid_request_error")
    return None


def _as_seen(cfg: ServerConfig, body: dict) -> dict:
    """The request as this server's "model" sees it: what its profile ignores taken out."""
    body = dict(body)
    fmt = body.get("response_format")
    if cfg.profile != "ollama":
        body.pop("format", None)  # not an OpenAI field: ignored
    if cfg.profile == "noschema":
        body.pop("response_format", None)
        body.pop("format", None)
    elif cfg.profile == "ollama" and isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}  # plain JSON mode: no schema key
    if cfg.profile == "textonly":
        messages = []
        for msg in body.get("messages") or []:
            if isinstance(msg, dict) and isinstance(msg.get("content"), list):
                msg = {**msg, "content": [p for p in msg["content"] if not (
                    isinstance(p, dict) and p.get("type") in ("image_url", "image", "input_image"))]}
            messages.append(msg)
        body["messages"] = messages
    return body


async def _chat(request: web.Request) -> web.Response:
    arrived = time.monotonic()
    state: _State = request.app[_STATE]
    cfg = state.cfg
    preflight = bool(request.headers.get(PREFLIGHT_HEADER))
    _PREFLIGHT.set(preflight)  # this handler's own context: its counts go to their table
    state.bump("requests")
    denied = _unauthorized(request, state)
    if denied is not None:
        return denied
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("messages"), list)):
        state.bump("400")
        return _error(400, "body must be a JSON object with messages", "invalid_request_error")
    if cfg.model_id is not None and body.get("model") != cfg.model_id:
        state.bump("404")
        return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
    sent = _arrived_format(body)
    state.arrived_with(sent)
    refused = _refused(cfg, state, body, sent)
    if refused is not None:
        return refused
    if cfg.keep_prompts:
        text, images = _message_text(body.get("messages"))
        fmt = body.get("response_format") or {}
        with state.lock:
            state.prompts.append({"preflight": preflight, "format": sent, "images": images, "text": text,
                                  "schema": (fmt.get("json_schema") or {}).get("name") if isinstance(fmt, dict) else None})

    fault = None if preflight else state.pick_fault()
    if fault == "429":  # comes back at once, like a rate limiter would
        state.bump("429")
        after = None if cfg.retry_after is None else {"Retry-After": f"{cfg.retry_after:g}"}
        return _error(429, "rate limited", "rate_limit_error", after)
    async with _served(state):
        if state.gate is not None:
            arrived = time.monotonic()  # service starts now; the queue wait is not latency
        return await _answer(state, body, fault, arrived)


async def _answer(state: _State, body: dict, fault: str | None, arrived: float) -> web.Response:
    cfg = state.cfg
    # The answer is made first and the sleep covers only what is left of the latency, so
    # a configured latency L is the server's whole answer time, not L plus its own work.
    delay = cfg.hang_seconds if fault == "timeout" else state.delay()
    slow = _first_match(cfg.slow, body) if cfg.slow and fault != "timeout" else None
    if slow is not None:
        state.bump("slow")
        delay = float(slow)
    content, finish = "", "stop"
    if fault == "garbled":
        content = state.rng.choice([
            '{"items": [{"question": "unterminated',
            "I could not produce the requested structure for this image, sorry.",
        ])
    elif fault != "500":
        planted = _planted(cfg, body) if cfg.scripted else None
        if planted is not None:
            state.bump("scripted")
        if isinstance(planted, dict):
            planted, finish = str(planted.get("content", "")), str(planted.get("finish_reason", "stop"))
        flags: dict = {}
        content = planted if planted is not None else make_content(
            _as_seen(cfg, body), cfg.improved_rate, overshoot=0.2 if cfg.profile == "llamacpp" else 0.0,
            chatty=cfg.profile == "noschema", flags=flags)
        if flags.get("overshot"):
            state.bump("overshot")  # a value above its schema's maximum went out
    if fault == "timeout":
        state.bump("timeouts")
    await _wait(state, delay - (time.monotonic() - arrived))
    if fault == "500":
        state.bump("500")
        return _error(500, "internal error", "server_error")
    state.bump("garbled" if fault == "garbled" else "ok", "200")

    text, images = _message_text(body.get("messages"))
    fmt = body.get("response_format") or {}
    state.seen(str((fmt.get("json_schema") or {}).get("name", fmt.get("type", "none"))), images)
    # a text-only server drops image parts before counting: they cost it nothing
    prompt_tokens = len(text) // 4 + (0 if cfg.profile == "textonly" else TOKENS_PER_IMAGE * images)
    completion_tokens = max(1, len(content) // 4)
    state.billed(prompt_tokens, completion_tokens)
    if (cfg.die_after is not None and not _PREFLIGHT.get() and state.die is not None
            and state.counts["status"].get("200", 0) >= cfg.die_after):
        state.die()  # this answer still goes out; the ones after it do not
    return web.json_response({
        "id": "chatcmpl-" + hashlib.sha1(content.encode()).hexdigest()[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or MODEL_ID,
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def _model_entry(model: str) -> dict:
    return {"id": model, "object": "model", "created": 0, "owned_by": "evol"}


async def _models(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    denied = _unauthorized(request, state)
    if denied is not None:
        return denied
    if state.cfg.no_models:
        return _error(404, "Not Found", "not_found_error")
    return web.json_response({"object": "list", "data": [_model_entry(state.cfg.model_id or MODEL_ID)]})


async def _model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}``: any id when `model_id` is unset (the server takes any name)."""
    state = request.app[_STATE]
    denied = _unauthorized(request, state)
    if denied is not None:
        return denied
    model = request.match_info["model"]
    if state.cfg.no_models or (state.cfg.model_id is not None and model != state.cfg.model_id):
        return _error(404, f"The model '{model}' does not exist", "invalid_request_error", code="model_not_found")
    return web.json_response(_model_entry(model))


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[_STATE].snapshot())


async def _start(cfg: ServerConfig, port: int) -> tuple[web.AppRunner, _State, int]:
    if cfg.profile is not None and cfg.profile not in PROFILES:
        raise ValueError(f"unknown profile {cfg.profile!r} (available: {', '.join(PROFILES)})")
    state = _State(cfg, random.Random(cfg.seed), asyncio.Event())
    stopping: list = []
    if cfg.capacity is not None:
        if cfg.capacity < 1:
            raise ValueError("capacity must be >= 1")
        state.gate = asyncio.Semaphore(cfg.capacity)
        state.counts.update(serving=0, peak_serving=0)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_STATE] = state
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _model)
    app.router.add_get("/stats", _stats)
    # no access log (CPU, stdout noise); cancel handlers of vanished clients
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                           shutdown_timeout=1.0)
    await runner.setup()
    # `die_after`: shut down once, soon after the answer that reached it
    state.die = lambda: stopping or stopping.append(
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(_shutdown(runner, state))))
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, state, runner.addresses[0][1]


async def _shutdown(runner: web.AppRunner, state: _State) -> None:
    if state.stopping.is_set():  # once: `die_after` may have come first
        return
    state.stopping.set()
    await runner.cleanup()


class RunningServer:
    """Handle on a server whose event loop runs in a daemon thread."""

    def __init__(self, cfg: ServerConfig, port: int = 0):
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cfg, port, ready),
                                        name="evol-test-server", daemon=True)
        self._thread.start()
        ready.wait()
        if isinstance(self._started, BaseException):
            raise self._started  # e.g. the port was taken
        self._runner, self._state, port = self._started
        self.url = f"http://127.0.0.1:{port}/v1"

    def _run(self, cfg: ServerConfig, port: int, ready: threading.Event) -> None:
        try:
            self._started = self._loop.run_until_complete(_start(cfg, port))
        except BaseException as exc:
            self._started = exc
        ready.set()
        if not isinstance(self._started, BaseException):
            self._loop.run_forever()
        self._loop.close()

    def stats(self) -> dict:
        return self._state.snapshot()

    def prompts(self) -> list[dict]:
        """`keep_prompts`: per chat request, its text, image parts, format and preflight flag."""
        with self._state.lock:
            return [dict(p) for p in self._state.prompts]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        done = asyncio.run_coroutine_threadsafe(_shutdown(self._runner, self._state), self._loop)
        try:
            done.result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def start_in_thread(cfg: ServerConfig, port: int = 0) -> RunningServer:
    """Start a server on 127.0.0.1 in a daemon thread; returns once listening."""
    return RunningServer(cfg, port)


# ------------------------------------------------------------------------ CLI

def _parse(argv=None) -> tuple[ServerConfig, int]:
    parser = argparse.ArgumentParser(description="OpenAI-compatible mock server for tests.")
    parser.add_argument("--port", type=int, default=0)
    hints = typing.get_type_hints(ServerConfig)
    for name, default in vars(ServerConfig()).items():
        if isinstance(default, (list, dict)):
            continue  # structured options (scripted replies) are for in-process use
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=_flag_type(hints[name]), default=default)
    args = vars(parser.parse_args(argv))
    port = args.pop("port")
    return ServerConfig(**args), port


def _flag_type(hint):
    """The argparse type of a field: its own, or for ``X | None`` X, with "none" for None."""
    args = typing.get_args(hint)
    if type(None) not in args:
        return hint
    inner = next(a for a in args if a is not type(None))

    def convert(text: str):
        return None if text.strip().lower() in ("none", "null", "") else inner(text)

    convert.__name__ = inner.__name__  # argparse names the type in its error messages
    return convert


async def _serve(cfg: ServerConfig, port: int) -> None:
    runner, state, bound = await _start(cfg, port)
    print(f"listening http://127.0.0.1:{bound}/v1", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await _shutdown(runner, state)


def main(argv=None) -> None:
    cfg, port = _parse(argv)
    asyncio.run(_serve(cfg, port))


if __name__ == "__main__":
    main()
