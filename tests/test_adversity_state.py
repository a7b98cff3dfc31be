"""Shared limits and budgets under adversity, through three real `pointsman serve` replicas and
the official openai client: a slow Redis never turns into local limits, an outage admits only
each replica's share, and what was admitted meanwhile is added back to Redis afterwards."""

# ruff: noqa: F811 - the `replicas` fixture is imported from test_replicas and requested by name
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import redis

from pointsman.store import read_records
from tests.tcp_proxy import TcpProxy
from tests.test_replicas import (  # noqa: F401 - `replicas` is a fixture
    HELLO,
    MASTER,
    REDIS,
    Replicas,
    outcome,
    redis_available,
    replica_config,
    replicas,
)

pytestmark = pytest.mark.skipif(not redis_available(), reason="Redis is not running on 127.0.0.1:6379")


class SlowProxy(TcpProxy):
    """A TCP proxy that holds every chunk for `delay_s` each way: a Redis far away on the
    network (or a loaded one), still answering every call."""

    delay_s = 0.03

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # type: ignore[override]
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


def create_key(group: Replicas, **spec: Any) -> dict[str, Any]:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{group.url(0)}/admin/keys",
        method="POST",
        data=json.dumps({"name": "adversity", **spec}).encode(),
        headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        created: dict[str, Any] = json.loads(response.read())
    return created


def ask(group: Replicas, i: int, key: str, **body: Any) -> str:
    try:
        group.client(i, key).chat.completions.create(model="auto", messages=HELLO, **body)
        return "ok"
    except openai.RateLimitError as exc:
        return str(exc.body.get("code") if isinstance(exc.body, dict) else "429")


def wait_ready(group: Replicas, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(group.get(i, "/readyz")["status"] != "ready" for i in range(len(group.ports))):
        assert time.monotonic() < deadline, "replicas did not reconnect to Redis"
        time.sleep(0.1)


def spend_config(upstream: Any, redis_port: int) -> dict[str, Any]:
    """Replicas whose requests cost about a cent each, worst case close to actual."""
    config = replica_config(upstream, redis_port=redis_port)
    for entry in config["deployments"]:
        entry["price"] = {"input": 1000.0, "output": 1000.0}
    return config


def recorded_spend(group: Replicas, key_id: str, requests: int) -> float:
    """What a key's `requests` cost, once the replicas' record writers have them all."""
    deadline = time.monotonic() + 10
    while len(rows := [r for r in read_records(group.db, limit=100_000) if r["key_id"] == key_id]) < requests:
        assert time.monotonic() < deadline, "records missing"
        time.sleep(0.1)
    return sum(r["cost"] or 0.0 for r in rows if r["status"] == 200)


def test_a_slow_redis_keeps_shared_limits_and_budgets_exact(upstream, replicas):
    with SlowProxy(*REDIS) as proxy:
        config = spend_config(upstream, proxy.port)
        config["state"].pop("timeout_s")  # the default, sized for a network, not for loopback
        group = replicas(config)
        limited = create_key(group, rpm=20)["key"]
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda i: ask(group, i, limited), range(45)))
        assert results.count("ok") == 20
        assert results.count("rate_limit_exceeded") == 25
        # About 0.3 cents a request, 1.1 cents worst case: under twenty fit in the budget.
        budgeted = create_key(group, budget=0.06)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: ask(group, i, budgeted["key"], max_tokens=8), range(60)))
        assert results.count("ok") >= 5
        assert results.count("ok") + results.count("budget_exceeded") == 60
        assert recorded_spend(group, budgeted["id"], 60) <= 0.06
        assert all(group.get(i, "/readyz")["status"] == "ready" for i in range(3))


def test_a_redis_outage_admits_only_each_replicas_share_and_it_is_added_back(upstream, replicas):
    proxy = TcpProxy(*REDIS).start()
    try:
        config = spend_config(upstream, proxy.port)
        group = replicas(config)
        limited, budgeted = create_key(group, rpm=30), create_key(group, budget=0.06)
        assert [ask(group, i, budgeted["key"], max_tokens=8) for i in range(6)] == ["ok"] * 6
        time.sleep(0.3)  # heartbeats: every replica knows there are three
        proxy.cut()
        during = [ask(group, i, limited["key"]) for i in range(60)]
        # 30 a minute shared by three replicas: ten each while they cannot coordinate.
        assert during.count("ok") == 30
        during = [ask(group, i, budgeted["key"], max_tokens=8) for i in range(60)]
        assert "budget_exceeded" in during
        spent = recorded_spend(group, budgeted["id"], 66)
        assert spent <= 0.06
        proxy.restore()
        wait_ready(group)
        time.sleep(0.5)  # the reconciliation runs in each replica's sync loop
        client = redis.Redis(*REDIS)
        prefix = config["state"]["prefix"]
        assert client.zcard(f"{prefix}:rpm:key:{limited['id']}") == 30
        assert [ask(group, i, limited["key"]) for i in range(6)] == ["rate_limit_exceeded"] * 6
        hashes = client.keys(f"{prefix}:budget:key:{budgeted['id']}:*")
        assert len(hashes) == 1
        shared = client.hgetall(hashes[0])
        assert float(shared[b"spent"]) == pytest.approx(spent, rel=1e-6)
        assert float(shared[b"reserved"]) == pytest.approx(0.0, abs=1e-9)
    finally:
        proxy.stop()


def test_token_limits_reserve_the_worst_case_and_are_settled_with_the_actual_tokens(upstream, replicas):
    group = replicas(replica_config(upstream))
    created = create_key(group, tpm=400)
    key = created["key"]
    # Each request reserves its prompt plus max_tokens (~105 tokens) and is settled with what
    # it used; the window holds the actual tokens, and a request is refused once its
    # reservation would not fit.
    results = [ask(group, i, key, max_tokens=100) for i in range(40)]
    assert "rate_limit_exceeded" in results
    time.sleep(0.3)
    client = redis.Redis(*REDIS)
    members = client.zrange(f"{group_prefix(group)}:tpm:key:{created['id']}", 0, -1)
    used = sum(int(m.rsplit(b":", 1)[1]) for m in members)
    recorded_spend(group, created["id"], results.count("ok"))  # the refused carry no key
    records = [r for r in read_records(group.db, limit=1000) if r["status"] == 200]
    assert len(records) == results.count("ok")
    assert used == sum(r["prompt_tokens"] + r["completion_tokens"] for r in records)
    assert 400 - 120 < used <= 400


def group_prefix(group: Replicas) -> str:
    import yaml

    return str(yaml.safe_load(group.path.read_text())["state"]["prefix"])
