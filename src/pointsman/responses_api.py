"""The inbound OpenAI Responses API, `POST /v1/responses`: validated at the edge, translated to
the router's chat shape, routed through the same pipeline as chat completions (signals,
policies, strategies, fallbacks, budgets, records, decision headers), and the answer translated
back into a Response or its typed stream of events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from time import perf_counter
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pointsman.admin import read_json
from pointsman.errors import InvalidRequest, PointsmanError
from pointsman.providers.responses import PASSTHROUGH, Passthrough
from pointsman.responses_format import (
    ChatToResponsesStream,
    ResponseShell,
    parse_request,
    sse,
    to_chat_request,
    to_response,
)
from pointsman.router import Router, new_request_id

Authenticate = Callable[[Mapping[str, str]], "str | None"]


def openai_error(exc: PointsmanError, request_id: str) -> Response:
    """`exc` in OpenAI's error shape, with the request id pointsman recorded it under."""
    headers = {"x-pointsman-request-id": request_id, **exc.headers}
    return Response(orjson.dumps(exc.body()), exc.status, headers, media_type="application/json")


def responses_routes(router: Router, authenticate: Authenticate) -> list[Route]:
    limit = router.config.server.max_body_bytes

    async def create(request: Request) -> Response:
        started = perf_counter()
        request_id = new_request_id()
        # For the server's handler of unexpected exceptions: the id, and whether a record exists.
        request.state.request_id, request.state.started = request_id, started
        key = None
        try:
            key = authenticate(request.headers)
            body = await read_json(request, limit)
            parsed = parse_request(body)
            chat = to_chat_request(parsed)
        except PointsmanError as exc:
            router.record_rejection(exc, request_id=request_id, started=started, key=key)
            request.state.recorded = True
            return openai_error(exc, request_id)
        # Deployments that speak the Responses API get the body as sent (providers.responses).
        exchange = Passthrough(chat, body)
        token = PASSTHROUGH.set(exchange)
        try:
            reply = await router.handle(
                chat, request.headers, request_id=request_id, started=started, key=key
            )
        except PointsmanError as exc:
            request.state.recorded = True
            return openai_error(exc, request_id)
        finally:
            PASSTHROUGH.reset(token)
        request.state.recorded = True
        shell = ResponseShell(parsed, "resp_" + request_id.removeprefix("req_"))
        if reply.stream is None:
            assert reply.body is not None
            native = exchange.answers.get(reply.decision.answered_by or "")
            answer = native if native is not None else to_response(orjson.loads(reply.body), shell)
            return Response(orjson.dumps(answer), media_type="application/json", headers=reply.headers)
        return StreamingResponse(
            _events(reply.stream, ChatToResponsesStream(shell)),
            media_type="text/event-stream",
            headers={**reply.headers, "cache-control": "no-cache"},
        )

    async def stored(request: Request) -> Response:
        # Retrieve, delete, cancel, list input items: all need stored responses.
        error = InvalidRequest(
            f"response {request.path_params['response_id']!r} not found: pointsman does not store "
            "responses (send the whole conversation in `input` instead)",
            status=404,
            code="not_found",
        )
        return openai_error(error, new_request_id())

    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/{response_id}", stored, methods=["GET", "DELETE"]),
        Route("/v1/responses/{response_id}/{action:path}", stored, methods=["GET", "POST"]),
    ]


async def _events(stream: AsyncIterator[bytes], translator: ChatToResponsesStream) -> AsyncIterator[bytes]:
    try:
        async for event in _translated(stream, translator):
            yield event
    finally:
        # A client that leaves mid-stream ends the routed stream now (its record says so), not
        # whenever the generator is collected.
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


async def _translated(
    stream: AsyncIterator[bytes], translator: ChatToResponsesStream
) -> AsyncIterator[bytes]:
    yield b"".join(sse(kind, payload) for kind, payload in translator.start())
    async for raw in stream:
        out: list[bytes] = []
        # One chat SSE event per item as the router relays them; split in case one holds more.
        for event in raw.split(b"\n\n"):
            data = event.removeprefix(b"data:").strip()
            if not data.startswith(b"{"):
                continue
            chunk: Any = orjson.loads(data)
            if "error" in chunk:
                # The router's mid-stream failure event: the Response fails, visibly.
                message = str((chunk["error"] or {}).get("message") or "upstream failed mid-stream")
                out += [sse(k, p) for k, p in translator.fail(message)]
                yield b"".join(out)
                return
            out += [sse(k, p) for k, p in translator.feed(chunk)]
        if out:
            yield b"".join(out)
    yield b"".join(sse(kind, payload) for kind, payload in translator.finish())
