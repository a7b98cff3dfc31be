"""The dashboard: one HTML page at `/dashboard` (no build step; charts from the vendored
Chart.js under `/dashboard/static/`) that reads `GET /dashboard/api/summary?since=24h` with the
master key or a read-only key (scope "dashboard")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pointsman.admin import bearer
from pointsman.dashboard.summary import budget_burn, key_names, summarise
from pointsman.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, PointsmanError
from pointsman.keys import VirtualKey, key_fingerprint
from pointsman.store import parse_duration

if TYPE_CHECKING:
    from pointsman.router import Router

STATIC = Path(__file__).parent / "static"
DEFAULT_WINDOW = "24h"
# Everything the page loads comes from pointsman itself; record values are only ever text.
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}


def dashboard_routes(router: Router) -> list[BaseRoute]:
    access = router.access

    async def authorise(request: Request) -> None:
        """The master key or an active key with the "dashboard" scope; else 401/403. A key not
        in the cache is read off the event loop."""
        if access.master_key is None:
            raise PermissionDenied(
                f"the dashboard is off: set {router.config.auth.master_key_env} to enable it",
                code="admin_disabled",
            )
        token = bearer(request)
        if not token:
            raise AuthenticationFailed("missing key: send 'Authorization: Bearer <master or read-only key>'")
        if access.is_master(token):
            return
        if access.is_static(token):
            raise PermissionDenied(
                "a static client key (server.api_keys) admits the API, not the dashboard: use the "
                "master key or a read-only key (pointsman keys create NAME --read-only)",
                code="dashboard_scope_required",
            )
        key = await router.keys.alookup(token) if router.keys is not None else None
        if key is None:
            raise AuthenticationFailed("invalid API key")
        if not key.active():
            raise AuthenticationFailed(f"API key {key.name!r} was revoked or has expired")
        if not key.can("dashboard"):
            raise PermissionDenied(
                f"API key {key.name!r} may not read the dashboard: use the master key or a read-only "
                "key (pointsman keys create NAME --read-only)",
                code="dashboard_scope_required",
            )

    def window(request: Request) -> tuple[float, float]:
        now = time.time()
        try:
            since = now - parse_duration(request.query_params.get("since", DEFAULT_WINDOW))
            until = (
                now - parse_duration(request.query_params["until"])
                if "until" in request.query_params
                else now
            )
        except ValueError as exc:
            raise InvalidRequest(f"query parameter: {exc}", code="invalid_query") from None
        return since, until + 1e-3

    async def summary(request: Request) -> Response:
        try:
            await authorise(request)
            since, until = window(request)
            store = router.store
            if store is None:
                raise PermissionDenied(
                    "records are off, so there is nothing to summarise", code="records_disabled"
                )
            fingerprint = key_fingerprint(access.master_key)

            def compute() -> tuple[dict[str, Any], list[VirtualKey]]:
                keys = router.keys.list() if router.keys is not None else []
                records = store.window(since, until)
                names = key_names(keys, fingerprint)
                return summarise(records, since=since, until=until, config=router.config, names=names), keys

            data, keys = await run_in_threadpool(compute)
            # The ledger belongs to the event loop's thread (it also counts reservations in flight).
            data["budgets"] = budget_burn(keys, router.config, router.ledger)
        except PointsmanError as exc:
            return Response(orjson.dumps(exc.body()), status_code=exc.status, media_type="application/json",
                            headers=exc.headers)  # fmt: skip
        return Response(
            orjson.dumps(data), media_type="application/json", headers={"cache-control": "no-store"}
        )

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "dashboard.html", headers=PAGE_HEADERS)

    async def slash(request: Request) -> Response:
        return RedirectResponse("/dashboard", status_code=308)

    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/", slash, methods=["GET"]),
        Route("/dashboard/api/summary", summary, methods=["GET"]),
        Mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static"),
    ]
