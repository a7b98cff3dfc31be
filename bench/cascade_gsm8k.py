"""Cascades evaluated offline on GSM8K (RouteLLM's recorded outcomes): the weak model's recorded
answer is the cheap step's output, pointsman's rules judge decides whether to accept it or
escalate to the strong model, whose recorded correctness then counts.

    python -m bench.cascade_gsm8k [--data ../shared/data/routellm/gsm8k] [--json]

Contaminated prompts are dropped. Judges are fixed in advance (nothing is fitted to this data):
  generic     refusals, "I don't know", empty or cut-off answers (the shipped defaults)
  arithmetic  generic + every written calculation must check out
  math        arithmetic + a final numeric answer must be stated + hedging words escalate

With --verifier [ARTIFACT] (default: the shipped `gsm8k` verifier, trained on the training split
only) it also scores the learned verifier on the held-out split (seed 0, 20% of prompts, the
same split `pointsman train-verifier` held out) beside the rule judges on the same prompts:
the share of the weak-strong accuracy gap closed at its calibrated threshold, at exactly 25%
escalation, at a total cost of 25% of always-strong (the cheap call counted, at list prices),
and at the rule judge's own escalation share, each with a paired bootstrap interval.

    python -m bench.cascade_gsm8k --verifier [--bootstrap 2000]

Data: RouteLLM (lm-sys/RouteLLM), Apache-2.0; see ../shared/data/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from time import perf_counter
from typing import Any

from pointsman.cascade import RulesJudge

WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm" / "gsm8k"

JUDGES = {
    "generic": RulesJudge(),
    "arithmetic": RulesJudge(check_arithmetic=True),
    "math": RulesJudge(
        extra_patterns=(
            r"\bhowever\b",
            r"\bassum(?:e|ing)\b",
            r"\bapproximately\b",
            r"\bround(?:ed|ing)?\b",
            r"\bnot possible\b",
            r"\bcannot be\b",
        ),
        require_pattern=r"(?:####|answer is|=)\s*\$?-?\d[\d,]*(?:\.\d+)?",
        check_arithmetic=True,
    ),
}


def load(data: Path) -> list[dict[str, Any]]:
    contaminated = {
        json.loads(line)["eval_prompt"]
        for line in (data / "contaminated_prompts.jsonl").open()
        if line.strip()
    }
    rows = []
    with (data / "gsm8k_responses.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["prompt"] in contaminated:
                continue
            rows.append(
                {
                    "prompt": row["prompt"],
                    "weak_ok": row[WEAK] == "True",
                    "strong_ok": row[STRONG] == "True",
                    "weak_answer": row[f"{WEAK}_response"],
                }
            )
    return rows


def evaluate(rows: list[dict[str, Any]], judge: RulesJudge) -> dict[str, float]:
    escalated = correct = caught = wrong_weak = false_alarms = 0
    for row in rows:
        answer = {
            "choices": [
                {"message": {"role": "assistant", "content": row["weak_answer"]}, "finish_reason": "stop"}
            ]
        }
        request = {"messages": [{"role": "user", "content": row["prompt"]}]}
        accepted = judge(answer, request).accepted
        escalated += not accepted
        correct += row["weak_ok"] if accepted else row["strong_ok"]
        wrong_weak += not row["weak_ok"]
        caught += (not accepted) and not row["weak_ok"]
        false_alarms += (not accepted) and row["weak_ok"]
    n = len(rows)
    return {
        "escalated_share": escalated / n,
        "accuracy": correct / n,
        "wrong_weak_answers_caught": caught / max(1, wrong_weak),
        "escalations_that_were_needed": caught / max(1, escalated),
        "good_weak_answers_escalated": false_alarms / max(1, n - wrong_weak),
    }


def run(data: Path = DEFAULT_DATA) -> dict[str, Any]:
    rows = load(data)
    n = len(rows)
    weak = sum(r["weak_ok"] for r in rows) / n
    strong = sum(r["strong_ok"] for r in rows) / n
    result: dict[str, Any] = {
        "prompts": n,
        "always_weak": {"escalated_share": 0.0, "accuracy": weak},
        "always_strong": {"escalated_share": 1.0, "accuracy": strong},
    }
    for name, judge in JUDGES.items():
        figures = evaluate(rows, judge)
        # Share of the strong model's accuracy gap closed, per share of calls escalated.
        figures["gap_closed"] = (figures["accuracy"] - weak) / (strong - weak) if strong != weak else 0.0
        # Escalating the same share of calls at random would reach, in expectation:
        share = figures["escalated_share"]
        figures["random_same_share_accuracy"] = (1 - share) * weak + share * strong
        result[f"cascade_{name}"] = figures
    return result


def held_out(
    data: Path = DEFAULT_DATA, artifact: str = "gsm8k", bootstrap: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """The learned verifier and the rule judges on the held-out split, with paired bootstrap
    intervals (5th-95th percentiles) over resamples of the held-out prompts."""
    import numpy as np

    from pointsman.learning.datasets import split_by_prompt
    from pointsman.learning.verifier import VerifierTarget, load_gsm8k_answers, load_verifier

    examples = load_gsm8k_answers(data)
    _, test_idx = split_by_prompt([e.prompt for e in examples], 0.2, seed, "test")
    test = [examples[i] for i in test_idx]
    verifier = load_verifier(artifact)
    weak = np.array([e.right for e in test])
    strong = np.array([e.strong_right for e in test], dtype=np.float64)
    ratio = float(sum(e.cheap_cost or 0.0 for e in test) / sum(e.strong_cost or 0.0 for e in test))
    started = perf_counter()
    scores = verifier.score_batch(test)
    scoring_ms = (perf_counter() - started) * 1000 / len(test)

    def ranked(share: float) -> np.ndarray:
        k = int(round(share * len(test)))
        escalate = np.zeros(len(test), dtype=bool)
        escalate[np.argsort(scores, kind="stable")[:k]] = True
        return escalate

    rules = {
        name: np.array(
            [
                not judge(
                    {"choices": [{"message": {"content": e.answer}, "finish_reason": "stop"}]},
                    {"messages": [{"role": "user", "content": e.prompt}]},
                ).accepted
                for e in test
            ]
        )
        for name, judge in JUDGES.items()
    }
    policies: dict[str, np.ndarray] = {
        "verifier_calibrated_threshold": scores < verifier.threshold,
        "verifier_cost_25pct_threshold": scores < verifier.threshold_for(VerifierTarget(cost_share=0.25)),
        "verifier_25pct_escalation": ranked(0.25),
    }
    for name, escalate in rules.items():
        policies[f"rules_{name}"] = escalate
        policies[f"verifier_at_rules_{name}_share"] = ranked(float(escalate.mean()))

    def gap(index: np.ndarray, escalate: np.ndarray) -> float:
        w, s = weak[index].mean(), strong[index].mean()
        accuracy = np.where(escalate[index], strong[index], weak[index]).mean()
        return float((accuracy - w) / (s - w)) if s != w else 0.0

    every = np.arange(len(test))
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, len(test), len(test)) for _ in range(bootstrap)]

    def interval(values: list[float]) -> list[float]:
        return [round(float(np.percentile(values, 5)), 4), round(float(np.percentile(values, 95)), 4)]

    out: dict[str, Any] = {
        "split": f"held-out test split, seed {seed}: {len(test)} prompts (contaminated removed)",
        "artifact": artifact,
        "chosen": verifier.meta.get("chosen"),
        "weak_accuracy": round(float(weak.mean()), 4),
        "strong_accuracy": round(float(strong.mean()), 4),
        "cheap_cost_share": round(ratio, 4),
        "verifier_ms_per_answer_batched": round(scoring_ms, 3),
        "bootstrap": bootstrap,
        "policies": {},
        "paired_differences": {},
    }
    for name, escalate in policies.items():
        share = float(escalate.mean())
        out["policies"][name] = {
            "escalated_share": round(share, 4),
            "cost_share_with_cheap_call": round(share + ratio, 4),
            "accuracy": round(float(np.where(escalate, strong, weak).mean()), 4),
            "gap_closed": round(gap(every, escalate), 4),
            "gap_closed_90pct": interval([gap(i, escalate) for i in samples]),
        }
    for name in rules:
        mine, theirs = policies[f"verifier_at_rules_{name}_share"], policies[f"rules_{name}"]
        diffs = [gap(i, mine) - gap(i, theirs) for i in samples]
        out["paired_differences"][f"verifier_minus_rules_{name}"] = {
            "gap_closed": round(gap(every, mine) - gap(every, theirs), 4),
            "gap_closed_90pct": interval(diffs),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--verifier", nargs="?", const="gsm8k", help="also score this learned verifier on the held-out split"
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples for the verifier's intervals")
    args = parser.parse_args()
    if args.verifier:
        return _main_verifier(args)
    result = run(args.data)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cascade_gsm8k.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"GSM8K, {result['prompts']} prompts (contaminated removed); weak = Mixtral-8x7B, strong = GPT-4")
    print(
        f"{'policy':<22}{'escalated':>10}{'accuracy':>10}{'random, same share':>20}{'gap closed':>12}"
        f"{'wrong caught':>14}"
    )

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    for name, r in result.items():
        if name == "prompts":
            continue
        print(
            f"{name:<22}{pct(r['escalated_share']):>10}{pct(r['accuracy']):>10}"
            f"{pct(r.get('random_same_share_accuracy')):>20}{pct(r.get('gap_closed')):>12}"
            f"{pct(r.get('wrong_weak_answers_caught')):>14}"
        )
    return 0


def _main_verifier(args: argparse.Namespace) -> int:
    result = held_out(args.data, args.verifier, args.bootstrap)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cascade_gsm8k_verifier.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"GSM8K {result['split']}; weak {result['weak_accuracy']:.1%}, "
        f"strong {result['strong_accuracy']:.1%}; "
        f"cheap call = {result['cheap_cost_share']:.1%} of a strong call; verifier {result['chosen']}"
    )
    print(f"{'policy':<42}{'escalated':>10}{'cost':>8}{'accuracy':>10}{'gap closed':>12}{'90% interval':>18}")
    for name, r in result["policies"].items():
        low, high = r["gap_closed_90pct"]
        print(
            f"{name:<42}{r['escalated_share']:>10.1%}{r['cost_share_with_cheap_call']:>8.1%}"
            f"{r['accuracy']:>10.1%}{r['gap_closed']:>12.1%}{f'{low:.1%}-{high:.1%}':>18}"
        )
    print(f"paired bootstrap ({result['bootstrap']} resamples), verifier minus rules at the same share:")
    for name, r in result["paired_differences"].items():
        low, high = r["gap_closed_90pct"]
        print(f"  {name:<40}{r['gap_closed']:>+8.1%}   90% {low:+.1%} to {high:+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
