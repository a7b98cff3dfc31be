"""The loopback fake upstream, driven by the official OpenAI and Anthropic clients.

The `upstream` fixture (conftest.py) is one shared server, reset before each test.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import urllib.error
import urllib.request

import anthropic
import httpx2
import openai
import pytest

from pointsman.testing import Behaviour, FakeUpstream

USER_HI = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
CLAUDE_WEATHER_TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}


def gpt(upstream: FakeUpstream, name: str = "dep-a", **options: float) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{upstream.url}/{name}/v1", api_key="x", max_retries=0, **options
    )


def claude(upstream: FakeUpstream, name: str = "dep-b", **options: float) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{upstream.url}/{name}", api_key="x", max_retries=0, **options
    )


def post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- Answers ----------------------------------------------------------------------------------


def test_openai_answer_echoes_a_short_prompt_and_counts_usage(upstream: FakeUpstream) -> None:
    answer = gpt(upstream).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "system", "content": "Be brief."}, *USER_HI],
    )

    assert answer.model == "gpt-test"
    assert answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.content == "Simulated answer from dep-a. You said: hello there"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == math.ceil(len("Be brief.hello there") / 4)
    assert answer.usage.completion_tokens == 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 8


def test_openai_stream_sends_one_chunk_per_word_then_usage(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(reply="one two three"))

    chunks = list(
        gpt(upstream).chat.completions.create(
            model="m", messages=USER_HI, stream=True, stream_options={"include_usage": True}
        )
    )

    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert words == ["one", " two", " three"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_anthropic_answer_has_message_shape_and_usage(upstream: FakeUpstream) -> None:
    message = claude(upstream).messages.create(
        model="claude-test", max_tokens=100, system="Be brief.", messages=USER_HI
    )

    assert message.id.startswith("msg_")
    assert message.model == "claude-test"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Simulated answer from dep-b. You said: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == math.ceil(len("Be brief.hello there") / 4)
    assert message.usage.output_tokens == 8


def test_anthropic_stream_delivers_the_full_event_sequence(upstream: FakeUpstream) -> None:
    upstream.set("dep-b", Behaviour(reply="one two three"))

    with claude(upstream).messages.stream(model="m", max_tokens=100, messages=USER_HI) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()

    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == 3
    assert final.content[0].type == "text" and final.content[0].text == "one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


def test_image_parts_count_85_tokens_each(upstream: FakeUpstream) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    content = [{"type": "text", "text": "abcd"}, image, image]

    answer = gpt(upstream).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": content}],  # type: ignore[misc,list-item]
    )

    assert answer.usage is not None and answer.usage.prompt_tokens == 1 + 2 * 85


def test_max_tokens_cuts_the_reply_in_both_apis(upstream: FakeUpstream) -> None:
    for name in ("dep-a", "dep-b"):
        upstream.set(name, Behaviour(reply="one two three four five"))

    answer = gpt(upstream).chat.completions.create(model="m", messages=USER_HI, max_tokens=2)
    message = claude(upstream).messages.create(model="m", max_tokens=3, messages=USER_HI)

    assert answer.choices[0].message.content == "one two"
    assert answer.choices[0].finish_reason == "length"
    assert message.content[0].type == "text" and message.content[0].text == "one two three"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_logprobs_come_one_per_word_when_asked(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(reply="one two", logprob=-0.5))

    answer = gpt(upstream).chat.completions.create(model="m", messages=USER_HI, logprobs=True)

    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [(e.token, e.logprob) for e in logprobs.content] == [("one", -0.5), (" two", -0.5)]


def test_latency_delays_the_answer(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(latency_s=0.2))

    started = time.perf_counter()
    gpt(upstream).chat.completions.create(model="m", messages=USER_HI)

    assert time.perf_counter() - started >= 0.2


def test_streaming_is_paced_by_tokens_per_s(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(reply="a b c d e f", tokens_per_s=50))

    started = time.perf_counter()
    list(gpt(upstream).chat.completions.create(model="m", messages=USER_HI, stream=True))

    assert time.perf_counter() - started >= 5 / 50


# --- Tool calls -------------------------------------------------------------------------------


def test_openai_calls_the_forced_tool_then_answers_its_result(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(tool_arguments='{"city": "Paris"}'))
    other = {"type": "function", "function": {"name": "other", "parameters": {}}}
    forced = {"type": "function", "function": {"name": "get_weather"}}

    answer = gpt(upstream).chat.completions.create(
        model="m", messages=USER_HI, tools=[other, WEATHER_TOOL], tool_choice=forced
    )
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    after = gpt(upstream).chat.completions.create(
        model="m",
        tools=[other, WEATHER_TOOL],
        messages=[
            *USER_HI,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )

    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert answer.usage is not None and answer.usage.completion_tokens == 10
    assert after.choices[0].finish_reason == "stop"
    assert after.choices[0].message.content


def test_openai_streamed_tool_call_accumulates_into_the_arguments(upstream: FakeUpstream) -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    upstream.set("dep-a", Behaviour(tool_arguments=arguments))

    chunks = list(
        gpt(upstream).chat.completions.create(
            model="m", messages=USER_HI, tools=[WEATHER_TOOL], stream=True
        )
    )

    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == arguments
    assert len(deltas) > 2
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_or_tool_call_off_answers_text(upstream: FakeUpstream) -> None:
    refused = gpt(upstream).chat.completions.create(
        model="m", messages=USER_HI, tools=[WEATHER_TOOL], tool_choice="none"
    )
    upstream.set("dep-a", Behaviour(tool_call=False))
    switched_off = gpt(upstream).chat.completions.create(
        model="m", messages=USER_HI, tools=[WEATHER_TOOL]
    )

    assert refused.choices[0].message.tool_calls is None
    assert switched_off.choices[0].finish_reason == "stop"


def test_anthropic_uses_the_tool_then_answers_its_result(upstream: FakeUpstream) -> None:
    upstream.set("dep-b", Behaviour(tool_arguments='{"city": "Paris"}'))

    message = claude(upstream).messages.create(
        model="m", max_tokens=100, messages=USER_HI, tools=[CLAUDE_WEATHER_TOOL]
    )
    use = message.content[0]
    assert use.type == "tool_use"
    after = claude(upstream).messages.create(
        model="m",
        max_tokens=100,
        tools=[CLAUDE_WEATHER_TOOL],
        messages=[
            *USER_HI,
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )

    assert message.stop_reason == "tool_use"
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    assert use.id.startswith("toolu_")
    assert after.stop_reason == "end_turn" and after.content[0].type == "text"


def test_anthropic_streamed_tool_use_accumulates_into_the_input(upstream: FakeUpstream) -> None:
    upstream.set("dep-b", Behaviour(tool_arguments='{"city": "Paris", "unit": "celsius"}'))

    with claude(upstream).messages.stream(
        model="m", max_tokens=100, messages=USER_HI, tools=[CLAUDE_WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_message()

    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"city": "Paris", "unit": "celsius"}


# --- Errors -----------------------------------------------------------------------------------

OPENAI_ERRORS = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    429: openai.RateLimitError,
    500: openai.InternalServerError,
    503: openai.InternalServerError,
}
ANTHROPIC_ERRORS = {
    400: (anthropic.BadRequestError, "invalid_request_error"),
    401: (anthropic.AuthenticationError, "authentication_error"),
    403: (anthropic.PermissionDeniedError, "permission_error"),
    404: (anthropic.NotFoundError, "not_found_error"),
    413: (anthropic.RequestTooLargeError, "request_too_large"),
    429: (anthropic.RateLimitError, "rate_limit_error"),
    500: (anthropic.InternalServerError, "api_error"),
    529: (anthropic.OverloadedError, "overloaded_error"),
}


@pytest.mark.parametrize("status", OPENAI_ERRORS)
def test_openai_error_status_raises_the_matching_exception(
    upstream: FakeUpstream, status: int
) -> None:
    upstream.set("dep-a", Behaviour(status=status))

    with pytest.raises(OPENAI_ERRORS[status]) as raised:
        gpt(upstream).chat.completions.create(model="m", messages=USER_HI)

    assert raised.value.status_code == status
    assert isinstance(raised.value.body, dict) and raised.value.body["message"]
    assert set(raised.value.body) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("status", ANTHROPIC_ERRORS)
def test_anthropic_error_status_raises_the_matching_exception(
    upstream: FakeUpstream, status: int
) -> None:
    exception, error_type = ANTHROPIC_ERRORS[status]
    upstream.set("dep-b", Behaviour(status=status))

    with pytest.raises(exception) as raised:
        claude(upstream).messages.create(model="m", max_tokens=10, messages=USER_HI)

    assert raised.value.status_code == status
    assert raised.value.body["type"] == "error"  # type: ignore[index]
    assert raised.value.body["error"]["type"] == error_type  # type: ignore[index]


def test_rate_limit_carries_retry_after(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(status=429, retry_after=2))
    upstream.set("dep-b", Behaviour(status=429, retry_after=0.5))

    with pytest.raises(openai.RateLimitError) as gpt_error:
        gpt(upstream).chat.completions.create(model="m", messages=USER_HI)
    with pytest.raises(anthropic.RateLimitError) as claude_error:
        claude(upstream).messages.create(model="m", max_tokens=10, messages=USER_HI)

    assert gpt_error.value.response.headers["retry-after"] == "2"
    assert claude_error.value.response.headers["retry-after"] == "0.5"


def test_too_long_prompt_gets_the_context_length_error(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(context_window=10))
    upstream.set("dep-b", Behaviour(context_window=10))
    long_prompt = [{"role": "user", "content": "x" * 100}]

    with pytest.raises(openai.BadRequestError) as gpt_error:
        gpt(upstream).chat.completions.create(model="m", messages=long_prompt)
    with pytest.raises(anthropic.BadRequestError) as claude_error:
        claude(upstream).messages.create(model="m", max_tokens=10, messages=long_prompt)
    fits = gpt(upstream).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )

    assert gpt_error.value.code == "context_length_exceeded"
    assert "maximum context length is 10 tokens" in gpt_error.value.message
    assert "resulted in 25 tokens" in gpt_error.value.message
    assert "prompt is too long: 25 tokens > 10 maximum" in claude_error.value.message
    assert fits.choices[0].finish_reason == "stop"


def test_anthropic_request_without_max_tokens_is_rejected(upstream: FakeUpstream) -> None:
    status, body = post(f"{upstream.url}/dep-b/v1/messages", {"model": "m", "messages": USER_HI})

    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in body["error"]["message"]  # type: ignore[index]


def test_failure_rate_fails_that_share_repeatably_with_a_seed(upstream: FakeUpstream) -> None:
    def outcomes() -> list[int]:
        upstream.reset()
        upstream.set("dep-a", Behaviour(failure_rate=0.5, failure_status=503))
        return [
            post(f"{upstream.url}/dep-a/v1/chat/completions", {"model": "m", "messages": USER_HI})[
                0
            ]
            for _ in range(40)
        ]

    first, second = outcomes(), outcomes()

    assert first == second
    assert set(first) == {200, 503}
    assert 8 <= first.count(503) <= 32


# --- Scripts, counters, recorded requests -----------------------------------------------------


def test_script_is_consumed_in_order_then_the_base_behaviour_applies(
    upstream: FakeUpstream,
) -> None:
    upstream.set(
        "dep-a",
        Behaviour(
            reply="base",
            script=[
                Behaviour(status=500),
                Behaviour(status=429),
                Behaviour(reply="third"),
            ],
        ),
    )
    client = gpt(upstream)

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=USER_HI)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=USER_HI)
    third = client.chat.completions.create(model="m", messages=USER_HI)
    fourth = client.chat.completions.create(model="m", messages=USER_HI)

    assert third.choices[0].message.content == "third"
    assert fourth.choices[0].message.content == "base"
    assert upstream.calls("dep-a") == 4


def test_calls_and_received_requests_are_kept_per_deployment(upstream: FakeUpstream) -> None:
    gpt(upstream).chat.completions.create(
        model="m",
        messages=USER_HI,
        extra_body={"x_custom": {"keep": [1, 2]}},
        extra_headers={"X-Trace": "abc"},
    )
    gpt(upstream, "dep-c").models.list()

    received = upstream.requests("dep-a")
    assert (
        upstream.calls("dep-a") == 1
        and upstream.calls("dep-c") == 1
        and upstream.calls("dep-z") == 0
    )
    assert received[0].path == "/dep-a/v1/chat/completions"
    assert received[0].body["x_custom"] == {"keep": [1, 2]}
    assert received[0].body["messages"] == USER_HI
    assert received[0].headers["x-trace"] == "abc"
    assert received[0].headers["authorization"] == "Bearer x"


def test_reset_forgets_behaviours_counters_and_requests(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(status=500))
    with pytest.raises(openai.InternalServerError):
        gpt(upstream).chat.completions.create(model="m", messages=USER_HI)

    upstream.reset()

    assert upstream.calls("dep-a") == 0 and upstream.requests("dep-a") == []
    assert upstream.behaviour("dep-a") == Behaviour()
    assert gpt(upstream).chat.completions.create(model="m", messages=USER_HI).choices


def test_azure_paths_models_and_healthz_are_served(upstream: FakeUpstream) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=f"{upstream.url}/dep-az",
        api_key="x",
        api_version="2024-06-01",
        max_retries=0,
    )

    answer = azure.chat.completions.create(model="gpt-4o", messages=USER_HI)
    models = gpt(upstream).models.list()
    claude_models = claude(upstream).models.list()
    with urllib.request.urlopen(f"{upstream.url}/healthz", timeout=5) as health:
        healthy = health.status

    assert answer.choices[0].message.content
    assert (
        upstream.requests("dep-az")[0].path == "/dep-az/openai/deployments/gpt-4o/chat/completions"
    )
    assert [m.id for m in models] == ["dep-a"]
    assert [m.id for m in claude_models] == ["dep-b"]
    assert healthy == 200


# --- Connection faults ------------------------------------------------------------------------


def test_reset_drops_the_connection_without_an_answer(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(reset=True))
    upstream.set("dep-b", Behaviour(reset=True))

    with pytest.raises(openai.APIConnectionError):
        gpt(upstream).chat.completions.create(model="m", messages=USER_HI)
    with pytest.raises(anthropic.APIConnectionError):
        claude(upstream).messages.create(model="m", max_tokens=10, messages=USER_HI)


def test_hang_times_out_the_client_while_other_requests_are_answered(
    upstream: FakeUpstream,
) -> None:
    upstream.set("dep-a", Behaviour(hang=True))
    failures: list[Exception] = []

    def wait_for_hung_answer() -> None:
        try:
            gpt(upstream, timeout=1.0).chat.completions.create(model="m", messages=USER_HI)
        except Exception as error:
            failures.append(error)

    hung = threading.Thread(target=wait_for_hung_answer)
    hung.start()
    time.sleep(0.1)
    meanwhile = gpt(upstream, "dep-other").chat.completions.create(model="m", messages=USER_HI)
    answered_while_hung = hung.is_alive()
    hung.join()

    assert meanwhile.choices[0].message.content
    assert answered_while_hung
    assert len(failures) == 1 and isinstance(failures[0], openai.APITimeoutError)


def test_openai_stream_fails_mid_way_after_the_given_chunks(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(reply="one two three four", fail_after_chunks=2))
    received: list[str] = []

    with pytest.raises(openai.APIConnectionError):
        for chunk in gpt(upstream).chat.completions.create(
            model="m", messages=USER_HI, stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")

    assert received == ["one", " two"]


def test_stream_failing_after_zero_chunks_sends_headers_only(upstream: FakeUpstream) -> None:
    upstream.set("dep-a", Behaviour(fail_after_chunks=0))

    stream = gpt(upstream).chat.completions.create(model="m", messages=USER_HI, stream=True)

    assert stream.response.status_code == 200
    with pytest.raises(openai.APIConnectionError):
        list(stream)


def test_anthropic_stream_fails_mid_way_after_the_given_chunks(upstream: FakeUpstream) -> None:
    upstream.set("dep-b", Behaviour(reply="one two three four", fail_after_chunks=1))
    received: list[str] = []

    # The anthropic client lets its transport's error through mid-stream instead of wrapping it.
    with (
        pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)),
        claude(upstream).messages.stream(model="m", max_tokens=10, messages=USER_HI) as stream,
    ):
        for text in stream.text_stream:
            received.append(text)

    assert received == ["one"]


# --- Running inside an event loop -------------------------------------------------------------


def test_astart_serves_inside_a_running_loop() -> None:
    async def scenario() -> str | None:
        async with FakeUpstream() as upstream:
            upstream.set("dep-a", Behaviour(reply="async hello"))
            client = openai.AsyncOpenAI(base_url=f"{upstream.url}/dep-a/v1", api_key="x")
            answer = await client.chat.completions.create(model="m", messages=USER_HI)
            await client.close()
            return answer.choices[0].message.content

    assert asyncio.run(scenario()) == "async hello"
