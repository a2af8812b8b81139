"""MM-Instruct-style seeds: a bank of broad instructions, matched to pictures and answered.

After MM-Instruct (arXiv 2406.19736), which has an LLM turn a few seed instructions into
many varied ones (augmentation, then summarisation), matches them to images, and has an
LLM answer each from a detailed text description of its image; the steps here:

1. grow: starting from a few seed instructions (by default the shipped `instructions.txt`,
   see `evol.samples.shipped`), the model is shown a sample of the bank and asked for new,
   different ones until `--grow` more have been accepted (near-duplicates, refusals and
   unusable lines are rejected with a reason);
2. cluster: all instructions are embedded (`evol.seeding.embed`) and grouped with k-means;
3. summarise: each group becomes one reusable instruction plus a short task name and
   one of the seventeen task forms (`evol.operators.interaction.TASK_FORMS`; a form
   written another way is mapped onto them, and answers to a group whose form is near
   none of them are rejected with the reason);
4. match: each picture's notes (caption, object labels, region notes) are compared with
   every group (its instruction, name and members) and the most similar `--per-image`
   are kept, ties broken by the record's own random generator;
5. answer: the model answers each matched instruction grounded on the caption, objects
   with boxes and region notes, and the answers are checked like SVIT's. Each item's
   `format` is its group's task form; the group's name goes into the record's meta.

All calls go through the request cache, and every random choice comes from a generator
derived from the run seed, so a rerun reproduces the bank and repeats no call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from evol.backends.base import Backend, BackendError, Reply, RunStopped, TransportError
from evol.eliminator.rules import STOP_WORDS, asks_for_input, refusal, written_item_problem
from evol.io import ReadResult
from evol.operators.interaction import TASK_FORMS, form_problem, form_schema, task_form
from evol.prompts import load_prompt
from evol.records import Item, Record
from evol.rundir import reject_entry
from evol.seeding.embed import Embedder
from evol.seeding.llm import LLMOptions, Produced, chat, derived_rng, run_stream
from evol.seeding.sources import has_notes, notes, object_labels_in, regions_of
from evol.stats import CallStats

log = logging.getLogger("evol.seeding.instruct")

PER_CALL = 10          # new instructions asked for per grow call
EXAMPLES = 8           # bank instructions shown per grow call
MAX_MEMBERS_SHOWN = 20  # group members shown to the summariser (the most central ones)
_LEADER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|[A-Za-z][.)])\s+")
_WORD = re.compile(r"[a-z0-9']+")
SYSTEM = "You write clear, varied instructions and answers for a multimodal assistant's training data."


@dataclass
class Group:
    """One cluster of the bank and the instruction that sums it up."""

    id: int
    name: str
    instruction: str
    members: list[str] = field(default_factory=list)
    summarised: bool = True  # False: the summary failed and the most central member stands in
    form: str | None = None  # one of TASK_FORMS, or as written when near none of them (answers rejected)


@dataclass
class Bank:
    seeds: list[str]
    grown: list[str]
    groups: list[Group]
    embedder: str

    def to_json(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "seeds": self.seeds, "grown": self.grown,
                "groups": [asdict(g) for g in self.groups]}


def read_bank(path: str | Path) -> list[str]:
    """Seed instructions: one per line, blank lines and lines starting with # ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    bank = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not bank:
        raise ValueError(f"instruction bank {path} holds no instruction")
    return list(dict.fromkeys(bank))


# ------------------------------------------------------------------ instructions
def clean_instruction(text: Any) -> str:
    """Strip list markers and wrapping quotes from one model-written instruction."""
    if not isinstance(text, str):
        return ""
    text = _LEADER.sub("", text.strip()).strip().strip("\"'\u201c\u201d").strip()
    return " ".join(text.split())


# words every instruction uses for the picture: they say nothing about what it asks for
_PICTURE_WORDS = frozenset("photo photos photograph picture pictures image images scene scenes shot view shown".split())


def _words(text: str) -> set[str]:
    """Content words, for comparing what two instructions ask."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and w not in _PICTURE_WORDS}


def instruction_problem(text: str, bank: Iterable[str], max_overlap: float = 0.8) -> str | None:
    """Why a new instruction cannot join the bank, or None."""
    n = len(text.split())
    if n < 3:
        return f"too short ({n} words)"
    if n > 60:
        return f"too long ({n} words)"
    probe = Item(id="-", question="-", answer=text)
    why = refusal(probe, probe, Record(id="-")) or asks_for_input(text)
    if why:
        return why
    mine = _words(text)
    for other in bank:
        theirs = _words(other)
        overlap = len(mine & theirs) / max(1, len(mine | theirs))
        if overlap >= max_overlap:
            return f"near-duplicate of {other[:60]!r} ({overlap:.0%} shared words)"
    return None


# ---------------------------------------------------------------------- the bank
class BankBuilder:
    """Grows, clusters and summarises the instruction bank."""

    def __init__(self, backend: Backend, opts: LLMOptions, embedder: Embedder,
                 reject: Callable[[dict[str, Any]], None]):
        self.backend, self.opts, self.embedder, self.reject = backend, opts, embedder, reject
        self.stats = CallStats()
        self.grow_calls = 0

    def _reject(self, stage: str, key: str, reason: str, rule: str) -> None:
        self.reject({**reject_entry(key, reason, stage), "rule": rule})

    async def _call(self, request: Any) -> Reply | None:
        try:
            reply = await self.backend.complete(request)
        except (TransportError, RunStopped):
            raise  # no answer: the command stops, and a rerun asks again
        except BackendError as exc:
            self.stats.failed += 1
            self._reject(request.tag.split("/")[0], request.tag, f"call failed: {exc}", "call_failed")
            return None
        self.stats.answered(reply)
        return reply

    async def grow(self, seeds: list[str], target: int) -> list[str]:
        """`target` new instructions, or fewer when the model keeps repeating itself."""
        prompt = load_prompt("instruct_grow")
        schema = {"type": "object", "required": ["instructions"], "properties": {"instructions": {
            "type": "array", "minItems": 1, "maxItems": PER_CALL, "items": {"type": "string"}}}}
        grown: list[str] = []
        budget = 3 * math.ceil(target / PER_CALL) + 2  # calls, so a repetitive model cannot loop forever
        rnd = 0
        while len(grown) < target and budget > 0:
            calls = min(budget, self.opts.concurrency, math.ceil((target - len(grown)) / PER_CALL))
            budget -= calls
            self.grow_calls += calls
            bank = seeds + grown
            requests = []
            for j in range(calls):
                rng = derived_rng(self.opts.seed, "grow", str(rnd), str(j))
                shown = rng.sample(bank, min(EXAMPLES, len(bank)))
                requests.append(chat(
                    SYSTEM, prompt.render(examples="\n".join(f"- {s}" for s in shown), n=PER_CALL),
                    schema=schema, schema_name="instructions", sampling=self.opts.sampling("grow", str(rnd), str(j)),
                    template=prompt.id, tag=f"instruct/grow/{rnd}.{j}"))
            replies = await asyncio.gather(*(self._call(r) for r in requests))
            for j, reply in enumerate(replies):  # request order: the bank does not depend on timing
                if reply is None:
                    continue
                data = reply.data if isinstance(reply.data, dict) else {}
                entries = data.get("instructions")
                if not isinstance(entries, list):
                    self._reject("instruct/grow", f"grow/{rnd}.{j}", f"reply has no instructions list: {reply.text[:100]!r}", "bad_reply")
                    continue
                for k, raw in enumerate(entries):
                    text = clean_instruction(raw)
                    why = instruction_problem(text, seeds + grown) if text else "empty instruction"
                    if why:
                        self._reject("instruct/grow", f"grow/{rnd}.{j}.{k}", f"{why}: {text[:80]!r}", "instruction")
                    elif len(grown) < target:
                        grown.append(text)
            rnd += 1
        if len(grown) < target:
            log.warning("the bank grew by %d of the %d instructions asked for", len(grown), target)
        return grown

    def cluster(self, texts: list[str], k: int) -> list[list[int]]:
        """k-means groups of `texts` (indices), most central member first; empty groups dropped."""
        from sklearn.cluster import KMeans

        k = max(1, min(k, len(texts)))
        vecs = self.embedder.fit(texts).encode(texts)
        if k == 1:
            labels, centres = np.zeros(len(texts), dtype=int), vecs.mean(axis=0, keepdims=True)
        else:
            km = KMeans(n_clusters=k, n_init=4, random_state=self.opts.seed % (2**32)).fit(vecs)
            labels, centres = km.labels_, km.cluster_centers_
        groups = []
        for c in range(k):
            idx = np.flatnonzero(labels == c)
            if len(idx):
                dist = np.linalg.norm(vecs[idx] - centres[c], axis=1)
                groups.append([int(i) for i in idx[np.lexsort((idx, dist))]])
        groups.sort(key=lambda g: g[0])
        return groups

    async def summarise(self, texts: list[str], groups: list[list[int]]) -> list[Group]:
        prompt = load_prompt("instruct_summarise")
        schema = {"type": "object", "required": ["name", "instruction", "form"],
                  "properties": {"name": {"type": "string"}, "instruction": {"type": "string"},
                                 "form": form_schema()}}
        forms = ", ".join(TASK_FORMS)

        async def one(gid: int, members: list[int]) -> Group:
            shown = "\n".join(f"- {texts[i]}" for i in members[:MAX_MEMBERS_SHOWN])
            req = chat(SYSTEM, prompt.render(members=shown, forms=forms), schema=schema, schema_name="group_summary",
                       sampling=self.opts.sampling("summarise", *(texts[i] for i in members[:3])),
                       template=prompt.id, tag=f"instruct/summarise/{gid}")
            reply = await self._call(req)
            data = reply.data if reply is not None and isinstance(reply.data, dict) else None
            name = " ".join(str(data.get("name", "")).split())[:60] if data else ""
            text = clean_instruction(data.get("instruction")) if data else ""
            written = data.get("form") if data else None
            written = " ".join(written.split()) if isinstance(written, str) and written.strip() else None
            form = task_form(written) or written  # as written when near no form: its answers are rejected
            why = "no usable reply" if data is None else (instruction_problem(text, []) if text else "empty instruction")
            all_members = [texts[i] for i in members]
            if why:
                if data is not None:
                    self._reject("instruct/summarise", f"summarise/{gid}", f"{why}: {text[:80]!r}; "
                                 "the most central member stands in", "instruction")
                return Group(gid, name or f"group {gid}", all_members[0], all_members, summarised=False, form=form)
            return Group(gid, name or f"group {gid}", text, all_members, form=form)

        return list(await asyncio.gather(*(one(g, m) for g, m in enumerate(groups))))


# ---------------------------------------------------------------------- matching
def record_text(record: Record) -> str:
    labels = " ".join(dict.fromkeys(o.label for o in record.objects))
    regions = " ".join(t for t, _ in regions_of(record))
    return f"{record.caption} {labels} {regions}".strip()


class Matcher:
    """Picks the groups whose text is most similar to a picture's notes."""

    def __init__(self, groups: list[Group], embedder: Embedder, seed: int):
        self.groups, self.embedder, self.seed = groups, embedder, seed
        docs = [f"{g.instruction} {g.name} " + " ".join(g.members) for g in groups]
        self._vecs = embedder.fit(docs).encode(docs)
        self.pictures = 0
        self.unmatched = 0  # pictures like no group at all (TF-IDF: no word in common): seeded draw

    def match(self, record: Record, n: int) -> list[tuple[Group, float]]:
        sims = self._vecs @ self.embedder.encode([record_text(record)])[0]
        self.pictures += 1
        if not np.any(sims > 0):
            self.unmatched += 1
        rng = derived_rng(self.seed, "match", record.id)
        jitter = np.array([rng.random() for _ in self.groups]) * 1e-6
        order = np.argsort(-(sims + jitter), kind="stable")[:n]
        return [(self.groups[i], round(float(sims[i]), 4)) for i in order]


# ---------------------------------------------------------------------- answers
class Answerer:
    def __init__(self, backend: Backend, opts: LLMOptions, matcher: Matcher, per_image: int):
        self.backend, self.opts, self.matcher, self.per_image = backend, opts, matcher, per_image
        self.stats = CallStats()

    async def one(self, record: Record, key: str) -> Produced:
        if not has_notes(record):
            entry = reject_entry(key, "nothing to answer from: no caption, objects or region notes",
                                 "instruct/answer", record=record.id, final=True)
            return Produced([], [{**entry, "rule": "no_notes"}])
        matches = self.matcher.match(record, self.per_image)
        out_id = f"{record.id}-instruct"
        answers = await asyncio.gather(*(self._answer(record, g, out_id) for g, _ in matches))
        items, rejects, used = [], [], []
        for (group, sim), (answer, why) in zip(matches, answers):
            item_id = f"{out_id}#{len(items)}"
            if answer is None:
                rejects.append({**reject_entry(key, why[1], "instruct/answer", record=record.id), "rule": why[0]})
                continue
            item = Item(id=item_id, question=group.instruction, answer=answer, format=group.form,
                        skills=["context understanding"], objects=object_labels_in(answer, record))
            fault = written_item_problem(item, record, given_question=True)
            if fault:
                entry = reject_entry(key, fault[1], "instruct/answer", record=record.id, item=item_id)
                rejects.append({**entry, "rule": fault[0]})
                continue
            items.append(item)
            used.append({"group": group.id, "name": group.name, "similarity": sim})
        if not items:
            return Produced([], rejects)
        rec = Record(id=out_id, images=list(record.images), caption=record.caption, objects=list(record.objects),
                     items=items, source="instruct", meta={"seed_of": record.id, "matched": used})
        return Produced([rec], rejects)

    async def _answer(self, record: Record, group: Group, out_id: str) -> tuple[str | None, tuple[str, str]]:
        if group.form is not None and group.form not in TASK_FORMS:  # no call: the answer could not be kept
            return None, ("task_form", f"group {group.id} ({group.name!r}): {form_problem(group.form)}")
        prompt = load_prompt("instruct_answer")
        schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
        req = chat(SYSTEM, prompt.render(**notes(record), instruction=group.instruction),
                   schema=schema, schema_name="instruct_answer",
                   sampling=self.opts.sampling(record.id, "answer", group.instruction),
                   template=prompt.id, tag=f"{record.id}/instruct/{group.id}")
        try:
            reply = await self.backend.complete(req)
        except (TransportError, RunStopped):
            raise  # no answer: the command stops, and a rerun asks again
        except BackendError as exc:
            self.stats.failed += 1
            return None, ("call_failed", f"answer to group {group.id} failed: {exc}")
        self.stats.answered(reply)
        data = reply.data if isinstance(reply.data, dict) else {}
        answer = data.get("answer")
        if not isinstance(answer, str):
            return None, ("bad_reply", f"answer to group {group.id} is not text: {reply.text[:100]!r}")
        return answer.strip(), ("", "")


async def answer_all(inputs: Iterable[ReadResult], answerer: Answerer, write: Callable[[Record], None],
                     reject: Callable[[dict[str, Any]], None], *, limit: int | None = None) -> int:
    """Stream the inputs through `answerer`; return how many were read."""
    return await run_stream(inputs, answerer.one, write, reject,
                            window=max(8, 2 * answerer.opts.concurrency), limit=limit)


def write_bank(bank: Bank, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(bank.to_json(), indent=2, ensure_ascii=False))
    tmp.replace(path)
