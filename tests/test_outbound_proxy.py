"""Outbound proxies: upstream calls through a real forward proxy on loopback (Debian's tinyproxy),
from HTTP(S)_PROXY / NO_PROXY or a deployment's `proxy:`; HTTPS through a CONNECT tunnel."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from pointsman.config import ConfigError, load_config
from pointsman.providers import HTTPClient
from tests.conftest import deployment

pytestmark = pytest.mark.skipif(
    shutil.which("tinyproxy") is None, reason="needs tinyproxy (apt-get install tinyproxy)"
)
PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tinyproxy:
    def __init__(self, workdir: Path, extra: str = "") -> None:
        self.port = free_port()
        self.log = workdir / "tinyproxy.log"
        config = workdir / "tinyproxy.conf"
        config.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\nMaxClients 50\nAllow 127.0.0.1\n"
            + extra
        )
        self.process = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(config)], stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, pattern: str) -> int:
        """How many requests the proxy logged whose request line matches `pattern`."""
        lines = re.findall(r"Request \(file descriptor \d+\): (.*)", self.log.read_text())
        return sum(1 for line in lines if re.search(pattern, line))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory) -> Iterator[Tinyproxy]:
    if shutil.which("tinyproxy") is None:
        pytest.skip("needs Debian's tinyproxy (apt-get install tinyproxy)")
    proxy = Tinyproxy(tmp_path_factory.mktemp("tinyproxy"))
    yield proxy
    proxy.stop()


@pytest.fixture
def clean_env(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def direct_client(server) -> openai.OpenAI:
    """The test's own client reaches pointsman directly, whatever the proxy variables say."""
    return server.client(http_client=openai.DefaultHttpxClient(trust_env=False))


def config(upstream, **fields) -> dict:
    return {
        "deployments": [deployment(upstream, "gpt", **fields)],
        "models": {"auto": {"deployments": ["gpt"]}},
    }


def test_upstream_calls_go_through_the_proxy_named_by_http_proxy(upstream, serve, tinyproxy, clean_env):
    clean_env.setenv("HTTP_PROXY", tinyproxy.url)
    before = tinyproxy.requests(rf"POST {upstream.url}/gpt/v1/chat/completions")
    client = direct_client(serve(config(upstream)))
    for word in ("one", "two"):
        answer = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": word}])
        assert answer.choices[0].message.content.endswith(f"You said: {word}")
    streamed = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "three"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).endswith(
        "You said: three"
    )
    assert tinyproxy.requests(rf"POST {upstream.url}/gpt/v1/chat/completions") - before == 3
    assert all("tinyproxy" in r.headers.get("via", "") for r in upstream.requests("gpt"))


def test_hosts_listed_in_no_proxy_bypass_the_proxy(upstream, serve, tinyproxy, clean_env):
    clean_env.setenv("HTTP_PROXY", tinyproxy.url)
    clean_env.setenv("NO_PROXY", "localhost,127.0.0.1")
    before = tinyproxy.requests(re.escape(upstream.url))
    answer = direct_client(serve(config(upstream))).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "direct"}]
    )
    assert answer.choices[0].message.content.endswith("You said: direct")
    assert tinyproxy.requests(re.escape(upstream.url)) == before
    assert "via" not in upstream.requests("gpt")[0].headers


def test_a_deployments_proxy_setting_overrides_the_environment(upstream, serve, tinyproxy, clean_env):
    clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    server = serve(
        {
            "router": {"max_attempts": 1},
            "deployments": [
                deployment(upstream, "direct", proxy="none"),
                deployment(upstream, "proxied", proxy=tinyproxy.url),
                deployment(upstream, "env"),
            ],
        }
    )
    client = direct_client(server)
    client.chat.completions.create(model="direct", messages=[{"role": "user", "content": "hi"}])
    client.chat.completions.create(model="proxied", messages=[{"role": "user", "content": "hi"}])
    assert "via" not in upstream.requests("direct")[0].headers
    assert "tinyproxy" in upstream.requests("proxied")[0].headers["via"]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="env", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503 and "through proxy" in caught.value.message
    assert upstream.calls("env") == 0


def test_https_upstream_is_reached_through_one_reused_connect_tunnel(tmp_path, tinyproxy, clean_env):
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
    clean_env.setenv("SSL_CERT_FILE", str(cert))
    clean_env.setenv("HTTPS_PROXY", tinyproxy.url)
    connections: list[str] = []
    ok = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("tls")
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                writer.write(ok)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> tuple[list[int], int]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]
        statuses = []
        async with server:
            client = HTTPClient()
            for _ in range(3):
                response = await client.post(
                    f"https://localhost:{port}/v1/chat/completions",
                    b"{}",
                    {"content-type": "application/json"},
                    connect_s=2,
                    read_s=5,
                    total_s=10,
                )
                assert await response.read() == b'{"ok":true}'
                statuses.append(response.status)
            await client.close()
        return statuses, port

    statuses, port = asyncio.run(main())
    assert statuses == [200, 200, 200]
    assert connections == ["tls"]  # one tunnel, one TLS handshake, three calls
    assert tinyproxy.requests(rf"CONNECT localhost:{port} ") == 1


def test_a_proxy_that_refuses_connect_is_a_connect_error_naming_the_proxy(tinyproxy, clean_env):
    async def main() -> None:
        client = HTTPClient()
        try:
            await client.post(
                "https://localhost:1/v1/chat/completions",
                b"{}",
                {},
                connect_s=2,
                read_s=2,
                total_s=5,
                proxy=tinyproxy.url,
            )
        finally:
            await client.close()

    with pytest.raises(Exception, match=rf"through proxy 127.0.0.1:{tinyproxy.port}"):
        asyncio.run(main())


def test_a_proxy_setting_that_is_not_an_http_url_is_a_config_error():
    entry = {"name": "gpt", "provider": "openai", "model": "m", "api_base": "http://h/v1", "price": {}}
    with pytest.raises(ConfigError) as caught:
        load_config({"deployments": [{**entry, "proxy": "socks5://127.0.0.1:1080"}]})
    assert caught.value.problems == [
        "deployments[0].proxy: expected an http://host:port proxy URL or 'none', got 'socks5://127.0.0.1:1080'"
    ]
    assert load_config({"deployments": [{**entry, "proxy": "none"}]}).deployments[0].proxy == "none"


def test_proxy_credentials_in_the_url_are_sent_and_a_refusal_fails_over(upstream, serve, tmp_path, clean_env):
    if shutil.which("tinyproxy") is None:
        pytest.skip("needs Debian's tinyproxy (apt-get install tinyproxy)")
    guarded = Tinyproxy(tmp_path, extra="BasicAuth egress s3cret\n")
    try:
        server = serve(
            {
                "deployments": [
                    deployment(
                        upstream, "wrong-password", proxy=f"http://egress:nope@127.0.0.1:{guarded.port}"
                    ),
                    deployment(
                        upstream, "right-password", proxy=f"http://egress:s3cret@127.0.0.1:{guarded.port}"
                    ),
                ],
                "models": {"auto": {"deployments": ["wrong-password", "right-password"]}},
            }
        )
        answer = direct_client(server).chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        guarded.stop()
    assert answer.headers["x-pointsman-model"] == "right-password"
    assert upstream.calls("wrong-password") == 0
    assert "tinyproxy" in upstream.requests("right-password")[0].headers["via"]
    # tinyproxy refuses with 401 where RFC 9110 says 407; both count against the deployment.
    refused = server.records()[-1]["attempts"]
    refused = json.loads(refused) if isinstance(refused, str) else refused
    assert refused[0]["status"] in (401, 407) and refused[0]["deployment"] == "wrong-password"


def test_a_407_from_the_proxy_is_a_connect_error_not_an_upstream_answer(clean_env):
    from pointsman.providers import UpstreamError

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> UpstreamError:
        proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        client = HTTPClient()
        try:
            async with proxy:
                await client.post(
                    "http://upstream.invalid/v1/chat/completions", b"{}", {},
                    connect_s=2, read_s=2, total_s=5,
                    proxy=f"http://127.0.0.1:{port}",
                )  # fmt: skip
        except UpstreamError as exc:
            return exc
        finally:
            await client.close()
        raise AssertionError("a 407 was taken for the upstream's answer")

    error = asyncio.run(main())
    assert error.kind == "connect" and "407" in error.message and error.retryable
