"""The PostgreSQL record store against a real PostgreSQL: migrations, round trips, audit filters,
spend, retention, exactly-once writes, and no record lost while the database is away."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

from pointsman.dashboard.summary import FIELDS  # noqa: E402
from pointsman.store import NAMES, LanguageOf, RecordStore  # noqa: E402
from pointsman.store_postgres import PostgresRecordStore, RecordsUnavailable, migrate, migrations  # noqa: E402
from tests.conftest import deployment  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402

PG_URL = os.environ.get("POINTSMAN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PG = psycopg.conninfo.conninfo_to_dict(PG_URL)
PG_HOST, PG_PORT = PG.get("host", "127.0.0.1"), int(PG.get("port", 5432))
HELLO = [{"role": "user", "content": "hello"}]


def postgres_available() -> bool:
    try:
        psycopg.connect(PG_URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


pytestmark = pytest.mark.skipif(not postgres_available(), reason=f"PostgreSQL is not reachable at {PG_URL}")


def through(proxy: TcpProxy) -> str:
    """PG_URL, reached through `proxy`."""
    user = PG.get("user", "postgres")
    auth = f"{user}:{PG['password']}" if PG.get("password") else user
    return f"postgresql://{auth}@127.0.0.1:{proxy.port}/{PG.get('dbname', 'test')}"


def sql_rows(schema: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return conn.execute(query, args).fetchall()


def record(request_id: str | None = None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": request_id or uuid.uuid4().hex,
        "ts": time.time(),
        "requested_model": "auto",
        "deployment": "cheap",
        "status": 200,
        "cost": 0.01,
        "decision": {"strategy": "ordered", "reasons": ["first"]},
        "attempts": [{"deployment": "cheap", "status": 200}],
    }
    base.update(fields)
    return base


def wait_for(condition: Any, timeout: float = 10, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.05)


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema of this test's own (created by the store's migrations), dropped afterwards."""
    name = f"pm_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def open_store(schema: str, tmp_path: Path) -> Iterator[Any]:
    """Factory: a PostgresRecordStore on this test's schema, spilling under tmp_path; closed after."""
    stores: list[PostgresRecordStore] = []

    def make(url: str = PG_URL, **settings: Any) -> PostgresRecordStore:
        settings.setdefault("schema", schema)
        settings.setdefault("spill_dir", tmp_path / "spill")
        settings.setdefault("flush_interval_s", 0.05)
        store = PostgresRecordStore(url, **settings)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy(PG_HOST, PG_PORT) as running:
        yield running


def test_replicas_starting_together_apply_each_migration_once(schema, open_store):
    stores: list[PostgresRecordStore] = []
    threads = [threading.Thread(target=lambda: stores.append(open_store())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stores) == 4 and all(store.healthy for store in stores)
    applied = sql_rows(schema, "SELECT version, name FROM pointsman_migrations ORDER BY version")
    assert applied == [(version, name) for version, name, _ in migrations()]
    indexes = {
        row[0] for row in sql_rows(schema, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", schema)
    }
    for column in (
        "ts",
        "key_id",
        "requested_model",
        "deployment",
        "reason",
        "region",
        "team",
        "user",
        "language",
    ):
        assert f"requests_{column}" in indexes
    # A later start finds nothing left to apply.
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        assert migrate(conn, schema) == []
    # Every replica writes into the one table.
    for i, store in enumerate(stores):
        store.add(record(f"replica-{i}"))
        store.flush()
    assert sql_rows(schema, "SELECT count(*) FROM requests") == [(4,)]


def test_a_record_round_trips_with_every_column(open_store):
    store = open_store()
    full = {
        "request_id": "req-1",
        "ts": 1_700_000_000.25,
        "api_key": "fp-abc",
        "key_id": "key-1",
        "team": "search",
        "user": "ada",
        "requested_model": "auto",
        "route": "rules:code",
        "reason": "code",
        "region": "eu",
        "decision": {"strategy": "rules", "scores": {"cheap": 0.5}, "reasons": ["code"]},
        "attempts": [{"deployment": "cheap", "status": 500}, {"deployment": "strong", "status": 200}],
        "deployment": "strong",
        "status": 200,
        "error": None,
        "stream": 1,
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "cost": 0.000123,
        "latency_ms": 45.5,
        "upstream_ms": 40.25,
        "first_token_ms": 10.5,
        "overhead_ms": 0.75,
        "prompt": "Écris une fonction",
        "answer": "def f(): ...",
        "language": LanguageOf("Bonjour, pouvez-vous écrire une fonction qui trie une liste de nombres ?"),
        "cache": "hit",
        "saved_cost": 0.00042,
        "usage_source": "estimate",
    }
    assert set(full) == set(NAMES)
    store.add(full)
    [row] = store.query()
    assert row == {**full, "language": "fr"}
    [summary_row] = store.window(1_700_000_000, 1_700_000_001)
    assert summary_row == {name: row[name] for name in FIELDS}


def test_audit_queries_answer_like_the_sqlite_store(open_store, tmp_path):
    pg = open_store()
    lite = RecordStore(tmp_path / "records.db", flush_interval_s=0.05)
    now = time.time()
    variants = [
        {"requested_model": "auto", "deployment": "cheap", "key_id": "k1", "team": "a", "user": "u1",
         "reason": "code", "route": "rules:code", "region": "eu", "status": 200},
        {"requested_model": "strong", "deployment": "strong", "api_key": "fp-9", "team": "b", "user": "u2",
         "reason": "tier", "route": "tiers:hard", "region": "us", "status": 502},
        {"requested_model": "auto", "deployment": "strong", "key_id": "k2", "team": "a", "user": "u2",
         "reason": "fallback", "route": "ordered:fallback", "region": "eu", "status": 200},
    ]  # fmt: skip
    for i in range(30):
        row = record(f"r{i:02d}", ts=now - 100 + i, **variants[i % 3])
        pg.add(row)
        lite.add(row)
    try:
        for filters in (
            {},
            {"limit": 5},
            {"model": "strong"},
            {"model": "auto", "region": "eu"},
            {"since": now - 80, "until": now - 75},
            {"key": "k1"},
            {"key": "fp-9"},
            {"reason": "fallback"},
            {"reason": "tiers:hard"},
            {"status": 502},
            {"team": "a", "user": "u2"},
            {"user": "nobody"},
        ):
            filters.setdefault("limit", 100)
            assert [r["request_id"] for r in pg.query(**filters)] == [
                r["request_id"] for r in lite.query(**filters)
            ], filters
        window = pg.window(now - 90, now - 80)
        assert [r["request_id"] for r in window] == [r["request_id"] for r in lite.window(now - 90, now - 80)]
        assert [r["request_id"] for r in window] == [f"r{i:02d}" for i in range(10, 20)]
    finally:
        lite.close()


def test_spent_since_counts_written_and_still_queued_records(open_store):
    store = open_store(flush_interval_s=60)
    start = time.time() - 10
    store.add(record(cost=1.0, key_id="k1", team="t", user="ada", ts=start - 5))  # before the period
    store.add(record(cost=2.0, key_id="k1", team="t", user="ada"))
    store.flush()
    store.add(record(cost=4.0, key_id="k2", team="t", user="bob"))  # queued, not yet written
    assert store.spent_since("global", start) == pytest.approx(6.0)
    assert store.spent_since("key:k1", start) == pytest.approx(2.0)
    assert store.spent_since("team:t", start) == pytest.approx(6.0)
    assert store.spent_since("user:bob", start) == pytest.approx(4.0)
    assert store.spent_since("user:nobody", start) == 0.0


def test_retention_deletes_only_records_past_the_window(schema, open_store):
    store = open_store(retention_days=1)
    now = time.time()
    for i in range(3):
        store.add(record(f"old-{i}", ts=now - 2 * 86400))
    store.add(record("fresh", ts=now - 3600))
    store.flush()
    assert store.apply_retention() == 3
    assert [r["request_id"] for r in store.query()] == ["fresh"]
    assert store.apply_retention() == 0


def test_a_replayed_batch_never_duplicates_a_record(schema, open_store, proxy, tmp_path):
    store = open_store()
    rows = [record(f"r{i}") for i in range(5)]
    for row in rows:
        store.add(row)
    store.flush()
    # The same batch again (a commit whose acknowledgement was lost)...
    for row in rows:
        store.add(row)
    store.flush()
    # ...and once more from the spill of a replica that lost its connection, then stopped.
    proxy.cut()
    gone = open_store(through(proxy))
    for row in rows:
        gone.add(row)
    gone.close()
    assert len(list((tmp_path / "spill").glob("*.jsonl"))) == 1
    proxy.restore()
    open_store(through(proxy)).flush()
    assert not list((tmp_path / "spill").glob("*.jsonl"))
    assert sql_rows(schema, "SELECT count(*), count(DISTINCT request_id) FROM requests") == [(5, 5)]


def test_postgres_down_at_start_buffers_spills_and_writes_everything_when_back(
    schema, open_store, proxy, tmp_path
):
    proxy.cut()
    started = time.monotonic()
    store = open_store(through(proxy), buffer_records=10, retry_interval_s=0.1)
    assert time.monotonic() - started < 3
    assert not store.healthy
    added = time.monotonic()
    for i in range(25):
        store.add(record(f"r{i:02d}"))
    assert time.monotonic() - added < 0.05  # add never waits on the database
    with pytest.raises(RecordsUnavailable):
        store.query()
    wait_for(lambda: list((tmp_path / "spill").glob("*.jsonl")), message="a spill file")
    assert store.backlog == 25
    proxy.restore()
    wait_for(lambda: store.healthy and store.backlog == 0, message="the backlog to drain")
    assert not list((tmp_path / "spill").glob("*.jsonl"))
    assert [r["request_id"] for r in store.query(limit=100)] == [f"r{i:02d}" for i in reversed(range(25))]


def test_a_store_closed_while_postgres_is_down_leaves_its_records_for_the_next(
    schema, open_store, proxy, tmp_path
):
    proxy.cut()
    first = open_store(through(proxy))
    for i in range(7):
        first.add(record(f"r{i}"))
    first.close()
    assert len(list((tmp_path / "spill").glob("*.jsonl"))) == 1
    proxy.restore()
    open_store(through(proxy)).flush()
    assert not list((tmp_path / "spill").glob("*.jsonl"))
    assert sql_rows(schema, "SELECT count(*) FROM requests") == [(7,)]


# -- through the real server -------------------------------------------------------------------


def readyz(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
        return json.loads(response.read())


def server_config(upstream: Any, store: dict[str, Any]) -> dict[str, Any]:
    return {
        "store": {"flush_interval_s": 0.05, **store},
        "deployments": [deployment(upstream, "cheap")],
        "models": {"auto": {"deployments": ["cheap"]}},
    }


def test_the_server_records_every_request_in_postgres_once(upstream, schema, serve):
    server = serve(server_config(upstream, {"url": PG_URL, "schema": schema}))
    client = server.client()
    ids = []
    for i in range(10):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=HELLO, stream=i % 2 == 1
        )
        ids.append(raw.headers["x-pointsman-request-id"])
        if i % 2:
            list(raw.parse())
    store = server.router.store
    assert isinstance(store, PostgresRecordStore)
    wait_for(lambda: len(store.query(limit=100)) >= 10, message="records to be written")
    rows = store.query(limit=100)
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert {r["deployment"] for r in rows} == {"cheap"} and {r["stream"] for r in rows} == {0, 1}
    assert sql_rows(schema, "SELECT count(*), count(DISTINCT request_id) FROM requests") == [(10, 10)]


def test_cutting_postgres_under_load_fails_no_request_and_loses_no_record(
    upstream, schema, proxy, serve, tmp_path
):
    spill_dir = tmp_path / "pg-spill"
    server = serve(
        server_config(upstream, {"url": through(proxy), "schema": schema, "buffer_records": 20,
                                 "spill_dir": str(spill_dir), "connect_timeout_s": 1})
    )  # fmt: skip
    store = server.router.store
    assert isinstance(store, PostgresRecordStore) and store.healthy
    ids: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        client = server.client()
        while not stop.is_set():
            try:
                raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
                ids.append(raw.headers["x-pointsman-request-id"])
            except Exception as exc:  # any failed request fails the test
                failures.append(exc)
            time.sleep(0.005)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(ids) >= 50, message="load before the cut")
        proxy.cut()
        wait_for(lambda: not store.healthy, message="the store to notice")
        ready = readyz(server.url)
        assert ready["status"] == "degraded" and "store" in ready["degraded"]
        wait_for(lambda: list(spill_dir.glob("*.jsonl")), message="the spill file")
        during = len(ids)
        wait_for(lambda: len(ids) >= during + 100, message="load during the cut")
        spilled = sum(1 for path in spill_dir.glob("*.jsonl") for _ in path.open("rb"))
        assert spilled >= 20
        proxy.restore()
        wait_for(lambda: store.healthy, message="the store to reconnect")
        assert readyz(server.url)["status"] == "ready"
        after = len(ids)
        wait_for(lambda: len(ids) >= after + 50, message="load after the restore")
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []
    count = "SELECT count(*) FROM requests"
    wait_for(lambda: sql_rows(schema, count)[0][0] >= len(ids), message="every record to arrive")
    assert not list(spill_dir.glob("*.jsonl"))
    recorded = sql_rows(schema, "SELECT request_id FROM requests")
    assert len(recorded) == len(ids)
    assert sorted(r[0] for r in recorded) == sorted(ids)


def test_the_store_setting_takes_a_postgresql_url_and_names_a_wrong_one(upstream):
    from pointsman.config import ConfigError, load_config

    config = {"deployments": [deployment(upstream, "cheap")]}
    assert load_config({**config, "store": PG_URL}).store.url == PG_URL
    assert load_config({**config, "store": {"url": PG_URL, "schema": "audit"}}).store.db_schema == "audit"
    with pytest.raises(ConfigError) as error:
        load_config({**config, "store": {"url": "mysql://db/records", "schema": "no-dashes"}})
    assert error.value.problems[0] == "store.url: expected a postgresql:// URL, got 'mysql://db/records'"
    assert error.value.problems[1].startswith("store.schema: ")
