"""The inbound Anthropic Messages API, driven by the official `anthropic` client."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from pointsman.testing import Behaviour
from tests.conftest import deployment

TOOL = {
    "name": "get_weather",
    "description": "weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
HI = [{"role": "user", "content": "hello there"}]


def config(upstream: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "claude", provider="anthropic", capabilities={"vision": True}),
            deployment(upstream, "gpt", capabilities={"vision": True}),
        ],
        "models": {
            "auto": {"deployments": ["gpt", "claude"]},
            "claude-first": {"deployments": ["claude", "gpt"]},
        },
        "aliases": {"claude-sonnet-5": "claude-first", "claude-*": "auto"},
    }


def client(server: Any, **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("api_key", "sk-ant-test")
    return anthropic.Anthropic(base_url=server.url, max_retries=0, **kwargs)


def test_messages_through_an_openai_style_deployment(upstream, serve):
    server = serve(config(upstream))
    raw = client(server).messages.with_raw_response.create(
        model="auto", max_tokens=100, system="Be brief.", messages=HI
    )
    message = raw.parse()
    assert raw.headers["x-pointsman-model"] == "gpt"
    assert message.type == "message" and message.role == "assistant" and message.model == "auto"
    assert message.content[0].text.startswith("Simulated answer from gpt")
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    sent = upstream.requests("gpt")[0].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    record = server.records()[-1]
    assert record["requested_model"] == "auto" and record["status"] == 200 and record["cost"] > 0


def test_streaming_gives_the_full_event_sequence(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(reply="one two three"))
    with client(server).messages.stream(model="auto", max_tokens=50, messages=HI) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(
        events
    )
    assert final.content[0].text == "one two three" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


def test_tools_and_tool_results_round_trip(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(tool_arguments='{"city": "Oslo"}'))
    c = client(server)
    first = c.messages.create(
        model="auto", max_tokens=100, tools=[TOOL], messages=[{"role": "user", "content": "weather in Oslo?"}]
    )
    use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and use.name == "get_weather" and use.input == {"city": "Oslo"}
    second = c.messages.create(
        model="auto",
        max_tokens=100,
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12C, rain"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    sent = upstream.requests("gpt")[1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "12C, rain"}


def test_streamed_tool_use(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(tool_arguments='{"city": "Rome"}'))
    with client(server).messages.stream(model="auto", max_tokens=50, tools=[TOOL], messages=HI) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"city": "Rome"} and final.stop_reason == "tool_use"


def test_images_reach_the_upstream(upstream, serve):
    server = serve(config(upstream))
    client(server).messages.create(
        model="auto",
        max_tokens=20,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    },
                ],
            }
        ],
    )
    part = upstream.requests("gpt")[0].body["messages"][0]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_errors_come_in_anthropics_shape(upstream, serve):
    server = serve(config(upstream))
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(server).messages.create(model="gpt-17", max_tokens=10, messages=HI)
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"
    upstream.set("gpt", Behaviour(status=500))
    upstream.set("claude", Behaviour(status=500))
    with pytest.raises(anthropic.APIStatusError) as failed:
        client(server).messages.create(model="auto", max_tokens=10, messages=HI)
    assert failed.value.status_code == 503
    assert failed.value.body["error"]["type"] == "overloaded_error"
    assert "all deployments failed" in failed.value.body["error"]["message"]


def test_missing_max_tokens_is_an_invalid_request(upstream, serve):
    import httpx2 as httpx

    server = serve(config(upstream))
    response = httpx.post(f"{server.url}/v1/messages", json={"model": "auto", "messages": HI})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


def test_failover_from_openai_style_to_anthropic_style(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(status=503))
    raw = client(server).messages.with_raw_response.create(model="auto", max_tokens=20, messages=HI)
    assert raw.headers["x-pointsman-model"] == "claude"
    assert raw.parse().content[0].text.startswith("Simulated answer from claude")


def test_failover_from_anthropic_style_to_openai_style_when_streaming(upstream, serve):
    server = serve(config(upstream))
    upstream.set("claude", Behaviour(status=529))
    with client(server).messages.stream(model="claude-first", max_tokens=20, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.content[0].text.startswith("Simulated answer from gpt")


def test_model_aliases_route_an_agents_configured_model(upstream, serve):
    server = serve(config(upstream))
    exact = client(server).messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=20, messages=HI
    )
    assert exact.headers["x-pointsman-model"] == "claude"
    assert exact.parse().model == "claude-sonnet-5"
    pattern = client(server).messages.with_raw_response.create(
        model="claude-3-haiku-20240307", max_tokens=20, messages=HI
    )
    assert pattern.headers["x-pointsman-model"] == "gpt"
    reasons = server.records()[-1]["decision"]["reasons"]
    assert "alias: claude-3-haiku-20240307 -> auto" in reasons


def test_count_tokens(upstream, serve):
    server = serve(config(upstream))
    small = client(server).messages.count_tokens(model="auto", messages=HI)
    large = client(server).messages.count_tokens(
        model="auto", messages=[{"role": "user", "content": "word " * 400}]
    )
    assert 0 < small.input_tokens < large.input_tokens
    assert upstream.calls("gpt") == 0 and upstream.calls("claude") == 0
