"""The first request of an instruction, and its verb and object, read from word tags.

MMEvol (arXiv 2409.05840) counts an instruction's verb-noun pair: the verb closest to the
root of the request and the head noun of that verb's first direct object. The small
English spaCy model parses statements well but questions badly ("What is the dog
chasing?" comes back with "chasing" as a noun and "is" as the root), and instruction data
is mostly questions and orders. So the request is read here from part-of-speech tags with
a small grammar of English requests, which needs no parse tree at all:

* an order: `V [particle] [indirect object] NP` ("Give me a recipe", "Pick out the word");
* a question: `WH-phrase [AUX SUBJECT] VERB ...` or `AUX SUBJECT VERB ...`, with the
  wh-phrase filling the object gap ("Which season does this image show?" -> show/season)
  or the subject ("Who took the picture?" -> take/picture);
* wrappers unwrapped: "Can you tell me what ...", "Do you know how many ...", "Let me know
  if ...", "I want / need / would like you to V", "Please V";
* fronted "Given X," / "If X," / "As a X," skipped; statements before the request skipped;
  framing orders (look at, observe, imagine, consider) skipped when a request follows.

`Reader.read` returns a `frames.Frame`, which `frames.choose_pair` turns into a pair
in either reading (the paper's, or evol's older task-verb reading).
"""

from __future__ import annotations

from typing import Callable

from evol.analysis.frames import Frame, Word
from evol.analysis.tags import (
    AUX, ASK_VERBS, BE, DO, FRAMING, FRONTING, HAVE, MODAL, PARTICLES, PARTITIVE, PRONOUNS, SEQUENCE, TIMES, WH,
    Lexicon, Tok, END, NOUN_TAGS, NP_INNER, NP_PREPS, is_label, is_verb_start, np_follows_prep, np_start,
    sentences, strip_lead, wordlike,
)


# --------------------------------------------------------------------------- reading


class Reader:
    """Reads the request of one instruction; see the module docstring."""

    def __init__(self, lexicon: Lexicon, word: Callable[[str, str], Word]):
        self.lex = lexicon
        self.word = word  # (text, tag) -> Word with lemma and coarse pos

    # -- the instruction
    def read(self, words: list[Tok]) -> Frame:
        sents = sentences(words)
        frames = [self.sentence(s) for s in sents]
        framing: Frame | None = None
        for frame in frames:
            if frame.kind == "framing":
                framing = framing or frame
                continue
            if frame.kind in ("question", "order"):
                return frame
        if framing is not None:
            return framing
        return next((f for f in frames if f.verb is not None), Frame())

    def sentence(self, s: list[Tok]) -> Frame:
        s = self._unfront(s)
        if len(s) > 1 and s[0].tag in ("RB", "JJ") and (s[0].lower in SEQUENCE or s[1].tag in ("VB", "VBP")) \
                and s[0].lower not in AUX and self.lex.can_be_verb(s[1]):
            s = s[1:]  # "First identify the species, then explain ..."
            s[0].tag = "VB"
        if not s or is_label(s):
            return Frame(kind="fragment")
        self._repair(s)
        first = s[0]
        if first.lower in WH or (first.tag == "IN" and len(s) > 1 and s[1].lower in ("whom", "which", "what", "how")):
            return self._wh_question(s[1:] if first.tag == "IN" else s)
        if first.lower in AUX and len(s) > 1 and not is_verb_start(s[1]):
            return self._yes_no(s)
        wrapped = self._i_want_you_to(s)
        if wrapped is not None:
            return wrapped
        if self._is_order_start(s):
            return self._order(s)
        return self._statement(s)

    def _unfront(self, s: list[Tok]) -> list[Tok]:
        """Skip "Given X," / "If X," / "As a X," / "In the image," before the request."""
        if s and (s[0].lower in FRONTING or s[0].tag in ("IN", "VBG", "VBN")
                  or (s[0].tag == "RB" and len(s) > 1 and s[1].text == ",")):
            for i, w in enumerate(s):  # the first comma after which a request starts
                if w.text == "," and i + 1 < len(s):
                    rest = strip_lead(s[i + 1:])
                    if rest and rest[0].tag in ("VBP", "NN", "VB") and self.lex.can_be_verb(rest[0]) \
                            and len(rest) > 1 and np_start(rest, 1):
                        rest[0].tag = "VB"  # "..., suggest/VBP indoor activities"
                    if rest and (rest[0].lower in WH or rest[0].lower in AUX or self._is_order_start(rest)
                                 or (rest[0].lower in SEQUENCE and len(rest) > 1 and self.lex.can_be_verb(rest[1]))):
                        return rest
        return s

    def _repair(self, s: list[Tok]) -> None:
        """Fix tags the small tagger gets wrong in questions and orders."""
        question = s[0].lower in WH or s[0].lower in AUX or s[-1].text == "?"
        for i, w in enumerate(s):
            prev = s[i - 1] if i else None
            # "the dog chasing?", "the musician on stage playing?": a verb, not a noun
            if (question and w.lower.endswith("ing") and w.tag in ("NN", "NNP", "JJ") and prev is not None
                    and prev.tag in ("NN", "NNS", "NNP", "PRP", "RB") and self.lex.can_be_verb(w, "VBG")):
                w.tag = "VBG"
        if (s[0].tag in ("NN", "NNS", "VBP") and s[-1].text != "?" and len(s) > 1 and s[1].tag in ("DT", "PRP$")
                and s[0].lower not in PRONOUNS and self.lex.can_be_verb(s[0])):
            s[0].tag = "VB"  # "Important: list/NN every ingredient ..."
        if s[0].tag in ("NN", "NNP", "NNS", "JJ", "RB", "IN", "VBP") and s[0].text[:1].isupper() and s[-1].text != "?":
            # "Locate/NNP the person", "Act/NNP as ...", "Refactor/NNP the class": a capitalised order verb
            nxt = s[1] if len(s) > 1 else None
            verb = self.lex.can_be_verb(s[0])
            if (s[0].lower not in PRONOUNS and nxt is not None and nxt.tag != "HYPH" and (
                    (verb and (nxt.tag in ("DT", "PRP$", "PRP", "CC", "RP", "CD", "NNS", "RB", "IN")
                               or nxt.lower in PARTICLES or nxt.lower.endswith("ly")))
                    or (verb and nxt.text == "," and len(s) > 2 and self.lex.can_be_verb(s[2]))
                    or (verb and not self.lex.can_be_noun(s[0]) and nxt.tag in ("NN", "NNP", "JJ"))
                    or (not verb and not self.lex.can_be_noun(s[0]) and nxt.tag in ("DT", "PRP$")))):
                s[0].tag = "VB"

    def _verb_next(self, s: list[Tok], k: int) -> bool:
        """A verb follows at k, after adverbs ("most likely show")."""
        while k < len(s) and (s[k].tag in ("RB", "RBR", "RBS", "MD") or s[k].lower in ("likely", "not", "n't")):
            k += 1
        return k < len(s) and (s[k].tag.startswith("VB") or (
            s[k].tag in NOUN_TAGS | {"JJ", "RB"} and self.lex.can_be_verb(s[k])))

    def _is_order_start(self, s: list[Tok]) -> bool:
        w = s[0]
        if len(s) > 1 and s[1].tag == "HYPH":
            return False  # "Follow-up questions:" is a label
        return w.tag == "VB" or (w.tag == "VBP" and w.text[:1].isupper() and self.lex.can_be_verb(w))

    # -- orders
    def _order(self, s: list[Tok], start: int = 0) -> Frame:
        verb = s[start]
        lemma = self.lex.lemma(verb.lower, "VB")
        j = start + 1
        # "Look at the image and tell me ...", "Imagine a world ...": framing when a request follows
        framing = lemma in FRAMING or (lemma == "take" and [w.lower for w in s[j:j + 2]] == ["a", "look"])
        kind = "framing" if framing else "order"
        if kind == "framing":
            for k in range(j, len(s) - 1):
                if s[k].lower in ("and", "then") and self._is_order_start(s[k + 1:]):
                    return self._order(s, k + 1)
        if lemma in ASK_VERBS:
            inner = self._ask(s, j)
            if inner is not None:
                return inner
        if lemma == "be":
            return self._be(s, j, Frame(verb=Word("be", "VERB"), kind=kind))
        frame = Frame(verb=self.word(verb.text, "VB"), imperative=True, kind=kind)
        while j < len(s) and (s[j].tag == "RP" or (s[j].tag == "RB" and s[j].lower in PARTICLES)):
            j += 1  # "Pick out the word", "Set up a schedule"
        # "Analyze and summarize the significance ...": a shared object counts for the first verb
        k = j  # "Analyze and summarize the significance", "Read, summarize and critique the abstract"
        while True:
            m = k
            while m < len(s) and s[m].lower in ("and", "or", ","):
                m += 1
            if m == k or m >= len(s) or not (s[m].tag in ("VB", "VBP") or (
                    s[m].tag in ("NN", "NNP", "JJ") and self.lex.can_be_verb(s[m]))):
                break
            k = m + 1
            while k < len(s) and (s[k].tag == "RP" or (s[k].tag == "RB" and s[k].lower in PARTICLES)):
                k += 1
            if np_start(s, k):
                j = k  # a shared object counts for the first verb
                break
        frame.obj, _ = self._object(s, j)
        return frame

    def _object(self, s: list[Tok], j: int) -> tuple[Word | None, int]:
        """Head of the direct object starting at j; an indirect pronoun before it skipped."""
        if j < len(s) and s[j].lower in ("me", "us", "him", "her", "them", "you") and np_start(s, j + 1):
            j += 1  # "Give me a recipe"
        if j < len(s) and s[j].lower in ("the", "a") and j + 1 < len(s) and s[j + 1].lower == "following" \
                and (j + 2 >= len(s) or s[j + 2].tag in END):
            return None, j + 2
        if (j < len(s) and s[j].lower in self.lex.adjs and s[j].tag in NOUN_TAGS | {"JJ"}
                and (j + 1 >= len(s) or s[j + 1].tag in END)):
            return None, j + 1  # "What am I doing wrong/NN?": a bare adjective at the end
        return self._np(s, j, obj=True)

    def _np(self, s: list[Tok], j: int, with_pp: bool = False, stop: int | None = None,
            wh: bool = False, obj: bool = False) -> tuple[Word | None, int]:
        """(head noun, index after the noun phrase) of the phrase at j; None for a pronoun."""
        if j >= len(s):
            return None, j
        w = s[j]
        if w.lower in PARTITIVE and j + 2 < len(s) and s[j + 1].lower == "of":
            head, end = self._np(s, j + 2)  # "some of the components"
            return head, end
        if w.tag in ("PRP", "EX", "WP", "WDT") or (w.lower in PRONOUNS and not np_start(s, j + 1, det_only=True)):
            if w.lower in ("this", "that", "these", "those", "which", "what") and j + 1 < len(s) \
                    and s[j + 1].tag in NOUN_TAGS | {"JJ", "CD"}:
                pass  # a determiner: "this photo"
            else:
                return None, j + 1
        k, head = j, None
        stop = len(s) if stop is None else stop
        while k < stop:
            t = s[k]
            if k + 1 < stop and (s[k + 1].tag == "HYPH" or s[k + 1].text == "-") and k + 2 < stop:
                k += 2  # "a thank-you note", "a six-word memoir": the compound goes on
                if s[k].tag in NOUN_TAGS or s[k].tag == "PRP" or s[k].tag.startswith("VB"):
                    if wordlike(s[k].text) and s[k].tag in NOUN_TAGS:
                        head = s[k]
                    k += 1
                continue
            if (obj and t.tag in ("VBP", "VBZ", "VB") and k > j and s[k - 1].tag in NOUN_TAGS | {"PRP"} and s[-1].text != "?"
                    and (k + 1 >= len(s) or s[k + 1].tag in ("IN", ".", ",", "CC", ":")) and self.lex.can_be_noun(t)):
                # "Write unit tests/VBZ for ...", "a thank-you note/VBP"
                t.tag = "NNS" if t.lower.endswith("s") else "NN"
            if t.tag in NOUN_TAGS:
                if head is not None and head.tag == "NNS" and t.tag in ("NNP", "NNPS"):
                    break  # "how many moons Jupiter has": a proper noun starts a new phrase
                if wh and head is not None and head.tag == "NNS" and t.tag == "NNS" and self.lex.can_be_verb(t, "VBZ"):
                    t.tag = "VBZ"  # "which of these dates works/NNS for ..."
                    break
                if head is not None and t.lower in TIMES:
                    break  # "the weather today"
                if t.lower.endswith("ly") and t.lower[:-2] in self.lex.adjs:
                    break  # "Answer briefly/NN": an adverb
                if not wordlike(t.text) or (head is not None and len(t.text) == 1):
                    break  # "the polynomial x^2 + 5x", "the inequality y > 2x": a formula ends the phrase
                if t.lower in PRONOUNS and head is None and t.lower in ("one", "ones", "something", "anything",
                                                                         "everything", "nothing"):
                    return None, k + 1
                head = t
            elif t.tag in ("VBN", "VBG"):
                if head is not None or not (k + 1 < len(s) and s[k + 1].tag in NOUN_TAGS | {"JJ"}):
                    if t.lower == "following" and head is None:
                        return None, k + 1  # "which of the following", "the following:"
                    break
            elif t.tag == "HYPH" or t.text == "-":
                pass
            elif t.tag == "CC" and head is None and k > j and s[k - 1].tag in ("JJ", "JJR", "JJS") \
                    and k + 1 < len(s) and s[k + 1].tag in ("JJ", "JJR", "JJS", "RB"):
                pass  # "a clear and concise summary"
            elif t.tag not in NP_INNER or (t.tag == "RBS" and head is not None):
                break
            elif head is not None and t.tag in ("DT", "PDT", "PRP$", "CD", "JJ", "JJR", "JJS") \
                    and s[k - 1].tag != "POS":
                break
            k += 1
        end = k
        if with_pp:  # "the musician on stage", "the woman in the blue dress", "the shoes and the shirt"
            while end + 1 < len(s) and np_start(s, end + 1) and (s[end].lower in NP_PREPS or (
                    s[end].lower in ("and", "or") and self._np(s, end + 1)[0] is not None)):
                _, end = self._np(s, end + 1)  # not "calm or rough": adjectives, no second phrase
        if head is None or not head.is_noun:
            return None, end
        word = self.word(head.text, head.tag)
        if k + 1 < len(s) and s[k].lower == "of":  # the "of" complement, for the task reading's light nouns
            of, _ = self._np(s, k + 1)
            word.of_noun = of
        return word, end

    # -- questions
    def _wh_question(self, s: list[Tok]) -> Frame:
        frame = Frame(question=True, kind="question")
        j = self._wh_phrase(s, frame)
        return self._after_wh(s, j, frame)

    def _wh_phrase(self, s: list[Tok], frame: Frame) -> int:
        """Reads the wh-phrase at the start; returns the index after it."""
        wh = s[0].lower
        if wh == "how" and len(s) > 1:
            if s[1].lower in ("many", "much"):
                frame.wh = f"how {s[1].lower}"
                if len(s) > 2 and s[2].lower == "of":
                    frame.wh_noun, j = self._np(s, 3)
                    return j
                noun, j = self._np(s, 2, with_pp=True)  # "how many slices of pizza"
                frame.wh_noun = noun
                return j
            frame.wh = "how"
            if s[1].tag in ("JJ", "RB", "JJR", "RBR") and s[1].lower not in AUX:
                return 2  # "how old", "how long"
            return 1
        frame.wh = wh
        if wh in ("what", "which", "whose") and len(s) > 2 and s[1].tag in ("VBZ", "VBP", "VB", "RB") \
                and (s[2].lower in AUX or s[2].tag == "IN" or wh == "which") and self.lex.can_be_noun(s[1]):
            s[1].tag = "NNS" if s[1].lower.endswith("s") else "NN"  # "Which ingredients/VBZ does ..."
        if wh in ("what", "which", "whose") and len(s) > 1:
            if s[1].lower in ("one", "ones"):
                return 2  # "which one": a pronoun
            if s[1].lower == "of":
                frame.wh_noun, j = self._np(s, 2, with_pp=True, wh=True)  # "which of the buildings"
                return j
            if s[1].tag in NOUN_TAGS | {"JJ", "JJS", "JJR", "VBG"} and s[1].lower not in AUX:
                noun, j = self._np(s, 1, with_pp=True)  # "what time of day"
                if j > 1:
                    frame.wh_noun = noun
                    return j
        return 1

    def _after_wh(self, s: list[Tok], j: int, frame: Frame) -> Frame:
        while j < len(s) and (s[j].text == "," or s[j].tag in ("RB", "RBS", "RBR") or s[j].lower == "best"):
            j += 1  # "Which object, ..., is larger?", "Which of these best describes ..."
        if frame.wh == "how" and j < len(s) and s[j].tag in ("IN", "RP"):
            aux = next((i for i in range(j + 1, min(j + 8, len(s))) if s[i].lower in AUX), None)
            if aux is not None:
                j = aux  # "How high up the wall does it reach?"
        if j >= len(s):
            return frame
        w = s[j]
        if w.lower in AUX and not (w.lower in HAVE | DO and self._main_have(s, j)):
            return self._inverted(s, j, frame, wh_phrase=True)
        if w.tag.startswith("VB") or self.lex.can_be_verb(w, w.tag if w.tag.startswith("VB") else "VBZ"):
            frame.verb = self.word(w.text, w.tag if w.tag.startswith("VB") else "VBZ")
            frame.wh_role = "subject"
            frame.obj, _ = self._object(s, j + 1)
            return frame
        return frame

    def _main_have(self, s: list[Tok], j: int) -> bool:
        """"Which country has the largest population?": "has" is the verb, not an auxiliary."""
        if s[j].lower not in HAVE:
            return False
        _, end = self._np(s, j + 1, with_pp=True)
        rest = s[end:end + 2]
        return not any(t.tag in ("VBN", "VB") or t.lower == "been" for t in rest)

    def _yes_no(self, s: list[Tok]) -> Frame:
        return self._inverted(s, 0, Frame(question=True, kind="question"), wh_phrase=False)

    def _inverted(self, s: list[Tok], j: int, frame: Frame, wh_phrase: bool) -> Frame:
        """AUX [SUBJECT] [adverbs] [be/been/being] [VERB] ... after the wh-phrase (or at the start)."""
        aux = s[j].lower
        k = j + 1
        subject: Word | None = None
        has_subject = False
        if k < len(s) and s[k].lower == "there":
            frame.existential = True
            k += 1
        elif k < len(s) and not is_verb_start(s[k], self.lex) and s[k].lower not in ("not", "n't"):
            if aux in DO | MODAL:
                self._plural_subject(s, k)
            start = k
            subject, k = self._np(s, k, with_pp=True)
            has_subject = k > start
            if has_subject and aux in BE and (k >= len(s) or s[k].text in END or s[k].lower in ("or", "and")) \
                    and k - start >= 3 and s[k - 1].tag in NOUN_TAGS and s[k - 1].lower in self.lex.adjs and (
                        s[k - 2].tag in NOUN_TAGS or (s[k - 2].tag == "JJ" and self.lex.can_be_noun(s[k - 2]))):
                # "Why is the road wet/NN?", "Is the light/JJ green/NN?", "Is the water calm/NN or rough?"
                if s[k - 2].tag == "JJ":
                    s[k - 2].tag = "NN"
                subject, k = self._np(s, start, with_pp=True, stop=k - 1)
            if has_subject and aux in DO | MODAL and k - start >= 2 and not self._verb_next(s, k):
                # "What does this code print/NN?", "Can the robot climb/NN stairs?": the verb
                # is the last word of the phrase that can be one, after its first noun
                first = next((i for i in range(start, k) if s[i].tag in NOUN_TAGS), k)
                verb = next((i for i in range(k - 1, first, -1)  # not a name: "drop in March"
                             if s[i].tag in ("NN", "NNS") and self.lex.can_be_verb(s[i])), None)
                if (verb is None and first < k and first > start and s[first - 1].tag == "JJ"
                        and self.lex.can_be_noun(s[first - 1]) and self.lex.can_be_verb(s[first])):
                    verb = first  # "might the cyclist/JJ face/NN": the noun before it is the subject
                    s[first - 1].tag = "NN"
                if verb is not None:
                    s[verb].tag = "VB"
                    subject, k = self._np(s, start, with_pp=True, stop=verb)
        # the verb group: adverbs, negation, be / been / being, then maybe a participle or base verb
        saw_be = aux in BE
        while k < len(s) and self._in_verb_group(s, k):
            if s[k].lower in ("be", "been", "being"):
                saw_be = True
            k += 1
        main = s[k] if k < len(s) else None
        if main is not None and main.tag in ("VBD", "VBZ") and aux in DO | MODAL and not saw_be:
            main.tag = "VB"  # "Did the player hit/VBD the ball?"
        if main is not None and main.tag == "VBD" and aux in HAVE:
            main.tag = "VBN"  # "Has the man finished/VBD his meal?"
        if main is not None and main.tag not in ("VBN", "VBG", "VB", "VBP", "VBD") and not saw_be \
                and aux in DO | MODAL and has_subject and self.lex.can_be_verb(main):
            main.tag = "VB"  # "Which season does this image most likely show/NN?", "Do you like/IN pizza?"
        if main is not None and main.lower in ("compared", "according", "given"):
            main = None  # "How tall is the giraffe compared to the tree?": a preposition in all but tag
        if main is not None and saw_be and main.tag == "VBD" and self.lex.can_be_verb(main, "VBN"):
            main.tag = "VBN"
        if main is not None and main.tag in ("VBN", "VBD") and not self.lex.can_be_verb(main, "VBN"):
            main = None  # "Is the traffic light red/VBN?": an adjective
        if main is None or main.tag not in ("VBN", "VBG", "VB", "VBP"):
            if aux in DO | MODAL and main is None and has_subject and not saw_be:
                return frame  # "Can you?": no verb to name
            return self._be_frame(frame, subject, s, k, existential=frame.existential)
        if main.tag == "VBN" and saw_be:
            if frame.existential:
                return self._be_frame(frame, subject, s, k, existential=True)
            rel = wh_phrase and has_subject and frame.wh in ("what", "which", "whose", "who") and (
                (frame.wh_noun is not None and np_follows_prep(s, k + 1))
                or (frame.wh_noun is None and frame.wh in ("what", "who") and not _stranded(s, k + 1)))
            if rel:  # a relative clause: "What color is the car parked near the tree?",
                # "What is the emotion conveyed by the person?"
                return self._be_frame(frame, subject, s, k)
            frame.verb = self.word(main.text, "VBN")
            frame.passive = True
            if has_subject:
                frame.subject = subject
            else:
                frame.subject = frame.wh_noun
                frame.wh_role = "subject"
            return frame
        if main.tag == "VBG" and frame.existential:
            return self._be_frame(frame, subject, s, k, existential=True)
        if main.tag == "VBG" and aux in BE and wh_phrase and has_subject and frame.wh_noun is None \
                and frame.wh in ("who", "what") and self._relative(s, k, frame.wh):
            return self._be_frame(frame, subject, s, k)
        lemma = self.lex.lemma(main.lower, main.tag)
        if lemma in ASK_VERBS and has_subject and subject is None:  # "Can you tell me what ...", "Do you know how ..."
            inner = self._ask(s, k + 1)
            if inner is not None:
                return inner
        frame.verb = self.word(main.text, main.tag)
        if not has_subject:
            frame.wh_role = "subject"
        frame.subject = subject
        m = k + 1
        while m < len(s) and s[m].lower in PARTICLES and s[m].tag in ("RP",):
            m += 1
        frame.obj, _ = self._object(s, m)
        return frame

    @staticmethod
    def _in_verb_group(s: list[Tok], k: int) -> bool:
        """Adverbs, negation, "please", be / been / being, and "have" before a participle."""
        w = s[k]
        if w.tag in ("RB", "RBR", "RBS", "UH") or w.lower in ("not", "n't", "be", "been", "being", "please"):
            return True
        if w.lower in ("have", "'ve") and k + 1 < len(s):
            return s[k + 1].tag == "VBN" or s[k + 1].lower == "been"
        return w.tag == "JJ" and w.lower in ("likely", "probably")

    def _plural_subject(self, s: list[Tok], k: int) -> None:
        """"Why do cats/VBZ knead blankets?": a plural noun the tagger read as a verb, right
        before the real verb of a do- or modal question."""
        for i in range(k, min(k + 5, len(s) - 1)):
            if s[i].tag == "VBZ" and self.lex.can_be_noun(s[i]) and (
                    s[i + 1].tag in ("VB", "VBP") or self.lex.can_be_verb(s[i + 1])):
                s[i].tag = "NNS"  # after "do" the verb is in its base form: a VBZ is a noun
                s[i + 1].tag = "VB"  # "the Roman aqueducts/VBZ transport/NN water"
                return
            if s[i].tag.startswith("VB"):
                return

    def _relative(self, s: list[Tok], k: int, wh: str) -> bool:
        """"Who is the man wearing a hat?": the participle describes the subject (a reduced
        relative clause) when it already has its object, or, after "who", when no
        preposition is left stranded at the end ("Who is the man talking to?")."""
        m = k + 1
        while m < len(s) and s[m].tag == "RP":
            m += 1
        head, end = self._np(s, m) if np_start(s, m) else (None, m)
        if head is not None and (end - m >= 2 or s[m].tag in ("DT", "PRP$", "CD") or s[m].lower not in self.lex.adjs):
            return True  # the participle has its object: "Who is the man wearing a hat?" (not "doing wrong")
        if m < len(s) and s[m].tag in ("PRP",) and s[m].lower != "it":
            return True
        return wh == "who" and not _stranded(s, m)

    def _be_frame(self, frame: Frame, subject: Word | None, s: list[Tok], k: int,
                  existential: bool = False) -> Frame:
        """Main verb "be": the subject (or the pivot of "there is") and a predicate noun."""
        frame.verb = Word("be", "VERB")
        if existential:
            frame.subject, _ = self._np(s, k) if subject is None else (subject, k)
            return frame
        frame.subject = subject
        if k < len(s) and s[k].tag in ("DT", "PRP$", "NN", "NNS", "JJ", "NNP", "CD"):
            frame.attr, _ = self._np(s, k)
        return frame

    def _be(self, s: list[Tok], j: int, frame: Frame) -> Frame:
        """An order or wish with "be": "Be my tutor" -> be/tutor."""
        frame.attr, _ = self._np(s, j)
        return frame

    def _ask(self, s: list[Tok], j: int) -> Frame | None:
        """The wh- or if-clause after "tell me / let me know / do you know": the real question."""
        k = j
        while k < len(s) and s[k].lower in ("me", "us", "know", "if", "whether"):
            if s[k].lower in ("if", "whether"):
                return self._embedded(s, k + 1)
            k += 1
        if k < len(s) and s[k].lower in WH and k > j - 1:
            frame = Frame(question=True, kind="question")
            rest = s[k:]
            m = self._wh_phrase(rest, frame)
            return self._embedded(rest, m, frame)
        return None

    def _embedded(self, s: list[Tok], j: int, frame: Frame | None = None) -> Frame:
        """A clause in statement order: [SUBJECT] [AUX...] VERB [OBJECT] ("what the man is holding")."""
        frame = frame or Frame(question=True, kind="question")
        subject, k = self._np(s, j, with_pp=True)
        has_subject = k > j
        if not has_subject and k < len(s) and s[k].tag in ("PRP",):
            k += 1
        saw_be = False
        while k + 1 < len(s) and (s[k].lower in AUX or s[k].tag in ("RB", "MD")) and (
                s[k + 1].tag.startswith("VB") or s[k + 1].tag in ("RB", "MD") or s[k + 1].lower in AUX):
            saw_be = saw_be or s[k].lower in BE
            k += 1  # auxiliaries before the verb; "how many moons Jupiter has": "has" is the verb
        if has_subject and (k >= len(s) or not (s[k].tag.startswith("VB") or self.lex.can_be_verb(s[k], "VBZ"))):
            # "whether the y-axis of the chart starts/NNS at zero": the verb read as a noun
            first = next((i for i in range(j, k) if s[i].tag in NOUN_TAGS), k)
            verb = next((i for i in range(k - 1, first, -1)
                         if s[i].tag in ("NNS", "NN") and self.lex.can_be_verb(s[i], "VBZ")), None)
            if verb is not None:
                s[verb].tag = "VBZ" if s[verb].lower.endswith("s") else "VB"
                subject, k = self._np(s, j, with_pp=True, stop=verb)
        if k >= len(s) or not (s[k].tag.startswith("VB") or self.lex.can_be_verb(s[k], "VBZ")):
            return self._be_frame(frame, subject, s, k)
        main = s[k]
        tag = main.tag if main.tag.startswith("VB") else "VBZ"
        frame.verb = self.word(main.text, tag)
        if saw_be and tag == "VBN":
            frame.passive = True
        frame.subject = subject
        if not has_subject:
            frame.wh_role = "subject"
        frame.obj, _ = self._object(s, k + 1)
        return frame

    # -- wishes and statements
    def _i_want_you_to(self, s: list[Tok]) -> Frame | None:
        """"I want / need / would like you to V ...": the order is V."""
        low = [w.lower for w in s[:8]]
        if not low or low[0] != "i":
            return None
        for i in range(1, min(len(low), 6)):
            if low[i] == "you" and i + 2 < len(s) and low[i + 1] == "to" and \
                    any(x in ("want", "need", "like", "wish", "'d", "would") for x in low[1:i]):
                s[i + 2].tag = "VB"
                return self._order(s, i + 2)
        return None

    def _statement(self, s: list[Tok]) -> Frame:
        """A statement: context before the request, or the request itself when nothing else is."""
        subject, k = self._np(s, 0, with_pp=True)
        while k < len(s) and (s[k].lower in AUX or s[k].tag in ("RB", "MD")):
            k += 1
        if k < len(s) and s[k].tag.startswith("VB"):
            frame = Frame(verb=self.word(s[k].text, s[k].tag), kind="statement", subject=subject)
            frame.obj, _ = self._object(s, k + 1)
            return frame
        verb = next((i for i, w in enumerate(s) if w.tag.startswith("VB")), None)
        if verb is None:
            return Frame(kind="fragment")
        frame = Frame(verb=self.word(s[verb].text, s[verb].tag), kind="statement")
        frame.obj, _ = self._object(s, verb + 1)
        return frame


def _stranded(s: list[Tok], k: int) -> bool:
    """A preposition left without its object right after k ("made of?", "used for?",
    "sold for at the auction?"), or nothing at all."""
    rest = [w for w in s[k:] if w.tag not in (".", ",")]
    if not rest:
        return True
    return rest[0].tag in ("IN", "RP", "TO") and (len(rest) == 1 or rest[1].tag in ("IN", "TO"))
