"""The server's side of client connections: uvicorn's httptools protocol with deadlines on a
request's head and body. uvicorn times out only a keep-alive connection left idle after an
answer (`timeout_keep_alive`); a connection that sends nothing, or a request's headers or body
a byte at a time, would otherwise hold a connection (and a task) for ever."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pointsman.config import ClientTimeouts

_BODY = orjson.dumps(
    {
        "error": {
            "message": "the client did not send the whole request in time",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_timeout",
        }
    }
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY)
)


class DeadlineProtocol(HttpToolsProtocol):
    """Closes a connection whose request head does not end within `request_head_s` of the
    connection's start (or the request's first byte), or whose body does not end within
    `request_body_s` of the head's end; before an answer has begun, it says 408 first."""

    request_head_s = ClientTimeouts().request_head
    request_body_s = ClientTimeouts().request_body

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_is_body = False
        # The request being received: begun (its first bytes came), its head complete.
        self._started = False
        self._head_done = False

    def _arm(self, seconds: float, body: bool) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, body)
        self._deadline_is_body = body

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, body: bool) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        # 408 unless the request's answer has begun (the app may answer before the body ends).
        answered = body and self.cycle is not None and self.cycle.response_started
        if self._started and not answered:
            self.transport.write(_TIMED_OUT)
        self.transport.close()

    # -- the protocol's events -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.request_head_s, body=False)  # for a connection that never sends a byte

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Deadlines only for a request still incomplete once these bytes are parsed: a request
        # that arrives whole (most of them) costs no timer at all.
        if self._started:
            body = self._head_done
            if self._deadline is None or self._deadline_is_body != body:
                self._arm(self.request_body_s if body else self.request_head_s, body)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._started, self._head_done = True, False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._head_done = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._started = False
        self._disarm()


def protocol_class(timeouts: ClientTimeouts) -> type[DeadlineProtocol]:
    """The protocol class for uvicorn's `http=` with these deadlines (uvicorn's own
    `timeout_keep_alive` takes `timeouts.keep_alive`)."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"request_head_s": timeouts.request_head, "request_body_s": timeouts.request_body},
    )


def configure(timeouts: ClientTimeouts) -> None:
    """Set the deadlines of `DeadlineProtocol` itself, for worker processes that uvicorn
    starts with the class by name (a class made by `protocol_class` cannot travel there)."""
    DeadlineProtocol.request_head_s = timeouts.request_head
    DeadlineProtocol.request_body_s = timeouts.request_body
