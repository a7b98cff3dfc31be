"""OpenTelemetry traces of routed requests (the `otel` extra), exported over OTLP/HTTP as the
standard OTEL_* environment variables configure.

One span a request (`chat <model>`, kind SERVER, a child of the caller's `traceparent` when it
sent one) with the GenAI semantic conventions' attributes; under it one `route` span (strategy,
reason, plan, candidates removed and why) and one CLIENT span per upstream attempt (deployment,
status, latency, retry or fallback), whose context goes upstream in the request's
`traceparent`. Prompts and answers are exported only with `tracing.capture_content: true`.
When tracing is off the router holds None and does nothing else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from pointsman.config import Config, Deployment, TracingSettings
from pointsman.providers.base import upstream_headers

if TYPE_CHECKING:
    from pointsman.decision import Attempt, Decision

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def tracing_wanted(settings: TracingSettings, environ: Mapping[str, str] = os.environ) -> bool:
    """On by config, else by the standard variables; OTEL_SDK_DISABLED=true turns it off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if settings.enabled is not None:
        return settings.enabled
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return "otlp" in exporter.split(",")
    return any(environ.get(name) for name in _ENDPOINT_VARIABLES)


def build_tracing(config: Config) -> Tracing | None:
    """The router's tracing, or None when it is off. Raises RuntimeError naming the extra
    when tracing is asked for without the OpenTelemetry packages."""
    if not tracing_wanted(config.tracing):
        return None
    return Tracing(config.tracing)


@dataclass(slots=True)
class RequestTrace:
    """The spans of one request while it is in flight."""

    span: Any
    context: Any
    attempts: list[tuple[Attempt, Any, Deployment]] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    response_model: str | None = None
    response_id: str | None = None


class Tracing:
    def __init__(self, settings: TracingSettings) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            raise RuntimeError("tracing needs OpenTelemetry: pip install 'pointsman[otel]'") from None
        self.settings = settings
        self._trace = trace
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": settings.service_name}
        # A provider of the router's own, not the global one: a process may hold several routers.
        self.provider = TracerProvider(resource=Resource.create(attributes))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("pointsman")
        self.propagator = TraceContextTextMapPropagator()
        self._live: dict[str, RequestTrace] = {}

    # -- the request --------------------------------------------------------------------------

    def start(self, request_id: str, body: Any, headers: Mapping[str, str] | None) -> RequestTrace:
        """Open the request's span, as a child of the caller's `traceparent` if any."""
        # Only a request that carries trace context pays for parsing it.
        parent = self.propagator.extract(headers) if headers and headers.get("traceparent") else None
        model = body.get("model") if isinstance(body, dict) else None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "pointsman.request_id": request_id,
        }
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        if isinstance(body, dict):
            for name, attribute in (
                ("temperature", "gen_ai.request.temperature"),
                ("top_p", "gen_ai.request.top_p"),
                ("max_tokens", "gen_ai.request.max_tokens"),
                ("max_completion_tokens", "gen_ai.request.max_tokens"),
                ("seed", "gen_ai.request.seed"),
            ):
                value = body.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    attributes[attribute] = value
            if self.settings.capture_content:
                attributes["gen_ai.input.messages"] = orjson.dumps(body.get("messages")).decode()
        span = self.tracer.start_span(
            f"chat {model}" if isinstance(model, str) else "chat",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes=attributes,
        )
        trace = RequestTrace(span, self._trace.set_span_in_context(span))
        self._live[request_id] = trace
        return trace

    def routed(self, trace: RequestTrace, decision: Decision, started_ns: int) -> None:
        """The routing step as a child span: strategy, reason codes, plan, removals."""
        removed = [r for r in decision.reasons if ": removed " in r]
        span = self.tracer.start_span(
            "route",
            context=trace.context,
            start_time=started_ns,
            attributes={
                "pointsman.route.strategy": decision.strategy,
                "pointsman.route.reason": decision.reason,
                "pointsman.route.plan": list(decision.plan),
                "pointsman.route.reasons": list(decision.reasons),
                "pointsman.route.removed": removed,
                "pointsman.route.removed_count": len(removed),
            },
        )
        span.end()

    def attempt(self, decision: Decision, attempt: Attempt, deployment: Deployment) -> None:
        """An upstream call begins: open its span and put its context in the `traceparent` the
        provider sends (for this task only)."""
        trace = self._live.get(decision.request_id)
        if trace is None:
            return
        tried = sum(1 for a in decision.attempts if a is not attempt)
        span = self.tracer.start_span(
            f"chat {deployment.model}",
            context=trace.context,
            kind=self._trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": deployment.provider,
                "gen_ai.request.model": deployment.model,
                "pointsman.deployment": deployment.name,
                "pointsman.attempt.role": attempt.role,
                "pointsman.attempt.number": tried + 1,
                "pointsman.attempt.retry": any(
                    a.deployment == deployment.name for a in decision.attempts[:-1]
                ),
                "pointsman.attempt.fallback": any(
                    a.deployment != deployment.name for a in decision.attempts[:-1]
                ),
            },
        )
        trace.attempts.append((attempt, span, deployment))
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        upstream_headers.set(carrier)

    def answer(self, trace: RequestTrace, body: bytes) -> None:
        """Note a non-streamed answer's model, id and finish reasons (and its text, if allowed)."""
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        trace.response_model = answer.get("model")
        trace.response_id = answer.get("id")
        choices = answer.get("choices") or []
        trace.finish_reasons = [str(c.get("finish_reason")) for c in choices if c.get("finish_reason")]
        if self.settings.capture_content:
            trace.span.set_attribute(
                "gen_ai.output.messages", orjson.dumps([c.get("message") for c in choices]).decode()
            )

    def chunk(self, trace: RequestTrace, event: bytes) -> None:
        """Note what a streamed chunk says about the answer (model, id, finish reasons)."""
        data = event[6:].strip()
        if not data.startswith(b"{"):
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:  # the client gets the chunk as it came; the span goes without
            return
        if trace.response_model is None:
            trace.response_model = chunk.get("model")
            trace.response_id = chunk.get("id")
        for choice in chunk.get("choices") or ():
            if choice.get("finish_reason"):
                trace.finish_reasons.append(str(choice["finish_reason"]))

    def finish(
        self,
        request_id: str,
        trace: RequestTrace,
        decision: Decision | None,
        deployment: Deployment | None,
        usage: tuple[int, int],
        status: int,
        error: str | None,
        cache: str | None,
        cost: float,
    ) -> None:
        """End the attempt spans (their times from the attempts) and the request span."""
        self._live.pop(request_id, None)
        now = time.time_ns()
        for attempt, span, _ in trace.attempts:
            # One set_attributes call a span: the SDK takes its lock once, not per attribute.
            found: dict[str, Any] = {"pointsman.attempt.latency_ms": round(attempt.latency_ms, 3)}
            if attempt.status is not None:
                found["http.response.status_code"] = attempt.status
            if attempt.error:
                found["error.type"] = attempt.error.split(" ", 1)[0]
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, attempt.error))
            if attempt.verdict:
                found["pointsman.attempt.verdict"] = attempt.verdict
            span.set_attributes(found)
            # Ended when the request ends, dated when the call did (its start plus its latency).
            span.end(end_time=span.start_time + int(attempt.latency_ms * 1e6) if attempt.latency_ms else now)
        span = trace.span
        ended: dict[str, Any] = {
            "http.response.status_code": status,
            "gen_ai.usage.input_tokens": usage[0],
            "gen_ai.usage.output_tokens": usage[1],
            "pointsman.cost_usd": cost,
        }
        if deployment is not None:
            ended["gen_ai.provider.name"] = deployment.provider
            ended["pointsman.deployment"] = deployment.name
        model = trace.response_model or (deployment.model if deployment is not None else None)
        if model:
            ended["gen_ai.response.model"] = model
        if trace.response_id:
            ended["gen_ai.response.id"] = trace.response_id
        if trace.finish_reasons:
            ended["gen_ai.response.finish_reasons"] = trace.finish_reasons
        if decision is not None:
            ended["pointsman.route"] = decision.route
            ended["pointsman.fallbacks"] = decision.fallbacks
        if cache is not None:
            ended["pointsman.cache"] = cache
        if status != 200:
            ended["error.type"] = str(status)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error or str(status)))
        span.set_attributes(ended)
        span.end()

    def flush(self, timeout_ms: int = 5000) -> bool:
        """Export every ended span now (tests, shutdown)."""
        return bool(self.provider.force_flush(timeout_ms))

    def close(self) -> None:
        self.provider.shutdown()
