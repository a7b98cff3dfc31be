"""The one cost-quality knob: a strong-gain threshold (two models) or a cost weight lambda
(many models), set from a target the user states rather than by hand.

Tables of what each knob value does (strong share, cost and quality as ratios of the best
single model) are computed from held-out predictions when a router is trained, stored in the
artifact, and read back to turn a target into a knob without touching data again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pointsman.learning import metrics

SHARES = np.linspace(0.0, 1.0, 101)
LAMBDAS = np.concatenate([[0.0], np.logspace(-3, 1.5, 91)])


class CalibrationError(ValueError):
    """A target that cannot be met or does not apply to this kind of router."""


@dataclass
class Target:
    """Exactly one of: `strong_share` (two models: at most this share of calls to the strong
    model), `cost_share` (many models: at most this share of the best single model's cost),
    `quality` (either: keep this share of the best single model's quality at least cost)."""

    strong_share: float | None = None
    cost_share: float | None = None
    quality: float | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.strong_share, self.cost_share, self.quality) if v is not None]
        if len(given) != 1:
            raise CalibrationError("give exactly one target: strong_share, cost_share or quality")
        if not 0.0 <= given[0] <= 1.5:
            raise CalibrationError(f"target must be a share between 0 and 1, got {given[0]}")

    def describe(self) -> str:
        if self.strong_share is not None:
            return f"at most {self.strong_share:.0%} of calls to the strong model"
        if self.cost_share is not None:
            return f"at most {self.cost_share:.0%} of the best single model's cost"
        return f"keep {self.quality:.0%} of the best single model's quality at least cost"


@dataclass(frozen=True)
class Knob:
    """The knob's value, and per-route values for routers with routes (a route without its
    own value uses `value`)."""

    value: float
    routes: dict[str, float] = field(default_factory=dict)

    def for_route(self, route: str | None) -> float:
        return self.routes.get(route, self.value) if route is not None else self.value

    def describe(self) -> str:
        if not self.routes:
            return f"{self.value:.4g}"
        return ", ".join(f"{r} {v:.4g}" for r, v in self.routes.items())


def two_model_table(score: np.ndarray, quality: np.ndarray) -> dict[str, list[float]]:
    """For each strong share 0..100%: the threshold that gives it, the quality kept (as a ratio
    of the better single model) and PGR. `quality` columns are (weak, strong)."""
    curve = metrics.threshold_curve(score, quality)
    best = float(quality.mean(axis=0).max())
    kept = np.interp(SHARES, curve.cost, curve.quality) / best
    pgr = np.interp(SHARES, curve.cost, metrics.pgr(curve, quality))
    ordered = np.sort(score)[::-1]
    thresholds = []
    for share in SHARES:
        k = int(round(share * len(score)))
        if k <= 0:
            thresholds.append(float(ordered[0]) + 1e-9)
        elif k >= len(score):
            thresholds.append(float(ordered[-1]) - 1e-9)
        else:
            # Midway between the last score sent strong and the first sent weak.
            thresholds.append(float((ordered[k - 1] + ordered[k]) / 2))
    return {
        "share": SHARES.tolist(),
        "threshold": thresholds,
        "quality_ratio": kept.tolist(),
        "pgr": pgr.tolist(),
    }


def multi_model_table(predicted: np.ndarray, cost: np.ndarray, quality: np.ndarray) -> dict[str, list[float]]:
    """For each lambda of a fixed grid: mean cost and quality of argmax(pred - lambda x cost /
    cost_ref) as ratios of the best single model's."""
    cost_ref = float(cost.max(axis=1).mean())
    singles_cost, singles_quality = metrics.single_points(cost, quality)
    b = int(np.argmax(singles_quality))
    rows = np.arange(len(predicted))
    cost_ratio, quality_ratio = [], []
    for lam in LAMBDAS:
        pick = choose(predicted, cost / cost_ref, lam)
        cost_ratio.append(float(cost[rows, pick].mean() / singles_cost[b]))
        quality_ratio.append(float(quality[rows, pick].mean() / singles_quality[b]))
    return {"lambda": LAMBDAS.tolist(), "cost_ratio": cost_ratio, "quality_ratio": quality_ratio}


def choose(predicted: np.ndarray, relative_cost: np.ndarray, lam: float) -> np.ndarray:
    """argmax over models of predicted quality minus lambda x relative cost; ties go to the
    cheaper model."""
    utility = predicted - lam * relative_cost
    # Break exact ties toward cheaper: subtract a vanishing multiple of cost.
    picks: np.ndarray = np.argmax(utility - 1e-12 * relative_cost, axis=1)
    return picks


def knob_for(kind: str, table: dict[str, list[float]], target: Target) -> dict[str, Any]:
    """The knob that meets `target` on the table's data, with what it is expected to give."""
    if kind == "two_model":
        if target.cost_share is not None:
            raise CalibrationError("cost_share applies to many-model routers; use strong_share")
        shares = np.array(table["share"])
        if target.strong_share is not None:
            k = int(np.searchsorted(shares, target.strong_share + 1e-9) - 1)
        else:
            kept = np.array(table["quality_ratio"])
            hit = np.flatnonzero(kept >= target.quality - 1e-12)  # type: ignore[operator]
            if not len(hit):
                raise CalibrationError(
                    f"no threshold keeps {target.quality:.0%} of the best model's quality "
                    f"(at most {kept.max():.1%})"
                )
            k = int(hit[0])
        k = max(k, 0)
        return {
            "threshold": table["threshold"][k],
            "expected": {
                "strong_share": table["share"][k],
                "quality_ratio": table["quality_ratio"][k],
                "pgr": table["pgr"][k],
            },
        }
    if target.strong_share is not None:
        raise CalibrationError("strong_share applies to two-model routers; use cost_share")
    lambdas = np.array(table["lambda"])
    cost = np.array(table["cost_ratio"])
    kept = np.array(table["quality_ratio"])
    if target.quality is not None:
        ok = np.flatnonzero(kept >= target.quality - 1e-12)
        if not len(ok):
            raise CalibrationError(
                f"no lambda keeps {target.quality:.0%} of the best model's quality (at most {kept.max():.1%})"
            )
        # Least cost among the lambdas that keep enough quality.
        k = int(ok[np.argmin(cost[ok])])
    else:
        ok = np.flatnonzero(cost <= target.cost_share + 1e-12)  # type: ignore[operator]
        if not len(ok):
            raise CalibrationError(
                f"no lambda costs at most {target.cost_share:.0%} of the best model "
                f"(at least {cost.min():.1%})"
            )
        k = int(ok[np.argmax(kept[ok])])
    return {
        "lambda": float(lambdas[k]),
        "expected": {"cost_ratio": float(cost[k]), "quality_ratio": float(kept[k])},
    }
