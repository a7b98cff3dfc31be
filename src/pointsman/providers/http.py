"""A small pooled keep-alive HTTP/1.1 client for upstream calls, on httptools' response parser.

The providers need one thing from HTTP: POST a JSON body, read the answer whole or line by line,
within a connect timeout, a read timeout (the longest wait for the next bytes) and a total
deadline. Through an outbound proxy (HTTPS_PROXY / HTTP_PROXY / NO_PROXY, or a deployment's
`proxy:`), plain-HTTP requests go to the proxy in absolute form and HTTPS ones through a CONNECT
tunnel; either way the connection is pooled and reused like a direct one.

A general client (aiohttp) spends two to three times this module's CPU per call on
features no upstream call uses (cookies, redirects, multidicts, tracing, compression), and that
CPU is a large share of what a request costs the router.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote, urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed

import httptools

# Upstream answers caused by the request itself: another deployment would say the same, and
# they say nothing about this deployment's health (see docs/upstream-errors.md).
CLIENT_FAULT_STATUSES = frozenset({400, 404, 413, 422})


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
    def client_fault(self) -> bool:
        """The request itself is at fault (an upstream 400/404/413/422): it goes back to the
        client as it is, without failover, and the deployment's health is left alone."""
        return self.kind == "http" and self.status in CLIENT_FAULT_STATUSES

    @property
    def retryable(self) -> bool:
        """Worth trying again (here or elsewhere): not a fault of the request itself. Every
        other status (401/403/408/409/429/5xx, a 402 or 405 too), timeouts, broken
        connections and protocol errors are the deployment's."""
        return not self.client_fault

    @property
    def health_failure(self) -> bool:
        """Counts against the deployment's circuit: a fault of the deployment, not of the
        request (a context window too small for the request is neither)."""
        return not self.client_fault and self.kind != "context_length"

    def describe(self) -> str:
        return f"{self.status} {self.message}" if self.status else f"{self.kind}: {self.message}"


# An idle pooled connection older than this is closed instead of reused (as aiohttp's
# keepalive_timeout): servers drop idle connections, and a request on a dropped one fails.
KEEPALIVE_S = 60.0
_BROKE = "upstream connection broke mid-response"


class Response:
    """One upstream answer: `status` and lower-cased `headers` once the head has arrived; the
    body via `read()` or, line by line, `async for line in response.content`."""

    __slots__ = (
        "status", "headers", "_conn", "_chunks", "_complete", "_error", "_waiter", "_read_s",
        "_deadline", "_eof_ends", "_head",
    )

    def __init__(self, conn: _Connection, read_s: float, deadline: float) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._conn: _Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._complete = False
        self._head = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_s = read_s
        self._deadline = deadline
        self._eof_ends = False

    @property
    def content(self) -> Response:
        return self

    # -- fed by the connection -----------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()

    # -- read by the provider ------------------------------------------------------------------

    async def _wait(self) -> None:
        """Until the connection feeds something (or fails), within the read timeout and deadline."""
        if self._error is not None:
            raise self._error
        timeout = min(self._read_s, self._deadline - time.monotonic())
        if timeout <= 0:
            raise TimeoutError
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        handle = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    async def _head_received(self) -> None:
        while not self._head:
            await self._wait()

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool once it is read."""
        while not self._complete:
            await self._wait()
        body = b"".join(self._chunks)
        self._chunks.clear()
        self.release()
        return body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[bytes]:
        """The body line by line, each line with its b"\\n" (the last one may lack it)."""
        pending = b""
        while True:
            while self._chunks:
                pending += self._chunks.popleft()
                start = 0
                while (end := pending.find(b"\n", start)) >= 0:
                    yield pending[start : end + 1]
                    start = end + 1
                pending = pending[start:]
            if self._complete:
                if pending:
                    yield pending
                return
            await self._wait()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, for binary framings (AWS event streams)."""
        while True:
            while self._chunks:
                yield self._chunks.popleft()
            if self._complete:
                return
            await self._wait()

    def release(self) -> None:
        """Done with this response: its connection is reused when the answer was read to its
        end and the upstream keeps the connection alive, and closed otherwise."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finished(reusable=self._complete and self._error is None)

    def close(self) -> None:
        """Done with this response, and its connection: closed, whatever was left unread."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finished(reusable=False)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One keep-alive connection to one upstream; serves one response at a time."""

    def __init__(self, pool: deque[_Connection]) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep_alive = True
        # Through a forward proxy (plain HTTP), reused only when the proxy says it keeps the
        # connection open: some (tinyproxy) close after every answer without saying so.
        self.forwarded = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: the connection is not reusable
            self._close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response = self.response
            self._close()
            if response is not None:
                response._fail(UpstreamError("protocol", f"upstream sent malformed HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is None:
            return
        if not response._head:
            response._fail(UpstreamError("connect", "Server disconnected"))
        elif response._eof_ends and not response._complete:
            response._complete = True  # a body delimited by the end of the connection
            response._wake()
        else:
            response._fail(UpstreamError("protocol", _BROKE))

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            response.headers.clear()
            return
        response.status = status
        response._head = True
        self.keep_alive = self.parser.should_keep_alive()
        headers = response.headers
        if self.forwarded and self.keep_alive:
            said = headers.get("connection", headers.get("proxy-connection", "")).lower()
            self.keep_alive = said == "keep-alive"
        response._eof_ends = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        ).lower()
        response._wake()

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._chunks.append(body)
        self.response._wake()

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or not response._head:
            return
        response._complete = True
        response._wake()

    # -- the pool ------------------------------------------------------------------------------

    def finished(self, reusable: bool) -> None:
        self.response = None
        if reusable and self.keep_alive and not self.closed:
            self.idle_since = time.monotonic()
            self.pool.append(self)
        else:
            self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Route(NamedTuple):
    """A forward proxy in the way: its address, and its credentials' header line (or b"")."""

    host: str
    port: int
    authorization: bytes


class _Tunnel(asyncio.Protocol):
    """Reads a proxy's answer to CONNECT; once it is 200 the transport carries TLS to the upstream."""

    def __init__(self) -> None:
        self.buffer = b""
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.answer.done():
            self.answer.set_result(self.buffer.split(b"\r\n", 1)[0])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionError("the proxy closed the connection during CONNECT"))


def _route(proxy: str) -> _Route:
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise UpstreamError("connect", f"cannot use proxy {proxy!r}: expected http://host:port")
    authorization = b""
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = b"proxy-authorization: Basic " + base64.b64encode(secret) + b"\r\n"
    return _Route(parts.hostname, parts.port or 80, authorization)


# A pool per (scheme, host, port, proxy URL or ""): a tunnelled connection is reused like a direct one.
_Origin = tuple[str, str, int, str]


class HTTPClient:
    """Pooled keep-alive connections per upstream origin, for one event loop. Proxies come from
    the environment as it was when the client was made, unless a call names one."""

    def __init__(self) -> None:
        self._pools: dict[_Origin, deque[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[Any, tuple[_Origin, bytes, _Route | None]] = {}
        self._env_proxies = getproxies()

    def _target(self, url: str, proxy: str | None = None) -> tuple[_Origin, bytes, _Route | None]:
        """The pool's origin, the request line's head (path, Host header) and the proxy to go
        through, if any. `proxy`: a URL, "none" (direct), or None (the environment decides)."""
        key: Any = url if proxy is None else (url, proxy)
        found = self._targets.get(key)
        if found is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamError("connect", f"cannot call {url!r}: expected an http(s) URL")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            default = port == (443 if parts.scheme == "https" else 80)
            host = parts.hostname if default else f"{parts.hostname}:{port}"
            if ":" in parts.hostname and not default:  # IPv6 literal
                host = f"[{parts.hostname}]:{port}"
            if proxy is None:
                proxy = self._env_proxies.get(parts.scheme)
                if proxy and proxy_bypass_environment(parts.hostname, self._env_proxies):
                    proxy = None
            elif proxy.lower() == "none":
                proxy = None
            route = _route(proxy) if proxy else None
            head = f"{path} HTTP/1.1\r\nhost: {host}\r\n".encode()
            if route is not None and parts.scheme == "http":
                # A plain-HTTP request to a proxy names the whole URL (absolute form).
                head = f"http://{host}".encode() + head + route.authorization
            found = ((parts.scheme, parts.hostname, port, proxy or ""), head, route)
            if len(self._targets) < 1024:
                self._targets[key] = found
        return found

    async def post(
        self,
        url: str,
        payload: bytes,
        headers: Mapping[str, str],
        *,
        params: Mapping[str, Any] | None = None,
        connect_s: float,
        read_s: float,
        total_s: float,
        head_s: float | None = None,
        proxy: str | None = None,
    ) -> Response:
        """POST `payload`; returns once the answer's status line and headers have arrived.
        `head_s`: the longest wait for them (default `read_s`), `read_s` for each later read.
        `proxy`: a proxy URL, "none" to go direct, or None to follow the environment.
        Raises UpstreamError (kind connect or timeout) when there is no answer head;
        TimeoutError when a deadline passes first."""
        deadline = time.monotonic() + total_s
        origin, head, route = self._target(url, proxy)
        if params:
            path, _, rest = head.partition(b" HTTP/1.1")
            glue = b"&" if b"?" in path else b"?"
            head = path + glue + urlencode(params).encode() + b" HTTP/1.1" + rest
        request = [b"POST ", head, b"content-length: %d\r\n" % len(payload)]
        for name, value in headers.items():
            request.append(f"{name}: {value}\r\n".encode("latin-1"))
        request += [b"\r\n", payload]
        data = b"".join(request)
        # No second try on a pooled connection the upstream dropped, as with aiohttp: a POST
        # may have been acted on; dispatch decides about retries and failover.
        conn = await self._connection(origin, min(connect_s, total_s), route)
        response = Response(conn, read_s if head_s is None else head_s, deadline)
        conn.response = response
        assert conn.transport is not None
        conn.transport.write(data)
        try:
            await response._head_received()
        except BaseException:
            response.close()
            raise
        response._read_s = read_s
        if response.status == 407 and route is not None:
            # The proxy, not the upstream, refused: a fault of this deployment's network path.
            response.close()
            where = f"proxy {route.host}:{route.port}"
            raise UpstreamError("connect", f"{where} answered 407: proxy authentication required")
        return response

    async def _connection(self, origin: _Origin, timeout: float, route: _Route | None = None) -> _Connection:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = deque()
        now = time.monotonic()
        # The least recently used sit at the left: close those idle past the keep-alive time.
        while pool and now - pool[0].idle_since >= KEEPALIVE_S:
            pool.popleft()._close()
        while pool:
            conn = pool.pop()  # the most recently used: the likeliest to be alive
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn
            conn._close()
        scheme, host, port, _ = origin
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                if route is None:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(pool), host, port, ssl=context
                    )
                elif context is None:
                    _, conn = await loop.create_connection(lambda: _Connection(pool), route.host, route.port)
                    conn.forwarded = True
                else:
                    conn = await self._tunnel(pool, route, host, port, context)
        except TimeoutError:
            raise UpstreamError("timeout", "timed out waiting for the upstream") from None
        except (OSError, ssl.SSLError) as exc:
            where = f"{host}:{port}"
            if route is not None:
                where += f" through proxy {route.host}:{route.port}"
            raise UpstreamError(
                "connect", f"Cannot connect to host {where} [{exc.strerror or exc}]"
            ) from None
        return conn

    async def _tunnel(
        self, pool: deque[_Connection], route: _Route, host: str, port: int, context: ssl.SSLContext
    ) -> _Connection:
        """A TLS connection to host:port inside a CONNECT tunnel through the proxy."""
        loop = asyncio.get_running_loop()
        transport, tunnel = await loop.create_connection(_Tunnel, route.host, route.port)
        try:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            request = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n".encode()
            transport.write(request + route.authorization + b"\r\n")
            status_line = await tunnel.answer
            if status_line.split(b" ", 2)[1:2] != [b"200"]:
                raise ConnectionError(f"the proxy refused CONNECT: {status_line.decode('latin-1')}")
            conn = _Connection(pool)
            tls = await loop.start_tls(transport, conn, context, server_hostname=host)
        except BaseException:
            transport.close()
            raise
        if tls is None:
            raise ConnectionError("TLS could not start inside the proxy tunnel")
        conn.connection_made(tls)
        return conn

    async def close(self) -> None:
        for pool in self._pools.values():
            while pool:
                pool.pop()._close()
        self._pools.clear()
