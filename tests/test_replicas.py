"""Three `pointsman serve` processes on loopback sharing Redis: limits, budgets and circuits
hold across replicas, and Redis going away degrades them without failing requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from pointsman.testing import Behaviour

MASTER = "mk-replicas"
REDIS = ("127.0.0.1", 6379)
HELLO = [{"role": "user", "content": "hello"}]


def redis_available() -> bool:
    import socket

    try:
        socket.create_connection(REDIS, timeout=1).close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not redis_available(), reason="Redis is not running on 127.0.0.1:6379")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replicas:
    """N real server processes with one config, one key store and one Redis namespace."""

    def __init__(self, config: dict[str, Any], tmp: Path, count: int = 3) -> None:
        self.path = tmp / "replicas.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.db = tmp / "shared.db"
        self.ports = [free_port() for _ in range(count)]
        env = {**os.environ, "POINTSMAN_MASTER_KEY": MASTER}
        self.logs = [(tmp / f"replica-{i}.log").open("wb") for i in range(count)]
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pointsman",
                    "serve",
                    "--config",
                    str(self.path),
                    "--port",
                    str(port),
                    "--db",
                    str(self.db),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for port, log in zip(self.ports, self.logs, strict=True)
        ]
        deadline = time.monotonic() + 30
        for port in self.ports:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("replica did not start") from None
                    time.sleep(0.1)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i % len(self.ports)]}"

    def client(self, i: int, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url(i)}/v1", api_key=key, max_retries=0, timeout=20)

    def get(self, i: int, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url(i)}{path}", timeout=5) as response:
            return json.loads(response.read())

    def new_key(self, **spec: Any) -> str:
        request = urllib.request.Request(
            f"{self.url(0)}/admin/keys",
            method="POST",
            data=json.dumps({"name": "shared", **spec}).encode(),
            headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(json.loads(response.read())["key"])

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()


def replica_config(upstream: Any, redis_port: int = REDIS[1], **router: Any) -> dict[str, Any]:
    deployments = []
    for name, price in (("primary", 1.0), ("backup", 1.0)):
        deployments.append(
            {
                "name": name,
                "provider": "openai",
                "model": name,
                "api_base": f"{upstream.url}/{name}/v1",
                "price": {"input": price, "output": price},
                "timeouts": {"total": 5},
            }
        )
    return {
        "router": {"backoff_base_s": 0.0, **router},
        "state": {
            "url": f"redis://127.0.0.1:{redis_port}/0",
            "prefix": f"pm-test-{uuid.uuid4().hex[:8]}",
            "sync_interval_s": 0.05,
            "timeout_s": 0.2,
        },
        "auth": {"enabled": True},
        "deployments": deployments,
        "models": {"auto": {"deployments": ["primary", "backup"]}},
    }


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Any]:
    started: list[Replicas] = []

    def start(config: dict[str, Any], count: int = 3) -> Replicas:
        group = Replicas(config, tmp_path, count)
        started.append(group)
        return group

    yield start
    for group in started:
        group.stop()


def outcome(client: openai.OpenAI) -> str:
    try:
        client.chat.completions.create(model="auto", messages=HELLO)
        return "ok"
    except openai.RateLimitError as exc:
        return str(exc.body.get("code") if isinstance(exc.body, dict) else "429")


def test_rate_limit_holds_across_three_replicas(upstream, replicas):
    group = replicas(replica_config(upstream))
    key = group.new_key(rpm=60)
    results = [outcome(group.client(i, key)) for i in range(90)]
    assert results.count("ok") == 60
    assert results.count("rate_limit_exceeded") == 30
    assert upstream.calls("primary") == 60


def test_parallel_limit_holds_across_replicas(upstream, replicas):
    from concurrent.futures import ThreadPoolExecutor

    group = replicas(replica_config(upstream))
    upstream.set("primary", Behaviour(latency_s=0.5))
    key = group.new_key(max_parallel=2)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: outcome(group.client(i, key)), range(6)))
    assert results.count("ok") == 2


def test_budget_holds_across_replicas(upstream, replicas):
    from pointsman.store import read_records

    group = replicas(replica_config(upstream))
    # Worst case per request: ~1,030 tokens x $1/M ~ $0.00103 (no max_tokens); a real answer
    # costs ~$0.000015. A $0.0011 budget admits a request only while under $0.00007 is spent:
    # about eight requests in all. Three replicas with separate ledgers would admit ~24.
    key = group.new_key(budget=0.0011)
    results = [outcome(group.client(i, key)) for i in range(30)]
    ok = results.count("ok")
    assert 3 <= ok <= 10
    assert results == ["ok"] * ok + ["budget_exceeded"] * (30 - ok)
    time.sleep(1)  # the replicas' record writers
    spent = sum(r["cost"] for r in read_records(group.db, limit=1000) if r["status"] == 200)
    assert 0 < spent <= 0.0011


def test_a_circuit_opened_by_one_replica_is_open_for_the_others(upstream, replicas):
    group = replicas(replica_config(upstream, circuit_breaker={"failure_threshold": 2, "open_s": 30}))
    key = group.new_key()
    upstream.set("primary", Behaviour(status=500))
    for _ in range(2):
        raw = group.client(0, key).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
        assert raw.headers["x-pointsman-model"] == "backup"
    assert upstream.calls("primary") == 2
    time.sleep(0.5)  # a few sync intervals
    for i in (1, 2):
        raw = group.client(i, key).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
        assert raw.headers["x-pointsman-model"] == "backup"
        assert group.get(i, "/readyz")["circuits"]["primary"] == "open"
    assert upstream.calls("primary") == 2


def test_redis_going_away_degrades_without_failing_requests_and_recovers(upstream, replicas):
    from tests.tcp_proxy import TcpProxy

    proxy = TcpProxy(*REDIS).start()
    try:
        config = replica_config(
            upstream, redis_port=proxy.port, circuit_breaker={"failure_threshold": 2, "open_s": 30}
        )
        group = replicas(config)
        key = group.new_key(rpm=1000)
        assert all(group.get(i, "/readyz")["status"] == "ready" for i in range(3))
        proxy.cut()
        results = [outcome(group.client(i, key)) for i in range(30)]
        assert results == ["ok"] * 30
        time.sleep(0.5)
        for i in range(3):
            ready = group.get(i, "/readyz")
            assert ready["status"] == "degraded" and ready["degraded"] == ["state"]
        with urllib.request.urlopen(f"{group.url(0)}/metrics", timeout=5) as response:
            assert 'pointsman_backend_up{backend="redis"} 0.0' in response.read().decode()
        proxy.restore()
        deadline = time.monotonic() + 10
        while any(group.get(i, "/readyz")["status"] != "ready" for i in range(3)):
            assert time.monotonic() < deadline, "replicas did not reconnect"
            time.sleep(0.2)
        # State is shared again: a circuit opened on one replica reaches the others.
        upstream.set("primary", Behaviour(status=500))
        for _ in range(2):
            group.client(0, key).chat.completions.create(model="auto", messages=HELLO)
        calls = upstream.calls("primary")
        time.sleep(0.5)
        group.client(1, key).chat.completions.create(model="auto", messages=HELLO)
        assert upstream.calls("primary") == calls
    finally:
        proxy.stop()


def test_reload_across_replicas_without_dropping_requests_in_flight(upstream, replicas):
    from concurrent.futures import ThreadPoolExecutor

    config = replica_config(upstream)
    group = replicas(config)
    key = group.new_key()
    upstream.set("primary", Behaviour(latency_s=1.0))
    config["models"]["fresh"] = {"deployments": ["backup"]}
    with ThreadPoolExecutor(6) as pool:
        in_flight = [pool.submit(outcome, group.client(i, key)) for i in range(6)]
        time.sleep(0.3)
        group.path.write_text(yaml.safe_dump(config))
        request = urllib.request.Request(
            f"{group.url(0)}/admin/reload", method="POST", headers={"authorization": f"Bearer {MASTER}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["announced_to_replicas"] is True
        assert [f.result() for f in in_flight] == ["ok"] * 6
    time.sleep(0.5)
    for i in range(3):
        raw = group.client(i, key).chat.completions.with_raw_response.create(model="fresh", messages=HELLO)
        assert raw.headers["x-pointsman-model"] == "backup"


def test_invalid_config_is_refused_by_reload_and_the_old_one_keeps_serving(upstream, replicas):
    config = replica_config(upstream)
    group = replicas(config, count=1)
    key = group.new_key()
    group.path.write_text(yaml.safe_dump({**config, "models": {"auto": {"deployments": ["nope"]}}}))
    request = urllib.request.Request(
        f"{group.url(0)}/admin/reload", method="POST", headers={"authorization": f"Bearer {MASTER}"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert "unknown deployment 'nope'" in json.loads(refused.value.read())["error"]["message"]
    assert outcome(group.client(0, key)) == "ok"


def test_config_file_watch_reloads_a_running_server(upstream, tmp_path):
    from pointsman.router import Router
    from pointsman.server import ServerThread

    config = replica_config(upstream)
    config.pop("state")
    config["auth"] = {"enabled": False}
    config["server"] = {"watch_config": True}
    path = tmp_path / "watched.yaml"
    path.write_text(yaml.safe_dump(config))
    router = Router.from_config(path, db=tmp_path / "w.db")
    with ServerThread(router) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="fresh", messages=HELLO)
        config["models"]["fresh"] = {"deployments": ["backup"]}
        time.sleep(0.01)
        path.write_text(yaml.safe_dump(config))
        deadline = time.monotonic() + 5
        while "fresh" not in router.config.models:
            assert time.monotonic() < deadline, "the config change was not picked up"
            time.sleep(0.1)
        raw = client.chat.completions.with_raw_response.create(model="fresh", messages=HELLO)
        assert raw.headers["x-pointsman-model"] == "backup"
    router.close()


def test_every_request_is_recorded_in_postgresql_exactly_once_across_replicas(upstream, replicas):
    import psycopg
    from psycopg import sql

    url = os.environ.get("POINTSMAN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"pm_replicas_{uuid.uuid4().hex[:10]}"
    config = replica_config(upstream)
    config["store"] = {"url": url, "schema": schema, "flush_interval_s": 0.1}
    try:
        group = replicas(config)
        # A key made through one replica is known to all of them: keys live in PostgreSQL too.
        key = group.new_key(budget=100.0)
        upstream.set("primary", Behaviour(failure_rate=0.3))
        ids = []
        for i in range(45):
            raw = group.client(i, key).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
            ids.append(raw.headers["x-pointsman-request-id"])
        with pytest.raises(openai.NotFoundError):
            group.client(1, key).chat.completions.create(model="nope", messages=HELLO)
        deadline = time.monotonic() + 10
        with psycopg.connect(url, autocommit=True) as conn:
            table = sql.Identifier(schema, "requests")
            while True:
                rows = conn.execute(sql.SQL("SELECT request_id, status FROM {}").format(table)).fetchall()
                if len(rows) >= 46 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        recorded = [r[0] for r in rows]
        assert len(recorded) == len(set(recorded)) == 46
        assert set(ids) <= set(recorded)
        assert sorted(r[1] for r in rows).count(404) == 1
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
