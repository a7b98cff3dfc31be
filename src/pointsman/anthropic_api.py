"""The inbound Anthropic Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`,
routed through the same pipeline as chat completions (translated to the internal OpenAI shape
and back), so Anthropic clients and agent frameworks get routing, failover and records too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from time import perf_counter
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pointsman.admin import read_json
from pointsman.errors import InvalidRequest, PermissionDenied, PointsmanError
from pointsman.providers.anthropic_request import TranslationError, from_anthropic_request
from pointsman.providers.anthropic_response import to_anthropic_response
from pointsman.providers.anthropic_stream import OpenAIToAnthropicStream
from pointsman.responses_api import Authenticate
from pointsman.router import Router, new_request_id
from pointsman.schemas import validate_messages
from pointsman.signals import Signals

# Anthropic's error types by HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error(exc: PointsmanError, request_id: str | None = None) -> Response:
    kind = ERROR_TYPES.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": exc.message}}
    headers = dict(exc.headers)
    if request_id:
        headers.setdefault("x-pointsman-request-id", request_id)
    return Response(
        orjson.dumps(body), status_code=exc.status, media_type="application/json", headers=headers
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def anthropic_routes(router: Router, authenticate: Authenticate) -> list[Route]:
    """`authenticate` is the server's check of static keys (a no-op when virtual keys are on:
    the router checks those)."""
    limit = router.config.server.max_body_bytes

    def credentials(request: Request) -> str | None:
        key = request.headers.get("x-api-key")
        if key:
            return key
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    async def read(request: Request, count_tokens: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Anthropic body and its OpenAI translation; raises 400/413."""
        body = await read_json(request, limit)
        validate_messages(body, count_tokens=count_tokens)
        try:
            return body, from_anthropic_request(body)
        except TranslationError as exc:
            raise InvalidRequest(str(exc), code="invalid_request") from None

    async def messages(request: Request) -> Response:
        started = perf_counter()
        request_id = new_request_id()
        # For the server's handler of unexpected exceptions: the id, and whether a record exists.
        request.state.request_id, request.state.started = request_id, started
        key = credentials(request)
        try:
            authenticate({"x-api-key": key} if key else {})
            body, chat = await read(request)
        except PointsmanError as exc:
            router.record_rejection(exc, request_id=request_id, started=started, key=key)
            request.state.recorded = True
            return anthropic_error(exc, request_id)
        try:
            # Made here, not in `handle`, because the stream translator needs the token estimate too.
            signals = router.analyse(chat, request.headers, key=key)
            reply = await router.handle(
                chat, request.headers, request_id=request_id, started=started, key=key, signals=signals
            )
        except PointsmanError as exc:
            request.state.recorded = True
            return anthropic_error(exc, request_id)
        request.state.recorded = True
        model = str(body["model"])
        if reply.stream is None:
            assert reply.body is not None
            message = to_anthropic_response(orjson.loads(reply.body), model)
            return Response(orjson.dumps(message), media_type="application/json", headers=reply.headers)
        stream = reply.stream
        translator = OpenAIToAnthropicStream(model, signals.estimated_tokens)

        async def events() -> AsyncIterator[bytes]:
            async for event in stream:
                data = event[6:].strip()
                if data == b"[DONE]" or not data.startswith(b"{"):
                    continue
                chunk = orjson.loads(data)
                if "error" in chunk:
                    yield _sse(
                        "error",
                        {
                            "type": "error",
                            "error": {"type": "api_error", "message": chunk["error"]["message"]},
                        },
                    )
                    return
                for name, payload in translator.feed(chunk):
                    yield _sse(name, payload)
            for name, payload in translator.finish():
                yield _sse(name, payload)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={**reply.headers, "cache-control": "no-cache"}
        )

    async def count_tokens(request: Request) -> Response:
        started = perf_counter()
        request_id = new_request_id()
        request.state.request_id, request.state.started = request_id, started
        secret = credentials(request)
        try:
            authenticate({"x-api-key": secret} if secret else {})
            _, chat = await read(request, count_tokens=True)
            if router.access.enabled:
                key = await router.access.aauthenticate(secret)
                if key is not None and not key.can("chat"):
                    raise PermissionDenied(f"API key {key.name!r} is read-only", code="read_only_key")
        except PointsmanError as exc:
            # A refused count is recorded like a refused message (the records are the audit trail).
            router.record_rejection(exc, request_id=request_id, started=started, key=secret)
            request.state.recorded = True
            return anthropic_error(exc, request_id)
        return Response(
            orjson.dumps({"input_tokens": Signals(chat).estimated_tokens}), media_type="application/json"
        )

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
