"""Policies through the real server (the openai client -> pointsman -> the fake upstream):
residency never relaxed on fallback, PII routing, masking and refusal, access lists, user tiers,
price caps, capabilities; and governance on explicit deployment requests."""

from __future__ import annotations

import openai
import pytest

from pointsman.testing import Behaviour
from tests.conftest import deployment

HELLO = [{"role": "user", "content": "hello there"}]


def governed(upstream, policies: dict, **model: object) -> dict:
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "us-1", region="us"),
            deployment(upstream, "eu-1", region="eu"),
            deployment(
                upstream, "eu-2", region="eu", tags=["premium"], price={"input": 30.0, "output": 60.0}
            ),
            deployment(upstream, "vault", region="eu", tags=["pii-approved"]),
        ],
        "models": {
            "auto": {"strategy": "ordered", "deployments": ["us-1", "eu-1", "eu-2", "vault"], **model}
        },
        "policies": policies,
    }


def test_eu_request_whose_eu_deployments_all_fail_gets_503_and_never_a_non_eu_answer(upstream, serve):
    server = serve(governed(upstream, {"residency": {}}, fallbacks=["us-1"]))
    for name in ("eu-1", "eu-2", "vault"):
        upstream.set(name, Behaviour(status=503))
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(
            model="auto", messages=HELLO, extra_headers={"x-pointsman-region": "eu"}
        )
    assert caught.value.status_code == 503
    assert upstream.calls("us-1") == 0
    assert upstream.calls("eu-1") == 1 and upstream.calls("eu-2") == 1
    record = server.records()[-1]
    assert "us-1" not in record["decision"]["plan"]
    assert any("residency: removed us-1" in r for r in record["decision"]["reasons"])


def test_config_default_region_applies_without_a_header_and_allow_widens_it(upstream, serve):
    server = serve(governed(upstream, {"residency": {"region": "us", "allow": {"us": ["us", "eu"]}}}))
    raw = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "us-1"
    upstream.set("us-1", Behaviour(status=500))
    again = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert again.headers["x-pointsman-model"] == "eu-1"


def test_residency_applies_to_an_explicit_deployment_request(upstream, serve):
    server = serve(governed(upstream, {"residency": {}}))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        server.client().chat.completions.create(
            model="us-1", messages=HELLO, extra_headers={"x-pointsman-region": "eu"}
        )
    assert caught.value.body["code"] == "policy_refused" and "hosted in us" in caught.value.message
    assert upstream.calls("us-1") == 0


def test_pii_routes_only_to_approved_deployments(upstream, serve):
    rules = [{"kinds": ["card", "iban"], "action": "route", "deployments": ["tag:pii-approved"]}]
    server = serve(governed(upstream, {"pii": {"rules": rules}}))
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "refund card 4111 1111 1111 1111"}]
    )
    assert raw.headers["x-pointsman-model"] == "vault" and upstream.calls("us-1") == 0
    # An invalid card number is no card: the normal order applies.
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "refund card 4111 1111 1111 1112"}]
    )
    assert raw.headers["x-pointsman-model"] == "us-1"


def test_pii_is_masked_upstream_and_restored_in_the_answer(upstream, serve):
    server = serve(governed(upstream, {"pii": {"rules": [{"kinds": ["email", "phone"], "action": "mask"}]}}))
    upstream.set("us-1", Behaviour(reply="I will write to [EMAIL_1] and call [PHONE_1]."))
    text = "Contact jane.doe@example.com or +44 20 7946 0958 about the order."
    answer = server.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": text}]
    )
    sent = upstream.requests("us-1")[0].body["messages"][0]["content"]
    assert "jane.doe@example.com" not in sent and "[EMAIL_1]" in sent and "[PHONE_1]" in sent
    assert (
        answer.choices[0].message.content == "I will write to jane.doe@example.com and call +44 20 7946 0958."
    )
    assert any("pii: masked 2 value(s)" in r for r in server.records()[-1]["decision"]["reasons"])


def test_pii_is_restored_in_a_stream_even_when_a_placeholder_is_split(upstream, serve):
    server = serve(governed(upstream, {"pii": {"rules": [{"kinds": ["email"], "action": "mask"}]}}))
    upstream.set("us-1", Behaviour(reply="Sent it to [EMAIL_1] just now, [EMAIL_1] confirmed."))
    stream = server.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "mail bob@example.org"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Sent it to bob@example.org just now, bob@example.org confirmed."


def test_pii_refusal_is_a_clear_400_and_nothing_is_sent(upstream, serve):
    server = serve(governed(upstream, {"pii": {"rules": [{"kinds": ["national_id"], "action": "refuse"}]}}))
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "my SSN is 536-22-1234"}]
        )
    assert caught.value.body["code"] == "pii_refused" and "national_id" in caught.value.message
    assert "536-22-1234" not in caught.value.message
    assert sum(upstream.calls(n) for n in ("us-1", "eu-1", "eu-2", "vault")) == 0


def test_free_users_never_reach_premium_models(upstream, serve):
    server = serve(governed(upstream, {"user_tiers": {"free": {"deny": ["tag:premium"]}}}))
    for name in ("us-1", "eu-1", "vault"):
        upstream.set(name, Behaviour(status=500))
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(
            model="auto", messages=HELLO, extra_headers={"x-pointsman-tier": "free"}
        )
    assert caught.value.status_code == 503 and upstream.calls("eu-2") == 0
    with pytest.raises(openai.PermissionDeniedError):
        server.client().chat.completions.create(
            model="eu-2", messages=HELLO, extra_headers={"x-pointsman-tier": "free"}
        )
    paid = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, extra_headers={"x-pointsman-tier": "pro"}
    )
    assert paid.headers["x-pointsman-model"] == "eu-2"


def test_allow_and_deny_lists_per_key_and_role(upstream, serve):
    policies = {
        "access": [{"key": "sk-intern", "allow": ["us-1"]}, {"role": "batch", "deny": ["us-1", "eu-1"]}]
    }
    server = serve(governed(upstream, policies))
    with pytest.raises(openai.PermissionDeniedError):
        server.client(api_key="sk-intern").chat.completions.create(model="eu-1", messages=HELLO)
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, extra_headers={"x-pointsman-role": "batch"}
    )
    assert raw.headers["x-pointsman-model"] == "eu-2"


def test_maximum_estimated_price_per_request(upstream, serve):
    server = serve(governed(upstream, {"max_price": 0.01}))
    upstream.set("us-1", Behaviour(status=500))
    upstream.set("eu-1", Behaviour(status=500))
    upstream.set("vault", Behaviour(status=500))
    with pytest.raises(openai.APIStatusError):
        server.client().chat.completions.create(model="auto", messages=HELLO, max_tokens=1000)
    assert upstream.calls("eu-2") == 0  # 1000 output tokens at $60/M would cost $0.06
    reasons = server.records()[-1]["decision"]["reasons"]
    assert any("max_price: removed eu-2: estimated $0.06" in r for r in reasons)


def test_capability_checks_stay_off_for_explicit_requests(upstream, serve):
    config = governed(upstream, {})
    config["deployments"][0]["capabilities"] = {"tools": False}
    server = serve(config)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    raw = server.client().chat.completions.with_raw_response.create(
        model="us-1", messages=HELLO, tools=[tool]
    )
    assert raw.headers["x-pointsman-model"] == "us-1"
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, tools=[tool]
    )
    assert raw.headers["x-pointsman-model"] == "eu-1"


def test_unknown_names_in_policies_are_config_errors(upstream):
    from pointsman.config import ConfigError, load_config

    config = governed(
        upstream,
        {
            "pii": {"rules": [{"kinds": ["card"], "action": "route", "deployments": ["nope", "tag:ghost"]}]},
            "default_user_tier": "gold",
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    problems = "\n".join(caught.value.problems)
    assert "policies.pii.rules[0].deployments[0]: unknown deployment 'nope'" in problems
    assert "policies.pii.rules[0].deployments[1]: no deployment has the tag 'ghost'" in problems
    assert "policies.default_user_tier: unknown tier 'gold'" in problems
