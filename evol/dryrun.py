"""`--dry-run`: how many requests and tokens a run would take, without calling anything.

Requests are an upper bound (every round of every valid record, operator plus judge);
rule checks and eliminated chains only make a real run cheaper. Tokens are estimated
from the requests the operators would build for round one (4 characters a token), with
later rounds assumed to grow by a third, and a per-image cost from the image size sent.

The later elimination stages, when `--checks` names them, add per record and round:
blind one text-only call (the questions, no image tokens), answer one call with the
picture (image tokens when images go to the judge: --send-images and --judge-image), and
each at most one more text-only call comparing long answers ("same_answer"). That call
is counted every round, and every check is counted as if the judge kept every item, so
these requests are an upper bound too. Their tokens are estimated from the checks'
requests built on the seed items, each question taken `CHECK_QUESTION_TOKENS_PER_ITEM`
longer once evolved. They run on the judge's backend and count as the judge's tokens.

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
CHECK_QUESTION_TOKENS_PER_ITEM = 100  # what an evolved question (with options) adds to the seed's
CHECK_ANSWER_TOKENS_PER_ITEM = 60     # what an evolved answer adds, in a comparison of answers
CHECK_OUT_TOKENS_PER_ITEM = 60        # a check's or a comparison's answer per item


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
    judge_tokens: list[int] = field(default_factory=lambda: [0, 0])  # the later checks' included
    prices: dict = field(default_factory=dict)  # role -> (in, out) per million tokens
    # stage -> {"requests", "tokens_in", "tokens_out"}: "operator", "judge", and "blind" and
    # "answer" when checked (their comparisons of answers included)
    stages: dict[str, dict[str, int]] = field(default_factory=dict)

    def _add(self, stage: str, requests: int, tokens_in: int, tokens_out: int) -> None:
        s = self.stages.setdefault(stage, {"requests": 0, "tokens_in": 0, "tokens_out": 0})
        s["requests"] += requests
        s["tokens_in"] += tokens_in
        s["tokens_out"] += tokens_out
        self.requests += requests
        role = self.evolver_tokens if stage == "operator" else self.judge_tokens
        role[0] += tokens_in
        role[1] += tokens_out

    def requests_text(self) -> str:
        """"operator 10, judge 10, blind 20, answer 20" (the stages estimated, in order)."""
        return ", ".join(f"{stage} {s['requests']:,}" for stage, s in self.stages.items())

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


def _check_tokens(rec, cfg: EvolveConfig, sampling: Sampling, per_image: int) -> dict[str, tuple[int, int]]:
    """Round one's input tokens of each later check named in `cfg.checks`, and of its
    comparison of answers: stage -> (check, comparison). The requests are built from the
    seed items, each question taken `CHECK_QUESTION_TOKENS_PER_ITEM` longer once evolved."""
    from evol.eliminator.answer import AnswerCheck
    from evol.eliminator.blind import BlindCheck
    from evol.eliminator.same import Pair, SameCheck
    from evol.eliminator.stages import LATER

    n = len(rec.items)
    pairs = [Pair(it.id, it.question, it.answer, it.answer) for it in rec.items]
    extra = n * CHECK_QUESTION_TOKENS_PER_ITEM
    out: dict[str, tuple[int, int]] = {}
    for stage in (c for c in LATER if c in cfg.checks):
        if stage == "blind":  # text only: no image tokens
            check = BlindCheck().build(rec, rec.items, 1, sampling).text_chars() // CHARS_PER_TOKEN + extra
        else:
            send = cfg.send_images and cfg.judge_image
            request = AnswerCheck().build(rec, rec.items, 1, sampling, send_image=send)
            check = (request.text_chars() // CHARS_PER_TOKEN + extra
                     + (per_image * len(rec.images) if send else 0))
        same = (SameCheck().build(rec.id, pairs, 1, stage, sampling).text_chars() // CHARS_PER_TOKEN + extra
                + n * 2 * CHECK_ANSWER_TOKENS_PER_ITEM)
        out[stage] = (check, same)
    return out


def estimate(cfg: EvolveConfig, images: ImageStore, stream: Iterator[ReadResult] | None = None) -> Estimate:
    est = Estimate(prices=role_prices(cfg))
    opts = BuildOptions(sampling=Sampling(max_tokens=cfg.max_tokens), send_images=cfg.send_images)
    per_image = image_tokens(cfg.max_side) if cfg.send_images else 0
    est.stages = {stage: {"requests": 0, "tokens_in": 0, "tokens_out": 0} for stage in ("operator", "judge")}
    check_sampling = Sampling(cfg.judge_temperature, 1.0, cfg.max_tokens, cfg.seed)
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
        # the judge sees the pictures only with --judge-image (the default)
        judge_in = op_in + len(rec.items) * OUT_TOKENS_PER_ITEM - (0 if cfg.judge_image else per_image * len(rec.images))
        later = _check_tokens(rec, cfg, check_sampling, per_image)
        check_out = len(rec.items) * CHECK_OUT_TOKENS_PER_ITEM
        growth = 1.0
        for _ in range(cfg.rounds):
            op_out, judge_out = int(len(rec.items) * OUT_TOKENS_PER_ITEM * growth), len(rec.items) * JUDGE_OUT_TOKENS_PER_ITEM
            est._add("operator", 1, int(op_in * growth), op_out)
            est._add("judge", 1, int(judge_in * growth), judge_out)
            for stage, (check_in, same_in) in later.items():  # the check, and at most one comparison
                est._add(stage, 2, int(check_in * growth) + int(same_in * growth), 2 * check_out)
            growth *= ROUND_GROWTH
    est.tokens_in = est.evolver_tokens[0] + est.judge_tokens[0]
    est.tokens_out = est.evolver_tokens[1] + est.judge_tokens[1]
    return est
