"""Which natural language a prompt is written in, with py3langid (a naive Bayes model over byte
n-grams that ships inside the wheel, so nothing is fetched at run time).

The model takes ~0.8 s to load, so it loads once per process, on first use or at router start
(`warm()`) when the config routes on language. A detection reads at most `SAMPLE_CHARS` of text:
the language of a prompt shows in its first sentences, and a long pasted document should not
cost milliseconds.
"""

from __future__ import annotations

import re
import threading
from typing import Any

SAMPLE_CHARS = 600
# Below this confidence the detector's answer is a guess; `Signals.language` reports "und".
MIN_CONFIDENCE = 0.5
# Code blocks and URLs say nothing about the language the user writes in.
_NOISE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`|https?://\S+", re.S)

_lock = threading.Lock()
_identifier: Any = None


def _load() -> Any:
    global _identifier
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def warm() -> None:
    """Load the model now rather than on the first request that needs it."""
    if _identifier is None:
        _load()


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence 0..1) of `text`; ("und", 0.0) when there is nothing to go on
    or the best guess is below `MIN_CONFIDENCE`."""
    if "`" in text or "http" in text:
        text = _NOISE.sub(" ", text)
    sample = text[:SAMPLE_CHARS].strip()
    if sum(ch.isalpha() for ch in sample[:64]) < 3:
        return "und", 0.0
    identifier = _identifier or _load()
    code, confidence = identifier.classify(sample)
    if confidence < MIN_CONFIDENCE:
        return "und", float(confidence)
    return str(code), float(confidence)
