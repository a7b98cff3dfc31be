"""Adversity at the upstream edge, through the real server on loopback with the official
clients: upstream client errors, answers that are not answers, abandoned streams, slow
upstreams and slow clients, and who may use which key."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from pointsman.testing import Behaviour
from tests.conftest import deployment

MASTER = "mk-upstream-master"
HELLO = [{"role": "user", "content": "hello"}]


def two(upstream: Any, first: str = "openai", **extra: Any) -> dict[str, Any]:
    """`auto` tries deployment `a` (of provider `first`), then `b`."""
    config: dict[str, Any] = {
        "router": {"backoff_base_s": 0.0},
        "deployments": [deployment(upstream, "a", provider=first), deployment(upstream, "b")],
        "models": {"auto": {"deployments": ["a", "b"]}},
    }
    config.update(extra)
    return config


def ready(server: Any) -> dict[str, Any]:
    conn = http.client.HTTPConnection(server.thread.host, server.thread.port, timeout=10)
    try:
        conn.request("GET", "/readyz")
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def admin(server: Any, method: str, path: str, body: Any = None, token: str = MASTER) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(server.thread.host, server.thread.port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# -- client errors are not deployment failures -----------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (413, openai.APIStatusError),
        (422, openai.UnprocessableEntityError),
    ],
)
def test_upstream_client_errors_go_back_without_failover_or_open_circuits(upstream, serve, status, error):
    server = serve(two(upstream))
    upstream.set("a", Behaviour(status=status))
    client = server.client()
    threshold = 5  # the default circuit breaker's
    for _ in range(threshold + 3):
        with pytest.raises(error) as caught:
            client.chat.completions.create(model="auto", messages=HELLO)
        assert caught.value.status_code == status
        assert f"Simulated error {status} from deployment a" in caught.value.message
    with pytest.raises(error):  # a stream too, before its first byte
        client.chat.completions.create(model="auto", messages=HELLO, stream=True)
    assert upstream.calls("b") == 0  # no failover: another deployment would say the same
    assert ready(server)["circuits"] == {"a": "closed"}
    upstream.set("a", Behaviour())
    answer = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert answer.headers["x-pointsman-model"] == "a"
    records = server.records()
    assert [r["status"] for r in records] == [status] * (threshold + 4) + [200]
    assert records[0]["attempts"][0]["status"] == status


def test_upstream_client_error_reaches_an_anthropic_client_in_its_shape(upstream, serve):
    server = serve(two(upstream, first="anthropic"))
    upstream.set("a", Behaviour(status=400))
    claude = anthropic.Anthropic(base_url=server.url, api_key="sk-ant", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="auto", max_tokens=50, messages=HELLO)
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "Simulated error 400 from deployment a" in caught.value.message
    assert upstream.calls("b") == 0


def test_upstream_credential_errors_still_fail_over(upstream, serve):
    # 401/403 say the deployment's own key is wrong: another deployment may well answer.
    server = serve(two(upstream))
    upstream.set("a", Behaviour(status=401))
    answer = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert answer.headers["x-pointsman-model"] == "b"
    assert server.records()[-1]["attempts"][0]["status"] == 401


# -- a 200 that is not an answer is a protocol error -----------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"hello":"world"}',
        b'{"choices":"x"}',
        b'{"choices":[]}',
        b'{"choices":[{"index":0,"finish_reason":"stop"}]}',
        b"[1, 2]",
    ],
)
def test_a_200_that_is_not_a_chat_completion_fails_over(upstream, serve, body):
    server = serve(two(upstream))
    upstream.set("a", Behaviour(body=body))
    answer = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert answer.headers["x-pointsman-model"] == "b"
    assert answer.parse().choices[0].message.content.startswith("Simulated answer from b")
    record = server.records()[-1]
    assert record["status"] == 200 and record["deployment"] == "b"
    failed = record["attempts"][0]
    assert failed["deployment"] == "a" and "not a chat completion" in failed["error"]


def test_a_200_that_is_not_an_anthropic_message_fails_over(upstream, serve):
    server = serve(two(upstream, first="anthropic"))
    upstream.set("a", Behaviour(body=b'{"hello":"world"}'))
    answer = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert answer.headers["x-pointsman-model"] == "b"
    assert "unreadable" in server.records()[-1]["attempts"][0]["error"]


def test_answers_that_are_not_answers_open_the_circuit(upstream, serve):
    server = serve(two(upstream))
    upstream.set("a", Behaviour(body=b'{"hello":"world"}'))
    for _ in range(5):
        server.client().chat.completions.create(model="auto", messages=HELLO)
    assert ready(server)["circuits"]["a"] == "open"


# -- stream billing without the usage chunk --------------------------------------------------


def _answers_until_refused(server: Any, key: str, leave_after: int | None, limit: int = 30) -> int:
    """Streamed answers served to `key` before a 429; a client with `leave_after` closes the
    stream after that many content chunks, before the upstream's usage report."""
    client = server.client(api_key=key)
    served = 0
    for _ in range(limit):
        before = len(server.records())
        try:
            stream = client.chat.completions.create(model="auto", messages=HELLO, stream=True, max_tokens=50)
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            return served
        served += 1
        seen = 0
        for chunk in stream:
            assert chunk.usage is None  # asked of the upstream, never passed to a client that did not ask
            if chunk.choices and chunk.choices[0].delta.content:
                seen += 1
                if leave_after is not None and seen >= leave_after:
                    break
        stream.close()
        # The next request starts once this one is recorded (and so charged).
        deadline = time.monotonic() + 10
        while len(server.records()) == before and time.monotonic() < deadline:
            time.sleep(0.02)
    return served


def test_abandoned_streams_are_billed_for_what_was_relayed(upstream, serve, monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    priced = deployment(upstream, "a", price={"input": 100.0, "output": 500.0})
    server = serve({"deployments": [priced], "models": {"auto": {"deployments": ["a"]}}})
    reply = " ".join(f"word{i}" for i in range(40))
    # Paced, so that a client leaving early leaves well before the upstream's usage report.
    upstream.set("a", Behaviour(reply=reply, tokens_per_s=100))
    keys = []
    for name in ("reader", "leaver"):
        status, created = admin(server, "POST", "/admin/keys", {"name": name, "budget": 0.10})
        assert status == 201, created
        keys.append(created["key"])
    read_to_the_end = _answers_until_refused(server, keys[0], leave_after=None)
    left_early = _answers_until_refused(server, keys[1], leave_after=30)
    assert 2 <= read_to_the_end <= 6
    assert left_early <= read_to_the_end + 2
    records = server.records()
    assert upstream.requests("a")[0].body["stream_options"] == {"include_usage": True}
    left = [r for r in records if r["status"] == 499]
    assert left and all(r["cost"] > 0 for r in left)
    estimated = [r for r in left if r["usage_source"] == "estimate"]
    assert estimated and all(r["completion_tokens"] >= 30 for r in estimated)
    assert {r["usage_source"] for r in records if r["status"] == 200} == {"upstream"}


def test_streams_without_a_usage_report_are_charged_an_estimate(upstream, serve):
    # A server that ignores stream_options (or a deployment with stream_usage off).
    unreported = deployment(upstream, "a", stream_usage=False)
    server = serve({"deployments": [unreported], "models": {"auto": {"deployments": ["a"]}}})
    upstream.set("a", Behaviour(reply="one two three four five six seven eight"))
    chunks = list(server.client().chat.completions.create(model="auto", messages=HELLO, stream=True))
    assert all(chunk.usage is None for chunk in chunks)  # none reaches a client that did not ask
    record = server.records()[-1]
    assert record["status"] == 200 and record["usage_source"] == "estimate"
    assert record["completion_tokens"] >= 8 and record["prompt_tokens"] > 0 and record["cost"] > 0


# -- timeouts --------------------------------------------------------------------------------


def test_first_byte_bounds_a_non_streamed_answers_head(upstream, serve):
    slow = deployment(upstream, "a", timeouts={"connect": 2, "first_byte": 0.3, "total": 30})
    server = serve(
        {"deployments": [slow, deployment(upstream, "b")], "models": {"auto": {"deployments": ["a", "b"]}}}
    )
    upstream.set("a", Behaviour(latency_s=3))
    answer = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert answer.headers["x-pointsman-model"] == "b"
    failed = server.records()[-1]["attempts"][0]
    assert failed["deployment"] == "a" and failed["error"].startswith("timeout")
    assert "first_byte" in failed["error"]


def _client_timeouts(upstream: Any) -> dict[str, Any]:
    config = two(upstream)
    config["server"] = {"timeouts": {"keep_alive": 0.5, "request_head": 0.5, "request_body": 0.5}}
    return config


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout, far
    longer than the server's, fails the test instead of hanging it)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_idle_and_silent_connections_are_closed(upstream, serve):
    server = serve(_client_timeouts(upstream))
    address = (server.thread.host, server.thread.port)
    with socket.create_connection(address, timeout=10) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = _read_until_closed(idle)  # answered, then closed once idle past keep_alive
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')
    with socket.create_connection(address, timeout=10) as silent:
        assert _read_until_closed(silent) == b""  # never sent a byte: closed, nothing said


def test_half_sent_requests_get_408_and_are_closed(upstream, serve):
    server = serve(_client_timeouts(upstream))
    address = (server.thread.host, server.thread.port)
    with socket.create_connection(address, timeout=10) as headers_only:
        headers_only.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        assert _read_until_closed(headers_only).startswith(b"HTTP/1.1 408")
    body = json.dumps({"model": "auto", "messages": HELLO}).encode()
    with socket.create_connection(address, timeout=10) as half_body:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        half_body.sendall(head + b"content-length: %d\r\n\r\n" % len(body) + body[:10])
        answer = _read_until_closed(half_body)
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    with socket.create_connection(address, timeout=10) as refused_early:
        # Answered (413) before its body ended: closed at the deadline without a second answer.
        head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n"
        refused_early.sendall(head + body[:10])
        answer = _read_until_closed(refused_early)
        assert answer.startswith(b"HTTP/1.1 413") and answer.count(b"HTTP/1.1") == 1
    assert upstream.calls("a") == 0
    deadline = time.monotonic() + 5
    while not server.records() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(r["status"] for r in server.records()) == [408, 413]


def test_client_timeouts_are_validated(tmp_path):
    from pointsman.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="request_body"):
        load_config({"deployments": [], "server": {"timeouts": {"request_body": 0}}})


# -- keys --------------------------------------------------------------------------------------


def test_static_client_keys_work_beside_the_master_key(upstream, serve, monkeypatch, tmp_path):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    config = two(upstream, server={"api_keys": ["sk-static-client"]})
    server = serve(config)
    status, created = admin(server, "POST", "/admin/keys", {"name": "virtual"})
    assert status == 201
    for key in ("sk-static-client", MASTER, created["key"]):
        assert server.client(api_key=key).chat.completions.create(model="auto", messages=HELLO).choices
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="sk-not-a-key").chat.completions.create(model="auto", messages=HELLO)
    status, body = admin(server, "GET", "/admin/keys", token="sk-static-client")
    assert status == 403 and body["error"]["code"] == "master_key_required"
    status, body = admin(server, "GET", "/dashboard/api/summary", token="sk-static-client")
    assert status == 403 and body["error"]["code"] == "dashboard_scope_required"
    status, _ = admin(server, "GET", "/dashboard/api/summary", token=MASTER)
    assert status == 200
    # What is in force is said, by `config check` (and `serve` at start-up).
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [sys.executable, "-m", "pointsman", "config", "check", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
        check=True,
    ).stdout
    assert "master key ($POINTSMAN_MASTER_KEY) admits admin" in checked
    assert "1 static client key (server.api_keys) admit the API" in checked


def test_static_client_keys_guard_the_anthropic_face_too(upstream, serve):
    server = serve(two(upstream, server={"api_keys": ["sk-static-client"]}))
    conn = http.client.HTTPConnection(server.thread.host, server.thread.port, timeout=10)
    body = json.dumps({"model": "auto", "max_tokens": 50, "messages": HELLO})
    conn.request("POST", "/v1/messages", body, {"content-type": "application/json"})  # no key
    response = conn.getresponse()
    assert response.status == 401 and json.loads(response.read())["error"]["type"] == "authentication_error"
    conn.close()
    claude = anthropic.Anthropic(base_url=server.url, api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        claude.messages.create(model="auto", max_tokens=50, messages=HELLO)
    claude = anthropic.Anthropic(base_url=server.url, api_key="sk-static-client", max_retries=0)
    assert claude.messages.create(model="auto", max_tokens=50, messages=HELLO).content
    assert upstream.calls("a") == 1
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=server.url, api_key="sk-not-a-key", max_retries=0).messages.count_tokens(
            model="auto", messages=HELLO
        )


@pytest.mark.parametrize(
    ("method", "path", "anthropic_shape"),
    [
        ("POST", "/v1/chat/completions", False),
        ("POST", "/v1/messages", True),
        ("POST", "/v1/messages/count_tokens", True),
        ("GET", "/admin/keys", False),
        ("GET", "/v1/models", False),
    ],
)
def test_a_non_ascii_bearer_token_is_an_invalid_key(
    upstream, serve, monkeypatch, method, path, anthropic_shape
):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    server = serve(two(upstream))
    conn = http.client.HTTPConnection(server.thread.host, server.thread.port, timeout=10)
    body = json.dumps({"model": "auto", "max_tokens": 10, "messages": HELLO}).encode()
    conn.putrequest(method, path)
    conn.putheader("authorization", "Bearer pm-ü-abc".encode())
    conn.putheader("content-type", "application/json")
    conn.putheader("content-length", str(len(body) if method == "POST" else 0))
    conn.endheaders(body if method == "POST" else None)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == 401
    if anthropic_shape:
        assert answer["type"] == "error" and answer["error"]["type"] == "authentication_error"
    else:
        assert answer["error"]["code"] == "invalid_api_key"
