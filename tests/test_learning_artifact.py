"""Router artifacts: trained, saved as JSON + npz, reloaded, and deciding exactly the same."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pointsman.learning.artifact import ArtifactError, RouterArtifact
from pointsman.learning.calibration import CalibrationError, Target
from pointsman.learning.datasets import load_bundled, standard_splits
from pointsman.learning.predictors import EnsemblePredictor
from pointsman.learning.training import (
    default_candidates,
    encode,
    fit_encoders,
    train_router,
    trees_candidate,
)


@pytest.fixture(scope="module")
def small() -> tuple:
    """300 GSM8K training prompts and 60 held-out ones."""
    splits = standard_splits(load_bundled("gsm8k"))
    return splits.train.subset(np.arange(300)), splits.test.subset(np.arange(60))


@pytest.fixture(scope="module")
def every_kind(small: tuple) -> RouterArtifact:
    """An artifact whose predictor averages one learner of every kind."""
    train, _ = small
    data = train.ordered_two()
    encoders = fit_encoders(data.prompts, ["wordllama", "signals", "tfidf"])
    feats = encode(encoders, data.prompts)
    idx = np.arange(len(data))
    chosen = {
        "linear(tfidf+signals+wordllama)",
        "knn25(wordllama)",
        "trees(signals)",
        "mlp(wordllama+signals)",
        "cluster10(tfidf)",
        "cluster10(wordllama)",
    }
    members = [
        c.fit(feats, data.quality, idx, None) for c in default_candidates(list(encoders)) if c.name in chosen
    ]
    assert len(members) == len(chosen)
    return RouterArtifact(
        kind="two_model",
        models=data.models,
        encoders=encoders,
        predictor=EnsemblePredictor(members, [1] * len(members)),
        knob={"threshold": 0.05},
    )


def test_every_predictor_kind_reloads_and_predicts_identically(
    every_kind: RouterArtifact, small: tuple, tmp_path: Path
) -> None:
    _, test = small
    every_kind.save(tmp_path / "r")
    again = RouterArtifact.load(tmp_path / "r")
    before = every_kind.predict(test.prompts)
    after = again.predict(test.prompts)
    assert np.array_equal(before, after)
    for text in test.prompts[:20]:
        a, b = every_kind.decide(text, 0.05), again.decide(text, 0.05)
        assert (a.model, a.reason, a.predicted) == (b.model, b.reason, b.predicted)


def test_artifact_is_json_and_plain_arrays_never_pickle(every_kind: RouterArtifact, tmp_path: Path) -> None:
    folder = every_kind.save(tmp_path / "r")
    doc = json.loads((folder / "router.json").read_text())
    assert doc["format"] == "pointsman-router" and doc["kind"] == "two_model"
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    with zipfile.ZipFile(folder / "arrays.npz") as z:
        assert all(name.endswith(".npy") for name in z.namelist())


def test_trained_router_reloads_with_the_same_decisions(small: tuple, tmp_path: Path) -> None:
    train, test = small
    artifact, selection = train_router([train], candidates=["linear(tfidf)", "knn25(wordllama)"], folds=3)
    assert selection.table[-1]["candidate"].startswith("ensemble:")
    artifact.save(tmp_path / "trained")
    again = RouterArtifact.load(tmp_path / "trained")
    assert again.knob == artifact.knob and again.calibration == artifact.calibration
    knob = artifact.resolve_knob()
    assert np.array_equal(artifact.decide_batch(test.prompts, knob), again.decide_batch(test.prompts, knob))


def test_exported_trees_match_scikit_learn_on_unseen_rows(small: tuple) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    train, test = small
    data = train.ordered_two()
    encoders = fit_encoders(data.prompts, ["signals"])
    feats = encode(encoders, data.prompts)
    exported = trees_candidate("t", ["signals"]).fit(feats, data.quality, np.arange(len(data)), None)
    reference = HistGradientBoostingRegressor(
        max_depth=3,
        learning_rate=0.1,
        max_iter=100,
        min_samples_leaf=40,
        early_stopping=False,
        random_state=0,
    ).fit(feats.dense["signals"], data.quality[:, 1])
    unseen = encode(encoders, test.prompts)
    assert np.allclose(exported.raw(unseen)[:, 1], reference.predict(unseen.dense["signals"]), atol=1e-9)


@pytest.mark.parametrize("dataset", ["mmlu", "gsm8k"])
def test_a_strong_share_target_holds_on_held_out_prompts(dataset: str) -> None:
    artifact = RouterArtifact.load("default")
    knob = artifact.resolve_knob(target=Target(strong_share=0.3))
    held_out = standard_splits(load_bundled(dataset)).test
    strong = artifact.decide_batch(held_out.prompts, knob)
    assert 0.2 <= float(strong.mean()) <= 0.4


def test_targets_that_do_not_fit_the_router_are_refused() -> None:
    artifact = RouterArtifact.load("default")
    # The shipped two-model router predates the cost model: its cost axis is the strong share,
    # so a cost share is read as one.
    by_cost = artifact.resolve_knob(target=Target(cost_share=0.3))
    assert by_cost.value == artifact.resolve_knob(target=Target(strong_share=0.3)).value
    with pytest.raises(ArtifactError, match="takes a threshold"):
        artifact.resolve_knob(lam=0.5)
    with pytest.raises(CalibrationError, match="exactly one target"):
        Target(strong_share=0.3, quality=0.9)


def test_many_model_router_trades_quality_for_cost_with_lambda() -> None:
    artifact = RouterArtifact.load("llmrouter-9")
    text = "Write a python function to check whether a number is a perfect square."
    free = artifact.decide(text, 0.0)
    assert free.reason == "best_quality"
    assert free.model == max(free.predicted, key=free.predicted.get)
    stingy = artifact.decide(text, 1e6)
    assert stingy.model == min(artifact.prices, key=lambda m: artifact.prices[m][0])  # gemma, $0.10


def test_unknown_artifacts_and_versions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a router folder"):
        RouterArtifact.load(tmp_path / "nothing")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "router.json").write_text(json.dumps({"format": "pointsman-router", "version": 99}))
    with pytest.raises(ArtifactError, match="version 99"):
        RouterArtifact.load(tmp_path / "old")


def test_routed_router_gives_each_route_its_own_expert_and_knob(tmp_path: Path) -> None:
    maths = standard_splits(load_bundled("gsm8k")).train.subset(np.arange(240))
    exams = standard_splits(load_bundled("mmlu")).train.subset(np.arange(0, 4800, 20))
    artifact, _ = train_router([maths, exams], candidates=["linear(tfidf)"], folds=2, routes=True)
    assert artifact.routes == ["gsm8k", "mmlu"]
    assert artifact.meta["routes"]["gate_accuracy"] > 0.95
    knob = artifact.resolve_knob(target=Target(strong_share=0.3))
    assert set(knob.routes) == {"gsm8k", "mmlu"}
    word_problem = "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?"
    choice = artifact.decide(word_problem, knob)
    assert choice.route == "gsm8k"
    # Trained with the bundled sets' list prices, the router weighs dollars: its knob is lambda.
    assert artifact.decision == "utility"
    assert choice.scores["lambda"] == knob.routes["gsm8k"]
    artifact.save(tmp_path / "routed")
    again = RouterArtifact.load(tmp_path / "routed")
    prompts = maths.prompts[:30] + exams.prompts[:30]
    assert np.array_equal(artifact.decide_batch(prompts, knob), again.decide_batch(prompts, knob))
    assert again.predict_with_routes(prompts)[1] == artifact.predict_with_routes(prompts)[1]
