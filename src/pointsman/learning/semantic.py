"""Semantic routes: named routes described by example utterances; a prompt goes to the route
whose utterances it is most similar to, or to none (the caller's default) when the best
similarity is under that route's threshold.

A route's score is the mean cosine similarity of the prompt to its `top_k` most similar
utterances. Thresholds are fitted on labelled examples: per route, the one that maximises F1
on a fitting part, reported on a held-out part it never saw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.learning.datasets import split_by_prompt
from pointsman.learning.encoders import CachedEncoder, Encoder, WordLlamaEncoder, build_encoder


@dataclass
class Route:
    name: str
    utterances: list[str]
    description: str = ""
    threshold: float | None = None

    def texts(self) -> list[str]:
        return self.utterances + ([self.description] if self.description else [])


@dataclass
class ThresholdReport:
    """Held-out results of fitted thresholds: accuracy counts an abstention on an unlabelled
    example as correct."""

    thresholds: dict[str, float]
    accuracy: float
    abstain_rate: float
    per_route: dict[str, dict[str, float]] = field(default_factory=dict)
    fit_rows: int = 0
    held_out_rows: int = 0


class SemanticRouter:
    def __init__(
        self,
        routes: Sequence[Route],
        encoder: Encoder | None = None,
        top_k: int = 5,
        default_threshold: float = 0.5,
    ) -> None:
        if not routes:
            raise ValueError("a semantic router needs at least one route")
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate route names in {names}")
        for r in routes:
            if not r.texts():
                raise ValueError(f"route {r.name!r} has no utterances or description")
        self.routes = list(routes)
        self.encoder: Encoder = encoder if encoder is not None else CachedEncoder(WordLlamaEncoder())
        self.top_k = top_k
        self.default_threshold = default_threshold
        texts, owner = [], []
        for i, r in enumerate(self.routes):
            for t in r.texts():
                texts.append(t)
                owner.append(i)
        self._index = _unit(self.encoder.encode(texts).astype(np.float32))
        self._owner = np.array(owner)

    def scores_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), routes) route scores."""
        q = _unit(self.encoder.encode(texts).astype(np.float32))
        sims = q @ self._index.T
        out = np.empty((len(texts), len(self.routes)))
        for j in range(len(self.routes)):
            own = sims[:, self._owner == j]
            k = min(self.top_k, own.shape[1])
            top = -np.partition(-own, k - 1, axis=1)[:, :k]
            out[:, j] = top.mean(axis=1)
        return out

    def scores(self, text: str) -> dict[str, float]:
        row = self.scores_batch([text])[0]
        return {r.name: float(s) for r, s in zip(self.routes, row, strict=True)}

    def threshold(self, j: int) -> float:
        t = self.routes[j].threshold
        return self.default_threshold if t is None else t

    def classify(self, text: str) -> tuple[str | None, float]:
        """The best route and its score, or (None, score) when under that route's threshold."""
        row = self.scores_batch([text])[0]
        j = int(np.argmax(row))
        score = float(row[j])
        return (self.routes[j].name if score >= self.threshold(j) else None), score

    def classify_batch(self, texts: Sequence[str]) -> list[tuple[str | None, float]]:
        rows = self.scores_batch(texts)
        out: list[tuple[str | None, float]] = []
        for row in rows:
            j = int(np.argmax(row))
            out.append((self.routes[j].name if row[j] >= self.threshold(j) else None, float(row[j])))
        return out

    def fit_thresholds(
        self,
        texts: Sequence[str],
        labels: Sequence[str | None],
        held_out: float = 0.3,
        seed: int = 0,
    ) -> ThresholdReport:
        """Fit each route's threshold on labelled examples (label None: belongs to no route,
        should abstain) and report on a held-out part split by prompt."""
        names = [r.name for r in self.routes]
        unknown = sorted({lbl for lbl in labels if lbl is not None and lbl not in names})
        if unknown:
            raise ValueError(f"labels name unknown routes: {', '.join(unknown)}")
        fit_idx, test_idx = split_by_prompt(list(texts), held_out, seed, "semantic")
        rows = self.scores_batch(texts)
        best = rows.argmax(axis=1)
        top = rows.max(axis=1)
        label_idx = np.array([names.index(lbl) if lbl is not None else -1 for lbl in labels])
        for j, route in enumerate(self.routes):
            route.threshold = _best_threshold(top[fit_idx], best[fit_idx], label_idx[fit_idx], j)
        thresholds = np.array([self.threshold(j) for j in range(len(self.routes))])
        predicted = np.where(top >= thresholds[best], best, -1)
        t = test_idx
        per_route: dict[str, dict[str, float]] = {}
        for j, name in enumerate(names):
            tp = int(((predicted[t] == j) & (label_idx[t] == j)).sum())
            fp = int(((predicted[t] == j) & (label_idx[t] != j)).sum())
            fn = int(((predicted[t] != j) & (label_idx[t] == j)).sum())
            per_route[name] = {
                "precision": tp / (tp + fp) if tp + fp else 0.0,
                "recall": tp / (tp + fn) if tp + fn else 0.0,
                "threshold": float(thresholds[j]),
            }
        return ThresholdReport(
            thresholds={n: float(v) for n, v in zip(names, thresholds, strict=True)},
            accuracy=float((predicted[t] == label_idx[t]).mean()) if len(t) else float("nan"),
            abstain_rate=float((predicted[t] == -1).mean()) if len(t) else float("nan"),
            per_route=per_route,
            fit_rows=len(fit_idx),
            held_out_rows=len(test_idx),
        )

    # ------------------------------------------------------------------ storage

    def to_dict(self) -> dict[str, Any]:
        inner = self.encoder.inner if isinstance(self.encoder, CachedEncoder) else self.encoder
        if inner.arrays():
            raise ValueError("save a semantic router with an encoder that has no fitted arrays")
        return {
            "format": "pointsman-semantic-routes",
            "version": 1,
            "encoder": inner.spec(),
            "top_k": self.top_k,
            "default_threshold": self.default_threshold,
            "routes": [
                {
                    "name": r.name,
                    "utterances": r.utterances,
                    "description": r.description,
                    "threshold": r.threshold,
                }
                for r in self.routes
            ],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    @classmethod
    def from_dict(cls, doc: dict[str, Any], encoder: Encoder | None = None) -> SemanticRouter:
        routes = [
            Route(r["name"], list(r.get("utterances", [])), r.get("description", ""), r.get("threshold"))
            for r in doc["routes"]
        ]
        if encoder is None and doc.get("encoder"):
            encoder = CachedEncoder(build_encoder(doc["encoder"]))
        return cls(routes, encoder, int(doc.get("top_k", 5)), float(doc.get("default_threshold", 0.5)))

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> SemanticRouter:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), encoder)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _best_threshold(top: np.ndarray, best: np.ndarray, label: np.ndarray, j: int) -> float | None:
    """The threshold on route j's score maximising F1 for route j (None: no evidence)."""
    mine = best == j
    positives = int((label == j).sum())
    if not mine.any() or positives == 0:
        return None
    scores = np.sort(np.unique(top[mine]))
    best_f1, best_t = -1.0, float(scores[0])
    for i, t in enumerate(scores):
        chosen = mine & (top >= t)
        tp = int((chosen & (label == j)).sum())
        fp = int((chosen & (label != j)).sum())
        f1 = 2 * tp / (2 * tp + fp + (positives - tp)) if tp else 0.0
        if f1 > best_f1:
            best_f1 = f1
            # Midway to the next lower score, so unseen prompts near the edge are treated alike.
            lower = float(scores[i - 1]) if i > 0 else float(t) - 0.02
            best_t = (float(t) + lower) / 2
    return best_t
