"""Decision latency of the learned strategy: encode and predict for a ~1k-token prompt.

    python -m bench.learned_latency                  # both shipped routers, 2000 prompts each
    python -m bench.learned_latency --iterations 300 --json
    python -m bench.learned_latency --router PATH    # an artifact of your own

Runs on one core: BLAS/OpenMP threads are capped at 1 before numpy loads and the process is
pinned to one CPU (`--cpu`). Every timed prompt is distinct (real prompts from the bundled data,
joined and cut to 4,000 characters, about 1,000 tokens), so the per-prompt embedding cache never
hits; the tokenizer's word-piece cache warms as it would in service. Three figures per router:

- `decide`: `RouterArtifact.decide` (encoders, predictor, knob), the decision itself;
- `rank`: `LearnedStrategy.rank` on a parsed config, what a request pays inside the router;
- `first`: the first prompt after loading (cold caches), reported alone.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

PROMPT_CHARS = 4000


def prompts(count: int, seed: int = 0) -> list[str]:
    """`count` distinct ~1k-token prompts built from real bundled prompts."""
    import random

    from pointsman.learning.datasets import load_bundled

    pool = load_bundled("llmrouter").prompts + load_bundled("mmlu").prompts
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        parts: list[str] = []
        size = 0
        while size < PROMPT_CHARS:
            p = rng.choice(pool)
            parts.append(p)
            size += len(p) + 2
        out.append("\n\n".join(parts)[:PROMPT_CHARS])
    return out


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1],
        "mean_ms": statistics.fmean(ordered),
    }


def strategy_for(artifact: str, kind: str, models: list[str]) -> Any:
    from pointsman.config import parse_config
    from pointsman.strategies import STRATEGIES, build_strategy, register
    from pointsman.strategies.learned import LearnedStrategy

    if "learned" not in STRATEGIES:
        register(LearnedStrategy)
    if kind == "two_model":
        mapping = {"strong": ["dep-strong"], "weak": ["dep-weak"]}
        names = ["dep-strong", "dep-weak"]
    else:
        mapping = {m: [f"dep-{i}"] for i, m in enumerate(models)}
        names = [f"dep-{i}" for i in range(len(models))]
    config = parse_config(
        {
            "deployments": [
                {"name": n, "provider": "openai", "model": n, "api_base": "http://127.0.0.1:9/v1"}
                for n in names
            ],
            "models": {
                "auto": {"strategy": "learned", "options": {"artifact": artifact, "mapping": mapping}}
            },
        }
    )
    strategy = build_strategy(config.models["auto"], config)
    return strategy, [config.deployment(n) for n in names]


def bench_router(name: str, iterations: int, warmup: int) -> dict[str, Any]:
    from pointsman.learning.artifact import RouterArtifact
    from pointsman.signals import Signals

    texts = prompts(warmup + 2 * iterations + 1, seed=hash(name) & 0xFFFF)
    started = time.perf_counter()
    artifact = RouterArtifact.load(name)
    load_s = time.perf_counter() - started
    knob = artifact.resolve_knob()
    t0 = time.perf_counter_ns()
    artifact.decide(texts[0], knob)
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    for text in texts[1 : warmup + 1]:
        artifact.decide(text, knob)
    decide_ms: list[float] = []
    gc.disable()
    try:
        for text in texts[warmup + 1 : warmup + 1 + iterations]:
            t0 = time.perf_counter_ns()
            artifact.decide(text, knob)
            decide_ms.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        gc.enable()
    strategy, candidates = strategy_for(name, artifact.kind, artifact.models)
    rank_ms: list[float] = []
    gc.disable()
    try:
        for text in texts[warmup + 1 + iterations :]:
            signals = Signals({"model": "auto", "messages": [{"role": "user", "content": text}]})
            t0 = time.perf_counter_ns()
            strategy.rank(candidates, signals)
            rank_ms.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        gc.enable()
    return {
        "router": name,
        "kind": artifact.kind,
        "predictor": artifact.meta.get("chosen"),
        "load_s": round(load_s, 3),
        "first_ms": round(first_ms, 3),
        "decide": {k: round(v, 3) for k, v in percentiles(decide_ms).items()},
        "rank": {k: round(v, 3) for k, v in percentiles(rank_ms).items()},
        "iterations": iterations,
        "prompt_chars": PROMPT_CHARS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--router", action="append", help="shipped name or folder (default: every shipped router)"
    )
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the last one)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {args.cpu if args.cpu is not None else cpus[-1]})
    from pointsman.learning.artifact import shipped_routers

    results = [bench_router(r, args.iterations, args.warmup) for r in (args.router or shipped_routers())]
    report = {
        "benchmark": "learned decision latency (encode + predict), one core",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpus_visible": os.cpu_count(),
            "pinned_to": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        },
        "targets": {"p50_ms": 3.0, "p99_ms": 10.0},
        "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{'router':<14}{'step':<8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}   first call / load"
    )
    for r in results:
        for step in ("decide", "rank"):
            s = r[step]
            tail = f"   {r['first_ms']:.1f} ms / {r['load_s']:.2f} s" if step == "decide" else ""
            print(
                f"{r['router']:<14}{step:<8}{s['p50_ms']:>9.3f}{s['p90_ms']:>9.3f}{s['p99_ms']:>9.3f}{s['max_ms']:>9.3f}{tail}"
            )
    print(
        f"{results[0]['iterations']} distinct prompts of {PROMPT_CHARS} characters (~1k tokens) "
        "per step; target p50 <= 3 ms, p99 <= 10 ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
