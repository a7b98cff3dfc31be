"""Decision latency of the learned verifier (the cascade judge `verifier`) on ~1k-token answers.

    python -m bench.verifier_latency [--data PATH/routellm/gsm8k]   # shipped gsm8k verifier, 2000 answers
    python -m bench.verifier_latency --iterations 300 --json
    python -m bench.verifier_latency --verifier PATH   # an artifact of your own

Runs on one core: BLAS/OpenMP threads are capped at 1 before numpy loads and the process is
pinned to one CPU (`--cpu`). Every timed answer is distinct: real cheap-model answers from
RouteLLM's GSM8K file when it is found (`--data`), else the bundled prompts, joined and cut to
4,000 characters (about 1,000 tokens), each with a GSM8K question as its prompt and, like an
OpenAI-compatible upstream asked for them, one token logprob per ~4 characters. Timed: the judge
call as dispatch makes it, on the parsed completion (features, TF-IDF, model, threshold).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.learned_latency import percentiles  # noqa: E402

ANSWER_CHARS = 4000
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm" / "gsm8k"


def cases(count: int, data: Path, seed: int = 0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """`count` distinct (completion, request) pairs with ~1k-token answers."""
    from pointsman.learning.datasets import load_bundled

    questions = load_bundled("gsm8k").prompts
    if (data / "gsm8k_responses.csv").exists():
        from pointsman.learning.verifier import load_gsm8k_answers

        pool = [e.answer for e in load_gsm8k_answers(data)]
    else:
        pool = load_bundled("mmlu").prompts
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        parts: list[str] = []
        size = 0
        while size < ANSWER_CHARS:
            part = rng.choice(pool)
            parts.append(part)
            size += len(part) + 1
        text = "\n".join(parts)[:ANSWER_CHARS]
        tokens = [{"token": text[i : i + 4], "logprob": -rng.random() * 2} for i in range(0, len(text), 4)]
        choice = {
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": {"content": tokens},
        }
        request = {"messages": [{"role": "user", "content": rng.choice(questions)}]}
        out.append(({"choices": [choice]}, request))
    return out


def bench_verifier(name: str, iterations: int, warmup: int, data: Path) -> dict[str, Any]:
    from pointsman.cascade import VerifierJudge
    from pointsman.learning.verifier import VerifierArtifact

    pairs = cases(warmup + iterations + 1, data)
    started = time.perf_counter()
    artifact = VerifierArtifact.load(name)
    load_s = time.perf_counter() - started
    judge = VerifierJudge(artifact, artifact.threshold)
    t0 = time.perf_counter_ns()
    judge(*pairs[0])
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    for answer, request in pairs[1 : warmup + 1]:
        judge(answer, request)
    samples: list[float] = []
    cpu: list[float] = []
    escalated = 0
    gc.disable()
    try:
        for answer, request in pairs[warmup + 1 :]:
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            verdict = judge(answer, request)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            cpu.append((time.thread_time_ns() - c0) / 1e6)
            escalated += not verdict.accepted
    finally:
        gc.enable()
    return {
        "verifier": name,
        "predictor": artifact.meta.get("chosen"),
        "load_s": round(load_s, 3),
        "first_ms": round(first_ms, 3),
        "judge": {k: round(v, 3) for k, v in percentiles(samples).items()},
        # CPU time of the judging thread: the wall-clock figures include waiting for a core
        # on a shared machine, this does not.
        "judge_cpu": {k: round(v, 3) for k, v in percentiles(cpu).items()},
        "escalated_share": round(escalated / len(samples), 3),
        "iterations": iterations,
        "answer_chars": ANSWER_CHARS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verifier", default="gsm8k", help="shipped name or folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RouteLLM gsm8k folder (answers)")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the last one)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {args.cpu if args.cpu is not None else cpus[-1]})
    result = bench_verifier(args.verifier, args.iterations, args.warmup, args.data)
    report = {
        "benchmark": "learned verifier decision latency (features + TF-IDF + model), one core",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpus_visible": os.cpu_count(),
            "pinned_to": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        },
        "targets": {"p50_ms": 3.0},
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "results": [result],
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    head = f"{'verifier':<12}{'clock':<7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(f"{head}   first call / load")
    for label, key in (("wall", "judge"), ("cpu", "judge_cpu")):
        s = result[key]
        tail = f"   {result['first_ms']:.1f} ms / {result['load_s']:.2f} s" if key == "judge" else ""
        print(
            f"{result['verifier']:<12}{label:<7}{s['p50_ms']:>9.3f}{s['p90_ms']:>9.3f}{s['p99_ms']:>9.3f}"
            f"{s['max_ms']:>9.3f}{tail}"
        )
    print(f"load average during the run (1/5/15 min): {report['load_average']}")
    print(
        f"{result['iterations']} distinct answers of {ANSWER_CHARS} characters (~1k tokens, with logprobs); "
        "target p50 <= 3 ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
