"""A synthetic evolved run with a known skew, for testing and benchmarking `evol select`.

Most items (`head_share`) ask one of a few verb-noun pairs about a few common objects;
the rest spread over a long tail of verbs and nouns. Yes/no answers lean heavily to
"yes" and multiple-choice answers to letter A, as in much real instruction data. Every
item is an evolved item the judge kept, with a score from 3 to 10, so a score floor
removes some. The questions are plain templates whose verb-noun pair is known
(`SyntheticRun.pairs`), so selection can be tested with pairs supplied directly as well
as through the real parser.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from evol.records import Item, Record, Verdict, Version

HEAD_VERBS = ("describe", "count")
HEAD_NOUNS = ("dog", "car", "person")
TAIL_VERBS = ("describe", "count", "compare", "identify", "locate", "name", "explain", "measure", "read",
              "estimate", "find", "list", "track", "inspect", "sketch", "rank", "trace", "classify",
              "outline", "examine")
TAIL_NOUNS = ("umbrella", "bicycle", "kite", "lamp", "bridge", "tower", "boat", "horse", "clock", "bench",
              "window", "fence", "truck", "plate", "bottle", "laptop", "sign", "tree", "cloud", "mountain",
              "river", "bird", "giraffe", "zebra", "elephant", "pizza", "banana", "apple", "chair", "sofa",
              "mirror", "vase", "candle", "guitar", "piano", "train", "bus", "ladder", "helmet", "backpack",
              "suitcase", "tie", "hat", "skateboard", "surfboard", "frisbee", "statue", "fountain", "tent",
              "flag", "door", "stair", "carpet", "painting", "book", "phone", "remote", "oven", "sink", "cup")
PROP_ADJECTIVES = ("old", "striped", "wooden", "tiny", "broken")  # x TAIL_NOUNS: a 300-object long tail
SKILLS = ("grounding", "referencing", "calculating", "OCR", "existence", "relationship description",
          "context understanding", "behaviour prediction", "knowledge integration")


@dataclass
class SyntheticRun:
    path: Path
    items: int
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)  # question -> its pair

    def pairs_fn(self):
        """A `PairsFn` answering from the known pairs (no parser needed)."""
        return lambda texts: (self.pairs.get(t, (None, None)) for t in texts)


def _question(kind: str, verb: str, noun: str, rng: random.Random) -> str:
    if kind == "yes-no":
        return f"Can you {verb} the {noun} near the {rng.choice(TAIL_NOUNS)}? Is it {rng.choice(('large', 'red', 'visible'))}?"
    return f"{verb.capitalize()} the {noun} in picture {rng.randint(1, 10**6)}."


def write_synthetic_run(folder: str | Path, records: int = 2000, *, head_share: float = 0.7,
                        yes_share: float = 0.8, seed: int = 0) -> SyntheticRun:
    """Write `folder/records.jsonl` with one kept evolved item per record."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run = SyntheticRun(folder / "records.jsonl", records)
    with open(run.path, "w", encoding="utf-8") as f:
        for i in range(records):
            head = rng.random() < head_share
            verb = rng.choice(HEAD_VERBS if head else TAIL_VERBS)
            noun = rng.choice(HEAD_NOUNS if head else TAIL_NOUNS)
            kind = rng.choices(("yes-no", "choice", "open"), (0.35, 0.2, 0.45))[0]
            question = _question(kind, verb, noun, rng)
            options: list[str] = []
            if kind == "yes-no":
                answer = "Yes, it is." if rng.random() < yes_share else "No, it is not."
            elif kind == "choice":
                options = [f"{L}. {rng.choice(TAIL_NOUNS)}" for L in "ABCD"]
                letter = "A" if rng.random() < 0.7 else rng.choice("BCD")
                answer = f"{letter}. It is the right one."
            else:
                answer = f"The {noun} is {rng.choice(('on the left', 'small', 'near the middle', 'partly hidden'))}."
            objects = [noun] + ([f"{rng.choice(PROP_ADJECTIVES)} {rng.choice(TAIL_NOUNS)}"] if rng.random() < 0.3 else [])
            skills = [rng.choice(SKILLS[:3] if head else SKILLS)]
            run.pairs[question] = (verb, noun)
            seed_item = Item(id=f"syn{i}#0", question=f"What is in picture {i}?", answer="A scene.")
            child = Item(id=f"syn{i}#0@r1", parent=seed_item.id, question=question, answer=answer, options=options,
                         objects=objects, skills=skills, format={"yes-no": None, "choice": "multiple choice",
                                                                 "open": "short answer"}[kind],
                         verdict=Verdict(improved=True, score=rng.randint(3, 10), reason="synthetic"))
            rec = Record(id=f"syn{i}", images=[f"img{i % 50}.jpg"], caption="A synthetic scene.", items=[seed_item],
                         versions=[Version(round=1, operator="perceptual", items=[child])],
                         meta={"key": f"syn{i}", "index": i})
            f.write(rec.model_dump_json(exclude_none=True) + "\n")
    (folder / "manifest.json").write_text(json.dumps({"config": {"input": "synthetic"}}))
    return run
