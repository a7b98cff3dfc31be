"""provider: gemini. The loopback fake is held to Google's official client (google-genai), then the
adapter is driven through `pointsman serve` with the official openai client."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from pointsman.testing.gemini_upstream import Behaviour, GeminiUpstream

KEY = "gemini-test-key"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "today's weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def last_record(server: Any) -> dict[str, Any]:
    """The newest record; a streamed request is recorded just after its last byte is sent."""
    deadline = time.monotonic() + 5
    while not (records := server.records()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return records[-1]


@pytest.fixture(scope="module")
def _gemini_server() -> Iterator[GeminiUpstream]:
    with GeminiUpstream(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def gemini(_gemini_server: GeminiUpstream) -> GeminiUpstream:
    _gemini_server.reset()
    return _gemini_server


def sdk(fake: GeminiUpstream, key: str = KEY) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=fake.url))


@pytest.fixture
def google(gemini: GeminiUpstream) -> genai.Client:
    """The official client on the fake (held by the test: the SDK closes its pool when collected)."""
    return sdk(gemini)


# --- the fake speaks Gemini's wire protocol, as the official SDK reads it ------------------------


def test_fake_answers_the_official_sdk_with_text_usage_and_finish_reason(gemini, google):
    answer = google.models.generate_content(
        model="gemini-2.5-flash",
        contents="Hello there",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=100),
    )
    assert answer.text == "Simulated answer from gemini-2.5-flash. You said: Hello there"
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.usage_metadata.candidates_token_count == 8
    assert answer.usage_metadata.total_token_count == answer.usage_metadata.prompt_token_count + 8
    sent = gemini.requests("gemini-2.5-flash")[0]
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.body["systemInstruction"]["parts"] == [{"text": "Be brief."}]


def test_fake_streams_sse_chunks_the_sdk_joins_with_usage_on_the_last(gemini, google):
    chunks = list(google.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi you"))
    assert "".join(c.text for c in chunks) == "Simulated answer from gemini-2.5-flash. You said: Hi you"
    assert len(chunks) > 3
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == 8


def test_fake_calls_a_declared_function_and_reads_its_response(gemini, google):
    client = google
    declaration = types.FunctionDeclaration(
        name="get_weather", parameters_json_schema=TOOL["function"]["parameters"]
    )
    gemini.set("gemini-2.5-flash", Behaviour(tool_arguments='{"city": "Paris"}'))
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[declaration])])
    first = client.models.generate_content(
        model="gemini-2.5-flash", contents="Weather in Paris?", config=config
    )
    assert first.function_calls[0].name == "get_weather"
    assert first.function_calls[0].args == {"city": "Paris"}
    second = client.models.generate_content(
        model="gemini-2.5-flash",
        contents=[
            types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
            first.candidates[0].content,
            types.Content(
                role="user",
                parts=[types.Part.from_function_response(name="get_weather", response={"sky": "sunny"})],
            ),
        ],
        config=config,
    )
    assert second.text.startswith("Simulated answer from gemini-2.5-flash")


def test_fake_counts_inline_images_the_sdk_sends(gemini, google):
    answer = google.models.generate_content(
        model="gemini-2.5-flash",
        contents=[types.Part.from_bytes(data=base64.b64decode(PNG), mime_type="image/png"), "What is this?"],
    )
    assert "I see 1 image(s)" in answer.text
    assert answer.usage_metadata.prompt_token_count > 85


def test_fake_errors_read_as_google_errors_with_retry_info(gemini, google):
    gemini.set("busy", Behaviour(status=429, retry_after=7))
    with pytest.raises(genai_errors.ClientError) as caught:
        google.models.generate_content(model="busy", contents="x")
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    assert caught.value.details["error"]["details"][0]["retryDelay"] == "7s"
    gemini.set("down", Behaviour(status=503))
    with pytest.raises(genai_errors.ServerError) as down:
        google.models.generate_content(model="down", contents="x")
    assert down.value.status == "UNAVAILABLE"
    wrong_key = sdk(gemini, key="wrong")
    with pytest.raises(genai_errors.ClientError) as bad_key:
        wrong_key.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert bad_key.value.code == 400 and "API key not valid" in bad_key.value.message


# --- the adapter, through pointsman serve, with the official openai client ----------------------


def gemini_deployment(fake: GeminiUpstream, name: str, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "provider": "gemini",
        "model": name,
        "api_base": fake.url,
        "api_key": KEY,
        "capabilities": {"vision": True},
        "timeouts": {"connect": 2, "first_byte": 2, "inter_chunk": 2, "total": 5},
    }
    entry.update(fields)
    return entry


def config(fake: GeminiUpstream, **first: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0, "max_retry_wait_s": 0.0},
        "deployments": [
            gemini_deployment(fake, "gemini-2.5-flash", **first),
            gemini_deployment(fake, "gemini-2.5-pro"),
        ],
        "models": {"auto": {"deployments": ["gemini-2.5-flash", "gemini-2.5-pro"]}},
    }


def test_chat_completion_through_gemini_is_translated_costed_from_the_catalogue(gemini, serve):
    server = serve(config(gemini))
    answer = server.client().chat.completions.create(
        model="auto",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second one"},
        ],
        max_tokens=50,
        temperature=0.2,
    )
    assert answer.choices[0].message.content == "Simulated answer from gemini-2.5-flash. You said: second one"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens == 8
    sent = gemini.requests("gemini-2.5-flash")[0].body
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50}
    record = last_record(server)
    # gemini-2.5-flash is priced by the catalogue (no price: in the config).
    expected = (answer.usage.prompt_tokens * 0.30 + answer.usage.completion_tokens * 2.50) / 1e6
    assert record["cost"] == pytest.approx(expected)


def test_max_tokens_cut_reads_as_length(gemini, serve):
    answer = (
        serve(config(gemini))
        .client()
        .chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "Simulated answer"


def test_streamed_gemini_answer_arrives_as_openai_chunks_with_usage(gemini, serve):
    server = serve(config(gemini))
    stream = server.client().chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated answer from gemini-2.5-flash. You said: stream please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 8
    assert "alt=sse" in gemini.requests("gemini-2.5-flash")[0].path
    assert last_record(server)["completion_tokens"] == 8


def test_tool_call_round_trip_through_gemini(gemini, serve):
    gemini.set("gemini-2.5-flash", Behaviour(tool_arguments='{"city": "Paris"}'))
    client = serve(config(gemini)).client()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="auto", messages=messages, tools=[TOOL], tool_choice="auto")
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
    ]
    second = client.chat.completions.create(model="auto", messages=messages, tools=[TOOL])
    assert second.choices[0].message.content.startswith("Simulated answer")
    sent = gemini.requests("gemini-2.5-flash")
    assert sent[0].body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert sent[0].body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    contents = sent[1].body["contents"]
    assert contents[1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert contents[2]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"sky": "sunny"},
    }


def test_streamed_tool_call_through_gemini(gemini, serve):
    gemini.set("gemini-2.5-flash", Behaviour(tool_arguments='{"city": "Oslo"}'))
    stream = (
        serve(config(gemini))
        .client()
        .chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Weather?"}], tools=[TOOL], stream=True
        )
    )
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or ()]
    assert calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_image_data_url_reaches_gemini_inline(gemini, serve):
    answer = (
        serve(config(gemini))
        .client()
        .chat.completions.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                }
            ],
        )
    )
    assert "I see 1 image(s)" in answer.choices[0].message.content
    part = gemini.requests("gemini-2.5-flash")[0].body["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/png", "data": PNG}}


def test_image_by_remote_url_is_a_clear_client_error_not_a_failover(gemini, serve):
    server = serve(config(gemini))
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().chat.completions.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    ],
                }
            ],
        )
    assert "data:" in caught.value.message
    assert gemini.calls("gemini-2.5-pro") == 0


def test_rate_limited_gemini_with_retry_info_fails_over_and_cools_down(gemini, serve):
    gemini.set("gemini-2.5-flash", Behaviour(status=429, retry_after=30))
    server = serve(config(gemini))
    client = server.client()
    first = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert first.headers["x-pointsman-model"] == "gemini-2.5-pro"
    # RetryInfo's 30 s cool-down: the next request does not even try the rate-limited model.
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "again"}])
    assert gemini.calls("gemini-2.5-flash") == 1
    assert gemini.calls("gemini-2.5-pro") == 2


def test_gemini_server_errors_fail_over(gemini, serve):
    gemini.set("gemini-2.5-flash", Behaviour(status=500))
    answer = (
        serve(config(gemini))
        .client()
        .chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    )
    assert answer.choices[0].message.content.startswith("Simulated answer from gemini-2.5-pro")


@pytest.mark.parametrize("body", [b'{"hello":"world"}', b'{"candidates":"x"}', b'{"candidates":[1]}'])
def test_a_gemini_200_that_is_not_an_answer_fails_over(gemini, serve, body):
    gemini.set("gemini-2.5-flash", Behaviour(body=body))
    server = serve(config(gemini))
    answer = server.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content.startswith("Simulated answer from gemini-2.5-pro")
    assert "unreadable" in last_record(server)["attempts"][0]["error"]


def test_a_wrong_gemini_key_is_the_deployments_fault_and_fails_over(gemini, serve):
    server = serve(config(gemini, api_key="not-the-key"))
    answer = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.headers["x-pointsman-model"] == "gemini-2.5-pro"
    assert "API key not valid" in str(last_record(server)["attempts"])


def test_request_gemini_refuses_goes_back_to_the_client_as_400(gemini, serve):
    server = serve(config(gemini))
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(model="auto", messages=[{"role": "user", "content": ""}])
    assert gemini.calls("gemini-2.5-pro") == 0


def test_a_gemini_stream_cut_midway_is_an_error_to_the_client_not_a_silent_end(gemini, serve):
    gemini.set("gemini-2.5-flash", Behaviour(fail_after_chunks=2, reply="a b c d e f g h"))
    server = serve(config(gemini))
    with pytest.raises(openai.APIError):
        for _ in server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass
    assert last_record(server)["status"] == 502


def test_a_gemini_stream_refused_before_any_byte_fails_over(gemini, serve):
    gemini.set("gemini-2.5-flash", Behaviour(status=503))
    chunks = list(
        serve(config(gemini))
        .client()
        .chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Simulated answer from gemini-2.5-pro")


def test_json_mode_and_a_forced_function_reach_gemini_as_its_own_settings(gemini, serve):
    client = serve(config(gemini)).client()
    client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "give json"}],
        response_format={"type": "json_object"},
        stop=["END"],
    )
    client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    first, second = (r.body for r in gemini.requests("gemini-2.5-flash"))
    assert first["generationConfig"] == {"responseMimeType": "application/json", "stopSequences": ["END"]}
    assert second["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


def test_a_prompt_too_long_for_gemini_fails_over_to_a_larger_window(gemini, serve):
    gemini.set("gemini-2.5-flash", Behaviour(context_window=50))
    cfg = config(gemini)
    cfg["deployments"][0]["context_window"] = 100_000
    cfg["deployments"][1]["context_window"] = 1_000_000
    answer = serve(cfg).client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "word " * 400}]
    )
    assert answer.headers["x-pointsman-model"] == "gemini-2.5-pro"
    assert gemini.calls("gemini-2.5-flash") == 1
