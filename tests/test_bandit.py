"""The bandit strategy: Thompson sampling per route bucket, fed by `POST /v1/feedback`, shifts
traffic toward the deployment whose answers are rated better, within bounded exploration."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import httpx
import openai
import pytest

from pointsman.config import ConfigError, parse_config
from pointsman.signals import Signals
from pointsman.state import MemoryState
from pointsman.strategies import build_strategy
from pointsman.strategies.bandit import bound_shares
from tests.conftest import deployment

HELLO = [{"role": "user", "content": "hello"}]


def bandit_config(upstream: Any, arms: tuple[str, ...] = ("good", "poor"), **options: Any) -> dict[str, Any]:
    return {
        "deployments": [deployment(upstream, name) for name in arms],
        "models": {
            "auto": {"strategy": "bandit", "deployments": list(arms), "options": {"seed": 3, **options}}
        },
    }


def ask(client: openai.OpenAI, headers: dict[str, str] | None = None) -> tuple[str, str, str]:
    """(request id, deployment that answered, route header) of one chat request."""
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, extra_headers=headers
    )
    return (
        raw.headers["x-pointsman-request-id"],
        raw.headers["x-pointsman-model"],
        raw.headers["x-pointsman-route"],
    )


def rate(client: openai.OpenAI, request_id: str, thumbs: str) -> dict[str, Any]:
    return client.post(
        "/feedback", body={"request_id": request_id, "thumbs": thumbs}, cast_to=httpx.Response
    ).json()


def test_feedback_moves_traffic_to_the_deployment_rated_better(upstream, serve):
    server = serve(bandit_config(upstream, floor=0.05, ceiling=0.95))
    client = server.client()
    users = random.Random(7)
    good_rate = {"good": 0.9, "poor": 0.3}
    served: list[str] = []
    for _ in range(160):
        request_id, answered, route = ask(client)
        assert route in ("bandit:exploit", "bandit:explore")
        reply = rate(client, request_id, "up" if users.random() < good_rate[answered] else "down")
        assert reply["bandit"]["arm"] == answered and reply["bandit"]["bucket"] == "all"
        served.append(answered)

    late = Counter(served[-60:])
    assert late["good"] >= 45, served
    stats = server.router.state.bandit_stats("auto", "all")
    assert stats["good"][0] + stats["poor"][0] == 160
    assert stats["good"][1] / stats["good"][0] > stats["poor"][1] / stats["poor"][0]


def test_each_bucket_learns_its_own_best_deployment(upstream, serve):
    server = serve(bandit_config(upstream, arms=("alpha", "beta"), bucket="header:x-app", ceiling=0.95))
    client = server.client()
    best = {"north": "alpha", "south": "beta"}
    served: dict[str, list[str]] = {"north": [], "south": []}
    for i in range(140):
        app = "north" if i % 2 else "south"
        request_id, answered, _ = ask(client, {"x-app": app})
        rate(client, request_id, "up" if answered == best[app] else "down")
        served[app].append(answered)

    for app, arm in best.items():
        assert Counter(served[app][-25:])[arm] >= 19, (app, served[app])
    assert set(server.router.state.bandit_buckets("auto")) == {"header:x-app=north", "header:x-app=south"}


def test_a_revised_rating_replaces_its_reward_instead_of_adding_one(upstream, serve):
    server = serve(bandit_config(upstream))
    client = server.client()
    request_id, answered, _ = ask(client)
    rate(client, request_id, "down")
    reply = rate(client, request_id, "up")

    assert reply["replaced"] is True
    assert server.router.state.bandit_stats("auto", "all")[answered] == (1.0, 1.0)


def test_ratings_of_other_routes_leave_the_bandit_alone(upstream, serve):
    cfg = bandit_config(upstream)
    cfg["models"]["plain"] = {"deployments": ["good"]}
    server = serve(cfg)
    client = server.client()
    raw = client.chat.completions.with_raw_response.create(model="plain", messages=HELLO)
    reply = rate(client, raw.headers["x-pointsman-request-id"], "up")

    assert "bandit" not in reply
    assert server.router.state.bandit_buckets("auto") == []


def strategy(state: MemoryState, arms: tuple[str, ...] = ("a", "b", "c"), **options: Any) -> Any:
    cfg = parse_config(
        {
            "deployments": [
                {"name": n, "provider": "openai", "model": n, "api_base": "http://127.0.0.1:9/v1"}
                for n in (*arms, "spare")
            ],
            "models": {
                "auto": {
                    "strategy": "bandit",
                    "deployments": list(arms),
                    "fallbacks": ["spare"],
                    "options": options,
                }
            },
        }
    )
    built = build_strategy(cfg.models["auto"], cfg)
    built.state = state
    return built, [cfg.deployment(n) for n in (*arms, "spare")]


def test_exploration_stays_between_floor_and_ceiling():
    state = MemoryState()
    # Overwhelming evidence: a is right 95% of the time, b and c 10%.
    state.bandit_update("auto", "all", "a", 950.0, count=1000)
    state.bandit_update("auto", "all", "b", 10.0, count=100)
    state.bandit_update("auto", "all", "c", 10.0, count=100)
    bandit, candidates = strategy(state, floor=0.1, ceiling=0.7, seed=1)
    signals = Signals({"messages": HELLO})

    firsts = Counter(bandit.rank(candidates, signals).order[0] for _ in range(4000))

    assert firsts["a"] / 4000 == pytest.approx(0.7, abs=0.03)
    assert firsts["b"] / 4000 == pytest.approx(0.15, abs=0.03)
    assert firsts["c"] / 4000 == pytest.approx(0.15, abs=0.03)
    ranking = bandit.rank(candidates, signals)
    assert ranking.order[-1] == "spare"  # fallbacks follow the arms
    assert ranking.scores == {"a": 0.7, "b": 0.15, "c": 0.15}


def test_without_feedback_every_arm_gets_an_even_share():
    bandit, candidates = strategy(MemoryState(), seed=2)
    firsts = Counter(bandit.rank(candidates, Signals({"messages": HELLO})).order[0] for _ in range(3000))
    for arm in ("a", "b", "c"):
        assert firsts[arm] / 3000 == pytest.approx(1 / 3, abs=0.04)


def test_arms_removed_by_the_policies_are_never_chosen():
    state = MemoryState()
    state.bandit_update("auto", "all", "a", 100.0, count=100)
    bandit, candidates = strategy(state, floor=0.2)
    alive = [d for d in candidates if d.name != "a"]
    orders = {tuple(bandit.rank(alive, Signals({"messages": HELLO})).order) for _ in range(200)}
    assert all("a" not in order for order in orders)


@pytest.mark.parametrize(
    ("shares", "floor", "ceiling", "expected"),
    [
        ([0.98, 0.01, 0.01], 0.05, 0.9, [0.9, 0.05, 0.05]),
        ([1.0, 0.0, 0.0], 0.05, 0.5, [0.5, 0.25, 0.25]),
        ([0.2, 0.3, 0.5], 0.0, 1.0, [0.2, 0.3, 0.5]),
        ([0.6, 0.3, 0.1], 0.2, 1.0, [0.8 * 2 / 3, 0.8 / 3, 0.2]),  # the free two keep 2:1
        ([1.0, 0.0], 0.6, 1.0, [0.5, 0.5]),  # no split meets the floor: an even one
    ],
)
def test_bounded_shares(shares, floor, ceiling, expected):
    assert bound_shares(shares, floor, ceiling) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("options", "where", "words"),
    [
        ({"floor": 0.4}, "models.auto.options.floor", "more than all the traffic"),
        ({"ceiling": 0.3}, "models.auto.options.ceiling", "less than all the traffic"),
        ({"bucket": "mood"}, "models.auto.options.bucket", "'mood'"),
        ({"floor": 0.5, "ceiling": 0.2}, "models.auto.options", "above ceiling"),
    ],
)
def test_bad_bandit_options_are_config_errors_naming_the_key(options, where, words):
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "deployments": [
                    {"name": n, "provider": "openai", "model": n, "api_base": "http://127.0.0.1:9/v1"}
                    for n in ("a", "b", "c")
                ],
                "models": {
                    "auto": {"strategy": "bandit", "deployments": ["a", "b", "c"], "options": options}
                },
            }
        )
    [problem] = caught.value.problems
    assert problem.startswith(where + ":") and words in problem, problem
