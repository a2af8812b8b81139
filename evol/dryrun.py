"""`--dry-run`: how many requests and tokens a run would take, without calling anything.

Requests are an upper bound (every round of every valid record, operator plus judge);
rule checks and eliminated chains only make a real run cheaper. Tokens are estimated
from the requests the operators would build for round one (4 characters a token), with
later rounds assumed to grow by a third, and a per-image cost from the image size sent.
With prices (``--price-in``/``--price-out``, ``--judge-price-in``/``--judge-price-out``,
per million tokens) the estimate says what the run would cost, evolver and judge apart
(`evol.stats.cost_block`); requests already in a run folder's cache would cost nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from evol.config import EvolveConfig
from evol.images import ImageError, ImageStore
from evol.io import ReadResult, read_records
from evol.operators import OPERATORS, choose_operator, record_rng
from evol.operators.base import BuildOptions
from evol.backends.base import Sampling
from evol.stats import cost_block, role_prices

CHARS_PER_TOKEN = 4
OUT_TOKENS_PER_ITEM = 250
JUDGE_OUT_TOKENS_PER_ITEM = 60
ROUND_GROWTH = 1.33


def image_tokens(max_side: int) -> int:
    """Tiles of 512 px at 170 tokens plus a base of 85: a common pricing rule of thumb."""
    side = max_side or 2048
    tiles = -(-side // 512)
    return 85 + 170 * tiles * max(1, (tiles * 3) // 4)


@dataclass
class Estimate:
    records: int = 0
    rejected: int = 0
    items: int = 0
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    reasons: Counter = field(default_factory=Counter)  # why records would be rejected
    evolver_tokens: list[int] = field(default_factory=lambda: [0, 0])  # in, out
    judge_tokens: list[int] = field(default_factory=lambda: [0, 0])
    prices: dict = field(default_factory=dict)  # role -> (in, out) per million tokens

    @property
    def cost(self) -> dict:
        """`evol.stats.cost_block` of the estimate: tokens and money per role, and in all."""
        return cost_block({"evolver": tuple(self.evolver_tokens), "judge": tuple(self.judge_tokens)}, self.prices)

    def cost_text(self) -> str:
        c = self.cost
        if c["money"] is None:
            return "unknown (give --price-in and --price-out, per million tokens)"
        parts = ", ".join(f"{role} {'unknown' if c[role]['money'] is None else format(c[role]['money'], '.4g')}"
                          for role in ("evolver", "judge"))
        return f"about {c['money']:.4g} at most ({parts})"


def estimate(cfg: EvolveConfig, images: ImageStore, stream: Iterator[ReadResult] | None = None) -> Estimate:
    est = Estimate(prices=role_prices(cfg))
    opts = BuildOptions(sampling=Sampling(max_tokens=cfg.max_tokens), send_images=cfg.send_images)
    per_image = image_tokens(cfg.max_side) if cfg.send_images else 0
    for n, res in enumerate(stream or read_records(cfg.input, cfg.input_format)):
        if cfg.limit is not None and n >= cfg.limit:
            break
        if res.error is not None:
            est.rejected += 1
            est.reasons[res.error.reason.split(":")[0]] += 1
            continue
        rec = res.record
        try:
            for ref in rec.images:
                images.check(ref)
        except ImageError as exc:
            est.rejected += 1
            est.reasons[str(exc).split(":")[0]] += 1
            continue
        if not rec.items:
            continue
        est.records += 1
        est.items += len(rec.items)
        op = OPERATORS[choose_operator(record_rng(cfg.seed, rec.id, 1), cfg.mix)]
        request = op.build(rec, rec.items, 1, opts)
        op_in = request.text_chars() // CHARS_PER_TOKEN + per_image * len(rec.images)
        judge_in = op_in + len(rec.items) * OUT_TOKENS_PER_ITEM
        growth = 1.0
        for _ in range(cfg.rounds):
            est.requests += 2
            op_out, judge_out = int(len(rec.items) * OUT_TOKENS_PER_ITEM * growth), len(rec.items) * JUDGE_OUT_TOKENS_PER_ITEM
            est.evolver_tokens[0] += int(op_in * growth)
            est.evolver_tokens[1] += op_out
            est.judge_tokens[0] += int(judge_in * growth)
            est.judge_tokens[1] += judge_out
            growth *= ROUND_GROWTH
    est.tokens_in = est.evolver_tokens[0] + est.judge_tokens[0]
    est.tokens_out = est.evolver_tokens[1] + est.judge_tokens[1]
    return est
