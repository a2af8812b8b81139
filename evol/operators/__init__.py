"""The evolution operators, the operator mix, and the per-record random generator.

Operator choice must not depend on scheduling or on PYTHONHASHSEED: every (run seed,
record, round) gets its own generator seeded from a SHA-256 digest.
"""

from __future__ import annotations

import hashlib
import math
import random

from evol.operators.base import BuildOptions, Operator, ParseResult
from evol.operators.interaction import Interaction
from evol.operators.perceptual import Perceptual
from evol.operators.reasoning import Reasoning

OPERATORS: dict[str, Operator] = {op.name: op for op in (Perceptual(), Reasoning(), Interaction())}

DEFAULT_MIX: dict[str, float] = {"perceptual": 1 / 3, "reasoning": 1 / 3, "interaction": 1 / 3}

__all__ = [
    "OPERATORS", "DEFAULT_MIX", "BuildOptions", "Operator", "ParseResult",
    "choose_operator", "record_rng", "validate_mix",
]


def validate_mix(mix: dict[str, float]) -> dict[str, float]:
    """The mix as {name: weight} in `OPERATORS` order; raises ValueError with a readable reason."""
    if not mix:
        raise ValueError("operator mix is empty; give at least one of " + ", ".join(OPERATORS))
    unknown = sorted(set(mix) - set(OPERATORS))
    if unknown:
        raise ValueError(f"unknown operator(s) in mix: {', '.join(unknown)}; known: {', '.join(OPERATORS)}")
    out: dict[str, float] = {}
    for name in OPERATORS:
        if name not in mix:
            continue
        w = mix[name]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"operator weight for {name} must be a finite number >= 0, got {w!r}")
        out[name] = float(w)
    if sum(out.values()) <= 0:
        raise ValueError("operator mix weights are all zero")
    return out


def choose_operator(rng: random.Random, mix: dict[str, float]) -> str:
    """Draw an operator name with probability proportional to its weight (one rng draw)."""
    weights = validate_mix(mix)
    x = rng.random() * sum(weights.values())
    last = ""
    for name, w in weights.items():
        if w <= 0:
            continue
        if x < w:
            return name
        x -= w
        last = name
    return last  # only reached through float rounding at the top end


def record_rng(run_seed: int, record_id: str, round: int) -> random.Random:
    """A generator for one record and round, identical in every process and at any scheduling."""
    digest = hashlib.sha256(f"evol\x1f{run_seed}\x1f{record_id}\x1f{round}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))
