"""`pointsman demo` and the no-config `pointsman serve`: the bundled demo setup on simulated
upstreams, driven by the official openai client."""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

from pointsman.testing import Behaviour, FakeUpstream

DEMO_CONFIG = "demo.yaml"
PREMIUM = "sim-premium"

# Latencies and failure rates of the simulated deployments (seconds; share of calls).
BEHAVIOURS: dict[str, Behaviour] = {
    "sim-premium": Behaviour(latency_s=0.12, tokens_per_s=400),
    "sim-claude": Behaviour(latency_s=0.15, tokens_per_s=300),
    "sim-mini": Behaviour(latency_s=0.03, tokens_per_s=1500),
    "sim-mini-eu": Behaviour(latency_s=0.04, tokens_per_s=1500),
    "sim-coder": Behaviour(latency_s=0.05, tokens_per_s=900, failure_rate=0.2, failure_status=503),
    "sim-longctx": Behaviour(latency_s=0.08, tokens_per_s=800),
}


def demo_config_path() -> Path:
    return Path(str(resources.files("pointsman") / "data" / DEMO_CONFIG))


def start_simulated_upstream() -> FakeUpstream:
    """Start the fake upstream for the demo deployments and point the demo config at it."""
    upstream = FakeUpstream(seed=7)
    upstream.start()
    for name, behaviour in BEHAVIOURS.items():
        upstream.set(name, behaviour)
    os.environ["POINTSMAN_SIM_URL"] = upstream.url
    return upstream


IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def workload() -> list[dict[str, Any]]:
    """A mixed day of traffic: chat, lookups, code, reasoning, an image, a long document,
    tool use and streaming."""
    chat = [
        "Hi! How are you today?",
        "What is the capital of Australia?",
        "Translate 'good morning' into French.",
        "Give me three name ideas for a bakery.",
        "What year did the Berlin Wall fall?",
        "Summarise the plot of Hamlet in one sentence.",
        "Is a tomato a fruit or a vegetable?",
        "Suggest a title for a blog post about hiking.",
        "How many days are there in a leap year?",
        "What's a synonym for 'happy'?",
    ]
    code = [
        "Write a python function that reverses a linked list.",
        "Why does this SQL query return duplicates? SELECT * FROM a JOIN b ON a.id = b.a_id",
        "Fix the bug in: def add(a, b): return a - b",
        "Explain what a javascript closure is, with code.",
        "Write a class in Python for a thread-safe counter.",
    ]
    reasoning = [
        "Prove that the square root of 2 is irrational.",
        "Analyse the trade-off between consistency and availability in distributed databases.",
        "Plan a three-week migration of a monolith to services, step by step.",
    ]
    requests: list[dict[str, Any]] = []
    for i, prompt in enumerate(chat * 2):
        requests.append(
            {
                "model": "auto",
                "messages": [{"role": "user", "content": prompt}],
                "stream": i % 3 == 0,
            }
        )
    for prompt in code:
        requests.append({"model": "auto", "messages": [{"role": "user", "content": prompt}]})
    for prompt in reasoning:
        requests.append(
            {"model": "auto", "messages": [{"role": "user", "content": prompt}], "stream": True}
        )
    requests.append(
        {
            "model": "auto",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": IMAGE}},
                    ],
                }
            ],
        }
    )
    requests.append(
        {
            "model": "auto",
            "messages": [
                {
                    "role": "user",
                    "content": "Summarise this contract:\n"
                    + "The party of the first part shall deliver goods. " * 600,
                }
            ],
        }
    )
    requests.append(
        {
            "model": "auto",
            "tools": [WEATHER_TOOL],
            "messages": [{"role": "user", "content": "What's the weather in Oslo?"}],
        }
    )
    for prompt in chat[:4]:
        requests.append({"model": "fast", "messages": [{"role": "user", "content": prompt}]})
    return requests


def run_demo(json_output: bool = False) -> int:
    # Loaded when the demo runs: `serve` imports this module only for the demo's config path.
    from openai import OpenAI
    from rich.console import Console
    from rich.table import Table

    from pointsman.router import Router
    from pointsman.server import ServerThread
    from pointsman.store import read_records

    console = Console(stderr=json_output)
    upstream = start_simulated_upstream()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        router = Router.from_config(demo_config_path(), db=db)
        server = ServerThread(router).start()
        console.print(
            f"[bold]pointsman demo[/]: server on {server.url}, simulated upstreams on {upstream.url}"
        )
        client = OpenAI(base_url=f"{server.url}/v1", api_key="demo", max_retries=0)
        requests = workload()
        started = time.perf_counter()
        failures = 0
        with console.status("sending the workload...") if not json_output else nullcontext():
            for request in requests:
                params = {k: v for k, v in request.items() if k not in ("model", "messages")}
                try:
                    if params.pop("stream", False):
                        for _ in client.chat.completions.create(
                            model=request["model"],
                            messages=request["messages"],
                            stream=True,
                            **params,
                        ):
                            pass
                    else:
                        client.chat.completions.create(
                            model=request["model"], messages=request["messages"], **params
                        )
                except Exception as exc:  # a demo reports failures, it does not stop on them
                    failures += 1
                    console.print(f"[red]request failed:[/] {exc}")
        elapsed = time.perf_counter() - started
        server.stop()
        router.close()
        upstream.stop()
        records = read_records(db, limit=10_000)
    summary = summarise(records, router.config.deployment(PREMIUM).price)
    summary.update({"requests": len(requests), "failed": failures, "seconds": round(elapsed, 2)})
    if json_output:
        import json

        print(json.dumps(summary, indent=2))
        return 0 if failures == 0 else 1
    table = Table(title="Requests per deployment (all simulated)")
    for column in ("deployment", "requests", "share", "cost $"):
        table.add_column(column, justify="left" if column == "deployment" else "right")
    for name, row in sorted(summary["deployments"].items(), key=lambda kv: -kv[1]["requests"]):
        table.add_row(
            name,
            str(row["requests"]),
            f"{row['requests'] / max(1, summary['answered']):.0%}",
            f"{row['cost']:.6f}",
        )
    console.print(table)
    console.print(
        f"{summary['answered']} of {len(requests)} requests answered in {elapsed:.1f}s; "
        f"{summary['fallbacks']} fallbacks taken (failed deployments: {summary['failed_attempts']})."
    )
    console.print(
        f"Total cost ${summary['cost']:.6f} against ${summary['premium_cost']:.6f} if every request "
        f"had gone to {PREMIUM}: [bold green]{summary['saving']:.0%} saved[/]."
    )
    console.print("Learned routing on real prompts, scored with recorded outcomes: pointsman demo --learned")
    return 0 if failures == 0 else 1


def summarise(records: list[dict[str, Any]], premium_price: Any) -> dict[str, Any]:
    deployments: dict[str, dict[str, float]] = {}
    cost = premium_cost = 0.0
    fallbacks = failed_attempts = answered = 0
    for r in records:
        if r["status"] != 200 or not r["deployment"]:
            continue
        answered += 1
        row = deployments.setdefault(r["deployment"], {"requests": 0, "cost": 0.0})
        row["requests"] += 1
        row["cost"] += r["cost"]
        cost += r["cost"]
        premium_cost += (
            r["prompt_tokens"] * premium_price.input + r["completion_tokens"] * premium_price.output
        ) / 1e6
        failed = [a for a in r["attempts"] if a["error"]]
        failed_attempts += len(failed)
        fallbacks += 1 if failed else 0
    return {
        "answered": answered,
        "deployments": deployments,
        "fallbacks": fallbacks,
        "failed_attempts": failed_attempts,
        "cost": cost,
        "premium_cost": premium_cost,
        "saving": 1 - cost / premium_cost if premium_cost else 0.0,
    }
