"""The inbound OpenAI Responses API (`POST /v1/responses`), driven by the official `openai`
client through a served pointsman, routed to chat-completions, Anthropic and Responses-API
deployments on the loopback fake upstream."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from openai import OpenAI

from pointsman.testing import Behaviour
from tests.conftest import deployment

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def config(upstream: Any, **extra: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0, "cooldown_s": 0.0},
        "deployments": [
            deployment(upstream, "gpt"),
            deployment(upstream, "claude", provider="anthropic"),
            deployment(upstream, "native", api="responses"),
        ],
        "models": {
            "auto": {"deployments": ["gpt", "claude"]},
            "claude-first": {"deployments": ["claude", "gpt"]},
            "native-first": {"deployments": ["native", "gpt"]},
        },
        **extra,
    }


def post(server: Any, body: Any, path: str = "/v1/responses") -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + path, data=data, method="POST", headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


# -- plain, streaming, function calling ------------------------------------------------------------


def test_plain_response_through_a_chat_completions_deployment(upstream, serve):
    server = serve(config(upstream))
    raw = server.client().responses.with_raw_response.create(
        model="auto",
        input="hello there",
        instructions="Be brief.",
        max_output_tokens=50,
        temperature=0.3,
        service_tier="flex",
        text={"verbosity": "low"},
    )
    response = raw.parse()
    assert raw.headers["x-pointsman-model"] == "gpt"
    assert raw.headers["x-pointsman-route"] and raw.headers["x-pointsman-request-id"].startswith("req_")
    assert response.object == "response" and response.status == "completed" and response.model == "auto"
    assert response.output_text == "Simulated answer from gpt. You said: hello there"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 8
    assert response.usage.total_tokens == response.usage.input_tokens + 8
    sent = upstream.requests("gpt")[0]
    assert sent.path == "/gpt/v1/chat/completions"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]
    assert sent.body["max_completion_tokens"] == 50 and sent.body["temperature"] == 0.3
    assert sent.body["service_tier"] == "flex" and sent.body["verbosity"] == "low"
    assert "stream" not in sent.body and "metadata" not in sent.body
    record = server.records()[-1]
    assert record["request_id"] == raw.headers["x-pointsman-request-id"]
    assert record["requested_model"] == "auto" and record["deployment"] == "gpt" and record["status"] == 200
    assert record["prompt_tokens"] == response.usage.input_tokens and record["completion_tokens"] == 8
    assert record["cost"] == pytest.approx((record["prompt_tokens"] * 1.0 + 8 * 2.0) / 1e6)


def test_streaming_gives_typed_events_ending_in_completed_with_usage(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(reply="one two three"))
    events = list(server.client().responses.create(model="auto", input="count", stream=True))
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"
    assert events[7].text == "one two three"
    final = events[-1].response
    assert final.status == "completed" and final.output_text == "one two three"
    assert final.usage is not None and final.usage.output_tokens == 3 and final.usage.input_tokens > 0
    assert events[0].response.status == "in_progress" and events[0].response.id == final.id
    record = server.records()[-1]
    assert record["stream"] == 1 and record["status"] == 200 and record["completion_tokens"] == 3


def test_function_calling_round_trip(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    upstream.set("gpt", Behaviour(tool_arguments='{"city": "Paris"}', reply="It is sunny in Paris."))
    first = client.responses.create(model="auto", input="Weather in Paris?", tools=[WEATHER])
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id
    offered = upstream.requests("gpt")[0].body["tools"]
    assert offered == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather for a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]

    second = client.responses.create(
        model="auto",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            *first.output,  # the model's own items, sent back as they came
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'},
        ],
    )
    assert second.output_text == "It is sunny in Paris."
    messages = upstream.requests("gpt")[1].body["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": call.arguments},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"sky": "sunny"}'}


def test_streamed_function_call_arguments_arrive_as_deltas(upstream, serve):
    server = serve(config(upstream))
    arguments = '{"city": "Paris", "unit": "celsius"}'
    upstream.set("gpt", Behaviour(tool_arguments=arguments))
    events = list(
        server.client().responses.create(model="auto", input="weather?", tools=[WEATHER], stream=True)
    )
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1 and "".join(deltas) == arguments
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == arguments and done.name == "get_weather"
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output[0].arguments == arguments and final.response.output[0].status == "completed"


def test_a_cut_off_answer_is_incomplete(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(reply=" ".join(["word"] * 16)))
    response = server.client().responses.create(model="gpt", input="count", max_output_tokens=16)
    assert response.status == "completed" and response.incomplete_details is None
    upstream.set("gpt", Behaviour(reply=" ".join(["word"] * 20)))
    response = server.client().responses.create(model="gpt", input="count", max_output_tokens=16)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


# -- Anthropic deployments and fallback ----------------------------------------------------------


def test_routed_to_an_anthropic_deployment(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    raw = client.responses.with_raw_response.create(
        model="claude-first", input="hello there", instructions="Be brief."
    )
    assert raw.headers["x-pointsman-model"] == "claude"
    assert raw.parse().output_text == "Simulated answer from claude. You said: hello there"
    sent = upstream.requests("claude")[0]
    assert sent.path == "/claude/v1/messages"
    assert sent.body["system"] == "Be brief." and sent.body["messages"][0]["role"] == "user"

    upstream.set("claude", Behaviour(tool_arguments='{"city": "Oslo"}'))
    events = list(
        client.responses.create(model="claude-first", input="weather?", tools=[WEATHER], stream=True)
    )
    assert "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta") == (
        '{"city": "Oslo"}'
    )
    assert events[-1].type == "response.completed" and events[-1].response.usage.input_tokens > 0


def test_falls_back_from_a_failing_chat_deployment_to_anthropic(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(status=500))
    raw = server.client().responses.with_raw_response.create(model="auto", input="hello there")
    assert raw.headers["x-pointsman-model"] == "claude"
    assert raw.parse().output_text.startswith("Simulated answer from claude")
    record = server.records()[-1]
    assert [a["deployment"] for a in record["attempts"]] == ["gpt", "claude"]
    assert record["attempts"][0]["status"] == 500 and record["deployment"] == "claude"


def test_streams_fall_back_from_a_failing_anthropic_deployment_to_chat(upstream, serve):
    server = serve(config(upstream))
    upstream.set("claude", Behaviour(status=529))
    with server.client().responses.with_streaming_response.create(
        model="claude-first", input="hello there", stream=True
    ) as raw:
        assert raw.headers["x-pointsman-model"] == "gpt"
        events = list(raw.parse())
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text.startswith("Simulated answer from gpt")
    assert upstream.calls("claude") == 1


def test_a_stream_broken_mid_way_ends_in_response_failed(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(reply="one two three four", fail_after_chunks=2))
    events = list(server.client().responses.create(model="gpt", input="count", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert "failed mid-stream" in events[-2].message
    assert events[-1].response.status == "failed" and events[-1].response.error.message == events[-2].message
    assert server.records()[-1]["status"] == 502


# -- deployments that speak the Responses API -------------------------------------------------------


def test_a_responses_deployment_gets_the_body_as_sent_and_its_answer_comes_back(upstream, serve):
    server = serve(config(upstream))
    raw = server.client().responses.with_raw_response.create(
        model="native-first",
        input="hello there",
        include=["reasoning.encrypted_content"],
        store=False,
        truncation="auto",
    )
    response = raw.parse()
    assert raw.headers["x-pointsman-model"] == "native"
    # The deployment's own Response, untouched: its id and model name.
    assert response.id.startswith("resp_fake") and response.model == "model-native"
    assert response.output_text == "Simulated answer from native. You said: hello there"
    sent = upstream.requests("native")[0]
    assert sent.path == "/native/v1/responses"
    assert sent.body == {
        "model": "model-native",
        "input": "hello there",
        "include": ["reasoning.encrypted_content"],
        "store": False,
        "truncation": "auto",
        "stream": False,
    }
    record = server.records()[-1]
    assert record["deployment"] == "native" and record["prompt_tokens"] > 0 and record["cost"] > 0


def test_a_responses_deployment_streams_and_fails_over_to_chat(upstream, serve):
    server = serve(config(upstream))
    events = list(server.client().responses.create(model="native-first", input="hi there", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Simulated answer from native. You said: hi there"
    assert events[-1].response.usage.output_tokens == 8
    assert upstream.requests("native")[0].body["stream"] is True

    upstream.set("native", Behaviour(status=503))
    raw = server.client().responses.with_raw_response.create(model="native-first", input="hi there")
    assert raw.headers["x-pointsman-model"] == "gpt"
    assert raw.parse().output_text.startswith("Simulated answer from gpt")


def test_chat_clients_reach_a_responses_deployment(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    completion = client.chat.completions.create(
        model="native",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi you"}],
    )
    assert completion.choices[0].message.content == "Simulated answer from native. You said: hi you"
    assert completion.usage.completion_tokens == 8
    sent = upstream.requests("native")[0].body
    assert sent["input"] == [
        {"type": "message", "role": "system", "content": "Be brief."},
        {"type": "message", "role": "user", "content": "hi you"},
    ]
    assert sent["store"] is False

    upstream.set("native", Behaviour(tool_arguments='{"city": "Rome"}'))
    stream = client.chat.completions.create(
        model="native",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[
            {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["parameters"]}}
        ],
        stream=True,
    )
    chunks = list(stream)
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert arguments == '{"city": "Rome"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_fake_responses_endpoint_parses_with_the_official_client(upstream):
    client = OpenAI(base_url=f"{upstream.url}/native/v1", api_key="sk-test", max_retries=0)
    response = client.responses.create(model="m", input="hello you", instructions="Be brief.")
    assert response.output_text == "Simulated answer from native. You said: hello you"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 8
    upstream.set("native", Behaviour(tool_arguments='{"city": "Paris"}'))
    [call] = client.responses.create(model="m", input="weather?", tools=[WEATHER]).output
    assert call.type == "function_call" and call.arguments == '{"city": "Paris"}'
    with client.responses.stream(model="m", input="weather?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    assert final.output[0].arguments == '{"city": "Paris"}'
    upstream.set("native", Behaviour(status=429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="m", input="hi")
    assert caught.value.response.headers["retry-after"] == "2"


# -- bad requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": "hi"}, "model", "Field required"),
        ({"model": "auto"}, "input", "Field required"),
        ({"model": "auto", "input": 5}, "input", "valid string"),
        ({"model": "auto", "input": []}, "input", "must not be an empty array"),
        (
            {"model": "auto", "input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "Field required",
        ),
        (
            {"model": "auto", "input": [{"type": "web_search_call", "id": "x"}]},
            "input[0]",
            "unsupported input item type",
        ),
        ({"model": "auto", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "'user'"),
        (
            {"model": "auto", "input": "hi", "tools": [{"type": "web_search"}]},
            "tools[0]",
            "only function tools",
        ),
        ({"model": "auto", "input": "hi", "temperature": 7}, "temperature", "less than or equal to 2"),
        ({"model": "auto", "input": "hi", "stream": "yes"}, "stream", "valid boolean"),
        ({"model": "auto", "input": "hi", "max_output_tokens": "64"}, "max_output_tokens", "valid integer"),
        ({"model": "auto", "input": [{"type": "reasoning", "summary": []}]}, "input", "holds no message"),
        (
            {"model": "auto", "input": "hi", "previous_response_id": "resp_1"},
            "previous_response_id",
            "does not store",
        ),
        (
            {"model": "auto", "input": "hi", "text": {"format": {"type": "json_schema"}}},
            "text.format",
            "needs `name`",
        ),
    ],
)
def test_bad_bodies_get_a_400_naming_the_field(upstream, serve, body, param, words):
    server = serve(config(upstream))
    status, headers, answer = post(server, body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["param"] == param
    assert words in answer["error"]["message"] and answer["error"]["message"].startswith(param)
    record = server.records()[-1]
    assert record["request_id"] == headers["x-pointsman-request-id"] and record["status"] == 400
    assert upstream.calls("gpt") == 0


def test_invalid_json_and_wrong_models_are_client_errors(upstream, serve):
    server = serve(config(upstream))
    status, _, answer = post(server, b"{not json")
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        server.client().responses.create(model="nope", input="hi")
    assert server.records()[-1]["status"] == 404
    # An upstream's 400 about the request goes back to the client and leaves its health alone.
    upstream.set("gpt", Behaviour(status=400))
    with pytest.raises(openai.BadRequestError, match="gpt rejected the request"):
        server.client().responses.create(model="gpt", input="hi")
    assert server.router.state.circuit("gpt") == "closed"


def test_static_api_keys_guard_the_responses_endpoint(upstream, serve):
    server = serve(config(upstream, server={"api_keys": ["sk-good"]}))
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="sk-bad").responses.create(model="auto", input="hi")
    assert server.client(api_key="sk-good").responses.create(model="auto", input="hi").output_text


def test_masked_personal_data_never_passes_through_to_a_responses_deployment(upstream, serve):
    server = serve(config(upstream, policies={"pii": {"rules": [{"kinds": ["email"], "action": "mask"}]}}))
    upstream.set("native", Behaviour(reply="Writing to [EMAIL_1] now."))
    response = server.client().responses.create(model="native", input="write to jane.doe@example.com today")
    # The masked chat body was translated anew (never the client's original), the answer restored.
    assert response.output_text == "Writing to jane.doe@example.com now."
    sent = json.dumps(upstream.requests("native")[0].body)
    assert "jane.doe@example.com" not in sent and "[EMAIL_1]" in sent
    assert any("pii: masked" in r for r in server.records()[-1]["decision"]["reasons"])


def test_a_conversation_continues_with_the_previous_output_items(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    first = client.responses.create(model="claude-first", input="hello there")
    second = client.responses.create(
        model="claude-first",
        input=[
            {"role": "user", "content": "hello there"},
            *first.output,
            {"role": "user", "content": "and again"},
        ],
    )
    assert second.output_text == "Simulated answer from claude. You said: and again"
    sent = upstream.requests("claude")[1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][0]["text"] == first.output_text


def test_the_openai_agents_sdk_runs_a_tool_loop_through_pointsman(upstream, serve):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    server = serve(config(upstream))
    upstream.set("claude", Behaviour(tool_arguments='{"city": "Paris"}', reply="It is sunny in Paris."))
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        asked.append(city)
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="sk-client", max_retries=0)
    agent = agents.Agent(
        name="weather",
        instructions="Answer briefly.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model="claude-first", openai_client=client),
    )

    async def run_both() -> tuple[Any, Any, list[str]]:
        plain = await agents.Runner.run(agent, "Weather in Paris?")
        streamed = agents.Runner.run_streamed(agent, "Weather in Paris?")
        kinds = [event.type async for event in streamed.stream_events()]
        return plain, streamed, kinds

    plain, streamed, kinds = asyncio.run(run_both())
    assert plain.final_output == "It is sunny in Paris." and streamed.final_output == "It is sunny in Paris."
    assert asked == ["Paris", "Paris"] and "raw_response_event" in kinds
    # Four model calls (tool call, then answer, twice), all answered by the Anthropic deployment.
    assert upstream.calls("claude") == 4 and upstream.calls("gpt") == 0
    last = upstream.requests("claude")[-1].body
    assert last["system"] == "Answer briefly." and last["messages"][-1]["content"][0]["type"] == "tool_result"
    assert [r["status"] for r in server.records()] == [200, 200, 200, 200]


def test_stored_response_endpoints_say_nothing_is_stored(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    response = client.responses.create(model="auto", input="hi")
    with pytest.raises(openai.NotFoundError, match="pointsman does not store responses"):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError, match="does not store"):
        client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError, match="does not store"):
        client.responses.input_items.list(response.id)


@pytest.mark.parametrize("target", ["gpt", "claude", "native"])
def test_the_clients_stream_helper_assembles_text_and_calls_from_every_kind_of_deployment(
    upstream, serve, target
):
    server = serve(config(upstream))
    client = server.client()
    with client.responses.stream(model=target, input="hello you") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == f"Simulated answer from {target}. You said: hello you"
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens > 0
    upstream.set(target, Behaviour(tool_arguments='{"city": "Oslo"}'))
    with client.responses.stream(model=target, input="weather?", tools=[WEATHER]) as stream:
        [call] = stream.get_final_response().output
    assert (
        call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city": "Oslo"}'
    )


def test_a_client_leaving_mid_stream_ends_the_upstream_call_and_is_recorded(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(reply=" ".join(["word"] * 200), tokens_per_s=50))
    stream = server.client().responses.create(model="gpt", input="talk", stream=True)
    for event in stream:
        if event.type == "response.output_text.delta":
            break
    stream.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not server.records():
        time.sleep(0.05)
    [record] = server.records()
    assert record["status"] == 499 and record["error"] == "client disconnected mid-stream"
    assert server.router.state.circuit("gpt") == "closed"
