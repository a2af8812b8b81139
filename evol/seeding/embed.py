"""Sentence vectors for clustering instructions and matching them to pictures.

`make_embedder("auto")` uses a spaCy pipeline package that ships word vectors when one is
installed from PyPI (en_core_web_md, en_core_web_lg, ...), else TF-IDF from scikit-learn.
Nothing is downloaded. TF-IDF only sees shared words, so instruction-to-caption matches
are weak with it; `Embedder.name` goes into the bank file so a reader knows which was used.
Every embedder returns L2-normalised rows, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str

    def fit(self, texts: Sequence[str]) -> "Embedder": ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalise(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms == 0, 1.0, norms)


class TfidfEmbedder:
    """TF-IDF over words and word pairs, fitted on the texts the caller gives `fit`."""

    name = "tfidf"

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vec = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), sublinear_tf=True,
                                    token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
        self._fitted = False

    def fit(self, texts: Sequence[str]) -> "TfidfEmbedder":
        try:
            self._vec.fit(list(texts))
            self._fitted = True
        except ValueError:  # nothing but stop words: every vector is zero
            self._fitted = False
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not self._fitted:
            return np.zeros((len(texts), 1))
        return _normalise(self._vec.transform(list(texts)).toarray())


class SpacyEmbedder:
    """The mean word vector of a spaCy pipeline (its `doc.vector`); no fitting needed."""

    def __init__(self, package: str):
        import spacy

        self.name = f"spacy:{package}"
        self._nlp = spacy.load(package, disable=["parser", "ner", "lemmatizer", "attribute_ruler", "tagger"])

    def fit(self, texts: Sequence[str]) -> "SpacyEmbedder":
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vecs = [doc.vector for doc in self._nlp.pipe(list(texts), batch_size=256)]
        return _normalise(np.vstack(vecs)) if vecs else np.zeros((0, 1))


def spacy_packages_with_vectors() -> list[str]:
    """Installed spaCy pipeline packages whose meta says they ship word vectors."""
    try:
        import spacy.util
    except ImportError:
        return []
    found = []
    for name in sorted(spacy.util.get_installed_models()):
        try:
            meta = json.loads((Path(spacy.util.get_package_path(name)) / "meta.json").read_text())
        except (OSError, ValueError, ImportError):
            try:  # packages keep meta.json one folder down, next to config.cfg
                base = Path(spacy.util.get_package_path(name))
                meta = json.loads(next(base.glob("*/meta.json")).read_text())
            except (OSError, ValueError, StopIteration, ImportError):
                continue
        if (meta.get("vectors") or {}).get("width", 0) > 0:
            found.append(name)
    return found


def make_embedder(spec: str = "auto") -> Embedder:
    """"auto", "tfidf", or "spacy:<package>" (any installed spaCy pipeline package)."""
    if spec == "tfidf":
        return TfidfEmbedder()
    if spec.startswith("spacy:"):
        package = spec.split(":", 1)[1]
        try:
            return SpacyEmbedder(package)
        except (OSError, ImportError) as exc:
            raise ValueError(f"cannot load spaCy package {package!r}: {exc}") from None
    if spec != "auto":
        raise ValueError(f"unknown embedder {spec!r}: use auto, tfidf or spacy:<package>")
    for package in spacy_packages_with_vectors():
        try:
            return SpacyEmbedder(package)
        except (OSError, ImportError) as exc:  # pragma: no cover - a broken install
            log.warning("spaCy package %s has vectors but did not load (%s); trying the next", package, exc)
    return TfidfEmbedder()
