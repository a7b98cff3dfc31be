"""The provider seam: one internal request shape (OpenAI chat) in, OpenAI-shaped answers out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import Any

from pointsman.config import Deployment
from pointsman.providers.http import HTTPClient, Response
from pointsman.providers.http import UpstreamError as UpstreamError  # adapters import it from here

# Extra headers for this task's upstream calls: tracing puts the attempt's `traceparent` here.
upstream_headers: ContextVar[dict[str, str] | None] = ContextVar("upstream_headers", default=None)


@dataclass(slots=True)
class Completion:
    """A finished non-streaming answer: the OpenAI-shaped JSON bytes to send and its usage."""

    body: bytes
    prompt_tokens: int
    completion_tokens: int


class StreamUsage:
    """Filled in by a provider's stream as usage arrives, read after the stream ends."""

    __slots__ = ("prompt_tokens", "completion_tokens")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


class Provider:
    """Calls one deployment. Subclasses translate to and from their upstream's API."""

    def __init__(self, deployment: Deployment, client: HTTPClient) -> None:
        self.deployment = deployment
        self.client = client
        t = deployment.timeouts
        # Read timeouts: the longest wait for the next bytes (the head, a body, a chunk).
        self.read_s = t.total
        self.stream_read_s = t.inter_chunk

    async def complete(self, body: dict[str, Any]) -> Completion:
        raise NotImplementedError

    def stream(self, body: dict[str, Any], usage: StreamUsage) -> AsyncGenerator[bytes, None]:
        """OpenAI-format SSE events (`data: {...}\\n\\n`), ending with `data: [DONE]\\n\\n`.
        Raises UpstreamError if the upstream fails or ends early."""
        raise NotImplementedError

    async def _post(self, url: str, payload: bytes, headers: dict[str, str], stream: bool) -> Response:
        t = self.deployment.timeouts
        extra = upstream_headers.get()
        if extra is not None:
            headers = {**headers, **extra}
        try:
            return await self.client.post(
                url,
                payload,
                headers,
                params=self.deployment.params or None,
                connect_s=t.connect,
                read_s=self.stream_read_s if stream else self.read_s,
                total_s=t.total,
                # A stream's first chunk is bounded by dispatch; an answer's head here.
                head_s=None if stream else min(t.first_byte, t.total),
                proxy=self.deployment.proxy,
            )
        except TimeoutError:
            if stream:
                raise UpstreamError("timeout", "timed out waiting for the upstream") from None
            raise UpstreamError(
                "timeout", f"no response head within first_byte {t.first_byte:g}s"
            ) from None


def client_error(exc: BaseException) -> UpstreamError:
    """The UpstreamError for an exception raised while reading an upstream response."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamError("timeout", "timed out reading the upstream response")
    if isinstance(exc, OSError):  # ConnectionError and the other socket errors
        return UpstreamError("connect", str(exc) or type(exc).__name__)
    return UpstreamError("protocol", f"{type(exc).__name__}: {exc}")
