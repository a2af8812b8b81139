"""Turn a raw instruction into the sentence a parser should see, and spot unusable text.

Instruction data is full of things that are not English prose: `<image>` placeholders,
box coordinates in a dozen notations, lettered answer options, and fixed answer-format
lines ("Answer with the option's letter ..."). Left in, they become the "verb" or the
"noun" of thousands of instructions, so they are taken out before parsing.
"""

from __future__ import annotations

import re

_IMAGE_TOKENS = re.compile(
    r"<\s*/?\s*(?:image|img|video|ImageHere|image_\d+|Img)\s*>|<\|(?:image|vision)[a-z_]*\|>"
    r"|<img>[^<]{0,2048}</img>|\[IMG\]|<\|image_pad\|>",
    re.IGNORECASE,
)
# "Image 1: <image>" labels of multi-image prompts go with their token
_IMAGE_LABELS = re.compile(r"\b(?:image|picture|photo|figure|frame)\s*\d+\s*:\s*(?=<)", re.IGNORECASE)
# grounding markup whose inner text is the object's name: keep the name, drop the tags
_REF_TAGS = re.compile(r"<\|?/?(?:ref|object_ref_start|object_ref_end|p|/p)\|?>", re.IGNORECASE)
_NUM = r"-?\d+(?:\.\d+)?"
# Tag pairs match a bounded run with no "<" inside (coordinates never hold one): an
# unclosed tag then costs a bounded scan, not one to the end of the text per tag.
_BOXES = re.compile(
    r"<\|box_start\|>[^<]{0,256}<\|box_end\|>"                 # Qwen-VL
    r"|<box>[^<]{0,256}</box>|<quad>[^<]{0,256}</quad>|<point>[^<]{0,256}</point>"  # InternVL / others
    r"|<loc_\d+>"                                              # Florence / PaliGemma
    r"|\{<\d+><\d+><\d+><\d+>\}"                               # Kosmos / MiniGPT-v2
    rf"|\[\s*\[?\s*{_NUM}(?:\s*,\s*{_NUM}){{1,7}}\s*\]?\s*\]"   # [x1, y1, x2, y2], [x, y]
    rf"|\(\s*{_NUM}\s*,\s*{_NUM}(?:\s*,\s*{_NUM}\s*,\s*{_NUM})?\s*\)",  # (x, y), (x1, y1, x2, y2)
    re.IGNORECASE | re.DOTALL,
)
_HOLE = "\x00"
# what is left between removed boxes ("(0.1, 0.2) or (0.3, 0.4)") and in front of them
_HOLE_RUNS = re.compile(r"\x00(?:\s*(?:,|;|and|or|to|-)?\s*\x00)+", re.IGNORECASE)
# a preposition that only pointed at a box goes with it: "the object at [..] used for" -> "the object used for"
_HOLE_LEAD = re.compile(
    r"(?:\s+(?:at|in|within|inside|near|around|from|to|of|between|on|by|under|over|above|below))?"
    r"\s*[:,]?\s*\x00", re.IGNORECASE)
# labels in front of the instruction: "Question:", "Q:", "USER:", "Instruction:"
_LEAD_LABEL = re.compile(r"^\s*(?:question|q|user|human|instruction|prompt|task)\s*:\s*", re.IGNORECASE)

# one answer option per line: "A. cup", "(B) table", "C) chair", "D: lamp", "a. cup"
_OPTION_LINE = re.compile(r"^\s*(?:\(?[A-Ha-h][.):]|\([A-Ha-h]\)|[1-8][.)])\s+\S")
_OPTION_HEADER = re.compile(r"^\s*(?:options|choices|candidates)\s*:", re.IGNORECASE)
# options written on the question's own line, after "?" or ":" ("... closest? A. cup B. table")
_INLINE_OPTIONS = re.compile(
    r"(?<=[?:])\s*(?:(?:options|choices)\s*:\s*)?\(?A[.):]\s.*$|(?:\s+(?:options|choices)\s*:.*$)",
    re.IGNORECASE | re.DOTALL,
)
# fixed answer-format sentences that dataset builders append to the real instruction (after
# it: first, such a sentence is the request, as the paper's definition reads it)
_BOILERPLATE = re.compile(
    r"(?<=[.?!\n])[ \t]*(?:please\s+)?(?:"
    r"answer (?:with|using) (?:the )?(?:option'?s? )?(?:letter|a single word|one word|a word)[^.?!\n]*"
    r"|answer the question (?:using|with|in) [^.?!\n]*"
    r"|(?:answer|respond|reply)(?: with)? (?:only )?(?:\"?yes\"? or \"?no\"?)[^.?!\n]*"
    r"|(?:answer|respond|reply) in (?:a single|one) (?:word|sentence|phrase)[^.?!\n]*"
    r"|the answer (?:should|must) be [^.?!\n]*"
    r")[.?!]?",
    re.IGNORECASE,
)
# "Choose the correct answer" after the question is boilerplate; first, it is the request
_LATE_BOILERPLATE = re.compile(
    r"(?<=[.?!\n])[ \t]*(?:please\s+)?(?:select|choose|pick) (?:the )?(?:correct|best|right) (?:answer|option)"
    r"(?: from[^.?!\n]*)?[.?!]?", re.IGNORECASE)
# numbered lines that are questions or requests, not answer options
_NUMBERED = re.compile(r"^\s*\(?\d[.)]")
# quotations and inline code: their words are not the request's ("Translate 'Je ne sais pas'")
_QUOTES = re.compile(r'"[^"\n]{1,300}"|\u201c[^\u201d\n]{1,300}\u201d|\u2018[^\u2019\n]{1,300}\u2019'
                     r"|(?<![\w'])'[^'\n]{1,200}'(?![\w'])|`[^`\n]{1,200}`")
# "whats the price", "wheres the cat": the apostrophe people leave out of a question word
_NO_APOSTROPHE = re.compile(r"\b(what|where|who|how|there)s\b", re.IGNORECASE)
# an aside in brackets with words in it ("Important (this is for a client): list ..."); not
# "(a)", "(x - 1)" or coordinates, which have no two words of letters
_ASIDE = re.compile(r"\((?=[^()\n]{0,200}\b[A-Za-z]{2,}\s+[A-Za-z]{2,}\b)[^()\n]{3,200}\)")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_SPACE_PUNCT = re.compile(r"\s+([?.!,;:])")
_LETTER = re.compile(r"[^\W\d_]")
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F]")
_WORD = re.compile(r"[A-Za-z\u00C0-\u024F']+")

# Common English function words: a Latin-script sentence of several words with none of
# them is almost never English ("Décrivez l'image en détail", "Beschreibe das Bild").
_ENGLISH_FUNCTION_WORDS = frozenset(
    "a an the this that these those is are was were be been am do does did can could will would "
    "should may might must shall have has had what which who whom whose where when why how "
    "in on at of to for from with by about into over under between behind above below near "
    "and or but not no yes there here it its they them their he she his her you your i me my we "
    "our us all any each every some many much more most other one two three as if than then "
    "up down out off left right front back next top bottom".split()
)
# Function words of other languages written in Latin script (none of them English words):
# a text with none of the English ones is foreign only when it has some of these or accents,
# so terse English ("Summarize image content briefly.") stays English.
_FOREIGN_FUNCTION_WORDS = frozenset(
    "le la les un une des du et est dans sur avec pour qui que ce cette sont "  # French
    "der das ein eine einen und ist im mit auf für dem den von zu nicht wie du ich wir "  # German
    "el los las y en con por para una del es al se su lo "  # Spanish
    "il gli di che della nel sono ed questa questo quella sul nella "  # Italian
    "os um uma não em da do das dos "  # Portuguese
    "het een van op zijn niet".split()  # Dutch
)
_NON_ENGLISH_ACCENTS = re.compile(r"[àâçéèêëîïôûùüÿñæœßäöåøáíóúãõąćęłńśźżčěřšťůž¿¡]", re.IGNORECASE)


# Only the start of an instruction is cleaned and parsed (its request comes first); the
# cut comes before any pattern, so a 5 MB instruction costs what 20,000 characters cost.
RAW_LIMIT = 20_000


def clean_instruction(text: str) -> str:
    """The instruction without image tokens, boxes, options and answer-format boilerplate.

    Keeps the words a person would read as the request. Returns "" for text with nothing
    left (which the parser reports as an empty instruction). Reads at most the first
    `RAW_LIMIT` characters, and every pattern runs in linear time.
    """
    if not text:
        return ""
    text = text[:RAW_LIMIT]
    text = _IMAGE_LABELS.sub(" ", text)
    text = _IMAGE_TOKENS.sub(" ", text)
    text = _REF_TAGS.sub("", text)
    text = _BOXES.sub(_HOLE, text)
    if _HOLE in text:
        text = _HOLE_RUNS.sub(_HOLE, text)
        text = _HOLE_LEAD.sub("", text)
    text = _without_code(text)
    text = _NO_APOSTROPHE.sub(r"\1's", text)
    unquoted = _QUOTES.sub("", text)
    if _LETTER.search(unquoted):  # a text that is all quotation keeps its words
        text = unquoted
    lines: list[str] = []
    for line in text.splitlines():
        if _OPTION_HEADER.match(line):
            break  # everything below an "Options:" header is the options themselves
        if lines and _OPTION_LINE.match(line) and not _question_line(line):
            continue
        lines.append(_ASIDE.sub("", _INLINE_OPTIONS.sub("", line)))
    text = "\n".join(part.strip() for part in lines if part.strip())
    stripped = _LATE_BOILERPLATE.sub(" ", _BOILERPLATE.sub(" ", text))
    if _LETTER.search(stripped):  # an instruction that is only boilerplate stays as it is
        text = stripped
    text = _SPACE_PUNCT.sub(r"\1", _SPACES.sub(" ", text)).strip()
    return _LEAD_LABEL.sub("", text)


def _question_line(line: str) -> bool:
    """A numbered line that asks something ("2. Why was no control group included?")."""
    return bool(_NUMBERED.match(line)) and (line.rstrip().endswith("?") or len(line.split()) > 7)


def _without_code(text: str) -> str:
    """Fenced code blocks out (an unclosed fence runs to the end); linear in the text."""
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("```", pos)
        if start < 0:
            out.append(text[pos:])
            return "\n".join(out)
        out.append(text[pos:start])
        end = text.find("```", start + 3)
        if end < 0:
            return "\n".join(out)
        pos = end + 3


def looks_non_english(text: str) -> bool:
    """True for text that is most likely not English.

    Two cheap signs: most letters are outside the Latin script (Chinese, Cyrillic, Arabic
    ...), or a Latin-script text of four or more words has none of the common English
    function words but accents or function words of other European languages, or has
    several such accents and few English function words.
    """
    letters = _LETTER.findall(text)
    if not letters:
        return False
    latin = sum(1 for ch in letters if _LATIN.match(ch))
    if latin < 0.5 * len(letters):
        return True
    words = [w.lower().strip("'") for w in _WORD.findall(text)]
    if len(words) < 4:
        return False
    english = sum(1 for w in words if w in _ENGLISH_FUNCTION_WORDS)
    accented = len(_NON_ENGLISH_ACCENTS.findall(text))
    foreign = sum(1 for w in words if w in _FOREIGN_FUNCTION_WORDS)
    if english == 0:
        return accented > 0 or foreign > 0
    if foreign >= 2 and foreign > english:
        return True
    return accented >= 2 and english < 0.25 * len(words)


# "Yes." / "No, it is red." / "yes - two of them": a bare yes or no ending the clause.
_BARE_YES_NO = re.compile(r"^\W*(yes|no)\s*(?:[.,!;:\-–—)]|$)", re.IGNORECASE)
_LEADING_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_POLAR_QUESTION = re.compile(
    r"^\W*(?:is|are|was|were|do|does|did|can|could|will|would|should|shall|may|might|must|has|have|had)\b",
    re.IGNORECASE)


def yes_no_answer(question: str, answer: str) -> str | None:
    """"yes" or "no" when the answer answers a yes/no question, else None.

    A bare yes/no counts whatever the question; "Yes it is" counts after a polar question
    ("Is ...", "Does ..."); "No one is sitting there" or "No cups are visible" after a
    wh-question is a statement, not a no.
    """
    m = _LEADING_YES_NO.match(answer or "")
    if m is None:
        return None
    if _BARE_YES_NO.match(answer) or _POLAR_QUESTION.match(clean_instruction(question or "")):
        return m.group(1).lower()
    return None
