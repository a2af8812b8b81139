"""What model calls took: the one stats record every component counts into.

A `CallStats` is kept by each piece a call passes through, and each counts the same
things under the same names:

* calls, one `Request` each however many requests it took: ``calls`` answered by a
  model, ``cached`` answered from the request cache (``shared``: of those, the ones that
  joined an identical call in flight), ``failed`` for good; ``tokens_in``/``tokens_out``
  of the answered calls plus every request of the failed ones;
* requests, what actually went to a model: ``sent`` (every HTTP attempt, or every
  request a local engine ran, with the tokens counted for it) and, where each request's
  fate is known (HTTP backends, ``by_outcome``), ``outcomes``: "ok", "retried_<kind>"
  or "failed_<kind>" (kinds in `KINDS`);
* local engines: ``batches``, ``largest_batch``, ``generate_s``.

Who counts: `OpenAIBackend` (calls, requests by outcome), `HFEngine` and `VLLMBackend`
(calls, requests, batches), `CachedBackend` (calls, cached), the round runner
(`evol.runner.RunStats.usage`, what the records' calls took) and the LLM seed
generators. Records add up field by field (`CallStats.total`), and `http` gives the
manifest's block of requests by outcome.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# why a request failed, in the order the manifest and the progress line list them
KINDS = ("429", "5xx", "timeout", "connection", "parse", "refused", "4xx", "stopped", "cancelled", "error")
OUTCOMES = ("ok", "retried", "failed")


@dataclass
class Tally:
    """Requests, and the tokens the model counted for them."""

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, requests: int = 1, tokens_in: int = 0, tokens_out: int = 0) -> None:
        self.requests += requests
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def __add__(self, other: Any) -> "Tally":
        if not isinstance(other, Tally):
            return NotImplemented
        return Tally(self.requests + other.requests, self.tokens_in + other.tokens_in,
                     self.tokens_out + other.tokens_out)

    def __radd__(self, other: Any) -> "Tally":  # sum() starts from 0
        return self + Tally() if other == 0 else NotImplemented


class Outcomes(dict):
    """Requests by outcome: "ok", "retried_<kind>" (it failed, and the call went on to
    another request) or "failed_<kind>" (the call's last request failed) -> `Tally`."""

    def add(self, key: str, requests: int = 1, tokens_in: int = 0, tokens_out: int = 0) -> None:
        self.setdefault(key, Tally()).add(requests, tokens_in, tokens_out)

    def count(self, outcome: str | None = None, kind: str | None = None) -> int:
        """Requests with this outcome and/or kind: ``count("retried")``, ``count(kind="timeout")``."""
        n = 0
        for key, tally in self.items():
            out, _, k = key.partition("_")
            if (outcome is None or out == outcome) and (kind is None or k == kind):
                n += tally.requests
        return n

    def table(self, outcome: str) -> dict[str, dict[str, int]]:
        """{kind: {"requests", "tokens_in", "tokens_out"}} for one outcome, in `KINDS` order;
        kinds without a request are left out."""
        prefix = outcome + "_"
        kinds = sorted((k[len(prefix):] for k, t in self.items() if k.startswith(prefix) and t.requests),
                       key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k))
        return {k: self[prefix + k].as_dict() for k in kinds}

    def __add__(self, other: Any) -> "Outcomes":
        if not isinstance(other, Outcomes):
            return NotImplemented
        out = Outcomes({k: v + Tally() for k, v in self.items()})
        for k, v in other.items():
            out[k] = out.get(k, Tally()) + v
        return out

    def __radd__(self, other: Any) -> "Outcomes":  # sum() starts from 0
        return self + Outcomes() if other == 0 else NotImplemented


@dataclass
class CallStats:
    """What the calls through one component took (see the module's docstring)."""

    calls: int = 0         # answered by a model
    cached: int = 0        # answered from the cache
    shared: int = 0        # of `cached`: joined an identical call in flight
    failed: int = 0        # failed for good
    tokens_in: int = 0     # of the answered calls, and of every request of the failed ones
    tokens_out: int = 0
    sent: Tally = field(default_factory=Tally)             # requests that went to a model
    outcomes: Outcomes = field(default_factory=Outcomes)   # the same requests, by outcome
    by_outcome: bool = False  # True where `outcomes` is kept (HTTP backends)
    batches: int = 0          # local engines: generate calls, their largest, their time
    largest_batch: int = 0
    generate_s: float = 0.0

    # -- counting ---------------------------------------------------------------------
    def answered(self, reply: Any) -> None:
        """A call came back with `reply` (a `Reply`): from the cache, or from a model."""
        if reply.cached:
            self.cached += 1
        else:
            self.calls += 1
            self.tokens_in += reply.tokens_in
            self.tokens_out += reply.tokens_out

    def gave_up(self, exc: Any) -> None:
        """A call failed for good with `exc` (a `BackendError`): counted when it sent
        requests, with everything they cost (`BackendError.attempts`, `tokens_in`, ...)."""
        if exc.attempts:
            self.failed += 1
            self.tokens_in += exc.tokens_in
            self.tokens_out += exc.tokens_out

    def ran(self, reply: Any, usable: bool) -> None:
        """A local engine ran one request to `reply` (its tokens); `usable` False when the
        answer could not be used, which fails that call (a local engine does not retry)."""
        self.sent.add(1, reply.tokens_in, reply.tokens_out)
        if usable:
            self.calls += 1
        else:
            self.failed += 1
        self.tokens_in += reply.tokens_in
        self.tokens_out += reply.tokens_out

    def batch(self, size: int, seconds: float) -> None:
        """A local engine ran `size` requests together in `seconds`."""
        self.batches += 1
        self.largest_batch = max(self.largest_batch, size)
        self.generate_s += seconds

    # -- reading ----------------------------------------------------------------------
    def http(self) -> dict[str, Any] | None:
        """The requests by outcome, as the manifest keeps them: ``{"requests", "tokens_in",
        "tokens_out", "ok": {...}, "retried": {kind: {...}}, "failed": {kind: {...}}}``, each
        {...} being ``{"requests", "tokens_in", "tokens_out"}``. None where requests are not
        counted by outcome (no HTTP backend)."""
        if not self.by_outcome:
            return None
        return {**self.sent.as_dict(), "ok": self.outcomes.get("ok", Tally()).as_dict(),
                "retried": self.outcomes.table("retried"), "failed": self.outcomes.table("failed")}

    def __add__(self, other: Any) -> "CallStats":
        if not isinstance(other, CallStats):
            return NotImplemented
        out = CallStats()
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "largest_batch":
                value = max(a, b)
            elif f.name == "by_outcome":
                value = a or b
            else:
                value = a + b
            setattr(out, f.name, value)
        return out

    @classmethod
    def total(cls, *stats: "CallStats") -> "CallStats":
        """The records added up; the same object counted twice counts once."""
        out = cls()
        for st in {id(s): s for s in stats}.values():
            out = out + st
        return out

    def seed_counts(self) -> dict[str, Any]:
        """The calls as a seed command's manifest writes them."""
        return {"model_calls": self.calls, "cached_calls": self.cached, "failed_calls": self.failed,
                "tokens": {"in": self.tokens_in, "out": self.tokens_out}}


# -- money ------------------------------------------------------------------------------
def money(tokens_in: int, tokens_out: int, price_in: float | None, price_out: float | None) -> float | None:
    """What the tokens cost at prices per million input and output tokens; None while a
    price is unknown."""
    if price_in is None or price_out is None:
        return None
    return round((tokens_in * price_in + tokens_out * price_out) / 1e6, 6)


def role_prices(cfg: Any) -> dict[str, tuple[float | None, float | None]]:
    """The prices per million tokens (in, out) of the evolver and the judge (`cfg` an
    `EvolveConfig`). The judge's default to the evolver's when it is the same model on the
    same servers; otherwise they are unknown until given."""
    judge_in, judge_out = cfg.judge_price_in, cfg.judge_price_out
    if getattr(cfg, "judge_shares", False):
        judge_in = cfg.price_in if judge_in is None else judge_in
        judge_out = cfg.price_out if judge_out is None else judge_out
    return {"evolver": (cfg.price_in, cfg.price_out), "judge": (judge_in, judge_out)}


def cost_block(tokens: dict[str, tuple[int, int]], prices: dict[str, tuple[float | None, float | None]]) -> dict:
    """``{"evolver": {tokens_in, tokens_out, price_in, price_out, money}, "judge": {...},
    "money": total}`` (money None where a price is unknown; the total counts the known)."""
    out: dict[str, Any] = {}
    total, known = 0.0, False
    for role, (t_in, t_out) in tokens.items():
        p_in, p_out = prices.get(role, (None, None))
        m = money(t_in, t_out, p_in, p_out)
        out[role] = {"tokens_in": t_in, "tokens_out": t_out, "price_in": p_in, "price_out": p_out, "money": m}
        if m is not None:
            total, known = total + m, True
    out["money"] = round(total, 6) if known else None
    return out


def sum_costs(blocks: list[dict]) -> dict | None:
    """Invocations' ``cost`` blocks added up (each role's tokens and money); None without one."""
    blocks = [b for b in blocks if isinstance(b, dict)]
    if not blocks:
        return None
    out: dict[str, Any] = {}
    total, known = 0.0, False
    for b in blocks:
        for role, part in b.items():
            if not isinstance(part, dict):
                continue
            acc = out.setdefault(role, {"tokens_in": 0, "tokens_out": 0, "money": None})
            acc["tokens_in"] += int(part.get("tokens_in") or 0)
            acc["tokens_out"] += int(part.get("tokens_out") or 0)
            if part.get("money") is not None:
                acc["money"] = round((acc["money"] or 0.0) + part["money"], 6)
                total, known = total + part["money"], True
    out["money"] = round(total, 6) if known else None
    return out


class Meter:
    """What this invocation's calls cost, per role (evolver, judge): `tokens` reads each
    role's tokens sent as they are now; `block()` is the manifest's ``cost`` entry."""

    def __init__(self, sources: dict[str, Any], prices: dict[str, tuple[float | None, float | None]]):
        self.sources, self.prices = sources, prices  # role -> a Tally or CallStats to read

    def tokens(self) -> dict[str, tuple[int, int]]:
        return {role: (int(src.tokens_in), int(src.tokens_out)) for role, src in self.sources.items()}

    def block(self) -> dict:
        return cost_block(self.tokens(), self.prices)

    @property
    def known(self) -> bool:
        return any(p_in is not None and p_out is not None for p_in, p_out in self.prices.values())
