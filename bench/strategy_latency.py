"""Decision latency per strategy: `Router.decide` (validate, signals, policies, strategy) in process.

    python -m bench.strategy_latency                     # every registered strategy
    python -m bench.strategy_latency --iterations 200    # quick look
    python -m bench.strategy_latency --config my.yaml --model auto   # a route of your own

Every strategy in `pointsman.strategies.STRATEGIES` is timed on the same deployments and three
requests (a short question, the ~1 KB request of the proxy benchmarks, an 8 KB ten-turn chat).
A strategy this script has no sample options for is tried with none, and reported as skipped if
it needs some. A table goes to the terminal and the JSON to bench/results/strategy-latency-*.json.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import orjson

from bench import harness
from bench.harness import fmt

DEPLOYMENTS = [
    {"name": "small", "price": {"input": 0.15, "output": 0.6}},
    {"name": "large", "price": {"input": 2.5, "output": 10.0}, "capabilities": {"vision": True}},
    {"name": "coder", "price": {"input": 0.5, "output": 1.5}},
    {"name": "reasoner", "price": {"input": 3.0, "output": 15.0}, "context_window": 200_000},
]

# Options that make each strategy do representative work; strategies not listed get none.
SAMPLE_OPTIONS: dict[str, dict[str, Any]] = {
    "weighted": {"weights": {"small": 3, "large": 1, "coder": 1}, "seed": 1},
    "conditions": {
        "conditions": [
            {"name": "vision", "when": {"images": True}, "use": ["large"]},
            {"name": "code", "when": {"regex": r"```|\bdef |\bclass "}, "use": ["coder", "large"]},
            {"name": "long", "when": {"min_tokens": 6000}, "use": ["reasoner"]},
            {"name": "premium", "when": {"headers": {"x-pointsman-tier": "premium"}}, "use": ["large"]},
        ]
    },
    "balance": {"method": "least_in_flight"},
    "rules": {
        "rules": [
            {"name": "long", "when": {"tokens": {"gt": 6000}}, "then": {"deployments": ["reasoner"]}},
            {"name": "code", "when": {"code": {"gte": 0.5}}, "then": {"deployments": ["coder", "large"]}},
            {
                "name": "legal",
                "when": {
                    "all": [
                        {"language": {"in": ["de", "fr"]}},
                        {"any": [{"text": {"regex": r"\bcontract\b"}}, {"domain": "legal"}]},
                    ]
                },
                "then": {"deployments": ["large"]},
            },
            {"name": "premium", "when": {"user_tier": "premium"}, "then": {"deployments": ["large"]}},
        ],
        "default": {"deployments": ["small", "large"]},
    },
    "tiers": {
        "tiers": {
            "simple": {"up_to": 0.16, "deployments": ["small"]},
            "standard": {"up_to": 0.42, "deployments": ["coder"]},
            "complex": {"up_to": 0.74, "deployments": ["large"]},
            "reasoning": {"deployments": ["reasoner", "large"]},
        }
    },
}


def requests() -> dict[str, dict[str, Any]]:
    one_kb = orjson.loads(harness.chat_body("auto"))
    turns = []
    for i in range(5):
        turns += [
            {"role": "user", "content": f"Step {i}: " + "explain the trade-offs in more detail. " * 20},
            {"role": "assistant", "content": "Here is a longer answer with several points. " * 18},
        ]
    return {
        "short": {
            "model": "auto",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        },
        "1 KB": one_kb,
        "8 KB, 10 turns": {"model": "auto", "messages": turns},
    }


def config_for(strategy: str) -> dict[str, Any]:
    return {
        "store": {"enabled": False},
        "deployments": [
            {
                "provider": "openai",
                "model": f"m-{d['name']}",
                "api_base": f"http://127.0.0.1:9/{d['name']}/v1",
                **d,
            }
            for d in DEPLOYMENTS
        ],
        "models": {
            "auto": {
                "strategy": strategy,
                "deployments": [d["name"] for d in DEPLOYMENTS[:2]]
                if strategy == "conditions"
                else [d["name"] for d in DEPLOYMENTS],
                "options": SAMPLE_OPTIONS.get(strategy, {}),
            }
        },
    }


def time_decisions(router: Any, body: dict[str, Any], model: str, iterations: int) -> dict[str, Any]:
    """Microseconds per `router.decide`, each call on a fresh copy of the body (as a request is)."""
    body = {**body, "model": model}
    bodies = [copy.deepcopy(body) for _ in range(min(iterations, 1000))]
    for b in bodies[:200]:  # warm: lazily loaded detectors, caches
        router.decide(b)
    samples = []
    gc_was = gc.isenabled()
    gc.disable()  # collections land on whichever call happens to trigger them
    try:
        for i in range(iterations):
            b = bodies[i % len(bodies)]
            t0 = perf_counter_ns()
            decision = router.decide(b)
            samples.append((perf_counter_ns() - t0) / 1000)
    finally:
        if gc_was:
            gc.enable()
    stats = harness.percentiles(samples)
    stats["route"] = decision.route
    stats["plan"] = decision.plan
    stats["decisions_per_s"] = round(1e6 / stats["mean"]) if stats["mean"] else None
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.strategy_latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--iterations", type=int, default=5000, help="decisions per strategy and request")
    parser.add_argument("--config", type=Path, help="time a route of this config instead")
    parser.add_argument("--model", default="auto", help="virtual model to time with --config")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from pointsman.router import Router
    from pointsman.strategies import STRATEGIES

    harness.pin_self(harness.PROXY_CPUS)  # one core, as the server runs
    report: dict[str, Any] = {"benchmark": "strategy_latency", "conditions": harness.conditions()}
    report["iterations"] = args.iterations
    shapes = requests()
    results: dict[str, Any] = {}
    routers: dict[str, tuple[Any, str]] = {}
    if args.config:
        routers[f"{args.config.name}:{args.model}"] = (Router.from_config(args.config), args.model)
    else:
        for name in STRATEGIES:
            try:
                routers[name] = (Router.from_config(config_for(name)), "auto")
            except Exception as exc:  # a strategy that needs options this script does not know
                problems = getattr(exc, "problems", None) or [str(exc)]
                results[name] = {"skipped": f"{type(exc).__name__}: {'; '.join(problems)[:200]}"}
    for name, (router, model) in routers.items():
        router.store = None
        results[name] = {}
        for shape, body in shapes.items():
            try:
                results[name][shape] = time_decisions(router, body, model, args.iterations)
            except Exception as exc:
                results[name][shape] = {"skipped": f"{type(exc).__name__}: {exc}"}
        print(f"  {name}: done", file=sys.stderr)
    report["results"] = results

    rows = []
    for name, by_shape in results.items():
        if "skipped" in by_shape:
            rows.append([name, "skipped", "", "", "", by_shape["skipped"][:60]])
            continue
        for shape, stats in by_shape.items():
            if "skipped" in stats:
                rows.append([name, shape, "", "", "", stats["skipped"][:60]])
                continue
            rows.append(
                [
                    name,
                    shape,
                    fmt(stats["p50"], 1),
                    fmt(stats["p99"], 1),
                    f"{stats['decisions_per_s']:,}",
                    stats["route"],
                ]
            )
    harness.table(
        f"decision latency, microseconds per Router.decide ({args.iterations} each, one core)",
        ["strategy", "request", "p50 us", "p99 us", "decisions/s", "route"],
        rows,
    )
    path = harness.save("strategy-latency", report, args.out)
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
