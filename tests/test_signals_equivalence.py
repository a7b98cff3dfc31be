"""The token estimate and the text features agree, count for count, with the implementations
they replaced (kept in `signals_reference.py`: one pass per count, one substring search per cue
and a set of every word), on the labelled prompts, on the project's own prose and code, and on
text made up of the cues."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from pointsman import signals_vocab as vocab
from pointsman.signals import VOCABULARY, Signals, SignalSettings, estimate_tokens, text_features
from pointsman.strategies.tiers import labelled_prompts
from tests.signals_reference import reference_estimate_tokens, reference_text_features

ROOT = Path(__file__).resolve().parent.parent
FIELDS = [f.name for f in dataclasses.fields(text_features(""))]


def assert_same_features(text: str, vocabulary: frozenset[bytes] = VOCABULARY) -> None:
    assert estimate_tokens(text) == reference_estimate_tokens(text), text[:200]
    new = text_features(text, vocabulary)
    old = reference_text_features(text)
    for name in FIELDS:
        expected = old[name]
        if name == "wordset":
            expected = expected & vocabulary  # type: ignore[operator]
        assert getattr(new, name) == expected, (name, text[:200])


def labelled_texts() -> list[str]:
    texts = []
    for row in labelled_prompts():
        if "prompt" in row:
            texts.append(row["prompt"])
        for message in row.get("messages") or ():
            if isinstance(message.get("content"), str):
                texts.append(message["content"])
    return texts


def test_features_match_the_reference_on_every_labelled_prompt():
    texts = labelled_texts()
    assert len(texts) >= 224
    for text in texts:
        assert_same_features(text)


def test_features_match_the_reference_on_docs_and_source():
    files = sorted(ROOT.glob("docs/*.md")) + sorted(ROOT.glob("src/pointsman/*.py"))
    assert files
    for path in files:
        text = path.read_text("utf-8")
        assert_same_features(text)  # whole files (head and tail scanned)
        for start in range(0, len(text), 1500):  # and prompt-sized pieces of them
            assert_same_features(text[start : start + 2500])


def test_features_match_the_reference_on_text_made_of_cues():
    cues = [
        *vocab.REASONING_PHRASES, *vocab.TASK_PHRASES, *vocab.STEP_PHRASES,
        *vocab.CONSTRAINT_PHRASES, *vocab.SHORT_PHRASES, *vocab.CHAT_PHRASES,
        *vocab.CODE_MARKS, *vocab.MATH_MARKS,
        *(w.decode() for w in sorted(VOCABULARY)),
    ]  # fmt: skip
    glue = [" ", "", "-", "--", "\n", "\n  - ", "\n1. ", ", ", "'", "\t", "\x0b", "\x0c", "?", "`", "é"]
    rng = random.Random(3)
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(1, 40)):
            cue = rng.choice(cues)
            if rng.random() < 0.3:
                cut = rng.randint(0, len(cue))
                cue = cue[cut:] if rng.random() < 0.5 else cue[:cut]  # a cue's head or tail
            if rng.random() < 0.1:
                cue = cue.upper()
            parts += [cue, rng.choice(glue)]
        text = "".join(parts)
        if rng.random() < 0.05:
            text = text * rng.randint(20, 300)  # past the scan window and the hyphen limit
        assert_same_features(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        "a-" * 200,
        "show thathere exists a way",
        "no less than, no more than, less than",
        "how do you say thanks; how do i; how does",
        "xshow that yprove thatz",
        "Schritt für Schritt, étape par étape, paso a paso",
        "qu'est-ce que c'est ? what's up, don't",
        "证明这个定理，然后用Python实现函数",
    ],
)
def test_features_match_the_reference_on_edge_cases(text):
    assert_same_features(text)


def test_custom_domain_keywords_are_found_like_any_other_word():
    settings = SignalSettings(domains={"space": ["rocket", "orbit", ""]})
    signals = Signals(
        {"messages": [{"role": "user", "content": "Plan a rocket-launch window into low orbit"}]},
        settings=settings,
    )
    assert signals.domains == ("space",)
    assert Signals({"messages": [{"role": "user", "content": "hello"}]}, settings=settings).domains == ()


def test_phrase_counts_equal_one_substring_search_per_phrase_even_where_phrases_overlap():
    from pointsman.signals import _Phrases

    # Phrases sharing their first space ("ax then" also holds "x the"), nested ones, a phrase
    # listed twice, and phrases without a space.
    lists = {
        "one": ["x the", "ax then", "the end", "a b", "ab", "x the"],
        "two": ["ax then", "then x", "b a b", "it's", "a-b"],
    }
    phrases = _Phrases(lists)
    rng = random.Random(5)
    pieces = ["a", "x", "the", "then", "end", "b", "it's", "-", " ", " ", "ax"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        expected = {name: sum(1 for p in ps if p in text) for name, ps in lists.items()}
        assert phrases.count(text) == expected, text
