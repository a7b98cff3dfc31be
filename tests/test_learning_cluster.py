"""The cluster prior: prompts of one kind share the mean outcomes of their cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointsman.learning.artifact import RouterArtifact
from pointsman.learning.encoders import TfidfEncoder
from pointsman.learning.predictors import ClusterPredictor, Features
from pointsman.learning.training import cluster_candidate, encode


def _dense(rows: list[list[float]]) -> Features:
    return Features(dense={"emb": np.array(rows, dtype=np.float32)})


def test_each_cluster_predicts_its_own_mean_shrunk_toward_the_overall_mean() -> None:
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 0, 0, 1])
    quality = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    prior = ClusterPredictor.from_labels("emb", centroids, labels, quality, strength=2.0)
    # Overall mean (0.75, 0.5); cluster 0: (3 + 1.5) / 5, (1 + 1) / 5; cluster 1: (0 + 1.5) / 3, (1 + 1) / 3.
    assert np.allclose(prior.table, [[0.9, 0.4], [0.5, 2 / 3]])
    pred = prior.predict(_dense([[5.0, 1.0], [0.1, 0.3]]))
    assert np.allclose(pred, [[0.9, 0.4], [0.5, 2 / 3]])


def test_without_shrinkage_a_cluster_is_its_plain_mean_and_length_does_not_matter() -> None:
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]])
    prior = ClusterPredictor.from_labels(
        "emb", centroids, np.array([0, 1, 1]), np.array([[1.0], [0.0], [1.0]]), strength=0.0
    )
    assert np.allclose(prior.predict(_dense([[0.2, 0.1], [200.0, 100.0], [0.0, 3.0]])), [[1.0], [1.0], [0.5]])


def test_trained_on_two_kinds_of_prompt_it_tells_them_apart_on_a_sparse_encoder(tmp_path: Path) -> None:
    code = [f"Write a python function to sort list number {i}." for i in range(20)]
    logic = [f"Q: There are {i} houses in a row; who owns the zebra?" for i in range(20)]
    prompts = code + logic
    # Model a answers code, model b answers logic puzzles.
    quality = np.array([[1.0, 0.0]] * 20 + [[0.0, 1.0]] * 20)
    tfidf = TfidfEncoder.fit(prompts)
    feats = encode({"tfidf": tfidf}, prompts)
    prior = cluster_candidate("cluster2(tfidf)", "tfidf", 2, strength=0.0).fit(
        feats, quality, np.arange(len(prompts)), None
    )
    unseen = ["Write a python function to reverse a string.", "Q: There are 3 cats; who owns the fish?"]
    assert np.allclose(prior.predict(encode({"tfidf": tfidf}, unseen)), [[1.0, 0.0], [0.0, 1.0]])

    artifact = RouterArtifact(
        kind="multi_model",
        models=["a", "b"],
        encoders={"tfidf": tfidf},
        predictor=prior,
        prices={"a": (1.0, 1.0), "b": (1.0, 1.0)},
        knob={"lambda": 0.0},
    )
    artifact.save(tmp_path / "r")
    again = RouterArtifact.load(tmp_path / "r")
    assert np.array_equal(artifact.predict(prompts + unseen), again.predict(prompts + unseen))
    assert [again.decide(t, 0.0).model for t in unseen] == ["a", "b"]
