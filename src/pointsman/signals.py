"""Cheap, pure facts about a request, each computed at most once and only when asked for.

A `Signals` object is made per request and shared by policies, strategies, the record and
`--explain`. Nothing here calls the network; the costliest facts (language, PII) read a bounded
sample or use precompiled tables, and none is computed unless something asks for it.
`computed()` lists the facts that were, which is what the decision record keeps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pointsman import pii
from pointsman import signals_vocab as vocab
from pointsman.keys import key_fingerprint
from pointsman.language import detect_language

_T = TypeVar("_T")

if TYPE_CHECKING:
    from functools import cached_property as lazy
else:

    class lazy(Generic[_T]):
        """`functools.cached_property` without its lock (which Python 3.12 dropped too):
        computed on first access and stored in the instance, so a second access is a plain
        attribute lookup. Two threads racing compute the same pure value twice."""

        def __init__(self, func):
            self.func = func
            self.__doc__ = func.__doc__

        def __set_name__(self, owner, name):
            self.name = name

        def __get__(self, instance, owner=None):
            if instance is None:
                return self
            value = instance.__dict__[self.name] = self.func(instance)
            return value

# Tokens an image part costs at low detail; a floor that keeps window checks honest.
IMAGE_TOKENS = 85
# Per-message framing tokens (role markers, separators) in chat formats.
MESSAGE_OVERHEAD_TOKENS = 4
# The token estimate: a linear model of cheap character counts, fitted against the cl100k_base
# tokenizer on the labelled prompt set, Python source and English prose (mean relative error
# 11%; docs/rules-and-policies.md). Every count is a C-level pass over the UTF-8 bytes.
TOKENS_PER_ASCII_CHAR = 0.1907
TOKENS_PER_TWO_BYTE_CHAR = 0.6229  # accented Latin, Greek, Cyrillic, Hebrew, Arabic
TOKENS_PER_WIDE_CHAR = 1.0  # CJK and the rest of the basic plane
TOKENS_PER_SPACE = -0.1027  # a space usually joins the next word's token
TOKENS_PER_NEWLINE = 0.5918
TOKENS_PER_DIGIT = 0.6487  # numbers split into groups of at most three digits
TOKENS_PER_PUNCTUATION = 0.3987
_HIGH_BYTES = bytes(range(128, 256))
_DIGIT_BYTES = b"0123456789"
_PUNCTUATION_BYTES = b".,;:()[]{}=<>\"'/_-*#"
# Bytes no count above looks at (letters, mostly): deleted first, so the counts run over the rest.
_UNCOUNTED_BYTES = bytes(
    b for b in range(256) if b not in b" \n" + _DIGIT_BYTES + _PUNCTUATION_BYTES
)
# Kept for code that imported the old constant.
CHARS_PER_TOKEN = 4
# How much of a long message the text features read: its head and its tail, where the
# instructions are; a pasted document in between counts through its length alone.
SCAN_HEAD_CHARS = 6000
SCAN_TAIL_CHARS = 2000
# Punctuation that separates words (kept: - ' + # ; so "trade-off", "c++", "tl;dr" survive).
# Vertical tab and form feed become spaces too, so a space is the only whitespace left.
_WORD_BREAKS = bytes.maketrans(
    b'!"$%&()*,./:<=>?@[\\]^_`{|}~\t\n\r\x0b\x0c', b" " * len(b'!"$%&()*,./:<=>?@[\\]^_`{|}~\t\n\r\x0b\x0c')
)
# Past this many hyphenated words, one more split is cheaper than taking them apart one by one.
_MAX_HYPHENATED = 32
# Bytes the structure counts (commas, semicolons, questions, lines) do not look at.
_UNSTRUCTURAL_BYTES = bytes(b for b in range(256) if b not in b",;?\n")
# Every word any cue list or built-in domain names: a prompt's words are looked up once in it.
VOCABULARY = frozenset().union(
    vocab.CODE, vocab.MATH, vocab.REASONING, vocab.ANALYSIS, vocab.TASK, vocab.STEPS,
    vocab.CONSTRAINTS, vocab.LONG_OUTPUT, vocab.SHORT_OUTPUT, vocab.CHAT, *vocab.DOMAINS.values(),
)  # fmt: skip
# Characters from most to least common in prompts; a cue is gated on its rarest character.
_COMMON_CHARS = " etaoinsrhldcumfpgwybvk\n.,TSAIECx-'qj)(zMNP\"BDRHOWLFG:0123456789"


class _Cues:
    """Which of a fixed list of substrings a text contains. Cues are grouped by their rarest
    character, and a group is skipped when the text lacks it (a single-character search is a
    memchr, a longer one a full scan)."""

    __slots__ = ("groups",)

    def __init__(self, cues: Iterable[str]) -> None:
        groups: dict[str, list[str]] = {}
        for cue in cues:
            gate = max(cue, key=lambda ch: _COMMON_CHARS.find(ch) % (len(_COMMON_CHARS) + 1))
            groups.setdefault(gate, []).append(cue)
        self.groups = tuple((gate, tuple(group)) for gate, group in groups.items())

    def found(self, text: str) -> list[str]:
        """The cues that occur in `text` (a cue listed twice, twice)."""
        return [cue for gate, group in self.groups if gate in text for cue in group if cue in text]

    def count(self, text: str) -> int:
        return len(self.found(text))


def _alternation(items: list[tuple[str, str]]) -> str:
    """A regex matching any of `items` (literal, then a pattern), the literals as a trie, so the
    engine tries one branch per distinct next character rather than one per item."""
    branches: dict[str, list[tuple[str, str]]] = {}
    ends = []
    for literal, then in items:
        if literal:
            branches.setdefault(literal[0], []).append((literal[1:], then))
        else:
            ends.append(then)
    alternatives = [re.escape(ch) + _alternation(rest) for ch, rest in branches.items()] + ends
    return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"


class _Phrases:
    """Which phrases of several cue lists a text contains, in one regex pass.

    The regex is anchored on each phrase's first space (a literal, which the engine finds
    without trying every position), matches the rest as a trie and checks the words before the
    space by lookbehind. Where it matches, every phrase whose first space sits there is
    confirmed by a plain comparison, so the counts are those of one substring search per
    phrase. Phrases without a space are searched for as `_Cues`."""

    def __init__(self, lists: Mapping[str, Iterable[str]]) -> None:
        self.zero = {name: 0 for name in lists}
        # phrase -> [(list name, times it is listed there)]
        self.listed: dict[str, list[tuple[str, int]]] = {}
        for name, phrases in lists.items():
            for phrase in set(phrases):
                self.listed.setdefault(phrase, []).append((name, list(phrases).count(phrase)))
        self.unspaced = _Cues(p for p in self.listed if " " not in p)
        # " " + the rest after the first space -> the phrases that end with it
        by_rest: dict[str, list[str]] = {}
        for phrase in sorted(p for p in self.listed if " " in p):
            by_rest.setdefault(phrase[phrase.index(" ") :], []).append(phrase)
        lookbehinds = [
            (rest[1:], "(?:" + "|".join(f"(?<={re.escape(p)})" for p in phrases) + ")")
            for rest, phrases in by_rest.items()
        ]
        self.pattern = re.compile(" " + _alternation(lookbehinds)) if lookbehinds else None
        # For a match of " " + rest: every phrase that could match at that same space, with the
        # offset of its first space.
        self.candidates = {
            rest: tuple(
                (p, p.index(" "))
                for other, phrases in by_rest.items()
                if other.startswith(rest) or rest.startswith(other)
                for p in phrases
            )
            for rest in by_rest
        }

    def count(self, text: str) -> dict[str, int]:
        """Per list, how many of its phrases occur in `text`."""
        found = set(self.unspaced.found(text))
        if self.pattern is not None:
            search, pos = self.pattern.search, 0
            while (m := search(text, pos)) is not None:
                at = m.start()
                for phrase, offset in self.candidates[m.group()]:
                    if offset <= at and text.startswith(phrase, at - offset):
                        found.add(phrase)
                pos = at + 1
        counts = dict(self.zero)
        for phrase in found:
            for name, times in self.listed[phrase]:
                counts[name] += times
        return counts


_CODE_MARKS = _Cues(vocab.CODE_MARKS)
_MATH_MARKS = _Cues(vocab.MATH_MARKS)
_PHRASES = _Phrases(
    {
        "reasoning": vocab.REASONING_PHRASES,
        "task": vocab.TASK_PHRASES,
        "step": vocab.STEP_PHRASES,
        "constraint": vocab.CONSTRAINT_PHRASES,
        "short": vocab.SHORT_PHRASES,
        "chat": vocab.CHAT_PHRASES,
    }
)


def message_text(content: Any) -> str:
    """The text of a message's `content`, whether a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def embedding_input_tokens(value: Any) -> int:
    """Tokens of an embeddings request's `input`: text(s) estimated, token arrays counted."""
    if isinstance(value, str):
        return estimate_tokens(value)
    if not isinstance(value, list):
        return 0
    if value and isinstance(value[0], int):
        return len(value)
    texts = [v for v in value if isinstance(v, str)]
    return sum(map(estimate_tokens, texts)) + sum(len(v) for v in value if isinstance(v, list))


def estimate_tokens(text: str) -> int:
    """Tokens of `text` for a cl100k/o200k-style BPE tokenizer, from character counts only
    (a few microseconds per KB)."""
    if not text:
        return 0
    data = text.encode("utf-8", "surrogatepass")
    size = len(data)
    high = 0 if size == len(text) else size - len(data.translate(None, _HIGH_BYTES))
    ascii_chars = size - high
    non_ascii = len(text) - ascii_chars
    wide = max(0, high - 2 * non_ascii)
    counted = data.translate(None, _UNCOUNTED_BYTES)
    return max(
        1,
        round(
            TOKENS_PER_ASCII_CHAR * ascii_chars
            + TOKENS_PER_TWO_BYTE_CHAR * (non_ascii - wide)
            + TOKENS_PER_WIDE_CHAR * wide
            + TOKENS_PER_SPACE * counted.count(b" ")
            + TOKENS_PER_NEWLINE * counted.count(b"\n")
            + TOKENS_PER_DIGIT * (len(counted) - len(counted.translate(None, _DIGIT_BYTES)))
            + TOKENS_PER_PUNCTUATION * (len(counted) - len(counted.translate(None, _PUNCTUATION_BYTES)))
        ),
    )


def _saturate(x: float, full: float) -> float:
    """0 at 0, 1 at `full` and beyond, concave in between (the first cues count most)."""
    if x <= 0:
        return 0.0
    return min(1.0, math.log1p(x) / math.log1p(full))


@dataclass(frozen=True, slots=True)
class TextFeatures:
    """Counts over the scanned part of the last user message (see `SCAN_HEAD_CHARS`)."""

    words: int = 0
    code_words: int = 0
    code_marks: int = 0
    math_words: int = 0
    math_marks: int = 0
    reasoning_words: int = 0
    reasoning_phrases: int = 0
    analysis_words: int = 0
    task_words: int = 0
    step_words: int = 0
    step_phrases: int = 0
    constraint_words: int = 0
    constraint_phrases: int = 0
    long_output_words: int = 0
    short_output_words: int = 0
    chat_words: int = 0
    chat_phrases: int = 0
    commas: int = 0
    list_items: int = 0
    nested_items: int = 0
    questions: int = 0
    lines: int = 0
    # The prompt's words (and parts of its hyphenated words) that are in the vocabulary.
    wordset: frozenset[bytes] = field(default_factory=frozenset, repr=False)


def _hyphen_parts(spaced: bytes) -> list[bytes]:
    """The parts of the hyphenated words in `spaced` (words separated by single-byte spaces):
    "step-by-step" gives step, by, step. Past `_MAX_HYPHENATED` such words, every word split
    at its hyphens (a superset, and one C-level split)."""
    parts: list[bytes] = []
    at = spaced.find(b"-")
    for _ in range(_MAX_HYPHENATED):
        if at < 0:
            return parts
        end = spaced.find(b" ", at)
        if end < 0:
            end = len(spaced)
        parts += spaced[spaced.rfind(b" ", 0, at) + 1 : end].split(b"-")
        at = spaced.find(b"-", end)
    return parts if at < 0 else spaced.replace(b"-", b" ").split()


def text_features(text: str, vocabulary: frozenset[bytes] = VOCABULARY) -> TextFeatures:
    """Counts of cue words, notation and structure in `text`: C-level string operations, one
    lookup of its words in `vocabulary` (which must hold every cue word) and one regex pass for
    the cue phrases."""
    if len(text) > SCAN_HEAD_CHARS + SCAN_TAIL_CHARS:
        text = text[:SCAN_HEAD_CHARS] + "\n" + text[-SCAN_TAIL_CHARS:]
    lower = text.lower()
    data = lower.encode("utf-8", "surrogatepass")
    spaced = data.translate(_WORD_BREAKS)
    words = spaced.split()
    known = vocabulary.intersection(words)
    if b"-" in spaced:
        # "Python-Funktion" and "step-by-step" also count as their parts.
        known = known.union(vocabulary.intersection(_hyphen_parts(spaced)))
    # Notation is looked for near the instructions, not all through a pasted document.
    marks = text if len(text) <= 2000 else text[:1500] + text[-500:]
    list_items = nested = 0
    # Lower-casing never makes or removes these characters, so they are counted in its bytes.
    structural = data.translate(None, _UNSTRUCTURAL_BYTES)
    if "\n" in marks:
        for line in marks.split("\n", 100)[:100]:
            stripped = line.lstrip()
            if not stripped:
                continue
            first = stripped[0]
            if (
                first in "-*•"
                and stripped[1:2] == " "
                or (first.isdigit() and stripped[1:3] in (". ", ") ") or stripped[2:4] in (". ", ") "))
            ):
                list_items += 1
                if len(line) - len(stripped) >= 2:
                    nested += 1
    cjk: dict[str, int] = {}
    if not text.isascii() and any("\u3040" <= ch <= "\u9fff" for ch in text[:200]):
        cjk = {k: sum(1 for c in cues if c in text) for k, cues in vocab.CJK_CUES.items()}
    phrases = _PHRASES.count(lower[:1500])
    return TextFeatures(
        words=len(words) + len(text) // 3 * bool(cjk),
        code_words=len(known & vocab.CODE) + cjk.get("code", 0),
        code_marks=_CODE_MARKS.count(marks) + (text.count("```") // 2 if "`" in text else 0),
        math_words=len(known & vocab.MATH) + cjk.get("math", 0),
        math_marks=_MATH_MARKS.count(marks),
        reasoning_words=len(known & vocab.REASONING) + cjk.get("reasoning", 0),
        reasoning_phrases=phrases["reasoning"],
        analysis_words=len(known & vocab.ANALYSIS) + cjk.get("analysis", 0),
        task_words=len(known & vocab.TASK) + cjk.get("task", 0) + phrases["task"],
        step_words=len(known & vocab.STEPS),
        step_phrases=phrases["step"],
        constraint_words=len(known & vocab.CONSTRAINTS),
        constraint_phrases=phrases["constraint"],
        long_output_words=len(known & vocab.LONG_OUTPUT),
        short_output_words=len(known & vocab.SHORT_OUTPUT) + phrases["short"],
        chat_words=len(known & vocab.CHAT) + cjk.get("chat", 0),
        chat_phrases=phrases["chat"],
        commas=structural.count(b",") + structural.count(b";") + text.count("、") + text.count("，"),
        list_items=list_items,
        nested_items=nested,
        questions=structural.count(b"?"),
        lines=structural.count(b"\n") + 1,
        wordset=known,
    )


class SignalSettings:
    """What the config says about signals, compiled once: the domain keyword lists, the
    languages the detector chooses among, and the PII detector."""

    def __init__(
        self,
        domains: Mapping[str, Iterable[str]] | None = None,
        languages: Iterable[str] | None = None,
        pii_kinds: Iterable[str] | None = None,
        pii_engine: str = "builtin",
        roles: Mapping[str, tuple[str | None, str | None]] | None = None,
    ) -> None:
        # role -> (compiled system-prompt pattern, tool-name prefix)
        self.roles = [
            (name, re.compile(pattern) if pattern else None, prefix)
            for name, (pattern, prefix) in (roles or {}).items()
        ]
        merged = dict(vocab.DOMAINS)
        for name, words in (domains or {}).items():
            merged[name] = frozenset(w.lower().encode() for w in words)
        self.domains = merged
        # Every word a cue list or a domain names (see `text_features`).
        self.vocabulary = VOCABULARY.union(*merged.values()) - {b""}
        self.languages = tuple(languages) if languages else None
        self._pii_kinds = tuple(pii_kinds) if pii_kinds else None
        self._pii_engine = pii_engine
        self._detector: Any = None

    @property
    def detector(self) -> Any:
        if self._detector is None:
            kinds = self._pii_kinds or pii.KINDS
            if self._pii_engine == "presidio":
                self._detector = pii.PresidioDetector(kinds)
            else:
                self._detector = pii.Detector(kinds)
        return self._detector


DEFAULT_SETTINGS = SignalSettings()


class Signals:
    """Lazily computed request facts shared by policies, strategies and the record.

    `metadata` holds trusted facts about the caller that a key lookup supplies (tier, role,
    region, ...); the client's own `x-pointsman-<name>` headers fill in what it does not say.
    """

    def __init__(
        self,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        settings: SignalSettings | None = None,
        key: str | None = None,
    ) -> None:
        self.body = body
        self.headers: Mapping[str, str] = headers or {}
        self.settings = settings or DEFAULT_SETTINGS
        self._trusted = metadata
        self._key = key
        self._memo: dict[Any, Any] = {}

    def trust(self, metadata: Mapping[str, str] | None) -> None:
        """Add what a key lookup says about the caller (it wins over headers): once the key is
        admitted, before routing reads `metadata`."""
        if "metadata" in self.__dict__:
            raise RuntimeError("Signals.trust() after the caller's metadata was read")
        self._trusted = metadata

    # -- the request's shape -------------------------------------------------------------------

    @lazy
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @lazy
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return message_text(message.get("content"))
        return ""

    @lazy
    def system_prompt(self) -> str:
        """The text of the system (and developer) messages."""
        return "\n".join(
            message_text(m.get("content"))
            for m in self.messages
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        )

    @lazy
    def turns(self) -> int:
        """User messages in the conversation (1 for a single question)."""
        return sum(1 for m in self.messages if isinstance(m, dict) and m.get("role") == "user")

    @property
    def depth(self) -> int:
        """Messages in the conversation, every role counted."""
        return len(self.messages)

    @lazy
    def _parts(self) -> tuple[int, int]:
        images = audio = 0
        for message in self.messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict):
                        kind = part.get("type")
                        if kind == "image_url" or kind == "image":
                            images += 1
                        elif kind == "input_audio" or kind == "audio":
                            audio += 1
        return images, audio

    @property
    def image_count(self) -> int:
        return self._parts[0]

    @property
    def has_images(self) -> bool:
        return self._parts[0] > 0

    @lazy
    def has_audio(self) -> bool:
        """Audio in the prompt, or audio asked for in the answer."""
        modalities = self.body.get("modalities")
        return (
            self._parts[1] > 0
            or bool(self.body.get("audio"))
            or (isinstance(modalities, list) and "audio" in modalities)
        )

    @lazy
    def modalities(self) -> tuple[str, ...]:
        found = ["text"]
        if self.has_images:
            found.append("image")
        if self.has_audio:
            found.append("audio")
        return tuple(found)

    @lazy
    def has_tools(self) -> bool:
        return bool(self.body.get("tools")) and self.body.get("tool_choice") != "none"

    @lazy
    def tool_count(self) -> int:
        tools = self.body.get("tools")
        return len(tools) if isinstance(tools, list) and self.has_tools else 0

    @lazy
    def wants_json(self) -> bool:
        fmt = self.body.get("response_format")
        return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

    @lazy
    def estimated_tokens(self) -> int:
        """Prompt tokens, estimated from character counts (see `estimate_tokens`)."""
        if "messages" not in self.body and "input" in self.body:
            # An embeddings request: its inputs are the prompt (budgets and limits count them).
            return embedding_input_tokens(self.body["input"])
        total = 0
        for message in self.messages:
            if not isinstance(message, dict):
                continue
            total += estimate_tokens(message_text(message.get("content")))
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict):
                    total += estimate_tokens(str(call.get("function", {}).get("arguments", "")))
        tools = self.body.get("tools")
        if tools:
            total += estimate_tokens(str(tools))
        return total + MESSAGE_OVERHEAD_TOKENS * len(self.messages) + IMAGE_TOKENS * self.image_count

    @lazy
    def max_output_tokens(self) -> int:
        value = self.body.get("max_completion_tokens") or self.body.get("max_tokens") or 0
        return value if isinstance(value, int) else 0

    # -- what the text says --------------------------------------------------------------------

    @lazy
    def features(self) -> TextFeatures:
        return text_features(self.last_user_text, self.settings.vocabulary)

    @lazy
    def code(self) -> float:
        """0..1: how much the request is about code (notation counts more than words)."""
        f = self.features
        return min(1.0, 0.6 * _saturate(f.code_marks, 4) + 0.5 * _saturate(f.code_words, 4))

    @lazy
    def math(self) -> float:
        """0..1: maths vocabulary and notation."""
        f = self.features
        return min(1.0, 0.6 * _saturate(f.math_words, 4) + 0.5 * _saturate(f.math_marks, 3))

    @lazy
    def reasoning(self) -> float:
        """0..1: words that ask for formal reasoning: prove, derive, justify, show that."""
        f = self.features
        return _saturate(f.reasoning_words + f.reasoning_phrases, 4)

    @lazy
    def analysis(self) -> float:
        """0..1: words that ask for analysis: compare, assess, trade-offs, recommend."""
        return _saturate(self.features.analysis_words, 4)

    @lazy
    def multi_step(self) -> float:
        """0..1: cues of a task in several steps (sequence words, numbered steps)."""
        f = self.features
        return _saturate(f.step_words + 2 * f.step_phrases + f.list_items / 2, 8)

    @lazy
    def constraints(self) -> float:
        """0..1: constraint density: requirement words (must, exactly, at most, format...)
        and enumerated requirements (comma-separated or listed), per sentence-sized chunk."""
        f = self.features
        enumerated = max(0, f.commas - 1) + f.list_items
        count = f.constraint_words + f.constraint_phrases + enumerated / 2
        return _saturate(count * 12 / math.sqrt(max(f.words, 12)), 10)

    @lazy
    def structure(self) -> float:
        """0..1: list items and nesting in the prompt."""
        f = self.features
        return _saturate(f.list_items + 3 * f.nested_items, 12)

    @lazy
    def output_length(self) -> float:
        """-1..1: cues that the answer will be long (essay, report, implement...) minus cues
        that it will be short (briefly, one word...); `max_tokens` counts when given."""
        f = self.features
        value = (
            0.5 * _saturate(f.task_words, 2)
            + 0.5 * _saturate(f.long_output_words, 3)
            - _saturate(f.short_output_words, 2)
        )
        if self.max_output_tokens:
            value += _saturate(self.max_output_tokens / 500, 8) - 0.3
        return max(-1.0, min(1.0, value))

    @lazy
    def chat(self) -> float:
        """0..1: small talk and simple lookups (greetings, thanks, "what is", short questions)."""
        f = self.features
        # A short question that asks for nothing to be produced is a lookup.
        lookup = 2 if f.questions and f.words <= 12 and not f.task_words else 0
        return _saturate(f.chat_words + 2 * f.chat_phrases + lookup, 4)

    @lazy
    def domains(self) -> tuple[str, ...]:
        """Domains whose keywords appear, in the config's order (built-ins first)."""
        words = self.features.wordset
        return tuple(name for name, keys in self.settings.domains.items() if words & keys)

    @property
    def domain(self) -> str | None:
        return self.domains[0] if self.domains else None

    @lazy
    def _language(self) -> tuple[str, float]:
        return detect_language(self.last_user_text or self.system_prompt, self.settings.languages)

    @property
    def language(self) -> str:
        """ISO 639-1 code of the last user message's language, or "und" when unsure."""
        return self._language[0]

    @property
    def language_confidence(self) -> float:
        return self._language[1]

    # -- personal data -------------------------------------------------------------------------

    @lazy
    def text_segments(self) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
        """Every text in the messages, with its (message index, content part index or -1); for
        an embeddings request, its input texts, with (-1, item index or -1)."""
        texts: list[str] = []
        paths: list[tuple[int, int]] = []
        if "messages" not in self.body and "input" in self.body:
            inputs = self.body["input"]
            if isinstance(inputs, str):
                return (inputs,), ((-1, -1),)
            for j, item in enumerate(inputs if isinstance(inputs, list) else ()):
                if isinstance(item, str):
                    texts.append(item)
                    paths.append((-1, j))
            return tuple(texts), tuple(paths)
        for i, message in enumerate(self.messages):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
                paths.append((i, -1))
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, dict) and part.get("type") == "text":
                        text = part.get("text")
                        if isinstance(text, str):
                            texts.append(text)
                            paths.append((i, j))
        return tuple(texts), tuple(paths)

    @lazy
    def pii(self) -> list[Any]:
        """PII findings (`pointsman.pii.Finding`) in every message, system prompt included."""
        return list(self.settings.detector.scan(self.text_segments[0]))

    @lazy
    def pii_kinds(self) -> frozenset[str]:
        return frozenset(f.kind for f in self.pii)

    # -- who is asking -------------------------------------------------------------------------

    @lazy
    def metadata(self) -> dict[str, str]:
        """Caller facts: `x-pointsman-<name>` headers as `<name>`, the body's `user`, then
        what the key lookup supplied (which wins)."""
        meta: dict[str, str] = {}
        for name, value in self.headers.items():
            lower = name.lower()
            if lower.startswith("x-pointsman-") and isinstance(value, str):
                meta[lower[12:]] = value.strip()
        user = self.body.get("user")
        if isinstance(user, str) and user:
            meta.setdefault("user", user)
        if self._key:
            meta["key"] = key_fingerprint(self._key) or ""
        if self._trusted:
            meta.update(self._trusted)
        return meta

    @property
    def key(self) -> str | None:
        """The fingerprint of the client key (never the key itself)."""
        return self.metadata.get("key")

    @property
    def user(self) -> str | None:
        return self.metadata.get("user")

    @lazy
    def region(self) -> str | None:
        value = self.metadata.get("region")
        return value.lower() if value else None

    @lazy
    def user_tier(self) -> str | None:
        value = self.metadata.get("tier")
        return value.lower() if value else None

    @lazy
    def role(self) -> str | None:
        """The agent role: from the key or an `x-pointsman-role` header, else the first
        configured role whose system-prompt pattern or tool-name prefix matches."""
        value = self.metadata.get("role")
        if value:
            return value.lower()
        if not self.settings.roles:
            return None
        tools = [
            (t.get("function") or {}).get("name") or t.get("name") or ""
            for t in self.body.get("tools") or ()
            if isinstance(t, dict)
        ]
        for name, pattern, prefix in self.settings.roles:
            if pattern is not None and self.system_prompt and pattern.search(self.system_prompt):
                return name
            if prefix and any(tool.startswith(prefix) for tool in tools):
                return name
        return None

    @lazy
    def stage(self) -> str:
        """Where an agent is in its loop: "tool_result" when the last message returns a tool's
        output (the model is being asked to continue after a tool call), "first_turn" for a
        conversation's opening request, else "follow_up"."""
        last = self.messages[-1] if self.messages else {}
        if isinstance(last, dict):
            if last.get("role") == "tool":
                return "tool_result"
            content = last.get("content")
            if isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") == "tool_result" for p in content
            ):
                return "tool_result"
        users = sum(1 for m in self.messages if isinstance(m, dict) and m.get("role") == "user")
        return "first_turn" if users <= 1 else "follow_up"

    @property
    def session(self) -> str | None:
        return self.metadata.get("session")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    # -- shared by later steps -----------------------------------------------------------------

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """A value derived from these signals by a later step (a complexity score, a rule's
        verdict), computed once per request."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute()
            return value

    # The facts `computed()` and `explain()` report, in reading order.
    REPORTED = (
        "estimated_tokens",
        "max_output_tokens",
        "turns",
        "modalities",
        "tool_count",
        "wants_json",
        "language",
        "language_confidence",
        "code",
        "math",
        "reasoning",
        "analysis",
        "multi_step",
        "constraints",
        "structure",
        "output_length",
        "chat",
        "domains",
        "pii_kinds",
        "region",
        "user_tier",
        "role",
        "stage",
        "user",
        "key",
    )
    # (reported name, the attribute that holds it once computed)
    _REPORTED_BACKING = tuple(
        (name, {"language": "_language", "language_confidence": "_language"}.get(name, name))
        for name in REPORTED
    )

    def explain(self) -> dict[str, Any]:
        """Every reported signal, computing the ones not yet known (for `--explain`)."""
        out = {name: _plain(getattr(self, name)) for name in self.REPORTED}
        out["system_prompt"] = bool(self.system_prompt)
        out["pii"] = [f"{f.kind}:{f.redacted()}" for f in self.pii]
        out["metadata"] = {k: v for k, v in self.metadata.items() if k != "key"}
        return out

    def computed(self) -> dict[str, Any]:
        """The reported signals that this request's routing actually computed."""
        known = self.__dict__
        out = {n: _plain(getattr(self, n)) for n, backing in self._REPORTED_BACKING if backing in known}
        if "metadata" in known and "key" not in out and self.key:
            out["key"] = self.key
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value
