"""Rule checks: each catches its failure shape and lets a good item through."""

from __future__ import annotations

import pytest

from evol.eliminator.rules import (
    RULES,
    boxes_in,
    check_rules,
    contradicting_turns,
    empty_text,
    foreign_coordinates,
    markup,
    no_information_gain,
    refusal,
    repeated_turns,
    scaffold_words,
    source_leak,
    web_address,
    written_item_problem,
)
from evol.records import Item, Obj, Record, Step

BOXED = Record(id="r", caption="A red bus beside a tree.",
               objects=[Obj(label="bus", box=[0.12, 0.3, 0.5, 0.9]), Obj(label="tree", box=[0.6, 0.05, 0.95, 0.8])])
PLAIN = Record(id="r", caption="A red bus beside a tree.", objects=[Obj(label="bus")])
PARENT = Item(id="r#0", question="What vehicle is shown?", answer="A bus.")


def child(question="Which object stands taller, the bus or the tree, and by how much?",
          answer="The tree [0.6, 0.05, 0.95, 0.8] rises about 0.25 of the image height above the bus.", **kw) -> Item:
    return Item(id="r#0@r1", parent="r#0", question=question, answer=answer, **kw)


GOOD = child()


def test_good_item_passes_every_rule():
    for name, rule in RULES:
        assert rule(GOOD, PARENT, BOXED) is None, name
    assert check_rules(GOOD, PARENT, BOXED) is None


@pytest.mark.parametrize("question", [
    "Using the #Given Prompt#, what is red?",
    "In the rewritten question, which vehicle is it?",
    "As in the given Q&A, what vehicle is shown?",
    "Compared with the original question, how many wheels are visible?",
])
def test_scaffold_words(question):
    bad = child(question=question)
    assert "instruction wording" in scaffold_words(bad, PARENT, BOXED)
    verdict = check_rules(bad, PARENT, BOXED)
    assert verdict.rule == "scaffold" and verdict.improved is False and verdict.score == 0


def test_scaffold_in_steps_is_caught():
    bad = child(steps=[Step(manipulation=None, description="The rewritten answer keeps the bus.")])
    assert scaffold_words(bad, PARENT, BOXED)
    assert scaffold_words(child(question="Given the weather, will the bus be late?"), PARENT, BOXED) is None


@pytest.mark.parametrize("answer", [
    "I'm sorry, but I cannot tell from this image.",
    "As an AI, I do not see pictures.",
    "I cannot determine that.",
])
def test_refusal(answer):
    assert refusal(child(answer=answer), PARENT, BOXED)
    assert check_rules(child(answer=answer), PARENT, BOXED).rule == "refusal"


def test_refusal_exceptions():
    long_answer = "Sorry is written nowhere here. " + "The bus carries many riders past the tree. " * 12
    assert len(long_answer.split()) >= 80
    assert refusal(child(answer=long_answer), PARENT, BOXED) is None
    assert refusal(child(answer='The sign on the bus reads "Sorry, not in service".'), PARENT, BOXED) is None


@pytest.mark.parametrize("question, answer", [
    ("   ", "A bus."),
    ("What vehicle is shown?", ""),
    ("?!", "A bus."),
    ("What is it?", "It is."),
])
def test_empty_or_stop_words(question, answer):
    bad = child(question=question, answer=answer)
    assert empty_text(bad, PARENT, BOXED)
    assert check_rules(bad, PARENT, BOXED).rule == "empty"


def test_bare_option_label_is_an_answer():
    mc = child(question="Which vehicle is shown?", answer="B.", options=["A. tram", "B. bus"])
    assert empty_text(mc, PARENT, BOXED) is None
    assert empty_text(child(question="Which vehicle is shown?", answer="A."), PARENT, BOXED)  # no options


def test_no_information_gain():
    same = child(question="  what VEHICLE is shown ", answer="a bus")
    assert no_information_gain(same, PARENT, BOXED)
    assert check_rules(same, PARENT, BOXED).rule == "no_gain"
    assert no_information_gain(child(question="What vehicle is shown?", answer="A red double-decker bus."),
                               PARENT, BOXED) is None


@pytest.mark.parametrize("text", [
    "According to the caption, what colour is the bus?",
    "Which object's bounding box is larger?",
    "The description says there is a tree; is it taller than the bus?",
    "Based on the provided description, what is parked?",
    "What does the caption mention first?",
])
def test_source_leak(text):
    bad = child(question=text)
    assert "annotations" in source_leak(bad, PARENT, BOXED)
    assert check_rules(bad, PARENT, BOXED).rule == "source_leak"


def test_coordinates_must_be_given_boxes():
    near = child(answer="The bus at [0.122, 0.297, 0.5, 0.9] is red.")  # within 0.005
    assert foreign_coordinates(near, PARENT, BOXED) is None
    invented = child(answer="The bus at [0.12, 0.3, 0.5, 0.9] is red; a wheel is at (0.2, 0.8, 0.28, 0.9).")
    reason = foreign_coordinates(invented, PARENT, BOXED)
    assert reason and "[0.2, 0.8, 0.28, 0.9]" in reason
    off = child(answer="The bus at [0.13, 0.3, 0.5, 0.9] is red.")  # 0.01 away
    assert foreign_coordinates(off, PARENT, BOXED)
    in_step = child(steps=[Step(manipulation="Grounding(bus) -> [0.3, 0.3, 0.4, 0.4]", description="found")])
    assert check_rules(in_step, PARENT, BOXED).rule == "coordinates"


def test_record_without_boxes_allows_no_coordinates():
    bad = child(answer="The bus is at [0.12, 0.3, 0.5, 0.9].")
    assert "no boxes" in foreign_coordinates(bad, PARENT, PLAIN)
    assert check_rules(bad, PARENT, PLAIN).rule == "coordinates"
    assert foreign_coordinates(child(answer="The bus is red."), PARENT, PLAIN) is None
    # a box the parent item already used (seed data) may be reused
    parent = Item(id="r#0", question="What is in [0.12, 0.3, 0.5, 0.9]?", answer="A bus.")
    assert foreign_coordinates(bad, parent, PLAIN) is None


def test_boxes_in_parses_four_number_lists_only():
    assert boxes_in("at [0.1, .2, 0.30, 1] and [1, 2] and (3, 4, 5, 6)") == [(0.1, 0.2, 0.3, 1.0), (3.0, 4.0, 5.0, 6.0)]
    assert boxes_in("the years 1990, 2000, 2010 and 2020") == []


# ------------------------------------------- checks for items written from annotations
@pytest.mark.parametrize("answer", [
    'A brown dog on grass. <img src="https://example.com/dog.jpg">',
    'See <a href="https://example.com">the park</a> for details.',
    "A dog on grass ![dog](dog.png)",
    "A dog<br>on grass.",
    "A dog &amp; a ball on the grass.",
])
def test_markup_is_rejected(answer):
    item = Item(id="x", question="What is shown?", answer=answer)
    assert markup(answer) is not None
    rule, reason = written_item_problem(item, BOXED)
    assert rule == "markup" and "markup" in reason


@pytest.mark.parametrize("answer", [
    "Read more at https://example.com/buses today.", "Visit www.red-bus-tours.com for tickets.",
    "An image: data:image/png;base64,AAAA",
])
def test_made_up_web_addresses_are_rejected(answer):
    rule, reason = written_item_problem(Item(id="x", question="What is shown?", answer=answer), BOXED)
    assert rule == "url" and "web address" in reason


def test_plain_text_and_addresses_from_the_notes_pass():
    for answer in ("A red bus with 3 < 5 windows open > half the side.", "The bus [0.12, 0.3, 0.5, 0.9] (left).",
                   "The bus <image> waits.", "A www-style sign, not an address."):
        assert markup(answer) is None and web_address(answer, BOXED) is None, answer
    sign = Record(id="r", caption="A shop sign reads www.joes-diner.com above the door.")
    assert web_address("The sign shows www.joes-diner.com.", sign) is None
    assert web_address("The sign shows www.other-diner.com.", sign) is not None


def test_contradicting_turns():
    turns = [Item(id="a", question="Is the dog running?", answer="Yes."),
             Item(id="b", question="Where is the dog?", answer="In the park."),
             Item(id="c", question="is the DOG running", answer="No.")]
    reason = contradicting_turns(turns)
    assert "'Is the dog running?' twice (turns 1 and 3)" in reason and "'Yes.' then 'No.'" in reason
    same = turns[:2] + [Item(id="c", question="Is the dog running", answer="yes")]
    assert contradicting_turns(same) is None  # the same answer: a repeat, not a contradiction
    assert repeated_turns(same) == [(2, "turn 3 repeats turn 1 ('Is the dog running') word for word")]
    assert contradicting_turns(turns[:2]) is None and repeated_turns(turns) == []


@pytest.mark.parametrize("rule, text", [
    # one text per alternative of each pattern: the word filter in front of it must let each through
    (scaffold_words, "See # Given the scene."),
    (scaffold_words, "From the given question, what is red?"),
    (scaffold_words, "The rewritten Q & A & S asks more."),
    (scaffold_words, "The ORIGINAL item asked less."),
    (scaffold_words, "This rewritten version is harder."),
    (scaffold_words, "Answer for source_id q1."),
    (scaffold_words, "About the \u017fource_id field."),  # IGNORECASE pairs the long s with "s"
    (source_leak, "According to the provided caption, the bus is red."),
    (source_leak, "Based on the object list, there are two."),
    (source_leak, "As noted in the metadata, it is noon."),
    (source_leak, "From the annotations, count the cars."),
    (source_leak, "The image caption says so."),
    (source_leak, "Its bounding boxes overlap."),
    (source_leak, "The description states it."),
    (source_leak, "Given description: a bus."),
    (source_leak, "Among the detected objects, which is red?"),
])
def test_word_filter_keeps_every_match(rule, text):
    item = child(question=text)
    assert rule(item, PARENT, BOXED)
    assert rule(child(question=text.upper()), PARENT, BOXED)
    assert rule(child(question="What colour is the bus?"), PARENT, BOXED) is None
