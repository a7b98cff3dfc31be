"""The task signal: a classifier of the prompt's task, trained from task labels in the
outcome data, with per-task outcome priors; compared by cross-validation like every learner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointsman.learning.artifact import RouterArtifact
from pointsman.learning.datasets import OutcomeData, standard_splits
from pointsman.learning.training import train_router

VOCAB = {
    "algebra": "solve for x equation polynomial root factor quadratic coefficient",
    "poetry": "write a verse stanza rhyme metaphor sonnet imagery",
    "sql": "select rows join table where group by index query",
}
# Who wins each task: the winner depends on the task alone.
SKILL = {"algebra": (0.9, 0.2), "poetry": (0.2, 0.9), "sql": (0.85, 0.3)}


def task_data(n: int = 600, seed: int = 0) -> OutcomeData:
    rng = np.random.default_rng(seed)
    prompts, groups, quality = [], [], []
    for i in range(n):
        task = list(VOCAB)[i % 3]
        words = list(rng.choice(VOCAB[task].split(), size=4)) + list(
            rng.choice("the a please about some this very kind of".split(), size=4)
        )
        rng.shuffle(words)
        prompts.append(" ".join(words) + f" ({i})")
        groups.append(task)
        quality.append([float(rng.random() < p) for p in SKILL[task]])
    q = np.array(quality)
    cost = np.tile([0.001, 0.001], (n, 1))
    return OutcomeData("tasks", prompts, ["left", "right"], q, cost, groups=groups, cost_unit="$")


def test_a_task_dependent_winner_is_learned_from_task_labels(tmp_path: Path) -> None:
    data = task_data()
    splits = standard_splits(data)
    artifact, selection = train_router([splits.train], encoders=["tfidf"], candidates=["task"], folds=3)
    assert selection.chosen == ["task(tfidf)"]
    artifact = RouterArtifact.load(artifact.save(tmp_path / "router"))
    picks = artifact.decide_batch(splits.test.prompts, 0.0)
    left, right = artifact.models.index("left"), artifact.models.index("right")
    want = np.array([left if g in ("algebra", "sql") else right for g in splits.test.groups or []])
    assert float((picks == want).mean()) >= 0.95


def test_the_task_signal_is_one_candidate_among_the_others() -> None:
    splits = standard_splits(task_data(seed=1))
    _, selection = train_router(
        [splits.train], encoders=["tfidf"], candidates=["linear(tfidf)", "task"], folds=3
    )
    compared = [row["candidate"] for row in selection.table]
    assert "task(tfidf)" in compared and "linear(tfidf)" in compared
    assert selection.chosen  # whichever won cross-validation
