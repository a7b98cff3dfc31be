"""Data in without surprises: other people's CSV/JSONL layouts load with column options
through the CLI, and the CLI says when it holds rows out or clips values."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pointsman.learning.artifact import RouterArtifact
from pointsman.learning.commands import main as learning_main

WORDS = {
    "mmlu": "which of the following best describes the law of physics history",
    "gsm8k": "tom has apples and gives away how many are left total sum",
    "mbpp": "write a python function that returns the list sorted string",
}
FAST = ["--encoders", "tfidf", "--candidates", "linear(tfidf)", "--folds", "2"]


def _rows(n: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        task = list(WORDS)[i % 3]
        out.append((task, " ".join(rng.choice(WORDS[task].split(), size=7)) + f" #{i}"))
    return out


def routerbench_csv(path: Path, n: int = 150) -> Path:
    """RouterBench's layout: sample_id, prompt, eval_name, one 0/1 column per model, then
    `<model>|model_response` and `<model>|total_cost`, and the oracle's pick."""
    models = {
        "gpt-4-1106-preview": 0.01,
        "mistralai/mixtral-8x7b-chat": 0.0006,
        "meta/llama-2-70b-chat": 0.0009,
    }
    rng = np.random.default_rng(1)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        header = ["sample_id", "prompt", "eval_name"]
        for m in models:
            header += [m, f"{m}|model_response", f"{m}|total_cost"]
        w.writerow(header + ["oracle_model_to_route_to"])
        for i, (task, prompt) in enumerate(_rows(n)):
            row: list[Any] = [f"{task}.{i}", prompt, task]
            for price in models.values():
                row += [float(rng.random() < 0.7), "an answer", price * float(rng.uniform(0.5, 1.5))]
            w.writerow(row + ["gpt-4-1106-preview"])
    return path


def routerdc_csv(path: Path, n: int = 120) -> Path:
    """A RouterDC-style table: question, one score column per model (here 0..10), dataset."""
    rng = np.random.default_rng(2)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "qwen", "llama", "mistral", "dataset"])
        for i, (task, prompt) in enumerate(_rows(n)):
            scores = [int(rng.integers(0, 11)) for _ in range(3)]
            if i == 0:
                scores[0] = 12  # out of range: clipped to 10, with a warning
            w.writerow([prompt, *scores, task])
    return path


def test_a_routerbench_csv_trains_with_its_columns_and_costs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = routerbench_csv(tmp_path / "routerbench_0shot.csv")
    out = tmp_path / "router"
    options = [
        "--group-column",
        "eval_name",
        "--cost-columns",
        "{model}|total_cost",
        "--ignore-columns",
        "sample_id,oracle_model_to_route_to",
    ]
    assert learning_main(["train", str(data), "--out", str(out), *options, *FAST, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["models"]) == [
        "gpt-4-1106-preview",
        "meta/llama-2-70b-chat",
        "mistralai/mixtral-8x7b-chat",
    ]
    # The seeded test split was held out, and the command says so.
    assert any("training on the seeded train split: 120 of its 150 rows" in w for w in report["warnings"])
    artifact = RouterArtifact.load(out)
    # Costs came from the per-call cost columns: no model is free, GPT-4 is the dearest.
    assert artifact.missing_costs() == []
    cost = dict(zip(artifact.models, artifact.expected_cost(30), strict=True))
    assert max(cost, key=lambda m: cost[m]) == "gpt-4-1106-preview"
    assert learning_main(["eval", str(data), "--router", str(out), *options, "--json"]) == 0
    captured = capsys.readouterr()
    assert "scoring only the seeded test split: 30 of its 150 rows" in captured.err
    (evaluated,) = json.loads(captured.out)["datasets"]
    assert evaluated["cost_unit"] == "$"
    assert evaluated["rows"] == 30


def test_a_routerdc_style_csv_with_a_score_range_is_scaled_and_clipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = routerdc_csv(tmp_path / "routerdc.csv")
    out = tmp_path / "router"
    options = ["--prompt-column", "question", "--group-column", "dataset", "--quality-range", "0,10"]
    code = learning_main(["train", str(data), "--out", str(out), "--all-data", *options, *FAST, "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["models"] == ["qwen", "llama", "mistral"]
    assert any("1 quality value(s) outside 0..10 clipped" in w for w in report["warnings"])
    # All rows used: no hold-out warning.
    assert not any("train split" in w for w in report["warnings"])
    assert report["rows"] == 120


def test_without_the_options_the_errors_name_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = routerdc_csv(tmp_path / "routerdc.csv")
    assert learning_main(["train", str(data), "--out", str(tmp_path / "r"), *FAST, "--json"]) == 1
    assert "--prompt-column" in json.loads(capsys.readouterr().out)["error"]
    code = learning_main(
        ["train", str(data), "--out", str(tmp_path / "r"), "--prompt-column", "question", *FAST, "--json"]
    )
    assert code == 1
    assert "--quality-range" in json.loads(capsys.readouterr().out)["error"]


def test_jsonl_with_other_keys_loads_with_the_same_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.jsonl"
    rng = np.random.default_rng(3)
    with path.open("w", encoding="utf-8") as f:
        for task, prompt in _rows(90):
            rec = {
                "question": prompt,
                "task": task,
                "a": int(rng.integers(0, 2)),
                "b": int(rng.integers(0, 2)),
            }
            f.write(json.dumps(rec) + "\n")
    options = ["--prompt-column", "question", "--model-columns", "a,b", "--group-column", "task"]
    out = tmp_path / "router"
    assert (
        learning_main(["train", str(path), "--out", str(out), "--all-data", *options, *FAST, "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["models"] in (["a", "b"], ["b", "a"])
