"""Preflight: a few seconds spent on the server before a run's first record.

`evol evolve --backend openai` calls `run_preflight` after the run guard and the lock,
before any record starts, so that what would otherwise fail every record (or quietly
spoil them) is found once:

1. ``GET {base_url}/models``: a closed port is "cannot connect to URL", a refused key is
   "the server at URL refused the key from ENV (HTTP 401: ...)", and a model (or judge
   model) the server does not list is named with up to 10 of the ids it does list. A model
   missing from the list that ``GET /models/{id}`` still knows is accepted (servers that
   take any name). A server without the endpoint gets a note: the name is not checked.
2. One tiny chat call with a tiny schema, in the dialect ``--structured`` names; under
   ``auto`` json_schema first, stepping down json_schema -> json_object -> prompt when the
   server refuses the field (see `evol.backends.openai.schema_refusal`) or answers
   without following it (prose, or JSON of another shape: a server that ignores
   ``response_format``). The dialect that worked is used for the whole run, so no record
   pays for the negotiation, and is stored in the manifest under ``server``.
3. When pictures will be sent: the same call once more with a 128x128 PNG. If the prompt
   tokens the server reports do not grow by at least `IMAGE_GROWTH` (4), or the server refuses
   the picture, it cannot see images. Then, with ``--text-only-server captions`` (the
   default), the run goes on with ``--no-images`` (each record's caption and boxes, which
   the prompts always carry, stand in for the picture), saying so; with ``stop`` it stops
   and names the flag to pass. It stops either way when the first records carry no
   caption and no boxes, since nothing would stand in for the pictures. A resumed run
   keeps the way it started: a run begun on captions goes on on captions; a run begun
   with pictures refuses to go on without them.

Several servers (``--base-url`` repeated, or the judge's own ``--judge-base-url``): each
endpoint is checked the same way (model, key, dialect, and images where pictures go to it)
and keeps the dialect it takes. An endpoint that fails is left out of the run with a
warning naming it and why, as long as another one of its side passes; an endpoint that
ignores images while another sees them is left out too. When none passes, the run stops
with one line (the one server's own line, or each server's in turn). The judge's own
servers are checked for the judge model; if all of them ignore images the judge goes on
without the picture (``--judge-no-image``), with a warning.

Every failure is a `PreflightError` with one line, and the CLI exits 1 with nothing
written as done. Transient trouble (429, a 5xx that is not a refusal, a timeout) is
tried three times (a timeout is not tried again); if it persists the run goes on without
that check, with a note. Each HTTP call waits at most ``min(10, --timeout)`` seconds. The test server answers the
preflight's calls (header ``X-Evol-Preflight``) outside its fault schedule and counts them
apart.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import quote

from evol.backends.base import Image, Message, ReplyParseError, Request, Sampling, Text
from evol.backends.endpoints import Endpoint
from evol.backends.jsonfix import extract_json
from evol.backends.openai import (STEP_DOWN, OpenAIBackend, _refused, _retry_after, _root_cause, openai,
                                  schema_refusal)

PREFLIGHT_HEADER = "X-Evol-Preflight"
PROBE_SCHEMA = {
    "type": "object",
    "properties": {"evol_check": {"type": "string", "enum": ["ready"]}},
    "required": ["evol_check"],
    "additionalProperties": False,
}
PROBE_TEXT = "This is a connection check. Reply with one JSON object and nothing else."
# Prompt tokens the probe picture must add at least; fewer, and the server dropped it. A
# server that drops image parts adds none. Vision models add from a handful (Qwen2-VL
# gives a small picture about 6 tokens plus 2 markers at 64x64, 18 at 128x128; the tiny
# LLaVA of the tests 5) to hundreds (LLaVA-1.5 576, OpenAI 85 at low detail).
IMAGE_GROWTH = 4
PROBE_SIDE = 128  # pixels: a 590-character PNG data URL
MAX_TIMEOUT = 10.0  # seconds per preflight HTTP call at most
TRIES = 3           # tries per call on transient trouble (429, 5xx, timeout)
_THINK = re.compile(r"^\s*<think>.*?</think>", re.S)


class PreflightError(RuntimeError):
    """The server cannot serve this run; the message is the one line the user sees."""


@dataclass
class ServerCheck:
    """What the preflight found (`info` is what the manifest keeps under ``server``)."""

    where: str
    dialect: str | None = None        # None: not settled (the run negotiates as it goes)
    models_listed: bool | None = None  # listed by GET /models; False: known all the same; None: no list
    images: str = "not sent"          # seen | ignored | refused | unchecked | not sent
    image_tokens: int | None = None   # how much one picture grew the prompt
    send_images: bool = True          # what the run does, after the decision below
    why: str = ""                     # why the server is taken to be text-only
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    judge_image: bool | None = None   # False: the judge's own servers ignore images
    servers: list[dict[str, Any]] = field(default_factory=list)  # several endpoints: each one's finding

    @property
    def info(self) -> dict[str, Any]:
        info = {"dialect": self.dialect, "models_listed": self.models_listed, "images": self.images,
                "image_tokens": self.image_tokens, "send_images": self.send_images,
                "preflight_s": round(self.seconds, 3)}
        if self.servers:
            info["endpoints"] = self.servers
        return info


class _NoAnswer(Exception):
    """A call that got no usable answer (transient trouble); `status` is the HTTP status of
    the last try, None when nothing came back; `timed_out`: it waited the whole timeout."""

    def __init__(self, message: str, status: int | None = None, timed_out: bool = False):
        super().__init__(message)
        self.status, self.timed_out = status, timed_out


def _transient(status: int) -> bool:
    return status in (408, 429) or status >= 500


def probe_image_url(side: int = PROBE_SIDE) -> str:
    """A small PNG (a colour gradient with a square, so it is not blank) as a data URL."""
    from PIL import Image as PILImage, ImageDraw

    img = PILImage.new("RGB", (side, side))
    img.putdata([(4 * x % 256, 4 * y % 256, 128) for y in range(side) for x in range(side)])
    ImageDraw.Draw(img).rectangle((side // 4, side // 4, 3 * side // 4, 3 * side // 4), fill=(250, 200, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def probe_request(image: str | None = None) -> Request:
    user = (Image(image), Text(PROBE_TEXT)) if image else (Text(PROBE_TEXT),)
    return Request(messages=(Message.text("system", "You are a helpful assistant."), Message("user", user)),
                   schema=PROBE_SCHEMA, schema_name="evol_preflight",
                   sampling=Sampling(temperature=0.0, max_tokens=64, seed=0), tag="preflight")


def followed(text: str) -> bool:
    """The answer is the probe's JSON and little else: the server honoured the field.
    (A server that ignores it answers prose, or JSON of its own shape.)"""
    text = _THINK.sub("", text or "").strip()
    if not text.startswith(("{", "```")):
        return False
    try:
        data = extract_json(text)
    except ReplyParseError:
        return False
    return isinstance(data, dict) and data.get("evol_check") == "ready"


class _Probe:
    """HTTP calls of the preflight to one endpoint, over the backend's client for it (its key
    and URL)."""

    def __init__(self, backend: OpenAIBackend, timeout: float, endpoint: Endpoint | None = None):
        self.b, self.timeout = backend, timeout
        self.ep = endpoint if endpoint is not None else backend.pool.endpoints[0]
        self.where = self.ep.where
        self.headers = {PREFLIGHT_HEADER: "1"}

    def connection_failed(self, exc: openai.APIConnectionError) -> PreflightError | None:
        """A refused or failed connect is final; None for a real timeout (transient)."""
        if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
            return None
        return PreflightError(f"cannot connect to {self.where}: {self.b._scrub(_root_cause(exc))}")

    def unreachable(self, exc: openai.APIConnectionError) -> Exception:
        """What a failed connection means: a refused connect is final; a timeout is no
        answer (a server that needs longer than the timeout for a tiny call is not asked again)."""
        final = self.connection_failed(exc)
        return final if final is not None else _NoAnswer(f"no answer within {self.timeout:g} s", timed_out=True)

    def key_refused(self, exc: openai.APIStatusError) -> PreflightError:
        b = self.b
        key = (f"the key from {b.api_key_env}" if b._secret()
               else f"the request without a key ({b.api_key_env} is not set)")
        return PreflightError(f"the server at {self.where} refused {key} (HTTP {exc.status_code}: "
                              f"{b._server_message(exc)})")

    async def get(self, path: str) -> Any:
        """GET with tries on transient trouble; APIStatusError for a 4xx, `_NoAnswer` else."""
        last = ""
        for i in range(TRIES):
            try:
                return await self.b.request(self.ep, "GET", path, headers=self.headers, timeout=self.timeout)
            except openai.APIConnectionError as exc:
                raise self.unreachable(exc) from None
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    raise self.key_refused(exc) from None
                if not _transient(exc.status_code):
                    raise
                last = f"HTTP {exc.status_code}: {self.b._server_message(exc)}"
                await self._pause(i, exc)
        raise _NoAnswer(last)

    async def chat(self, request: Request, dialect: str, model: str) -> dict:
        """POST one chat call in `dialect`; APIStatusError for a refusal or another 4xx,
        `_NoAnswer` when nothing usable came back (a 429/5xx/timeout each try)."""
        b = self.b
        messages, _ = await b._messages(request)
        s = request.sampling
        body = dict(model=model, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed)
        body.update(b.shape(messages, request, dialect))
        last, last_status = "", None
        for i in range(TRIES):
            try:
                resp = await self.b.request(self.ep, "POST", "/chat/completions", body, headers=self.headers,
                                            timeout=self.timeout)
            except openai.APIConnectionError as exc:
                raise self.unreachable(exc) from None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in (401, 403):
                    raise self.key_refused(exc) from None
                if status == 404:
                    raise PreflightError(f"the server at {self.where} answered HTTP 404 ({b._server_message(exc)}): "
                                         f"check --base-url and --model {model!r}") from None
                if schema_refusal(exc) or not _transient(status):
                    raise
                last, last_status = f"HTTP {status}: {b._server_message(exc)}", status
                await self._pause(i, exc)
                continue
            if isinstance(resp, dict) and isinstance(resp.get("choices"), list) and resp["choices"]:
                return resp
            last, last_status = "a reply without choices", None
        raise _NoAnswer(last, last_status)

    @staticmethod
    async def _pause(i: int, exc: openai.APIStatusError) -> None:
        if i < TRIES - 1:
            after = _retry_after(exc.response.headers) if exc.status_code == 429 else None
            await asyncio.sleep(min(2.0, after if after is not None else 0.5 * (i + 1)))


def _content(resp: dict) -> str:
    return str(((resp.get("choices") or [{}])[0].get("message") or {}).get("content") or "")


def _prompt_tokens(resp: dict) -> int | None:
    usage = resp.get("usage") or {}
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


async def _check_models(probe: _Probe, check: ServerCheck, models: Sequence[str]) -> None:
    where = check.where
    try:
        listing = await probe.get("/models")
    except openai.APIStatusError as exc:
        check.notes.append(f"the server at {where} has no model list (GET /models: HTTP {exc.status_code}): "
                           "could not check the model name")
        return
    except _NoAnswer as exc:
        check.notes.append(f"the server at {where} did not list its models ({exc}): could not check the model name")
        if exc.timed_out:
            raise
        return
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        check.notes.append(f"the server at {where} answered GET /models with no list: could not check the model name")
        return
    ids = [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id") is not None]
    check.models_listed = True
    for model in dict.fromkeys(models):
        if model in ids:
            continue
        try:  # servers that take any name (or list only some) may still know it
            known = await probe.get("/models/" + quote(model, safe="/:@"))
        except openai.APIStatusError:
            known = None
        except _NoAnswer as exc:
            check.notes.append(f"the server at {where} does not list {model!r} and did not say whether it serves it "
                               f"({exc}): going on")
            check.models_listed = False
            continue
        if isinstance(known, dict) and known.get("id") in (model, None):
            check.models_listed = False
            continue
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        raise PreflightError(f"the server at {where} does not serve model {model!r} "
                             f"(it lists: {shown or 'no models'}): check --model"
                             + (" and --judge-model" if len(set(models)) > 1 else ""))


async def _settle_dialect(probe: _Probe, check: ServerCheck, structured: str, model: str) -> dict | None:
    """The dialect the server takes; returns the last answered probe (for the image check)."""
    b, where = probe.b, check.where
    dialect = "json_schema" if structured == "auto" else structured
    steps: list[str] = []
    request = probe_request()
    while True:
        try:
            resp = await probe.chat(request, dialect, model)
        except openai.APIStatusError as exc:
            message = b._server_message(exc)
            if schema_refusal(exc) and structured == "auto" and dialect in STEP_DOWN:
                steps.append(f"refused {dialect}: HTTP {exc.status_code}: {message}")
                dialect = STEP_DOWN[dialect]
                continue
            if schema_refusal(exc) and structured != "auto":
                raise PreflightError(f"the server at {where} refused the schema sent as {dialect} "
                                     f"(HTTP {exc.status_code}: {message}): pass --structured auto to find a way "
                                     "it takes") from None
            raise PreflightError(f"the server at {where} refused the check call (HTTP {exc.status_code}: "
                                 f"{message})") from None
        except _NoAnswer as exc:
            check.notes.append(f"the server at {where} did not answer the check call ({exc}): going on without "
                               "checking its structured output" + (" or images" if check.images == "unchecked" else ""))
            return None
        if dialect == "prompt" or followed(_content(resp)):
            break
        if structured == "auto" and dialect in STEP_DOWN:
            steps.append(f"ignored {dialect}: its answer did not follow the schema")
            dialect = STEP_DOWN[dialect]
            continue
        check.warnings.append(f"the server at {where} did not follow the schema sent as {dialect} in the check call: "
                              "answers that do not parse are retried; --structured auto finds a way it takes")
        break
    check.dialect = dialect
    if steps:
        how = {"json_object": "as response_format json_object", "prompt": "in the prompt"}.get(dialect, dialect)
        check.notes.append(f"the server at {where} takes the schema {how} ({'; '.join(steps)}): "
                           "that is how every request of this run sends it")
    return resp


async def _check_images(probe: _Probe, check: ServerCheck, model: str, plain: dict, sent=None) -> None:
    b = probe.b
    dialect = check.dialect or b.dialect
    try:
        resp = await (sent if sent is not None else probe.chat(probe_request(probe_image_url()), dialect, model))
    except openai.APIStatusError as exc:
        check.images = "refused"
        check.why = f"HTTP {exc.status_code}: {b._server_message(exc)}"
        return
    except _NoAnswer as exc:
        if exc.status is not None and exc.status >= 500:  # the same call without the picture was answered
            check.images, check.why = "refused", str(exc)
            return
        check.images = "unchecked"
        check.notes.append(f"the server at {check.where} did not answer the picture check ({exc}): "
                           "could not check that it sees images")
        return
    before, after = _prompt_tokens(plain), _prompt_tokens(resp)
    if before is None or after is None:
        check.images = "unchecked"
        check.notes.append(f"the server at {check.where} reports no prompt tokens: could not check that it sees images")
        return
    check.image_tokens = after - before
    check.images = "seen" if after - before >= IMAGE_GROWTH else "ignored"
    check.why = "prompt tokens did not grow"


def records_with_text(path: str, fmt: str = "auto", n: int = 50) -> tuple[int, int]:
    """Of the first `n` readable input records, how many carry a caption or objects."""
    from evol.io import read_records

    seen = with_text = 0
    try:
        for res in read_records(path, fmt):
            if res.record is None:
                continue
            seen += 1
            with_text += bool(res.record.caption.strip() or res.record.objects)
            if seen >= n:
                break
    except (OSError, ValueError):
        return 0, 0
    return with_text, seen


def _decide_images(check: ServerCheck, *, policy: str, previous: dict | None, sample: tuple[int, int]) -> None:
    """Settle `check.send_images` from what the picture check found (see the module doc)."""
    where = check.where
    prev_captions = bool(previous) and previous.get("send_images") is False
    prev_pictures = bool(previous) and previous.get("send_images") is True and previous.get("images") == "seen"
    blind = check.images in ("ignored", "refused")
    verb = "ignores images" if check.images == "ignored" else "does not take images"
    if prev_captions:
        check.send_images = False
        if not blind:
            check.notes.append("this run started with each record's caption and boxes standing in for the pictures "
                               "(its server then ignored images): it goes on that way; use another --out to send "
                               "pictures")
        return
    if not blind:
        return
    why = check.why
    if prev_pictures:
        raise PreflightError(f"the server at {where} {verb} ({why}), but this run was started sending pictures: "
                             "point --base-url at a server that sees them to finish it, or use another --out")
    if policy == "stop":
        raise PreflightError(f"the server at {where} {verb} ({why}): use a vision model, or pass "
                             "--text-only-server captions to go on with each record's caption and boxes in the "
                             "prompt instead of the picture")
    with_text, seen = sample
    if seen and not with_text:
        raise PreflightError(f"the server at {where} {verb} ({why}) and the first {seen} records carry no caption "
                             "or boxes to stand in for the picture: use a vision model, or pass --no-images to "
                             "evolve from the conversations alone")
    check.send_images = False
    check.warnings.append(f"the server at {where} {verb} ({why}): going on with --no-images: each record's caption "
                          "and boxes stand in for the picture")


async def _check_endpoint(cfg: Any, backend: OpenAIBackend, ep: Endpoint, models: list[str],
                          images: bool) -> ServerCheck:
    """The checks of one endpoint (see the module doc); raises `PreflightError`."""
    check = ServerCheck(where=ep.where, send_images=images, images="unchecked" if images else "not sent")
    probe = _Probe(backend, min(MAX_TIMEOUT, float(cfg.timeout)), ep)
    try:
        await _check_models(probe, check, models)
        # the picture probe goes at once, speculatively in the first dialect tried: when the
        # text probe settles on that dialect (almost always) its answer is the image check
        first = "json_schema" if backend.structured == "auto" else backend.structured
        spec = (asyncio.ensure_future(probe.chat(probe_request(probe_image_url()), first, backend.model))
                if images else None)
        try:
            plain = await _settle_dialect(probe, check, backend.structured, backend.model)
        except BaseException:
            if spec is not None:
                spec.cancel()
            raise
        useful = spec if images and plain is not None and check.dialect == first else None
        if spec is not None and useful is None:
            spec.cancel()  # another dialect settled on, or no answer: asked again below, or not at all
        if images and plain is not None:
            await _check_images(probe, check, backend.model, plain, useful)
    except PreflightError:
        raise
    except _NoAnswer:  # GET /models timed out: the run finds out for itself, without more waiting here
        pass
    except Exception as exc:  # the HTTP client itself failed: the run finds out what its calls do
        check.notes.append(f"could not check the server at {check.where} ({type(exc).__name__}: "
                           f"{backend._scrub(str(exc))}): going on without the preflight")
    if check.dialect is not None:
        backend.use_dialect(check.dialect, ep)
    return check


_BLIND = ("ignored", "refused")


async def _check_side(cfg: Any, backends: Sequence[OpenAIBackend], images: bool) -> tuple[ServerCheck, list]:
    """Check every endpoint of one side's servers (the backends share them): the check of the
    first that passed, and a row per endpoint. Endpoints that fail, or that ignore images
    while another sees them, are left out; raises `PreflightError` when none passes."""
    main = backends[0]
    pool = main.pool
    models = [b.model for b in backends]
    passed: list[tuple[Endpoint, ServerCheck]] = []
    failed: list[tuple[Endpoint, str]] = []
    for ep in pool.usable:
        try:
            check = await _check_endpoint(cfg, main, ep, models, images)
        except PreflightError as exc:
            failed.append((ep, str(exc)))
            continue
        passed.append((ep, check))
    if not passed:
        if len(failed) == 1:
            raise PreflightError(failed[0][1])
        raise PreflightError(f"none of the {len(failed)} servers passed the preflight: "
                             + "; ".join(why for _, why in failed))
    if images and any(c.images == "seen" for _, c in passed):
        for ep, c in [(ep, c) for ep, c in passed if c.images in _BLIND]:
            passed.remove((ep, c))
            failed.append((ep, f"the server at {ep.where} ignores images while the others see them"))
    rows = []
    for ep, why in failed:
        pool.leave_out(ep, why)
        rows.append({"url": ep.where, "left_out": why})
    rows += [{"url": ep.where, "dialect": c.dialect, "images": c.images} for ep, c in passed]
    check = passed[0][1]
    for ep, why in failed:
        check.warnings.append(f"{ep.where} is left out of this run: {why}")
    for _, c in passed[1:]:
        check.notes += c.notes
        check.warnings += c.warnings
    return check, (rows if len(pool.endpoints) > 1 else [])


async def run_preflight(cfg: Any, backends: Sequence[OpenAIBackend], *, previous: dict | None = None,
                        evolver: bool = True) -> ServerCheck:
    """Check the servers of `backends` (the run's OpenAI backends: the evolver's first when
    `evolver`, then the judge's) for the run `cfg` describes; set the dialect found on each
    endpoint. Raises `PreflightError`; see the module doc."""
    t0 = time.perf_counter()
    sides: dict[int, list[OpenAIBackend]] = {}
    for b in backends:
        sides.setdefault(id(b.pool), []).append(b)
    groups = list(sides.values())
    check: ServerCheck | None = None
    if evolver:
        check, rows = await _check_side(cfg, groups.pop(0), bool(cfg.send_images))
        check.servers = rows
        if cfg.send_images:
            sample = records_with_text(cfg.input, cfg.input_format) if check.images in _BLIND else (0, 0)
            _decide_images(check, policy=cfg.text_only_server, previous=previous, sample=sample)
    for group in groups:  # the judge's own servers
        judge_images = bool(cfg.send_images and cfg.judge_image and (check is None or check.send_images))
        judge, rows = await _check_side(cfg, group, judge_images)
        if check is None:
            check = judge
            check.send_images = bool(cfg.send_images)
            check.images = "not sent"
        else:
            check.notes += judge.notes
            check.warnings += judge.warnings
        check.servers += [{**r, "judge": True} for r in rows] or []
        if judge_images and judge.images in _BLIND:
            check.judge_image = False
            check.warnings.append(f"the judge's server at {judge.where} ignores images: the judge goes on without "
                                  "the picture (--judge-no-image)")
    check.seconds = time.perf_counter() - t0
    return check


def record_server(run: Any, info: dict[str, Any]) -> None:
    """Write `info` into the run folder's manifest under ``server`` now (a crashed run keeps it)."""
    import json
    import os

    manifest = run.read_manifest()
    manifest["server"] = info
    tmp = run.manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    os.replace(tmp, run.manifest)
