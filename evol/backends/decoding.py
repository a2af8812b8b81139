"""Per-row control of a batched transformers `generate`: JSON grammars, sampling, seeds, limits.

One `generate` call decodes a padded batch of unrelated requests: an operator call at
temperature 0.7 with one JSON schema next to a judge call at temperature 0 with another.
transformers applies one sampling setting to the whole batch, so `RowController` does the
choosing itself, one row at a time, and hands `generate` (run greedy) scores where only the
chosen token is finite:

1. constrained decoding: each row with a schema has its own xgrammar `GrammarMatcher`
   (compiled once per schema and tokenizer); the matcher's token bitmask removes every
   token that would break the JSON, so the answer always parses once it is complete;
2. the row's own temperature and top-p, with greedy decoding at temperature 0;
3. the row's own `torch.Generator`, seeded from `Sampling.seed`, so a request samples the
   same tokens whichever batch it lands in (up to the float noise of padding);
4. the row's own token limit: at the limit only the stop token is left.

One repair on top of xgrammar (0.2.8): a string with ``maxLength`` lets raw control
characters (newline, tab, ...) through, which no JSON parser accepts. The grammars here
allow no free whitespace, so a byte below 0x20 is never valid anywhere in the answer:
tokens holding one are masked for every constrained row.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from typing import Any

import torch
import xgrammar as xgr
from transformers import LogitsProcessor


@dataclass
class RowSpec:
    """How one row of the batch is decoded."""

    grammar: xgr.CompiledGrammar | None
    temperature: float
    top_p: float
    seed: int | None
    max_new_tokens: int


class GrammarCache:
    """JSON-schema grammars compiled for one tokenizer, each schema once (thread-safe)."""

    def __init__(self, tokenizer: Any, vocab_size: int):
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(self.info)
        self._compiled: dict[str, xgr.CompiledGrammar] = {}
        self._lock = threading.Lock()
        stops = set(self.info.stop_token_ids) | set(self.info.special_token_ids)
        self.control_ids = torch.tensor(
            [i for i, b in enumerate(self.info.decoded_vocab) if i not in stops and any(c < 0x20 for c in b)],
            dtype=torch.long)

    @property
    def stop_ids(self) -> list[int]:
        return list(self.info.stop_token_ids)

    def json_schema(self, schema: dict[str, Any]) -> xgr.CompiledGrammar:
        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            grammar = self._compiled.get(key)
            if grammar is None:
                # properties keep the schema's order (the answer is written in that order);
                # no free whitespace: a small model can otherwise loop on spaces forever
                grammar = self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
                self._compiled[key] = grammar
            return grammar


class RowController(LogitsProcessor):
    """Chooses every row's next token (see the module docstring). One instance per batch."""

    def __init__(self, rows: list[RowSpec], stop_ids: list[int], vocab_size: int,
                 banned: torch.Tensor | None = None):
        if not stop_ids:
            raise ValueError("the tokenizer names no stop token")
        self.rows = rows
        self.stop_ids = list(stop_ids)
        self.vocab_size = vocab_size
        self.banned = banned if banned is not None and banned.numel() else None
        self.matchers = [xgr.GrammarMatcher(r.grammar) if r.grammar is not None else None for r in rows]
        self.constrained = [i for i, m in enumerate(self.matchers) if m is not None]
        self.bitmask = xgr.allocate_token_bitmask(len(rows), vocab_size) if self.constrained else None
        self.generated = [0] * len(rows)    # tokens chosen so far, stop token excluded
        self.done = [False] * len(rows)     # the stop token has been chosen
        self.at_limit = [False] * len(rows)  # stopped by the token limit, not by the model
        self.broken: list[str | None] = [None] * len(rows)
        self._gens: list[torch.Generator] | None = None
        self._step = 0

    def _generators(self, device: torch.device) -> list[torch.Generator]:
        if self._gens is None:
            self._gens = []
            for r in self.rows:
                g = torch.Generator(device=device)
                g.manual_seed(r.seed if r.seed is not None else random.getrandbits(63))
                self._gens.append(g)
        return self._gens

    def _advance(self, input_ids: torch.LongTensor) -> None:
        """Feed each live row's last chosen token to its grammar matcher."""
        last = input_ids[:, -1].tolist()
        for i, tok in enumerate(last):
            if self.done[i]:
                continue
            if tok in self.stop_ids:
                self.done[i] = True
                continue
            self.generated[i] += 1
            m = self.matchers[i]
            if m is not None and not m.accept_token(tok):
                self.broken[i] = f"token {tok} was refused by the grammar"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._step > 0:
            self._advance(input_ids)
        self._step += 1
        scores = scores.float()
        width = scores.shape[-1]
        if self.bitmask is not None:
            live = [i for i in self.constrained if not self.done[i] and self.broken[i] is None]
            for i in live:
                self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
            if live:
                xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), vocab_size=min(width, self.vocab_size), indices=live)
                if self.banned is not None:
                    rows = torch.tensor(live, device=scores.device)
                    scores[rows.unsqueeze(1), self.banned.to(scores.device).unsqueeze(0)] = float("-inf")
            if width > self.vocab_size:  # padded embedding rows are never real tokens
                scores[self.constrained, self.vocab_size:] = float("-inf")
        gens = self._generators(scores.device)
        chosen: list[int] = []
        for i, spec in enumerate(self.rows):
            if self.done[i] or self.broken[i] is not None:
                chosen.append(self.stop_ids[0])
            elif self.generated[i] >= spec.max_new_tokens:
                self.at_limit[i] = True
                chosen.append(self.stop_ids[0])
            else:
                chosen.append(_pick(scores[i], spec.temperature, spec.top_p, gens[i], self.stop_ids[0]))
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(chosen), device=scores.device), torch.tensor(chosen, device=scores.device)] = 0.0
        return out


def _pick(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator, fallback: int) -> int:
    if not torch.isfinite(logits).any():
        return fallback  # nothing allowed (cannot happen with a sound grammar): stop the row
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if 0 < top_p < 1:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p  # always keeps the first
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))
