"""Personal data in prompts: detection with checksums (so a random digit run is not a card), and
masking with placeholders that are put back in the answer.

Kinds: ``email``, ``phone``, ``card`` (Luhn), ``iban`` (ISO 13616 mod-97 and the country's
length), ``national_id`` (US SSN, UK NINO, Spanish DNI/NIE, French NIR, Italian codice fiscale,
each with its own validity rule). Presidio can replace the built-in detectors (extra
``pointsman[presidio]``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

KINDS = ("email", "phone", "card", "iban", "national_id")


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data: its kind, the matched text and where it sits (`segment` is
    the index of the text segment in `Signals.text_segments`)."""

    kind: str
    value: str
    segment: int
    start: int
    end: int
    # Which rule recognised it, e.g. "us_ssn" or "luhn".
    detail: str = ""

    def redacted(self) -> str:
        """A form safe to print in explanations and logs."""
        if len(self.value) <= 4:
            return "*" * len(self.value)
        return self.value[:2] + "*" * (len(self.value) - 4) + self.value[-2:]


# -- validators ----------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Card networks by leading digits; a Luhn-valid run with another prefix is more likely an id.
_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3[068]|6(?:011|4[4-9]|5|2)|35")

# ISO 13616 lengths per country (the SEPA area and the other common ones).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    iban = iban.replace(" ", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return not (
        area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000"
    ) and digits not in ("123456789", "078051120")


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_valid(value: str) -> bool:
    value = value.upper()
    number = value[:-1]
    if number[0] in "XYZ":  # NIE: a foreigner's number, X/Y/Z stand for 0/1/2
        number = str("XYZ".index(number[0])) + number[1:]
    return number.isdigit() and _DNI_LETTERS[int(number) % 23] == value[-1]


def nir_valid(value: str) -> bool:
    digits = value.replace(" ", "").upper()
    body, key = digits[:13], digits[13:]
    # Corsica's departments 2A and 2B count as 19 and 18 for the key.
    body = body.replace("2A", "19").replace("2B", "18")
    return body.isdigit() and key.isdigit() and 97 - int(body) % 97 == int(key)


_CF_ODD = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]


def codice_fiscale_valid(value: str) -> bool:
    value = value.upper()
    total = 0
    for i, ch in enumerate(value[:15]):
        n = int(ch) if ch.isdigit() else ord(ch) - 65
        total += _CF_ODD[n] if i % 2 == 0 else n
    return chr(65 + total % 26) == value[15]


# -- detectors -----------------------------------------------------------------------------------

# Python's regex engine costs ~20 ns a character when a pattern starts with a character class,
# but skips quickly to a literal first character. So each text is first mapped, byte for byte,
# to its shape (digits -> "0", capitals -> "A", small letters -> "a", the rest kept), and the
# detectors search the shape for literal-led patterns; candidates are then checked on the text.
_SHAPE = bytes.maketrans(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" + bytes(range(128, 256)),
    b"0" * 10 + b"A" * 26 + b"a" * 26 + b"a" * 128,  # bytes of non-ASCII letters count as letters
)
_EMAIL_LOCAL = re.compile(rb"[Aa0._%+-]{1,64}$")
_EMAIL_DOMAIN = re.compile(rb"[Aa0-]+(?:\.[Aa0-]+)*\.[Aa]{2,}")
_CAPITAL_SHAPES = re.compile(
    rb"A(?:A00(?: ?[A0]{4}){2,7}(?: ?[A0]{1,4})?"  # IBAN
    rb"|A ?00 ?00 ?00 ?A"  # UK NINO
    rb"|AAAAA00A00A000A"  # Italian codice fiscale
    rb"|0{7}-?A)"  # Spanish NIE
    rb"(?![Aa0])"
)
_DIGIT_SHAPES = re.compile(
    rb"0(?:0{7}-?A(?![Aa0])"  # Spanish DNI
    rb"|[0 \-.()/]{5,21}0(?![Aa0_/]|[.,-]0))"  # phone, card, SSN, French NIR
)
# What each capital-led candidate must also match on the real text.
_CAPITAL_RULES: tuple[tuple[str, str, re.Pattern[str], Callable[[str], bool]], ...] = (
    ("iban", "iban", re.compile(r"[A-Z]{2}\d{2}[A-Z0-9 ]+"), lambda v: iban_valid(v)),
    (
        "national_id",
        "uk_nino",
        re.compile(
            r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
        ),
        lambda v: True,
    ),
    (
        "national_id",
        "it_codice_fiscale",
        re.compile(r"[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]"),
        lambda v: codice_fiscale_valid(v),
    ),
    ("national_id", "es_nie", re.compile(r"[XYZ]\d{7}-?[A-Z]"), lambda v: dni_valid(v.replace("-", ""))),
)
_NIR = re.compile(r"[12] ?\d{2} ?(?:0[1-9]|1[0-2]) ?(?:\d{2}|2A|2B) ?\d{3} ?\d{3} ?\d{2}")
_SSN = re.compile(r"\d{3}-\d{2}-\d{4}")
_DATE_LIKE = re.compile(r"\d{1,4}[-./]\d{1,2}[-./]\d{1,4}")
_NON_DIGITS = re.compile(r"\D")
_DIGITS = b"0123456789"
# A digit run glued to these is part of something else (a word, a decimal, a path, a range).
_RUN_BREAKERS = frozenset(b"Aa0_.,/-")


def _classify_number(run: str) -> tuple[str, str] | None:
    """What a digit run is, if anything: a card (Luhn), a national id, or a phone number."""
    digits = _NON_DIGITS.sub("", run)
    n = len(digits)
    if _SSN.fullmatch(run):
        return ("national_id", "us_ssn") if ssn_valid(digits) else None
    if n == 15 and _NIR.fullmatch(run) and nir_valid(run):
        return ("national_id", "fr_nir")
    if _DATE_LIKE.fullmatch(run) or len(set(digits)) == 1:
        return None
    if 13 <= n <= 19 and "(" not in run and not run.startswith("+"):
        if luhn_valid(digits) and _CARD_PREFIX.match(digits):
            return ("card", "luhn")
        # A long grouped digit run that fails Luhn is a mistyped or made-up card, not a phone.
        if n >= 15:
            return None
    if 9 <= n <= 15:
        separated = any(c in run for c in " -.()") or run.startswith("+")
        trunk = run.startswith(("+", "(", "0"))
        if run.startswith("+") or (separated and (trunk or n == 10)):
            return ("phone", "+intl" if run.startswith("+") else "national")
    return None


class _Text:
    """A text as UTF-8 bytes (what the shape is searched in) with character offsets back."""

    __slots__ = ("text", "data", "ascii")

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode("utf-8", "surrogatepass")
        self.ascii = len(self.data) == len(text)

    def span(self, start: int, end: int) -> tuple[str, int, int]:
        while start < end and self.data[start] & 0xC0 == 0x80:  # not inside a character
            start += 1
        value = self.data[start:end].decode("utf-8", "surrogatepass")
        if not self.ascii:
            start = len(self.data[:start].decode("utf-8", "surrogatepass"))
        return value, start, start + len(value)


def _builtin_scan(text: str, segment: int, kinds: frozenset[str]) -> list[Finding]:
    found: list[Finding] = []
    want_email = "email" in kinds and "@" in text
    t = _Text(text)
    # Every other kind needs at least six digits: most prompts skip the shape passes.
    if not want_email and len(t.data) - len(t.data.translate(None, _DIGITS)) < 6:
        return found
    shape = t.data.translate(_SHAPE)
    if want_email:
        at = shape.find(b"@")
        while at >= 0:
            local = _EMAIL_LOCAL.search(shape, max(0, at - 64), at)
            domain = _EMAIL_DOMAIN.match(shape, at + 1)
            if local is not None and domain is not None:
                value, a, b = t.span(local.start(), domain.end())
                found.append(Finding("email", value, segment, a, b, "pattern"))
            at = shape.find(b"@", at + 1)
    for m in _CAPITAL_SHAPES.finditer(shape):
        start = m.start()
        if start and shape[start - 1] in b"Aa0":
            continue
        value, a, b = t.span(start, m.end())
        for kind, detail, strict, valid in _CAPITAL_RULES:
            if strict.fullmatch(value):
                if kind in kinds and valid(value):
                    found.append(Finding(kind, value, segment, a, b, detail))
                elif kind == "iban":
                    # IBAN-shaped text, valid or not, is never read as a card or phone number.
                    found.append(Finding("", value, segment, a, b))
                break
    for m in _DIGIT_SHAPES.finditer(shape):
        start, end = m.start(), m.end()
        if start and shape[start - 1] in _RUN_BREAKERS:
            continue
        if start and shape[start - 1] in b"+(":
            start -= 1
        value, a, b = t.span(start, end)
        if value[-1].isalpha():
            if "national_id" in kinds and dni_valid(value.replace("-", "")):
                found.append(Finding("national_id", value, segment, a, b, "es_dni"))
            continue
        run = value.strip(" -.")
        what = _classify_number(run)
        if what is not None and what[0] in kinds:
            a += value.index(run)
            found.append(Finding(what[0], run, segment, a, a + len(run), what[1]))
    return [f for f in _without_overlaps(found) if f.kind]


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    """Longest match wins where two detectors claim the same characters (an IBAN's digits are
    not also a phone number)."""
    if len(found) < 2:
        return found
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for f in found:
        if kept and f.start < kept[-1].end:
            continue
        kept.append(f)
    return kept


class Detector:
    """Finds personal data in text segments. The built-in one is regular expressions plus the
    checksums above; `PresidioDetector` wraps Microsoft Presidio when it is installed."""

    def __init__(self, kinds: Iterable[str] = KINDS) -> None:
        self.kinds = frozenset(kinds)

    def scan(self, segments: Sequence[str]) -> list[Finding]:
        found: list[Finding] = []
        for i, text in enumerate(segments):
            if text:
                found.extend(_builtin_scan(text, i, self.kinds))
        return found


class PresidioDetector(Detector):
    """Presidio's analyzer (entities mapped onto pointsman's kinds); needs `presidio-analyzer`
    and a spaCy model installed locally, since nothing is downloaded at run time."""

    ENTITY_KINDS = {
        "EMAIL_ADDRESS": "email",
        "PHONE_NUMBER": "phone",
        "CREDIT_CARD": "card",
        "IBAN_CODE": "iban",
        "US_SSN": "national_id",
        "UK_NHS": "national_id",
        "ES_NIF": "national_id",
        "IT_FISCAL_CODE": "national_id",
    }

    def __init__(self, kinds: Iterable[str] = KINDS, analyzer: Any = None, language: str = "en"):
        super().__init__(kinds)
        if analyzer is None:
            try:
                from presidio_analyzer import AnalyzerEngine
            except ImportError as exc:  # pragma: no cover - depends on the extra
                raise RuntimeError(
                    "the presidio PII engine needs the extra: pip install 'pointsman[presidio]'"
                ) from exc
            analyzer = AnalyzerEngine()
        self.analyzer = analyzer
        self.language = language
        self.entities = [e for e, k in self.ENTITY_KINDS.items() if k in self.kinds]

    def scan(self, segments: Sequence[str]) -> list[Finding]:
        found: list[Finding] = []
        for i, text in enumerate(segments):
            if not text:
                continue
            for r in self.analyzer.analyze(text, entities=self.entities, language=self.language):
                found.append(
                    Finding(
                        self.ENTITY_KINDS[r.entity_type],
                        text[r.start : r.end],
                        i,
                        r.start,
                        r.end,
                        f"presidio:{r.entity_type}",
                    )
                )
        return _without_overlaps(found)


# -- masking -------------------------------------------------------------------------------------

_PLACEHOLDER_NAMES = {
    "email": "EMAIL",
    "phone": "PHONE",
    "card": "CARD",
    "iban": "IBAN",
    "national_id": "ID",
}
# The tail of a chunk that may be the start of a placeholder split across stream chunks.
_PARTIAL_PLACEHOLDER = re.compile(r"\[[A-Z]{0,6}(?:_\d{0,4})?$")


class Masker:
    """Replaces findings in a request body with placeholders (``[EMAIL_1]``) and puts the
    original values back into an answer. The same value always gets the same placeholder."""

    def __init__(self, findings: Sequence[Finding], kinds: frozenset[str]) -> None:
        self.by_value: dict[str, str] = {}
        self.originals: dict[str, str] = {}
        counters: dict[str, int] = {}
        self.findings = [f for f in findings if f.kind in kinds]
        for f in self.findings:
            if f.value in self.by_value:
                continue
            counters[f.kind] = counters.get(f.kind, 0) + 1
            placeholder = f"[{_PLACEHOLDER_NAMES[f.kind]}_{counters[f.kind]}]"
            self.by_value[f.value] = placeholder
            self.originals[placeholder] = f.value
        self._restore = re.compile("|".join(re.escape(p) for p in self.originals)) if self.originals else None

    def __bool__(self) -> bool:
        return bool(self.findings)

    def mask_body(self, body: dict[str, Any], segment_paths: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """A copy of `body` with every finding replaced; `segment_paths` maps each text segment
        to its (message index, content part index or -1); message index -1 is an embeddings
        request's `input` (item index, or -1 for a single string)."""
        by_segment: dict[int, list[Finding]] = {}
        for f in self.findings:
            by_segment.setdefault(f.segment, []).append(f)
        if "messages" not in body:
            inputs = body["input"]
            items = list(inputs) if isinstance(inputs, list) else [inputs]
            for segment, findings in by_segment.items():
                item = max(segment_paths[segment][1], 0)
                items[item] = self._replace(items[item], findings)
            return {**body, "input": items if isinstance(inputs, list) else items[0]}
        messages = [dict(m) if isinstance(m, dict) else m for m in body["messages"]]
        for segment, findings in by_segment.items():
            mi, pi = segment_paths[segment]
            message = messages[mi]
            if pi < 0:
                message["content"] = self._replace(message["content"], findings)
            else:
                parts = list(message["content"])
                part = dict(parts[pi])
                part["text"] = self._replace(part["text"], findings)
                parts[pi] = part
                message["content"] = parts
        return {**body, "messages": messages}

    def _replace(self, text: str, findings: list[Finding]) -> str:
        out, last = [], 0
        for f in sorted(findings, key=lambda f: f.start):
            out.append(text[last : f.start])
            out.append(self.by_value[f.value])
            last = f.end
        out.append(text[last:])
        return "".join(out)

    def restore_text(self, text: str) -> str:
        if self._restore is None or "[" not in text:
            return text
        return self._restore.sub(lambda m: self.originals[m.group()], text)

    def restore_completion(self, raw: bytes) -> bytes:
        """An OpenAI chat completion body with placeholders in its messages put back."""
        if self._restore is None:
            return raw
        data = orjson.loads(raw)
        for choice in data.get("choices") or ():
            message = choice.get("message") or {}
            self._restore_message(message)
        return orjson.dumps(data)

    def _restore_message(self, message: dict[str, Any]) -> None:
        if isinstance(message.get("content"), str):
            message["content"] = self.restore_text(message["content"])
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            if isinstance(function.get("arguments"), str):
                function["arguments"] = self.restore_text(function["arguments"])

    def restore_stream(self, first: bytes, rest: AsyncIterator[bytes]) -> tuple[bytes, AsyncIterator[bytes]]:
        """The first SSE event and the rest of a stream, with placeholders put back."""
        restorer = StreamRestorer(self)
        return restorer.event(first), _RestoredStream(rest, restorer)


class _RestoredStream:
    """An SSE event stream with placeholders restored; closing it closes the upstream."""

    def __init__(self, inner: AsyncIterator[bytes], restorer: StreamRestorer) -> None:
        self.inner, self.restorer = inner, restorer

    def __aiter__(self) -> _RestoredStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            event = self.restorer.event(await self.inner.__anext__())
            if event:
                return event

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


class StreamRestorer:
    """Restores placeholders in SSE chat-completion chunks. A placeholder split across chunks
    is held back until it is complete (or the choice ends), so the client never sees half."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self.pending: dict[int, str] = {}

    def event(self, raw: bytes) -> bytes:
        if self.masker._restore is None:
            return raw
        out = []
        for event in raw.split(b"\n\n"):
            if not event.strip():
                continue
            out.append(self._one(event))
        return b"".join(out)

    def _one(self, event: bytes) -> bytes:
        if not event.startswith(b"data: ") or event[6:].strip() == b"[DONE]":
            return event + b"\n\n"
        try:
            data = orjson.loads(event[6:])
        except orjson.JSONDecodeError:
            return event + b"\n\n"
        for choice in data.get("choices") or ():
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                text = self.pending.pop(index, "") + content
                if not choice.get("finish_reason"):
                    partial = _PARTIAL_PLACEHOLDER.search(text)
                    if partial is not None:
                        self.pending[index] = partial.group()
                        text = text[: partial.start()]
                delta["content"] = self.masker.restore_text(text)
            elif choice.get("finish_reason") and index in self.pending:
                delta["content"] = self.masker.restore_text(self.pending.pop(index))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                if isinstance(function.get("arguments"), str):
                    function["arguments"] = self.masker.restore_text(function["arguments"])
        return b"data: " + orjson.dumps(data) + b"\n\n"


def kinds_of(findings: Iterable[Finding]) -> frozenset[str]:
    return frozenset(f.kind for f in findings)
