"""Deployments that speak the OpenAI Responses API (`api: responses`): called at
`{api_base}/responses`, answering in the internal chat shape like every provider.

A `/v1/responses` request whose body the pipeline left untouched (no PII masking, no cascade
logprobs) passes through as the client sent it, only `model` rewritten; the deployment's own
Response then goes back to the client as it came (non-streaming). The inbound face and this
provider meet through `PASSTHROUGH`, set by the face for the duration of one request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from pointsman.config import Deployment
from pointsman.providers.base import Completion, Provider, StreamUsage, UpstreamError, client_error
from pointsman.providers.http import HTTPClient
from pointsman.providers.openai import DONE, error_from_response
from pointsman.providers.responses_format import ResponsesToChatStream, from_chat_request, to_chat_completion


@dataclass(slots=True)
class Passthrough:
    """One /v1/responses request: its chat translation (what the pipeline dispatches), the
    body as the client sent it, and the native answers of deployments that got that body."""

    chat: dict[str, Any]
    request: dict[str, Any]
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)


PASSTHROUGH: ContextVar[Passthrough | None] = ContextVar("pointsman_responses_passthrough", default=None)


class ResponsesProvider(Provider):
    def __init__(self, deployment: Deployment, client: HTTPClient) -> None:
        super().__init__(deployment, client)
        self.url = deployment.api_base.rstrip("/") + "/responses"
        self.headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key:
            self.headers.setdefault("authorization", f"Bearer {deployment.api_key}")

    def _request(self, body: dict[str, Any], stream: bool) -> tuple[bytes, Passthrough | None]:
        exchange = PASSTHROUGH.get()
        # Identity, not equality: a body the pipeline rewrote (masked PII) must not be bypassed.
        native = exchange if exchange is not None and exchange.chat is body else None
        request = dict(native.request) if native is not None else from_chat_request(body)
        request["model"] = self.deployment.model
        request["stream"] = stream
        return orjson.dumps(request), native

    async def complete(self, body: dict[str, Any]) -> Completion:
        payload, native = self._request(body, stream=False)
        response = await self._post(self.url, payload, self.headers, stream=False)
        try:
            raw = await response.read()
        except BaseException as exc:
            response.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise client_error(exc) from None
        if response.status != 200:
            raise error_from_response(response.status, raw, response.headers.get("retry-after"))
        try:
            answer = orjson.loads(raw)
            if not isinstance(answer, dict) or not isinstance(answer.get("output"), list):
                raise TypeError
            chat = to_chat_completion(answer)
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            raise UpstreamError(
                "protocol", "upstream answered 200 with a body that is not a Response"
            ) from None
        if native is not None:
            native.answers[self.deployment.name] = answer
        usage = chat["usage"]
        return Completion(orjson.dumps(chat), usage["prompt_tokens"], usage["completion_tokens"])

    async def stream(self, body: dict[str, Any], usage: StreamUsage) -> AsyncGenerator[bytes, None]:
        payload, _ = self._request(body, stream=True)
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = ResponsesToChatStream(str(body.get("model") or self.deployment.model), wants_usage)
        response = await self._post(self.url, payload, self.headers, stream=True)
        try:
            if response.status != 200:
                raw = await response.read()
                raise error_from_response(response.status, raw, response.headers.get("retry-after"))
            finished = False
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if not data.startswith(b"{"):
                    continue
                try:
                    chunks = translator.feed(orjson.loads(data))
                except ValueError as exc:
                    raise UpstreamError("protocol", f"upstream sent an error mid-stream: {exc}") from None
                for chunk in chunks:
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                if translator.usage is not None:
                    usage.prompt_tokens = translator.usage["prompt_tokens"]
                    usage.completion_tokens = translator.usage["completion_tokens"]
                    finished = True
            if not finished:
                raise UpstreamError("protocol", "upstream stream ended before response.completed")
            yield DONE
        except (UpstreamError, asyncio.CancelledError, GeneratorExit):
            response.close()
            raise
        except Exception as exc:
            response.close()
            raise client_error(exc) from None
        response.release()
