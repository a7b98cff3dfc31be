"""Which natural language a prompt is written in, with py3langid (a naive Bayes model over byte
n-grams that ships inside the wheel, so nothing is fetched at run time).

The model takes ~0.8 s to load, so it loads once per process, on first use or at router start
(`warm()`) when the config routes on language. A detection reads at most `SAMPLE_CHARS` of text:
the language of a prompt shows in its first sentences, and a long pasted document should not
cost milliseconds.
"""

from __future__ import annotations

import copy
import re
import threading
from typing import Any

SAMPLE_CHARS = 600
# Below this confidence the detector's answer is a guess; `Signals.language` reports "und".
MIN_CONFIDENCE = 0.4
# The languages chosen among unless the config says otherwise: the ones most written to LLMs.
# A smaller set makes short prompts far more reliable than all 97 the model knows.
DEFAULT_LANGUAGES = tuple(
    "en de fr es it pt nl pl sv da no fi cs sk hu ro bg el ru uk tr ar he fa hi bn ur ja zh ko "
    "vi th id ms ca hr sr sl lt lv et".split()
)
# Code blocks and URLs say nothing about the language the user writes in.
_NOISE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`|https?://\S+", re.S)

_lock = threading.Lock()
_base: Any = None
# One identifier per language set, sharing the base model's tables.
_identifiers: dict[tuple[str, ...], Any] = {}


def _identifier(languages: tuple[str, ...]) -> Any:
    global _base
    with _lock:
        if _base is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _base = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        identifier = _identifiers.get(languages)
        if identifier is None:
            identifier = copy.copy(_base)
            identifier.set_languages(list(languages))
            _identifiers[languages] = identifier
    return identifier


def known_languages() -> list[str]:
    """Every code the model can answer."""
    _identifier(DEFAULT_LANGUAGES)
    return list(_base.labels)


def warm(languages: tuple[str, ...] | None = None) -> None:
    """Load the model now rather than on the first request that needs it."""
    _identifier(languages or DEFAULT_LANGUAGES)


def detect_language(text: str, languages: tuple[str, ...] | None = None) -> tuple[str, float]:
    """(ISO 639-1 code, confidence 0..1) of `text`, choosing among `languages` (default
    `DEFAULT_LANGUAGES`); ("und", confidence) when there is nothing to go on or the best guess
    is below `MIN_CONFIDENCE`."""
    if "`" in text or "http" in text:
        text = _NOISE.sub(" ", text)
    sample = text[:SAMPLE_CHARS].strip()
    if sum(ch.isalpha() for ch in sample[:64]) < 3:
        return "und", 0.0
    identifier = _identifiers.get(languages or DEFAULT_LANGUAGES) or _identifier(
        languages or DEFAULT_LANGUAGES
    )
    code, confidence = identifier.classify(sample)
    if confidence < MIN_CONFIDENCE:
        return "und", float(confidence)
    return str(code), float(confidence)
