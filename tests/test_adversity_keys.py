"""Virtual keys under adversity: PostgreSQL going away under three real replicas, revocations
reaching every replica in time, and an admin API whose bad input is refused with a 400 naming the
field, never stored, never able to lock the SQLite key store."""

# ruff: noqa: F811 - the `replicas` fixture is imported from test_replicas and requested by name
from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import deployment
from tests.tcp_proxy import TcpProxy
from tests.test_adversity_state import create_key
from tests.test_keys_budgets import HELLO, MASTER, admin, new_key
from tests.test_replicas import MASTER as REPLICAS_MASTER
from tests.test_replicas import (  # noqa: F401 - `replicas` is a fixture
    Replicas,
    redis_available,
    replica_config,
    replicas,
)

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
CACHE_S = 2.0  # keys.cache_s, the documented time a revocation takes to reach every replica


def postgres_available() -> bool:
    try:
        psycopg.connect(PG_URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


@pytest.fixture(autouse=True)
def master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"pm_adv_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


needs_both = pytest.mark.skipif(
    not (postgres_available() and redis_available()), reason="needs PostgreSQL and Redis on loopback"
)


def ask(group: Replicas, i: int, key: str) -> str:
    try:
        group.client(i, key).chat.completions.create(model="auto", messages=HELLO)
        return "ok"
    except openai.APIStatusError as exc:
        return str(exc.status_code)


def seconds_until_refused(group: Replicas, i: int, key: str, limit: float) -> float:
    started = time.monotonic()
    while ask(group, i, key) != "401":
        assert time.monotonic() - started < limit, f"the key still works on replica {i} after {limit} s"
        time.sleep(0.1)
    return time.monotonic() - started


@needs_both
def test_known_keys_keep_working_while_postgresql_is_away_and_unknown_ones_get_a_503(
    upstream, replicas, schema, tmp_path
):
    with TcpProxy("127.0.0.1", 5432) as proxy:
        config = replica_config(upstream)
        config["store"] = {
            "url": f"postgresql://postgres@127.0.0.1:{proxy.port}/test",
            "schema": schema,
            "flush_interval_s": 0.1,
        }
        group = replicas(config)
        known = create_key(group)["key"]
        unseen = create_key(group)["key"]
        assert [ask(group, i, known) for i in range(3)] == ["ok"] * 3
        assert ask(group, 0, "pm-" + "x" * 40) == "401"  # the store answers: an invalid key
        proxy.cut()
        time.sleep(CACHE_S + 0.5)  # past the cache: the replicas must ask the store again
        assert [ask(group, i, known) for i in range(3)] == ["ok"] * 3
        with pytest.raises(openai.APIStatusError) as unavailable:
            group.client(1, unseen).chat.completions.create(model="auto", messages=HELLO)
        assert unavailable.value.status_code == 503
        body = unavailable.value.body
        assert isinstance(body, dict) and body["code"] == "keys_unavailable"
        request_id = unavailable.value.response.headers["x-pointsman-request-id"]
        proxy.restore()
        # Recorded: the refusal reaches PostgreSQL once it is back.
        deadline = time.monotonic() + 15
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            table = sql.Identifier(schema, "requests")
            query = sql.SQL("SELECT status FROM {} WHERE request_id = %s").format(table)
            while not (rows := conn.execute(query, (request_id,)).fetchall()):
                assert time.monotonic() < deadline, "the 503 was not recorded"
                time.sleep(0.2)
        assert rows == [(503,)]
        # Back: the key store is tried again within its retry interval (1 s).
        deadline = time.monotonic() + 3
        while ask(group, 1, unseen) != "ok":
            assert time.monotonic() < deadline, "the key store did not come back"
            time.sleep(0.2)


@needs_both
def test_a_revocation_reaches_every_replica_within_the_cache_time(upstream, replicas, schema):
    config = replica_config(upstream)
    config["store"] = {"url": PG_URL, "schema": schema, "flush_interval_s": 0.1}
    group = replicas(config)
    by_api, by_cli = create_key(group), create_key(group)
    assert [ask(group, i, k["key"]) for i in range(3) for k in (by_api, by_cli)] == ["ok"] * 6
    status, _ = admin_on(group, 0, "DELETE", f"/admin/keys/{by_api['id']}")
    assert status == 200
    seconds_until_refused(group, 1, by_api["key"], CACHE_S + 1.5)
    done = subprocess.run(
        [sys.executable, "-m", "pointsman", "keys", "revoke", by_cli["id"], "--config", str(group.path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seconds_until_refused(group, 2, by_cli["key"], CACHE_S + 1.5)


def admin_on(group: Replicas, i: int, method: str, path: str) -> tuple[int, Any]:
    class Target:
        url = group.url(i)

    return admin(Target(), method, path, token=REPLICAS_MASTER)


# -- SQLite and the admin API ------------------------------------------------------------------


def single(upstream: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [deployment(upstream, "cheap")],
        "models": {"auto": {"deployments": ["cheap"]}},
    }


BAD_KEYS = [
    ({"name": "bad", "expires_at": [1]}, "expires_at"),
    ({"name": "bad", "expires_at": "x"}, "expires_at"),
    ({"name": "bad", "expires_in_s": "abc"}, "expires_in_s"),
    ({"name": "bad", "expires_in_s": -5}, "expires_in_s"),
    ({"name": "bad", "rpm": True}, "rpm"),
    ({"name": "bad", "tpm": 1.5}, "tpm"),
    ({"name": "bad", "budget": "1"}, "budget"),
    ({"name": "bad", "budget": -1}, "budget"),
    ({"name": "bad", "budget_period": "year"}, "budget_period"),
    ({"name": "bad", "scopes": []}, "scopes"),
    ({"name": "bad", "metadata": {"team": 1}}, "metadata"),
    ({"name": 5}, "name"),
]


def test_bad_key_bodies_get_a_400_naming_the_field_and_are_never_stored(upstream, serve):
    server = serve(single(upstream))
    for body, field in BAD_KEYS:
        status, answer = admin(server, "POST", "/admin/keys", body)
        assert status == 400, (body, answer)
        assert f"'{field}'" in answer["error"]["message"], answer
        assert answer["error"]["type"] == "invalid_request_error"
    status, listing = admin(server, "GET", "/admin/keys")
    assert status == 200 and listing["data"] == []


def test_a_failed_admin_write_never_locks_the_sqlite_key_store(upstream, serve):
    server = serve(single(upstream))
    assert admin(server, "POST", "/admin/keys", {"name": "bad", "expires_at": [1]})[0] == 400
    created = new_key(server)
    client = server.client(api_key=created["key"])
    assert client.chat.completions.create(model="auto", messages=HELLO)
    # Another process writes to the same file: the CLI revokes, and the server sees it in time.
    done = subprocess.run(
        [sys.executable, "-m", "pointsman", "keys", "revoke", created["id"], "--db", str(server.db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    started = time.monotonic()
    while True:
        try:
            client.chat.completions.create(model="auto", messages=HELLO)
        except openai.AuthenticationError as exc:
            assert "revoked" in exc.message
            break
        assert time.monotonic() - started < CACHE_S + 1.5, "a revoked key kept working"
        time.sleep(0.1)
    second = new_key(server, name="second")
    assert admin(server, "DELETE", f"/admin/keys/{second['id']}")[0] == 200
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key=second["key"]).chat.completions.create(model="auto", messages=HELLO)


def test_a_damaged_key_row_is_listed_and_admits_nothing(upstream, serve):
    server = serve(single(upstream))
    new_key(server, name="fine")
    with sqlite3.connect(server.db) as db:
        db.execute(
            "INSERT INTO keys (id, name, hash, prefix, created_at, expires_at, spec)"
            " VALUES ('key_damaged', 'old', 'h', 'pm-old', 1.0, 'x', '{\"rpm\": \"many\"}')"
        )
    status, listing = admin(server, "GET", "/admin/keys")
    assert status == 200
    damaged = next(k for k in listing["data"] if k["id"] == "key_damaged")
    assert damaged["active"] is False


def records_limits_answer(server: Any) -> list[tuple[str, int, str]]:
    out = []
    for limit in ("inf", "-1", "abc", "0", "10001", "1.5"):
        status, body = admin(server, "GET", f"/admin/records?limit={limit}")
        out.append((limit, status, body["error"]["message"] if status != 200 else ""))
    return out


def test_records_limit_is_typed_and_bounded_on_sqlite(upstream, serve):
    server = serve(single(upstream))
    for limit, status, message in records_limits_answer(server):
        assert status == 400 and "'limit'" in message, (limit, status, message)
    status, body = admin(server, "GET", "/admin/records?limit=5&since=0")
    assert status == 200 and body["object"] == "list"
    status, body = admin(server, "GET", "/admin/records?since=nan")
    assert status == 400 and "'since'" in body["error"]["message"]


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not reachable")
def test_records_limit_is_typed_and_bounded_on_postgresql_the_same_way(upstream, serve, schema):
    server = serve({**single(upstream), "store": {"url": PG_URL, "schema": schema}})
    for limit, status, message in records_limits_answer(server):
        assert status == 400 and "'limit'" in message, (limit, status, message)
    assert admin(server, "GET", "/admin/records?limit=5")[0] == 200


def test_keys_outage_cache_setting_is_validated():
    from pointsman.config import ConfigError, load_config

    config: dict[str, Any] = {
        "deployments": [
            {"name": "a", "provider": "openai", "model": "m", "api_base": "http://127.0.0.1:9/v1"}
        ]
    }
    assert load_config({**config, "keys": {"outage_cache_s": 60}}).keys.outage_cache_s == 60
    with pytest.raises(ConfigError):
        load_config({**config, "keys": {"outage_cache_s": -1}})
