"""Encoders turn prompts into features: one small interface, several implementations.

- ``wordllama`` (default, dense): mean-pooled WordLlama token embeddings, loaded from the
  weights inside the ``wordllama`` wheel with downloads disabled.
- ``tfidf`` (sparse): word uni- and bigram TF-IDF over a vocabulary fitted on training
  prompts; the vocabulary and idf are stored in the artifact and applied in pure numpy.
- ``signals`` (dense, tiny): cheap text statistics (length, numbers, code and maths markers,
  answer options) that say something about difficulty.
- ``sentence-transformers`` (dense, optional extra): any local sentence-transformers model.

Every encoder is deterministic: the same text gives the same features at training and at
serving time. `CachedEncoder` adds a bounded LRU keyed by the prompt's hash.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np


class EncoderError(RuntimeError):
    """An encoder that cannot be built (a missing optional package, a bad config)."""


@dataclass
class SparseRows:
    """Rows of a sparse matrix in CSR form, numpy only."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    width: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.indices[a:b], self.data[a:b]

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """``self @ weights`` for a dense (width, k) matrix."""
        out = np.zeros((len(self), weights.shape[1]), dtype=np.float64)
        for i in range(len(self)):
            idx, val = self.row(i)
            if len(idx):
                out[i] = val @ weights[idx]
        return out

    def to_dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.width), dtype=np.float32)
        for i in range(len(self)):
            idx, val = self.row(i)
            out[i, idx] = val
        return out

    def to_scipy(self) -> Any:
        """A scipy CSR matrix (training only; scipy comes with scikit-learn)."""
        from scipy.sparse import csr_matrix

        return csr_matrix((self.data, self.indices, self.indptr), shape=(len(self), self.width))


class Encoder(Protocol):
    """Texts in, features out. Dense encoders return (n, dim) float32 arrays from `encode`;
    the sparse one also offers `encode_sparse`."""

    kind: str
    name: str
    dim: int
    sparse: bool

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def spec(self) -> dict[str, Any]:
        """What `build_encoder` needs to rebuild this encoder (JSON-able)."""
        ...

    def arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays to store beside the spec (empty for encoders with nothing fitted)."""
        ...


# --------------------------------------------------------------------------- wordllama


def _quiet_import_wordllama() -> Any:
    # wordllama's inference module calls logging.basicConfig(level=INFO) on import; undo that
    # so importing it never changes the host application's logging.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    except ImportError as exc:  # pragma: no cover - wordllama is a core dependency
        raise EncoderError("the wordllama encoder needs the 'wordllama' package") from exc
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    return wordllama


_WORDLLAMA: dict[tuple[str, int], Any] = {}


def load_wordllama(config: str = "l2_supercat", dim: int = 256) -> Any:
    """The WordLlama model from the weights shipped in the wheel; never downloads (the plain
    `WordLlama.load()` of 0.4.0.post1 looks in the wrong folder and would)."""
    key = (config, dim)
    if key not in _WORDLLAMA:
        wordllama = _quiet_import_wordllama()
        try:
            _WORDLLAMA[key] = wordllama.WordLlama.load(
                config, cache_dir=Path(wordllama.__file__).parent, dim=dim, disable_download=True
            )
        except FileNotFoundError as exc:
            raise EncoderError(
                f"wordllama {config}/{dim}: weights are not in the installed package ({exc}); "
                "only l2_supercat/256 ships in the wheel"
            ) from None
    return _WORDLLAMA[key]


class WordLlamaEncoder:
    """Mean of WordLlama token embeddings, L2-normalised.

    Text is tokenised piece by piece (split on spaces and around newlines; the tokenizer's
    normaliser marks each piece as a word start, as whole-text tokenisation does) with a bounded
    cache of piece tokens: whole-text BPE costs ~1-2 ms for 1k tokens, cached pieces ~0.2 ms.
    """

    kind = "wordllama"
    sparse = False

    def __init__(self, config: str = "l2_supercat", dim: int = 256, piece_cache: int = 200_000):
        model = load_wordllama(config, dim)
        self.config = config
        self.dim = dim
        self.name = f"wordllama/{config}/{dim}"
        self._embedding: np.ndarray = model.embedding
        self._tokenizer = model.tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._pieces: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._piece_cache = piece_cache

    def token_ids(self, text: str) -> list[int]:
        cache = self._pieces
        tokenizer = self._tokenizer
        ids: list[int] = []
        # Newlines become pieces of their own: fewer distinct pieces, so fewer cache misses.
        for piece in text.replace("\n", " \n ").split(" "):
            if not piece:
                continue
            found = cache.get(piece)
            if found is None:
                # Tuples of ints drop out of the garbage collector's tracking; lists would not.
                found = cache[piece] = tuple(tokenizer.encode(piece, add_special_tokens=False).ids)
                if len(cache) > self._piece_cache:
                    cache.popitem(last=False)
            ids.extend(found)
        return ids

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = self.token_ids(text)
            if not ids:
                continue
            vec = self._embedding[ids].mean(axis=0)
            norm = float(np.linalg.norm(vec))
            out[i] = vec / norm if norm > 0 else vec
        return out

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config, "dim": self.dim}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


# --------------------------------------------------------------------------- tf-idf

_TOKEN = re.compile(r"\w+|[^\w\s]")


def _terms(text: str, ngram: int) -> list[str]:
    words = _TOKEN.findall(text.lower())
    terms = list(words)
    grams = words
    for n in range(2, ngram + 1):
        grams = [f"{a} {b}" for a, b in zip(grams, words[n - 1 :], strict=False)]
        terms.extend(grams)
    return terms


class TfidfEncoder:
    """Word n-gram TF-IDF (sublinear tf, smoothed idf, L2 rows), vocabulary fitted on
    training prompts; pure Python and numpy at serving time."""

    kind = "tfidf"
    sparse = True

    def __init__(self, vocabulary: Sequence[str], idf: np.ndarray, ngram: int = 2) -> None:
        self.vocabulary = list(vocabulary)
        self._index = {t: i for i, t in enumerate(self.vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float32)
        self.ngram = ngram
        self.dim = len(self.vocabulary)
        self.name = f"tfidf/{ngram}gram/{self.dim}"

    @classmethod
    def fit(
        cls, texts: Sequence[str], ngram: int = 2, min_df: int = 2, max_features: int = 30_000
    ) -> TfidfEncoder:
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(_terms(text, ngram)))
        kept = [(t, c) for t, c in df.items() if c >= min_df]
        # Most frequent first; ties by term so the vocabulary is the same on every machine.
        kept.sort(key=lambda tc: (-tc[1], tc[0]))
        kept = kept[:max_features]
        kept.sort(key=lambda tc: tc[0])
        n = len(texts)
        idf = np.array([math.log((1 + n) / (1 + c)) + 1.0 for _, c in kept], dtype=np.float32)
        return cls([t for t, _ in kept], idf, ngram)

    def encode_sparse(self, texts: Sequence[str]) -> SparseRows:
        indptr = [0]
        indices: list[np.ndarray] = []
        data: list[np.ndarray] = []
        get = self._index.get
        for text in texts:
            words = _TOKEN.findall(text.lower())
            found = [i for i in map(get, words) if i is not None]
            grams = words
            for n in range(2, self.ngram + 1):
                grams = [f"{a} {b}" for a, b in zip(grams, words[n - 1 :], strict=False)]
                found += [i for i in map(get, grams) if i is not None]
            if found:
                idx, tf = np.unique(np.array(found, dtype=np.int32), return_counts=True)
                val = (1.0 + np.log(tf.astype(np.float32))) * self.idf[idx]
                val /= np.linalg.norm(val)
            else:
                idx, val = np.zeros(0, np.int32), np.zeros(0, np.float32)
            indices.append(idx.astype(np.int32))
            data.append(val.astype(np.float32))
            indptr.append(indptr[-1] + len(idx))
        return SparseRows(
            np.array(indptr, dtype=np.int64),
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            np.concatenate(data) if data else np.zeros(0, np.float32),
            self.dim,
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_sparse(texts).to_dense()

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "ngram": self.ngram, "vocabulary": self.vocabulary}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"idf": self.idf}


# --------------------------------------------------------------------------- text signals

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_OPTION = re.compile(r"(?m)^\s*\(?[A-Ha-h][.)]\s")
# Substrings counted with str.count (C speed); a regex alternation of these costs ~0.3 ms.
_CODE_MARKERS = ("```", "def ", "return ", "class ", "import ", "==", "!=", "->", "{\n", "}\n", ";\n")
_MATH_MARKERS = ("$", "\\", "^", "=", "+", "*", "/", "<", ">")
_SENTENCE = re.compile(r"[.?!](?:\s|$)")
_NOT_DIGIT = re.compile(r"[^0-9]+")
_NOT_UPPER = re.compile(r"[^A-Z]+")
_WORD_OR_SPACE = re.compile(r"[\w\s]+")


class SignalsEncoder:
    """A few cheap statistics of the text, each squashed to a small range."""

    kind = "signals"
    sparse = False
    name = "signals"
    FEATURES: ClassVar[tuple[str, ...]] = (
        "log_chars",
        "log_words",
        "log_lines",
        "log_sentences",
        "log_numbers",
        "log_distinct_numbers",
        "digit_share",
        "upper_share",
        "symbol_share",
        "non_ascii_share",
        "mean_word_length",
        "log_options",
        "log_code_markers",
        "log_math_markers",
        "log_questions",
        "percent_or_money",
    )
    dim = len(FEATURES)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._one(text)
        return out

    @staticmethod
    def _one(text: str) -> list[float]:
        n = max(len(text), 1)
        words = text.split()
        numbers = _NUMBER.findall(text)
        # Counting by deletion runs in C; a Python loop over 4,000 characters costs ~1 ms.
        digits = len(_NOT_DIGIT.sub("", text))
        upper = len(_NOT_UPPER.sub("", text))
        symbols = len(_WORD_OR_SPACE.sub("", text))
        non_ascii = len(text) - len(text.encode("ascii", "ignore"))
        log = math.log1p
        return [
            log(len(text)),
            log(len(words)),
            log(text.count("\n")),
            log(len(_SENTENCE.findall(text))),
            log(len(numbers)),
            log(len(set(numbers))),
            digits / n,
            upper / n,
            symbols / n,
            non_ascii / n,
            min((len(text) - text.count(" ") - text.count("\n")) / max(len(words), 1), 20.0) / 10.0,
            log(len(_OPTION.findall(text))),
            log(sum(text.count(m) for m in _CODE_MARKERS)),
            log(sum(text.count(m) for m in _MATH_MARKERS)),
            log(text.count("?")),
            float("%" in text or "$" in text),
        ]

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


# --------------------------------------------------------------------------- sentence-transformers


class SentenceTransformerEncoder:
    """Any local sentence-transformers model (the optional `embeddings` extra)."""

    kind = "sentence-transformers"
    sparse = False

    def __init__(self, model: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise EncoderError(
                "the sentence-transformers encoder needs the 'sentence-transformers' package: "
                "pip install 'pointsman[embeddings]' (or pick encoder 'wordllama')"
            ) from None
        self.model_name = model
        self._model = SentenceTransformer(model)
        self.dim = int(self._model.get_sentence_embedding_dimension())
        self.name = f"sentence-transformers/{model}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(list(texts), normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_name}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


# --------------------------------------------------------------------------- building, caching

ENCODER_KINDS = ("wordllama", "tfidf", "signals", "sentence-transformers")


def build_encoder(spec: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> Encoder:
    """Rebuild an encoder from its `spec()` and `arrays()`."""
    kind = spec.get("kind")
    if kind == "wordllama":
        return WordLlamaEncoder(spec.get("config", "l2_supercat"), int(spec.get("dim", 256)))
    if kind == "tfidf":
        if arrays is None or "idf" not in arrays:
            raise EncoderError("tfidf encoder: the artifact has no idf array")
        return TfidfEncoder(spec["vocabulary"], arrays["idf"], int(spec.get("ngram", 2)))
    if kind == "signals":
        return SignalsEncoder()
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(spec["model"])
    raise EncoderError(f"unknown encoder kind {kind!r} (expected one of: {', '.join(ENCODER_KINDS)})")


def prompt_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class CachedEncoder:
    """Wraps a dense encoder with a bounded LRU of embeddings keyed by the prompt's hash, so a
    repeated prompt (retries, cascades, system prompts) is encoded once."""

    sparse = False

    def __init__(self, inner: Encoder, size: int = 4096) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.name = inner.name
        self.dim = inner.dim
        self.size = size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo: list[int] = []
        keys = [prompt_key(t) for t in texts]
        for i, key in enumerate(keys):
            hit = self._cache.get(key)
            if hit is None:
                todo.append(i)
            else:
                self._cache.move_to_end(key)
                out[i] = hit
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = self.inner.encode([texts[i] for i in todo])
            for row, i in enumerate(todo):
                out[i] = fresh[row]
                self._cache[keys[i]] = fresh[row].copy()
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return out

    def spec(self) -> dict[str, Any]:
        return self.inner.spec()

    def arrays(self) -> dict[str, np.ndarray]:
        return self.inner.arrays()
