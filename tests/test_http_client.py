"""The providers' pooled HTTP/1.1 client against a raw loopback server that answers in given bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from pointsman.providers import HTTPClient, UpstreamError

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:"))
    return head + await reader.readexactly(length)


def _run(answer: Answer, client_side: Callable[[str, list[int]], Awaitable[None]]) -> list[int]:
    """Serve `answer` on loopback, run `client_side(url, connections)`; returns connection ids."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await client_side(f"http://127.0.0.1:{port}/v1/chat/completions", connections)

    asyncio.run(main())
    return connections


async def _post(client: HTTPClient, url: str, read_s: float = 5.0) -> tuple[int, bytes]:
    response = await client.post(url, b'{"model":"m"}', {"content-type": "application/json"},
                                 connect_s=2, read_s=read_s, total_s=10)
    return response.status, await response.read()


def test_sequential_calls_share_one_keep_alive_connection() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(OK)
            await writer.drain()

    async def calls(url: str, connections: list[int]) -> None:
        client = HTTPClient()
        for _ in range(20):
            assert await _post(client, url) == (200, b'{"ok":true}')
        await client.close()

    assert len(_run(answer, calls)) == 1


def test_a_connection_the_upstream_closed_is_replaced_by_a_new_one() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK)  # then the handler returns and the server closes the connection
        await writer.drain()

    async def calls(url: str, connections: list[int]) -> None:
        client = HTTPClient()
        for _ in range(3):
            assert await _post(client, url) == (200, b'{"ok":true}')
            await asyncio.sleep(0.05)  # the close reaches the client before the next call
        await client.close()

    assert len(_run(answer, calls)) == 3


def test_chunked_streams_read_line_by_line_and_bodies_ended_by_close_read_whole() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\nda", b"ta: 2\n\n", b"data: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async def calls(url: str, connections: list[int]) -> None:
        client = HTTPClient()
        response = await client.post(url, b"{}", {}, connect_s=2, read_s=5, total_s=10)
        lines = [line async for line in response.content]
        assert b"".join(lines) == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
        assert lines[:2] == [b"data: 1\n", b"\n"]
        response.release()
        assert await _post(client, url) == (200, b"until the end")
        await client.close()

    assert len(_run(answer, calls)) == 1


def test_an_answer_cut_mid_body_is_a_protocol_error() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")
        await writer.drain()

    async def calls(url: str, connections: list[int]) -> None:
        client = HTTPClient()
        with pytest.raises(UpstreamError) as caught:
            await _post(client, url)
        assert caught.value.kind == "protocol"
        await client.close()

    _run(answer, calls)


def test_a_silent_upstream_times_out_and_a_closed_port_is_a_connect_error() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def calls(url: str, connections: list[int]) -> None:
        client = HTTPClient()
        with pytest.raises(TimeoutError):
            await _post(client, url, read_s=0.2)
        with pytest.raises(UpstreamError) as caught:
            await _post(client, "http://127.0.0.1:9/v1/chat/completions")
        assert caught.value.kind == "connect"
        await client.close()

    _run(answer, calls)


def test_https_verifies_the_upstream_certificate_and_reuses_the_tls_connection(tmp_path, monkeypatch) -> None:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            while True:
                await _read_request(reader)
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main(trusted: bool) -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=served)
        url = f"https://localhost:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        async with server:
            if trusted:
                monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            else:
                monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            client = HTTPClient()
            try:
                return [await _post(client, url), await _post(client, url)]
            finally:
                await client.close()

    assert asyncio.run(main(trusted=True)) == [(200, b'{"ok":true}')] * 2
    assert connections == [0]  # one TLS handshake for both calls
    with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(main(trusted=False))
