"""Bad input at the edge (issue 13, items 1 and 6): every wrongly shaped body is the client's 400
in its API's own error shape, naming the field, with a request id and a record; no upstream is
called for it, so no deployment's health changes; an unexpected exception on any route is a JSON
500 with a request id, never plain text; the server publishes its OpenAPI description."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest

from pointsman.router import Reply, Router
from tests.conftest import RunningServer, deployment

HELLO = [{"role": "user", "content": "hello there"}]


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def two_deployments(upstream: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "primary"),
            deployment(upstream, "backup", provider="anthropic"),
        ],
        "models": {"auto": {"deployments": ["primary", "backup"]}},
    }


def anthropic_client(server: Any, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", **kwargs)


def record(server: Any, request_id: str) -> dict[str, Any]:
    (found,) = [r for r in server.records() if r["request_id"] == request_id]
    return found


# -- item 1: one client's malformed request locks nobody out ---------------------------------------


@pytest.mark.parametrize("tools", ["x", [1], [{"type": "function", "function": {"name": 5}}]])
def test_malformed_tools_are_the_clients_400_and_open_no_circuit(upstream, serve, tools):
    server = serve(two_deployments(upstream))
    for _ in range(8):
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "auto", "tools": tools, "messages": HELLO},
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"].startswith("tools")
        assert error["message"].startswith("tools")
        request_id = response.headers["x-pointsman-request-id"]
        assert record(server, request_id)["status"] == 400
    assert upstream.calls("primary") == 0 and upstream.calls("backup") == 0
    # Everyone else is served at once: no breaker opened, no deployment cooling down.
    answer = server.client().chat.completions.create(model="auto", messages=HELLO)
    assert answer.choices[0].message.content
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["cooling_down"] == {} and ready["status"] == "ready"


# -- item 6: chat bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"stream": True, "stream_options": "usage please"}, "stream_options"),
        ({"messages": [user([{"type": "text", "text": 42}])]}, "messages[0].content[0].text"),
        ({"messages": [user([{"type": "image_url", "image_url": 7}])]}, "messages[0].content[0].image_url"),
        (
            {
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "tool_calls": [{"function": {"name": "w", "arguments": {}}}]},
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "assistant", "tool_calls": "none"}]}, "messages[0].tool_calls"),
        ({"tool_choice": 3}, "tool_choice"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"temperature": [0.5]}, "temperature"),
        ({"metadata": "x"}, "metadata"),
    ],
)  # fmt: skip
def test_wrongly_shaped_chat_bodies_are_400_naming_the_field(upstream, serve, fields, path):
    server = serve(two_deployments(upstream))
    body = {"messages": HELLO, **fields}
    messages = body.pop("messages")
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().chat.completions.create(model="auto", messages=messages, extra_body=body)
    error = caught.value
    assert path + ":" in error.message
    assert error.body is not None and error.body["param"] == path  # type: ignore[index]
    request_id = error.response.headers["x-pointsman-request-id"]
    assert record(server, request_id)["status"] == 400
    assert upstream.calls("primary") == 0 and upstream.calls("backup") == 0


def test_a_well_formed_tool_conversation_still_goes_through(upstream, serve):
    server = serve(two_deployments(upstream))
    answer = server.client().chat.completions.create(
        model="auto",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        tool_choice="auto",
        extra_body={"vendor_field": {"kept": True}},  # unknown fields pass through
    )
    assert answer.choices
    assert upstream.requests("primary")[0].body["vendor_field"] == {"kept": True}


# -- item 6: Anthropic bodies -------------------------------------------------------------------------

ANTHROPIC_CASES = [
    ({"messages": "hi"}, "messages:"),
    ({"system": 5}, "system:"),
    ({"tools": "x"}, "tools:"),
    ({"tools": [{"description": "no name"}]}, "tools[0].name:"),
    ({"messages": [user([{"type": "text"}])]}, "messages[0].content[0].text:"),
    ({"messages": [user([{"type": "image", "source": "x"}])]}, "messages[0].content[0].source:"),
    ({"messages": [user([7])]}, "messages[0].content[0]:"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role:"),
    ({"tool_choice": "auto"}, "tool_choice:"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name:"),
    ({"metadata": "x"}, "metadata:"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id:"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "fragment"), ANTHROPIC_CASES)
def test_wrongly_shaped_messages_are_400_in_anthropic_shape_and_not_retried(
    upstream, serve, fields, fragment
):
    server = serve(two_deployments(upstream))
    # The SDK retries 500s; a 400 it must not retry: one attempt, one record.
    client = anthropic_client(server, max_retries=2)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="auto", max_tokens=20, messages=HELLO, extra_body=fields  # type: ignore[arg-type]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(fragment)
    request_id = caught.value.response.headers["x-pointsman-request-id"]
    assert record(server, request_id)["status"] == 400
    assert len(server.records()) == 1
    assert upstream.calls("primary") == 0 and upstream.calls("backup") == 0


@pytest.mark.parametrize(("fields", "fragment"), ANTHROPIC_CASES[:-2])
def test_wrongly_shaped_token_counts_are_400_in_anthropic_shape(upstream, serve, fields, fragment):
    server = serve(two_deployments(upstream))
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client(server, max_retries=2).messages.count_tokens(
            model="auto", messages=HELLO, extra_body=fields  # type: ignore[arg-type]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(fragment)
    assert caught.value.response.headers["x-pointsman-request-id"]
    assert len(server.records()) == 1


def test_malformed_json_to_messages_is_400_in_anthropic_shape_with_a_record(upstream, serve):
    server = serve(two_deployments(upstream))
    response = httpx.post(
        f"{server.url}/v1/messages",
        content=b'{"model": "auto", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert "not valid JSON" in response.json()["error"]["message"]
    assert record(server, response.headers["x-pointsman-request-id"])["status"] == 400


def test_a_feedback_body_of_the_wrong_shape_is_400(upstream, serve):
    server = serve(two_deployments(upstream))
    response = httpx.post(f"{server.url}/v1/feedback", json={"request_id": "req_1", "thumbs": {}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "thumbs"


# -- unexpected exceptions: JSON 500 with a request id ---------------------------------------------


class FaultyRouter(Router):
    """A router whose pipeline fails in a way nobody planned for (a bug, not an upstream fault)."""

    async def handle(self, body: Any, headers: Mapping[str, str] | None = None, **kwargs: Any) -> Reply:
        raise RuntimeError("simulated bug deep in the pipeline")

    @property
    def degraded(self) -> list[str]:
        raise RuntimeError("simulated bug in a health check")


@pytest.fixture
def faulty(upstream: Any, tmp_path: Any) -> Any:
    db = tmp_path / "records.db"
    server = RunningServer(FaultyRouter.from_config(two_deployments(upstream), db=db), db)
    yield server
    server.stop()


def test_an_unexpected_exception_in_chat_is_a_json_500_with_a_request_id_and_a_record(faulty):
    with pytest.raises(openai.InternalServerError) as caught:
        faulty.client().chat.completions.create(model="auto", messages=HELLO)
    response = caught.value.response
    assert response.headers["content-type"] == "application/json"
    request_id = response.headers["x-pointsman-request-id"]
    assert request_id in caught.value.message and "Traceback" not in response.text
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]
    assert record(faulty, request_id)["status"] == 500


def test_an_unexpected_exception_in_messages_is_a_json_500_in_anthropic_shape(faulty):
    with pytest.raises(anthropic.InternalServerError) as caught:
        anthropic_client(faulty, max_retries=0).messages.create(
            model="auto", max_tokens=10, messages=HELLO  # type: ignore[arg-type]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "api_error"
    request_id = caught.value.response.headers["x-pointsman-request-id"]
    assert record(faulty, request_id)["status"] == 500


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "auto", "input": "hi"}),
        ("/v1/embeddings", {"model": "auto", "input": "hi"}),
    ],
)
def test_an_unexpected_exception_on_other_api_routes_is_a_json_500_with_a_record(faulty, path, body):
    response = httpx.post(f"{faulty.url}{path}", json=body)
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "internal_error"
    assert record(faulty, response.headers["x-pointsman-request-id"])["status"] == 500


def test_an_unexpected_exception_on_a_plain_route_is_a_json_500(faulty):
    response = httpx.get(f"{faulty.url}/readyz")
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.headers["x-pointsman-request-id"] in response.json()["error"]["message"]


# -- the published schema ---------------------------------------------------------------------------


def test_the_server_publishes_its_openapi_schema(upstream, serve):
    server = serve(two_deployments(upstream))
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens", "/v1/responses",
                 "/v1/embeddings", "/v1/feedback"):  # fmt: skip
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        assert name in spec["components"]["schemas"]
    chat = spec["components"]["schemas"]["ChatRequest"]
    assert {"model", "messages"} <= set(chat["required"])
    assert chat["additionalProperties"] is True  # providers' own fields pass through
    assert "/v1/models" in spec["paths"] and "/healthz" in spec["paths"]


# -- count_tokens with virtual keys (authenticated without blocking the event loop) ---------------

MASTER = "mk-edge-master"


def test_count_tokens_authenticates_virtual_keys_in_anthropic_shape(upstream, serve, monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    server = serve(two_deployments(upstream))
    admin = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {MASTER}"})
    chat_key = admin.post("/admin/keys", json={"name": "agent"}).json()["key"]
    viewer = admin.post("/admin/keys", json={"name": "viewer", "scopes": ["dashboard"]}).json()["key"]

    counted = anthropic_client(server).with_options(api_key=chat_key).messages.count_tokens(
        model="auto", messages=HELLO  # type: ignore[arg-type]
    )
    assert counted.input_tokens > 0
    with pytest.raises(anthropic.AuthenticationError) as unknown:
        anthropic_client(server).with_options(api_key="pm-nobody").messages.count_tokens(
            model="auto", messages=HELLO  # type: ignore[arg-type]
        )
    assert unknown.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert record(server, unknown.value.response.headers["x-pointsman-request-id"])["status"] == 401
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic_client(server).with_options(api_key=viewer).messages.count_tokens(
            model="auto", messages=HELLO  # type: ignore[arg-type]
        )
