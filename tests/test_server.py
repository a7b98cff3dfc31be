"""End to end: the official openai client -> pointsman on loopback -> the fake upstream."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import openai
import pytest

from pointsman.testing import Behaviour
from tests.conftest import deployment

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
HELLO = [{"role": "user", "content": "hello there"}]


def two_deployments(upstream: Any, **router: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0, **router},
        "deployments": [deployment(upstream, "primary"), deployment(upstream, "backup")],
        "models": {"auto": {"strategy": "ordered", "deployments": ["primary", "backup"]}},
    }


def test_non_streaming_answer_carries_routing_headers(upstream, serve):
    server = serve(two_deployments(upstream))
    raw = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    answer = raw.parse()
    assert answer.choices[0].message.content.startswith("Simulated answer from primary")
    assert raw.headers["x-pointsman-model"] == "primary"
    assert raw.headers["x-pointsman-route"] == "ordered:order"
    assert raw.headers["x-pointsman-request-id"].startswith("req_")
    assert float(raw.headers["x-pointsman-overhead-ms"]) >= 0
    assert upstream.requests("primary")[0].body["model"] == "model-primary"


def test_streaming_answer_arrives_in_chunks_with_usage(upstream, serve):
    server = serve(two_deployments(upstream))
    chunks = list(
        server.client().chat.completions.create(
            model="auto", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Simulated answer from primary")
    assert len(chunks) > 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    record = server.records()[-1]
    assert record["stream"] == 1 and record["status"] == 200
    assert record["completion_tokens"] == chunks[-1].usage.completion_tokens


def test_stream_without_usage_request_still_costed_but_client_sees_no_usage_chunk(upstream, serve):
    server = serve(two_deployments(upstream))
    chunks = list(
        server.client().chat.completions.create(model="auto", messages=HELLO, stream=True)
    )
    assert all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)
    record = server.records()[-1]
    assert record["prompt_tokens"] > 0 and record["cost"] > 0


def test_tools_pass_through_and_tool_calls_come_back(upstream, serve):
    server = serve(two_deployments(upstream))
    upstream.set("primary", Behaviour(tool_arguments='{"city": "Oslo"}'))
    answer = server.client().chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[TOOL],
        tool_choice="auto",
    )
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Oslo"
    }
    sent = upstream.requests("primary")[0].body
    assert sent["tools"] == [TOOL] and sent["tool_choice"] == "auto"


def test_unknown_fields_and_response_format_reach_openai_upstreams(upstream, serve):
    server = serve(two_deployments(upstream))
    server.client().chat.completions.create(
        model="auto",
        messages=HELLO,
        response_format={"type": "json_object"},
        extra_body={"custom_vendor_flag": {"x": 1}, "top_k": 5},
    )
    sent = upstream.requests("primary")[0].body
    assert sent["custom_vendor_flag"] == {"x": 1} and sent["top_k"] == 5
    assert sent["response_format"] == {"type": "json_object"}


def test_image_request_reaches_only_a_vision_deployment(upstream, serve):
    config = {
        "deployments": [
            deployment(upstream, "text-only"),
            deployment(upstream, "seeing", capabilities={"vision": True}),
        ],
        "models": {"auto": {"deployments": ["text-only", "seeing"]}},
    }
    server = serve(config)
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is it?"}, IMAGE]}],
    )
    assert raw.headers["x-pointsman-model"] == "seeing"
    assert upstream.calls("text-only") == 0
    assert upstream.requests("seeing")[0].body["messages"][0]["content"][1] == IMAGE
    reasons = server.records()[-1]["decision"]["reasons"]
    assert any("removed text-only: no vision" in r for r in reasons)


def test_tool_request_skips_deployments_without_tools(upstream, serve):
    config = {
        "deployments": [
            deployment(upstream, "plain", capabilities={"tools": False}),
            deployment(upstream, "agentic"),
        ],
        "models": {"auto": {"deployments": ["plain", "agentic"]}},
    }
    server = serve(config)
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, tools=[TOOL]
    )
    assert raw.headers["x-pointsman-model"] == "agentic" and upstream.calls("plain") == 0


def test_oversized_prompt_skips_small_context_windows(upstream, serve):
    config = {
        "deployments": [
            deployment(upstream, "small", context_window=1000),
            deployment(upstream, "large", context_window=100_000),
        ],
        "models": {"auto": {"deployments": ["small", "large"]}},
    }
    server = serve(config)
    long_prompt = [{"role": "user", "content": "word " * 2000}]
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=long_prompt
    )
    assert raw.headers["x-pointsman-model"] == "large" and upstream.calls("small") == 0


def test_context_length_error_moves_to_a_larger_window(upstream, serve):
    config = {
        "deployments": [
            deployment(upstream, "tight", context_window=100_000),
            deployment(upstream, "also-tight", context_window=100_000),
            deployment(upstream, "roomy", context_window=200_000),
        ],
        "models": {"auto": {"deployments": ["tight", "also-tight", "roomy"]}},
    }
    server = serve(config)
    # The config over-states the window; the upstream's real limit is lower.
    upstream.set("tight", Behaviour(context_window=50))
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "x" * 1000}]
    )
    assert raw.headers["x-pointsman-model"] == "roomy"
    assert upstream.calls("also-tight") == 0  # no larger than the window that overflowed


@pytest.mark.parametrize(
    "failure",
    [
        Behaviour(status=500),
        Behaviour(status=503),
        Behaviour(reset=True),
        Behaviour(status=401),
    ],
    ids=["500", "503", "connection-reset", "bad-upstream-key"],
)
def test_failover_to_the_next_deployment(upstream, serve, failure):
    server = serve(two_deployments(upstream))
    upstream.set("primary", failure)
    raw = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "backup"
    assert upstream.calls("primary") == 1 and upstream.calls("backup") == 1
    attempts = server.records()[-1]["attempts"]
    assert [a["deployment"] for a in attempts] == ["primary", "backup"]
    assert attempts[0]["error"] and attempts[1]["error"] is None


def test_timeout_fails_over_within_the_deployment_timeout(upstream, serve):
    config = two_deployments(upstream)
    config["deployments"][0]["timeouts"] = {"total": 0.5}
    server = serve(config)
    upstream.set("primary", Behaviour(hang=True))
    raw = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "backup"
    first = server.records()[-1]["attempts"][0]
    # Cut off by the deployment's 0.5 s total timeout, not by the test client's.
    assert first["error"].startswith("timeout") and 400 <= first["latency_ms"] < 5000


def test_429_retry_after_is_honoured_by_cooling_the_deployment_down(upstream, serve):
    server = serve(two_deployments(upstream))
    upstream.set("primary", Behaviour(status=429, retry_after=30))
    client = server.client()
    first = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert first.headers["x-pointsman-model"] == "backup"
    # While its Retry-After runs, the limited deployment is not called again.
    for _ in range(3):
        again = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
        assert again.headers["x-pointsman-model"] == "backup"
    assert upstream.calls("primary") == 1
    assert any("cooling down" in r for r in server.records()[-1]["decision"]["reasons"])


def test_short_retry_after_is_waited_out_when_the_deployment_allows_a_retry(upstream, serve):
    config = two_deployments(upstream)
    config["deployments"][0]["max_retries"] = 1
    server = serve(config)
    upstream.set("primary", Behaviour(script=[Behaviour(status=429, retry_after=0.3)]))
    raw = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "primary"
    assert upstream.calls("primary") == 2 and upstream.calls("backup") == 0
    # The wait is the upstream's instruction, not router overhead.
    assert float(raw.headers["x-pointsman-overhead-ms"]) < 300


def test_stream_fails_over_when_the_upstream_fails_before_the_first_byte(upstream, serve):
    server = serve(two_deployments(upstream))
    upstream.set("primary", Behaviour(fail_after_chunks=0))
    stream = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, stream=True
    )
    assert stream.headers["x-pointsman-model"] == "backup"
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse())
    assert text.startswith("Simulated answer from backup")


def test_stream_fails_over_on_a_slow_first_token(upstream, serve):
    config = two_deployments(upstream)
    config["deployments"][0]["timeouts"] = {"first_byte": 0.3}
    server = serve(config)
    upstream.set("primary", Behaviour(latency_s=3))
    stream = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, stream=True
    )
    assert stream.headers["x-pointsman-model"] == "backup"


def test_failure_mid_stream_raises_in_the_client_and_is_recorded_as_failed(upstream, serve):
    server = serve(two_deployments(upstream))
    upstream.set(
        "primary", Behaviour(fail_after_chunks=2, reply="one two three four five six seven")
    )
    stream = server.client().chat.completions.create(model="auto", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in stream:
            received.append(chunk)
    assert received  # bytes had reached the client, so no failover could happen
    assert upstream.calls("backup") == 0
    record = server.records()[-1]
    assert record["status"] == 502 and "stream interrupted" in record["error"]


def test_every_deployment_failing_gives_503_naming_what_was_tried(upstream, serve):
    server = serve(two_deployments(upstream))
    upstream.set("primary", Behaviour(status=500))
    upstream.set("backup", Behaviour(reset=True))
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(model="auto", messages=HELLO)
    error = caught.value
    assert error.status_code == 503
    assert "primary: 500" in error.message and "backup" in error.message
    assert error.body["code"] == "all_deployments_failed"
    record = server.records()[-1]
    assert record["status"] == 503 and record["deployment"] is None and len(record["attempts"]) == 2


def test_all_deployments_timing_out_gives_504(upstream, serve):
    config = two_deployments(upstream)
    for entry in config["deployments"]:
        entry["timeouts"] = {"total": 0.3}
    server = serve(config)
    upstream.set("primary", Behaviour(hang=True))
    upstream.set("backup", Behaviour(hang=True))
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(model="auto", messages=HELLO)
    assert caught.value.status_code == 504


def test_rate_limited_everywhere_gives_503_with_retry_after(upstream, serve):
    server = serve(two_deployments(upstream))
    upstream.set("primary", Behaviour(status=429, retry_after=20))
    upstream.set("backup", Behaviour(status=429, retry_after=40))
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(model="auto", messages=HELLO)
    assert caught.value.status_code == 503
    assert 15 <= int(caught.value.response.headers["retry-after"]) <= 20


def test_upstream_calls_are_bounded_by_max_attempts(upstream, serve):
    config = {
        "router": {"max_attempts": 3, "backoff_base_s": 0.0},
        "deployments": [deployment(upstream, f"d{i}", max_retries=2) for i in range(4)],
        "models": {"auto": {"deployments": [f"d{i}" for i in range(4)]}},
    }
    server = serve(config)
    for i in range(4):
        upstream.set(f"d{i}", Behaviour(status=500))
    with pytest.raises(openai.APIStatusError):
        server.client().chat.completions.create(model="auto", messages=HELLO)
    assert sum(upstream.calls(f"d{i}") for i in range(4)) == 3


def test_a_request_the_upstream_rejects_as_invalid_is_not_retried_elsewhere(upstream, serve):
    server = serve(two_deployments(upstream))
    upstream.set("primary", Behaviour(status=400))
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(model="auto", messages=HELLO)
    assert upstream.calls("backup") == 0


def test_naming_a_concrete_deployment_goes_there(upstream, serve):
    server = serve(two_deployments(upstream))
    raw = server.client().chat.completions.with_raw_response.create(model="backup", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "backup"
    assert raw.headers["x-pointsman-route"] == "explicit:deployment"
    assert upstream.calls("primary") == 0


def test_unknown_model_is_404(upstream, serve):
    server = serve(two_deployments(upstream))
    with pytest.raises(openai.NotFoundError) as caught:
        server.client().chat.completions.create(model="gpt-17", messages=HELLO)
    assert "gpt-17" in caught.value.message and caught.value.body["code"] == "model_not_found"


def _post(
    url: str, data: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_malformed_json_is_400_in_openai_shape(upstream, serve):
    server = serve(two_deployments(upstream))
    status, body = _post(f"{server.url}/v1/chat/completions", b'{"model": "auto", "messages": [')
    assert status == 400
    assert (
        body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_json"
    )
    assert "not valid JSON" in body["error"]["message"]
    assert server.records()[-1]["status"] == 400


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"messages": HELLO}, "'model' is required"),
        ({"model": "auto"}, "'messages' is required"),
        ({"model": "auto", "messages": [{"content": "no role"}]}, "messages[0]"),
        ({"model": "auto", "messages": HELLO, "stream": "yes"}, "'stream'"),
    ],
)
def test_invalid_requests_are_400_naming_the_problem(upstream, serve, payload, fragment):
    server = serve(two_deployments(upstream))
    status, body = _post(f"{server.url}/v1/chat/completions", json.dumps(payload).encode())
    assert status == 400 and fragment in body["error"]["message"]


def test_oversized_body_is_413(upstream, serve):
    config = two_deployments(upstream)
    config["server"] = {"max_body_bytes": 2000}
    server = serve(config)
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x" * 5000}]
        )
    assert caught.value.status_code == 413 and "2000 bytes" in caught.value.message
    assert upstream.calls("primary") == 0


def test_api_keys_when_configured_are_required(upstream, serve):
    config = two_deployments(upstream)
    config["server"] = {"api_keys": ["sk-good"]}
    server = serve(config)
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="sk-bad").chat.completions.create(model="auto", messages=HELLO)
    answer = server.client(api_key="sk-good").chat.completions.create(model="auto", messages=HELLO)
    assert answer.choices[0].message.content
    records = server.records()
    assert records[0]["status"] == 401
    assert records[1]["api_key"].startswith("key_") and "sk-good" not in json.dumps(records)


def test_models_lists_virtual_and_concrete_names(upstream, serve):
    server = serve(two_deployments(upstream))
    listed = {m.id: m for m in server.client().models.list()}
    assert set(listed) == {"auto", "primary", "backup"}


def test_health_and_readiness(upstream, serve):
    server = serve(two_deployments(upstream))
    with urllib.request.urlopen(f"{server.url}/healthz") as response:
        assert json.loads(response.read())["status"] == "ok"
    with urllib.request.urlopen(f"{server.url}/readyz") as response:
        body = json.loads(response.read())
    assert body["status"] == "ready" and body["deployments"] == 2


def test_every_request_gets_a_record_with_cost_from_configured_prices(upstream, serve):
    config = two_deployments(upstream)
    config["deployments"][0]["price"] = {"input": 3.0, "output": 15.0}
    server = serve(config)
    client = server.client()
    answer = client.chat.completions.create(model="auto", messages=HELLO)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HELLO)
    records = server.records()
    assert [r["status"] for r in records] == [200, 404]
    ok = records[0]
    usage = answer.usage
    assert (
        ok["prompt_tokens"] == usage.prompt_tokens
        and ok["completion_tokens"] == usage.completion_tokens
    )
    assert ok["cost"] == pytest.approx(
        (usage.prompt_tokens * 3.0 + usage.completion_tokens * 15.0) / 1e6
    )
    assert (
        ok["requested_model"] == "auto"
        and ok["deployment"] == "primary"
        and ok["route"] == "ordered:order"
    )
    assert ok["latency_ms"] >= ok["upstream_ms"] > 0 and ok["overhead_ms"] >= 0
    assert records[1]["requested_model"] == "nope" and "does not exist" in records[1]["error"]
