"""The elimination stages and the checks that run after the judge.

`--checks` picks stages from `STAGES`: the rule checks and the judge (the default, as
MMEvol's eliminator), then the blind check (can the question be answered without the
picture?) and the answer check (does the model, looking, give the item's answer?). Each
later stage sees only the items every earlier stage kept, so the calls it costs shrink
with every rejection; each writes what it found into the item's verdict (`Verdict.checks`)
and, when it rejects, names itself in `Verdict.stage`. A later check's calls go through
the same backend, cache and retries as the judge's, so a resumed run asks nothing twice.

`stage_counts` reads the per-stage figures (items examined and rejected, requests, tokens)
back from a finished round, for the manifest and the report.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Awaitable, Callable, TypeVar

from evol.backends.base import Backend, BackendError, Reply, Request, RunStopped, Sampling, TransportError
from evol.eliminator.agree import agree
from evol.eliminator.answer import AnswerCheck
from evol.eliminator.blind import BlindCheck
from evol.eliminator.same import Pair, SameCheck
from evol.records import Item, Record, Version

log = logging.getLogger("evol.eliminator")

STAGES = ("rules", "judge", "blind", "answer")
DEFAULT_CHECKS = ("rules", "judge")
LATER = ("blind", "answer")  # the stages this module runs
STAGE_FIELDS = ("examined", "rejected", "requests", "tokens_in", "tokens_out")  # per stage, in the manifest

Call = Callable[[Backend, Request, Version, str], Awaitable[Reply]]
T = TypeVar("T")


def overturn(child: Item, stage: str, reason: str) -> None:
    """A later check rejects an item the judge kept: not improved, the stage named, the
    judge's reason kept in `checks`."""
    v = child.verdict
    assert v is not None
    checks = {**(v.checks or {}), "judge": v.reason, stage: reason}
    child.verdict = v.model_copy(update={"improved": False, "stage": stage, "reason": reason, "checks": checks})


def note(child: Item, stage: str, finding: str) -> None:
    """What a check found on an item it kept."""
    v = child.verdict
    assert v is not None
    child.verdict = v.model_copy(update={"checks": {**(v.checks or {}), stage: finding}})


def examined_by_later_checks(version: Version) -> list[Item]:
    """The items the judge kept (whatever their score: thresholds apply apart) that no
    later check has rejected yet."""
    return [c for c in version.items
            if c.verdict is not None and c.verdict.improved and c.verdict.rule is None and c.verdict.stage is None]


class LaterChecks:
    """Runs the blind and answer checks of one record's round, in that order.

    `call(backend, request, version, stage)` makes one call and counts it into the round;
    `forget(backend, request)` drops a cached unusable reply so that `--retry-failed` asks
    again. A check whose reply stays unusable (a model fault) fails the round the way a
    judge failure does: its items are rejected by that stage, and the round is marked
    failed; a call that got no answer (a transport fault) raises, and the record stays
    pending.
    """

    def __init__(self, checks: tuple[str, ...], backend: Backend, sampling: Sampling, send_image: bool,
                 call: Call, forget: Callable[[Backend, Request], None]):
        self.checks = tuple(c for c in LATER if c in checks)
        self.backend, self.sampling, self.send_image = backend, sampling, send_image
        self.call, self.forget = call, forget
        self.blind, self.answer, self.same = BlindCheck(), AnswerCheck(), SameCheck()

    async def run(self, rec: Record, version: Version) -> None:
        for stage in self.checks:
            items = examined_by_later_checks(version)
            if not items:
                return
            try:
                if stage == "blind":
                    await self._blind(rec, version, items)
                else:
                    await self._answer(rec, version, items)
            except (TransportError, RunStopped):
                raise
            except BackendError as exc:
                version.status, version.error = f"{stage}_failed", str(exc)
                log.warning("record %s round %d: %s check failed: %s", rec.id, version.round, stage, exc)
                for child in items:
                    if child.verdict is not None and child.verdict.stage is None:
                        overturn(child, stage, f"{stage} check failed: {exc}")
                return

    async def _ask(self, request: Request, version: Version, stage: str, parse: Callable[[Reply], T]) -> T:
        """One call of a stage, parsed; an unusable reply is dropped from the cache and raises."""
        try:
            return parse(await self.call(self.backend, request, version, stage))
        except (TransportError, RunStopped):
            raise
        except BackendError:
            self.forget(self.backend, request)
            raise

    async def _blind(self, rec: Record, version: Version, items: list[Item]) -> None:
        request = self.blind.build(rec, items, version.round, self.sampling)
        answers = await self._ask(request, version, "blind", lambda r: self.blind.parse(r, items))
        long: list[Pair] = []
        for child in items:
            got = answers.get(child.id)
            if got is None:
                overturn(child, "blind", "the blind check gave no answer for this item")
            elif not got.can_tell:
                note(child, "blind", "cannot tell without the picture")
            else:
                self._settle(child, "blind", got.answer, agree(child.answer, got.answer, child.options), long)
        await self._settle_long(rec, version, items, long, "blind")

    async def _answer(self, rec: Record, version: Version, items: list[Item]) -> None:
        request = self.answer.build(rec, items, version.round, self.sampling, send_image=self.send_image)
        answers = await self._ask(request, version, "answer", lambda r: self.answer.parse(r, items))
        long: list[Pair] = []
        for child in items:
            got = answers.get(child.id)
            if got is None:
                overturn(child, "answer", "the answer check gave no answer for this item")
            else:
                self._settle(child, "answer", got, agree(child.answer, got, child.options), long)
        await self._settle_long(rec, version, items, long, "answer")

    @staticmethod
    def _settle(child: Item, stage: str, got: str, same: bool | None, long: list[Pair]) -> None:
        """The blind check rejects an item whose answer it could give; the answer check one
        whose answer it could not. Answers too long to compare by words wait in `long`."""
        if same is None:
            long.append(Pair(child.id, child.question, child.answer, got))
        elif stage == "blind":
            if same:
                overturn(child, stage, _blind_reason(got, child.answer))
            else:
                note(child, stage, f"answered {got!r} without the picture, which differs")
        elif same:
            note(child, stage, f"agrees: {got!r}")
        else:
            overturn(child, stage, _answer_reason(got, child.answer))

    async def _settle_long(self, rec: Record, version: Version, items: list[Item], long: list[Pair],
                           stage: str) -> None:
        """One comparison call for the long answers of a stage, then each item settled."""
        if not long:
            return
        request = self.same.build(rec.id, long, version.round, stage, self.sampling)
        verdicts = await self._ask(request, version, stage, lambda r: self.same.parse(r, long))
        by_id = {c.id: c for c in items}
        for pair in long:
            same = verdicts.get(pair.item_id)
            if same is None:
                overturn(by_id[pair.item_id], stage, "the comparison of answers gave no verdict for this item")
            else:
                self._settle(by_id[pair.item_id], stage, pair.got, same, [])


def _blind_reason(blind: str, expected: str) -> str:
    return (f"answerable without the picture: asked with no image, caption or boxes, the model answered "
            f"{_short(blind)!r}, which agrees with the item's answer {_short(expected)!r}")


def _answer_reason(got: str, expected: str) -> str:
    return (f"the answer disagrees with the picture: looking at it, the model answered {_short(got)!r}; "
            f"the item says {_short(expected)!r}")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stage_counts(version: Version, counts: dict[str, Counter]) -> None:
    """Add one round's per-stage figures to `counts` (stage -> Counter of examined,
    rejected, requests, tokens_in, tokens_out)."""
    for child in version.items:
        v = child.verdict
        counts["rules"]["examined"] += 1
        if v is None:
            continue
        if v.rule is not None:
            counts["rules"]["rejected"] += 1
            continue
        counts["judge"]["examined"] += 1
        if not v.improved and v.stage is None:
            counts["judge"]["rejected"] += 1
        for stage in LATER:
            if v.checks and stage in v.checks:
                counts[stage]["examined"] += 1
                counts[stage]["rejected"] += v.stage == stage
    for stage, (requests, tokens_in, tokens_out) in (version.usage or {}).items():
        c = counts[stage]
        c["requests"] += requests
        c["tokens_in"] += tokens_in
        c["tokens_out"] += tokens_out
