"""Cost-quality curves of routers and the numbers read off them.

Two models (columns ordered weak, strong): a router scores each prompt; sending the k highest
scores to the strong model gives one point per k, the deployment curve. Tied scores are averaged
over their order (the expected curve under random tie-breaking), so a router that scores every
prompt the same traces the random line exactly. APGR is the area under performance-gap-recovered
against the strong-call share; CPT(x) is the smallest strong share that recovers x of the gap.

Many models: a router predicts each model's quality and picks argmax(quality - lambda x cost);
sweeping lambda from infinity to 0 gives the curve exactly (every point where some prompt
changes model). Reported beside the best single model: cost to reach 95% and 100% of its
quality, quality at its cost, and the area under the non-decreasing convex hull over the span of
single-model costs (AIQ in RouterBench's terms).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Curve:
    """Points of mean cost (x) against mean quality (y), in sweep order (x non-decreasing)."""

    cost: np.ndarray
    quality: np.ndarray

    def as_lists(self) -> dict[str, list[float]]:
        return {"cost": self.cost.tolist(), "quality": self.quality.tolist()}


# --------------------------------------------------------------------------- two models


def threshold_curve(score: np.ndarray, quality: np.ndarray) -> Curve:
    """Deployment curve of a two-model router: point k sends the k highest scores to the strong
    model (column 1); x is the strong-call share k/n. Ties are averaged over their order."""
    n = len(score)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    s = np.asarray(score, dtype=np.float64)[order]
    gain = (quality[order, 1] - quality[order, 0]) / n
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    # Within a block of tied scores, interpolate linearly between the block's end points.
    starts = np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1])
    ends = np.concatenate([starts[1:], [n]])
    for a, b in zip(starts, ends, strict=True):
        if b - a > 1:
            cum[a : b + 1] = np.linspace(cum[a], cum[b], b - a + 1)
    base = quality[:, 0].mean()
    return Curve(np.arange(n + 1) / n, base + cum)


def oracle_scores(quality: np.ndarray) -> np.ndarray:
    """Scores of the two-model oracle: strong only where it wins, weak where it wins."""
    gain: np.ndarray = quality[:, 1] - quality[:, 0]
    return gain


def pgr(curve: Curve, quality: np.ndarray) -> np.ndarray:
    weak, strong = quality[:, 0].mean(), quality[:, 1].mean()
    gap = strong - weak
    if gap <= 0:
        return np.zeros_like(curve.quality)
    recovered: np.ndarray = (curve.quality - weak) / gap
    return recovered


def apgr(curve: Curve, quality: np.ndarray) -> float:
    """Average performance gap recovered: the area under PGR over strong share 0..1."""
    return float(np.trapezoid(pgr(curve, quality), curve.cost))


def cpt(curve: Curve, quality: np.ndarray, target: float) -> float | None:
    """Call-performance threshold: the least strong-call share whose PGR reaches `target`
    (linear between points), or None if never reached."""
    return _first_reaching(curve.cost, pgr(curve, quality), target)


def _first_reaching(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    hit = np.flatnonzero(y >= target - 1e-12)
    if not len(hit):
        return None
    k = int(hit[0])
    if k == 0 or y[k] == y[k - 1]:
        return float(x[k])
    frac = (target - y[k - 1]) / (y[k] - y[k - 1])
    return float(x[k - 1] + frac * (x[k] - x[k - 1]))


# --------------------------------------------------------------------------- many models


def lambda_curve(
    predicted: np.ndarray, cost: np.ndarray, quality: np.ndarray, decide_cost: np.ndarray | None = None
) -> Curve:
    """Exact curve of argmax_j(predicted[i, j] - lambda * decide_cost[i, j]) as lambda falls
    from infinity to 0 (ties broken toward the cheaper model, then the lower index), each choice
    charged at `cost`. `decide_cost` is what the router sees when serving (its expected costs);
    it defaults to `cost`."""
    n, _ = predicted.shape
    decide = cost if decide_cost is None else decide_cost
    start_cost = 0.0
    start_quality = 0.0
    events: list[tuple[float, float, float]] = []  # (lambda, delta cost, delta quality)
    for i in range(n):
        path = _hull_path(predicted[i], decide[i])
        first = path[0][0]
        start_cost += cost[i, first]
        start_quality += quality[i, first]
        for (a, _), (b, lam) in zip(path, path[1:], strict=False):
            events.append((lam, cost[i, b] - cost[i, a], quality[i, b] - quality[i, a]))
    events.sort(key=lambda e: -e[0])
    xs = [start_cost]
    ys = [start_quality]
    k = 0
    while k < len(events):
        lam = events[k][0]
        dc = dq = 0.0
        # Prompts switching at the same lambda switch together: one point for the block.
        while k < len(events) and events[k][0] == lam:
            dc += events[k][1]
            dq += events[k][2]
            k += 1
        xs.append(xs[-1] + dc)
        ys.append(ys[-1] + dq)
    return Curve(np.array(xs) / n, np.array(ys) / n)


def _hull_path(pred: np.ndarray, cost: np.ndarray) -> list[tuple[int, float]]:
    """The models one prompt walks through as lambda falls, each with the lambda at which it
    takes over: the upper-left convex hull of (cost, predicted quality)."""
    order = sorted(range(len(pred)), key=lambda j: (cost[j], -pred[j], j))
    current = order[0]
    path: list[tuple[int, float]] = [(current, float("inf"))]
    while True:
        best, best_lam = None, -1.0
        for j in order:
            dc = cost[j] - cost[current]
            dq = pred[j] - pred[current]
            if dc <= 0 or dq <= 0:
                continue
            lam = dq / dc
            # Largest lambda wins (first to take over); among equal lambdas, the farther one.
            if lam > best_lam or (lam == best_lam and best is not None and cost[j] > cost[best]):
                best, best_lam = j, lam
        if best is None:
            return path
        path.append((best, best_lam))
        current = best


def single_points(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each model's (mean cost, mean quality) when it answers every prompt."""
    return cost.mean(axis=0), quality.mean(axis=0)


def monotone_hull(x: np.ndarray, y: np.ndarray) -> Curve:
    """The non-decreasing upper convex hull of points: what mixing operating points at random
    can reach, never losing quality as cost grows."""
    order = np.lexsort((-y, x))
    pts: list[tuple[float, float]] = []
    best = -np.inf
    for i in order:
        if y[i] > best:  # drop points dominated by a cheaper one
            pts.append((float(x[i]), float(y[i])))
            best = y[i]
    hull: list[tuple[float, float]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Keep only right turns (concave from above).
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    arr = np.array(hull)
    return Curve(arr[:, 0], arr[:, 1])


def random_curve(cost: np.ndarray, quality: np.ndarray) -> Curve:
    """The random reference: picking single models at random in the best proportions, i.e. the
    monotone hull of the single-model points (for two models, the straight weak-strong line)."""
    xs, ys = single_points(cost, quality)
    return monotone_hull(xs, ys)


def _value_at(curve: Curve, x: float) -> float:
    """Best quality reachable at cost <= x on the monotone hull (flat beyond its ends)."""
    if x < curve.cost[0]:
        return float("nan")
    return float(np.interp(x, curve.cost, curve.quality))


def _cost_to_reach(curve: Curve, target: float) -> float | None:
    return _first_reaching(curve.cost, curve.quality, target)


@dataclass
class CostQualityReport:
    best_model: str
    best_quality: float
    best_cost: float
    cost_to_95: float | None
    cost_to_100: float | None
    quality_at_best_cost: float
    aiq: float
    max_quality: float

    def as_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


def cost_quality_report(
    curve: Curve, models: list[str], cost: np.ndarray, quality: np.ndarray
) -> CostQualityReport:
    """Numbers read off a router's curve against the best single model on the same prompts.
    Costs are reported as a ratio of the best single model's cost."""
    xs, ys = single_points(cost, quality)
    b = int(np.argmax(ys))
    hull = monotone_hull(curve.cost, curve.quality)
    lo, hi = float(xs.min()), float(xs.max())
    aiq = _area(hull, lo, hi) / (hi - lo) if hi > lo else float(hull.quality.max())

    def ratio(value: float | None) -> float | None:
        return None if value is None else value / xs[b] if xs[b] > 0 else None

    return CostQualityReport(
        best_model=models[b],
        best_quality=float(ys[b]),
        best_cost=float(xs[b]),
        cost_to_95=ratio(_cost_to_reach(hull, 0.95 * ys[b])),
        cost_to_100=ratio(_cost_to_reach(hull, ys[b])),
        quality_at_best_cost=_value_at(hull, float(xs[b])),
        aiq=aiq,
        max_quality=float(curve.quality.max()),
    )


def _area(hull: Curve, lo: float, hi: float) -> float:
    """Area under the hull on [lo, hi]; the hull is flat past its right end and counts zero
    left of its first point."""
    x = np.clip(np.concatenate([hull.cost, [hi]]), lo, hi)
    y = np.concatenate([hull.quality, [hull.quality[-1]]])
    return float(np.trapezoid(y, x))
