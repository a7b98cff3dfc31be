"""Held-out evaluation of routers on outcome data, always beside the reference routers:
random, each single model (the best one named), and the oracle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pointsman.learning import metrics
from pointsman.learning.artifact import THRESHOLD, TWO_MODEL, RouterArtifact
from pointsman.learning.calibration import Knob
from pointsman.learning.datasets import DatasetError, OutcomeData, estimate_prompt_tokens

BATCH = 256


def align(data: OutcomeData, artifact: RouterArtifact) -> OutcomeData:
    """The dataset with columns in the artifact's model order (two-model: weak, strong)."""
    if artifact.kind == TWO_MODEL:
        if not data.two_model:
            raise DatasetError(
                f"{data.name}: {len(data.models)} models, but the router is a two-model router"
            )
        return data.ordered_two()
    missing = [m for m in artifact.models if m not in data.models]
    if missing:
        raise DatasetError(f"{data.name}: no outcomes for the router's models {', '.join(missing)}")
    order = [data.models.index(m) for m in artifact.models]
    out = data.subset(np.arange(len(data)))
    out.models = list(artifact.models)
    out.quality = data.quality[:, order]
    out.cost = data.cost[:, order]
    if data.output_tokens is not None:
        out.output_tokens = data.output_tokens[:, order]
    return out


def predict_all(
    artifact: RouterArtifact, prompts: Sequence[str], advance: Callable[[int], None] | None = None
) -> tuple[np.ndarray, list[str | None]]:
    """Predicted quality and route of every prompt, in batches."""
    parts, routes = [], []
    for start in range(0, len(prompts), BATCH):
        chunk = prompts[start : start + BATCH]
        pred, route = artifact.predict_with_routes(chunk)
        parts.append(pred)
        routes.extend(route)
        if advance:
            advance(len(chunk))
    return (np.vstack(parts) if parts else np.zeros((0, len(artifact.models)))), routes


@dataclass
class RouterResult:
    name: str
    curve: metrics.Curve
    numbers: dict[str, Any]


@dataclass
class DatasetReport:
    dataset: str
    rows: int
    models: list[str]
    two_model: bool
    cost_unit: str
    routers: list[RouterResult]
    references: list[RouterResult]
    singles: dict[str, dict[str, float]]
    operating_point: dict[str, Any] = field(default_factory=dict)
    groups: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self, curves: bool = False) -> dict[str, Any]:
        def one(r: RouterResult) -> dict[str, Any]:
            d: dict[str, Any] = {"name": r.name, **r.numbers}
            if curves:
                d["curve"] = _thin(r.curve).as_lists()
            return d

        return {
            "dataset": self.dataset,
            "rows": self.rows,
            "models": self.models,
            "two_model": self.two_model,
            "cost_unit": self.cost_unit,
            "routers": [one(r) for r in self.routers],
            "references": [one(r) for r in self.references],
            "single_models": self.singles,
            "operating_point": self.operating_point,
            "groups": self.groups,
            "notes": self.notes,
        }


def _thin(curve: metrics.Curve, points: int = 201) -> metrics.Curve:
    if len(curve.cost) <= points:
        return curve
    idx = np.unique(np.linspace(0, len(curve.cost) - 1, points).round().astype(int))
    return metrics.Curve(curve.cost[idx], curve.quality[idx])


def _numbers(
    curve: metrics.Curve, data: OutcomeData, cost_curve: metrics.Curve | None = None
) -> dict[str, Any]:
    """APGR and CPT from `curve` (two models: x is the strong-call share); cost figures from
    `cost_curve` (x in the data's cost unit, dollars where known; default `curve`)."""
    q, c = data.quality, data.cost
    report = metrics.cost_quality_report(cost_curve or curve, data.models, c, q)
    out: dict[str, Any] = {}
    if data.two_model:
        # A single point (one model for every prompt) has no curve to average over.
        out["apgr"] = metrics.apgr(curve, q) if len(curve.cost) > 1 else None
        for target in (0.5, 0.8, 0.95):
            out[f"cpt{int(target * 100)}"] = metrics.cpt(curve, q, target)
    out["cost_to_95"] = report.cost_to_95
    out["cost_to_100"] = report.cost_to_100
    out["quality_at_best_cost"] = report.quality_at_best_cost
    # A single point spans no cost range: it has no area.
    out["aiq"] = report.aiq if len(curve.cost) > 1 else None
    out["max_quality"] = report.max_quality
    return out


def router_curve(predicted: np.ndarray, data: OutcomeData) -> metrics.Curve:
    """Two models: the strong-share view (sweep of the predicted gain); many: the lambda sweep."""
    if data.two_model:
        return metrics.threshold_curve(predicted[:, 1] - predicted[:, 0], data.quality)
    return metrics.lambda_curve(predicted, data.cost, data.quality)


def serving_costs(artifact: RouterArtifact, prompts: Sequence[str]) -> np.ndarray:
    """The expected dollars per call the artifact weighs when serving each prompt."""
    if not prompts:
        return np.zeros((0, len(artifact.models)))
    return np.stack([artifact.expected_cost(estimate_prompt_tokens(p)) for p in prompts])


def cost_curve(
    artifact: RouterArtifact, predicted: np.ndarray, data: OutcomeData, decide: np.ndarray
) -> metrics.Curve:
    """The router's curve in the data's cost unit, deciding as it does when serving: the lambda
    sweep over its expected costs (`decide`), or, for the threshold rule, the threshold sweep;
    each choice charged at the row's recorded cost."""
    if artifact.decision != THRESHOLD:
        return metrics.lambda_curve(predicted, data.cost, data.quality, decide)
    if data.cost_unit != "$":
        return router_curve(predicted, data)
    order = np.argsort(-(predicted[:, 1] - predicted[:, 0]), kind="stable")
    n = len(data)
    dc = (data.cost[order, 1] - data.cost[order, 0]) / n
    dq = (data.quality[order, 1] - data.quality[order, 0]) / n
    x = data.cost[:, 0].mean() + np.concatenate([[0.0], np.cumsum(dc)])
    y = data.quality[:, 0].mean() + np.concatenate([[0.0], np.cumsum(dq)])
    return metrics.Curve(x, y)


def references(data: OutcomeData) -> list[RouterResult]:
    """Random, the best single model and the oracle on the same prompts. For two models the
    APGR/CPT view sweeps the strong share; cost figures are in the data's own unit (dollars
    where it has costs), never a share read as dollars."""
    q, c = data.quality, data.cost
    xs, ys = metrics.single_points(c, q)
    b = int(np.argmax(ys))
    best = metrics.Curve(np.array([xs[b]]), np.array([ys[b]]))
    if data.two_model:
        rand = metrics.threshold_curve(np.zeros(len(data)), q)
        oracle = metrics.threshold_curve(metrics.oracle_scores(q), q)
        best_share = metrics.Curve(np.array([float(b)]), np.array([ys[b]]))
        if data.cost_unit == "$":
            rand_cost, oracle_cost = metrics.random_curve(c, q), metrics.lambda_curve(q, c, q)
        else:
            rand_cost, oracle_cost = rand, oracle
        return [
            RouterResult("random", rand, _numbers(rand, data, rand_cost)),
            RouterResult(f"best single ({data.models[b]})", best, _numbers(best_share, data, best)),
            RouterResult("oracle", oracle, _numbers(oracle, data, oracle_cost)),
        ]
    rand = metrics.random_curve(c, q)
    oracle = metrics.lambda_curve(q, c, q)
    return [
        RouterResult("random", rand, _numbers(rand, data)),
        RouterResult(f"best single ({data.models[b]})", best, _numbers(best, data)),
        RouterResult("oracle", oracle, _numbers(oracle, data)),
    ]


def operating_point(
    artifact: RouterArtifact,
    predicted: np.ndarray,
    routes: Sequence[str | None],
    data: OutcomeData,
    knob: Knob,
) -> dict[str, Any]:
    """What the artifact's calibrated knob actually gives on this held-out data: chosen as when
    serving (the artifact's expected costs), charged at the data's recorded costs."""
    rows = np.arange(len(data))
    pick = artifact.choose(predicted, routes, knob, serving_costs(artifact, data.prompts))
    xs, ys = metrics.single_points(data.cost, data.quality)
    b = int(np.argmax(ys))
    quality = float(data.quality[rows, pick].mean())
    cost = float(data.cost[rows, pick].mean())
    out: dict[str, Any] = {
        "knob": knob.value,
        "route_knobs": knob.routes,
        "target": artifact.knob.get("target"),
        "promised": artifact.knob.get("expected"),
        "cost_unit": data.cost_unit,
        "quality": quality,
        "quality_ratio": quality / ys[b] if ys[b] else None,
        "cost_ratio": cost / xs[b] if xs[b] else None,
    }
    if data.two_model:
        out["strong_share"] = float(pick.mean())
    target = (artifact.knob.get("target") or {}).get("quality")
    if isinstance(target, (int, float)) and out["quality_ratio"] is not None:
        out["target_met"] = bool(out["quality_ratio"] >= target - 1e-12)
    out["calls"] = {m: float((pick == j).mean()) for j, m in enumerate(data.models)}
    if any(r is not None for r in routes):
        out["routed"] = {r: routes.count(r) / len(routes) for r in sorted({r for r in routes if r})}
    return out


def group_table(predicted: np.ndarray, data: OutcomeData) -> list[dict[str, Any]]:
    """Per group (e.g. MMLU subject): size, single-model qualities and, for two models, the
    router's APGR within the group."""
    if data.groups is None:
        return []
    groups = np.array(data.groups)
    out = []
    for g in sorted(set(data.groups)):
        m = groups == g
        q = data.quality[m]
        row: dict[str, Any] = {"group": g, "rows": int(m.sum())}
        row.update({name: float(v) for name, v in zip(data.models, q.mean(axis=0), strict=True)})
        if data.two_model and q[:, 1].mean() != q[:, 0].mean():
            curve = metrics.threshold_curve(predicted[m, 1] - predicted[m, 0], q)
            row["apgr"] = metrics.apgr(curve, q)
            row["mean_strong_gain"] = float((predicted[m, 1] - predicted[m, 0]).mean())
        out.append(row)
    return out


def evaluate(
    artifact: RouterArtifact,
    test: OutcomeData,
    name: str = "router",
    advance: Callable[[int], None] | None = None,
    exclude_groups: Sequence[str] = (),
    bootstrap: int = 0,
    seed: int = 0,
) -> list[DatasetReport]:
    """The report on `test`, and a second one without `exclude_groups` when given. With
    `bootstrap`, the router's numbers also get 90% intervals from that many resamples."""
    data = align(test, artifact)
    predicted, routes = predict_all(artifact, data.prompts, advance)
    notes = list(test.notes)
    warning = artifact.warn_missing_costs("eval")
    if warning:
        notes.append(f"warning: {warning}")
    if data.cost_unit != "$":
        notes.append("cost unit: calls (strong-call share for two models); give --prices for dollars")
    reports = [_report(artifact, data, predicted, routes, name, notes)]
    parts = [(data, predicted)]
    if exclude_groups and data.groups is not None:
        keep = np.array([g not in exclude_groups for g in data.groups])
        sub = data.subset(np.flatnonzero(keep))
        sub.name = f"{data.name} without {', '.join(exclude_groups)}"
        kept_routes = [r for r, k in zip(routes, keep, strict=True) if k]
        reports.append(_report(artifact, sub, predicted[keep], kept_routes, name, []))
        parts.append((sub, predicted[keep]))
    if bootstrap:
        for report, (rows, pred) in zip(reports, parts, strict=True):
            report.routers[0].numbers["interval_90"] = _intervals(artifact, rows, pred, bootstrap, seed)
    return reports


def _intervals(
    artifact: RouterArtifact, data: OutcomeData, predicted: np.ndarray, resamples: int, seed: int
) -> dict[str, list[float]]:
    """5th and 95th percentiles of the router's numbers over prompt resamples (a number that
    is never reached in a resample counts as infinite)."""
    rng = np.random.default_rng(seed)
    keys = (["apgr"] if data.two_model else []) + ["cost_to_95", "cost_to_100", "aiq"]
    seen: dict[str, list[float]] = {k: [] for k in keys}
    decide = serving_costs(artifact, data.prompts)
    for _ in range(resamples):
        idx = rng.integers(0, len(data), len(data))
        rows = data.subset(idx)
        numbers = _numbers(
            router_curve(predicted[idx], rows), rows, cost_curve(artifact, predicted[idx], rows, decide[idx])
        )
        for k in keys:
            v = numbers.get(k)
            seen[k].append(float("inf") if v is None else float(v))
    return {k: [float(np.percentile(v, 5)), float(np.percentile(v, 95))] for k, v in seen.items()}


def _report(
    artifact: RouterArtifact,
    data: OutcomeData,
    predicted: np.ndarray,
    routes: Sequence[str | None],
    name: str,
    notes: list[str],
) -> DatasetReport:
    curve = router_curve(predicted, data)
    dollars = cost_curve(artifact, predicted, data, serving_costs(artifact, data.prompts))
    xs, ys = metrics.single_points(data.cost, data.quality)
    knob = artifact.resolve_knob()
    return DatasetReport(
        dataset=data.name,
        rows=len(data),
        models=list(data.models),
        two_model=data.two_model,
        cost_unit=data.cost_unit,
        routers=[
            RouterResult(name, dollars if not data.two_model else curve, _numbers(curve, data, dollars))
        ],
        references=references(data),
        singles={m: {"quality": float(ys[j]), "cost": float(xs[j])} for j, m in enumerate(data.models)},
        operating_point=operating_point(artifact, predicted, routes, data, knob),
        groups=group_table(predicted, data),
        notes=notes,
    )


# --------------------------------------------------------------------------- output


def render(reports: Sequence[DatasetReport], console: Any, groups: bool = False) -> None:
    """Rich tables, one per dataset."""
    from rich.table import Table

    for rep in reports:
        table = Table(title=f"{rep.dataset}: {rep.rows} held-out prompts", title_justify="left")
        table.add_column("router")
        if rep.two_model:
            columns = [
                ("APGR", "apgr", _f),
                ("CPT50", "cpt50", _pct),
                ("CPT80", "cpt80", _pct),
                ("CPT95", "cpt95", _pct),
            ]
            if rep.cost_unit == "$":
                # The same dollars serving weighs: cost to reach the best single model's quality.
                columns += [("$@95%", "cost_to_95", _x), ("$@100%", "cost_to_100", _x)]
        else:
            columns = [
                ("cost@95%", "cost_to_95", _x),
                ("cost@100%", "cost_to_100", _x),
                ("q@best cost", "quality_at_best_cost", _f),
            ]
        columns.append(("AIQ", "aiq", _f))
        for title, _, _ in columns:
            table.add_column(title, justify="right")
        for r in rep.routers + rep.references:
            label = "best single" if r.name.startswith("best single") else r.name
            cells = [label] + [fmt(r.numbers.get(key)) for _, key, fmt in columns]
            table.add_row(*cells, style="bold" if r in rep.routers else None)
            interval = r.numbers.get("interval_90")
            if interval:
                cells = ["  90% interval"] + [
                    f"{fmt(interval[key][0])}-{fmt(interval[key][1])}" if key in interval else ""
                    for _, key, fmt in columns
                ]
                table.add_row(*cells, style="dim")
        console.print(table)
        best = max(rep.singles, key=lambda m: rep.singles[m]["quality"])
        console.print(f"  best single: {best} (quality {rep.singles[best]['quality']:.3f})")
        op = rep.operating_point
        if op:
            share = f", strong share {op['strong_share']:.1%}" if "strong_share" in op else ""
            knob = Knob(op["knob"], op.get("route_knobs") or {}).describe()
            routed = op.get("routed")
            via = f" (routes: {', '.join(f'{r} {v:.0%}' for r, v in routed.items())})" if routed else ""
            console.print(
                f"  calibrated knob {knob}{via}, target {op.get('target')}: quality "
                f"{op['quality']:.3f} = {op['quality_ratio']:.1%} of best single at "
                f"{op['cost_ratio']:.2f}x its cost{share}"
            )
            promised = (op.get("promised") or {}).get("quality_ratio_lower")
            if promised is not None:
                met = "met" if op["quality_ratio"] >= promised - 1e-12 else "NOT met"
                console.print(f"  promised (one-sided 90% bound): {promised:.1%} of best single: {met}")
        for note in rep.notes:
            console.print(f"  note: {note}")
        if groups and rep.groups:
            gt = Table(title=f"{rep.dataset} by group", title_justify="left")
            gt.add_column("group")
            gt.add_column("rows", justify="right")
            for m in rep.models:
                gt.add_column(m.split("/")[-1][:14], justify="right")
            if rep.two_model:
                gt.add_column("APGR", justify="right")
            for row in rep.groups:
                cells = [row["group"], str(row["rows"])] + [_f(row[m]) for m in rep.models]
                if rep.two_model:
                    cells.append(_f(row.get("apgr")))
                gt.add_row(*cells)
            console.print(gt)
    console.print(
        "cost@x% = cost to reach x% of the best single model's quality, as a multiple of its "
        "cost; CPTx = strong-call share that recovers x% of the weak-strong quality gap."
    )


def _f(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def _pct(v: Any) -> str:
    return "never" if v is None else f"{v:.1%}"


def _x(v: Any) -> str:
    return "never" if v is None or v == float("inf") else f"{v:.2f}x"


def plot(reports: Sequence[DatasetReport], path: str) -> None:
    """One panel per dataset: the routers' curves, random, oracle and the single models."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "the PNG plot needs matplotlib: pip install 'pointsman[plot]' (or drop --plot)"
        ) from None
    fig, axes = plt.subplots(1, len(reports), figsize=(5.5 * len(reports), 4.5), squeeze=False)
    for ax, rep in zip(axes[0], reports, strict=True):
        for r in rep.routers:
            c = _thin(r.curve, 500)
            ax.plot(c.cost, c.quality, label=r.name, linewidth=2)
        for r in rep.references:
            if r.name.startswith("best single"):
                continue
            c = _thin(r.curve, 500)
            ax.plot(c.cost, c.quality, label=r.name, linestyle="--", linewidth=1)
        for m, s in rep.singles.items():
            ax.scatter([s["cost"]], [s["quality"]], s=18)
            ax.annotate(m.split("/")[-1][:24], (s["cost"], s["quality"]), fontsize=6)
        ax.set_title(f"{rep.dataset} (held out, {rep.rows} prompts)")
        ax.set_xlabel(
            "strong-call share" if rep.cost_unit == "calls" else f"mean cost per call ({rep.cost_unit})"
        )
        ax.set_ylabel("mean quality")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
