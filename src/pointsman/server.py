"""The OpenAI-compatible HTTP face of a Router."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pointsman.admin import admin_routes
from pointsman.anthropic_api import anthropic_error, anthropic_routes
from pointsman.dashboard import dashboard_routes
from pointsman.dispatch import validate_chat_body
from pointsman.embeddings_api import embeddings_routes
from pointsman.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    InvalidRequest,
    PointsmanError,
    RequestIncomplete,
)
from pointsman.feedback import feedback_routes
from pointsman.responses_api import responses_routes
from pointsman.router import Router, new_request_id
from pointsman.schemas import openapi_schema, validate_chat

JSON = "application/json"
log = logging.getLogger("pointsman.server")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def error_response(exc: PointsmanError, request_id: str | None = None) -> Response:
    headers = dict(exc.headers)
    if request_id:
        headers.setdefault("x-pointsman-request-id", request_id)
    return _json(exc.body(), exc.status, headers)


def internal_error(path: str, request_id: str) -> Response:
    """The 500 for an unexpected exception: JSON in the route's API shape, with the request id
    (the traceback goes to the log, never to the client)."""
    error = PointsmanError(
        f"internal error (request {request_id}); the server logged it", code="internal_error"
    )
    error.headers["x-pointsman-request-id"] = request_id
    if path.startswith("/v1/messages"):
        return anthropic_error(error)
    return error_response(error)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_JSON_HEADER = (b"content-type", b"application/json")


def create_app(router: Router) -> ASGIApp:
    """An ASGI app serving `router`: /v1/chat/completions, /v1/models, /healthz, /readyz.

    Chat completions, the path every request pays for, are served straight on ASGI messages;
    everything else (the other routes, 404/405, lifespan) goes through a Starlette app.
    """
    settings = router.config.server
    access = router.access
    limit = settings.max_body_bytes

    def authenticate(headers: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key")
        # With virtual keys on, the router authenticates (master, static and virtual keys).
        if not settings.api_keys or access.enabled:
            return token or None
        if not token:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        if not access.is_static(token):
            raise AuthenticationFailed("invalid API key")
        return token

    async def read_body(headers: Mapping[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(
                f"request body of {declared} bytes exceeds the limit of {limit} bytes"
            )
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestIncomplete()
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
            return body
        chunks, size = [body], len(body)
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestIncomplete()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        request_id = new_request_id()
        responded = False

        async def tracked(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await serve_chat(scope, receive, tracked, request_id, started)
        except Exception as exc:
            log.exception("internal error serving %s (request %s)", scope["path"], request_id)
            if not scope.get("state", {}).get("recorded"):
                record_failure(exc, request_id, started)
            if responded:
                raise  # mid-answer: nothing more to send; the server closes the connection
            await internal_error(scope["path"], request_id)(scope, receive, send)

    def record_failure(exc: Exception, request_id: str, started: float) -> None:
        failure = PointsmanError(f"internal error: {type(exc).__name__}", code="internal_error")
        router.record_rejection(failure, request_id=request_id, started=started)

    async def serve_chat(
        scope: Scope, receive: Receive, send: Send, request_id: str, started: float
    ) -> None:
        # uvicorn (like every ASGI server) hands header names over lower-cased; the first of a
        # repeated header wins, as in Starlette's Headers.
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        key = None
        try:
            key = authenticate(headers)
            raw = await read_body(headers, receive)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidRequest(
                    f"request body is not valid JSON: {exc}", code="invalid_json"
                ) from None
            # The body's shape before anything else: a client's mistake never reaches a deployment.
            # The router's own check first, for its long-standing messages on the basic fields.
            validate_chat_body(body)
            validate_chat(body)
        except PointsmanError as exc:
            router.record_rejection(exc, request_id=request_id, started=started, key=key)
            await error_response(exc, request_id)(scope, receive, send)
            return
        # `handle` records what it answers, refusals included; an exception it did not expect it
        # leaves unrecorded, for `chat_completions` to record as a 500.
        state = scope.setdefault("state", {})
        try:
            reply = await router.handle(
                body, headers, request_id=request_id, started=started, key=key
            )
        except PointsmanError as exc:
            state["recorded"] = True
            await error_response(exc, request_id)(scope, receive, send)
            return
        state["recorded"] = True
        if reply.stream is not None:
            # Starlette's streaming response stops the upstream stream when the client leaves.
            response = StreamingResponse(
                reply.stream,
                media_type="text/event-stream",
                headers={**reply.headers, "cache-control": "no-cache"},
            )
            await response(scope, receive, send)
            return
        payload = reply.body or b""
        raw_headers = [_JSON_HEADER, (b"content-length", b"%d" % len(payload))]
        raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})

    async def models(request: Request) -> Response:
        # Listed to whoever may call the API: any valid key once keys are in force.
        try:
            token = authenticate(request.headers)
            if access.enabled:
                await access.aauthenticate(token)
        except PointsmanError as exc:
            return error_response(exc)
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "pointsman",
                "pointsman": {
                    "kind": "virtual",
                    "type": vm.type,
                    "strategy": vm.strategy,
                    "description": vm.description,
                },
            }
            for name, vm in router.config.models.items()
        ] + [
            {
                "id": d.name,
                "object": "model",
                "created": created,
                "owned_by": d.provider,
                "pointsman": {
                    "kind": "deployment",
                    "mode": d.mode,
                    "model": d.model,
                    "region": d.region,
                    "context_window": d.context_window,
                },
            }
            for d in router.config.deployments
        ]
        return _json({"object": "list", "data": data})

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        cooling = {
            d.name: round(left, 1)
            for d in router.config.deployments
            if (left := router.state.cooling_for(d.name)) > 0
        }
        available = len(router.config.deployments) - len(cooling)
        degraded = router.degraded
        # Degraded still serves (from local state, or buffering records): ready, but say so.
        status = 200 if available else 503
        return _json(
            {
                "status": ("degraded" if degraded else "ready") if available else "unavailable",
                "degraded": degraded,
                "deployments": len(router.config.deployments),
                "cooling_down": cooling,
                "circuits": router.state.circuits(),
                "records": router.store is not None,
                "state": "redis" if router.shared is not None else "memory",
            },
            status,
        )

    async def openapi(request: Request) -> Response:
        return _json(openapi_schema())

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Starlette's outermost middleware calls this, then re-raises for the server to log the
        # traceback. API routes set `request_id` first, and `recorded` once the router has.
        state = request.scope.setdefault("state", {})
        request_id = state.get("request_id") or new_request_id()
        log.error("internal error serving %s (request %s): %r", request.url.path, request_id, exc)
        if "request_id" in state and not state.get("recorded"):
            record_failure(exc, request_id, state.get("started", perf_counter()))
        return internal_error(request.url.path, request_id)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(
            PointsmanError(
                f"no route for {request.method} {request.url.path}", status=404, code="not_found"
            )
        )

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(
            PointsmanError(
                f"method {request.method} not allowed on {request.url.path}",
                status=405,
                code="method_not_allowed",
            )
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await router.start()
        tasks = [asyncio.ensure_future(router.run_probes())]
        if router.config.server.watch_config:
            tasks.append(asyncio.ensure_future(router.watch_config()))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await router.aclose()
        if router.store is not None:
            router.store.close()

    async def chat_route(request: Request) -> Response:
        # Never reached for POST (served above); present so other methods get a 405.
        raise AssertionError("chat completions are served before routing")

    rest = Starlette(
        routes=[
            *(Route(path, chat_route, methods=["POST"]) for path in sorted(CHAT_PATHS)),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *feedback_routes(router),
            *admin_routes(router),
            *anthropic_routes(router, authenticate),
            *responses_routes(router, authenticate),
            *embeddings_routes(router, authenticate),
            *dashboard_routes(router),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed, Exception: unexpected},
        lifespan=lifespan,
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in CHAT_PATHS:
            await chat_completions(scope, receive, send)
            return
        await rest(scope, receive, send)

    return app


def app_from_environment() -> ASGIApp:
    """The app of one `pointsman serve --workers N` worker: config from `POINTSMAN_CONFIG`,
    records to `POINTSMAN_DB` when set."""
    import os

    from pointsman.inbound import configure

    router = Router.from_config(os.environ["POINTSMAN_CONFIG"], db=os.environ.get("POINTSMAN_DB"))
    configure(router.config.server.timeouts)
    return create_app(router)


class ServerThread:
    """Runs a router's server on loopback in a background thread (demo, tests, benchmarks)."""

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket
        import threading

        import uvicorn

        from pointsman.inbound import protocol_class

        self.router = router
        self._socket = socket.socket()
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        timeouts = router.config.server.timeouts
        options: dict[str, Any] = {"timeout_keep_alive": timeouts.keep_alive}  # uvicorn types it int
        config = uvicorn.Config(
            create_app(router),
            log_level="warning",
            access_log=False,
            lifespan="on",
            loop="uvloop" if _has_uvloop() else "asyncio",
            http=protocol_class(timeouts),
            **options,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("pointsman server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
