"""Shared fixtures: the loopback fake upstream, a pointsman server factory, temp SQLite."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from pointsman.router import Router
from pointsman.server import ServerThread
from pointsman.store import read_records
from pointsman.testing import FakeUpstream


@pytest.fixture(scope="session")
def _upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream(seed=0) as upstream:
        yield upstream


@pytest.fixture
def upstream(_upstream_server: FakeUpstream) -> FakeUpstream:
    """The fake upstream, with every behaviour, counter and recorded request forgotten."""
    _upstream_server.reset()
    return _upstream_server


def deployment(
    upstream: FakeUpstream, name: str, provider: str = "openai", **fields: Any
) -> dict[str, Any]:
    """A config entry for simulated deployment `name` on the fake upstream."""
    base = f"{upstream.url}/{name}" + ("/v1" if provider == "openai" else "")
    entry: dict[str, Any] = {
        "name": name,
        "provider": provider,
        "model": f"model-{name}",
        "api_base": base,
        "api_key": "sk-test",
        "price": {"input": 1.0, "output": 2.0},
        "timeouts": {"connect": 2, "first_byte": 2, "inter_chunk": 2, "total": 5},
    }
    entry.update(fields)
    return entry


class RunningServer:
    """A pointsman server on loopback with its router, records and an openai client."""

    def __init__(self, router: Router, db: Path) -> None:
        self.router = router
        self.db = db
        self.thread = ServerThread(router).start()
        self.url = self.thread.url

    def client(self, **kwargs: Any) -> OpenAI:
        kwargs.setdefault("api_key", "sk-client")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20)
        return OpenAI(base_url=f"{self.url}/v1", **kwargs)

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far, oldest first."""
        assert self.router.store is not None
        self.router.store.flush()
        return list(reversed(read_records(self.db, limit=100_000)))

    def stop(self) -> None:
        self.thread.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Factory: serve(config_dict) starts pointsman on loopback with records in a temp SQLite."""
    servers: list[RunningServer] = []

    def start(config: dict[str, Any]) -> RunningServer:
        db = tmp_path / f"records-{len(servers)}.db"
        router = Router.from_config(copy.deepcopy(config), db=db)
        server = RunningServer(router, db)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
