"""The verb-noun rules, shared by every reader: a sentence as a `Frame`, and its pair.

A reader (the tag reader in `request.py`, or benepar constituency trees in
`constituency.py`) reduces the request of an instruction to a `Frame`: its main verb,
that verb's direct object, its subject, and the wh-phrase if it is a question.
`choose_pair` names the pair in one of two readings.

**paper** (the default): MMEvol's definition (arXiv 2409.05840).
* the verb is the main verb of the request; auxiliaries and modals are looked through
  ("Can you describe the scene?" -> describe/scene);
* the noun is the head of the verb's first direct object ("Count the number of
  windows" -> count/number), the subject of a passive verb ("When was this photo
  taken?" -> take/photo), or a wh-phrase that fills the object's place ("Which season
  does the image show?" -> show/season); a pronoun, clause or quotation gives none
  ("What is the man holding?" -> hold/None); a wh-phrase that is the subject gives none
  ("Which animal appears?" -> appear/None);
* a main verb "be" stays "be", with the first noun among the wh-phrase, the subject (or
  the pivot of "there is") and the predicate noun: "What color is the car?" ->
  be/color, "How many cups are on the table?" -> be/cup, "Is there a dog?" -> be/dog.

**task**: evol's older reading, kept as an option and labelled as such in the report
(not comparable with the paper's figures). Light nouns are looked through ("Count the
number of windows" -> count/window), and a question whose main verb is "be" is named by
its task:
    how many/much N ...  -> count/N     (also with other verbs: "How many dogs are running?")
    where is X           -> locate/X
    what/which N is ...  -> identify/N  ("What color is the car?" -> identify/color)
    what/who is X        -> identify/X
    why is X ...         -> explain/X
    how is X             -> describe/X
    is X ... / is there X -> check/X     (yes/no questions)

Nouns and verbs come back lemmatised and lower-cased; None means "none found".
"""

from __future__ import annotations

from dataclasses import dataclass, field

# nouns that only measure or classify their "of" complement: look through them
LIGHT_NOUNS = frozenset(
    "number kind type sort variety amount piece pair group set lot bunch couple total "
    "quantity count series collection style form".split()
)
COPULA = "be"
# nouns of a wh-phrase that says when or how much, not what: "What time does it open?"
ADVERBIAL_NOUNS = frozenset("time year day month date hour minute week point percent degree".split())
# verbs that take such a phrase as when or how much, not as their object ("open", "rise")
INTRANSITIVE = frozenset("open close start end begin arrive leave depart land happen occur finish rise fall "
                         "drop increase decrease grow shrink die live last return".split())


_NOUN_TAGS = {"NN": "NOUN", "NNS": "NOUN", "NNP": "PROPN", "NNPS": "PROPN"}
_PRON_TAGS = {"PRP", "PRP$", "EX", "DT", "CD"}
_WH_TAGS = {"WDT", "WP", "WP$", "WRB"}


def coarse_pos(tag: str) -> str:
    """Penn Treebank tag -> the coarse class the rules use."""
    if tag.startswith("VB") or tag == "MD":
        return "VERB"
    if tag in _NOUN_TAGS:
        return _NOUN_TAGS[tag]
    if tag in _WH_TAGS:
        return "WH"
    if tag in _PRON_TAGS:
        return "PRON"
    return "OTHER"


@dataclass(slots=True)
class Word:
    """A word of the sentence as the rules see it: lemma, and its coarse part of speech."""

    lemma: str
    pos: str  # "NOUN", "PROPN", "PRON", "VERB", "WH" or "OTHER"
    of_noun: Word | None = None  # head of its "of" complement, for light nouns

    @property
    def is_noun(self) -> bool:
        return self.pos in ("NOUN", "PROPN")


@dataclass(slots=True)
class Frame:
    """One sentence reduced to what the verb-noun rules need."""

    verb: Word | None = None  # main verb closest to the root (may be "be")
    obj: Word | None = None  # head of the first direct object
    subject: Word | None = None  # head of the subject (or "there"'s noun for existentials)
    passive: bool = False
    question: bool = False  # ends with "?" or starts with a question word / inverted auxiliary
    wh: str | None = None  # "what", "which", "how many", "where", ...
    wh_noun: Word | None = None  # noun the wh-word determines: "what color" -> color
    attr: Word | None = None  # predicate noun of "be" ("What is the name ..." -> name)
    imperative: bool = False
    kind: str = ""  # "question", "order", "framing", "statement", "fragment" ("" from tree backends)
    existential: bool = False  # "Is there a dog?": `subject` is the pivot noun
    wh_role: str = ""  # "subject" when the wh-phrase is the subject ("Which animal appears?")
    notes: list[str] = field(default_factory=list)


def noun_of(word: Word | None) -> str | None:
    """The lemma to report for an object word: nouns only, light nouns looked through."""
    if word is None:
        return None
    if word.lemma in LIGHT_NOUNS and word.of_noun is not None and word.of_noun.is_noun:
        word = word.of_noun
    return word.lemma.lower() if word.is_noun else None


def choose_pair(frame: Frame, reading: str = "paper") -> tuple[str | None, str | None]:
    """(verb lemma, noun lemma) for one sentence's frame, in the given reading.

    "paper" is MMEvol's definition (arXiv 2409.05840): the verb, and the head noun of its
    first direct object (a passive verb's subject; a wh-phrase that fills the object gap);
    a main verb "be" stays "be", with the first noun among the wh-phrase, the subject (or
    the pivot of "there is") and the predicate noun. No light noun is looked through.
    "task" is evol's older reading, in the module doc.
    """
    if reading == "task":
        return task_pair(frame)
    verb = frame.verb
    if verb is None:
        return None, None
    lemma = verb.lemma.lower()
    if lemma == COPULA:
        for word in (frame.wh_noun, frame.subject, frame.attr):
            if word is not None and word.is_noun:
                return lemma, word.lemma.lower()
        return lemma, None
    if frame.passive:
        word = frame.subject or frame.wh_noun  # with no subject, the wh-phrase is it
    else:
        word = frame.obj
        if word is None and frame.wh_role != "subject" and frame.wh_noun is not None and not (
                frame.wh_noun.lemma in ADVERBIAL_NOUNS and lemma in INTRANSITIVE):
            word = frame.wh_noun  # "Which season does it show?"; not "What time does it open?"
    return lemma, (word.lemma.lower() if word is not None and word.is_noun else None)


def task_pair(frame: Frame) -> tuple[str | None, str | None]:
    """The task-verb reading: (verb, noun) by the rules in the module doc."""
    if frame.wh in ("how many", "how much") and frame.wh_noun is not None:
        return "count", noun_of(frame.wh_noun)
    verb = frame.verb
    if verb is None:
        return None, None
    if verb.lemma != COPULA or not frame.question:
        noun = noun_of(frame.subject if frame.passive else frame.obj)
        if noun is None and frame.wh_noun is not None and not frame.passive:
            noun = noun_of(frame.wh_noun)  # "What kind of food is the man eating?" -> eat/food
        return verb.lemma.lower(), noun
    return _copular_question(frame)


def _copular_question(frame: Frame) -> tuple[str, str | None]:
    # the thing asked about: the subject unless it is the wh-word itself
    topic = noun_of(frame.subject) or noun_of(frame.attr)
    wh = frame.wh
    if wh in ("how many", "how much"):
        return "count", topic
    if wh == "where":
        return "locate", topic
    if wh in ("what", "which", "whose", "who", "whom"):
        if frame.wh_noun is not None:
            return "identify", noun_of(frame.wh_noun)
        return "identify", topic
    if wh == "why":
        return "explain", topic
    if wh == "how":
        return "describe", topic
    if wh is None:
        return "check", topic
    return COPULA, topic
