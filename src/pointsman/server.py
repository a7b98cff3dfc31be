"""The OpenAI-compatible HTTP face of a Router."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pointsman.errors import AuthenticationFailed, BodyTooLarge, InvalidRequest, PointsmanError
from pointsman.router import Router, new_request_id

JSON = "application/json"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def error_response(exc: PointsmanError, request_id: str | None = None) -> Response:
    headers = dict(exc.headers)
    if request_id:
        headers.setdefault("x-pointsman-request-id", request_id)
    return _json(exc.body(), exc.status, headers)


def create_app(router: Router) -> Starlette:
    """A Starlette app serving `router`: /v1/chat/completions, /v1/models, /healthz, /readyz."""
    settings = router.config.server
    keys = tuple(k.encode() for k in settings.api_keys)
    limit = settings.max_body_bytes

    def authenticate(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        token = (
            auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key")
        )
        if not keys:
            return token or None
        if not token:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        if not any(hmac.compare_digest(token.encode(), k) for k in keys):
            raise AuthenticationFailed("invalid API key")
        return token

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(
                f"request body of {declared} bytes exceeds the limit of {limit} bytes"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def chat_completions(request: Request) -> Response:
        started = perf_counter()
        request_id = new_request_id()
        key = None
        try:
            key = authenticate(request)
            raw = await read_body(request)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidRequest(
                    f"request body is not valid JSON: {exc}", code="invalid_json"
                ) from None
        except PointsmanError as exc:
            router.record_rejection(exc, request_id=request_id, started=started, key=key)
            return error_response(exc, request_id)
        try:
            reply = await router.handle(
                body, request.headers, request_id=request_id, started=started, key=key
            )
        except PointsmanError as exc:
            return error_response(exc, request_id)
        if reply.stream is not None:
            return StreamingResponse(
                reply.stream,
                media_type="text/event-stream",
                headers={**reply.headers, "cache-control": "no-cache"},
            )
        return Response(reply.body, media_type=JSON, headers=reply.headers)

    async def models(request: Request) -> Response:
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "pointsman",
                "pointsman": {
                    "kind": "virtual",
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
        status = 200 if available else 503
        return _json(
            {
                "status": "ready" if available else "unavailable",
                "deployments": len(router.config.deployments),
                "cooling_down": cooling,
                "records": router.store is not None,
            },
            status,
        )

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
        yield
        await router.aclose()
        if router.store is not None:
            router.store.close()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )


class ServerThread:
    """Runs a router's server on loopback in a background thread (demo, tests, benchmarks)."""

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket
        import threading

        import uvicorn

        self.router = router
        self._socket = socket.socket()
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(
            create_app(router),
            log_level="warning",
            access_log=False,
            lifespan="on",
            loop="uvloop" if _has_uvloop() else "asyncio",
            http="httptools",
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
