"""SVIT-style seeds: a text-only model writes four kinds of data from a picture's notes.

After SVIT (Scaling up Visual Instruction Tuning, arXiv 2307.04087), which had GPT-4 write
conversations, complex reasoning, detailed descriptions and referring QAs from the manual
annotations of Visual Genome and COCO (captions, objects with boxes, region
descriptions), never the pixels.

For every input record and every requested task, one model call gets the record's
caption, objects with 0-1 boxes and region notes (`evol.seeding.sources`), never the
pixels, and writes:

* conversation: a few short exchanges around a theme drawn per record (object types,
  counting, actions, locations, relative positions, background knowledge, events,
  planning), with definite answers;
* reasoning: why / what-next questions answered step by step from the picture plus
  common sense;
* description: a detailed description, answering a request drawn from a pool of
  paraphrases (`prompts/svit_description_requests.md`);
* referring: questions and answers in which every named object carries its box.

Each task's items become one output record (`source="svit/<task>"`) that the evolver
reads. Items are checked with `written_item_problem`: text that names its sources
("caption", "bounding box", "the description"), replies that ask for the missing input,
refusals, empty text, markup (`<img src=...>`, `![](...)`) and web addresses, boxes that
are not the record's, and referring items citing no box are dropped, each with a line in
the rejects file. A set of items that asks the same question twice with different answers
contradicts itself and is dropped whole; a turn repeated word for word is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable

from evol.backends.base import BackendError, Reply, Request, RunStopped, TransportError
from evol.eliminator.rules import contradicting_turns, repeated_turns, written_item_problem
from evol.prompts import load_prompt
from evol.records import Item, Record
from evol.rundir import reject_entry
from evol.seeding.llm import LLMOptions, Produced, chat, derived_rng, run_stream
from evol.seeding.sources import has_notes, notes, object_labels_in
from evol.stats import CallStats

log = logging.getLogger("evol.seeding.svit")

TASKS = ("conversation", "reasoning", "description", "referring")
COMMON_PROMPT = "svit_common"
REQUESTS_PROMPT = "svit_description_requests"

ABILITIES = (
    "grounding", "referencing", "calculating", "OCR", "existence", "relationship description",
    "context understanding", "behaviour prediction", "knowledge integration",
)
# conversation themes, each with the ability it mostly exercises (used when the model names none)
TOPICS: dict[str, str] = {
    "the kinds of objects present": "referencing",
    "counting things": "calculating",
    "what people or animals are doing": "context understanding",
    "where things are": "grounding",
    "how things are placed relative to each other": "relationship description",
    "background knowledge about what is shown": "knowledge integration",
    "the event or occasion taking place": "context understanding",
    "planning what to do in this place": "behaviour prediction",
}


def description_requests() -> list[str]:
    """The pool of paraphrased requests a detailed description answers."""
    lines = load_prompt(REQUESTS_PROMPT).text.splitlines()
    return [ln.strip() for ln in lines if ln.strip()]


def _strings() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}}


def _skills() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "enum": list(ABILITIES)}}


def _qa_list(key: str, lo: int, hi: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {"question": {"type": "string"}, "answer": {"type": "string"}, "objects": _strings(), "skills": _skills()}
    props.update(extra or {})
    entry = {"type": "object", "properties": props, "required": list(props)}
    return {"type": "object", "properties": {key: {"type": "array", "minItems": lo, "maxItems": hi, "items": entry}},
            "required": [key]}


@dataclass(frozen=True)
class Plan:
    """What one (record, task) call asks for, drawn from the record's own generator."""

    task: str
    vars: dict[str, Any]
    schema: dict[str, Any]
    question: str | None = None  # the user turn, for tasks whose question we write
    topic: str | None = None


def plan(task: str, record: Record, rng: random.Random) -> Plan:
    if task == "conversation":
        topic = rng.choice(list(TOPICS))
        turns = rng.randint(3, 5)
        return Plan(task, {"topic": topic, "turns": turns}, _qa_list("turns", 2, turns + 1), topic=topic)
    if task == "reasoning":
        n = rng.randint(1, 2)
        steps = {"steps": {"type": "array", "minItems": 2, "maxItems": 5, "items": {"type": "string"}}}
        return Plan(task, {"n": n}, _qa_list("items", 1, n, steps))
    if task == "description":
        request = rng.choice(description_requests())
        schema = {"type": "object", "properties": {"description": {"type": "string"}}, "required": ["description"]}
        return Plan(task, {"request": request}, schema, question=request)
    if task == "referring":
        n = rng.randint(2, 4)
        return Plan(task, {"n": n}, _qa_list("items", 1, n))
    raise ValueError(f"unknown SVIT task {task!r}; known: {', '.join(TASKS)}")


def template_id(task: str) -> str:
    return f"{load_prompt(COMMON_PROMPT).id}+{load_prompt('svit_' + task).id}"


def build_request(record: Record, p: Plan, opts: LLMOptions) -> Request:
    task_text = load_prompt("svit_" + p.task).render(**p.vars).strip()
    system = load_prompt(COMMON_PROMPT).render(**notes(record), task=task_text)
    user = "Write it now, as one JSON object."
    if p.task == "description":
        user = f"Request: {p.question}\nWrite the reply now, as one JSON object."
    return chat(system, user, schema=p.schema, schema_name=f"svit_{p.task}",
                sampling=opts.sampling(record.id, p.task), template=template_id(p.task),
                tag=f"{record.id}/svit/{p.task}")


# ----------------------------------------------------------------------- replies
def _text(v: Any) -> str:
    return v.strip() if isinstance(v, str) else ""


def _list(v: Any) -> list[str]:
    return [s.strip() for s in v if isinstance(s, str) and s.strip()] if isinstance(v, list) else []


def parse_reply(record: Record, p: Plan, reply: Reply, out_id: str) -> tuple[list[Item], list[str]]:
    """Items from a reply, plus a readable line for each entry that could not be used."""
    data = reply.data
    if not isinstance(data, dict):
        cut = " (cut off at max_tokens)" if reply.finish_reason == "length" else ""
        raise BackendError(f"reply is not a JSON object{cut}: {reply.text[:120]!r}")
    if p.task == "description":
        text = _text(data.get("description"))
        return [Item(id=f"{out_id}#0", question=p.question or "", answer=text,
                     objects=object_labels_in(text, record), skills=["context understanding"],
                     format="detailed description")], []
    key = "turns" if p.task == "conversation" else "items"
    entries = data.get(key)
    if not isinstance(entries, list):
        raise BackendError(f"reply has no {key!r} list: {str(data)[:120]}")
    items, problems = [], []
    default_skill = {"conversation": TOPICS.get(p.topic or "", "context understanding"),
                     "reasoning": "knowledge integration", "referring": "grounding"}[p.task]
    for k, e in enumerate(entries):
        if not isinstance(e, dict):
            problems.append(f"entry {k + 1} is {type(e).__name__}, not an object")
            continue
        q, a = _text(e.get("question")), _text(e.get("answer"))
        skills = [s for s in _list(e.get("skills")) if s in ABILITIES] or [default_skill]
        steps = [{"description": s} for s in _list(e.get("steps"))]
        objects = [o.lower() for o in _list(e.get("objects"))] or object_labels_in(f"{q} {a}", record)
        items.append(Item(id=f"{out_id}#{len(items)}", question=q, answer=a, objects=objects,
                          skills=list(dict.fromkeys(skills)), steps=steps, format=p.task))
    return items, problems


# -------------------------------------------------------------------------- driver
class SvitGenerator:
    """Runs the requested tasks for each record through one backend."""

    def __init__(self, backend: Any, opts: LLMOptions, tasks: list[str]):
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"unknown or no SVIT task(s) {unknown or tasks}; known: {', '.join(TASKS)}")
        self.backend, self.opts, self.tasks = backend, opts, list(dict.fromkeys(tasks))
        self.stats = CallStats()

    async def one(self, record: Record, key: str) -> Produced:
        result = Produced()
        if not has_notes(record):
            entry = reject_entry(key, "nothing to write from: no caption, objects or region notes",
                                 "svit", record=record.id, final=True)
            result.rejects.append({**entry, "rule": "no_notes"})
            return result
        parts = await asyncio.gather(*(self._task(record, key, task) for task in self.tasks))
        for part in parts:  # task order, whatever order the calls finished in
            result.records += part.records
            result.rejects += part.rejects
        return result

    async def _task(self, record: Record, key: str, task: str) -> Produced:
        result = Produced()
        stage = f"svit/{task}"
        out_id = f"{record.id}-{task}"
        p = plan(task, record, derived_rng(self.opts.seed, "svit", record.id, task))
        try:
            reply = await self.backend.complete(build_request(record, p, self.opts))
            self.stats.answered(reply)
            items, problems = parse_reply(record, p, reply, out_id)
        except (TransportError, RunStopped):
            raise  # no answer: the command stops, and a rerun asks again
        except BackendError as exc:
            self.stats.failed += 1
            log.warning("record %s, %s: %s", record.id, task, exc)
            entry = reject_entry(key, f"{task} call failed: {exc}", stage, record=record.id)
            result.rejects.append({**entry, "rule": "call_failed"})
            return result
        for why in problems:
            result.rejects.append({**reject_entry(key, why, stage, record=record.id), "rule": "bad_entry"})
        what, unit = ("conversation", "turn") if task == "conversation" else (f"{task} reply", "item")
        contradiction = contradicting_turns(items, what, unit)
        if contradiction:
            entry = reject_entry(key, f"{contradiction}; all {len(items)} of its items are dropped", stage,
                                 record=record.id)
            result.rejects.append({**entry, "rule": "contradiction"})
            return result
        repeats = dict(repeated_turns(items, unit))
        kept = []
        for k, item in enumerate(items):
            if k in repeats:
                entry = reject_entry(key, repeats[k], stage, record=record.id, item=item.id)
                result.rejects.append({**entry, "rule": "repeated_turn"})
                continue
            fault = written_item_problem(item, record, boxes_required=task == "referring",
                                         given_question=p.question is not None)
            if fault:
                entry = reject_entry(key, fault[1], stage, record=record.id, item=item.id)
                entry["rule"] = fault[0]
                result.rejects.append(entry)
            else:
                kept.append(item)
        if not kept:
            if items:
                entry = reject_entry(key, f"every {task} item was rejected", stage, record=record.id)
                result.rejects.append({**entry, "rule": "all_rejected"})
            return result
        for n, item in enumerate(kept):  # renumber so ids stay dense after rejects
            item.id = f"{out_id}#{n}"
        meta = {"seed_of": record.id, "task": task, "prompt": template_id(task)}
        if p.topic:
            meta["topic"] = p.topic
        result.records.append(Record(id=out_id, images=list(record.images), caption=record.caption,
                                     objects=list(record.objects), items=kept, source=stage, meta=meta))
        return result


async def generate(inputs: Any, gen: SvitGenerator, write: Callable[[Record], None],
                   reject: Callable[[dict[str, Any]], None], *, limit: int | None = None) -> int:
    """Stream `inputs` (read results) through `gen`; return how many inputs were read."""
    return await run_stream(inputs, gen.one, write, reject, window=max(8, 2 * gen.opts.concurrency), limit=limit)
