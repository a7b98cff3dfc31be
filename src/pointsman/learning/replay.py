"""`pointsman demo --learned`: replay real held-out prompts from the bundled outcome data through a
running pointsman server whose `auto` model is the shipped learned router, and score what it
did with the recorded outcomes.

Two simulated deployments (the loopback fake upstream) stand for the two models of the data:
``sim-gpt-4`` for GPT-4 and ``sim-mixtral`` for Mixtral 8x7B, at their list prices of the
time. The prompts are a seeded sample of the held-out test splits (the router never trained on
them), sent with the official openai client. Cost is what the records say the calls cost,
against every prompt going to ``sim-gpt-4``; quality is the recorded outcome (right or wrong)
of the model each prompt was routed to, against always GPT-4.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STRONG, WEAK = "sim-gpt-4", "sim-mixtral"
# The bundled sets' list prices ($ per million tokens, input and output) of the two models.
PRICES = {STRONG: (10.0, 30.0), WEAK: (0.6, 0.6)}
DATASETS = ("mmlu", "gsm8k")
# A typical short answer: each simulated model replies with this many words.
REPLY = " ".join(["The", "answer", "follows", "from", "the", "question", "above."] * 6)


@dataclass
class Prompt:
    dataset: str
    text: str
    # Recorded outcomes of (weak, strong): 1 right, 0 wrong.
    weak: float
    strong: float


def held_out_sample(count: int, seed: int = 0) -> list[Prompt]:
    """`count` prompts from the held-out test splits (seed 0, 20%, by prompt), two thirds MMLU
    and one third GSM8K, drawn with `seed` and interleaved."""
    from pointsman.learning.datasets import load_bundled, standard_splits

    wanted = {"mmlu": count - count // 3, "gsm8k": count // 3}
    rng = random.Random(seed)
    picked: list[Prompt] = []
    for name in DATASETS:
        test = standard_splits(load_bundled(name)).test.ordered_two()
        rows = rng.sample(range(len(test)), min(wanted[name], len(test)))
        picked += [
            Prompt(name, test.prompts[i], float(test.quality[i, 0]), float(test.quality[i, 1])) for i in rows
        ]
    rng.shuffle(picked)
    return picked


def replay_config(upstream_url: str, artifact: str = "default") -> dict[str, Any]:
    """The demo's config: two simulated deployments and `auto` routed by the learned router."""
    return {
        "deployments": [
            {
                "name": name,
                "provider": "openai",
                "model": name,
                "api_base": f"{upstream_url}/{name}/v1",
                "api_key": "simulated",
                "price": {"input": PRICES[name][0], "output": PRICES[name][1]},
            }
            for name in (STRONG, WEAK)
        ],
        "models": {
            "auto": {
                "description": "the shipped learned router: GPT-4-class only where it pays",
                "strategy": "learned",
                "options": {"artifact": artifact, "mapping": {"strong": [STRONG], "weak": [WEAK]}},
            }
        },
    }


def run_learned_demo(json_output: bool = False, requests: int = 200, seed: int = 0) -> int:
    # CLI start-up: loaded only by `pointsman demo --learned`.
    from openai import OpenAI
    from rich.console import Console

    from pointsman.router import Router
    from pointsman.server import ServerThread
    from pointsman.store import read_records
    from pointsman.testing import Behaviour, FakeUpstream

    console = Console(stderr=json_output)
    prompts = held_out_sample(requests, seed)
    routed: list[str | None] = []
    ids: list[str | None] = []
    failures = 0
    with FakeUpstream(seed=seed) as upstream, tempfile.TemporaryDirectory() as tmp:
        upstream.set(STRONG, Behaviour(latency_s=0.01, reply=REPLY))
        upstream.set(WEAK, Behaviour(latency_s=0.005, reply=REPLY))
        db = Path(tmp) / "demo.db"
        router = Router.from_config(replay_config(upstream.url), db=db)
        started = time.perf_counter()
        with ServerThread(router) as server:
            console.print(
                f"[bold]pointsman demo --learned[/]: {len(prompts)} held-out MMLU and GSM8K prompts through "
                f"{server.url} (learned router `default`; simulated {STRONG} and {WEAK})"
            )
            client = OpenAI(base_url=f"{server.url}/v1", api_key="demo", max_retries=0)
            with console.status("replaying...") if not json_output else nullcontext():
                for prompt in prompts:
                    try:
                        raw = client.chat.completions.with_raw_response.create(
                            model="auto", messages=[{"role": "user", "content": prompt.text}]
                        )
                        routed.append(raw.headers.get("x-pointsman-model"))
                        ids.append(raw.headers.get("x-pointsman-request-id"))
                    except Exception as exc:  # a demo reports failures, it does not stop on them
                        failures += 1
                        routed.append(None)
                        ids.append(None)
                        console.print(f"[red]request failed:[/] {exc}")
        elapsed = time.perf_counter() - started
        router.close()
        records = read_records(db, limit=100_000)
    summary = score(prompts, routed, ids, records)
    summary.update({"requests": len(prompts), "failed": failures, "seconds": round(elapsed, 2), "seed": seed})
    if json_output:
        print(json.dumps(summary, indent=2))
    else:
        render(summary, console)
    return 0 if failures == 0 else 1


def score(
    prompts: list[Prompt], routed: list[str | None], ids: list[str | None], records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Cost saved and quality kept of the replay, overall and per dataset. `routed` and `ids`
    are the deployment that answered each prompt and the request id (None when it failed)."""
    pin, pout = PRICES[STRONG]
    # (cost, cost had it gone to the strong model) of each answered request, from its record.
    calls: dict[str, tuple[float, float]] = {}
    for r in records:
        if r["status"] == 200 and r["deployment"]:
            alt = ((r["prompt_tokens"] or 0) * pin + (r["completion_tokens"] or 0) * pout) / 1e6
            calls[r["request_id"]] = (r["cost"] or 0.0, alt)

    def spend(rows: list[int]) -> tuple[float, float]:
        found = [calls[ids[i]] for i in rows if ids[i] in calls]  # type: ignore[index]
        return sum(c for c, _ in found), sum(a for _, a in found)

    def part(rows: list[int]) -> dict[str, Any]:
        done = [i for i in rows if routed[i] is not None]
        n = max(1, len(done))
        to_strong = [i for i in done if routed[i] == STRONG]
        quality = sum(prompts[i].strong if routed[i] == STRONG else prompts[i].weak for i in done) / n
        strong = sum(prompts[i].strong for i in done) / n
        weak = sum(prompts[i].weak for i in done) / n
        share = len(to_strong) / n
        # A router that picks the strong model at random, as often as this one did.
        random_quality = weak + share * (strong - weak)
        spent, alt = spend(done)
        return {
            "prompts": len(rows),
            "answered": len(done),
            "strong_share": round(share, 4),
            "quality": round(quality, 4),
            "strong_quality": round(strong, 4),
            "weak_quality": round(weak, 4),
            "quality_kept": round(quality / strong, 4) if strong else None,
            "random_quality_kept": round(random_quality / strong, 4) if strong else None,
            "cost_saved": round(1 - spent / alt, 4) if alt else None,
        }

    overall = part(list(range(len(prompts))))
    by_dataset = {}
    for name in DATASETS:
        rows = [i for i, p in enumerate(prompts) if p.dataset == name]
        if rows:
            by_dataset[name] = part(rows)
    cost, strong_cost = spend(list(range(len(prompts))))
    return {
        **overall,
        "deployments": {name: routed.count(name) for name in (STRONG, WEAK)},
        "cost": cost,
        "strong_cost": strong_cost,
        "prices": {name: list(p) for name, p in PRICES.items()},
        "datasets": by_dataset,
    }


def render(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(
        title="Learned routing on held-out prompts (quality: recorded outcomes)",
        title_justify="left",
        caption=f"n: prompts; strong: share sent to {STRONG}; kept: quality / {STRONG}'s; "
        "random: what a random router with the same strong share keeps",
        caption_justify="left",
    )
    for column in ("", "n", "strong", "quality", "GPT-4", "Mixtral", "kept", "random", "saved"):
        table.add_column(column, justify="left" if not column else "right")
    rows = [*((name.upper(), row) for name, row in summary["datasets"].items()), ("all", summary)]
    for label, row in rows:
        table.add_row(
            label,
            str(row["prompts"]),
            f"{row['strong_share']:.0%}",
            f"{row['quality']:.1%}",
            f"{row['strong_quality']:.1%}",
            f"{row['weak_quality']:.1%}",
            f"{row['quality_kept']:.1%}" if row["quality_kept"] is not None else "-",
            f"{row['random_quality_kept']:.1%}" if row["random_quality_kept"] is not None else "-",
            f"{row['cost_saved']:.0%}" if row.get("cost_saved") is not None else "-",
            style="bold" if label == "all" else None,
        )
    console.print(table)
    console.print(
        f"Cost ${summary['cost']:.4f} against ${summary['strong_cost']:.4f} if every prompt had gone to "
        f"{STRONG}: [bold green]{summary['cost_saved']:.0%} saved[/], keeping "
        f"[bold]{summary['quality_kept']:.1%}[/] of its quality "
        f"(a random router sending as many prompts to {STRONG} keeps {summary['random_quality_kept']:.1%})."
    )
    console.print(
        f"{summary['answered']} of {summary['requests']} prompts answered in {summary['seconds']:.1f}s. "
        f"Simulated prices ($/M tokens in/out): {STRONG} {PRICES[STRONG][0]:g}/{PRICES[STRONG][1]:g}, "
        f"{WEAK} {PRICES[WEAK][0]:g}/{PRICES[WEAK][1]:g}. Quality: the recorded outcome of the model each "
        "prompt went to; the prompts come from the held-out splits the router never trained on. A sample "
        f"this size moves by a few points between seeds (--seed); `pointsman eval` scores whole splits."
    )
