"""Administration over HTTP (master key): virtual keys, the audit trail, spend; and the
Prometheus `/metrics` page."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pointsman.config import ConfigError
from pointsman.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    InvalidRequest,
    PermissionDenied,
    PointsmanError,
)
from pointsman.keys import validate_spec

# The most records one audit query returns, on SQLite and PostgreSQL alike.
MAX_RECORDS = 10_000

_Finite = Annotated[float, Field(allow_inf_nan=False)]


class RecordsQuery(BaseModel):
    """The query parameters of `GET /admin/records`."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(100, ge=1, le=MAX_RECORDS)
    since: _Finite | None = None
    until: _Finite | None = None
    status: int | None = Field(None, ge=100, le=599)
    model: str | None = None
    key: str | None = None
    reason: str | None = None
    region: str | None = None
    team: str | None = None
    user: str | None = None


_QUERY_EXPECTED = {
    "limit": f"an integer from 1 to {MAX_RECORDS}",
    "since": "a time in seconds since the epoch",
    "until": "a time in seconds since the epoch",
    "status": "an HTTP status code (100-599)",
}


def records_query(params: dict[str, str]) -> RecordsQuery:
    """Typed `GET /admin/records` parameters; raises InvalidRequest naming the bad one."""
    try:
        return RecordsQuery.model_validate(params)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "query"
        raise InvalidRequest(
            f"query parameter {name!r} must be {_QUERY_EXPECTED.get(name, 'a string')}"
            f" (got {str(error['input'])[:40]!r})",
            code="invalid_query",
        ) from None


if TYPE_CHECKING:
    from pointsman.router import Router


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(exc: PointsmanError) -> Response:
    return Response(
        orjson.dumps(exc.body()), status_code=exc.status, media_type="application/json", headers=exc.headers
    )


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key")


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body; 413 past `limit` bytes, 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    raw = await request.body()
    if len(raw) > limit:
        raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None


def admin_routes(router: Router) -> list[Route]:
    access = router.access

    async def is_client_key(token: str) -> bool:
        if access.is_static(token):
            return True
        if router.keys is None:
            return False
        try:
            return await router.keys.alookup(token) is not None
        except PointsmanError:  # the key store is away: say what is certain, not 401
            return True

    async def require_master(request: Request) -> None:
        if access.master_key is None:
            raise PermissionDenied(
                f"administration is off: set {router.config.auth.master_key_env} to enable it",
                code="admin_disabled",
            )
        token = bearer(request)
        if not token:
            raise AuthenticationFailed("missing master key: send 'Authorization: Bearer <master key>'")
        if not access.is_master(token):
            # A client key is known but not enough (403); anything else is no key at all (401).
            if not await is_client_key(token):
                raise AuthenticationFailed("invalid API key")
            raise PermissionDenied("this endpoint needs the master key", code="master_key_required")

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                await require_master(request)
                return await handler(request)
            except PointsmanError as exc:
                return _error(exc)

        return endpoint

    def key_store() -> Any:
        if router.keys is None:
            raise PermissionDenied("virtual keys are off (auth.enabled)", code="keys_disabled")
        return router.keys

    async def create_key(request: Request) -> Response:
        spec = await read_json(request, router.config.server.max_body_bytes)
        # Validated whole before anything is written: a bad field never reaches the store.
        parsed = validate_spec(spec)
        if parsed.name is None:
            raise InvalidRequest("'name' is required", code="invalid_key_spec")
        expires_at = parsed.expires_at
        if parsed.expires_in_s is not None:
            expires_at = time.time() + parsed.expires_in_s
        settings = {k: v for k, v in spec.items() if k not in ("name", "expires_at", "expires_in_s")}
        store = key_store()
        secret, key = await asyncio.to_thread(store.create, parsed.name, settings, expires_at)
        return _json({"key": secret, **key.public()}, 201)

    async def list_keys(request: Request) -> Response:
        keys = await asyncio.to_thread(key_store().list)
        return _json({"object": "list", "data": [k.public() for k in keys]})

    async def revoke_key(request: Request) -> Response:
        key = await asyncio.to_thread(key_store().revoke, request.path_params["key_id"])
        if key is None:
            raise PointsmanError(
                f"no key {request.path_params['key_id']!r}", status=404, code="key_not_found"
            )
        return _json(key.public())

    async def records(request: Request) -> Response:
        if router.store is None:
            raise PermissionDenied("records are off", code="records_disabled")
        query = records_query(dict(request.query_params))
        store = router.store
        rows = await asyncio.to_thread(lambda: store.query(**query.model_dump()))
        return _json({"object": "list", "data": rows})

    async def reload(request: Request) -> Response:
        try:
            config = router.reload()
        except ConfigError as exc:
            raise InvalidRequest(
                "config not reloaded: " + "; ".join(exc.problems), code="invalid_config"
            ) from None
        except ValueError as exc:
            raise InvalidRequest(str(exc), code="no_config_file") from None
        announced = False
        if router.shared is not None and router.shared.healthy:
            await router.shared.announce_reload()
            announced = True
        return _json(
            {
                "reloaded": True,
                "version": router.config_version,
                "deployments": len(config.deployments),
                "models": list(config.models),
                "announced_to_replicas": announced,
            }
        )

    async def spend(request: Request) -> Response:
        return _json({"budgets_remaining": access.remaining()})

    async def metrics(request: Request) -> Response:
        if router.metrics is None:
            return _error(PointsmanError("metrics are off", status=404, code="metrics_disabled"))
        for label, left in access.remaining().items():
            router.metrics.budget_remaining.labels(label).set(left)
        if router.shared is not None:
            router.metrics.backend_up.labels("redis").set(0 if "state" in router.degraded else 1)
        if router.store is not None and hasattr(router.store, "healthy"):
            router.metrics.backend_up.labels("store").set(0 if "store" in router.degraded else 1)
        return Response(router.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return [
        Route("/admin/keys", guarded(create_key), methods=["POST"]),
        Route("/admin/keys", guarded(list_keys), methods=["GET"]),
        Route("/admin/keys/{key_id}", guarded(revoke_key), methods=["DELETE"]),
        Route("/admin/records", guarded(records), methods=["GET"]),
        Route("/admin/spend", guarded(spend), methods=["GET"]),
        Route("/admin/reload", guarded(reload), methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
