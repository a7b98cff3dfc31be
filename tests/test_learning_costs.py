"""One cost model in dollars: routers weigh expected dollars per call, whichever way costs were
given (price tables or per-call costs), never trade away a model that is better and cheaper,
and warn wherever a cost is unknown."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pointsman.learning.artifact import RouterArtifact
from pointsman.learning.commands import main as learning_main
from pointsman.learning.datasets import load_dataset, standard_splits
from pointsman.learning.training import PRESETS, train_router

TOPICS = {
    "maths": "solve the equation integer sum product remainder divide multiply",
    "code": "write a python function list loop return class compile bug",
    "poem": "write a short poem about the sea moon autumn love rhyme",
    "facts": "what is the capital of country river mountain history year",
}


def _prompts(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        topic = list(TOPICS)[i % len(TOPICS)]
        words = rng.choice(TOPICS[topic].split(), size=6)
        out.append((topic, f"{' '.join(words)} case {i}"))
    return out


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def better_and_cheaper(path: Path, n: int = 400) -> Path:
    """Two models: `sharp` is right 85% of the time at $0.0005 a call, `dull` 60% at $0.01:
    the more accurate model is also the cheaper one (costs per call, no price table)."""
    rng = np.random.default_rng(1)
    rows = []
    for _, prompt in _prompts(n, 2):
        rows.append(
            {
                "prompt": prompt,
                "scores": {"sharp": int(rng.random() < 0.85), "dull": int(rng.random() < 0.6)},
                "costs": {"sharp": 0.0005, "dull": 0.01},
            }
        )
    return _write(path, rows)


def three_by_calls(path: Path, n: int = 480) -> Path:
    """Three models priced only by each row's recorded dollars (RouterBench style): `small` is
    good at poems and facts, `medium` adds code, `large` is good at everything."""
    rng = np.random.default_rng(3)
    skill = {
        "small": {"maths": 0.1, "code": 0.2, "poem": 0.9, "facts": 0.85},
        "medium": {"maths": 0.3, "code": 0.85, "poem": 0.9, "facts": 0.9},
        "large": {"maths": 0.9, "code": 0.9, "poem": 0.92, "facts": 0.92},
    }
    price = {"small": 0.0002, "medium": 0.002, "large": 0.02}
    rows = []
    for topic, prompt in _prompts(n, 4):
        rows.append(
            {
                "prompt": prompt,
                "group": topic,
                "scores": {m: int(rng.random() < skill[m][topic]) for m in skill},
                "costs": {m: price[m] * float(rng.uniform(0.8, 1.2)) for m in price},
            }
        )
    return _write(path, rows)


def _train(path: Path) -> RouterArtifact:
    data = load_dataset(path)
    artifact, _ = train_router(
        [standard_splits(data).train], encoders=["tfidf"], candidates=["linear(tfidf)"], folds=3
    )
    return artifact


def test_every_preset_keeps_the_model_that_is_better_and_cheaper(tmp_path: Path) -> None:
    data = load_dataset(better_and_cheaper(tmp_path / "two.jsonl"))
    artifact = _train(tmp_path / "two.jsonl")
    assert artifact.decision == "utility"
    # Learned from the recorded per-call costs: neither model is free.
    assert artifact.missing_costs() == []
    cost = artifact.expected_cost(20)
    assert cost[artifact.models.index("sharp")] < cost[artifact.models.index("dull")]
    held_out = standard_splits(data).test.prompts
    sharp = artifact.models.index("sharp")
    assert set(PRESETS) <= set(artifact.presets)
    for name in PRESETS:
        picks = artifact.decide_batch(held_out, artifact.resolve_knob(preset=name))
        assert float((picks == sharp).mean()) >= 0.95, name


def test_three_models_from_per_call_costs_move_cost_monotonically(tmp_path: Path) -> None:
    path = three_by_calls(tmp_path / "three.jsonl")
    artifact = _train(path)
    assert artifact.missing_costs() == []
    assert artifact.meta["cost_source"] == "recorded per-call costs"
    test = standard_splits(load_dataset(path)).test
    order = [test.models.index(m) for m in artifact.models]
    cost = test.cost[:, order]
    spent = []
    for lam in (0.0, 0.05, 0.2, 1.0, 5.0, 50.0):
        picks = artifact.decide_batch(test.prompts, lam)
        spent.append(float(cost[np.arange(len(test)), picks].mean()))
    assert all(a >= b - 1e-12 for a, b in zip(spent, spent[1:], strict=False)), spent
    assert spent[0] > 2 * spent[-1]
    # The presets, too: the more quality promised, the more spent.
    by_preset = []
    for name in ("best", "quality", "balanced", "economy"):
        if name in artifact.presets:
            picks = artifact.decide_batch(test.prompts, artifact.resolve_knob(preset=name))
            by_preset.append(float(cost[np.arange(len(test)), picks].mean()))
    assert len(by_preset) >= 3
    assert all(a >= b - 1e-12 for a, b in zip(by_preset, by_preset[1:], strict=False)), by_preset


def test_a_missing_cost_is_a_warning_at_train_eval_and_calibrate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(5)
    rows = [
        {"prompt": p, "scores": {m: int(rng.random() < 0.5) for m in ("a", "b", "c")}}
        for _, p in _prompts(120, 6)
    ]
    path = _write(tmp_path / "free.jsonl", rows)
    out = tmp_path / "router"
    with caplog.at_level(logging.WARNING, logger="pointsman.learning"):
        code = learning_main(
            ["train", str(path), "--out", str(out), "--encoders", "tfidf", "--candidates", "linear(tfidf)"]
            + ["--folds", "2", "--json"]
        )
    assert code == 0
    trained = json.loads(capsys.readouterr().out)
    assert any("no price or per-call cost" in w for w in trained["warnings"])
    assert any("train: no price or per-call cost for a, b, c" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pointsman.learning"):
        assert learning_main(["eval", str(path), "--router", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert any("no price or per-call cost" in n for n in report["datasets"][0]["notes"])
    assert any("eval: no price or per-call cost" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pointsman.learning"):
        assert learning_main(["calibrate", "--router", str(out), "--quality", "0.5", "--json"]) == 0
    assert any("calibrate: no price or per-call cost" in r.message for r in caplog.records)
    assert any("no price or per-call cost" in w for w in json.loads(capsys.readouterr().out)["warnings"])


def test_served_the_better_cheaper_model_answers(tmp_path: Path, upstream: Any, serve: Any) -> None:
    from tests.conftest import deployment

    artifact = _train(better_and_cheaper(tmp_path / "two.jsonl"))
    folder = artifact.save(tmp_path / "router")
    weak_is_sharp = artifact.tiers["weak"] == "sharp"
    sharp_tier, dull_tier = ("weak", "strong") if weak_is_sharp else ("strong", "weak")
    server = serve(
        {
            "router": {"backoff_base_s": 0.0},
            "deployments": [
                deployment(upstream, "sharp-dep", price={"input": 0.1, "output": 0.1}),
                deployment(upstream, "dull-dep", price={"input": 5.0, "output": 15.0}),
            ],
            "models": {
                "auto": {
                    "strategy": "learned",
                    "options": {
                        "artifact": str(folder),
                        "mapping": {sharp_tier: ["sharp-dep"], dull_tier: ["dull-dep"]},
                        "preset": "best",
                    },
                }
            },
        }
    )
    client = server.client()
    for _, prompt in _prompts(12, 99):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": prompt}])
    served = [r["deployment"] for r in server.records()]
    assert len(served) == 12
    assert served.count("sharp-dep") >= 11, served


def test_a_router_without_costs_warns_at_start_up(
    tmp_path: Path, upstream: Any, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import deployment

    rng = np.random.default_rng(7)
    rows = [
        {"prompt": p, "scores": {m: int(rng.random() < 0.5) for m in ("a", "b", "c")}}
        for _, p in _prompts(90, 8)
    ]
    artifact = _train(_write(tmp_path / "free.jsonl", rows))
    folder = artifact.save(tmp_path / "router")
    free = {"input": 0.0, "output": 0.0}
    with caplog.at_level(logging.WARNING, logger="pointsman.learning"):
        serve(
            {
                "deployments": [
                    deployment(upstream, "a-dep", price=free),
                    deployment(upstream, "b-dep", price={"input": 1.0, "output": 1.0}),
                ],
                "models": {
                    "auto": {
                        "strategy": "learned",
                        "options": {"artifact": str(folder), "mapping": {"a": ["a-dep"], "b": ["b-dep"]}},
                    }
                },
            }
        )
    messages = [r.message for r in caplog.records if r.message.startswith("learned router")]
    # `b` is priced by its deployment; `a` has no cost anywhere (`c` is not mapped).
    assert messages and "for a;" in messages[0]


def test_eval_reports_two_model_cost_in_the_dollars_serving_weighs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = better_and_cheaper(tmp_path / "two.jsonl")
    folder = _train(path).save(tmp_path / "router")
    assert learning_main(["eval", str(path), "--router", str(folder), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["datasets"]
    assert report["cost_unit"] == "$"
    op = report["operating_point"]
    # The default knob keeps (nearly) every call on the better, cheaper model: no "9564x".
    assert op["calls"]["sharp"] >= 0.95
    assert op["cost_ratio"] <= 1.05 and op["quality_ratio"] >= 0.97
    router = report["routers"][0]
    assert router["cost_to_95"] is not None and router["cost_to_95"] <= 1.05


def test_calibrate_takes_a_dollar_cost_share_for_a_two_model_router(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(11)
    rows = []
    for topic, prompt in _prompts(400, 12):
        hard = topic in ("maths", "code")
        rows.append(
            {
                "prompt": prompt,
                "scores": {
                    "cheap": int(rng.random() < (0.3 if hard else 0.9)),
                    "dear": int(rng.random() < 0.9),
                },
                "costs": {"cheap": 0.001, "dear": 0.01},
            }
        )
    artifact = _train(_write(tmp_path / "two.jsonl", rows))
    folder = artifact.save(tmp_path / "router")
    assert learning_main(["calibrate", "--router", str(folder), "--cost-share", "0.6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "lambda" in result
    assert result["expected"]["cost_ratio_upper"] <= 0.6
    # The strong share is still reported, as a view.
    assert 0.0 < result["expected"]["strong_share"] < 1.0


def test_a_threshold_router_never_passes_over_a_strong_tier_that_is_cheaper() -> None:
    artifact = RouterArtifact.load("default")  # threshold rule: trained before the cost model
    assert artifact.decision == "threshold"
    weak, strong = artifact.models
    text = "What is the capital of France?"
    knob = artifact.resolve_knob(threshold=0.9)  # far above any gain: always weak, as priced
    assert artifact.decide(text, knob).model == weak
    gain = artifact.decide(text, knob).scores["strong_gain"]
    assert gain > 0
    # Deployed so that the strong tier is the cheaper one: predicted better and cheaper wins.
    swapped = {strong: (0.1, 0.1), weak: (5.0, 15.0)}
    assert artifact.decide(text, knob, prices=swapped).model == strong


def test_per_call_costs_with_token_counts_become_per_token_prices(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    true = {"mini": (0.15, 0.6), "maxi": (2.5, 10.0)}
    rows = []
    for _, prompt in _prompts(200, 14):
        tokens_in = -(-len(prompt) // 4)
        out = {m: int(rng.integers(50, 400)) for m in true}
        rows.append(
            {
                "prompt": prompt,
                "scores": {"mini": int(rng.random() < 0.6), "maxi": int(rng.random() < 0.8)},
                "costs": {m: (tokens_in * p[0] + out[m] * p[1]) / 1e6 for m, p in true.items()},
                "output_tokens": out,
            }
        )
    artifact = _train(_write(tmp_path / "tokens.jsonl", rows))
    assert artifact.call_costs == {}
    for model, (pin, pout) in true.items():
        assert artifact.prices[model][1] == pytest.approx(pout, rel=0.02)
        assert artifact.prices[model][0] == pytest.approx(pin, rel=0.25, abs=0.05)


def test_eval_never_reads_a_strong_share_as_dollars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"mistralai/Mixtral-8x7B-Instruct-v0.1": [0.6, 0.6], "gpt-4-1106-preview": [10, 30]})
    )
    assert learning_main(["eval", "gsm8k", "--prices", str(prices), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["datasets"]
    assert report["cost_unit"] == "$"
    for row in report["routers"] + report["references"]:
        for key in ("cost_to_95", "cost_to_100"):
            # Multiples of the best single model's dollars: never thousands (issue: "9564x").
            assert row[key] is None or row[key] <= 1.0 + 1e-9, (row["name"], key, row[key])
    oracle = next(r for r in report["references"] if r["name"] == "oracle")
    assert oracle["cost_to_100"] < 0.5
