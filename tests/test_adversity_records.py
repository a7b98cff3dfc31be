"""Records survive a crash: a real `pointsman serve` process killed with SIGKILL loses at most
the records of its last flush interval, whether PostgreSQL is away (they are spilled to disk
within the interval and written once when it returns) or the records go to SQLite."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pointsman.store import read_records
from tests.tcp_proxy import TcpProxy
from tests.test_adversity_keys import PG_URL, postgres_available
from tests.test_replicas import HELLO, Replicas, replica_config

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

FLUSH_S = 0.2


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"pm_crash_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def lone_server(upstream: Any, store: dict[str, Any]) -> dict[str, Any]:
    config = replica_config(upstream)
    config.pop("state")
    config["auth"] = {"enabled": False}
    config["store"] = {"flush_interval_s": FLUSH_S, **store}
    return config


def send(group: Replicas, count: int) -> list[str]:
    client = group.client(0, "sk-any")
    ids = []
    for _ in range(count):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
        ids.append(raw.headers["x-pointsman-request-id"])
    return ids


def kill(group: Replicas) -> None:
    for process in group.processes:
        process.kill()  # SIGKILL: no shutdown, no last flush
        process.wait()


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not reachable")
def test_records_buffered_while_postgresql_is_away_survive_a_kill_and_arrive_once(
    upstream, schema, tmp_path: Path
):
    with TcpProxy("127.0.0.1", 5432) as proxy:
        config = lone_server(
            upstream,
            {"url": f"postgresql://postgres@127.0.0.1:{proxy.port}/test", "schema": schema},
        )
        first = Replicas(config, tmp_path, count=1)
        try:
            before = send(first, 5)
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "requests"))
                deadline = time.monotonic() + 20
                while conn.execute(query).fetchone() != (5,):  # a writer past its start-up
                    assert time.monotonic() < deadline, "the first records were not written"
                    time.sleep(0.1)
            proxy.cut()
            during = send(first, 30)
            time.sleep(3 * FLUSH_S)  # one flush interval, with room for a loaded machine
            kill(first)
        finally:
            first.stop()
        spilled = sum(1 for path in (tmp_path / "spill").glob("*.jsonl") for _ in path.open("rb"))
        assert spilled >= 30
        proxy.restore()
        second = Replicas(config, tmp_path, count=1)  # same spill directory and database
        try:
            deadline = time.monotonic() + 20
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                query = sql.SQL("SELECT request_id FROM {}").format(sql.Identifier(schema, "requests"))
                while len(rows := conn.execute(query).fetchall()) < len(before + during):
                    assert time.monotonic() < deadline, f"{len(rows)} of {len(before + during)} records"
                    time.sleep(0.2)
                time.sleep(0.5)
                rows = conn.execute(query).fetchall()
        finally:
            second.stop()
    recorded = [r[0] for r in rows]
    assert sorted(recorded) == sorted(before + during)  # every one, none twice
    assert not list((tmp_path / "spill").glob("*.jsonl"))


def test_a_killed_sqlite_server_loses_no_record_older_than_its_flush_interval(upstream, tmp_path: Path):
    config = lone_server(upstream, {})
    group = Replicas(config, tmp_path, count=1)
    try:
        ids = send(group, 40)
        time.sleep(3 * FLUSH_S)
        kill(group)
    finally:
        group.stop()
    recorded = {r["request_id"] for r in read_records(group.db, limit=1000)}
    assert recorded == set(ids)
