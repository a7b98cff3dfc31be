"""The token estimate and the text features as computed before the single-pass rewrite (commit e537586), kept verbatim
as the reference the current implementation must agree with on every input."""

# ruff: noqa

from __future__ import annotations

from pointsman import signals_vocab as vocab

_WORD_BREAKS = bytes.maketrans(
    b'!"$%&()*,./:<=>?@[\\]^_`{|}~\t\n\r', b" " * len(b'!"$%&()*,./:<=>?@[\\]^_`{|}~\t\n\r')
)
_WORD_BREAKS_AND_HYPHENS = bytes.maketrans(
    b'!"$%&()*,./:<=>?@[\\]^_`{|}~\t\n\r-', b" " * len(b'!"$%&()*,./:<=>?@[\\]^_`{|}~\t\n\r-')
)


def reference_text_features(text: str) -> dict[str, object]:
    if len(text) > 8000:
        text = text[:6000] + "\n" + text[-2000:]
    lower = text.lower()
    data = lower.encode("utf-8", "surrogatepass")
    words = data.translate(_WORD_BREAKS).split()
    wordset = frozenset(words)
    if "-" in lower:
        # "Python-Funktion" and "step-by-step" also count as their parts.
        wordset = wordset.union(data.translate(_WORD_BREAKS_AND_HYPHENS).split())
    head = lower[:1500]
    # Notation is looked for near the instructions, not all through a pasted document.
    marks = text if len(text) <= 2000 else text[:1500] + text[-500:]
    list_items = nested = 0
    lines = text.count("\n") + 1
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
    return dict(
        words=len(words) + len(text) // 3 * bool(cjk),
        code_words=len(wordset & vocab.CODE) + cjk.get("code", 0),
        code_marks=sum(1 for m in vocab.CODE_MARKS if m in marks) + text.count("```") // 2,
        math_words=len(wordset & vocab.MATH) + cjk.get("math", 0),
        math_marks=sum(1 for m in vocab.MATH_MARKS if m in marks),
        reasoning_words=len(wordset & vocab.REASONING) + cjk.get("reasoning", 0),
        reasoning_phrases=sum(1 for p in vocab.REASONING_PHRASES if p in head),
        analysis_words=len(wordset & vocab.ANALYSIS) + cjk.get("analysis", 0),
        task_words=len(wordset & vocab.TASK)
        + cjk.get("task", 0)
        + sum(1 for p in vocab.TASK_PHRASES if p in head),
        step_words=len(wordset & vocab.STEPS),
        step_phrases=sum(1 for p in vocab.STEP_PHRASES if p in head),
        constraint_words=len(wordset & vocab.CONSTRAINTS),
        constraint_phrases=sum(1 for p in vocab.CONSTRAINT_PHRASES if p in head),
        long_output_words=len(wordset & vocab.LONG_OUTPUT),
        short_output_words=len(wordset & vocab.SHORT_OUTPUT)
        + sum(1 for p in vocab.SHORT_PHRASES if p in head),
        chat_words=len(wordset & vocab.CHAT) + cjk.get("chat", 0),
        chat_phrases=sum(1 for p in vocab.CHAT_PHRASES if p in head),
        commas=text.count(",") + text.count(";") + text.count("、") + text.count("，"),
        list_items=list_items,
        nested_items=nested,
        questions=text.count("?"),
        lines=lines,
        wordset=wordset,
    )


TOKENS_PER_ASCII_CHAR = 0.1907
TOKENS_PER_TWO_BYTE_CHAR = 0.6229
TOKENS_PER_WIDE_CHAR = 1.0
TOKENS_PER_SPACE = -0.1027
TOKENS_PER_NEWLINE = 0.5918
TOKENS_PER_DIGIT = 0.6487
TOKENS_PER_PUNCTUATION = 0.3987
_HIGH_BYTES = bytes(range(128, 256))
_DIGIT_BYTES = b"0123456789"
_PUNCTUATION_BYTES = b".,;:()[]{}=<>\"'/_-*#"


def reference_estimate_tokens(text: str) -> int:
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
    return max(
        1,
        round(
            TOKENS_PER_ASCII_CHAR * ascii_chars
            + TOKENS_PER_TWO_BYTE_CHAR * (non_ascii - wide)
            + TOKENS_PER_WIDE_CHAR * wide
            + TOKENS_PER_SPACE * data.count(b" ")
            + TOKENS_PER_NEWLINE * data.count(b"\n")
            + TOKENS_PER_DIGIT * (size - len(data.translate(None, _DIGIT_BYTES)))
            + TOKENS_PER_PUNCTUATION * (size - len(data.translate(None, _PUNCTUATION_BYTES)))
        ),
    )
