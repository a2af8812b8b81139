"""The verb-noun parser: accuracy on the hand-labelled set, cleaning, bad text, the
constituency (benepar) tree logic on hand-written Penn trees, and worker processes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from evol.analysis.frames import Frame, Word, choose_pair, task_pair
from evol.analysis.textclean import clean_instruction, looks_non_english, yes_no_answer
from evol.analysis.verbnoun import VerbNounParser, pick_sentence_pair

DATA = Path(__file__).parent / "data"
GOLD = DATA / "verbnoun_gold.tsv"  # relabelled by hand by the paper's rules (session 6)
DEV = DATA / "verbnoun_dev.tsv"  # written by hand by the paper's rules; the rules were worked on it
HOLDOUT = DATA / "verbnoun_holdout_v2.tsv"  # a quarter of the same writing, kept aside
HOLDOUT_V3 = DATA / "verbnoun_holdout_v3.tsv"  # written after the first rules (then seen)
HOLDOUT_V4 = DATA / "verbnoun_holdout_v4.tsv"  # public-dataset styles, scored once on frozen rules (then seen)
HOLDOUT_V5 = DATA / "verbnoun_holdout_v5.tsv"  # unseen styles (MM-Vet, charts, agents), scored once (then seen)
HOLDOUT_V6 = DATA / "verbnoun_holdout_v6.tsv"  # a realistic mix, scored once on the final rules (then seen)
LABELLED = [GOLD, DEV, HOLDOUT, HOLDOUT_V3, HOLDOUT_V4, HOLDOUT_V5, HOLDOUT_V6, DATA / "verbnoun_holdout.tsv"]


def load_gold(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    for r in rows:
        r["instruction"] = r["instruction"].replace("\\n", "\n")
        r["verb"] = None if r["verb"] == "-" else r["verb"]
        r["noun"] = None if r["noun"] == "-" else r["noun"]
    return rows


@pytest.fixture(scope="module")
def parser() -> VerbNounParser:
    return VerbNounParser()


def _score(parser: VerbNounParser, rows: list[dict]) -> tuple[float, list[str]]:
    got = list(parser.parse_many(r["instruction"] for r in rows))
    misses = [f"{r['shape']}: {r['instruction']!r} -> {g}, want {(r['verb'], r['noun'])}"
              for r, g in zip(rows, got) if g != (r["verb"], r["noun"])]
    return 1 - len(misses) / len(rows), misses


def test_labelled_sets_are_large_and_varied():
    dev, held = load_gold(DEV), load_gold(HOLDOUT)
    assert len(dev) + len(held) >= 400
    shapes = {r["shape"] for r in dev}
    assert len(shapes) >= 20 and shapes == {r["shape"] for r in held}
    for needed in ("be_question", "there_is", "wrapper", "coordinated", "code", "multiple_choice",
                   "numbered_questions", "translation", "partitive", "passive"):
        assert needed in shapes
    assert sum("```" in r["instruction"] for r in dev) >= 5
    assert sum("<box>" in r["instruction"] or "[0." in r["instruction"] for r in dev) >= 5
    gold = load_gold(GOLD)
    assert len(gold) >= 150 and {"imperative", "wh", "yesno", "mc", "multi", "image"} <= {r["shape"] for r in gold}


@pytest.mark.parametrize("path", LABELLED, ids=lambda p: p.name)
def test_accuracy_by_the_papers_definition(parser, path):
    """Each hand-labelled set, overall and per shape (the issue's goal: 92% or more)."""
    if not path.exists():
        pytest.skip(f"{path.name} is not in this checkout")
    rows = load_gold(path)
    share, misses = _score(parser, rows)
    by_shape = {}
    for shape in dict.fromkeys(r["shape"] for r in rows):
        part = [r for r in rows if r["shape"] == shape]
        by_shape[shape] = f"{_score(parser, part)[0]:.0%} of {len(part)}"
    print(f"\nverb-noun parser: {share:.1%} right on {path.name} ({len(rows)}); by shape {by_shape}; misses:\n  "
          + "\n  ".join(misses))
    assert share >= 0.92, misses


@pytest.mark.parametrize("text, expected", [
    ("What is the man holding?", ("hold", None)),
    ("How many cups are on the table?", ("be", "cup")),
    ("What color is the car parked near the tree?", ("be", "color")),
    ("Describe the image in detail.", ("describe", "image")),
    ("Count the number of people in the picture.", ("count", "number")),
    ("When was this photo taken?", ("take", "photo")),
    ("Is there a dog in the image?", ("be", "dog")),
    ("Can you tell me what the man is holding?", ("hold", None)),
    ("Tell me a story about a fox.", ("tell", "story")),
    ("I want you to describe the painting's style.", ("describe", "style")),
    ("Write a lesson plan on fractions. What should come first?", ("write", "plan")),
    ("Analyze and summarize the significance of the treaty.", ("analyze", "significance")),
    ("Describe some of the components of a computer.", ("describe", "component")),
    ("Which season does this image most likely show?", ("show", "season")),
    ('Translate "Where is the station?" into French.', ("translate", None)),
    ("Calculate 15% of 240.", ("calculate", None)),
    ("Answer these questions.\n1. Could the authors clarify the sample size?\n2. Why?", ("answer", "question")),
    ("1. Could the authors clarify the sample size?\n2. Why was no control group used?", ("clarify", "size")),
    ("C++ exam: Which keyword declares a constant? A. static B. const", ("declare", "constant")),
])
def test_paper_rules(parser, text, expected):
    assert parser.parse(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("How many cups are on the table?", ("count", "cup")),
    ("What color is the car?", ("identify", "color")),
    ("Where is the cat?", ("locate", "cat")),
    ("Is there a dog in the image?", ("check", "dog")),
    ("Count the number of people in the picture.", ("count", "person")),
    ("Describe the image in detail.", ("describe", "image")),
])
def test_task_reading_is_kept_as_an_option(text, expected):
    assert VerbNounParser(reading="task").parse(text) == expected


def test_unknown_reading_is_refused():
    with pytest.raises(ValueError, match="unknown verb-noun reading"):
        VerbNounParser(reading="tasks")


@pytest.mark.parametrize("raw, cleaned", [
    ("<image>\nDescribe the image.", "Describe the image."),
    ("What is in the box [0.12, 0.30, 0.50, 0.77]?", "What is in the box?"),
    ("What is the object at [120, 45, 300, 210] used for?", "What is the object used for?"),
    ("Which point is nearer: (0.44, 0.91) or (0.54, 0.02)?", "Which point is nearer?"),
    ("Which one?\nA. cup\nB. table\nAnswer with the option's letter from the given choices directly.", "Which one?"),
    ("Which object is closest? A. cup B. table C. chair", "Which object is closest?"),
    ("Question: What is shown?\nOptions: A. x B. y", "What is shown?"),
    ("Identify the <ref>dog</ref><box>(100,200),(300,400)</box> now.", "Identify the dog now."),
    ("Image 1: <image>\nImage 2: <image>\nWhich image shows a dog?", "Which image shows a dog?"),
    ("Answer the question using a single word or phrase.", "Answer the question using a single word or phrase."),
    ("<image>\n  ", ""),
])
def test_clean_instruction(raw, cleaned):
    assert clean_instruction(raw) == cleaned


def test_cleaning_reads_only_the_start_and_unclosed_tags_eat_nothing():
    """The length cut comes before any pattern: a 5 MB instruction of unclosed tags is
    cleaned as its first RAW_LIMIT characters are. A tag pair only spans coordinates (no
    "<" inside, a bounded run), so an unclosed tag leaves the words after it in place."""
    from evol.analysis import textclean

    huge = "Describe the cup <box> " * (5_000_000 // 23)
    assert clean_instruction(huge) == clean_instruction(huge[:textclean.RAW_LIMIT])
    assert len(clean_instruction(huge)) <= textclean.RAW_LIMIT
    assert clean_instruction("Where is the cup <box> next to the <box>[0.1, 0.2, 0.3, 0.4]</box> lamp?") == \
        "Where is the cup <box> next to the lamp?"
    assert clean_instruction("What is <|box_start|>(10,20),(30,40)<|box_end|> holding?") == "What is holding?"
    assert clean_instruction("Count the <quad> birds <point> and <quad>(1,2)</quad> trees.") == \
        "Count the <quad> birds <point> and trees."


@pytest.mark.parametrize("text, foreign", [
    ("这张图片里有什么？", True),
    ("Что изображено на картинке?", True),
    ("Décrivez l'image en détail s'il vous plaît.", True),
    ("Beschreibe das Bild genau und nenne alle Farben.", True),
    ("Describe the image in detail.", False),
    ("Count apples.", False),
    ("What is the café's name on the sign?", False),
    ("Summarize image content briefly.", False),  # terse English: no function word, no foreign sign
    ("Estimate total vehicle count.", False),
    ("Descrivi questa immagine per favore.", True),
    ("Was siehst du auf dem Bild?", True),  # "was" is an English word too; the German ones outnumber it
    ("Quantos gatos estão na imagem?", True),
])
def test_non_english_detection(text, foreign):
    assert looks_non_english(text) is foreign


def test_bad_text_is_tagged_and_order_kept(parser):
    texts = ["", "   <image>  ", "这张图片里有什么？", "Describe the cat.", None, "A photo of a dog.",
             "What is the man holding?"]
    got = [(r.status, r.pair, ctx) for r, ctx in parser.parse_tagged((t, i) for i, t in enumerate(texts))]
    assert [g[2] for g in got] == list(range(len(texts)))
    assert [g[0] for g in got] == ["empty", "empty", "non_english", "ok", "empty", "no_verb", "ok"]
    assert got[3][1] == ("describe", "cat") and got[6][1] == ("hold", None)


def test_very_long_instruction_is_cut_not_fatal(parser):
    text = "Describe the kitchen in detail. " + "The counter has a cup and a plate. " * 60_000  # 2 MB
    assert parser.parse(text) == ("describe", "kitchen")


def test_worker_processes_give_the_same_pairs():
    rows = load_gold(GOLD)
    texts = [r["instruction"] for r in rows] * 4  # 750 texts: two chunks per worker
    one = list(VerbNounParser(n_process=1).parse_many(texts))
    two = list(VerbNounParser(n_process=2, batch_size=128).parse_many(texts))
    assert two == one


def test_unknown_backend_and_missing_benepar():
    with pytest.raises(ValueError, match="unknown verb-noun backend"):
        VerbNounParser("stanza")
    try:
        import benepar  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="benepar"):
            VerbNounParser("benepar")
    else:  # pragma: no cover - only where benepar is installed
        pytest.skip("benepar is installed here")


# ----------------------------------------------------------------- shared rules, tree logic


def test_choose_pair_rules_on_frames():
    noun = lambda w: Word(w, "NOUN")  # noqa: E731
    be = Word("be", "VERB")
    # the paper's reading: "be" stays, with the first noun of wh-phrase, subject, predicate
    assert choose_pair(Frame(verb=be, question=True, wh="how many", wh_noun=noun("cup"))) == ("be", "cup")
    assert choose_pair(Frame(verb=be, question=True, wh="where", subject=noun("cat"))) == ("be", "cat")
    assert choose_pair(Frame(verb=be, subject=Word("you", "PRON"), attr=noun("person"))) == ("be", "person")
    assert choose_pair(Frame(verb=Word("show", "VERB"), wh_noun=noun("season"))) == ("show", "season")
    assert choose_pair(Frame(verb=Word("appear", "VERB"), wh_noun=noun("animal"), wh_role="subject")) == ("appear", None)
    assert choose_pair(Frame(verb=Word("use", "VERB"), passive=True, wh_noun=noun("tool"), wh_role="subject")) == \
        ("use", "tool")
    light = Word("number", "NOUN", of_noun=noun("window"))
    assert choose_pair(Frame(verb=Word("count", "VERB"), obj=light)) == ("count", "number")
    # the task reading
    assert task_pair(Frame(verb=be, question=True, wh="how many", wh_noun=noun("cup"))) == ("count", "cup")
    assert choose_pair(Frame(verb=be, question=True, wh="where", subject=noun("cat")), "task") == ("locate", "cat")
    assert task_pair(Frame(verb=be, question=True, wh="why", subject=noun("street"))) == ("explain", "street")
    assert task_pair(Frame(verb=be, question=False, subject=noun("cat"))) == ("be", None)
    assert task_pair(Frame(verb=Word("count", "VERB"), obj=light)) == ("count", "window")
    for reading in ("paper", "task"):
        assert choose_pair(Frame(verb=Word("hold", "VERB"), obj=Word("what", "WH")), reading) == ("hold", None)
        assert choose_pair(Frame(), reading) == (None, None)


PENN = [  # (tree, task reading, paper reading)
    ("(TOP (SBARQ (WHNP (WP What)) (SQ (VBZ is) (NP (DT the) (NN man)) (VP (VBG holding))) (. ?)))", ("hold", None), ("hold", None)),
    ("(TOP (SBARQ (WHNP (WHADJP (WRB How) (JJ many)) (NNS cups)) (SQ (VBP are) (PP (IN on) (NP (DT the) (NN table)))) (. ?)))",
     ("count", "cup"), ("be", "cup")),
    ("(TOP (SBARQ (WHADVP (WRB When)) (SQ (VBD was) (NP (DT this) (NN photo)) (VP (VBN taken))) (. ?)))", ("take", "photo"), ("take", "photo")),
    ("(TOP (SQ (VBZ Is) (NP (EX there)) (NP (DT a) (NN dog)) (PP (IN in) (NP (DT the) (NN image))) (. ?)))", ("check", "dog"), ("be", "dog")),
    ("(TOP (SQ (VBZ Is) (NP (DT the) (NN cat)) (ADJP (JJ black)) (. ?)))", ("check", "cat"), ("be", "cat")),
    ("(TOP (SQ (VBZ Is) (NP (DT the) (NN man)) (VP (VBG wearing) (NP (DT a) (NN hat))) (. ?)))", ("wear", "hat"), ("wear", "hat")),
    ("(TOP (SBARQ (WHNP (WP What)) (SQ (VBZ is) (NP (NP (DT the) (NN name)) (PP (IN of) (NP (DT the) (NN dog))))) (. ?)))",
     ("identify", "name"), ("be", "name")),
    ("(TOP (SBARQ (WHNP (WDT What) (NN color)) (SQ (VBZ is) (NP (DT the) (NN car))) (. ?)))", ("identify", "color"), ("be", "color")),
    ("(TOP (SBARQ (WHADVP (WRB Where)) (SQ (VBZ is) (NP (DT the) (NN cat))) (. ?)))", ("locate", "cat"), ("be", "cat")),
    ("(TOP (SQ (MD Can) (NP (PRP you)) (VP (VB describe) (NP (DT the) (NN scene))) (. ?)))", ("describe", "scene"), ("describe", "scene")),
    ("(TOP (S (VP (VB Describe) (NP (DT the) (NN image)) (PP (IN in) (NP (NN detail)))) (. .)))", ("describe", "image"), ("describe", "image")),
    ("(TOP (S (VP (VB Count) (NP (NP (DT the) (NN number)) (PP (IN of) (NP (NNS windows))))) (. .)))", ("count", "window"), ("count", "number")),
    ("(TOP (SBARQ (WHNP (WHNP (WDT What) (NN kind)) (PP (IN of) (NP (NN food)))) (SQ (VBZ is) (NP (DT the) (NN man)) (VP (VBG eating))) (. ?)))",
     ("eat", "food"), ("eat", "kind")),
    ("(TOP (SBARQ (WHNP (WHNP (WDT Which)) (PP (IN of) (NP (DT the) (NNS objects)))) (SQ (VBZ is) (ADJP (JJS closest))) (. ?)))",
     ("identify", "object"), ("be", "object")),
    ("(TOP (SBARQ (WHNP (WP What)) (SQ (VBZ does) (NP (DT the) (NN sign)) (VP (VB say))) (. ?)))", ("say", None), ("say", None)),
    ("(TOP (S (VP (VB Describe) (NP (PRP it))) (. .)))", ("describe", None), ("describe", None)),
    ("(TOP (NP (NP (DT A) (NN photo)) (PP (IN of) (NP (DT a) (NN dog))) (. .)))", (None, None), (None, None)),
]


@pytest.mark.parametrize("tree, task, paper", PENN)
def test_constituency_tree_logic(parser, tree, task, paper):
    nltk = pytest.importorskip("nltk")
    from evol.analysis.constituency import tree_frame

    frame = tree_frame(nltk.Tree.fromstring(tree), parser.lemmas)
    assert pick_sentence_pair([frame], "task") == task
    assert pick_sentence_pair([frame], "paper") == paper


def test_constituency_multi_sentence_prefers_the_question(parser):
    nltk = pytest.importorskip("nltk")
    from evol.analysis.constituency import tree_frame

    statement = "(TOP (S (NP (DT The) (NN image)) (VP (VBZ shows) (NP (DT a) (NN street))) (. .)))"
    question = "(TOP (SBARQ (WHNP (WHADJP (WRB How) (JJ many)) (NNS cars)) (SQ (VBP are) (VP (VBN parked))) (. ?)))"
    frames = [tree_frame(nltk.Tree.fromstring(t), parser.lemmas) for t in (statement, question)]
    assert pick_sentence_pair(frames, "task") == ("count", "car")
    assert pick_sentence_pair(frames) == ("park", "car")  # "How many cars are parked": passive
    assert pick_sentence_pair(frames[:1]) == ("show", "street")


@pytest.mark.parametrize("question, answer, polar", [
    ("Is the cup red?", "Yes.", "yes"),
    ("Is the cup red?", "No, it is blue.", "no"),
    ("Is the cup red?", "Yes it is.", "yes"),  # no comma, but the question is polar
    ("Does <image> show a dog?", "no", "no"),
    ("What colour is it?", "Yes - red.", "yes"),
    ("Who is sitting on the bench?", "No one is sitting on it.", None),  # a statement, not a no
    ("How many cups are there?", "No cups are visible.", None),
    ("Name the season.", "Yesterday was sunny.", None),
    ("Is it day?", "It is day.", None),
])
def test_yes_no_answers_are_told_from_statements(question, answer, polar):
    assert yes_no_answer(question, answer) == polar
