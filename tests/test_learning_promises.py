"""Knobs that keep their promises: presets are set on out-of-fold predictions at a stated
confidence bound, so what they promise holds on prompts the router never saw; calibrating on
the rows a router was trained on says so loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pointsman.learning.artifact import RouterArtifact
from pointsman.learning.commands import main as learning_main
from pointsman.learning.datasets import load_bundled, standard_splits
from pointsman.learning.evaluation import evaluate
from pointsman.learning.training import train_router


@pytest.fixture(scope="module")
def gsm8k_router() -> RouterArtifact:
    splits = standard_splits(load_bundled("gsm8k"))
    artifact, _ = train_router([splits.train], encoders=["tfidf"], candidates=["linear(tfidf)"], folds=5)
    return artifact


def test_every_preset_keeps_its_promise_on_held_out_prompts(gsm8k_router: RouterArtifact) -> None:
    test = standard_splits(load_bundled("gsm8k")).test
    assert {"best", "quality", "balanced", "economy"} <= set(gsm8k_router.presets)
    for name, preset in gsm8k_router.presets.items():
        promised = preset["expected"]["quality_ratio_lower"]
        assert promised >= preset["target"]["quality"] - 1e-9
        gsm8k_router.knob = preset
        delivered = evaluate(gsm8k_router, test)[0].operating_point["quality_ratio"]
        assert delivered >= preset["target"]["quality"], (name, delivered)


def test_calibrating_on_training_rows_warns_loudly(
    gsm8k_router: RouterArtifact, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = gsm8k_router.save(tmp_path / "router")
    args = ["calibrate", "--router", str(folder), "--quality", "0.9", "--data", "gsm8k", "--split", "train"]
    assert learning_main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    assert "calibrating on rows the router was trained on (gsm8k, train rows)" in captured.err
    result = json.loads(captured.out)
    assert any("in-sample" in w for w in result["warnings"])
    # The held-out rows are fine, and the bound's level is stated.
    assert learning_main([*args[:-1], "test", "--json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["warnings"] == []
    assert "one-sided 90%" in clean["confidence"]


def test_nested_calibration_trains_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "router"
    args = ["train", "gsm8k", "--out", str(out), "--encoders", "tfidf", "--candidates", "linear(tfidf)"]
    assert learning_main([*args, "--folds", "3", "--nested-calibration", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["presets"]
    artifact = RouterArtifact.load(out)
    assert artifact.meta["calibration"].startswith("nested out-of-fold predictions")
    assert "balanced" in artifact.presets
