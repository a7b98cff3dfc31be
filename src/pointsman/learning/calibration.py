"""The one cost-quality knob: a strong-gain threshold (two models) or a cost weight lambda
(many models), set from a target the user states rather than by hand.

Tables of what each knob value does (strong share, cost and quality as ratios of the best
single model) are computed from out-of-fold predictions when a router is trained, stored in the
artifact, and read back to turn a target into a knob without touching data again.

Promises are made on a confidence bound, not on the table's mean: each knob value's quality
ratio also gets a one-sided 90% lower prediction bound (``quality_ratio_lower``) for the mean
over the next `HORIZON` (1,000) prompts drawn like the calibration ones, and its cost ratio the
matching upper bound (``cost_ratio_upper``). The bound is the mean minus sqrt(1 + n / HORIZON)
times the distance from the mean to the 10th percentile over 200 bootstrap resamples of the n
calibration prompts: the resamples measure the uncertainty of the calibration mean, the factor
adds that of a new batch of HORIZON prompts. A quality target picks the cheapest knob whose
lower bound reaches it, a cost target the best knob whose upper bound stays under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pointsman.learning import metrics

SHARES = np.linspace(0.0, 1.0, 101)
LAMBDAS = np.concatenate([[0.0], np.logspace(-3, 1.5, 91)])
# The promise's confidence: one-sided, from this many bootstrap resamples of the prompts.
CONFIDENCE = 0.90
RESAMPLES = 200
# The traffic a promise is made for: the mean over this many new prompts.
HORIZON = 1000


def _bounds(picked: np.ndarray, reference: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One-sided `CONFIDENCE` (lower, upper) prediction bounds of mean(picked[:, k]) /
    mean(reference) over `HORIZON` new rows, for each column k (see the module doc)."""
    n = len(reference)
    if n == 0:
        return np.zeros(picked.shape[1]), np.zeros(picked.shape[1])
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=RESAMPLES).astype(np.float64)
    ref = weights @ reference
    ratio = (weights @ picked) / np.where(ref > 0, ref, np.nan)[:, None]
    ratio = np.nan_to_num(ratio, nan=0.0)
    tail = (1.0 - CONFIDENCE) * 100
    mean = picked.mean(axis=0) / (reference.mean() or 1.0)
    widen = np.sqrt(1.0 + n / HORIZON)
    lower = mean - widen * (mean - np.percentile(ratio, tail, axis=0))
    upper = mean + widen * (np.percentile(ratio, 100 - tail, axis=0) - mean)
    return lower, upper


class CalibrationError(ValueError):
    """A target that cannot be met or does not apply to this kind of router."""


@dataclass
class Target:
    """Exactly one of: `strong_share` (two models: at most this share of calls to the strong
    model), `cost_share` (at most this share of the best single model's cost, in dollars where
    costs are known, else in calls), `quality` (keep this share of the best single model's
    quality at least cost)."""

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
    of the better single model, with its lower bound) and PGR. `quality` columns are (weak,
    strong)."""
    curve = metrics.threshold_curve(score, quality)
    best = float(quality.mean(axis=0).max())
    kept = np.interp(SHARES, curve.cost, curve.quality) / best
    pgr = np.interp(SHARES, curve.cost, metrics.pgr(curve, quality))
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    rank = np.empty(len(score), dtype=np.int64)
    rank[order] = np.arange(len(score))
    cut = np.round(SHARES * len(score)).astype(np.int64)
    strong = rank[:, None] < cut[None, :]
    picked = np.where(strong, quality[:, 1:2], quality[:, 0:1])
    lower, _ = _bounds(picked, quality[:, int(np.argmax(quality.mean(axis=0)))])
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
        "quality_ratio_lower": np.minimum(lower, kept).tolist(),
        "pgr": pgr.tolist(),
    }


def multi_model_table(
    predicted: np.ndarray,
    cost: np.ndarray,
    quality: np.ndarray,
    decide_cost: np.ndarray | None = None,
    cost_ref: float | None = None,
) -> dict[str, list[float]]:
    """For each lambda of a fixed grid: mean cost and quality of argmax(pred - lambda x
    decide_cost / cost_ref) as ratios of the best single model's, with their bounds (and, for
    two models, the share of calls to the second, strong, one). `decide_cost` is what the router
    will see when serving (its expected costs; default `cost`), `cost` what calls really cost."""
    decide = cost if decide_cost is None else decide_cost
    ref = float(decide.max(axis=1).mean()) if cost_ref is None else cost_ref
    ref = ref if ref > 0 else 1.0
    singles_cost, singles_quality = metrics.single_points(cost, quality)
    b = int(np.argmax(singles_quality))
    rows = np.arange(len(predicted))
    picks = np.column_stack([choose(predicted, decide / ref, lam) for lam in LAMBDAS])
    q_picked = quality[rows[:, None], picks]
    c_picked = cost[rows[:, None], picks]
    quality_ratio = q_picked.mean(axis=0) / (singles_quality[b] or 1.0)
    cost_ratio = c_picked.mean(axis=0) / (singles_cost[b] or 1.0)
    q_lower, _ = _bounds(q_picked, quality[:, b])
    _, c_upper = _bounds(c_picked, cost[:, b])
    table = {
        "lambda": LAMBDAS.tolist(),
        "cost_ratio": cost_ratio.tolist(),
        "quality_ratio": quality_ratio.tolist(),
        "quality_ratio_lower": np.minimum(q_lower, quality_ratio).tolist(),
        "cost_ratio_upper": np.maximum(c_upper, cost_ratio).tolist(),
    }
    if quality.shape[1] == 2:
        table["strong_share"] = (picks == 1).mean(axis=0).tolist()
    return table


def choose(predicted: np.ndarray, relative_cost: np.ndarray, lam: float) -> np.ndarray:
    """argmax over models of predicted quality minus lambda x relative cost; ties go to the
    cheaper model."""
    utility = predicted - lam * relative_cost
    # Break exact ties toward cheaper: subtract a vanishing multiple of cost.
    picks: np.ndarray = np.argmax(utility - 1e-12 * relative_cost, axis=1)
    return picks


def knob_for(rule: str, table: dict[str, Any], target: Target) -> dict[str, Any]:
    """The knob that meets `target` on the table's data, with what it is expected to give.

    `rule` is the artifact's decision rule (``threshold`` or ``utility``; the kinds
    ``two_model``/``multi_model`` are read as those). Quality targets are met on the table's
    lower bound and cost targets on its upper bound where the table has them (see the module
    doc); tables written before bounds existed use their means.
    """
    if rule in ("two_model", "threshold"):
        shares = np.array(table["share"])
        kept = np.array(table["quality_ratio"])
        lower = np.array(table.get("quality_ratio_lower", table["quality_ratio"]))
        # Without costs the cost axis is the strong-call share: a cost share is a strong share.
        limit = target.strong_share if target.strong_share is not None else target.cost_share
        if limit is not None:
            k = int(np.searchsorted(shares, limit + 1e-9) - 1)
        else:
            hit = np.flatnonzero(lower >= target.quality - 1e-12)  # type: ignore[operator]
            if not len(hit):
                raise CalibrationError(
                    f"no threshold keeps {target.quality:.0%} of the best model's quality at "
                    f"{CONFIDENCE:.0%} confidence (at most {lower.max():.1%})"
                )
            k = int(hit[0])
        k = max(k, 0)
        expected = {
            "strong_share": table["share"][k],
            "quality_ratio": float(kept[k]),
            "pgr": table["pgr"][k],
        }
        if "quality_ratio_lower" in table:  # tables written before the bounds have none
            expected["quality_ratio_lower"] = float(lower[k])
        return {"threshold": table["threshold"][k], "expected": expected}
    lambdas = np.array(table["lambda"])
    cost = np.array(table["cost_ratio"])
    kept = np.array(table["quality_ratio"])
    lower = np.array(table.get("quality_ratio_lower", table["quality_ratio"]))
    upper = np.array(table.get("cost_ratio_upper", table["cost_ratio"]))
    share = np.array(table["strong_share"]) if "strong_share" in table else None
    if target.quality is not None:
        ok = np.flatnonzero(lower >= target.quality - 1e-12)
        if not len(ok):
            raise CalibrationError(
                f"no lambda keeps {target.quality:.0%} of the best model's quality at "
                f"{CONFIDENCE:.0%} confidence (at most {lower.max():.1%})"
            )
        # Least cost among the lambdas that keep enough quality.
        k = int(ok[np.argmin(cost[ok])])
    elif target.strong_share is not None:
        if share is None:
            raise CalibrationError("strong_share applies to two-model routers; use cost_share or quality")
        ok = np.flatnonzero(share <= target.strong_share + 1e-9)
        if not len(ok):
            raise CalibrationError(f"no lambda sends at most {target.strong_share:.0%} of calls to strong")
        k = int(ok[np.argmax(kept[ok])])
    else:
        ok = np.flatnonzero(upper <= target.cost_share + 1e-12)  # type: ignore[operator]
        if not len(ok):
            raise CalibrationError(
                f"no lambda costs at most {target.cost_share:.0%} of the best model at "
                f"{CONFIDENCE:.0%} confidence (at least {upper.min():.1%})"
            )
        k = int(ok[np.argmax(kept[ok])])
    expected = {"cost_ratio": float(cost[k]), "quality_ratio": float(kept[k])}
    if "quality_ratio_lower" in table:  # tables written before the bounds have none
        expected.update({"cost_ratio_upper": float(upper[k]), "quality_ratio_lower": float(lower[k])})
    if share is not None:
        expected["strong_share"] = float(share[k])
    return {"lambda": float(lambdas[k]), "expected": expected}
