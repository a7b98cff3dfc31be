"""Virtual keys, limits, budgets, metrics and the audit trail, through the real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from pointsman.testing import Behaviour
from tests.conftest import deployment

MASTER = "mk-test-master"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def master_key(monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)


def base(upstream: Any, **extra: Any) -> dict[str, Any]:
    config = {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "pricey", price={"input": 10.0, "output": 30.0}, region="us"),
            deployment(upstream, "cheap", price={"input": 0.1, "output": 0.2}, region="eu"),
            deployment(upstream, "free", price={"input": 0, "output": 0}, region="eu"),
        ],
        "models": {
            "auto": {"deployments": ["pricey", "cheap"]},
            "budget-friendly": {"deployments": ["cheap"]},
            "with-free": {"deployments": ["pricey", "free"]},
        },
    }
    config.update(extra)
    return config


def admin(
    server: Any, method: str, path: str, body: Any = None, token: str | None = MASTER
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{server.url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "content-type": "application/json",
            **({"authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def new_key(server: Any, **spec: Any) -> dict[str, Any]:
    status, body = admin(server, "POST", "/admin/keys", {"name": spec.pop("name", "app"), **spec})
    assert status == 201, body
    return body


def test_key_lifecycle_create_use_revoke(upstream, serve):
    server = serve(base(upstream))
    created = new_key(server, name="billing-app", metadata={"team": "finance"})
    assert created["key"].startswith("pm-") and created["active"]
    client = server.client(api_key=created["key"])
    assert client.chat.completions.create(model="auto", messages=HELLO).choices[0].message.content
    # The secret is never listed, only its prefix.
    status, listed = admin(server, "GET", "/admin/keys")
    assert status == 200 and created["key"] not in json.dumps(listed)
    assert [k["name"] for k in listed["data"]] == ["billing-app"]
    status, revoked = admin(server, "DELETE", f"/admin/keys/{created['id']}")
    assert status == 200 and revoked["active"] is False
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        client.chat.completions.create(model="auto", messages=HELLO)
    record = server.records()[0]
    assert record["key_id"] == created["id"] and record["team"] == "finance"


def test_expired_key_is_refused(upstream, serve):
    server = serve(base(upstream))
    created = new_key(server, expires_in_s=0.3)
    client = server.client(api_key=created["key"])
    client.chat.completions.create(model="auto", messages=HELLO)
    time.sleep(2.1)  # past the expiry and the key cache
    with pytest.raises(openai.AuthenticationError, match="expired"):
        client.chat.completions.create(model="auto", messages=HELLO)


def test_requests_without_a_valid_key_get_401_in_openai_shape(upstream, serve):
    server = serve(base(upstream))
    request = urllib.request.Request(
        f"{server.url}/v1/chat/completions",
        data=json.dumps({"model": "auto", "messages": HELLO}).encode(),
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 401
    assert json.loads(missing.value.read())["error"]["message"].startswith("missing API key")
    with pytest.raises(openai.AuthenticationError) as caught:
        server.client(api_key="pm-not-a-key").chat.completions.create(model="auto", messages=HELLO)
    assert caught.value.body["type"] == "authentication_error"
    assert upstream.calls("pricey") == 0
    assert [r["status"] for r in server.records()] == [401, 401]


def test_key_outside_its_allowed_models_gets_403(upstream, serve):
    server = serve(base(upstream))
    created = new_key(server, models=["budget-friendly"])
    client = server.client(api_key=created["key"])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert "may not use model 'auto'" in caught.value.message
    assert client.chat.completions.create(model="budget-friendly", messages=HELLO)


def test_admin_endpoints_need_the_master_key(upstream, serve):
    server = serve(base(upstream))
    created = new_key(server)
    assert admin(server, "GET", "/admin/keys", token=None)[0] == 401
    status, body = admin(server, "GET", "/admin/keys", token=created["key"])
    assert status == 403 and body["error"]["code"] == "master_key_required"
    status, body = admin(server, "POST", "/admin/keys", {"name": "x", "rpm": -1})
    assert status == 400 and "'rpm' must be a positive integer" in body["error"]["message"]


def test_key_region_restricts_deployments_whatever_the_header_says(upstream, serve):
    server = serve(base(upstream))
    created = new_key(server, region="eu")
    raw = server.client(api_key=created["key"]).chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, extra_headers={"x-pointsman-region": "us"}
    )
    assert raw.headers["x-pointsman-model"] == "cheap" and upstream.calls("pricey") == 0


# -- limits ----------------------------------------------------------------------------------------


def test_key_rpm_limit_gives_429_with_retry_after(upstream, serve):
    server = serve(base(upstream))
    client = server.client(api_key=new_key(server, rpm=3)["key"])
    for _ in range(3):
        client.chat.completions.create(model="auto", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert "3 requests per minute" in caught.value.message
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert upstream.calls("pricey") == 3


def test_key_tpm_limit(upstream, serve):
    server = serve(base(upstream))
    client = server.client(api_key=new_key(server, tpm=400)["key"])
    long = [{"role": "user", "content": "word " * 300}]
    client.chat.completions.create(model="auto", messages=long)
    with pytest.raises(openai.RateLimitError, match="400 tokens per minute"):
        client.chat.completions.create(model="auto", messages=long)


def test_key_parallel_limit(upstream, serve):
    server = serve(base(upstream))
    upstream.set("pricey", Behaviour(latency_s=0.4))
    client = server.client(api_key=new_key(server, max_parallel=2)["key"])

    def call(_: int) -> str:
        try:
            client.chat.completions.create(model="auto", messages=HELLO)
            return "ok"
        except openai.RateLimitError as exc:
            return exc.body["code"]

    with ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(call, range(5)))
    assert outcomes.count("ok") == 2 and outcomes.count("too_many_parallel_requests") == 3
    # The slots free up once the requests end.
    assert call(0) == "ok"


# -- budgets -----------------------------------------------------------------------------------------


def test_budget_holds_under_concurrent_requests(upstream, serve):
    server = serve(base(upstream))
    # Each request to "pricey" costs about $0.0005; its worst case (1,024 output tokens) $0.031.
    created = new_key(server, budget=0.1, budget_period="day")
    client = server.client(api_key=created["key"])

    def call(_: int) -> str:
        try:
            client.chat.completions.create(model="auto", messages=HELLO)
            return "ok"
        except openai.RateLimitError as exc:
            return exc.message

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(40)))
    refused = [o for o in outcomes if o != "ok"]
    assert refused and all("budget exhausted: key 'app' allows $0.10 per day" in o for o in refused)
    assert all("resets at" in o for o in refused)
    spent = sum(r["cost"] for r in server.records() if r["status"] == 200)
    assert 0 < spent <= 0.1


def test_hard_limit_error_names_the_budget_and_reset(upstream, serve):
    server = serve(base(upstream, budgets={"global": {"amount": 0.0, "period": "month"}}))
    with pytest.raises(openai.RateLimitError) as caught:
        server.client(api_key=new_key(server)["key"]).chat.completions.create(model="auto", messages=HELLO)
    assert "the global budget allows $0.00 per month" in caught.value.message
    assert (
        caught.value.body["code"] == "budget_exceeded"
        and int(caught.value.response.headers["retry-after"]) > 0
    )


def test_zero_priced_models_are_never_blocked_by_a_money_budget(upstream, serve):
    server = serve(base(upstream))
    client = server.client(api_key=new_key(server, budget=0.0)["key"])
    raw = client.chat.completions.with_raw_response.create(model="with-free", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "free"
    assert upstream.calls("pricey") == 0


def test_soft_limit_downgrades_to_a_cheaper_model(upstream, serve):
    config = base(upstream, budgets={"soft_limit": 0.002, "downgrade": {"auto": "budget-friendly"}})
    server = serve(config)
    client = server.client(api_key=new_key(server, budget=1.0)["key"])
    first = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert first.headers["x-pointsman-model"] == "pricey"
    # Each answer from "pricey" costs about $0.00023: a dozen pass the soft limit of $0.002.
    for _ in range(12):
        client.chat.completions.create(model="auto", messages=HELLO)
    later = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert later.headers["x-pointsman-model"] == "cheap"
    assert any("soft limit" in r for r in server.records()[-1]["decision"]["reasons"])


def test_per_user_and_team_budgets(upstream, serve):
    config = base(
        upstream,
        budgets={
            "users": {"amount": 0.002, "period": "day"},
            "teams": {"finance": {"amount": 10, "period": "week"}},
        },
    )
    server = serve(config)
    client = server.client(api_key=new_key(server, metadata={"team": "finance"})["key"])
    # max_tokens bounds the worst-case estimate: 20 output tokens at $30/M.
    for _ in range(2):
        client.chat.completions.create(model="auto", messages=HELLO, user="alice", max_tokens=20)
    with pytest.raises(openai.RateLimitError, match="user 'alice'"):
        for _ in range(60):
            client.chat.completions.create(model="auto", messages=HELLO, user="alice", max_tokens=20)
    # Another user of the same team still has budget.
    assert client.chat.completions.create(model="auto", messages=HELLO, user="bob", max_tokens=20)
    records = server.records()
    alice = sum(r["cost"] for r in records if r["user"] == "alice")
    assert 0 < alice <= 0.002 and all(r["team"] == "finance" for r in records)


def test_budget_spend_survives_a_restart(upstream, serve, tmp_path):
    config = base(upstream)
    server = serve(config)
    # The worst case of one "cheap" request (1,024 output tokens) is about $0.000205: the budget
    # admits one request, and after it, with its spend remembered, no second one.
    created = new_key(server, budget=0.000206)
    server.client(api_key=created["key"]).chat.completions.create(model="budget-friendly", messages=HELLO)
    assert server.records()[0]["cost"] > 0
    server.stop()
    from pointsman.router import Router
    from tests.conftest import RunningServer

    again = RunningServer(Router.from_config(config, db=server.db), server.db)
    try:
        with pytest.raises(openai.RateLimitError, match="budget exhausted"):
            again.client(api_key=created["key"]).chat.completions.create(
                model="budget-friendly", messages=HELLO
            )
    finally:
        again.stop()


# -- metrics and audit ---------------------------------------------------------------------------------


def test_metrics_after_traffic(upstream, serve):
    server = serve(base(upstream, budgets={"global": {"amount": 50, "period": "month"}}))
    client = server.client(api_key=new_key(server)["key"])
    upstream.set("pricey", Behaviour(script=[Behaviour(status=500)]))
    client.chat.completions.create(model="auto", messages=HELLO)
    client.chat.completions.create(model="auto", messages=HELLO)
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        text = response.read().decode()
    assert 'pointsman_requests_total{deployment="cheap",model="auto",status="200"} 1.0' in text
    assert 'pointsman_requests_total{deployment="pricey",model="auto",status="200"} 1.0' in text
    assert 'pointsman_fallbacks_total{model="auto"} 1.0' in text
    assert 'pointsman_upstream_failures_total{deployment="pricey"} 1.0' in text
    assert 'pointsman_decisions_total{reason="order",strategy="ordered"} 2.0' in text
    assert "pointsman_overhead_seconds_bucket" in text and "pointsman_first_token_seconds" in text
    assert 'pointsman_tokens_total{deployment="pricey",direction="output"}' in text
    assert 'pointsman_circuit_state{deployment="pricey"} 0.0' in text
    remaining = [
        line
        for line in text.splitlines()
        if line.startswith('pointsman_budget_remaining_usd{budget="global"}')
    ]
    assert remaining and 49.9 < float(remaining[0].split()[-1]) < 50
    # No per-user or per-key labels by default.
    assert "alice" not in text and "key_" not in text


def test_audit_queries_return_the_right_rows(upstream, serve):
    server = serve(base(upstream))
    eu_key = new_key(server, name="eu-app", region="eu")
    us_key = new_key(server, name="us-app")
    server.client(api_key=eu_key["key"]).chat.completions.create(model="auto", messages=HELLO)
    server.client(api_key=us_key["key"]).chat.completions.create(model="auto", messages=HELLO)
    server.client(api_key=us_key["key"]).chat.completions.create(model="cheap", messages=HELLO)
    status, by_key = admin(server, "GET", f"/admin/records?key={eu_key['id']}")
    assert status == 200 and [r["deployment"] for r in by_key["data"]] == ["cheap"]
    _, by_region = admin(server, "GET", "/admin/records?region=eu")
    assert len(by_region["data"]) == 2
    _, by_reason = admin(server, "GET", "/admin/records?reason=deployment")
    assert [r["route"] for r in by_reason["data"]] == ["explicit:deployment"]
    _, by_model = admin(server, "GET", "/admin/records?model=auto&limit=1")
    assert len(by_model["data"]) == 1 and by_model["data"][0]["key_id"] == us_key["id"]
    status, _ = admin(server, "GET", "/admin/records", token=us_key["key"])
    assert status == 403
    server.records()
    result = subprocess.run(
        [sys.executable, "-m", "pointsman", "logs", "--db", str(server.db), "--region", "us", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [r["deployment"] for r in json.loads(result.stdout)] == ["pricey"]


def test_prompts_are_stored_only_when_configured_and_masked(upstream, serve):
    secret_prompt = [{"role": "user", "content": "mail me at jane.doe@example.com please"}]
    plain = serve(base(upstream, auth={"enabled": False}))
    plain.client().chat.completions.create(model="auto", messages=secret_prompt)
    assert plain.records()[-1]["prompt"] is None
    keeping = serve(base(upstream, auth={"enabled": False}, store={"store_content": True}))
    keeping.client().chat.completions.create(model="auto", messages=secret_prompt)
    record = keeping.records()[-1]
    assert "jane.doe@example.com" not in record["prompt"] and "[EMAIL]" in record["prompt"]
    assert record["answer"].startswith("Simulated answer")


def test_retention_deletes_old_records(upstream, serve):
    server = serve(base(upstream, auth={"enabled": False}, store={"retention_days": 1}))
    server.client().chat.completions.create(model="auto", messages=HELLO)
    server.records()
    import sqlite3

    db = sqlite3.connect(server.db)
    db.execute("UPDATE requests SET ts = ts - 2 * 86400")
    db.commit()
    db.close()
    server.client().chat.completions.create(model="auto", messages=HELLO)
    server.records()
    assert server.router.store.apply_retention() == 1
    assert len(server.records()) == 1


def test_keys_cli_lifecycle(upstream, serve, tmp_path):
    db = tmp_path / "cli-keys.db"

    def cli(*args: str) -> Any:
        result = subprocess.run(
            [sys.executable, "-m", "pointsman", "keys", *args, "--db", str(db), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(result.stdout)

    created = cli(
        "create", "ci-app", "--models", "auto", "--budget", "5", "--period", "week", "--team", "ops"
    )
    assert (
        created["models"] == ["auto"] and created["budget"] == 5.0 and created["metadata"] == {"team": "ops"}
    )
    from pointsman.router import Router
    from tests.conftest import RunningServer

    server = RunningServer(Router.from_config(base(upstream), db=db), db)
    try:
        client = server.client(api_key=created["key"])
        assert client.chat.completions.create(model="auto", messages=HELLO)
        assert [k["name"] for k in cli("list")] == ["ci-app"]
        assert cli("revoke", created["id"])["active"] is False
        time.sleep(2.1)  # the server's key cache
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="auto", messages=HELLO)
    finally:
        server.stop()
