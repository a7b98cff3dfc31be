"""Request signals on real text: tokens, language, modality, cues, PII (with checksums), caller
metadata. Each is computed lazily, once."""

from __future__ import annotations

import pytest

from pointsman.pii import Detector, Masker, iban_valid, luhn_valid
from pointsman.signals import Signals, estimate_tokens


def user(text: str, **body: object) -> Signals:
    return Signals({"model": "auto", "messages": [{"role": "user", "content": text}], **body})


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Can you explain how photosynthesis works in plants?", "en"),
        ("Kannst du mir erklären, wie die Photosynthese funktioniert?", "de"),
        ("Peux-tu m'expliquer comment fonctionne la photosynthèse ?", "fr"),
        ("¿Puedes explicarme cómo funciona la fotosíntesis?", "es"),
        ("Puoi spiegarmi come funziona la fotosintesi?", "it"),
        ("Você pode me explicar como funciona a fotossíntese?", "pt"),
        ("Kun je uitleggen hoe fotosynthese werkt?", "nl"),
        ("Czy możesz wyjaśnić, jak działa fotosynteza?", "pl"),
        ("Можешь объяснить, как работает фотосинтез?", "ru"),
        ("光合成の仕組みを説明してください。", "ja"),
        ("请解释一下光合作用是如何进行的。", "zh"),
        ("광합성이 어떻게 작동하는지 설명해 주세요.", "ko"),
        ("Fotosentez nasıl çalışır, açıklayabilir misin?", "tr"),
    ],
)
def test_language_of_multilingual_prompts(text, language):
    signals = user(text)
    assert signals.language == language and signals.language_confidence >= 0.4


def test_language_is_undetermined_for_text_without_words():
    assert user("ok").language == "und"
    assert user("```\nx = 1\n```").language == "und"


def test_token_estimate_is_close_to_a_real_tokenizer():
    # cl100k_base counts of these texts (measured with tiktoken when the estimate was fitted).
    samples = {
        "The quick brown fox jumps over the lazy dog.": 10,
        "def add(a, b):\n    return a + b\n": 12,
        "Wie spät ist es? Ich möchte wissen, wann der Zug nach München fährt.": 19,
        "光合成について簡単に説明してください。": 20,
    }
    for text, real in samples.items():
        assert abs(estimate_tokens(text) - real) <= max(4, real * 0.3), text


def test_tokens_count_every_message_tool_and_image():
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    signals = Signals(body)
    assert signals.image_count == 1 and signals.modalities == ("text", "image")
    assert signals.estimated_tokens > 85 + 8 and signals.tool_count == 1


def test_audio_in_the_prompt_or_asked_for_is_a_modality():
    part = {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}}
    assert Signals({"messages": [{"role": "user", "content": [part]}]}).has_audio
    assert Signals({"messages": [], "modalities": ["text", "audio"]}).has_audio
    assert not user("hello").has_audio


def test_tools_and_json_output_are_seen():
    signals = user("x", tools=[{"type": "function"}], response_format={"type": "json_object"})
    assert signals.has_tools and signals.wants_json
    assert not user("x", tools=[{"type": "function"}], tool_choice="none").has_tools


def test_code_maths_reasoning_and_analysis_cues():
    code = user("Fix this Python bug:\n```python\ndef f(x):\n    return x.strip()\n```")
    maths = user("Prove that the integral of x^2 dx from 0 to 1 equals 1/3.")
    analysis = user("Compare PostgreSQL and MongoDB and recommend one; weigh the trade-offs.")
    chat = user("hi, thanks!")
    assert code.code > 0.5 and chat.code == 0
    assert maths.math > 0.4 and maths.reasoning > 0.3 and code.math < maths.math / 2
    assert analysis.analysis > 0.4 and chat.analysis == 0
    assert chat.chat > 0.3 and analysis.chat == 0


def test_structure_steps_and_constraints():
    plan = user(
        "First, load the data. Then clean it:\n- drop nulls\n  - in every column\n- dedupe\n"
        "Finally, you must output exactly 3 charts, at most 200 words."
    )
    assert plan.multi_step > 0.5 and plan.structure > 0.3 and plan.constraints > 0.5
    assert user("hello").multi_step == 0


def test_conversation_depth_and_system_prompt():
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    }
    signals = Signals(body)
    assert signals.turns == 2 and signals.depth == 4 and signals.system_prompt == "Be brief."


def test_domains_from_keyword_lists_including_configured_ones():
    from pointsman.signals import SignalSettings

    settings = SignalSettings(domains={"travel": ["flight", "hotel"]})
    legal = Signals(
        {"messages": [{"role": "user", "content": "Review the liability clause of this contract"}]}
    )
    trip = Signals({"messages": [{"role": "user", "content": "book a hotel"}]}, settings=settings)
    assert legal.domain == "legal" and trip.domains == ("travel",)


def test_metadata_from_headers_user_and_key_with_trusted_values_winning():
    signals = Signals(
        {"messages": [], "user": "u-7"},
        {"x-pointsman-region": "EU", "x-pointsman-tier": "pro", "x-pointsman-role": "Planner"},
        metadata={"tier": "free"},
        key="sk-secret",
    )
    assert signals.region == "eu" and signals.user_tier == "free" and signals.role == "planner"
    assert signals.user == "u-7" and signals.key.startswith("key_") and "secret" not in signals.key


def test_signals_are_computed_lazily_and_once():
    signals = user("Prove that there are infinitely many primes.")
    assert signals.computed() == {}
    first = signals.features
    assert signals.features is first
    assert signals.reasoning > 0
    assert set(signals.computed()) == {"reasoning"}


VALID_PII = [
    ("write to jane.doe@example.co.uk today", "email"),
    ("call +44 20 7946 0958 after six", "phone"),
    ("or (555) 123-4567 at the office", "phone"),
    ("card 4111 1111 1111 1111 exp 12/27", "card"),
    ("mastercard 5555-5555-5555-4444", "card"),
    ("pay to DE89 3704 0044 0532 0130 00 please", "iban"),
    ("GB82WEST12345698765432", "iban"),
    ("my SSN is 536-22-1234", "national_id"),
    ("NINO AB 12 34 56 C", "national_id"),
    ("DNI 12345678Z", "national_id"),
    ("codice fiscale RSSMRA85T10A562S", "national_id"),
    ("numéro de sécurité sociale 1 85 05 78 006 084 91", "national_id"),
]
NOT_PII = [
    "card 4111 1111 1111 1112 is a typo",  # fails Luhn
    "IBAN DE89 3704 0044 0532 0130 01",  # fails mod-97
    "GB82WEST12345698765433",  # fails mod-97
    "SSN 000-12-3456 and 666-12-3456",  # invalid areas
    "DNI 12345678A",  # wrong check letter
    "NIR 1 85 05 78 006 084 36",  # wrong key
    "on 2024-01-15 at 10:30, version 1.2.3.4, pi 3.14159265358979",
    "order 123456789012 shipped to 192.168.1.1",
]


@pytest.mark.parametrize(("text", "kind"), VALID_PII)
def test_pii_is_found_with_its_kind(text, kind):
    found = Detector().scan([text])
    assert [f.kind for f in found] == [kind]
    assert text[found[0].start : found[0].end] == found[0].value


@pytest.mark.parametrize("text", NOT_PII)
def test_invalid_numbers_are_not_pii(text):
    assert Detector().scan([text]) == []


def test_checksums():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")


def test_pii_in_any_message_and_non_ascii_text():
    body = {
        "messages": [
            {"role": "system", "content": "Kunde: müller@example.de"},
            {"role": "user", "content": [{"type": "text", "text": "東京 — ring +49 30 1234567"}]},
        ]
    }
    signals = Signals(body)
    assert signals.pii_kinds == {"email", "phone"}
    assert {f.value for f in signals.pii} == {"müller@example.de", "+49 30 1234567"}


def test_masking_replaces_values_and_restores_them_in_answers_and_streams():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Mail bob@x.io and bob@x.io, call +1 415 555 0100"}],
    }
    signals = Signals(body)
    masker = Masker(signals.pii, frozenset({"email", "phone"}))
    masked = masker.mask_body(body, signals.text_segments[1])
    assert masked["messages"][0]["content"] == "Mail [EMAIL_1] and [EMAIL_1], call [PHONE_1]"
    assert body["messages"][0]["content"].startswith("Mail bob@x.io")  # the original is untouched
    answer = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"Wrote to [EMAIL_1]."}}]}'
    assert b"bob@x.io" in masker.restore_completion(answer)
    from pointsman.pii import StreamRestorer

    restorer = StreamRestorer(masker)
    chunks = [b"Calling [PHO", b"NE_1] now", b""]
    out = []
    for i, text in enumerate(chunks):
        finish = '"stop"' if i == 2 else "null"
        event = (
            b'data: {"choices":[{"index":0,"delta":{"content":"'
            + text
            + b'"},"finish_reason":'
            + finish.encode()
            + b"}]}\n\n"
        )
        out.append(restorer.event(event))
    joined = b"".join(out)
    assert b"+1 415 555 0100" in joined and b"[PHO" not in joined
