"""OpenAI-compatible chat completions: OpenAI, Azure-style bases, vLLM, Ollama, llama.cpp,
OpenRouter, Groq, Together and the like. Bodies pass through; only `model` is rewritten."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from pointsman.config import Deployment
from pointsman.providers.base import (
    Completion,
    Provider,
    StreamUsage,
    UpstreamError,
    client_error,
    parse_retry_after,
)
from pointsman.providers.http import HTTPClient

DONE = b"data: [DONE]\n\n"


def error_from_response(status: int, raw: bytes, retry_after: str | None) -> UpstreamError:
    """An UpstreamError from an OpenAI-style error answer (tolerating any body)."""
    message, code = raw[:300].decode("utf-8", "replace"), None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        message = str(parsed["error"].get("message") or message)
        code = parsed["error"].get("code")
    context = code == "context_length_exceeded" or (
        status == 400 and "context length" in message.lower()
    )
    return UpstreamError(
        "context_length" if context else "http",
        message,
        status=status,
        retry_after=parse_retry_after(retry_after),
        body=parsed,
    )


def is_chat_completion(answer: Any) -> bool:
    """A cheap shape check of a 200's body (on the hot path: no schema validation): an object
    whose `choices` are a non-empty list of objects, each with a `message` object."""
    if not isinstance(answer, dict):
        return False
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(isinstance(choice, dict) and isinstance(choice.get("message"), dict) for choice in choices)


class OpenAIProvider(Provider):
    def __init__(self, deployment: Deployment, client: HTTPClient) -> None:
        super().__init__(deployment, client)
        self.url = deployment.api_base.rstrip("/") + "/chat/completions"
        self.headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key:
            self.headers.setdefault("authorization", f"Bearer {deployment.api_key}")

    def _payload(self, body: dict[str, Any]) -> bytes:
        return orjson.dumps({**body, "model": self.deployment.model})

    async def complete(self, body: dict[str, Any]) -> Completion:
        response = await self._post(self.url, self._payload(body), self.headers, stream=False)
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
        except orjson.JSONDecodeError:
            raise UpstreamError(
                "protocol", "upstream answered 200 with a body that is not JSON"
            ) from None
        if not self._is_answer(answer):
            what = self.answer_name
            raise UpstreamError("protocol", f"upstream answered 200 with a body that is not {what}")
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return Completion(raw, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)

    answer_name = "a chat completion"

    @staticmethod
    def _is_answer(answer: Any) -> bool:
        return is_chat_completion(answer)

    async def stream(self, body: dict[str, Any], usage: StreamUsage) -> AsyncGenerator[bytes, None]:
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if self.deployment.stream_usage and not wants_usage:
            body = {
                **body,
                "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
            }
        response = await self._post(self.url, self._payload(body), self.headers, stream=True)
        try:
            if response.status != 200:
                raw = await response.read()
                raise error_from_response(response.status, raw, response.headers.get("retry-after"))
            done = False
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    yield DONE
                    break
                if b'"usage":{' in data or b'"usage": {' in data:
                    chunk = orjson.loads(data)
                    found = chunk.get("usage") or {}
                    usage.prompt_tokens = found.get("prompt_tokens") or 0
                    usage.completion_tokens = found.get("completion_tokens") or 0
                    # A usage-only chunk the client did not ask for is ours alone.
                    if not wants_usage and not chunk.get("choices"):
                        continue
                    if not wants_usage:
                        chunk.pop("usage", None)
                        data = orjson.dumps(chunk)
                if data.startswith(b'{"error"'):
                    message = orjson.loads(data)["error"].get("message", "upstream stream error")
                    raise UpstreamError("protocol", f"upstream sent an error mid-stream: {message}")
                yield b"data: " + data + b"\n\n"
            if not done:
                raise UpstreamError("protocol", "upstream stream ended before [DONE]")
        except (UpstreamError, asyncio.CancelledError, GeneratorExit):
            response.close()
            raise
        except Exception as exc:
            response.close()
            raise client_error(exc) from None
        response.release()


class OpenAIEmbeddingsProvider(OpenAIProvider):
    """An OpenAI-compatible `/embeddings` endpoint (a `mode: embeddings` deployment): the body
    passes through like a chat body; usage counts prompt tokens only."""

    def __init__(self, deployment: Deployment, client: HTTPClient) -> None:
        super().__init__(deployment, client)
        self.url = deployment.api_base.rstrip("/") + "/embeddings"

    answer_name = "an embeddings list"

    @staticmethod
    def _is_answer(answer: Any) -> bool:
        return isinstance(answer, dict) and isinstance(answer.get("data"), list)

    async def stream(self, body: dict[str, Any], usage: StreamUsage) -> AsyncGenerator[bytes, None]:
        raise UpstreamError("protocol", "embeddings cannot be streamed")
        yield b""  # a generator, like every provider's stream
