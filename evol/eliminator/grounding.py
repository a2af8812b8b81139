"""Grounding checks: the objects an evolved item names, and the counts it states, must agree
with the record's object list (issue 16).

Two rules in the shape of `evol.eliminator.rules` (`(child, parent, record) -> reason | None`):

- `grounding_object`: an object the item names is among the record's objects. Checked
  only when the record lists objects at all. "Names" means the item's `objects` entries,
  plus a short list of salient, rarely missed object words (animals, vehicles, a few
  distinct things: `SCANNED_WORDS`) in plain statements of the question, answer and
  chosen option. Ordinary scene words (table, tree, sky, a shirt) are only checked when
  the item lists them in `objects`: detections miss them too often.
- `grounding_count`: a clear counting question ("how many X are there?") answered with a
  number must match the number of the record's boxes labelled X.

Both must very rarely reject a good rewrite, so every doubt passes: an object counts as
grounded when a record label may name it (synonyms, kinds, plurals, head nouns, usual
parts, from `evol/provision/data/labels.json` through `evol.provision.vocab`), when the
caption, the parent item or the record's seed items name it, or when it appears only in a
negated, hypothetical or comparing sentence; a count is only checked when the question
counts one plain noun over the whole picture and every box of it is known.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from evol.provision.vocab import (
    DATA,
    countable_names,
    may_name_same,
    may_show,
    normalize_label,
    plural,
    singular_candidates,
)
from evol.records import Item, Record

# ----------------------------------------------------------------------- the vocabulary
# Names of one thing, so that counting "cars" counts boxes labelled "automobile" too. Only
# exact synonyms: labels.json also pairs looser names ("glass" and "cup", "sea" and
# "water"), which `may_name_same` accepts for the object check but which would over-count.
STRICT_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("person", "human", "people", "persons"),
    ("car", "automobile", "auto"),
    ("bike", "bicycle", "cycle"),
    ("motorcycle", "motorbike"),
    ("airplane", "plane", "aeroplane"),
    ("tv", "television", "tv screen"),
    ("sofa", "couch"),
    ("phone", "cellphone", "cell phone", "mobile phone", "smartphone", "mobile"),
    ("donut", "doughnut"),
    ("hamburger", "burger"),
    ("kid", "child"),
    ("taxi", "cab"),
    ("street light", "streetlight", "street lamp"),
    ("refrigerator", "fridge"),
    ("teddy bear", "teddy"),
)
# Loose pairs labels.json lacks: what one viewer calls a TV another calls a monitor. Used
# by the object check only (a doubt passes); never for counting.
LOOSE_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("tv", "television", "monitor", "screen", "display"),
    ("laptop", "computer", "notebook"),
    ("boat", "ship", "canoe", "kayak", "sailboat"),
    ("bag", "backpack", "handbag", "purse", "suitcase", "luggage"),
    ("picture", "poster", "painting", "photo", "frame", "artwork"),
    ("cup", "mug", "glass", "teacup"),
    ("light", "lamp"),
    ("pot", "pan", "kettle"),
    ("car", "vehicle", "van", "suv", "jeep"),
    ("truck", "lorry", "van"),
    ("bus", "coach"),
)
# Names that may be said of anything of a kind, without being that kind's name: a "pet"
# may be the dog or the cat (but a "dog" is never the "cat").
_LOOSE_KINDS = {"pet": "animal", "creature": "animal", "beast": "animal", "critter": "animal",
                "transport": "vehicle", "gadget": "device", "appliance": "device", "electronics": "device"}
_IRREGULAR = {"oxen": "ox", "wolves": "wolf", "calves": "calf", "scarves": "scarf", "loaves": "loaf",
              "halves": "half", "knives": "knife", "lives": "life", "wives": "wife", "dice": "die",
              "geese": "goose", "mice": "mouse", "teeth": "tooth", "feet": "foot", "children": "child",
              "people": "person", "men": "man", "women": "woman", "cacti": "cactus", "buses": "bus"}
# Parts that only come with their whole (an animal, a person, a vehicle): a box of one
# grounds the whole. Not parts many things have (light, window, door, seat, leg, back).
TELLING_PARTS = frozenset("""eye ear nose mouth lip tooth face hair hand arm finger foot tail paw fur mane hoof
snout beak wing feather whisker whiskers wheel tire windshield bumper license plate handlebar""".split()) | {
    "license plate"}
# Words naming several things at once: one box so labelled may hold any number of them.
GROUP_WORDS = frozenset("""crowd audience family couple group team herd flock pair fleet bunch pile stack
row set line queue bundle collection cluster swarm pack school""".split())

# The object words looked for in an item's text (not only its `objects`): things people
# rarely leave out of a caption and detectors rarely miss, with no common second sense.
# Left out on purpose: people (often meant generically: "a person would..."), body parts,
# clothing, tableware, furniture and scene words (often in view without a box), food
# (suggestions: "pairs well with a cookie"), and words that are also verbs or adjectives
# (bear, train, plane, jet, fish, mouse, orange, fan, watch, light, ...).
SCANNED_WORDS = frozenset("""
cat kitten dog puppy horse pony cow sheep goat pig bird duck goose pigeon seagull parrot owl eagle
swan elephant giraffe zebra deer lion tiger monkey butterfly camel kangaroo squirrel rabbit donkey
car taxi truck van bus tram bicycle bike motorcycle motorbike scooter boat ship canoe kayak sailboat
airplane aeroplane helicopter tractor ambulance rocket
laptop television tv refrigerator fridge microwave toaster umbrella kite frisbee surfboard skateboard
snowboard suitcase teddy-bear fire-hydrant parking-meter
""".split())

# `objects` entries that name no thing in particular.
GENERIC = frozenset("""image picture photo scene background foreground object objects thing things item items
area region view text none n a na unknown everything""".split())

_CLEAN = re.compile(r"[^a-z0-9 ]+")
_POSSESSIVE = re.compile(r"(?:'|\u2019)s\b")
_DETERMINERS = frozenset("""a an the this that these those some any each every its his her their my your
our one two three four five six seven eight nine ten several many few both other another""".split())
# Words that split a named phrase: what comes before the first is the thing named ("cup on
# the left" names a cup), and "of" joins two things either of which may be meant ("cup of
# coffee", "model of a shuttle").
_SPLITTERS = re.compile(r"\b(?:on|in|at|with|near|beside|under|behind|above|below|next|by|to|from|"
                        r"for|inside|against|holding|wearing|that|which|who|where|and|or)\b")
_OF = re.compile(r"\bof\b")


@lru_cache(maxsize=1)
def _vocab() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """(every object name labels.json knows, name -> the kinds it belongs to)."""
    data = json.loads((DATA / "labels.json").read_text())
    names: set[str] = set()
    kinds: dict[str, set[str]] = {}
    for kind, members in data["kinds"].items():
        names.add(kind)
        for m in members:
            names.add(m)
            kinds.setdefault(m, set()).add(kind)
    for group in data["synonyms"]:
        names.update(group)
    for parts in data["parts"].values():
        names.update(parts)
    for group in STRICT_SYNONYMS + LOOSE_SYNONYMS:
        names.update(group)
    names.update(countable_names())
    return frozenset(names), {k: frozenset(v) for k, v in kinds.items()}


def _group_of(table: tuple[tuple[str, ...], ...]) -> dict[str, frozenset[int]]:
    out: dict[str, set[int]] = {}
    for k, group in enumerate(table):
        for name in group:
            out.setdefault(name, set()).add(k)
    return {n: frozenset(g) for n, g in out.items()}


_STRICT_GROUPS = _group_of(STRICT_SYNONYMS)
_LOOSE_GROUPS = _group_of(LOOSE_SYNONYMS)


def clean(name: str) -> str:
    """An object name as the checks compare it: lower case, no possessive, hyphens and
    punctuation as spaces, no digits, no leading articles or numbers ("The coffee-cup's" ->
    "coffee cup")."""
    text = _POSSESSIVE.sub("", name.lower())
    words = _CLEAN.sub(" ", text.replace("-", " ")).split()
    words = [w for w in words if not w.isdigit()]
    while words and words[0] in _DETERMINERS:
        words.pop(0)
    return " ".join(words)


@lru_cache(maxsize=1 << 14)
def forms(name: str) -> frozenset[str]:
    """The cleaned name and its possible singular forms ("mice" -> mouse, "buses" -> bus,
    "cups" -> cup), with the last word joined to the one before too ("cell phone" ->
    "cellphone"), so "cups" and "cup", "tv-stand" and "tv stand" compare equal."""
    name = clean(name)
    if not name:
        return frozenset()
    head, _, last = name.rpartition(" ")
    out = set(singular_candidates(name)) | {name}
    if last in _IRREGULAR:
        out.add(f"{head} {_IRREGULAR[last]}".strip())
    for f in list(out):
        if " " in f:
            out.add(f.replace(" ", ""))
    return frozenset(out)


@lru_cache(maxsize=1 << 14)
def variants(name: str) -> tuple[str, ...]:
    """The phrases a name may stand for, longest first: the words before a preposition
    ("cup on the left" -> "cup"), either side of "of", and every ending of those ("big red
    car" -> "red car", "car"): the head noun is the last word."""
    text = clean(name)
    head = _SPLITTERS.split(text)[0].strip() or text
    out: list[str] = []
    for part in _OF.split(head):
        words = [w for w in part.split() if w not in _DETERMINERS]
        out += [" ".join(words[k:]) for k in range(len(words))]
    return tuple(dict.fromkeys(v for v in out if v))


def _contains(a: str, b: str) -> bool:
    """Whether the words of `b` run inside `a` ("space shuttle model" holds "space shuttle")."""
    return f" {b} " in f" {a} "


@lru_cache(maxsize=1 << 16)
def names_same(label: str, name: str, mode: str = "loose") -> bool:
    """Whether an object labelled `label` may be what `name` names.

    "strict" (the boxes a count surely covers): the same name (plural, case and hyphens
    aside), the label's head noun ("coffee cup" is a "cup", unless the label is a known
    name of its own: a "hot dog" is no "dog"), an exact synonym (`STRICT_SYNONYMS`), or
    `name` a kind the label belongs to ("animals" covers a "dog" box).
    "count" (boxes a count may cover) adds `may_name_same` (looser synonyms, two words
    for people, the label a kind of the name), `LOOSE_SYNONYMS`, and one name inside the
    name inside the label ("space shuttle" in "space shuttle model"). Both take the name
    whole: "red cups" is no label's name, so a count of them is not checked.
    "loose" (the object check) adds usual parts (`may_show`: a "car" box shows its
    "wheel"), and wholes a telling part implies (`TELLING_PARTS`: a "nose" box is of some
    animal or person, say a "cat"; a "light" box says nothing of a "helicopter").
    """
    vocab, kinds = _vocab()
    strict = mode == "strict"
    label_variants = variants(label)
    if strict and forms(label) & vocab:
        label_variants = (clean(label),)
    for lv in label_variants:
        lf = forms(lv)
        for nv in variants(name) if mode == "loose" else (clean(name),):
            nf = forms(nv)
            if lf & nf:
                return True
            for x in lf:
                for y in nf:
                    if not _STRICT_GROUPS.get(x, frozenset()).isdisjoint(_STRICT_GROUPS.get(y, ())):
                        return True
                    if y in kinds.get(x, ()):
                        return True
                    if strict:
                        continue
                    if _LOOSE_KINDS.get(y) in kinds.get(x, ()):
                        return True
                    if (may_name_same(x, y) or _contains(x, y) or (mode == "loose" and _contains(y, x))
                            or not _LOOSE_GROUPS.get(x, frozenset()).isdisjoint(_LOOSE_GROUPS.get(y, ()))):
                        return True
                    if mode == "loose" and (may_show(x, y) or (x in TELLING_PARTS and may_show(y, x))):
                        return True
    return False


def _text_words(text: str) -> str:
    """Text as " word word ... " for whole-word lookups (lower case, punctuation as spaces)."""
    return " " + " ".join(_CLEAN.sub(" ", _POSSESSIVE.sub("", text.lower()).replace("-", " ")).split()) + " "


def _item_text(item: Item) -> str:
    parts = [item.question, item.answer, *item.options, *item.objects]
    for s in item.steps:
        parts += [s.manipulation or "", s.description]
    return "\n".join(parts)


def _given_text(parent: Item, record: Record) -> str:
    """What already names objects for this picture: the caption, region notes, the parent
    item and the record's seed items. An object any of them names was not invented."""
    regions = [r if isinstance(r, str) else r.get("text") for r in record.meta.get("regions") or []
               if isinstance(r, (str, dict))]
    parts = [record.caption, _item_text(parent), *(_item_text(it) for it in record.items),
             *(r for r in regions if isinstance(r, str))]
    return _text_words("\n".join(parts))


@lru_cache(maxsize=1 << 12)
def _text_names(words: str) -> frozenset[str]:
    """The known object names (one to three words, as written) in `_text_words` output."""
    vocab, _ = _vocab()
    toks = words.split()
    out = set()
    for n in (1, 2, 3):
        for k in range(len(toks) - n + 1):
            phrase = " ".join(toks[k:k + n])
            if any(f in vocab for f in forms(phrase)):
                out.add(phrase)
    return frozenset(out)


def in_text(name: str, words: str) -> bool:
    """Whether `words` (from `_text_words`) names `name`: any of its phrases, singular or
    plural, word for word, or a known object name there that may name it (the caption's
    "woman" covers an "astronaut", its "cat" covers "ears")."""
    for v in variants(name):
        for f in forms(v):
            if f" {f} " in words or f" {plural(f)} " in words:
                return True
    return any(names_same(found, name) for found in _text_names(words))


# ------------------------------------------------------------- names in an item's text
_SCANNED = re.compile(
    r"\b(" + "|".join(sorted({re.escape(f) for w in SCANNED_WORDS
                              for f in (w.replace("-", " "), plural(w.replace("-", " ")))},
                             key=len, reverse=True)) + r")\b")
# Sentences where an object may be absent on purpose: negation, hypotheses, comparisons,
# alternatives, likenesses and pictures of things ("a toy car", "a drawing of a dog").
_DOUBT = re.compile(
    r"\b(no|not|none|nothing|nobody|neither|nor|without|never|absent|missing|lack\w*|instead|unlike|"
    r"rather|if|would|could|might|may|should|imagine\w*|suppos\w*|hypothetical\w*|typical\w*|usual\w*|"
    r"often|general\w*|common\w*|such|like|likely|similar\w*|resembl\w*|compar\w*|whether|or|than|"
    r"versus|vs|toy|toys|model|models|statues?|figurines?|drawings?|paintings?|posters?|logos?|cartoons?|"
    r"printed|illustrations?|sculptures?|dolls?|stickers?|icons?|replicas?|shape|shaped|pattern|"
    r"(picture|photo|photograph|image|print)s?\s+of|reflections?|shadows?|symbols?|emoji|signs?|words?|"
    r"text|labels?|called|named|related|relatives?|ancestors?|descendants?|cousins?|origin\w*)\b"
    r"|n't\b|\bcan\s*not\b",
    re.I)
_EXISTENCE = re.compile(r"^\s*(is|are|was|were|do|does|can|could)\s+(there|you\s+see|we\s+see|any)\b"
                        r"|\b(is|are)\s+there\s+(a|an|any)\b", re.I)
_NEGATIVE_ANSWER = re.compile(r"^\s*(no|none|nothing|zero|0|neither|there\s+(is|are)\s+no)\b", re.I)
_SENTENCES = re.compile(r"[^.!?;:\n]+")
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|‘[^’]*’|(?<!\w)'[^'\n]*'(?!\w)")
_NEXT_WORD = re.compile(r"\s+([a-z]+)")
# Words that, after an object word, name another thing: "bus stop", "dog leash".
COMPOUND_HEADS = frozenset("""stop stops station lane lanes rack racks park parking lot wash food leash feeder cage
kennel toy toys ramp dock shelter route tracks track key keys horn stand ride rides race show hair fur print prints
crossing pen barn stable saddle collar owner owners walker trainer driver drivers rider seat seats mirror garage
port dealership repair rental lift jump jumps path trail terminal depot yard sticker logo pattern costume mask
ornament figure figurine statue shaped brand""".split())
_OPTION_LETTER = re.compile(r"^\s*\(?([A-Za-z])\)?[.):]?\s*$")
_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Za-z])\)?[.):]\s+")


def _modifier(rest: str) -> bool:
    """Whether the word after a match makes it a modifier: "bus stop", "dog bowl" and "car
    park" need no bus, dog or car in the picture."""
    m = _NEXT_WORD.match(rest)
    if not m:
        return False
    word = m.group(1)
    vocab, _ = _vocab()
    return word in COMPOUND_HEADS or any(f in vocab for f in forms(word))


def chosen_option(item: Item) -> str | None:
    """The text of the option a multiple-choice answer picks, or None.

    The answer may be a bare letter ("B", "(B)", "B."), start with one ("B. 3 cups"), or
    repeat an option's text. Options may carry their own letters ("A. 2") or none, in which
    case the letter is the option's position.
    """
    if not item.options:
        return None
    answer = item.answer.strip()
    m = _OPTION_LETTER.match(answer) or _OPTION_PREFIX.match(answer)
    if m:
        letter = m.group(1).upper()
        for opt in item.options:
            p = _OPTION_PREFIX.match(opt)
            if p and p.group(1).upper() == letter:
                return opt[p.end():]
        k = ord(letter) - ord("A")
        if all(not _OPTION_PREFIX.match(o) for o in item.options) and 0 <= k < len(item.options):
            return item.options[k]
        return None
    norm = _text_words(answer)
    for opt in item.options:
        body = opt[_OPTION_PREFIX.match(opt).end():] if _OPTION_PREFIX.match(opt) else opt
        if _text_words(body) == norm:
            return body
    return None


def named_in_text(item: Item) -> list[str]:
    """Salient object words (`SCANNED_WORDS`) the item states as being there.

    Looks at the answer, the chosen option (never the other options: wrong choices name
    absent things on purpose) and the question, sentence by sentence, skipping quoted
    text, sentences in doubt (`_DOUBT`: negation, hypotheses, comparisons, alternatives,
    pictures of things), existence questions ("is there a dog?"), the whole question when
    the answer is negative ("No, ...", "Zero"), and everything when the question itself is
    in doubt (its answer is then about the hypothesis or the likeness too).
    """
    option = chosen_option(item)
    question = _QUOTED.sub(" ", item.question.lower())
    if _DOUBT.search(question):  # "which animal is the handle shaped like?" "a swan"
        return []
    texts = [item.answer] + ([option] if option else [])
    if not _NEGATIVE_ANSWER.match(item.answer) and not (option and _NEGATIVE_ANSWER.match(option)):
        texts.append(item.question)
    found: list[str] = []
    for text in texts:
        low = _QUOTED.sub(" ", text.lower())
        for sentence in _SENTENCES.findall(low):
            if _DOUBT.search(sentence) or _EXISTENCE.search(sentence):
                continue
            sentence = sentence.replace("-", " ")
            found += [m.group(1) for m in _SCANNED.finditer(sentence) if not _modifier(sentence[m.end():])]
    return list(dict.fromkeys(found))


def _label_list(record: Record, n: int = 12) -> str:
    labels = list(dict.fromkeys(normalize_label(o.label) for o in record.objects))
    return ", ".join(labels[:n]) + (f" and {len(labels) - n} more" if len(labels) > n else "")


def grounding_object(child: Item, parent: Item, record: Record) -> str | None:
    """An object the item names that the record's object list does not hold.

    Why: an evolved item about a thing the picture does not show is a hallucination the
    judge may not catch (it sees the same notes the writer saw). Passes when the record
    lists no objects (nothing to check against), and for any name a record label may
    stand for, or that the caption, the parent item or the seed items already name.
    """
    if not record.objects:
        return None
    names = [n for n in child.objects if clean(n) and clean(n) not in GENERIC] + named_in_text(child)
    if not names:
        return None
    labels = list(dict.fromkeys(o.label for o in record.objects))
    given: str | None = None
    for name in names:
        if any(names_same(label, name) for label in labels):
            whole = _whole_of_parts(name, labels, record)
            if whole is None:
                continue
            return (f"it names {clean(name)!r}, but the record's objects ({_label_list(record)}) are parts of "
                    f"the {whole} its caption names")
        if given is None:
            given = _given_text(parent, record)
        if in_text(name, given):
            continue
        return f"it names {clean(name)!r}, which is not among the record's objects ({_label_list(record)})"
    return None


def _whole_of_parts(name: str, labels: list[str], record: Record) -> str | None:
    """The whole the caption names, when `name` matched the labels only as the owner of
    telling parts ("eye", "nose") and the caption says whose parts they are: a cat's eyes
    do not ground a "bird". None when a label names it outright, or the caption is silent."""
    if any(names_same(label, name, "count") for label in labels):
        return None
    parts = [f for label in labels for f in forms(clean(label)) if f in TELLING_PARTS]
    if not parts:
        return None
    for found in _text_names(_text_words(record.caption)):
        if names_same(found, name, "count"):
            return None  # the caption names it: grounded
        if any(may_show(f, part) for f in forms(found) for part in parts):
            return found
    return None


# ---------------------------------------------------------------------------- counting
NUMBER_WORDS = {w: k for k, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUM = r"(?<![\d.,\[(])(\d{1,3})(?![\d]|\.\d|,\d|%)|\b(" + "|".join(NUMBER_WORDS) + r")\b"
_NUMBER = re.compile(_NUM)
_PRONOUN_ONE = re.compile(r"\b(the|this|that|each|every|any|which|another|no|some|a)\s+one\b"
                          r"|\bone\s+(of|another|side|by|hand)\b")
_BOXES = re.compile(r"[\[(]\s*-?[\d.]+(\s*,\s*-?[\d.]+){3}\s*[\])]")
_APPROX = re.compile(r"\b(about|around|approximately|approx|roughly|nearly|almost|at\s+least|at\s+most|more\s+than|"
                     r"less\s+than|fewer\s+than|over|under|up\s+to|several|many|some|few|dozens?|estimated|"
                     r"or\s+so|maybe|perhaps|possibly|probably|likely|appears?|seems?)\b|\+|~", re.I)
_LEAD = re.compile(r"^\s*(?:(?:there\s+(?:is|are)|i\s+(?:can\s+)?(?:count|see)|we\s+(?:can\s+)?see|"
                   r"the\s+(?:answer|count|number|total)\s+is|only|exactly|just|in\s+total|a\s+total\s+of|"
                   r"total)[\s:,]+)*(" + _NUM + r")", re.I)
_COUNT_TRIGGER = re.compile(r"\bhow\s+many\b|\bcount\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?|"
                            r"\b(?:total\s+|exact\s+)?(?:number|count)\s+of\s+(?:the\s+)?")
# Words a counting question may hold besides the counted noun without narrowing it down:
# anything else ("on the table", "red", "than") makes it a question this rule leaves alone.
_PLAIN = frozenset("""are is there can could be you we i one see seen visible shown show showing present
pictured depicted appear appears appearing in the this image picture photo photograph scene view here
total altogether overall all do does count exactly clearly exist exists how many tell me please what
number of find give determine state your answer s there're was were have has entire whole visibly
""".split())
_JOINERS = frozenset({"and", "or", "nor", "plus", "with", "but", "versus", "vs"})
_COMPARING = re.compile(r"\bhow\s+many\s+(more|fewer|less|times|of|other|different|kinds?|types?|sorts?|"
                        r"colou?rs?|species|pairs?|groups?)\b|\bthan\b|\bdifference\b|\beach\b|\bper\b", re.I)


def counted_noun(question: str) -> str | None:
    """The noun a clear counting question counts over the whole picture, or None.

    "How many cups are there?", "Count the spoons in this picture.", "What is the number
    of towers shown here?": the counted words must be followed and preceded only by plain
    words (`_PLAIN`); comparisons ("how many more X than Y"), qualified counts ("how many
    red cups", "how many cups on the table"), several nouns and kinds of things are
    skipped. Every other sentence of the question must be plain too ("How many are
    there?").
    """
    low = _QUOTED.sub(" ", question.lower())
    if _COMPARING.search(low):
        return None
    noun = None
    for sentence in _SENTENCES.findall(low):
        words = _CLEAN.sub(" ", _POSSESSIVE.sub("", sentence)).split()
        m = _COUNT_TRIGGER.search(sentence)
        if m is None or noun is not None:
            if any(w not in _PLAIN for w in words):
                return None
            continue
        before = _CLEAN.sub(" ", sentence[:m.start()]).split()
        after = _CLEAN.sub(" ", _POSSESSIVE.sub("", sentence[m.end():])).split()
        if any(w not in _PLAIN for w in before):
            return None
        k = 0
        while k < len(after) and after[k] not in _PLAIN:
            k += 1
        if k == 0 or k > 3 or any(w not in _PLAIN for w in after[k:]):
            return None
        if any(w in _JOINERS for w in after[:k]):
            return None
        noun = " ".join(after[:k])
    return noun


def _count_in(text: str, noun: str) -> int | None:
    """The count a reply states for `noun`, or None when it states none or is unclear.

    Taken from, in order: a number leading the reply ("Two, one at each edge", "There are
    3."), the one number written before the noun ("the table holds 2 red cups"), or the
    reply's only number. Several numbers before the noun ("one red cup and one white cup")
    give none: they count parts, not the total. Approximate replies ("about 12") give none,
    and boxes' coordinates are not numbers of things.
    """
    low = _BOXES.sub(" ", _QUOTED.sub(" ", text.lower()))
    if _APPROX.search(low):
        return None
    head = clean(noun).split()[-1] if clean(noun) else noun
    surface = "|".join(re.escape(f) for f in sorted(set(forms(head)) | {plural(f) for f in forms(head)}, key=len,
                                                    reverse=True))
    attached = [_value(a.group(1)) for a in re.finditer(r"(" + _NUM + r")\s+(?:[a-z-]+\s+){0,2}?(?:" + surface + r")\b",
                                                        low)]
    if len(attached) > 1:  # "one red cup and one white cup": parts, not the total
        return None
    m = _LEAD.match(low)
    if m:
        return _value(m.group(1))
    if re.match(r"^\s*none\b", low):
        return 0
    if attached:
        return attached[0]
    found = [n for n in _NUMBER.finditer(low)
             if not (n.group(2) == "one" and _PRONOUN_ONE.search(low[max(0, n.start() - 12):n.end() + 8]))]
    return _value(found[0].group(0)) if len(found) == 1 else None


def _value(token: str) -> int:
    token = token.strip().lower()
    return int(token) if token.isdigit() else NUMBER_WORDS[token]


def _is_group(label: str) -> bool:
    """A label that may name several things in one box: a group word, or a plural."""
    words = clean(label).split()
    if not words:
        return False
    last = words[-1]
    vocab, _ = _vocab()
    if last in GROUP_WORDS or last in _IRREGULAR:
        return True
    return last.endswith("s") and not last.endswith("ss") and (last[:-1] in vocab or last[:-2] in vocab)


def grounding_count(child: Item, parent: Item, record: Record) -> str | None:
    """A counting answer that disagrees with the record's boxes of the counted object.

    Why: counts are where a rewriter most often states a wrong fact with confidence, and
    boxes settle them. Checked only when the question is a clear count over the whole
    picture (`counted_noun`), the reply states one exact number (`_count_in`, from the
    chosen option for multiple choice), the record has one image with boxes, every object
    the noun may name has a box, and none of them is a group ("crowd", "people"). The
    number must lie between the boxes that surely are the noun (same name, exact synonym,
    a kind it belongs to) and those that may be (looser names: "man" for a "person" box).
    A noun no label names is left to `grounding_object`.
    """
    if len(record.images) > 1 or not any(o.box for o in record.objects):
        return None
    if len({o.image for o in record.objects if o.image is not None}) > 1:
        return None
    noun = counted_noun(child.question)
    if not noun:
        return None
    matching = [o for o in record.objects if names_same(o.label, noun, "count")]
    if not matching or any(o.box is None or _is_group(o.label) for o in matching):
        return None
    option = chosen_option(child)
    said = _count_in(option if option is not None else child.answer, noun)
    if said is None:
        return None
    sure = [o for o in matching if names_same(o.label, noun, "strict")]
    low, high = len(sure), len(matching)
    if low <= said <= high:
        return None
    labelled = " or ".join(dict.fromkeys(normalize_label(o.label) for o in (sure or matching)))
    have = f"{low}" if low == high else f"{low} to {high}"
    boxes = "box" if high == 1 and low == high else "boxes"
    what = noun if said != 1 else _singular(noun)
    return f"it says {said} {what}, but the record has {have} {boxes} labelled {labelled}"


def _singular(noun: str) -> str:
    """The singular of a counted noun, for the reason's wording ("1 cup", not "1 cups")."""
    vocab, _ = _vocab()
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        return f"{head} {_IRREGULAR[last]}".strip()
    known = [f for f in singular_candidates(noun)[1:] if f in vocab or f.rpartition(" ")[2] in vocab]
    return known[0] if known else noun
