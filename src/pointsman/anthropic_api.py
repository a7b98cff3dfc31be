"""The inbound Anthropic Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`,
routed through the same pipeline as chat completions (translated to the internal OpenAI shape
and back), so Anthropic clients and agent frameworks get routing, failover and records too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pointsman.admin import read_json
from pointsman.errors import InvalidRequest, PermissionDenied, PointsmanError
from pointsman.providers.anthropic_request import TranslationError, from_anthropic_request
from pointsman.providers.anthropic_response import to_anthropic_response
from pointsman.providers.anthropic_stream import OpenAIToAnthropicStream
from pointsman.signals import Signals

if TYPE_CHECKING:
    from pointsman.router import Router

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


def anthropic_error(exc: PointsmanError) -> Response:
    kind = ERROR_TYPES.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": exc.message}}
    return Response(
        orjson.dumps(body), status_code=exc.status, media_type="application/json", headers=exc.headers
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def anthropic_routes(router: Router) -> list[Route]:
    limit = router.config.server.max_body_bytes

    def credentials(request: Request) -> str | None:
        key = request.headers.get("x-api-key")
        if key:
            return key
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    async def read(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Anthropic body and its OpenAI translation; raises 400/413."""
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        for field in ("model", "messages"):
            if field not in body:
                raise InvalidRequest(f"{field}: Field required", code="invalid_request")
        try:
            return body, from_anthropic_request(body)
        except TranslationError as exc:
            raise InvalidRequest(str(exc), code="invalid_request") from None

    async def messages(request: Request) -> Response:
        started = perf_counter()
        try:
            body, chat = await read(request)
            if "max_tokens" not in body:
                raise InvalidRequest("max_tokens: Field required", code="invalid_request")
            key = credentials(request)
            # Made here, not in `handle`, because the stream translator needs the token estimate too.
            signals = router.analyse(chat, request.headers, key=key)
            reply = await router.handle(chat, request.headers, started=started, key=key, signals=signals)
        except PointsmanError as exc:
            return anthropic_error(exc)
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
        try:
            _, chat = await read(request)
            if router.access.enabled:
                key = router.access.authenticate(credentials(request))
                if key is not None and not key.can("chat"):
                    raise PermissionDenied(f"API key {key.name!r} is read-only", code="read_only_key")
        except PointsmanError as exc:
            return anthropic_error(exc)
        return Response(
            orjson.dumps({"input_tokens": Signals(chat).estimated_tokens}), media_type="application/json"
        )

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
