"""Cascades evaluated offline on GSM8K (RouteLLM's recorded outcomes): the weak model's recorded
answer is the cheap step's output, pointsman's rules judge decides whether to accept it or
escalate to the strong model, whose recorded correctness then counts.

    python -m bench.cascade_gsm8k [--data ../shared/data/routellm/gsm8k] [--json]

Contaminated prompts are dropped. Judges are fixed in advance (nothing is fitted to this data):
  generic     refusals, "I don't know", empty or cut-off answers (the shipped defaults)
  arithmetic  generic + every written calculation must check out
  math        arithmetic + a final numeric answer must be stated + hedging words escalate
Data: RouteLLM (lm-sys/RouteLLM), Apache-2.0; see ../shared/data/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
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


if __name__ == "__main__":
    raise SystemExit(main())
