"""OpenTelemetry traces exported over real OTLP/HTTP to a loopback receiver: a span per request
with the GenAI attributes, child spans for routing and for every upstream attempt, the caller's
traceparent honoured and the attempt's propagated upstream, and no prompt text unless asked."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402

from pointsman.config import TracingSettings  # noqa: E402
from pointsman.testing import Behaviour  # noqa: E402
from pointsman.tracing import tracing_wanted  # noqa: E402
from tests.conftest import deployment  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
PROMPT = "Please summarise the quarterly figures for ACME"


class OTLPReceiver:
    """A loopback OTLP/HTTP trace receiver: keeps every export's raw body and decoded spans."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[Span] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                raw = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    raw = gzip.decompress(raw)
                request = ExportTraceServiceRequest()
                request.ParseFromString(raw)
                receiver.bodies.append(raw)
                receiver.paths.append(self.path)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[kv.key] = getattr(value, kind)
    return out


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.url}/v1/traces")
    yield receiver
    receiver.stop()


def traced_config(upstream: Any, **tracing: Any) -> dict[str, Any]:
    return {
        "deployments": [
            deployment(upstream, "small"),
            deployment(upstream, "backup", capabilities={"vision": True}),
        ],
        "models": {"auto": {"deployments": ["small", "backup"]}},
        "router": {"backoff_base_s": 0.0},
        "tracing": tracing,
    }


def exported(server: Any, receiver: OTLPReceiver) -> None:
    assert server.router.tracing.flush()


def test_request_span_has_genai_attributes_and_routing_and_attempt_children(upstream, serve, receiver):
    server = serve(traced_config(upstream))
    server.client().chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": PROMPT}],
        temperature=0,
        extra_headers={"traceparent": TRACEPARENT},
    )
    exported(server, receiver)
    (request,) = receiver.named("chat auto")
    assert request.trace_id.hex() == TRACE_ID and request.parent_span_id.hex() == CALLER_SPAN
    assert request.kind == Span.SPAN_KIND_SERVER
    found = attributes(request)
    assert found["gen_ai.operation.name"] == "chat"
    assert found["gen_ai.request.model"] == "auto"
    assert found["gen_ai.response.model"] == "model-small"
    assert found["gen_ai.provider.name"] == "openai"
    assert found["gen_ai.usage.input_tokens"] > 0 and found["gen_ai.usage.output_tokens"] > 0
    assert found["gen_ai.response.finish_reasons"] == ["stop"]
    assert found["gen_ai.request.temperature"] == 0
    (route,) = receiver.named("route")
    assert route.parent_span_id == request.span_id and route.trace_id == request.trace_id
    assert attributes(route)["pointsman.route.strategy"] == "ordered"
    (attempt,) = receiver.named("chat model-small")
    assert attempt.parent_span_id == request.span_id and attempt.kind == Span.SPAN_KIND_CLIENT
    assert attributes(attempt)["pointsman.deployment"] == "small"
    assert attributes(attempt)["http.response.status_code"] == 200
    # The upstream saw the attempt's context: same trace, the attempt span as its parent.
    sent = upstream.requests("small")[0].headers["traceparent"]
    assert sent == f"00-{TRACE_ID}-{attempt.span_id.hex()}-01"
    # Prompts and answers are never exported by default.
    assert not any(PROMPT.encode() in body for body in receiver.bodies)
    assert "gen_ai.input.messages" not in found
    assert receiver.paths == ["/v1/traces"] * len(receiver.paths)


def test_every_attempt_gets_a_span_and_a_failover_says_so(upstream, serve, receiver):
    upstream.set("small", Behaviour(status=500))
    server = serve(traced_config(upstream))
    server.client().chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    exported(server, receiver)
    (request,) = receiver.named("chat auto")
    failed = receiver.named("chat model-small")
    (answered,) = receiver.named("chat model-backup")
    assert failed and all(s.parent_span_id == request.span_id for s in [*failed, answered])
    assert all(s.status.code == s.status.STATUS_CODE_ERROR for s in failed)
    assert attributes(failed[0])["http.response.status_code"] == 500
    assert attributes(answered)["pointsman.attempt.fallback"] is True
    assert attributes(request)["pointsman.deployment"] == "backup"
    # Each attempt propagated its own span upstream.
    assert upstream.requests("backup")[0].headers["traceparent"].split("-")[2] == answered.span_id.hex()


def test_routing_span_names_removed_candidates_and_why(upstream, serve, receiver):
    server = serve(traced_config(upstream))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    server.client().chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}],
    )
    exported(server, receiver)
    (route,) = receiver.named("route")
    found = attributes(route)
    assert found["pointsman.route.removed_count"] == 1
    assert "small" in found["pointsman.route.removed"][0] and "vision" in found["pointsman.route.removed"][0]
    assert found["pointsman.route.plan"] == ["backup"]


def test_streamed_request_is_traced_with_its_finish_reason(upstream, serve, receiver):
    server = serve(traced_config(upstream))
    stream = server.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    exported(server, receiver)
    (request,) = receiver.named("chat auto")
    assert attributes(request)["gen_ai.response.finish_reasons"] == ["stop"]
    assert "traceparent" in upstream.requests("small")[0].headers


def test_content_is_exported_only_when_enabled(upstream, serve, receiver):
    server = serve(traced_config(upstream, capture_content=True))
    server.client().chat.completions.create(model="auto", messages=[{"role": "user", "content": PROMPT}])
    exported(server, receiver)
    (request,) = receiver.named("chat auto")
    assert PROMPT in attributes(request)["gen_ai.input.messages"]
    assert "gen_ai.output.messages" in attributes(request)


def test_tracing_is_off_unless_configured_or_asked_for_by_otel_variables(upstream, serve, monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert serve(traced_config(upstream)).router.tracing is None
    assert serve(traced_config(upstream)).router.dispatcher.tracing is None
    assert tracing_wanted(TracingSettings(), {"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing_wanted(TracingSettings(), {"OTEL_TRACES_EXPORTER": "none"})
    assert tracing_wanted(TracingSettings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing_wanted(TracingSettings(enabled=True), {"OTEL_SDK_DISABLED": "true"})
    assert tracing_wanted(TracingSettings(enabled=True), {})


def test_cache_hit_is_a_request_span_without_attempts(upstream, serve, receiver):
    config = traced_config(upstream)
    config["models"]["auto"]["cache"] = {}
    server = serve(config)
    for _ in range(2):
        server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], temperature=0
        )
    exported(server, receiver)
    miss, hit = sorted(receiver.named("chat auto"), key=lambda s: s.start_time_unix_nano)
    assert attributes(miss)["pointsman.cache"] == "miss" and attributes(hit)["pointsman.cache"] == "hit"
    assert attributes(hit)["gen_ai.response.finish_reasons"] == ["stop"]
    assert [s.parent_span_id for s in receiver.named("chat model-small")] == [miss.span_id]
