"""The one interface every model backend implements.

A `Request` is backend-neutral: messages made of text and image references, an optional
JSON schema for the answer, and sampling parameters. Images are referenced by path
(relative to the image root) or URL and only turned into bytes by the backend at request
time, so requests stay small, hashable and cacheable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable


class BackendError(RuntimeError):
    """A call that failed for good (after retries), with a readable reason.

    The class says whose fault it was, and so what a run does with it (README, "When
    things fail"): a plain `BackendError` or `ReplyParseError` is a *model fault* (the
    server answered, the answer stayed unusable): the round is recorded as failed. A
    `TransportError` means no answer came at all: never final, the record stays pending.
    A `RunStopped` means no call can succeed (bad key, dead server, full disk): the run
    stops and a rerun finishes it.

    What the call cost before it failed, for accounting (set by the backend that raised
    it; 0 where nothing was sent): `attempts` (requests sent), `tokens_in`, `tokens_out`
    (as the server counted them, over every attempt). `accounted` is set once a record's
    round has taken them over, so that callers sharing one failed call count it once.
    """

    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    accounted: bool = False


class ReplyParseError(BackendError):
    """The model answered, but not with what the schema asked for."""


class TransportError(BackendError):
    """No usable answer came back (connection, timeout, 5xx, 429) after every attempt.

    Never written down as a record's result: the record stays pending and a rerun sends
    the call again.
    """


class RunStopped(BackendError):
    """The run cannot go on: an auth error, a server failing every call, a full disk.

    `cause` is the one line the user is shown.
    """

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Image:
    """An image reference: a path relative to the image root, or an http(s)/data URL."""

    ref: str


Part = Text | Image


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    parts: tuple[Part, ...]

    @classmethod
    def text(cls, role: str, text: str) -> "Message":
        return cls(role, (Text(text),))


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 2048
    seed: int | None = None


@dataclass(frozen=True)
class Request:
    """Everything that determines a model's answer, plus a `tag` for messages and logs.

    `template` names the prompt file and its version; it is part of the cache key so a
    changed prompt never reuses old answers. `tag` (e.g. "rec42/r2/judge") is not.

    `validate`, when set, is shown the parsed JSON of an answer (None when no schema was
    asked for) and returns a readable reason when that answer is unusable, else None. A
    backend treats such an answer like one that does not parse: the OpenAI backend asks
    again with another seed, a local backend fails that request. It is not part of the
    cache key (`evol.cache.request_key` lists what is), nor of equality or the hash: it
    decides which answers are kept, not what is asked.
    """

    messages: tuple[Message, ...]
    schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    sampling: Sampling = field(default_factory=Sampling)
    template: str = ""
    tag: str = ""
    validate: Callable[[Any], str | None] | None = field(default=None, compare=False, hash=False)

    def images(self) -> list[str]:
        return [p.ref for m in self.messages for p in m.parts if isinstance(p, Image)]

    def text_chars(self) -> int:
        return sum(len(p.text) for m in self.messages for p in m.parts if isinstance(p, Text))


@dataclass
class Reply:
    """A model's answer: `data` is the parsed JSON when a schema was asked for."""

    text: str
    data: Any = None
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None
    cached: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "text": self.text,
                "data": self.data,
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "finish_reason": self.finish_reason,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str) -> "Reply":
        d = json.loads(raw)
        return cls(
            text=d["text"],
            data=d.get("data"),
            tokens_in=d.get("tokens_in", 0),
            tokens_out=d.get("tokens_out", 0),
            finish_reason=d.get("finish_reason"),
            cached=True,
        )


def image_url_part(url: str, detail: str | None = None) -> dict[str, Any]:
    """An OpenAI ``image_url`` content part; `detail` ("low", "high", "auto") when given."""
    image_url = {"url": url}
    if detail:
        image_url["detail"] = detail
    return {"type": "image_url", "image_url": image_url}


def chat_messages(request: Request, image: Callable[[str], dict[str, Any]] | None, *,
                  content: str = "string") -> list[dict[str, Any]]:
    """The request as OpenAI-style chat messages, the one shape every backend sends.

    Text parts become ``{"type": "text", "text": ...}`` parts and each image part what
    ``image(ref)`` returns (an ``image_url`` part with a data URL for a server, an
    ``{"type": "image"}`` placeholder for a local chat template); with `image` None image
    parts are left out (a text-only model). `content` says how a message's parts are
    written: "string" (OpenAI's form: a message of one text part is a plain string, any
    other a list of parts), "parts" (always a list) or "joined" (the texts alone, joined
    by blank lines into one string).
    """
    out: list[dict[str, Any]] = []
    for msg in request.messages:
        parts: list[dict[str, Any]] = []
        for part in msg.parts:
            if isinstance(part, Text):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, Image) and image is not None:
                parts.append(image(part.ref))
        if content == "joined":
            body: Any = "\n\n".join(p["text"] for p in parts if p["type"] == "text")
        elif content == "string" and len(parts) == 1 and parts[0]["type"] == "text":
            body = parts[0]["text"]
        else:
            body = parts
        out.append({"role": msg.role, "content": body})
    return out


@runtime_checkable
class Backend(Protocol):
    """The one interface to a model: async chat with images and a JSON schema.

    Everything above it (operators, the judge, the runner, the seed generators) speaks
    `Request` and `Reply` only, so a run moves between an OpenAI-compatible server
    (`evol.backends.openai`), offline vLLM and transformers without another change, and
    the request cache (`evol.cache.CachedBackend`) wraps any of them. MMEvol (arXiv
    2409.05840) evolves its data with one strong model behind such a chat interface.

    `model` is the model name, part of every cache key. `complete` raises `BackendError`
    (or `ReplyParseError`) when a call fails for good; it never returns a half answer.
    `stats`, where a backend keeps one, is its `evol.stats.CallStats`.
    """

    model: str

    async def complete(self, request: Request) -> Reply: ...

    async def aclose(self) -> None: ...
