"""The learned strategy: a trained router ranks the deployments that survived the policies."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from pointsman.config import ConfigError, parse_config
from pointsman.learning.artifact import RouterArtifact
from pointsman.signals import Signals
from pointsman.strategies import STRATEGIES, build_strategy, register
from pointsman.strategies.learned import LearnedStrategy

if "learned" not in STRATEGIES:
    register(LearnedStrategy)

HARD = (
    "For which of these two scenarios does the main character do something clearly morally "
    "wrong? Scenario 1 | I took his wallet after he fell asleep. Scenario 2 | I gave my cat a bath."
)


def dep(name: str, price_in: float, price_out: float) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "openai",
        "model": f"m-{name}",
        "api_base": f"http://127.0.0.1:9/{name}/v1",
        "price": {"input": price_in, "output": price_out},
    }


def config(options: dict[str, Any], deployments: list[str] | None = None) -> Any:
    return parse_config(
        {
            "deployments": [dep("big", 10, 30), dep("small", 0.6, 0.6), dep("spare", 1, 1)],
            "models": {
                "auto": {
                    "strategy": "learned",
                    "deployments": deployments or ["spare"],
                    "options": options,
                }
            },
        }
    )


def rank(
    options: dict[str, Any], text: str = HARD, alive: tuple[str, ...] = ("big", "small", "spare")
) -> Any:
    cfg = config(options)
    strategy = build_strategy(cfg.models["auto"], cfg)
    candidates = [cfg.deployment(n) for n in alive]
    return strategy.rank(candidates, Signals({"messages": [{"role": "user", "content": text}]}))


MAPPING = {"strong": ["big"], "weak": ["small"]}


def test_strong_tier_first_when_the_gain_clears_the_threshold() -> None:
    ranking = rank({"mapping": MAPPING, "threshold": -1.0})
    assert ranking.order == ["big", "small", "spare"]
    assert ranking.reason == "strong_needed"
    assert set(ranking.scores) == {"big", "small"}
    assert any("strong_gain" in n for n in ranking.notes)


def test_weak_tier_first_when_it_does_not() -> None:
    ranking = rank({"mapping": MAPPING, "threshold": 1.0})
    assert ranking.order == ["small", "big", "spare"]
    assert ranking.reason == "weak_ok"


def test_decision_follows_the_artifacts_predicted_gain() -> None:
    gain = float(RouterArtifact.load("default").strong_gain([HARD])[0])
    assert rank({"mapping": MAPPING, "threshold": gain - 1e-6}).order[0] == "big"
    assert rank({"mapping": MAPPING, "threshold": gain + 1e-6}).order[0] == "small"


def test_policies_removed_the_strong_tier_so_the_weak_one_answers() -> None:
    ranking = rank({"mapping": MAPPING, "threshold": -1.0}, alive=("small", "spare"))
    assert ranking.order == ["small", "spare"]
    assert ranking.reason == "strong_needed_unavailable"


def test_a_stated_target_sets_the_threshold_from_the_calibration() -> None:
    cfg = config({"mapping": MAPPING, "target": {"strong_share": 0.3}})
    strategy = build_strategy(cfg.models["auto"], cfg)
    assert isinstance(strategy, LearnedStrategy)
    expected = RouterArtifact.load("default").calibration
    share_index = expected["share"].index(0.3)
    assert strategy.knob.value == pytest.approx(expected["threshold"][share_index])
    for route, table in expected.get("routes", {}).items():
        assert strategy.knob.routes[route] == pytest.approx(table["threshold"][share_index])


def test_no_user_text_sends_strongest_first() -> None:
    ranking = rank({"mapping": MAPPING, "threshold": 1.0}, text="   ")
    assert ranking.reason == "no_prompt"
    assert ranking.order[0] == "big"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mapping": {"strong": ["big"]}}, "models.auto.options.mapping.weak: missing"),
        ({"mapping": {**MAPPING, "medium": ["spare"]}}, "models.auto.options.mapping.medium: not a model"),
        ({"mapping": {"strong": ["huge"], "weak": ["small"]}}, "unknown deployment 'huge'"),
        ({"mapping": MAPPING, "threshold": 0.1, "target": {"strong_share": 0.3}}, "at most one of"),
        (
            {"mapping": MAPPING, "target": {"quality": 1.4}},
            "models.auto.options.target: no threshold keeps 140%",
        ),
        ({"mapping": MAPPING, "target": {"strong_share": 0.3, "quality": 0.9}}, "exactly one of"),
        ({"mapping": MAPPING, "artifact": "/no/such/router"}, "models.auto.options.artifact:"),
    ],
)
def test_bad_options_are_reported_with_their_path(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(options)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_many_model_router_picks_cheaper_models_as_lambda_grows() -> None:
    mapping = {
        "llama-3.1-nemotron-51b-instruct": ["big"],
        "gemma-2-9b-it": ["small"],
        "qwen2.5-7b-instruct": ["spare"],
    }
    text = "Who wrote the novel Pride and Prejudice?"
    keen = rank({"artifact": "llmrouter-9", "mapping": mapping, "lambda": 0.0}, text)
    assert keen.reason == "best_quality"
    stingy = rank({"artifact": "llmrouter-9", "mapping": mapping, "lambda": 1000.0}, text)
    # Deployment prices count: `small` ($0.6) is the cheapest of the three here.
    assert stingy.order[0] == "small"
    assert stingy.reason == "cheaper_enough" or stingy.order[0] == keen.order[0]
    assert sorted(stingy.order) == ["big", "small", "spare"]


def test_importing_pointsman_and_the_strategy_loads_no_numpy() -> None:
    code = "import sys, pointsman, pointsman.strategies.learned; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_inside_the_server_policies_filter_before_the_learned_ranking(upstream: Any, serve: Any) -> None:
    from tests.conftest import deployment

    server = serve(
        {
            "router": {"backoff_base_s": 0.0},
            "deployments": [
                deployment(upstream, "big", region="us"),
                deployment(upstream, "small", region="eu"),
            ],
            "policies": {"residency": {"allow": {"eu": ["eu"]}}},
            "models": {
                "auto": {
                    "strategy": "learned",
                    "options": {"mapping": {"strong": ["big"], "weak": ["small"]}, "threshold": -1.0},
                }
            },
        }
    )
    client = server.client()
    messages = [{"role": "user", "content": HARD}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
    assert raw.headers["x-pointsman-model"] == "big"
    assert raw.headers["x-pointsman-route"] == "learned:strong_needed"
    eu = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, extra_headers={"x-pointsman-region": "eu"}
    )
    # Residency removed `big` before the strategy ranked: the weak tier answers.
    assert eu.headers["x-pointsman-model"] == "small"
    assert eu.headers["x-pointsman-route"] == "learned:strong_needed_unavailable"
    assert len(upstream.requests("big")) == 1
