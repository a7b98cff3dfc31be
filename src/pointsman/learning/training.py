"""Training: fit candidate learners with scikit-learn, compare them on out-of-fold
predictions, and export the winner to the portable numpy predictors.

Only this module needs scikit-learn (the `train` extra). Selection never sees the test split:
candidates are compared by K-fold cross-validation on the training split (folds drawn by
prompt), the winner (a single learner or a greedy ensemble) is refitted on the whole training
split, and its out-of-fold predictions calibrate the cost-quality knob.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from pointsman.learning import metrics
from pointsman.learning.datasets import OutcomeData, _prompt_key
from pointsman.learning.encoders import (
    Encoder,
    SignalsEncoder,
    TfidfEncoder,
    WordLlamaEncoder,
)
from pointsman.learning.predictors import (
    ClusterPredictor,
    EnsemblePredictor,
    Features,
    KnnPredictor,
    LinearPredictor,
    MlpPredictor,
    Predictor,
    Standardizer,
    TaskPredictor,
    TreesPredictor,
    _unit_rows,
)

Progress = Callable[[str], None]


def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit("training needs scikit-learn: pip install 'pointsman[train]'") from None


# --------------------------------------------------------------------------- features


def fit_encoders(prompts: Sequence[str], kinds: Sequence[str]) -> dict[str, Encoder]:
    """Encoders by block name; `tfidf` is fitted on `prompts` (no labels are used)."""
    out: dict[str, Encoder] = {}
    for kind in kinds:
        if kind == "wordllama":
            out[kind] = WordLlamaEncoder()
        elif kind == "signals":
            out[kind] = SignalsEncoder()
        elif kind == "tfidf":
            out[kind] = TfidfEncoder.fit(prompts)
        elif kind == "sentence-transformers":
            from pointsman.learning.encoders import SentenceTransformerEncoder

            out[kind] = SentenceTransformerEncoder("sentence-transformers/all-MiniLM-L6-v2")
        else:
            raise SystemExit(f"unknown encoder {kind!r}")
    return out


def encode(encoders: dict[str, Encoder], prompts: Sequence[str]) -> Features:
    feats = Features()
    for name, enc in encoders.items():
        if enc.sparse:
            feats.sparse[name] = enc.encode_sparse(prompts)  # type: ignore[attr-defined]
        else:
            feats.dense[name] = enc.encode(prompts)
    return feats


# --------------------------------------------------------------------------- learners


@dataclass
class Candidate:
    """A learner to compare: `fit(features, targets, index, weights)` returns a portable
    predictor (weights: one per row of the whole table, or None)."""

    name: str
    needs: tuple[str, ...]
    fit: Callable[[Features, np.ndarray, np.ndarray, np.ndarray | None], Predictor]


def _fractional_logistic(
    x: Any, y: np.ndarray, c: float, weight: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Logistic regression on targets in 0..1: each row appears as a positive with weight y
    and a negative with weight 1-y (identical to plain LR when y is 0/1)."""
    from scipy.sparse import issparse, vstack
    from sklearn.linear_model import LogisticRegression

    base = np.ones(len(y)) if weight is None else weight
    if np.all((y == 0) | (y == 1)):
        xx, yy, ww = x, y.astype(int), base
    else:
        xx = vstack([x, x]).tocsr() if issparse(x) else np.vstack([x, x])
        yy = np.concatenate([np.ones(len(y), int), np.zeros(len(y), int)])
        ww = np.concatenate([y * base, (1.0 - y) * base])
    if len(np.unique(yy[ww > 0])) < 2:
        # One class only: a constant model at the observed rate.
        rate = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
        return np.zeros(x.shape[1]), float(np.log(rate / (1 - rate)))
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit(xx, yy, sample_weight=ww)
    return model.coef_[0], float(model.intercept_[0])


def linear_candidate(
    name: str, dense: Sequence[str], sparse: str | None, c: float, dense_scale: float
) -> Candidate:
    def fit(feats: Features, y: np.ndarray, idx: np.ndarray, w: np.ndarray | None) -> Predictor:
        from scipy.sparse import csr_matrix, hstack

        xd = scaler = None
        if dense:
            raw = feats.stack(dense)[idx]
            scaler = Standardizer.fit(raw)
            xd = scaler(raw) * dense_scale
        parts = []
        if sparse is not None:
            parts.append(feats.sparse[sparse].to_scipy()[idx])
        if xd is not None:
            parts.append(csr_matrix(xd))
        x = hstack(parts).tocsr() if len(parts) > 1 else parts[0]
        n_dense = xd.shape[1] if xd is not None else 0
        width = feats.sparse[sparse].width if sparse is not None else 0
        w_dense = np.zeros((n_dense, y.shape[1]))
        w_sparse = np.zeros((width, y.shape[1])) if sparse is not None else None
        bias = np.zeros(y.shape[1])
        for j in range(y.shape[1]):
            coef, b = _fractional_logistic(x, y[idx, j], c, None if w is None else w[idx])
            if w_sparse is not None:
                w_sparse[:, j] = coef[:width]
            w_dense[:, j] = coef[width:]
            bias[j] = b
        return LinearPredictor(list(dense), sparse, scaler, dense_scale, w_dense, w_sparse, bias)

    needs = tuple(dense) + ((sparse,) if sparse else ())
    return Candidate(name, needs, fit)


def knn_candidate(name: str, block: str, k: int, dims: int | None = 64) -> Candidate:
    def fit(feats: Features, y: np.ndarray, idx: np.ndarray, w: np.ndarray | None) -> Predictor:
        return KnnPredictor(block, feats.dense[block][idx], y[idx], k, dims)

    return Candidate(name, (block,), fit)


def cluster_candidate(name: str, block: str, k: int, strength: float = 10.0, seed: int = 0) -> Candidate:
    """A cluster prior (see `ClusterPredictor`): k-means on the unit rows of one block (dense or
    sparse), then per-cluster mean outcomes shrunk toward the overall mean."""

    def fit(feats: Features, y: np.ndarray, idx: np.ndarray, w: np.ndarray | None) -> Predictor:
        from sklearn.cluster import KMeans

        sparse = block in feats.sparse
        if sparse:
            x = feats.sparse[block].to_scipy()[idx]
        else:
            x = _unit_rows(np.asarray(feats.dense[block][idx], dtype=np.float64))
        clusters = min(k, len(idx))
        km = KMeans(clusters, n_init=3, random_state=seed).fit(x)
        # Label training rows by the serving rule (cosine to the stored centroids), not by
        # k-means' own labels, so the table describes exactly the prompts a cluster will get.
        centroids = _unit_rows(np.asarray(km.cluster_centers_, dtype=np.float64))
        shape = ClusterPredictor(block, centroids, np.zeros((clusters, 1)), sparse)
        labels = shape.assign(feats.subset(idx))
        return ClusterPredictor.from_labels(block, centroids, labels, y[idx], strength, sparse)

    return Candidate(name, (block,), fit)


def trees_candidate(
    name: str, blocks: Sequence[str], depth: int = 3, iters: int = 100, rate: float = 0.1
) -> Candidate:
    def fit(feats: Features, y: np.ndarray, idx: np.ndarray, w: np.ndarray | None) -> Predictor:
        from sklearn.ensemble import HistGradientBoostingRegressor

        x = feats.stack(blocks)[idx]
        features, thresholds, leaves, outputs, baseline = [], [], [], [], []
        models = []
        for j in range(y.shape[1]):
            model = HistGradientBoostingRegressor(
                max_depth=depth,
                learning_rate=rate,
                max_iter=iters,
                min_samples_leaf=40,
                early_stopping=False,
                random_state=0,
            ).fit(x, y[idx, j], sample_weight=None if w is None else w[idx])
            models.append(model)
            baseline.append(float(np.ravel(model._baseline_prediction)[0]))
            for stage in model._predictors:
                f, t, v = _complete_tree(stage[0].nodes, depth)
                features.append(f)
                thresholds.append(t)
                leaves.append(v)
                outputs.append(j)
        predictor = TreesPredictor(
            list(blocks),
            depth,
            np.array(features),
            np.array(thresholds),
            np.array(leaves),
            np.array(outputs),
            np.array(baseline),
        )
        # Trust the export only if it reproduces scikit-learn on training rows.
        sample = idx[:256]
        expected = np.column_stack([m.predict(feats.stack(blocks)[sample]) for m in models])
        got = predictor.raw(feats.subset(sample))
        if not np.allclose(got, expected, atol=1e-6):
            raise RuntimeError(f"tree export differs from scikit-learn by {np.abs(got - expected).max()}")
        return predictor

    return Candidate(name, tuple(blocks), fit)


def _complete_tree(nodes: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scikit-learn histogram tree (structured node array) as a complete binary tree."""
    size = 2**depth - 1
    feature = np.zeros(size, dtype=np.int32)
    threshold = np.full(size, np.inf)
    leaf = np.zeros(2**depth)

    def walk(src: int, dst: int, level: int) -> None:
        node = nodes[src]
        if level == depth:
            leaf[dst - size] = node["value"]
            return
        if node["is_leaf"]:
            # Pad: an always-left node whose whole subtree ends in this leaf's value.
            feature[dst] = 0
            threshold[dst] = np.inf
            walk(src, 2 * dst + 1, level + 1)
            walk(src, 2 * dst + 2, level + 1)
            return
        feature[dst] = int(node["feature_idx"])
        threshold[dst] = float(node["num_threshold"])
        walk(int(node["left"]), 2 * dst + 1, level + 1)
        walk(int(node["right"]), 2 * dst + 2, level + 1)

    walk(0, 0, 0)
    return feature, threshold, leaf


def mlp_candidate(name: str, blocks: Sequence[str], hidden: int = 64, alpha: float = 1.0) -> Candidate:
    def fit(feats: Features, y: np.ndarray, idx: np.ndarray, w: np.ndarray | None) -> Predictor:
        from sklearn.neural_network import MLPRegressor

        x = feats.stack(blocks)[idx]
        scaler = Standardizer.fit(x)
        model = MLPRegressor(
            hidden_layer_sizes=(hidden,),
            alpha=alpha,
            max_iter=300,
            early_stopping=True,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(scaler(x), y[idx], sample_weight=None if w is None else w[idx])
        return MlpPredictor(list(blocks), scaler, model.coefs_, model.intercepts_)

    return Candidate(name, tuple(blocks), fit)


def default_candidates(encoders: Sequence[str]) -> list[Candidate]:
    """The learners compared by default, restricted to the encoders available."""
    have = set(encoders)
    dense_text = "wordllama" if "wordllama" in have else None
    out: list[Candidate] = []
    if "tfidf" in have:
        out.append(linear_candidate("linear(tfidf)", (), "tfidf", 0.5, 1.0))
        extra = tuple(b for b in ("signals", dense_text) if b and b in have)
        if extra:
            out.append(linear_candidate(f"linear(tfidf+{'+'.join(extra)})", extra, "tfidf", 0.5, 0.1))
    dense = tuple(b for b in (dense_text, "signals") if b and b in have)
    if dense_text:
        out.append(linear_candidate(f"linear({'+'.join(dense)})", dense, None, 0.1, 1.0))
        out.append(knn_candidate(f"knn25({dense_text})", dense_text, 25))
        out.append(knn_candidate(f"knn100({dense_text})", dense_text, 100))
    if dense:
        out.append(trees_candidate(f"trees({'+'.join(dense)})", dense))
        out.append(mlp_candidate(f"mlp({'+'.join(dense)})", dense))
    if "signals" in have:
        out.append(trees_candidate("trees(signals)", ("signals",)))
    # Cluster priors at three granularities; the ensemble may blend several of them.
    for block in (b for b in ("tfidf", dense_text) if b and b in have):
        for k in CLUSTER_SIZES:
            out.append(cluster_candidate(f"cluster{k}({block})", block, k))
    return out


CLUSTER_SIZES = (10, 20, 40)


def _task_name(encoders: dict[str, Encoder]) -> str:
    """The task learner's name: the block its classifier reads (the sparse one if any)."""
    sparse = [n for n, e in encoders.items() if e.sparse]
    return f"task({sparse[0] if sparse else '+'.join(encoders)})"


def task_candidate(name: str, labels: Sequence[str], strength: float = 10.0) -> Candidate:
    """The task signal (see `TaskPredictor`): a multinomial logistic regression from the prompt
    to its task label (`labels`, one per row of the whole table), and per-task mean outcomes."""

    def fit(feats: Features, y: np.ndarray, idx: np.ndarray, w: np.ndarray | None) -> Predictor:
        names = sorted({labels[i] for i in idx})
        code = {t: k for k, t in enumerate(names)}
        own = np.array([code[labels[i]] for i in idx], dtype=np.int64)
        quality = y[idx]
        overall = quality.mean(axis=0)
        sums = np.zeros((len(names), y.shape[1]))
        np.add.at(sums, own, quality)
        sizes = np.bincount(own, minlength=len(names)).astype(np.float64)[:, None]
        table = (sums + strength * overall) / (sizes + strength)
        if len(names) < 2:
            gate = fit_gate(feats.subset(idx), np.zeros(len(idx), dtype=np.int64), 1)
        else:
            gate = fit_gate(feats.subset(idx), own, len(names))
        return TaskPredictor(gate, table, names)

    return Candidate(name, (), fit)


# --------------------------------------------------------------------------- selection


def fold_ids(prompts: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Fold of each row, by prompt: identical prompts share a fold."""
    distinct = sorted(set(prompts), key=lambda p: _prompt_key(seed, "fold", p))
    fold_of = {p: i % folds for i, p in enumerate(distinct)}
    return np.array([fold_of[p] for p in prompts], dtype=np.int64)


@dataclass
class Scorer:
    """The selection metric: higher is better. Two models: mean APGR over the datasets
    trained on; many models: mean AIQ (area under the cost-quality hull)."""

    two_model: bool
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (index, quality, cost) per dataset

    def __call__(self, pred: np.ndarray) -> float:
        return float(np.mean(self.parts_of(pred)))

    def parts_of(self, pred: np.ndarray) -> list[float]:
        values = []
        for idx, q, c in self.parts:
            p = pred[idx]
            if self.two_model:
                values.append(metrics.apgr(metrics.threshold_curve(p[:, 1] - p[:, 0], q), q))
            else:
                curve = metrics.lambda_curve(p, c, q)
                values.append(metrics.cost_quality_report(curve, [""] * q.shape[1], c, q).aiq)
        return values


@dataclass
class Selection:
    predictor: Predictor
    chosen: list[str]
    weights: list[float]
    oof: np.ndarray
    table: list[dict[str, Any]] = field(default_factory=list)


def select(
    feats: Features,
    quality: np.ndarray,
    prompts: Sequence[str],
    scorer: Scorer,
    candidates: Sequence[Candidate],
    folds: int = 5,
    seed: int = 0,
    max_members: int = 4,
    progress: Progress | None = None,
    weights: np.ndarray | None = None,
) -> Selection:
    """Cross-validate every candidate, build a greedy ensemble from their out-of-fold
    predictions, and refit the chosen learners on all rows."""
    _require_sklearn()
    fold = fold_ids(prompts, folds, seed)
    n = len(prompts)
    oof: dict[str, np.ndarray] = {}
    table: list[dict[str, Any]] = []
    for cand in candidates:
        started = time.perf_counter()
        pred = np.zeros_like(quality, dtype=np.float64)
        for k in range(folds):
            train = np.flatnonzero(fold != k)
            held = np.flatnonzero(fold == k)
            model = cand.fit(feats, quality, train, weights)
            pred[held] = model.predict(feats.subset(held))
        oof[cand.name] = pred
        parts = scorer.parts_of(pred)
        score = float(np.mean(parts))
        table.append(
            {
                "candidate": cand.name,
                "score": round(score, 4),
                "per_dataset": [round(p, 4) for p in parts],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        if progress:
            progress(f"{cand.name}: {score:.4f} {' '.join(f'{p:.4f}' for p in parts)}")
    # Greedy forward selection with replacement (Caruana et al.): add whichever member most
    # improves the blend's out-of-fold score; stop when nothing helps.
    counts: dict[str, int] = {}
    blend = np.zeros_like(quality, dtype=np.float64)
    best = -np.inf
    for _ in range(max_members):
        step_best, step_name = best, None
        total = sum(counts.values())
        for name, pred in oof.items():
            trial = (blend * total + pred) / (total + 1)
            value = scorer(trial)
            if value > step_best + 1e-4:
                step_best, step_name = value, name
        if step_name is None:
            break
        counts[step_name] = counts.get(step_name, 0) + 1
        total = sum(counts.values())
        # an array: counts is not empty (typeshed's sum() allows for an empty one, giving 0)
        blend = cast(np.ndarray, sum(oof[k] * c for k, c in counts.items()) / total)
        best = step_best
    chosen = list(counts)
    shares = [counts[k] / sum(counts.values()) for k in chosen]
    label = " + ".join(f"{w:.2f}x{k}" for k, w in zip(chosen, shares, strict=True))
    table.append({"candidate": f"ensemble: {label}", "score": round(best, 4), "seconds": 0.0})
    if progress:
        progress(f"chosen: {table[-1]['candidate']} ({best:.4f})")
    by_name = {c.name: c for c in candidates}
    everything = np.arange(n)
    members = [by_name[k].fit(feats, quality, everything, weights) for k in chosen]
    predictor: Predictor = members[0] if len(members) == 1 else EnsemblePredictor(members, shares)
    return Selection(predictor, chosen, shares, blend, table)


# --------------------------------------------------------------------------- whole router

PRESETS = {"best": 1.0, "quality": 0.98, "balanced": 0.95, "economy": 0.90}
DEFAULT_ENCODERS = ("wordllama", "signals", "tfidf")


def combine(datasets: Sequence[OutcomeData]) -> tuple[OutcomeData, list[np.ndarray]]:
    """Stack datasets that share a model set (two-model sets are aligned as weak, strong);
    also return each one's row index in the stack."""
    if not datasets:
        raise SystemExit("no training data")
    two = all(d.two_model for d in datasets)
    parts = [d.ordered_two() for d in datasets] if two else list(datasets)
    models = parts[0].models
    if not two:
        for d in parts[1:]:
            if sorted(d.models) != sorted(models):
                raise SystemExit(f"{d.name}: models {d.models} differ from {parts[0].name}: {models}")
    quality, cost, prompts, tokens = [], [], [], []
    groups: list[str] = []
    index, start = [], 0
    for d in parts:
        # Task labels: each row's group, else (several datasets) its dataset's name.
        fallback = d.name if len(parts) > 1 else ""
        groups.extend([g or fallback for g in d.groups] if d.groups is not None else [fallback] * len(d))
        order = [d.models.index(m) for m in models] if not two else [0, 1]
        quality.append(d.quality[:, order])
        cost.append(d.cost[:, order])
        tokens.append(d.output_tokens[:, order] if d.output_tokens is not None else None)
        prompts.extend(d.prompts)
        index.append(np.arange(start, start + len(d)))
        start += len(d)
    out_tokens = None
    if all(t is not None for t in tokens):
        out_tokens = np.vstack(tokens)  # type: ignore[arg-type]
    data = OutcomeData(
        name="+".join(d.name for d in parts),
        prompts=prompts,
        models=list(models),
        quality=np.vstack(quality),
        cost=np.vstack(cost),
        output_tokens=out_tokens,
        prices=dict(parts[0].prices),
        strong=parts[0].strong,
        weak=parts[0].weak,
        cost_unit=parts[0].cost_unit,
        groups=groups if any(groups) else None,
    )
    return data, index


def fit_gate(feats: Features, labels: np.ndarray, routes: int, c: float = 2.0) -> LinearPredictor:
    """A softmax gate over routes from the prompt (multinomial logistic regression on the
    sparse block if there is one, else on the dense blocks)."""
    from sklearn.linear_model import LogisticRegression

    sparse = next(iter(feats.sparse), None)
    dense = [] if sparse else list(feats.dense)
    scaler = Standardizer.fit(feats.stack(dense)) if dense else None
    if routes == 1:  # one label: a constant gate
        width = feats.sparse[sparse].width if sparse else 0
        n_dense = 0 if sparse else feats.stack(dense).shape[1]
        return LinearPredictor(
            dense,
            sparse,
            scaler,
            1.0,
            np.zeros((n_dense, 1)),
            np.zeros((width, 1)) if sparse else None,
            np.zeros(1),
            link="softmax",
        )
    x = feats.sparse[sparse].to_scipy() if sparse else scaler(feats.stack(dense))  # type: ignore[misc]
    model = LogisticRegression(C=c, max_iter=5000).fit(x, labels)
    coef, bias = model.coef_.T, model.intercept_
    if routes == 2:  # scikit-learn keeps one row for two classes: softmax([0, z]) = sigmoid(z)
        coef = np.column_stack([np.zeros(coef.shape[0]), coef[:, 0]])
        bias = np.array([0.0, bias[0]])
    width = feats.sparse[sparse].width if sparse else 0
    return LinearPredictor(
        dense,
        sparse,
        scaler,
        1.0,
        coef[width:] if dense else np.zeros((0, routes)),
        coef if sparse else None,
        bias,
        link="softmax",
    )


def train_router(
    datasets: Sequence[OutcomeData],
    encoders: Sequence[str] = DEFAULT_ENCODERS,
    candidates: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    drop_groups: Sequence[str] = (),
    progress: Progress | None = None,
    meta: dict[str, Any] | None = None,
    routes: bool = False,
    nested: bool = False,
) -> tuple[Any, Selection]:
    """Train a router artifact on `datasets` (their training splits: nothing here holds out
    a test set). Returns the artifact and the selection report.

    With `routes` (and more than one dataset), each dataset becomes a route with its own
    expert (selected on that dataset alone) and its own calibrated knob, and a gate learns
    which route a prompt belongs to; otherwise one predictor is selected for all rows.
    """
    from pointsman.learning.artifact import MULTI_MODEL, THRESHOLD, TWO_MODEL, UTILITY, RouterArtifact
    from pointsman.learning.calibration import Target, knob_for, multi_model_table, two_model_table
    from pointsman.learning.costs import CostModel, estimate_from_calls, warn_missing
    from pointsman.learning.datasets import DEFAULT_OUTPUT_TOKENS, estimate_prompt_tokens, with_prices
    from pointsman.learning.predictors import GatedPredictor

    _require_sklearn()
    kept = []
    dropped = 0
    for d in datasets:
        if drop_groups and d.groups is not None:
            keep = np.array([g not in drop_groups for g in d.groups])
            dropped += int((~keep).sum())
            d = d.subset(np.flatnonzero(keep))
        kept.append(d)
    data, index = combine(kept)
    kind = TWO_MODEL if data.two_model else MULTI_MODEL
    say = progress or (lambda _: None)
    # One cost model in dollars: list prices when known (costing every row from them), else
    # per-model costs learned from the rows' recorded per-call dollars, else a warning.
    if data.cost_unit != "$" and data.prices and all(m in data.prices for m in data.models):
        data = with_prices(data, data.prices)
    prices = dict(data.prices)
    call_costs: dict[str, float] = {}
    cost_warning = None
    if data.cost_unit == "$" and not all(m in prices for m in data.models):
        tokens_in = np.array([estimate_prompt_tokens(p) for p in data.prompts], dtype=np.float64)
        learned_prices, call_costs = estimate_from_calls(
            data.models, data.cost, tokens_in, data.output_tokens
        )
        prices = {
            m: prices.get(m) or learned_prices[m] for m in data.models if m in prices or m in learned_prices
        }
        call_costs = {m: v for m, v in call_costs.items() if m not in prices}
        say(
            "no price table: expected cost per call learned from the rows' recorded costs "
            f"({', '.join(sorted(prices))} per token; {', '.join(sorted(call_costs)) or 'none'} per call)"
        )
    elif data.cost_unit != "$":
        cost_warning = warn_missing("train", data.models)
    decision = UTILITY if (kind == MULTI_MODEL or data.cost_unit == "$") else THRESHOLD
    say(f"encoding {len(data)} prompts with {', '.join(encoders)}")
    enc = fit_encoders(data.prompts, encoders)
    feats = encode(enc, data.prompts)
    pool = default_candidates(list(enc))
    if data.groups is not None and len(set(data.groups)) >= 2:
        # The task signal, where the data name tasks: compared by CV like every other learner.
        pool.append(task_candidate(_task_name(enc), data.groups))
    if candidates:
        wanted = set(candidates)
        pool = [c for c in pool if c.name in wanted or c.name.split("(")[0] in wanted]
        if not pool:
            raise SystemExit(f"no candidate matches {sorted(wanted)}")
    two = kind == TWO_MODEL
    if data.output_tokens is not None:
        out_tokens = {m: float(np.median(data.output_tokens[:, j])) for j, m in enumerate(data.models)}
    else:
        out_tokens = {m: float(DEFAULT_OUTPUT_TOKENS) for m in data.models}
    cost_model = CostModel(list(data.models), prices, call_costs, out_tokens)
    # What the router will see when serving: expected dollars from the cost model, per row.
    serve_cost = np.stack([cost_model.expected(estimate_prompt_tokens(p)) for p in data.prompts])
    cost_ref = float(serve_cost.max(axis=1).mean()) if decision == UTILITY else 1.0
    cost_ref = cost_ref if cost_ref > 0 else 1.0

    def make_table(pred: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
        if decision == THRESHOLD:
            return two_model_table(pred[:, 1] - pred[:, 0], data.quality[rows])
        return multi_model_table(pred, data.cost[rows], data.quality[rows], serve_cost[rows], cost_ref)

    route_names: list[str] = []
    route_info: dict[str, Any] = {}
    if routes and len(kept) > 1:
        route_names = [d.name for d in kept]
        if len(set(route_names)) != len(route_names):
            raise SystemExit(f"route names must differ: {route_names}")
        experts: list[Predictor] = []
        oof = np.zeros_like(data.quality, dtype=np.float64)
        tables: dict[str, Any] = {}
        for name, rows in zip(route_names, index, strict=True):
            say(f"route {name}: selecting on its {len(rows)} prompts")
            part = feats.subset(rows)
            scorer = Scorer(two, [(np.arange(len(rows)), data.quality[rows], data.cost[rows])])
            # The task signal of a route reads that route's own labels.
            route_pool = [c for c in pool if not c.name.startswith("task(")]
            route_labels = [data.groups[i] for i in rows] if data.groups is not None else []
            if len(set(route_labels)) >= 2 and len(route_pool) < len(pool):
                route_pool.append(task_candidate(_task_name(enc), route_labels))
            chosen = select(
                part,
                data.quality[rows],
                [data.prompts[i] for i in rows],
                scorer,
                route_pool,
                folds,
                seed,
                progress=say,
            )
            experts.append(chosen.predictor)
            oof[rows] = chosen.oof
            tables[name] = make_table(chosen.oof, rows)
            route_info[name] = {"selection": chosen.table, "chosen": chosen.chosen, "weights": chosen.weights}
        labels = np.concatenate([np.full(len(rows), r) for r, rows in enumerate(index)])
        fold = fold_ids(data.prompts, folds, seed)
        gate_oof = np.zeros(len(data), dtype=np.int64)
        for k in range(folds):
            a, b = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            gate_oof[b] = (
                fit_gate(feats.subset(a), labels[a], len(index)).predict(feats.subset(b)).argmax(axis=1)
            )
        gate_accuracy = float((gate_oof == labels).mean())
        say(f"route gate: {gate_accuracy:.4f} out-of-fold accuracy")
        gate = fit_gate(feats, labels, len(index))
        predictor: Predictor = GatedPredictor(gate, experts, route_names)
        selection = Selection(predictor, route_names, [1.0] * len(route_names), oof, [])
        route_info["gate_accuracy"] = gate_accuracy
    else:
        scorer = Scorer(two, [(i, data.quality[i], data.cost[i]) for i in index])
        selection = select(feats, data.quality, data.prompts, scorer, pool, folds, seed, progress=say)
        predictor = selection.predictor
        tables = {}
    calibration_oof = selection.oof
    if nested and not route_names:
        # Calibrate on predictions of the whole procedure (selection included) for prompts it
        # never saw: the plain out-of-fold blend was chosen on those same predictions.
        calibration_oof = _nested_oof(feats, data, index, two, pool, folds, seed, say)
    table = make_table(calibration_oof, np.arange(len(data)))
    if tables:
        table["routes"] = tables
    presets: dict[str, Any] = {}
    for name, share in PRESETS.items():
        target = Target(quality=share)
        try:
            preset = knob_for(decision, table, target)
            if tables:
                preset["routes"] = {r: knob_for(decision, t, target) for r, t in tables.items()}
            preset["target"] = {"quality": share}
        except ValueError:
            if share < 1.0:
                continue
            # `best` when 100% is out of reach at the stated confidence: the most the router
            # can promise, and the promise says so.
            reach = Target(quality=_best_lower(table))
            preset = knob_for(decision, table, reach)
            if tables:
                preset["routes"] = {
                    r: knob_for(decision, t, Target(quality=_best_lower(t))) for r, t in tables.items()
                }
            preset["target"] = {"quality": round(float(reach.quality or 0.0), 4), "wanted": share}
        presets[name] = preset
    if "balanced" in presets:
        knob = dict(presets["balanced"])
    else:
        # No knob keeps 95% at the stated confidence: the most accurate one the table has.
        knob = knob_for(decision, table, Target(quality=_best_lower(table)))
        knob["target"] = {"quality": "best reachable"}
    # Ship only the encoders the chosen predictor reads: an unused one would still run on
    # every request.
    used = predictor.inputs()
    info = {
        "trained_on": [{"name": d.name, "rows": len(d)} for d in kept],
        "dropped_groups": list(drop_groups),
        "dropped_rows": dropped,
        "encoders": list(encoders),
        "encoders_kept": [name for name in enc if name in used],
        "folds": folds,
        "seed": seed,
        "selection": selection.table,
        "chosen": selection.chosen,
        "weights": selection.weights,
        "routes": route_info,
        "selection_metric": "mean APGR over datasets" if two else "mean AIQ over datasets",
        "cost_unit": "$ per call" if decision == UTILITY else "strong-call share",
        "cost_source": "prices"
        if prices and not call_costs
        else "recorded per-call costs"
        if call_costs
        else "none",
        "calibration": (
            "nested out-of-fold predictions (selection redone in each outer fold)"
            if nested and not route_names
            else "out-of-fold predictions"
        )
        + "; targets met on one-sided 90% bootstrap prediction bounds",
        "mean_quality": {m: float(v) for m, v in zip(data.models, data.quality.mean(axis=0), strict=True)},
    }
    if cost_warning:
        info["warnings"] = [cost_warning]
    info.update(meta or {})
    artifact = RouterArtifact(
        kind=kind,
        models=data.models,
        encoders={name: e for name, e in enc.items() if name in used},
        predictor=predictor,
        prices=prices,
        output_tokens=out_tokens,
        cost_ref=cost_ref,
        knob=knob,
        calibration=table,
        presets=presets,
        meta=info,
        call_costs=call_costs,
        decision=decision,
    )
    return artifact, selection


def _nested_oof(
    feats: Features,
    data: OutcomeData,
    index: Sequence[np.ndarray],
    two: bool,
    pool: Sequence[Candidate],
    folds: int,
    seed: int,
    say: Progress,
) -> np.ndarray:
    """Predictions for every row by the whole selection procedure (cross-validation, greedy
    ensemble, refit) run without that row's outer fold."""
    outer = fold_ids(data.prompts, folds, seed + 1)
    position = np.full(len(data), -1)
    out = np.zeros_like(data.quality, dtype=np.float64)
    for k in range(folds):
        fit_rows, held = np.flatnonzero(outer != k), np.flatnonzero(outer == k)
        position[:] = -1
        position[fit_rows] = np.arange(len(fit_rows))
        parts = [
            (position[i[outer[i] != k]], data.quality[i[outer[i] != k]], data.cost[i[outer[i] != k]])
            for i in index
        ]
        say(f"nested calibration: outer fold {k + 1}/{folds}")
        # The task learner reads labels by row: give it this fold's.
        inner_pool = [c for c in pool if not c.name.startswith("task(")]
        for c in pool:
            if c.name.startswith("task(") and data.groups is not None:
                inner_pool.append(task_candidate(c.name, [data.groups[i] for i in fit_rows]))
        inner = select(
            feats.subset(fit_rows),
            data.quality[fit_rows],
            [data.prompts[i] for i in fit_rows],
            Scorer(two, parts),
            inner_pool,
            folds,
            seed,
        )
        out[held] = inner.predictor.predict(feats.subset(held))
    return out


def _best_lower(table: dict[str, Any]) -> float:
    """The highest quality ratio the table promises at its confidence bound."""
    lower = table.get("quality_ratio_lower", table["quality_ratio"])
    return float(max(lower)) - 1e-9
