"""The provider seam: one internal request shape (OpenAI chat) in, OpenAI-shaped answers out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import Any

import aiohttp

from pointsman.config import Deployment


class UpstreamError(Exception):
    """An upstream call that did not produce an answer.

    `kind` is one of: http, timeout, connect, context_length, protocol.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body

    @property
    def retryable(self) -> bool:
        """Worth trying again (here or elsewhere): not a fault of the request itself."""
        if self.kind in ("timeout", "connect", "protocol", "context_length"):
            return True
        return self.status is not None and (
            self.status == 429 or self.status >= 500 or self.status in (401, 403, 404, 408)
        )

    def describe(self) -> str:
        return f"{self.status} {self.message}" if self.status else f"{self.kind}: {self.message}"


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

    def __init__(self, deployment: Deployment, session: aiohttp.ClientSession) -> None:
        self.deployment = deployment
        self.session = session
        t = deployment.timeouts
        self.timeout = aiohttp.ClientTimeout(
            total=t.total, sock_connect=t.connect, sock_read=t.total
        )
        self.stream_timeout = aiohttp.ClientTimeout(
            total=t.total, sock_connect=t.connect, sock_read=t.inter_chunk
        )

    async def complete(self, body: dict[str, Any]) -> Completion:
        raise NotImplementedError

    def stream(self, body: dict[str, Any], usage: StreamUsage) -> AsyncGenerator[bytes, None]:
        """OpenAI-format SSE events (`data: {...}\\n\\n`), ending with `data: [DONE]\\n\\n`.
        Raises UpstreamError if the upstream fails or ends early."""
        raise NotImplementedError

    async def _post(
        self, url: str, payload: bytes, headers: dict[str, str], stream: bool
    ) -> aiohttp.ClientResponse:
        try:
            return await self.session.post(
                url,
                data=payload,
                headers=headers,
                params=self.deployment.params or None,
                timeout=self.stream_timeout if stream else self.timeout,
            )
        except TimeoutError:
            raise UpstreamError("timeout", "timed out waiting for the upstream") from None
        except aiohttp.ClientConnectionError as exc:
            raise UpstreamError("connect", str(exc) or type(exc).__name__) from None


def client_error(exc: BaseException) -> UpstreamError:
    """The UpstreamError for an exception raised while reading an upstream response."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamError("timeout", "timed out reading the upstream response")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamError("protocol", "upstream connection broke mid-response")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError("connect", str(exc) or type(exc).__name__)
    return UpstreamError("protocol", f"{type(exc).__name__}: {exc}")
