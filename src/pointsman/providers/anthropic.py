"""Anthropic Messages API, translated to and from the internal OpenAI shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from pointsman.config import Deployment
from pointsman.providers.anthropic_request import TranslationError, to_anthropic_request
from pointsman.providers.anthropic_response import (
    anthropic_error_status,
    from_anthropic_response,
    is_context_length_error,
)
from pointsman.providers.anthropic_stream import AnthropicStreamTranslator, UpstreamStreamError
from pointsman.providers.base import (
    Completion,
    Provider,
    StreamUsage,
    UpstreamError,
    client_error,
    parse_retry_after,
)
from pointsman.providers.http import HTTPClient
from pointsman.providers.openai import DONE

API_VERSION = "2023-06-01"


def is_anthropic_message(message: Any) -> bool:
    """A cheap shape check of a 200's body: an object whose `content` is a list of blocks."""
    if not isinstance(message, dict):
        return False
    content = message.get("content")
    return isinstance(content, list) and all(isinstance(block, dict) for block in content)


def _error(status: int, raw: bytes, retry_after: str | None) -> UpstreamError:
    message = raw[:300].decode("utf-8", "replace")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        message = str(parsed["error"].get("message") or message)
    context = isinstance(parsed, dict) and is_context_length_error(status, parsed)
    return UpstreamError(
        "context_length" if context else "http",
        message,
        status=status,
        retry_after=parse_retry_after(retry_after),
        body=parsed,
    )


class AnthropicProvider(Provider):
    def __init__(self, deployment: Deployment, client: HTTPClient) -> None:
        super().__init__(deployment, client)
        self.url = deployment.api_base.rstrip("/") + "/v1/messages"
        if deployment.api_base.rstrip("/").endswith("/v1"):
            self.url = deployment.api_base.rstrip("/") + "/messages"
        self.headers = {
            "content-type": "application/json",
            "anthropic-version": API_VERSION,
            **deployment.headers,
        }
        if deployment.api_key:
            self.headers.setdefault("x-api-key", deployment.api_key)

    def _payload(self, body: dict[str, Any], stream: bool) -> bytes:
        try:
            request = to_anthropic_request(
                body, self.deployment.model, self.deployment.max_output_tokens or 4096
            )
        except TranslationError as exc:
            raise UpstreamError(
                "http", f"cannot translate for Anthropic: {exc}", status=400
            ) from None
        request["stream"] = stream
        return orjson.dumps(request)

    async def complete(self, body: dict[str, Any]) -> Completion:
        payload = self._payload(body, stream=False)
        response = await self._post(self.url, payload, self.headers, stream=False)
        try:
            raw = await response.read()
        except BaseException as exc:
            response.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise client_error(exc) from None
        if response.status != 200:
            raise _error(response.status, raw, response.headers.get("retry-after"))
        try:
            message = orjson.loads(raw)
            if not is_anthropic_message(message):
                raise TypeError
            answer = from_anthropic_response(message, str(body.get("model") or self.deployment.model))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise UpstreamError(
                "protocol", "upstream answered 200 with an unreadable message"
            ) from None
        usage = answer["usage"]
        return Completion(orjson.dumps(answer), usage["prompt_tokens"], usage["completion_tokens"])

    async def stream(self, body: dict[str, Any], usage: StreamUsage) -> AsyncGenerator[bytes, None]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = AnthropicStreamTranslator(
            str(body.get("model") or self.deployment.model), include_usage
        )
        payload = self._payload(body, stream=True)
        response = await self._post(self.url, payload, self.headers, stream=True)
        try:
            if response.status != 200:
                raw = await response.read()
                raise _error(response.status, raw, response.headers.get("retry-after"))
            event = ""
            stopped = False
            async for line in response.content:
                if line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                    continue
                if not line.startswith(b"data:"):
                    continue
                data = orjson.loads(line[5:])
                try:
                    chunks = translator.feed(event or data.get("type", ""), data)
                except UpstreamStreamError as exc:
                    status = anthropic_error_status(getattr(exc, "error_type", "api_error"))
                    raise UpstreamError(
                        "protocol", f"upstream stream error: {exc}", status=status
                    ) from None
                for chunk in chunks:
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                if (event or data.get("type")) == "message_stop":
                    stopped = True
                    break
            if not stopped:
                raise UpstreamError("protocol", "upstream stream ended before message_stop")
            if translator.usage:
                usage.prompt_tokens = translator.usage.get("prompt_tokens") or 0
                usage.completion_tokens = translator.usage.get("completion_tokens") or 0
            yield DONE
        except (UpstreamError, asyncio.CancelledError, GeneratorExit):
            response.close()
            raise
        except Exception as exc:
            response.close()
            raise client_error(exc) from None
        response.release()
