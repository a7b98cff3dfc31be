"""Outcome data: loaders for every supported format, and the fixed held-out splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pointsman.learning.datasets import (
    DatasetError,
    load_bundled,
    load_dataset,
    split_by_prompt,
    standard_splits,
)


def test_split_is_the_same_whatever_the_row_order() -> None:
    prompts = [f"question {i}" for i in range(200)]
    _, test_a = split_by_prompt(prompts, 0.2, seed=0)
    shuffled = list(reversed(prompts))
    _, test_b = split_by_prompt(shuffled, 0.2, seed=0)
    assert {prompts[i] for i in test_a} == {shuffled[i] for i in test_b}
    assert len(test_a) == 40


def test_split_changes_with_the_seed_and_never_separates_identical_prompts() -> None:
    prompts = [f"q{i % 50}" for i in range(150)]  # every prompt three times
    train, test = split_by_prompt(prompts, 0.2, seed=0)
    assert not {prompts[i] for i in train} & {prompts[i] for i in test}
    assert len({prompts[i] for i in test}) == 10
    _, other = split_by_prompt(prompts, 0.2, seed=1)
    assert set(test.tolist()) != set(other.tolist())


def test_bundled_routellm_sets_have_contaminated_prompts_removed() -> None:
    mmlu = load_bundled("mmlu")
    gsm8k = load_bundled("gsm8k")
    assert (len(mmlu), len(gsm8k)) == (14042 - 5, 1319 - 12)
    assert mmlu.strong == "gpt-4-1106-preview"
    assert mmlu.groups is not None and "high_school_mathematics" in set(mmlu.groups)
    # No prices on RouteLLM data: the cost axis is the strong-call share.
    assert mmlu.cost_unit == "calls"
    assert mmlu.ordered_two().cost[0].tolist() == [0.0, 1.0]
    assert gsm8k.output_tokens is not None


def test_bundled_nine_model_set_is_costed_from_list_prices() -> None:
    data = load_bundled("llmrouter")
    assert len(data) == 5608 and len(data.models) == 9
    assert data.cost_unit == "$"
    j = data.models.index("gemma-2-9b-it")  # $0.10 per million tokens, in and out
    tokens = -(-len(data.prompts[0]) // 4) + 256
    assert data.cost[0, j] == pytest.approx(tokens * 0.10 / 1e6)


def test_standard_splits_carve_validation_from_train_only() -> None:
    splits = standard_splits(load_bundled("gsm8k"))
    test = set(splits.test.prompts)
    assert not test & set(splits.train.prompts)
    assert set(splits.validation.prompts) | set(splits.fit.prompts) == set(splits.train.prompts)
    assert len(splits.test) == round(0.2 * 1307)


def test_generic_jsonl_with_costs_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "logs.jsonl"
    rows = [
        {"prompt": "a", "scores": {"x": 1, "y": 0.5}, "costs": {"x": 0.01, "y": 0.002}, "group": "g"},
        {"prompt": "b", "scores": {"x": 0, "y": 1}, "costs": {"x": 0.02, "y": 0.001}},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_dataset(path)
    assert data.models == ["x", "y"]
    assert data.quality.tolist() == [[1.0, 0.5], [0.0, 1.0]]
    assert data.cost.tolist() == [[0.01, 0.002], [0.02, 0.001]]
    assert data.groups == ["g", ""]


def test_generic_csv_and_routellm_csv_drop_contaminated_prompts(tmp_path: Path) -> None:
    (tmp_path / "outcomes.csv").write_text(
        "prompt,weak-model,strong-model,weak-model_response\n"
        "easy,True,True,short\n"
        "hard,False,True,a much longer answer\n"
        "leaked,True,True,x\n"
    )
    (tmp_path / "contaminated_prompts.jsonl").write_text(json.dumps({"eval_prompt": "leaked"}) + "\n")
    data = load_dataset(tmp_path / "outcomes.csv")
    assert data.prompts == ["easy", "hard"]
    assert (data.weak, data.strong) == ("weak-model", "strong-model")
    assert data.notes == ["dropped 1 contaminated prompt(s)"]


def test_llmrouter_json_reads_prices_beside_it(tmp_path: Path) -> None:
    (tmp_path / "train.json").write_text(
        json.dumps([{"question": "q1", "scores": {"a": 1.0, "b": 0.0}, "cluster_id": 0}])
    )
    (tmp_path / "models.json").write_text(
        json.dumps(
            {"a": {"input_price": 1.0, "output_price": 2.0}, "b": {"input_price": 0.1, "output_price": 0.1}}
        )
    )
    data = load_dataset(tmp_path)
    assert data.cost[0] == pytest.approx([(1 * 1.0 + 256 * 2.0) / 1e6, (1 * 0.1 + 256 * 0.1) / 1e6])


def test_bad_rows_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "a", "scores": {"x": 3}}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1 \(x\): quality must be in 0..1"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="not a bundled set"):
        load_dataset(tmp_path / "missing.jsonl")


def test_ordered_two_puts_weak_first() -> None:
    data = load_bundled("gsm8k")
    two = data.ordered_two()
    assert two.models == [data.weak, data.strong]
    assert np.all(two.quality.mean(axis=0)[1] > two.quality.mean(axis=0)[0])
