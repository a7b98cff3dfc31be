"""Strategies that need no model of the request: a fixed order, or weighted random."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from pointsman.strategies.base import Ranking, Strategy

if TYPE_CHECKING:
    from pointsman.config import Deployment
    from pointsman.signals import Signals


class OrderedStrategy(Strategy):
    """The route's deployments in the order written: the first is primary, the rest fallbacks."""

    name = "ordered"

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        return Ranking([d.name for d in candidates], "order")


class WeightedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weights: dict[str, float] = Field(default_factory=dict)
    seed: int | None = None


class WeightedStrategy(Strategy):
    """Primary drawn at random in proportion to its weight; fallbacks drawn the same way from
    the rest. Deployments without a weight get 1."""

    name = "weighted"
    Options = WeightedOptions
    options: WeightedOptions

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._random = random.Random(self.options.seed)

    def referenced(self) -> set[str]:
        return set(self.options.weights)

    def check(self, path: str) -> list[str]:
        problems = self.check_names(f"{path}.weights", list(self.options.weights), keyed=True)
        problems += [
            f"{path}.weights.{name}: weight must be positive, got {w}"
            for name, w in self.options.weights.items()
            if w <= 0
        ]
        return problems

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        weights = self.options.weights
        names = [d.name for d in candidates]
        total = sum(weights.get(n, 1.0) for n in names) or 1.0
        scores = {n: weights.get(n, 1.0) / total for n in names}
        return Ranking(weighted_shuffle(names, weights, self._random), "weighted_draw", scores)


def weighted_shuffle(names: list[str], weights: dict[str, float], rng: random.Random) -> list[str]:
    """A random order in which each name leads in proportion to its weight (default 1).
    Efraimidis-Spirakis: sorting by u^(1/w) is a weighted shuffle in one pass."""
    return sorted(names, key=lambda n: rng.random() ** (1.0 / weights.get(n, 1.0)), reverse=True)
