"""`pointsman demo --learned`: held-out prompts from the bundled data replayed through a running
server with the learned router, scored with the recorded outcomes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pointsman.learning.datasets import load_bundled, standard_splits
from pointsman.learning.replay import STRONG, WEAK, Prompt, held_out_sample, score


def test_learned_demo_saves_cost_and_keeps_most_of_the_quality(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pointsman", "demo", "--learned", "--json", "--requests", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_DATA_HOME": str(tmp_path)},
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["requests"] == summary["answered"] == 60 and summary["failed"] == 0
    assert summary["datasets"]["mmlu"]["prompts"] == 40 and summary["datasets"]["gsm8k"]["prompts"] == 20
    # Both simulated models served, so the router chose per prompt.
    assert summary["deployments"][STRONG] > 0 and summary["deployments"][WEAK] > 0
    assert sum(summary["deployments"].values()) == 60
    assert 0 < summary["cost"] < summary["strong_cost"]
    assert summary["cost_saved"] > 0.15
    assert 0.8 <= summary["quality_kept"] <= 1.1
    assert summary["weak_quality"] <= summary["quality"] <= summary["strong_quality"] + 0.1


def test_the_replayed_prompts_are_a_seeded_sample_of_the_held_out_splits() -> None:
    first, again, other = (
        held_out_sample(30, seed=1),
        held_out_sample(30, seed=1),
        held_out_sample(30, seed=2),
    )

    assert [p.text for p in first] == [p.text for p in again]
    assert [p.text for p in first] != [p.text for p in other]
    for name in ("mmlu", "gsm8k"):
        splits = standard_splits(load_bundled(name))
        test, train = set(splits.test.prompts), set(splits.train.prompts)
        mine = [p.text for p in first if p.dataset == name]
        assert mine and all(t in test and t not in train for t in mine)


def test_quality_is_the_outcome_of_the_model_each_prompt_went_to() -> None:
    prompts = [
        Prompt("mmlu", "a", weak=1.0, strong=1.0),  # weak is enough
        Prompt("mmlu", "b", weak=0.0, strong=1.0),  # needs the strong model
        Prompt("gsm8k", "c", weak=0.0, strong=1.0),  # needs it, but goes weak
        Prompt("gsm8k", "d", weak=1.0, strong=0.0),  # strong gets it wrong
    ]
    routed = [WEAK, STRONG, WEAK, STRONG]
    ids = ["r1", "r2", "r3", "r4"]
    # Each call: 1000 prompt and 100 completion tokens; strong prices 10/30, weak 0.6/0.6 per M.
    strong_call, weak_call = (1000 * 10 + 100 * 30) / 1e6, (1000 * 0.6 + 100 * 0.6) / 1e6
    records = [
        {
            "request_id": rid,
            "status": 200,
            "deployment": dep,
            "prompt_tokens": 1000,
            "completion_tokens": 100,
            "cost": strong_call if dep == STRONG else weak_call,
        }
        for rid, dep in zip(ids, routed, strict=True)
    ]

    summary = score(prompts, routed, ids, records)

    assert summary["quality"] == 0.5  # right on a and b
    assert summary["strong_quality"] == 0.75 and summary["weak_quality"] == 0.5
    assert summary["quality_kept"] == round(0.5 / 0.75, 4)
    assert summary["strong_share"] == 0.5
    assert summary["random_quality_kept"] == round((0.5 + 0.5 * 0.25) / 0.75, 4)
    assert summary["cost"] == 2 * strong_call + 2 * weak_call
    assert summary["strong_cost"] == 4 * strong_call
    assert summary["cost_saved"] == round(1 - (2 * strong_call + 2 * weak_call) / (4 * strong_call), 4)
    assert summary["datasets"]["mmlu"]["quality_kept"] == 1.0
    assert summary["datasets"]["gsm8k"]["quality"] == 0.0
