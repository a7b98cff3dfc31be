"""Availability under faults: breakers, cooldowns, rate limits, balancing, retry budgets,
streaming timeouts, cascades and hedging, through the real server and the openai client."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from pointsman.config import parse_config
from pointsman.signals import Signals
from pointsman.strategies import build_strategy
from pointsman.testing import Behaviour
from tests.conftest import deployment

HELLO = [{"role": "user", "content": "hello"}]


def pair(upstream: Any, router: dict[str, Any] | None = None, **route: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0, **(router or {})},
        "deployments": [deployment(upstream, "primary"), deployment(upstream, "backup")],
        "models": {"auto": {"strategy": "ordered", "deployments": ["primary", "backup"], **route}},
    }


def answered_by(client: openai.OpenAI, model: str = "auto", **kwargs: Any) -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, **kwargs)
    return raw.headers["x-pointsman-model"]


# -- fault table: client outcome, upstream calls, record ---------------------------------------

FAULTS = [
    # (id, primary behaviour, stream, answered by / status, primary calls, backup calls, record status)
    ("500", Behaviour(status=500), False, "backup", 1, 1, 200),
    ("429-retry-after", Behaviour(status=429, retry_after=5), False, "backup", 1, 1, 200),
    ("429-no-retry-after", Behaviour(status=429), False, "backup", 1, 1, 200),
    ("hang", Behaviour(hang=True), False, "backup", 1, 1, 200),
    ("reset", Behaviour(reset=True), False, "backup", 1, 1, 200),
    ("slow-first-token", Behaviour(latency_s=3), True, "backup", 1, 1, 200),
    ("reset-before-first-byte", Behaviour(fail_after_chunks=0), True, "backup", 1, 1, 200),
    ("mid-stream", Behaviour(fail_after_chunks=2, reply="a b c d e f"), True, 502, 1, 0, 502),
    ("context-length", Behaviour(context_window=1), False, "backup", 1, 1, 200),
]


@pytest.mark.parametrize(
    ("behaviour", "stream", "expected", "primary_calls", "backup_calls", "record_status"),
    [f[1:] for f in FAULTS],
    ids=[f[0] for f in FAULTS],
)
def test_fault_outcome_calls_and_record(
    upstream, serve, behaviour, stream, expected, primary_calls, backup_calls, record_status
):
    config = pair(upstream)
    config["deployments"][0]["timeouts"] = {"total": 0.5, "first_byte": 0.3}
    config["deployments"][1]["context_window"] = 200_000
    server = serve(config)
    upstream.set("primary", behaviour)
    client = server.client()
    if isinstance(expected, str):
        if stream:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        else:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
        assert raw.headers["x-pointsman-model"] == expected
    else:
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(model="auto", messages=HELLO, stream=True):
                pass
    assert upstream.calls("primary") == primary_calls and upstream.calls("backup") == backup_calls
    record = server.records()[-1]
    assert record["status"] == record_status
    assert record["attempts"][0]["deployment"] == "primary" and record["attempts"][0]["error"]


def test_everything_down_fails_fast_with_503_naming_each_deployment(upstream, serve):
    server = serve(pair(upstream))
    upstream.set("primary", Behaviour(status=502))
    upstream.set("backup", Behaviour(status=500))
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(model="auto", messages=HELLO)
    assert caught.value.status_code == 503
    assert "primary: 502" in caught.value.message and "backup: 500" in caught.value.message
    assert upstream.calls("primary") + upstream.calls("backup") == 2
    assert server.records()[-1]["status"] == 503


# -- circuit breaker ---------------------------------------------------------------------------


def test_circuit_opens_after_consecutive_failures_and_half_opens_with_a_probe(upstream, serve):
    server = serve(pair(upstream, {"circuit_breaker": {"failure_threshold": 2, "open_s": 0.6}}))
    client = server.client()
    upstream.set("primary", Behaviour(status=500))
    assert answered_by(client) == "backup" and answered_by(client) == "backup"
    assert upstream.calls("primary") == 2
    # Open: the failing deployment is no longer called at all.
    for _ in range(3):
        assert answered_by(client) == "backup"
    assert upstream.calls("primary") == 2
    assert "circuit open" in " ".join(server.records()[-1]["decision"]["reasons"])
    # After open_s one probe goes through; its success closes the circuit.
    upstream.set("primary", Behaviour())
    time.sleep(0.7)
    assert answered_by(client) == "primary"
    assert answered_by(client) == "primary"
    assert server.router.state.circuit("primary") == "closed"


def test_a_failed_half_open_probe_reopens_the_circuit(upstream, serve):
    server = serve(pair(upstream, {"circuit_breaker": {"failure_threshold": 1, "open_s": 0.3}}))
    client = server.client()
    upstream.set("primary", Behaviour(status=500))
    answered_by(client)
    time.sleep(0.35)
    assert answered_by(client) == "backup"  # the probe failed
    assert upstream.calls("primary") == 2
    assert answered_by(client) == "backup" and upstream.calls("primary") == 2


def test_invalid_requests_do_not_open_the_circuit(upstream, serve):
    server = serve(pair(upstream, {"circuit_breaker": {"failure_threshold": 1}}))
    upstream.set("primary", Behaviour(script=[Behaviour(status=400)]))
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(model="auto", messages=HELLO)
    assert answered_by(server.client()) == "primary"


def test_active_probes_close_a_recovered_circuit_before_open_s(upstream, serve):
    config = pair(
        upstream, {"circuit_breaker": {"failure_threshold": 1, "open_s": 60}, "probe_interval_s": 0.1}
    )
    server = serve(config)
    client = server.client()
    upstream.set("primary", Behaviour(status=500))
    assert answered_by(client) == "backup"
    upstream.set("primary", Behaviour())
    deadline = time.monotonic() + 3
    while server.router.state.circuit("primary") != "closed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answered_by(client) == "primary"


# -- cooldowns and resting groups --------------------------------------------------------------


def test_when_all_are_resting_a_request_waits_boundedly_then_is_served(upstream, serve):
    config = pair(upstream, {"wait_for_recovery_s": 3.0})
    config["models"]["auto"]["deployments"] = ["primary"]
    server = serve(config)
    client = server.client()
    upstream.set("primary", Behaviour(script=[Behaviour(status=429, retry_after=1.5)]))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "2"
    # The next request finds the only deployment resting, waits for it, and is served.
    assert answered_by(client) == "primary"
    reasons = server.records()[-1]["decision"]["reasons"]
    assert any(r.startswith("dispatch: every deployment resting; waited") for r in reasons)


def test_when_all_rest_beyond_the_bound_the_answer_is_503_with_retry_after_not_a_hang(upstream, serve):
    config = pair(upstream, {"wait_for_recovery_s": 0.2})
    server = serve(config)
    client = server.client()
    upstream.set("primary", Behaviour(status=429, retry_after=30))
    upstream.set("backup", Behaviour(status=429, retry_after=60))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="auto", messages=HELLO)
    # Answered at once with Retry-After instead of waiting out a 30 s cooldown (client timeout 20 s).
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert caught.value.status_code == 503 and 25 <= int(caught.value.response.headers["retry-after"]) <= 30
    assert upstream.calls("primary") == 1 and upstream.calls("backup") == 1


# -- rate limits and retry budget ---------------------------------------------------------------


def test_deployment_at_its_rpm_limit_is_skipped(upstream, serve):
    config = pair(upstream)
    config["deployments"][0]["rpm"] = 2
    server = serve(config)
    client = server.client()
    assert [answered_by(client) for _ in range(4)] == ["primary", "primary", "backup", "backup"]
    assert upstream.calls("primary") == 2


def test_deployment_at_its_tpm_limit_is_skipped(upstream, serve):
    config = pair(upstream)
    config["deployments"][0]["tpm"] = 300
    server = serve(config)
    client = server.client()
    long = [{"role": "user", "content": "word " * 200}]  # ~250 tokens estimated
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=long)
    assert raw.headers["x-pointsman-model"] == "primary"
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=long)
    assert raw.headers["x-pointsman-model"] == "backup"


def test_fallback_does_not_restart_the_retry_cycle_and_calls_stay_bounded(upstream, serve):
    config = {
        "router": {"max_attempts": 4, "backoff_base_s": 0.0},
        "deployments": [deployment(upstream, n, max_retries=1) for n in ("d0", "d1", "d2")],
        "models": {"auto": {"deployments": ["d0", "d1", "d2"]}},
    }
    server = serve(config)
    for name in ("d0", "d1", "d2"):
        upstream.set(name, Behaviour(status=503))
    with pytest.raises(openai.APIStatusError):
        server.client().chat.completions.create(model="auto", messages=HELLO)
    # d0 tried twice (one retry), d1 twice, then the budget of 4 is spent: d2 never called.
    assert [upstream.calls(n) for n in ("d0", "d1", "d2")] == [2, 2, 0]
    assert len(server.records()[-1]["attempts"]) == 4


# -- streaming -----------------------------------------------------------------------------------


def test_a_stream_that_stalls_between_chunks_ends_with_an_error(upstream, serve):
    config = pair(upstream)
    config["deployments"][0]["timeouts"] = {"inter_chunk": 0.3, "first_byte": 2}
    server = serve(config)
    upstream.set("primary", Behaviour(tokens_per_s=1, reply="one two three four"))
    with pytest.raises(openai.APIError, match="mid-stream"):
        for _ in server.client().chat.completions.create(model="auto", messages=HELLO, stream=True):
            pass
    record = server.records()[-1]
    assert record["status"] == 502 and "timeout" in record["error"]


# -- load balancing --------------------------------------------------------------------------------


def balanced(upstream: Any, method: str, **options: Any) -> dict[str, Any]:
    names = ["lb-a", "lb-b", "lb-c"]
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [deployment(upstream, n) for n in names],
        "models": {
            "group": {"strategy": "balance", "deployments": names, "options": {"method": method, **options}}
        },
    }


def test_least_in_flight_spreads_concurrent_requests(upstream, serve):
    server = serve(balanced(upstream, "least_in_flight"))
    for name in ("lb-a", "lb-b", "lb-c"):
        upstream.set(name, Behaviour(latency_s=0.3))
    client = server.client()
    with ThreadPoolExecutor(6) as pool:
        chosen = list(pool.map(lambda _: answered_by(client, "group"), range(6)))
    assert {chosen.count(n) for n in ("lb-a", "lb-b", "lb-c")} == {2}


def test_latency_aware_balancing_prefers_the_fast_deployment_but_still_explores(upstream, serve):
    server = serve(balanced(upstream, "latency", explore=0.1, seed=1))
    upstream.set("lb-a", Behaviour(latency_s=0.15))
    upstream.set("lb-b", Behaviour(latency_s=0.15))
    client = server.client()
    chosen = [answered_by(client, "group") for _ in range(40)]
    assert chosen.count("lb-c") >= 28
    assert chosen.count("lb-a") >= 1 and chosen.count("lb-b") >= 1


def test_cost_balancing_picks_the_cheapest(upstream, serve):
    config = balanced(upstream, "cost")
    config["deployments"][1]["price"] = {"input": 0.1, "output": 0.2}
    server = serve(config)
    assert answered_by(server.client(), "group") == "lb-b"


def test_session_hashing_is_sticky_and_spreads_sessions(upstream, serve):
    server = serve(balanced(upstream, "hash"))
    client = server.client()
    homes = {}
    for session in range(12):
        seen = {
            answered_by(client, "group", extra_headers={"x-pointsman-session": f"s{session}"})
            for _ in range(3)
        }
        assert len(seen) == 1
        homes[session] = seen.pop()
    assert len(set(homes.values())) >= 2


def test_session_hashing_only_moves_the_sessions_of_a_removed_deployment(upstream):
    config = parse_config(balanced(upstream, "hash", hash_key="user"))
    strategy = build_strategy(config.models["group"], config)
    deployments = list(config.deployments)

    def home(user: str, candidates: list[Any]) -> str:
        return strategy.rank(candidates, Signals({"user": user, "messages": HELLO})).order[0]

    before = {f"u{i}": home(f"u{i}", deployments) for i in range(300)}
    after = {u: home(u, deployments[:2]) for u in before}
    moved = [u for u in before if before[u] != after[u]]
    assert moved and all(before[u] == "lb-c" for u in moved)


# -- cascades -------------------------------------------------------------------------------------


def cascade_config(upstream: Any, **cascade: Any) -> dict[str, Any]:
    config = {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "cheap", price={"input": 0.1, "output": 0.2}),
            deployment(upstream, "strong", price={"input": 5.0, "output": 15.0}),
            deployment(upstream, "grader", price={"input": 1.0, "output": 1.0}),
        ],
        "models": {"auto": {"deployments": ["cheap", "strong"], "cascade": cascade}},
    }
    return config


def test_cascade_accepts_a_good_cheap_answer(upstream, serve):
    server = serve(cascade_config(upstream, judges=["rules"]))
    assert answered_by(server.client()) == "cheap"
    assert upstream.calls("strong") == 0
    assert server.records()[-1]["attempts"][0]["verdict"] == "rules:passed"


def test_cascade_escalates_an_unsure_answer_and_records_every_step_and_its_cost(upstream, serve):
    server = serve(cascade_config(upstream, judges=["rules"]))
    upstream.set("cheap", Behaviour(reply="I don't know the answer to that."))
    assert answered_by(server.client()) == "strong"
    record = server.records()[-1]
    first, second = record["attempts"]
    assert first["deployment"] == "cheap" and first["verdict"] == "rules:refusal_or_unsure"
    assert second["deployment"] == "strong"
    assert record["cost"] == pytest.approx(first["cost"] + second["cost"]) and first["cost"] > 0
    assert any("cascade: escalated from cheap" in r for r in record["decision"]["reasons"])


def test_cascade_escalates_json_that_fails_the_requested_schema(upstream, serve):
    server = serve(cascade_config(upstream, judges=["rules"]))
    upstream.set("cheap", Behaviour(reply='{"name": 3}'))
    upstream.set("strong", Behaviour(reply='{"name": "Ada"}'))
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto",
        messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    assert raw.headers["x-pointsman-model"] == "strong"
    assert raw.parse().choices[0].message.content == '{"name": "Ada"}'
    assert "schema_mismatch" in server.records()[-1]["attempts"][0]["verdict"]


def test_cascade_escalates_a_cut_off_answer(upstream, serve):
    server = serve(cascade_config(upstream, judges=["rules"]))
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, max_tokens=2
    )
    assert raw.headers["x-pointsman-model"] == "strong"


def test_logprob_judge_escalates_low_confidence(upstream, serve):
    server = serve(cascade_config(upstream, judges=["logprobs"], min_logprob=-1.0))
    upstream.set("cheap", Behaviour(logprob=-2.5))
    answer = server.client().chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert answer.headers["x-pointsman-model"] == "strong"
    assert upstream.requests("cheap")[0].body["logprobs"] is True
    assert answer.parse().choices[0].logprobs is None  # not asked for by the client
    upstream.set("cheap", Behaviour(logprob=-0.05))
    assert answered_by(server.client()) == "cheap"


@pytest.mark.parametrize(("grade", "expected"), [("3", "strong"), ("9", "cheap")])
def test_llm_judge_grades_the_cheap_answer(upstream, serve, grade, expected):
    server = serve(cascade_config(upstream, judges=["llm"], judge_deployment="grader", min_score=7))
    upstream.set("grader", Behaviour(reply=grade))
    assert answered_by(server.client()) == expected
    record = server.records()[-1]
    judge = [a for a in record["attempts"] if a["role"] == "judge"]
    assert judge and judge[0]["deployment"] == "grader" and judge[0]["cost"] > 0
    assert record["cost"] == pytest.approx(sum(a["cost"] for a in record["attempts"]))


# -- hedging ---------------------------------------------------------------------------------------


def test_hedging_takes_the_faster_answer_and_cancels_the_slow_one(upstream, serve):
    server = serve(pair(upstream, hedge={"after_s": 0.1}))
    upstream.set("primary", Behaviour(latency_s=1.5))
    assert answered_by(server.client()) == "backup"
    record = server.records()[-1]
    roles = {a["deployment"]: (a["role"], a["error"]) for a in record["attempts"]}
    assert roles["backup"] == ("hedge", None) and roles["primary"][1] == "cancelled"


def test_hedging_waits_for_a_fast_primary(upstream, serve):
    server = serve(pair(upstream, hedge={"after_s": 0.5}))
    assert answered_by(server.client()) == "primary"
    assert upstream.calls("backup") == 0
