"""Translation between OpenAI Chat Completions and Anthropic Messages shapes."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest

from pointsman.providers.anthropic_format import (
    AnthropicStreamTranslator,
    OpenAIToAnthropicStream,
    TranslationError,
    UpstreamStreamError,
    anthropic_error_status,
    from_anthropic_request,
    from_anthropic_response,
    is_context_length_error,
    to_anthropic_request,
    to_anthropic_response,
)

MODEL = "claude-sonnet-4-5"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("Hi")])
    return to_anthropic_request({"model": "gpt-4o", **body}, MODEL)


# --- OpenAI request -> Anthropic request ---------------------------------------------------------


def test_system_and_developer_messages_become_one_system_prompt() -> None:
    request = translate(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            user("Hi"),
            {"role": "system", "content": "Never use emoji."},
        ]
    )
    assert request["system"] == "You are terse.\n\nAnswer in French.\n\nNever use emoji."
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert request["model"] == MODEL


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        pytest.param(
            [user("Hello"), user("Are you there?")],
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hello"},
                        {"type": "text", "text": "Are you there?"},
                    ],
                }
            ],
            id="two-user-turns",
        ),
        pytest.param(
            [
                user("Hi"),
                {"role": "assistant", "content": "Hello."},
                {"role": "assistant", "content": "How can I help?"},
                user("Tell me a joke"),
            ],
            [
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Hello."},
                        {"type": "text", "text": "How can I help?"},
                    ],
                },
                {"role": "user", "content": [{"type": "text", "text": "Tell me a joke"}]},
            ],
            id="two-assistant-turns",
        ),
        pytest.param(
            [user([{"type": "text", "text": "Hi"}, {"type": "text", "text": ""}]), user("")],
            [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            id="empty-text-dropped",
        ),
    ],
)
def test_consecutive_same_role_messages_merge_into_one_turn(
    messages: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    assert translate(messages=messages)["messages"] == expected


@pytest.mark.parametrize(
    ("url", "source"),
    [
        pytest.param(
            "data:image/png;base64,iVBORw0KGgo=",
            {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            id="base64",
        ),
        pytest.param(
            "https://example.com/cat.jpg",
            {"type": "url", "url": "https://example.com/cat.jpg"},
            id="url",
        ),
    ],
)
def test_images_become_anthropic_image_blocks(url: str, source: dict[str, Any]) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
    ]
    assert translate(messages=[user(parts)])["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": source},
    ]


def test_pdf_file_part_becomes_a_document_block() -> None:
    part = {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
    }
    assert translate(messages=[user([part])])["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        }
    ]


def test_cache_control_on_parts_and_tools_is_kept() -> None:
    ephemeral = {"type": "ephemeral"}
    request = translate(
        messages=[user([{"type": "text", "text": "long context", "cache_control": ephemeral}])],
        tools=[{**WEATHER_TOOL, "cache_control": ephemeral}],
    )
    assert request["messages"][0]["content"][0]["cache_control"] == ephemeral
    assert request["tools"][0]["cache_control"] == ephemeral


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"n": 2}, "n=2 is not supported", id="n>1"),
        pytest.param(
            {
                "messages": [
                    user("Weather?"),
                    {"role": "assistant", "tool_calls": [call("c1", "get_weather", "{city:")]},
                ]
            },
            r"messages\[1\]\.tool_calls\[0\]: function.arguments is not valid JSON",
            id="bad-json-arguments",
        ),
        pytest.param(
            {
                "messages": [
                    user("Weather?"),
                    {"role": "assistant", "tool_calls": [call("c1", "get_weather", "[1, 2]")]},
                ]
            },
            "must be a JSON object, got list",
            id="non-object-arguments",
        ),
        pytest.param(
            {
                "messages": [
                    user([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}])
                ]
            },
            "audio input is not supported",
            id="audio-input",
        ),
        pytest.param(
            {"messages": [{"role": "narrator", "content": "Once upon a time"}]},
            r"messages\[0\]: unknown role 'narrator'",
            id="unknown-role",
        ),
        pytest.param(
            {"messages": [{"role": "function", "name": "f", "content": "1"}]},
            "legacy `function` role",
            id="function-role",
        ),
        pytest.param(
            {"messages": [user([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}])]},
            "data: URL or an http",
            id="ftp-image",
        ),
        pytest.param(
            {
                "messages": [
                    user(
                        [{"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,"}}]
                    )
                ]
            },
            "image type 'image/svg\\+xml' is not supported",
            id="svg-image",
        ),
        pytest.param(
            {"tools": [{"type": "custom", "custom": {"name": "grammar"}}]},
            r"tools\[0\]: only function tools",
            id="custom-tool",
        ),
        pytest.param({"modalities": ["text", "audio"]}, "audio output", id="audio-output"),
    ],
)
def test_untranslatable_requests_raise_with_a_useful_message(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(TranslationError, match=message):
        translate(**body)


def test_tool_calls_and_results_round_trip_through_the_anthropic_shape() -> None:
    messages = [
        {"role": "system", "content": "You report the weather."},
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                call("call_1", "get_weather", '{"city":"Paris"}'),
                call("call_2", "get_weather", '{"city":"Rome"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "22C, cloudy"},
        user("Which is warmer?"),
    ]
    original = {
        "model": "gpt-4o",
        "messages": messages,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "max_completion_tokens": 300,
    }

    request = to_anthropic_request(original, MODEL)
    assert request["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "22C, cloudy"},
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]
    assert request["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]

    back = from_anthropic_request(request)
    assert back["messages"] == messages
    assert back["tools"] == [WEATHER_TOOL]
    assert back["tool_choice"] == "auto"
    assert back["max_completion_tokens"] == 300
    assert back["model"] == MODEL


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    assert translate(tools=[tool])["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]


@pytest.mark.parametrize(
    ("fields", "tool_choice"),
    [
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            {"type": "tool", "name": "get_weather"},
        ),
        (
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"parallel_tool_calls": True}, None),
        ({}, None),
    ],
)
def test_tool_choice_variants(fields: dict[str, Any], tool_choice: dict[str, Any] | None) -> None:
    assert translate(tools=[WEATHER_TOOL], **fields).get("tool_choice") == tool_choice


def test_allowed_tools_choice_offers_only_the_allowed_tools() -> None:
    clock = {"type": "function", "function": {"name": "now"}}
    request = translate(
        tools=[WEATHER_TOOL, clock],
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [clock]},
        },
    )
    assert [tool["name"] for tool in request["tools"]] == ["now"]
    assert request["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"max_tokens": 4096}),
        ({"max_tokens": 100}, {"max_tokens": 100}),
        ({"max_tokens": 100, "max_completion_tokens": 200}, {"max_tokens": 200}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["END", "\n\nHuman:"]}, {"stop_sequences": ["END", "\n\nHuman:"]}),
        ({"temperature": 1.7}, {"temperature": 1.0}),
        ({"temperature": 0.3, "top_p": 0.9}, {"temperature": 0.3, "top_p": 0.9}),
        ({"stream": True}, {"stream": True}),
        ({"user": "user-42"}, {"metadata": {"user_id": "user-42"}}),
    ],
)
def test_sampling_and_limit_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    request = translate(**fields)
    assert {key: request[key] for key in expected} == expected


def test_openai_only_fields_are_dropped() -> None:
    request = translate(
        n=1,
        logprobs=True,
        top_logprobs=3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        seed=7,
        logit_bias={"50256": -100},
        stream_options={"include_usage": True},
        store=True,
        reasoning_effort="low",
    )
    assert request == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }


def test_json_response_formats_ask_for_json_in_the_system_prompt() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    as_object = translate(
        messages=[{"role": "system", "content": "Be brief."}, user("Hi")],
        response_format={"type": "json_object"},
    )
    assert as_object["system"] == (
        "Be brief.\n\nRespond only with a single valid JSON object and no other text."
    )
    as_schema = translate(
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    )
    assert as_schema["system"].endswith(json.dumps(schema, separators=(",", ":")))
    assert "JSON Schema" in as_schema["system"]
    assert "system" not in translate(response_format={"type": "text"})


# --- Anthropic response -> OpenAI response -------------------------------------------------------


def anthropic_message(content: list[dict[str, Any]], stop_reason: str, **usage: int) -> dict:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def test_text_response_becomes_a_chat_completion() -> None:
    resp = anthropic_message(
        [
            {"type": "thinking", "thinking": "Let me think", "signature": "sig"},
            {"type": "text", "text": "Hello"},
            {"type": "text", "text": ", world."},
        ],
        "end_turn",
    )
    completion = from_anthropic_response(resp, "smart")
    assert completion["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert completion["object"] == "chat.completion"
    assert isinstance(completion["created"], int)
    assert completion["model"] == "smart"
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]


def test_tool_use_response_becomes_tool_calls() -> None:
    resp = anthropic_message(
        [
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"city": "Zürich", "units": ["c"]},
            }
        ],
        "tool_use",
    )
    choice = from_anthropic_response(resp, "smart")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        call("toolu_01A09q90qw90lq917835lq9", "get_weather", '{"city":"Zürich","units":["c"]}')
    ]


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    resp = anthropic_message([{"type": "text", "text": "x"}], stop_reason)
    assert from_anthropic_response(resp, "m")["choices"][0]["finish_reason"] == finish_reason


def test_usage_counts_cache_writes_and_reads_as_prompt_tokens() -> None:
    resp = anthropic_message(
        [{"type": "text", "text": "x"}],
        "end_turn",
        cache_creation_input_tokens=200,
        cache_read_input_tokens=1000,
    )
    assert from_anthropic_response(resp, "m")["usage"] == {
        "prompt_tokens": 1210,
        "completion_tokens": 5,
        "total_tokens": 1215,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }


# --- Anthropic stream -> OpenAI chunks -----------------------------------------------------------

TEXT_STREAM = """\
event: message_start
data: {"type":"message_start","message":{"id":"msg_01TextStream","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! How can I"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" help you today?"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":12}}

event: message_stop
data: {"type":"message_stop"}
"""  # noqa: E501 - recorded event lines are kept verbatim

TOOL_STREAM = """\
event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants the weather."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Checking both cities."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"San"}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" Francisco, CA\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_02Rome","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"Rome\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":3}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}
"""  # noqa: E501 - recorded event lines are kept verbatim


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def translate_stream(text: str, include_usage: bool) -> tuple[AnthropicStreamTranslator, list]:
    translator = AnthropicStreamTranslator("smart", include_usage=include_usage)
    chunks = [chunk for event, data in sse_events(text) for chunk in translator.feed(event, data)]
    return translator, chunks


def test_text_stream_becomes_chunks_with_the_full_text_and_usage() -> None:
    translator, chunks = translate_stream(TEXT_STREAM, include_usage=True)

    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello! How can I help you today?"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("msg_01TextStream", chunks[0]["created"], "smart", "chat.completion.chunk")
    }
    usage = {
        "prompt_tokens": 2073,
        "completion_tokens": 12,
        "total_tokens": 2085,
        "prompt_tokens_details": {"cached_tokens": 2048},
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == usage
    assert all(c["usage"] is None for c in chunks[:-1])
    assert translator.usage == usage
    assert translator.finish_reason == "stop"


def test_stream_without_include_usage_sends_no_usage_chunk() -> None:
    translator, chunks = translate_stream(TEXT_STREAM, include_usage=False)
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert translator.usage is not None and translator.usage["completion_tokens"] == 12


def test_tool_use_stream_becomes_tool_call_deltas_with_the_full_arguments() -> None:
    translator, chunks = translate_stream(TOOL_STREAM, include_usage=False)

    deltas = [c["choices"][0]["delta"] for c in chunks]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Checking both cities."  # the thinking block is not content
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        for tool_call in delta.get("tool_calls", []):
            entry = calls.setdefault(tool_call["index"], {"arguments": ""})
            for key in ("id", "type"):
                if key in tool_call:
                    entry[key] = tool_call[key]
            if "name" in tool_call["function"]:
                entry["name"] = tool_call["function"]["name"]
            entry["arguments"] += tool_call["function"]["arguments"]
    assert calls == {
        0: {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "type": "function",
            "name": "get_weather",
            "arguments": '{"city": "San Francisco, CA"}',
        },
        1: {
            "id": "toolu_02Rome",
            "type": "function",
            "name": "get_weather",
            "arguments": '{"city": "Rome"}',
        },
    }
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert translator.finish_reason == "tool_calls"
    assert translator.usage == {
        "prompt_tokens": 472,
        "completion_tokens": 89,
        "total_tokens": 561,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_error_event_in_stream_raises_upstream_stream_error() -> None:
    translator = AnthropicStreamTranslator("smart")
    start, data = sse_events(TEXT_STREAM)[0]
    translator.feed(start, data)
    with pytest.raises(UpstreamStreamError) as raised:
        translator.feed(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    assert raised.value.error_type == "overloaded_error"
    assert raised.value.message == "Overloaded"
    assert raised.value.status == 503


# --- Errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("request_too_large", 413),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("overloaded_error", 503),
        ("something_new_error", 500),
    ],
)
def test_anthropic_error_types_map_to_http_statuses(error_type: str, status: int) -> None:
    assert anthropic_error_status(error_type) == status


def error_body(message: str, error_type: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, error_body("prompt is too long: 208310 tokens > 200000 maximum"), True),
        (
            400,
            error_body(
                "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000"
            ),
            True,
        ),
        (400, error_body("messages: roles must alternate"), False),
        (413, error_body("Request exceeds the maximum size", "request_too_large"), False),
        (429, error_body("prompt is too long", "rate_limit_error"), False),
    ],
)
def test_context_length_errors_are_recognised(
    status: int, body: dict[str, Any], expected: bool
) -> None:
    assert is_context_length_error(status, body) is expected


# --- Anthropic request -> OpenAI request ---------------------------------------------------------


def test_anthropic_request_becomes_an_openai_request() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are a vision assistant."},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    {"type": "text", "text": "Compare these."},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "They differ."},
                ],
            },
        ],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_k": 40,
        "stream": True,
        "metadata": {"user_id": "u-1"},
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "tools": [{"name": "now", "input_schema": {"type": "object", "properties": {}}}],
    }
    assert from_anthropic_request(body) == {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are a vision assistant.\n\nBe brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                    {"type": "text", "text": "Compare these."},
                ],
            },
            {"role": "assistant", "content": "They differ."},
        ],
        "max_completion_tokens": 1024,
        "stop": ["END"],
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-1",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "now",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "system", "content": "x"}]}, "unknown role 'system'"),
        (
            {"messages": [user("x")], "tools": [{"type": "web_search_20250305", "name": "w"}]},
            "server tool 'web_search_20250305'",
        ),
    ],
)
def test_untranslatable_anthropic_requests_raise(body: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslationError, match=message):
        from_anthropic_request(body)


# --- OpenAI response -> Anthropic response -------------------------------------------------------


def chat_completion(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
    }


def test_chat_completion_becomes_an_anthropic_message() -> None:
    resp = chat_completion(
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [call("call_9", "get_weather", '{"city":"Oslo"}')],
        },
        "tool_calls",
    )
    assert to_anthropic_response(resp, "claude-sonnet-4-5") == {
        "id": "chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 36,
            "output_tokens": 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 64,
        },
    }


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish_reason: str, stop_reason: str) -> None:
    resp = chat_completion({"role": "assistant", "content": "x"}, finish_reason)
    assert to_anthropic_response(resp, "m")["stop_reason"] == stop_reason


# --- OpenAI chunks -> Anthropic stream -----------------------------------------------------------


def openai_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def tool_delta(index: int, arguments: str, **head: str) -> dict[str, Any]:
    function = {"arguments": arguments}
    if "name" in head:
        function["name"] = head["name"]
    entry: dict[str, Any] = {"index": index, "function": function}
    if "id" in head:
        entry.update(id=head["id"], type="function")
    return {"tool_calls": [entry]}


OPENAI_TOOL_STREAM = [
    openai_chunk({"role": "assistant", "content": ""}),
    openai_chunk({"content": "Checking"}),
    openai_chunk({"content": " the weather."}),
    openai_chunk(tool_delta(0, "", id="call_1", name="get_weather")),
    openai_chunk(tool_delta(0, '{"city": ')),
    openai_chunk(tool_delta(0, '"Paris"}')),
    openai_chunk(tool_delta(1, '{"city": "Rome"}', id="call_2", name="get_weather")),
    openai_chunk({}, "tool_calls"),
    {
        **openai_chunk({}),
        "choices": [],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 30,
            "total_tokens": 80,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    },
]


def run_reverse_stream(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    stream = OpenAIToAnthropicStream("smart", input_tokens=45)
    events = [event for chunk in chunks for event in stream.feed(chunk)]
    return events + stream.finish()


def test_reverse_stream_emits_a_well_formed_event_sequence() -> None:
    events = run_reverse_stream(OPENAI_TOOL_STREAM)
    assert [(name, data.get("index")) for name, data in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert all(name == data["type"] for name, data in events)
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 30, "input_tokens": 40, "cache_read_input_tokens": 10},
    }


def test_reverse_stream_closes_on_finish_when_no_usage_chunk_arrives() -> None:
    stream = OpenAIToAnthropicStream("smart", input_tokens=7)
    events = stream.feed(openai_chunk({"content": "Hi"}))
    events += stream.feed(openai_chunk({}, "length"))
    assert events[-1] == ("content_block_stop", {"type": "content_block_stop", "index": 0})
    closing = stream.finish()
    assert [name for name, _ in closing] == ["message_delta", "message_stop"]
    assert closing[0][1]["delta"]["stop_reason"] == "max_tokens"
    assert stream.finish() == []
    assert stream.feed(openai_chunk({"content": "late"})) == []


def anthropic_client_reading(events: list[tuple[str, dict[str, Any]]]) -> anthropic.Anthropic:
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)

    def respond(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, content=body.encode())

    transport = httpx2.MockTransport(respond)
    return anthropic.Anthropic(
        api_key="test",
        base_url="http://router.test",
        http_client=httpx2.Client(transport=transport),
    )


def test_official_anthropic_client_accumulates_the_reverse_stream() -> None:
    client = anthropic_client_reading(run_reverse_stream(OPENAI_TOOL_STREAM))
    with client.messages.stream(
        model="smart", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()

    assert "".join(texts) == "Checking the weather."
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Checking the weather."  # type: ignore[union-attr]
    assert [(b.id, b.name, b.input) for b in message.content[1:]] == [  # type: ignore[union-attr]
        ("call_1", "get_weather", {"city": "Paris"}),
        ("call_2", "get_weather", {"city": "Rome"}),
    ]
    assert message.stop_reason == "tool_use"
    assert message.model == "smart"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (40, 30)
    assert message.usage.cache_read_input_tokens == 10


def test_official_anthropic_client_accepts_an_empty_reverse_stream() -> None:
    stream = OpenAIToAnthropicStream("smart")
    client = anthropic_client_reading(stream.finish())
    with client.messages.stream(
        model="smart", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    ) as reading:
        message = reading.get_final_message()
    assert message.content == []
    assert message.stop_reason == "end_turn"
