"""The judge: requests show parent and child side by side; verdicts are matched by id."""

from __future__ import annotations

import json

import pytest

from evol.backends.base import Image, Reply, ReplyParseError, Sampling, Text
from evol.eliminator.judge import Judge
from evol.prompts import load_prompt
from evol.records import Item, Obj, Record


def make_pairs(n: int = 3) -> list[tuple[Item, Item]]:
    pairs = []
    for i in range(n):
        parent = Item(id=f"r1#{i}", question=f"Parent question {i}?", answer=f"Parent answer {i}.")
        child = Item(id=f"r1#{i}@r2", parent=parent.id, question=f"Child question {i}?", answer=f"Child answer {i}.")
        pairs.append((parent, child))
    return pairs


RECORD = Record(id="r1", images=["one.png"], caption="Two boats on a lake.",
                objects=[Obj(label="boat", box=[0.1, 0.5, 0.3, 0.7])])


def verdict(eid: str, improved=True, score=7, reason="Richer.") -> dict:
    return {"id": eid, "improved": improved, "score": score, "reason": reason}


def parse(entries, pairs=None):
    return Judge().parse(Reply(text="", data={"verdicts": entries}), pairs or make_pairs())


def test_build_shows_pairs_with_short_child_ids():
    pairs = make_pairs()
    req = Judge().build(RECORD, pairs, 2, sampling=Sampling(temperature=0.0, seed=3))
    system, user = req.messages
    assert [p.ref for p in user.parts if isinstance(p, Image)] == ["one.png"]
    assert isinstance(user.parts[-1], Text)
    assert req.template == load_prompt("judge").id
    assert req.tag == "r1/r2/judge"
    assert req.sampling.seed == 3
    text = system.parts[0].text
    assert "Two boats on a lake." in text and "- boat: [0.1, 0.5, 0.3, 0.7]" in text
    shown = [json.loads(line) for line in text.split("## Rewrites to judge\n")[1].split("\n\n")[0].splitlines()]
    assert [s["id"] for s in shown] == ["e1", "e2", "e3"]
    for s, (parent, child) in zip(shown, pairs):
        assert s["before"]["question"] == parent.question
        assert s["after"]["question"] == child.question
    assert "r1#0@r2" not in text
    assert "$" not in text


def test_build_schema_and_no_image():
    req = Judge().build(RECORD, make_pairs(2), 1, send_image=False)
    assert req.images() == []
    assert "No picture is attached" in req.messages[1].parts[-1].text
    arr = req.schema["properties"]["verdicts"]
    assert arr["minItems"] == arr["maxItems"] == 2
    props = arr["items"]["properties"]
    assert props["id"]["enum"] == ["e1", "e2"]
    assert props["improved"]["type"] == "boolean"
    assert (props["score"]["type"], props["score"]["minimum"], props["score"]["maximum"]) == ("integer", 0, 10)
    assert req.schema_name == "verdicts"


def test_parse_matches_by_id_not_position():
    out = parse([verdict("e3", False, 2, "Worse."), verdict("e1", True, 9, "Harder."), verdict("e2", True, 5)])
    assert out["r1#0@r2"].score == 9 and out["r1#0@r2"].improved and out["r1#0@r2"].reason == "Harder."
    assert out["r1#1@r2"].score == 5
    assert out["r1#2@r2"].score == 2 and not out["r1#2@r2"].improved
    assert all(v.rule is None for v in out.values())


def test_missing_verdict_is_absent_and_does_not_shift_others():
    out = parse([verdict("e1", True, 8), verdict("e3", False, 1)])
    assert set(out) == {"r1#0@r2", "r1#2@r2"}
    assert out["r1#0@r2"].score == 8
    assert out["r1#2@r2"].score == 1 and not out["r1#2@r2"].improved


def test_unknown_and_duplicate_ids_are_ignored():
    out = parse([verdict("e9", True, 10), verdict("e2", True, 6), verdict("e2", False, 1), verdict("E1 ", True, 4)])
    assert set(out) == {"r1#0@r2", "r1#1@r2"}
    assert out["r1#1@r2"].score == 6 and out["r1#1@r2"].improved  # first one wins
    assert out["r1#0@r2"].score == 4


def test_yes_no_accepted_and_out_of_range_scores_refused_not_clamped():
    out = parse([verdict("e1", "yes", 10), verdict("e2", "No", 0), verdict("e3", "maybe", 5)])
    assert out["r1#0@r2"].improved is True and out["r1#0@r2"].score == 10
    assert out["r1#1@r2"].improved is False and out["r1#1@r2"].score == 0  # 0: not improved
    assert "r1#2@r2" not in out  # "maybe" is not a decision
    for bad, why in [(verdict("e1", "yes", 15), "verdict e1: score 15 is above the maximum 10"),
                     (verdict("e1", "No", -3), "verdict e1: score -3 is below the minimum 0"),
                     (verdict("e1", True, 0), "verdict e1: improved is true with score 0"),
                     (verdict("e1", False, 4, "  "), "verdict e1: the reason is empty")]:
        with pytest.raises(ReplyParseError, match=why):
            parse([bad, verdict("e2"), verdict("e3")])
    out = parse([verdict("e1", 1, 5), verdict("e2", True, "7"), verdict("e3", True, None)])
    assert set(out) == {"r1#1@r2"} and out["r1#1@r2"].score == 7


@pytest.mark.parametrize("data", [None, {"verdicts": []}, {"other": []}, "text", {"verdicts": [verdict("e7")]}])
def test_parse_raises_when_nothing_usable(data):
    with pytest.raises(ReplyParseError):
        Judge().parse(Reply(text="oops", data=data), make_pairs())
