"""Declarative rules: every operator, all/any/not, priorities, first match, each kind of `then`,
and load-time errors with their key path."""

from __future__ import annotations

import pytest

from pointsman.config import ConfigError, load_config
from pointsman.router import Router

NAMES = ("mini", "mini-eu", "coder", "big", "big-eu")


def config(rules: list[dict], default: dict | None = None, **extra: object) -> dict:
    options: dict = {"rules": rules}
    if default is not None:
        options["default"] = default
    return {
        "store": {"enabled": False},
        "deployments": [
            {
                "name": n,
                "provider": "openai",
                "model": n,
                "api_base": "http://127.0.0.1:9",
                "region": "eu" if n.endswith("-eu") else "us",
            }
            for n in NAMES
        ],
        "models": {
            "auto": {"strategy": "rules", "deployments": ["mini"], "options": options},
            "smart": {"strategy": "ordered", "deployments": ["big", "big-eu"], "fallbacks": ["coder"]},
            "tiered": {
                "strategy": "tiers",
                "options": {
                    "tiers": {
                        "simple": {"deployments": ["mini"]},
                        "standard": {"deployments": ["mini"]},
                        "complex": {"deployments": ["big"]},
                        "reasoning": {"deployments": ["big-eu"]},
                    }
                },
            },
        },
        **extra,
    }


def route(cfg: dict, text: str, headers: dict | None = None, **body: object):
    router = Router.from_config(cfg)
    return router.decide({"model": "auto", "messages": [{"role": "user", "content": text}], **body}, headers)


def one_rule(when: object) -> dict:
    return config([{"name": "hit", "when": when, "then": {"deployments": ["coder"]}}])


@pytest.mark.parametrize(
    ("when", "text", "hit"),
    [
        ({"tokens": {"gt": 5}}, "a fairly long prompt with many words in it", True),
        ({"tokens": {"lt": 5}}, "a fairly long prompt with many words in it", False),
        ({"tokens": {"gte": 1, "lte": 10}}, "hi", True),
        ({"language": "de"}, "Wie spät ist es heute in Berlin?", True),
        ({"language": {"ne": "de"}}, "Wie spät ist es heute in Berlin?", False),
        ({"language": ["fr", "es"]}, "¿Qué hora es en Madrid ahora mismo?", True),
        ({"language": {"not_in": ["fr", "es"]}}, "¿Qué hora es en Madrid ahora mismo?", False),
        ({"text": {"contains": "INVOICE"}}, "please check this invoice", True),
        ({"text": {"regex": r"\bdef\s+\w+\("}}, "def f(x): return x", True),
        ({"domain": "legal"}, "review the liability clause of this contract", True),
        ({"domain": {"contains": "finance"}}, "review the liability clause", False),
        ({"pii": True}, "mail me at a@b.io", True),
        ({"pii": {"in": ["card", "iban"]}}, "mail me at a@b.io", False),
        ({"pii": {"exists": False}}, "nothing personal", True),
        ({"json": True}, "x", False),
        ({"metadata.team": "payments"}, "x", False),
        ({"code": {"gte": 0.5}}, "Fix this python function:\n```python\ndef f(): return 1\n```", True),
        ({"complexity": "reasoning"}, "Prove that there are infinitely many primes.", True),
        ({"complexity_score": {"lt": 0}}, "hi!", True),
    ],
)
def test_each_operator(when, text, hit):
    decision = route(one_rule(when), text)
    assert (decision.reason == "hit") is hit, decision.reasons


def test_headers_and_metadata_conditions():
    cfg = config(
        [
            {"name": "eu", "when": {"region": "eu"}, "then": {"deployments": ["mini-eu"]}},
            {"name": "agent", "when": {"header.x-agent-role": "planner"}, "then": {"deployments": ["big"]}},
        ]
    )
    assert route(cfg, "x", {"x-pointsman-region": "EU"}).plan == ["mini-eu"]
    assert route(cfg, "x", {"x-agent-role": "planner"}).plan == ["big"]


def test_all_any_not_compose():
    when = {"all": [{"any": [{"language": "de"}, {"language": "fr"}]}, {"not": {"pii": True}}]}
    cfg = one_rule(when)
    assert route(cfg, "Wie spät ist es heute in Berlin?").reason == "hit"
    assert route(cfg, "Wie spät ist es heute in Berlin? a@b.io").reason == "default"
    assert route(cfg, "What time is it in Berlin today?").reason == "default"


def test_priority_then_file_order_and_first_match_wins():
    cfg = config(
        [
            {"name": "first", "when": {"tokens": {"gt": 0}}, "then": {"deployments": ["mini-eu"]}},
            {"name": "second", "when": {"tokens": {"gt": 0}}, "then": {"deployments": ["coder"]}},
            {
                "name": "urgent",
                "priority": 10,
                "when": {"text": {"contains": "urgent"}},
                "then": {"deployments": ["big"]},
            },
        ]
    )
    assert route(cfg, "hello").reason == "first"
    assert route(cfg, "urgent hello").reason == "urgent"


def test_then_model_delegates_with_its_fallbacks():
    cfg = config([{"name": "hard", "when": {"text": {"contains": "hard"}}, "then": {"model": "smart"}}])
    decision = route(cfg, "a hard one")
    assert decision.route == "rules:hard" and decision.plan == ["big", "big-eu", "coder"]


def test_then_tier_and_strategy_and_default():
    cfg = config(
        [
            {"name": "deep", "when": {"text": {"contains": "prove"}}, "then": {"tier": "reasoning"}},
            {
                "name": "spread",
                "when": {"text": {"contains": "spread"}},
                "then": {"strategy": "weighted", "deployments": ["mini", "mini-eu"], "options": {"seed": 1}},
            },
        ],
        default={"model": "tiered"},
    )
    assert route(cfg, "prove it").plan == ["big-eu"]
    assert set(route(cfg, "spread it").plan) == {"mini", "mini-eu"}
    default = route(cfg, "hello there")
    assert default.reason == "default" and default.plan == ["mini"]


def test_rule_whose_deployments_were_all_removed_falls_through():
    cfg = config(
        [{"name": "us-only", "when": {"tokens": {"gt": 0}}, "then": {"deployments": ["big"]}}],
        default={"deployments": ["mini-eu"]},
        policies={"residency": {}},
    )
    decision = route(cfg, "hello", {"x-pointsman-region": "eu"})
    assert decision.plan == ["mini-eu"]
    assert any("'us-only' matched but none of its deployments survived" in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        (
            [{"name": "a", "when": {"langauge": "de"}, "then": {"deployments": ["mini"]}}],
            "models.auto.options.rules[0].when.langauge: unknown signal 'langauge'",
        ),
        (
            [{"name": "a", "when": {"tokens": {"above": 3}}, "then": {"deployments": ["mini"]}}],
            "models.auto.options.rules[0].when.tokens.above: unknown operator 'above'",
        ),
        (
            [{"name": "a", "when": {"language": {"gt": 3}}, "then": {"deployments": ["mini"]}}],
            "rules[0].when.language.gt: gt needs a number signal",
        ),
        (
            [{"name": "a", "when": {"text": {"regex": "("}}, "then": {"deployments": ["mini"]}}],
            "rules[0].when.text.regex: invalid regular expression",
        ),
        (
            [{"name": "a", "when": {"tokens": {"gt": "many"}}, "then": {"deployments": ["mini"]}}],
            "rules[0].when.tokens.gt: wrong type: expected a number",
        ),
        (
            [{"name": "a", "then": {"deployments": ["nope"]}}],
            "rules[0].then.deployments[0]: unknown deployment 'nope'",
        ),
        ([{"name": "a", "then": {"model": "nope"}}], "rules[0].then.model: unknown virtual model 'nope'"),
        ([{"name": "a", "then": {"tier": "ultra"}}], "rules[0].then.tier: unknown tier 'ultra'"),
        (
            [{"name": "a", "then": {"model": "auto"}}],
            "rules[0].then.model: rules delegate in a cycle: auto -> auto",
        ),
        (
            [{"name": "a", "then": {"model": "smart", "tier": "simple"}}],
            "rules[0].then: give exactly one of model, tier, deployments, strategy",
        ),
    ],
)
def test_bad_rules_are_reported_at_load_with_their_path(rules, problem):
    with pytest.raises(ConfigError) as caught:
        load_config(config(rules))
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_rules_are_compiled_once_and_evaluate_without_parsing():
    router = Router.from_config(one_rule({"text": {"regex": "abc"}}))
    strategy = router.strategies["auto"]
    compiled = strategy._rules[0].matches
    router.decide({"model": "auto", "messages": [{"role": "user", "content": "abc"}]})
    assert strategy._rules[0].matches is compiled and callable(compiled)
