"""`POST /v1/feedback`: a rating of an answered request, stored with its record and passed to
the bandit that routed it.

```
POST /v1/feedback
{"request_id": "req_...", "score": 0.8, "comment": "right, but long-winded"}
{"request_id": "req_...", "thumbs": "down"}
```

The request id is the `x-pointsman-request-id` header of the answer. A score is in 0..1; thumbs
up is 1 and down is 0. A later rating of the same request replaces the earlier one. With
virtual keys on, the caller authenticates as for chat requests, and a key may rate only the
requests made with it (the master key may rate any).
"""

from __future__ import annotations

import asyncio
import math
import time
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pointsman.admin import read_json
from pointsman.errors import (
    AuthenticationFailed,
    InvalidRequest,
    PermissionDenied,
    PointsmanError,
)
from pointsman.router import new_request_id

if TYPE_CHECKING:
    from pointsman.router import Router

FIELDS = ("request_id", "score", "thumbs", "comment")
THUMBS = {"up": 1.0, "down": 0.0}
MAX_COMMENT = 10_000


class InvalidFeedback(InvalidRequest):
    """A feedback body with a bad field; the error's `param` names it."""

    code = "invalid_feedback"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["param"] = self.param
        return body


class RequestNotFound(PointsmanError):
    status = 404
    type = "invalid_request_error"
    code = "request_not_found"


def parse_feedback(body: Any) -> tuple[str, float, str | None]:
    """(request id, score in 0..1, comment) from a feedback body; raises InvalidFeedback
    naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    for name in body:
        if name not in FIELDS:
            raise InvalidFeedback(f"unknown field {name!r} (expected: {', '.join(FIELDS)})", param=str(name))
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise InvalidFeedback(
            "'request_id' is required: the x-pointsman-request-id header of the answer",
            param="request_id",
        )
    score, thumbs = body.get("score"), body.get("thumbs")
    if score is not None and thumbs is not None:
        raise InvalidFeedback("give 'score' or 'thumbs', not both", param="thumbs")
    if score is None and thumbs is None:
        raise InvalidFeedback(
            "give 'score' (a number from 0 to 1) or 'thumbs' ('up' or 'down')", param="score"
        )
    if thumbs is not None:
        if not isinstance(thumbs, str) or thumbs not in THUMBS:
            raise InvalidFeedback(f"'thumbs' must be 'up' or 'down', got {thumbs!r}", param="thumbs")
        value = THUMBS[thumbs]
    else:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise InvalidFeedback(f"'score' must be a number from 0 to 1, got {score!r}", param="score")
        if not 0.0 <= score <= 1.0:
            raise InvalidFeedback(f"'score' must be from 0 to 1, got {score!r}", param="score")
        value = float(score)
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise InvalidFeedback(f"'comment' must be a string, got {type(comment).__name__}", param="comment")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise InvalidFeedback(f"'comment' is longer than {MAX_COMMENT} characters", param="comment")
    return request_id.strip(), value, comment


def feedback_routes(router: Router) -> list[Route]:
    """The feedback endpoint, for the server's route table."""
    settings = router.config.server
    limit = settings.max_body_bytes

    def secret(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key")

    async def authenticate(token: str | None) -> Any:
        """The caller's virtual key (None for the master key or when keys are off)."""
        access = router.access
        if access.enabled:
            key = await access.aauthenticate(token)
            if key is not None and not key.can("chat"):
                raise PermissionDenied(
                    f"API key {key.name!r} is read-only (scopes: {', '.join(key.scopes)}): "
                    "it may not rate requests",
                    code="read_only_key",
                )
            return key
        static = router.config.server.api_keys
        if static:
            import hmac

            if not token:
                raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
            if not any(hmac.compare_digest(token.encode(), k.encode()) for k in static):
                raise AuthenticationFailed("invalid API key")
        return None

    async def feedback(request: Request) -> Response:
        started = perf_counter()
        request_id = new_request_id()
        # For the server's handler of unexpected exceptions: the id, and whether a record exists.
        request.state.request_id, request.state.started = request_id, started
        token = secret(request)
        try:
            key = await authenticate(token)
            body = await read_json(request, limit)
            rated_id, score, comment = parse_feedback(body)
            store = router.store
            if store is None:
                raise PermissionDenied(
                    "records are off (store.enabled): feedback is kept with the request's record",
                    code="records_disabled",
                )
            # The store reads and writes disk or PostgreSQL: off the event loop.
            record = await asyncio.to_thread(store.record, rated_id)
            # A key learns nothing about requests that are not its own, not even that they exist.
            if record is None or (key is not None and record.get("key_id") != key.id):
                raise RequestNotFound(f"no request with id {rated_id!r}")
            if not await asyncio.to_thread(store.add_feedback, rated_id, score, comment, time.time()):
                raise RequestNotFound(f"no request with id {rated_id!r}")
        except PointsmanError as exc:
            # A refused rating is recorded like any refused request, under its own id.
            router.record_rejection(exc, request_id=request_id, started=started, key=token)
            request.state.recorded = True
            return Response(
                orjson.dumps(exc.body()),
                status_code=exc.status,
                media_type="application/json",
                headers={"x-pointsman-request-id": request_id, **exc.headers},
            )
        previous = record["feedback"]["score"] if record.get("feedback") else None
        learned = None
        strategy = router.strategies.get(router.resolve_alias(record.get("requested_model") or ""))
        learn = getattr(strategy, "learn", None)
        if learn is not None:
            learned = learn(record, score, previous)
        reply = {
            "object": "feedback",
            "request_id": rated_id,
            "score": score,
            "comment": comment,
            "replaced": previous is not None,
            "deployment": record.get("deployment"),
        }
        if learned is not None:
            reply["bandit"] = learned
        return Response(orjson.dumps(reply), media_type="application/json")

    return [Route("/v1/feedback", feedback, methods=["POST"])]
