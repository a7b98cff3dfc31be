"""The Anthropic adapter against the fake upstream's Messages endpoint, through the server."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from pointsman.testing import Behaviour
from tests.conftest import deployment

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
    },
}


def config(upstream: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(
                upstream,
                "claude",
                provider="anthropic",
                price={"input": 3.0, "output": 15.0},
                capabilities={"vision": True},
            ),
            deployment(upstream, "gpt"),
        ],
        "models": {
            "auto": {"deployments": ["claude", "gpt"]},
            "reverse": {"deployments": ["gpt", "claude"]},
        },
    }


def test_anthropic_answer_is_translated_and_costed(upstream, serve):
    server = serve(config(upstream))
    answer = server.client().chat.completions.create(
        model="auto",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
        max_tokens=50,
    )
    assert answer.choices[0].message.content.startswith("Simulated answer from claude")
    assert answer.choices[0].finish_reason == "stop"
    sent = upstream.requests("claude")[0]
    assert sent.body["system"] == "Be brief."
    assert [m["role"] for m in sent.body["messages"]] == ["user", "assistant", "user"]
    assert sent.body["max_tokens"] == 50 and sent.body["model"] == "model-claude"
    assert sent.headers["x-api-key"] == "sk-test" and sent.headers["anthropic-version"]
    record = server.records()[-1]
    assert record["prompt_tokens"] == answer.usage.prompt_tokens > 0
    assert record["completion_tokens"] == answer.usage.completion_tokens > 0
    expected = (answer.usage.prompt_tokens * 3.0 + answer.usage.completion_tokens * 15.0) / 1e6
    assert record["cost"] == pytest.approx(expected)


def test_anthropic_stream_becomes_openai_chunks_with_usage(upstream, serve):
    server = serve(config(upstream))
    upstream.set("claude", Behaviour(reply="alpha beta gamma delta epsilon"))
    chunks = list(
        server.client().chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "go"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha beta gamma delta epsilon"
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage.completion_tokens == 5
    record = server.records()[-1]
    assert record["completion_tokens"] == 5 and record["cost"] > 0 and record["stream"] == 1


def test_anthropic_tool_calls_round_trip(upstream, serve):
    server = serve(config(upstream))
    upstream.set("claude", Behaviour(tool_arguments='{"word": "router"}'))
    client = server.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "define router"}]
    first = client.chat.completions.create(model="auto", messages=messages, tools=[TOOL])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {
        "word": "router"
    }
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "a device that forwards packets"},
    ]
    second = client.chat.completions.create(model="auto", messages=messages, tools=[TOOL])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    sent = upstream.requests("claude")[1].body
    assert sent["tools"][0]["name"] == "lookup"
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": "a device that forwards packets",
    }


def test_anthropic_streamed_tool_call(upstream, serve):
    server = serve(config(upstream))
    upstream.set("claude", Behaviour(tool_arguments='{"word": "stream"}'))
    chunks = list(
        server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], tools=[TOOL], stream=True
        )
    )
    arguments = "".join(
        d.function.arguments or ""
        for c in chunks
        if c.choices
        for d in (c.choices[0].delta.tool_calls or [])
    )
    assert json.loads(arguments) == {"word": "stream"}


def test_image_parts_are_sent_as_anthropic_image_blocks(upstream, serve):
    server = serve(config(upstream))
    server.client().chat.completions.create(
        model="auto",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ],
    )
    block = upstream.requests("claude")[0].body["messages"][0]["content"][1]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }


@pytest.mark.parametrize("status", [429, 500, 529])
def test_failover_from_anthropic_to_openai_style(upstream, serve, status):
    server = serve(config(upstream))
    upstream.set("claude", Behaviour(status=status))
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-pointsman-model"] == "gpt"


def test_failover_from_openai_style_to_anthropic_when_streaming(upstream, serve):
    server = serve(config(upstream))
    upstream.set("gpt", Behaviour(status=503))
    raw = server.client().chat.completions.with_raw_response.create(
        model="reverse", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert raw.headers["x-pointsman-model"] == "claude"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)


def test_anthropic_context_error_moves_to_a_larger_window(upstream, serve):
    cfg = config(upstream)
    cfg["deployments"][0]["context_window"] = 100_000
    cfg["deployments"][1]["context_window"] = 200_000
    server = serve(cfg)
    upstream.set("claude", Behaviour(context_window=10))
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "y" * 400}]
    )
    assert raw.headers["x-pointsman-model"] == "gpt"
    assert "prompt is too long" in server.records()[-1]["attempts"][0]["error"]


def test_anthropic_mid_stream_failure_raises_in_the_client(upstream, serve):
    server = serve(config(upstream))
    upstream.set("claude", Behaviour(fail_after_chunks=2, reply="a b c d e f g h"))
    with pytest.raises(openai.APIError):
        for _ in server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass
    assert server.records()[-1]["status"] == 502
