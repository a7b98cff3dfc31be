"""The rules judge's arithmetic and required-pattern checks, and the offline GSM8K cascade
evaluation checked on a small hand-computed data set."""

from __future__ import annotations

import csv
import json

import pytest
from bench.cascade_gsm8k import STRONG, WEAK, evaluate, load, run

from pointsman.cascade import RulesJudge, arithmetic_error
from pointsman.testing import Behaviour
from tests.conftest import deployment
from tests.test_availability import answered_by


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("She sells 9 eggs for 9 * $2 = $<<9*2=18>>18.", None),
        ("So it takes 2 + 1/2 = 5/2 = <<5/2=2.5>>2.5 bolts", None),
        ("In all, 1,200 + 300 = 1,500 people", None),
        ("then 12 * 3 = 38 apples", "12 * 3 = 38"),
        ("<<7*8=54>>54 cookies", "7*8 = 54"),
        ("The answer is 42.", None),
    ],
)
def test_arithmetic_check(text, wrong):
    assert arithmetic_error(text) == wrong


def answer(text: str) -> dict:
    return {"choices": [{"message": {"content": text}, "finish_reason": "stop"}]}


def test_required_pattern_rejects_an_answer_without_a_final_answer():
    judge = RulesJudge(require_pattern=r"####\s*\d+")
    assert not judge(answer("Let me think about the eggs."), {}).accepted
    assert judge(answer("9 eggs remain.\n#### 18"), {}).accepted


def test_cascade_with_an_arithmetic_check_escalates_a_miscalculation(upstream, serve):
    server = serve(
        {
            "router": {"backoff_base_s": 0.0},
            "deployments": [deployment(upstream, "cheap"), deployment(upstream, "strong")],
            "models": {
                "auto": {
                    "deployments": ["cheap", "strong"],
                    "cascade": {"judges": ["rules"], "check_arithmetic": True},
                }
            },
        }
    )
    upstream.set("cheap", Behaviour(reply="Each box has 12 so 12 * 3 = 38 in total."))
    assert answered_by(server.client()) == "strong"
    assert server.records()[-1]["attempts"][0]["verdict"] == "rules:arithmetic_error"


def test_offline_cascade_evaluation_on_a_hand_computed_set(tmp_path):
    rows = [
        # prompt, weak ok, strong ok, weak answer
        ("p1", True, True, "2 + 2 = 4. #### 4"),  # accepted, right
        ("p2", False, True, "I don't know."),  # escalated, strong right
        ("p3", False, False, "3 * 3 = 10. #### 10"),  # accepted (generic judge), wrong
        ("p4", True, True, "Fine answer #### 7"),  # contaminated: dropped
    ]
    with (tmp_path / "gsm8k_responses.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", WEAK, STRONG, f"{WEAK}_response", f"{STRONG}_response"])
        for prompt, weak_ok, strong_ok, text in rows:
            writer.writerow([prompt, str(weak_ok), str(strong_ok), text, "x"])
    (tmp_path / "contaminated_prompts.jsonl").write_text(json.dumps({"eval_prompt": "p4"}) + "\n")
    data = load(tmp_path)
    assert [r["prompt"] for r in data] == ["p1", "p2", "p3"]
    generic = evaluate(data, RulesJudge())
    assert generic["escalated_share"] == pytest.approx(1 / 3)
    assert generic["accuracy"] == pytest.approx(2 / 3)  # p1 weak right, p2 strong right
    assert generic["wrong_weak_answers_caught"] == pytest.approx(1 / 2)
    arithmetic = evaluate(data, RulesJudge(check_arithmetic=True))
    assert arithmetic["escalated_share"] == pytest.approx(2 / 3)
    assert arithmetic["wrong_weak_answers_caught"] == 1.0
    result = run(tmp_path)
    assert result["always_weak"]["accuracy"] == pytest.approx(1 / 3)
    assert result["always_strong"]["accuracy"] == pytest.approx(2 / 3)
