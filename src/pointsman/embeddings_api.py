"""The inbound OpenAI embeddings API, `POST /v1/embeddings`: routed over the embeddings
deployments of `type: embeddings` virtual models with the same availability strategies,
fallbacks, keys, budgets and per-token cost records as chat."""

from __future__ import annotations

from time import perf_counter

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pointsman.admin import read_json
from pointsman.embeddings import validate_embeddings_body
from pointsman.errors import PointsmanError
from pointsman.responses_api import Authenticate, openai_error
from pointsman.router import Router, new_request_id


def embeddings_routes(router: Router, authenticate: Authenticate) -> list[Route]:
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
            validate_embeddings_body(body)
        except PointsmanError as exc:
            router.record_rejection(exc, request_id=request_id, started=started, key=key)
            request.state.recorded = True
            return openai_error(exc, request_id)
        try:
            reply = await router.handle(
                body, request.headers, request_id=request_id, started=started, key=key, kind="embeddings"
            )
        except PointsmanError as exc:
            request.state.recorded = True
            return openai_error(exc, request_id)
        request.state.recorded = True
        assert reply.body is not None
        return Response(reply.body, media_type="application/json", headers=reply.headers)

    return [Route("/v1/embeddings", create, methods=["POST"])]
