"""Several servers behind one model: which endpoint each HTTP request goes to.

An `EndpointPool` holds the endpoints (``--base-url`` given once or more, each with its own
concurrency, ``--concurrency`` by default) of one backend, or of the backends that share
them (the evolver and a judge model on the same servers). Every request asks the pool for an
endpoint (`acquire`): the least-loaded healthy one, load being requests in flight / its
concurrency; when every healthy endpoint is full it waits for a place. The run's `Limiter`
still bounds the whole (the sum of the concurrencies, adaptive) and the rates.

Health, from the failure classes of `evol.backends.base` (README, "When things fail"):

- a transport failure (connection refused or reset, timeout, 5xx) sets the endpoint aside
  at once for a connection failure, after `SET_ASIDE_STREAK` in a row otherwise; it gets no
  request for a back-off (1 s, doubling to 60 s), then one request at a time as a probe:
  an answer brings it back, a failure sets it aside again for twice as long. The call that
  failed is retried (its retry goes to another endpoint);
- a 429 is the server's rate limit, not a fault: the limiter cools down, nothing is set aside;
- 401/403 (the key) and 404 (the address or the model) are a configuration fault of that
  endpoint: while other endpoints are usable it is left out for the rest of the invocation
  (one warning) and the call goes elsewhere; when it is the last, the run stops as with one
  server (`Breaker.stop`, exit 3).

The run's `Breaker` hears of a transport failure only when no other endpoint is healthy, so
it stops the run only when every endpoint is down (20 failures in a row or 30 s of them);
with one endpoint that is every failure, as before. Per-endpoint counts (`table`): requests,
answers, errors, mean latency of the answers, times set aside; the manifest keeps them per
invocation. The endpoint is no part of the cache key: a run resumes with another list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable

from evol.backends.base import RunStopped
from evol.backends.health import Breaker
from evol.redact import redact_url

log = logging.getLogger(__name__)

SET_ASIDE_STREAK = 3     # 5xx or timeouts in a row that set an endpoint aside
BACKOFF_FIRST = 1.0      # seconds an endpoint is first set aside
BACKOFF_MAX = 60.0


def endpoint_specs(value: Any) -> list[dict[str, Any]]:
    """``--base-url`` as given (a URL, a list of URLs and ``{url, concurrency}`` mappings,
    or None) as a list of ``{"url": ..., "concurrency": N or None}``."""
    if value is None:
        return []
    if isinstance(value, (str, dict)) or hasattr(value, "url"):
        value = [value]
    out = []
    for entry in value:
        if hasattr(entry, "url"):
            entry = {"url": entry.url, "concurrency": getattr(entry, "concurrency", None)}
        elif isinstance(entry, str):
            entry = {"url": entry, "concurrency": None}
        out.append({"url": entry.get("url"), "concurrency": entry.get("concurrency")})
    return out


class Endpoint:
    """One server: where it is, how many requests it takes at once, its health and counts."""

    def __init__(self, url: str | None, concurrency: int, dialect: str = "json_schema"):
        self.url = url
        self.where = redact_url(url) or "the default OpenAI endpoint"
        self.concurrency = max(1, int(concurrency))
        self.dialect = dialect            # how a JSON schema travels to this server
        self.session: Any = None          # its aiohttp session (`OpenAIBackend.request`), made on first use
        self.chat_url = ""                # and where those go, through which proxy
        self.proxy: str | None = None
        self.in_flight = 0
        # health
        self.down_until = 0.0             # set aside until then (monotonic seconds)
        self.backoff = 0.0                # the last back-off; 0: never set aside since an answer
        self.streak = 0                   # transport failures in a row
        self.disabled: str | None = None  # left out for this invocation, and why
        # counts
        self.requests = self.answered = self.errors = self.set_aside = 0
        self.latency_s = 0.0              # summed over the answered requests

    @property
    def probation(self) -> bool:
        """Set aside before and not answered since: one request at a time."""
        return self.backoff > 0

    def row(self) -> dict[str, Any]:
        return {"url": self.where, "concurrency": self.concurrency, "requests": self.requests,
                "answered": self.answered, "errors": self.errors,
                "mean_latency_s": round(self.latency_s / self.answered, 4) if self.answered else None,
                "set_aside": self.set_aside, **({"left_out": self.disabled} if self.disabled else {})}


class EndpointPool:
    """The endpoints of one backend (or of the backends sharing them); see the module doc."""

    def __init__(self, specs: Iterable[Any], concurrency: int, *, breaker: Breaker | None = None,
                 dialect: str = "json_schema", clock: Callable[[], float] = time.monotonic):
        specs = endpoint_specs(list(specs) if not isinstance(specs, (str, dict)) and specs is not None else specs)
        if not specs:
            specs = [{"url": None, "concurrency": None}]
        self.endpoints = [Endpoint(s["url"], s["concurrency"] or concurrency, dialect) for s in specs]
        self.breaker = breaker if breaker is not None else Breaker()
        self.clock = clock
        self._waiters: list[asyncio.Future] = []

    @property
    def concurrency(self) -> int:
        """Requests in flight at most over every endpoint."""
        return sum(ep.concurrency for ep in self.endpoints)

    @property
    def usable(self) -> list[Endpoint]:
        return [ep for ep in self.endpoints if ep.disabled is None]

    def _eligible(self, ep: Endpoint, now: float) -> bool:
        return (ep.disabled is None and now >= ep.down_until and ep.in_flight < ep.concurrency
                and not (ep.probation and ep.in_flight))

    def healthy(self, ep: Endpoint, now: float | None = None) -> bool:
        """Not left out, and not set aside now."""
        return ep.disabled is None and (self.clock() if now is None else now) >= ep.down_until

    # -- choosing ---------------------------------------------------------------------
    async def acquire(self) -> Endpoint:
        """The endpoint for one request (call `release` after it): the least loaded healthy
        one; with every endpoint set aside, the one whose back-off ends first (its failure
        then counts toward the breaker). Raises `RunStopped` once every endpoint is left out."""
        while True:
            now = self.clock()
            best, load = None, 0.0
            for ep in self.endpoints:
                if self._eligible(ep, now):
                    share = ep.in_flight / ep.concurrency
                    if best is None or share < load:
                        best, load = ep, share
            if best is not None:
                best.in_flight += 1
                return best
            usable = self.usable
            if not usable:
                self.breaker.check()
                raise RunStopped("every server was left out")
            if not any(self.healthy(ep, now) and not (ep.probation and ep.in_flight) for ep in usable):
                ep = min(usable, key=lambda e: e.down_until)  # all down: as with one server
                ep.in_flight += 1
                return ep
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            # a set-aside endpoint may come back before any place frees up
            wake = min((ep.down_until for ep in usable if ep.down_until > now), default=None)
            try:
                if wake is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, max(0.01, wake - now))
            except asyncio.TimeoutError:
                pass
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self, ep: Endpoint) -> None:
        ep.in_flight -= 1
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break

    # -- outcomes ---------------------------------------------------------------------
    def sent(self, ep: Endpoint) -> None:
        ep.requests += 1

    def succeeded(self, ep: Endpoint, latency: float) -> None:
        ep.answered += 1
        ep.latency_s += latency
        if ep.backoff and len(self.endpoints) > 1:
            log.warning("%s answers again: it takes requests again", ep.where)
        ep.streak, ep.backoff, ep.down_until = 0, 0.0, 0.0
        self.breaker.success()

    def failed(self, ep: Endpoint, cause: str, kind: str) -> None:
        """A transport failure (`kind`: connection, timeout, 5xx or 429) of a request to `ep`.
        Sets it aside (see the module doc); the breaker hears of it when no other endpoint
        is healthy."""
        ep.errors += 1
        now = self.clock()
        if kind != "429":
            ep.streak += 1
            if kind == "connection" or ep.streak >= SET_ASIDE_STREAK or ep.probation:
                self._set_aside(ep, cause, now)
        if not any(self.healthy(o, now) for o in self.endpoints if o is not ep):
            self.breaker.failure(cause)

    def _set_aside(self, ep: Endpoint, cause: str, now: float) -> None:
        if now < ep.down_until:
            return  # requests in flight when it went down: already set aside
        ep.backoff = min(BACKOFF_MAX, ep.backoff * 2 if ep.backoff else BACKOFF_FIRST)
        ep.down_until = now + ep.backoff
        ep.set_aside += 1
        if len(self.endpoints) > 1:
            log.warning("%s set aside for %g s: %s", ep.where, ep.backoff, cause)

    def misconfigured(self, ep: Endpoint, cause: str) -> None:
        """A 401/403/404 from `ep`: left out while others are usable; else the run stops
        (`RunStopped` with `cause`, as with one server)."""
        ep.errors += 1
        if ep.disabled is None and len(self.usable) > 1:
            ep.disabled = cause
            log.warning("%s left out for the rest of this run: %s", ep.where, cause)
            return
        self.breaker.stop(cause)
        self.breaker.check()

    def leave_out(self, ep: Endpoint, why: str) -> None:
        """The preflight found `ep` unusable: no request goes there."""
        ep.disabled = why

    def refused(self, ep: Endpoint) -> None:
        """A request refused by the server (a 4xx for that request alone)."""
        ep.errors += 1

    def table(self) -> list[dict[str, Any]]:
        """Per endpoint: url (redacted), concurrency, requests, answered, errors,
        mean_latency_s, set_aside, and left_out (why) for one left out."""
        return [ep.row() for ep in self.endpoints]

    async def aclose(self) -> None:
        for ep in self.endpoints:
            session = ep.session
            if session is not None:
                ep.session = None
                await session.close()


def sum_tables(tables: Iterable[dict[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Invocations' ``endpoints`` blocks ({role: [row, ...]}) added up per role and URL."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for block in tables:
        for role, rows in (block or {}).items():
            acc = out.setdefault(role, {})
            for row in rows or []:
                a = acc.setdefault(row.get("url"), {"url": row.get("url"), "requests": 0, "answered": 0,
                                                    "errors": 0, "set_aside": 0, "_lat": 0.0})
                for k in ("requests", "answered", "errors", "set_aside"):
                    a[k] += int(row.get(k) or 0)
                a["_lat"] += float(row.get("mean_latency_s") or 0.0) * int(row.get("answered") or 0)
    result: dict[str, list[dict[str, Any]]] = {}
    for role, acc in out.items():
        rows = []
        for a in acc.values():
            lat = a.pop("_lat")
            a["mean_latency_s"] = round(lat / a["answered"], 4) if a["answered"] else None
            rows.append(a)
        result[role] = rows
    return result
