"""The request cache: every finished model call, keyed by what determines its answer.

`request_key` hashes the canonical JSON of the model, sampling, messages (images by
the sha256 of their bytes, plus the downscale bound when images are sent), schema,
schema name and prompt template (name + version). The request `tag` is left out: it
names the call for logs, it does not change the answer.

`CachedBackend` wraps any backend. A hit returns the stored reply (``cached=True``)
without calling the model; a miss calls it and commits the reply before the event loop
waits for anything again (`Cache.put`), so a killed run loses only the calls that were in
flight. Identical requests in flight at the same moment share one call. Failures are
never stored.

A cache that cannot be written (disk full, I/O error) stops the run (`RunStopped`): every
answer received before is already committed, and going on would pay for answers that
cannot be kept. `forget` drops a stored reply that its caller found unusable, so that a
rerun asks again instead of failing the same way.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit is a WAL append without
fsync, durable against a killed process (not against power loss). Writes are plain
synchronous calls on the event loop. Measured on the 2-core dev VM (4,000 inserts of a
~3 kB reply): about 50 us of CPU per insert committed alone, 20 us when four or more share
a commit (as replies that arrive in the same loop pass do), with a ~10 ms stall whenever
SQLite checkpoints the WAL (every ~1,000 pages); lookups take ~4-7 us.

`request_key` runs for every call, so it is built for speed (see its docstring); the key
itself is the same as ever, and caches written before keep hitting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from evol.backends.base import Backend, BackendError, Image, Reply, Request, RunStopped, Sampling, Text
from evol.images import ImageError, ImageStore
from evol.stats import CallStats

try:
    import orjson as _orjson
except ImportError:  # optional: only faster
    _orjson = None

KEY_VERSION = 1


def request_key(request: Request, model: str, images: ImageStore, image_options: dict[str, Any] | None = None) -> str:
    """sha256 (hex) of the canonical form of everything that shapes the answer.

    `image_options` are a backend's settings for how pixels are shown to the model (the
    OpenAI image `detail`); like `max_side` they count only for requests with images.

    The canonical form is ``json.dumps(canon, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` of the dict {v, model, sampling, messages, schema, schema_name,
    template[, max_side, image_options]} (`canonical_json` builds it that way). It is put
    together here piece by piece, byte for byte the same, because it runs for every call:
    the messages (lists of strings) go through orjson when it is installed (its strings
    come out exactly as json's), and a schema object seen before is not dumped again.
    """
    messages = []
    has_images = False
    for msg in request.messages:
        parts: list[list[str]] = []
        for part in msg.parts:
            if isinstance(part, Text):
                parts.append(["text", part.text])
            elif isinstance(part, Image):
                parts.append(["image", images.content_hash(part.ref)])
                has_images = True
        messages.append([msg.role, parts])
    pieces = {
        "v": _dumps(KEY_VERSION).encode(),
        "model": _dumps(model).encode(),
        "sampling": _dumps(_sampling_dict(request.sampling)).encode(),
        "messages": _dumps_strings(messages),
        "schema": _schema_json(request.schema),
        "schema_name": _dumps(request.schema_name).encode(),
        "template": _dumps(request.template).encode(),
    }
    if has_images:
        pieces["max_side"] = _dumps(images.max_side).encode()
        if image_options:
            pieces["image_options"] = _dumps(image_options).encode()
    raw = b"{" + b",".join(b'"%s":%s' % (k.encode(), pieces[k]) for k in sorted(pieces)) + b"}"  # plain names
    return hashlib.sha256(raw).hexdigest()


def canonical_json(canon: dict[str, Any]) -> str:
    """The reference form `request_key` hashes (as UTF-8): what a key means, for tests and tools."""
    return _dumps(canon)


# what json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) uses,
# made once (json.dumps builds an encoder per call)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _sampling_dict(sampling: Any) -> dict[str, Any]:
    if type(sampling) is Sampling:  # flat: the fields as they are (what asdict makes of them)
        return {"temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens, "seed": sampling.seed}
    return dataclasses.asdict(sampling)


def _dumps_strings(value: list) -> bytes:
    """`_dumps(value)` as UTF-8 for nested lists of strings: orjson writes every string as
    json.dumps(ensure_ascii=False) does (checked for every code point) and lists alike."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value)
        except TypeError:  # e.g. a lone surrogate: json's own error is the one to raise
            pass
    return _dumps(value).encode("utf-8")


# Schemas already dumped, by identity: operators and the judge build one schema object
# per item count and reuse it, so most calls skip the sorted dump. A Request is frozen,
# and so is its schema: never change one after a request holds it.
_SCHEMAS: dict[int, tuple[Any, bytes]] = {}


def _schema_json(schema: Any) -> bytes:
    hit = _SCHEMAS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    out = _dumps(schema).encode("utf-8")
    if schema is not None:
        if len(_SCHEMAS) >= 512:
            _SCHEMAS.clear()
        _SCHEMAS[id(schema)] = (schema, out)
    return out


class Cache:
    """key -> reply JSON in one SQLite table; every `put` is committed before the event
    loop waits for anything again.

    Outside an event loop a `put` commits on return. Inside one, the puts of one loop pass
    go into one transaction, committed by a callback the loop runs next (before it waits
    for I/O): a commit costs more CPU than the insert, and replies that arrive together
    are committed together. A killed run still loses only the calls that were in flight.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit (isolation_level=None): each statement is its own transaction, unless
        # `put` opened one (BEGIN ... COMMIT in `commit`)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL, created REAL NOT NULL)")
        self._commit_due = False  # a commit callback is scheduled on the running loop
        self._failed: RunStopped | None = None  # a deferred commit that failed

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"cache {self.path} is closed")
        return self._db

    def get(self, key: str) -> str | None:
        row = self._conn().execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, reply: str) -> None:
        """Store; committed on return, or (inside an event loop) before the loop next
        waits. A failed write raises `RunStopped` naming the file and cause (a deferred
        commit that failed: at the next `put` or `delete`)."""
        if self._failed is not None:
            raise self._failed
        db = self._conn()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        try:
            if loop is not None and not db.in_transaction:
                db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO replies (key, reply, created) VALUES (?, ?, ?)",
                       (key, reply, time.time()))
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            self._rollback()
            raise RunStopped(write_failure(self.path, exc)) from None
        if loop is None:
            self.commit()
        elif not self._commit_due:
            self._commit_due = True
            loop.call_soon(self._deferred_commit)

    def commit(self) -> None:
        """Commit what `put` and `delete` left open, now; `RunStopped` when that fails."""
        self._commit_due = False
        db = self._db
        if db is None or not db.in_transaction:
            return
        try:
            db.execute("COMMIT")
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            self._rollback()
            raise RunStopped(write_failure(self.path, exc)) from None

    def _deferred_commit(self) -> None:
        if not self._commit_due:
            return  # committed already (close, an explicit commit)
        try:
            self.commit()
        except RunStopped as exc:  # nobody to raise it to now: the next write does
            self._failed = exc

    def _rollback(self) -> None:
        db = self._db
        if db is not None and db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def delete(self, key: str) -> None:
        if self._failed is not None:
            raise self._failed
        try:
            self._conn().execute("DELETE FROM replies WHERE key = ?", (key,))
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            raise RunStopped(write_failure(self.path, exc)) from None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        """Commit what is open and close (a failed commit raises `RunStopped`, closed anyway)."""
        try:
            self.commit()
        finally:
            db, self._db = self._db, None
            if db is not None:
                db.close()


def write_failure(path: Path | str, exc: BaseException) -> str:
    """One line for a write that failed: "disk full writing PATH (why)" or the cause.

    SQLite reports a write refused for lack of room as a plain "disk I/O error", so the
    room left is looked at too: the free space of the file system, and the process's
    file-size limit (``ulimit -f``).
    """
    text = str(getattr(exc, "strerror", None) or exc)
    low = text.lower()
    if "full" in low or "too large" in low or "no space" in low or getattr(exc, "errno", None) in (27, 28, 122):
        return f"disk full writing {path} ({text})"
    room = _no_room(Path(path))
    if room:
        return f"disk full writing {path} ({room}; {text})"
    return f"cannot write {path}: {text}"


def _no_room(path: Path) -> str | None:
    import os
    import resource

    try:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            sizes = [p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists()]
            if sizes and max(sizes) + 64 * 1024 >= limit:
                return "file size limit reached"
        st = os.statvfs(path.parent)
        if st.f_bavail * st.f_frsize < 1024 * 1024:
            return "no space left on device"
    except (OSError, ValueError):
        return None
    return None


class _Flight:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task):
        self.task, self.waiters = task, 0


class CachedBackend:
    """Any `Backend`, answered from the cache when it can be.

    `stats` (an `evol.stats.CallStats`) counts every call through it: ``cached`` (a stored
    reply, or ``shared``: an identical call already in flight), and the calls passed on to
    the inner backend that it answered (``calls``) or that failed for good (``failed``).
    """

    def __init__(self, inner: Backend, cache: Cache, images: ImageStore):
        self.inner, self.cache, self.images = inner, cache, images
        self.stats = CallStats()
        self._flights: dict[str, _Flight] = {}

    @property
    def model(self) -> str:
        return self.inner.model

    def key(self, request: Request) -> str:
        return request_key(request, self.model, self.images, getattr(self.inner, "image_options", None))

    async def complete(self, request: Request) -> Reply:
        try:
            key = self.key(request)
        except ImageError as exc:
            raise BackendError(f"{request.tag or 'request'}: {exc}") from None
        flight = self._flights.get(key)
        if flight is None:
            raw = self.cache.get(key)
            if raw is not None:
                reply = Reply.from_json(raw)
                self.stats.answered(reply)
                return reply
            flight = _Flight(asyncio.ensure_future(self._fetch(key, request)))
            self._flights[key] = flight
            leader = True
        else:
            self.stats.cached += 1
            self.stats.shared += 1
            leader = False
        flight.waiters += 1
        try:
            reply = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # nobody wants it any more
            raise
        flight.waiters -= 1
        # followers did not spend tokens: mark their copy cached, like a stored hit
        return reply if leader else dataclasses.replace(reply, cached=True)

    def forget(self, request: Request) -> None:
        """Drop the stored reply to `request`: its caller found it unusable."""
        try:
            key = self.key(request)
        except ImageError:
            return
        self.cache.delete(key)

    async def _fetch(self, key: str, request: Request) -> Reply:
        try:
            try:
                reply = await self.inner.complete(request)
            except BackendError as exc:
                self.stats.gave_up(exc)
                raise
            self.stats.answered(reply)
            self.cache.put(key, reply.to_json())
            return reply
        finally:
            self._flights.pop(key, None)

    async def aclose(self) -> None:
        """Closes the inner backend; the cache may be shared and is closed by its owner."""
        await self.inner.aclose()
