"""Outcome data from the router's own records: every rated request (`POST /v1/feedback`) says
how well the deployment that answered did on its prompt. `pointsman train --from-logs` fits a
router on them and writes the same artifact as `pointsman train`.

Logs observe one deployment per request, so most (prompt, deployment) cells are unknown. When
every prompt was rated on every deployment the data is complete and the usual recipe
(`training.train_router`) runs. Otherwise each deployment's quality model is fitted on the
prompts rated for it alone (logistic regression, compared by out-of-fold Brier score on the
rated cells), and the knob is calibrated on the ratings, with each unrated cell filled by its
out-of-fold prediction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.learning.datasets import CHARS_PER_TOKEN, DEFAULT_OUTPUT_TOKENS, OutcomeData
from pointsman.learning.predictors import Features, LinearPredictor, Standardizer

Progress = Callable[[str], None]
# The roles `router.prompt_text` writes a stored prompt's messages under, one "role: text" each.
_ROLE = re.compile(r"^(system|developer|user|assistant|tool|function): ", re.MULTILINE)
NO_PROMPTS = (
    "the records keep no prompts, so there is nothing to learn from: set `store: "
    "{store_content: true}` in the config to keep them (requests rated before that cannot be used)"
)


class LogsError(ValueError):
    """Records that cannot be trained on; the message says why and what to change."""


@dataclass
class LogOutcomes:
    """Ratings by (prompt, deployment): `quality` is the mean rating (NaN where none) and
    `ratings` how many there were."""

    prompts: list[str]
    models: list[str]
    quality: np.ndarray
    ratings: np.ndarray
    output_tokens: dict[str, float] = field(default_factory=dict)
    # $ per million tokens, blended over input and output, from the recorded costs.
    recorded_prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    rated_records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool((self.ratings > 0).all())

    def summary(self) -> dict[str, Any]:
        return {
            "rated_requests": self.rated_records,
            "used_requests": int(self.ratings.sum()),
            "prompts": len(self.prompts),
            "ratings_per_deployment": {m: int(self.ratings[:, j].sum()) for j, m in enumerate(self.models)},
            "mean_rating": {
                m: round(float(np.nanmean(self.quality[:, j])), 4) if (self.ratings[:, j] > 0).any() else None
                for j, m in enumerate(self.models)
            },
            "observed_cells": round(float((self.ratings > 0).mean()), 4) if self.ratings.size else 0.0,
            "skipped": dict(self.skipped),
        }


def user_text(prompt: str) -> str:
    """The last user message of a stored prompt (``role: text`` per message), which is what
    the learned strategy routes on; the whole text when it has no role markers."""
    starts = list(_ROLE.finditer(prompt))
    for i in range(len(starts) - 1, -1, -1):
        if starts[i].group(1) == "user":
            end = starts[i + 1].start() if i + 1 < len(starts) else len(prompt)
            return prompt[starts[i].end() : end].rstrip("\n")
    return prompt if not starts else ""


def outcomes_from_records(
    records: Iterable[Mapping[str, Any]],
    models: Sequence[str] | None = None,
    min_ratings: int = 10,
) -> LogOutcomes:
    """Join rated records into ratings by (prompt, deployment). Records without a prompt, that
    failed, or whose deployment is not among `models` (default: every deployment with at
    least `min_ratings` ratings) are skipped and counted by reason."""
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    rows: list[tuple[str, str, float, Mapping[str, Any]]] = []
    rated = 0
    for record in records:
        feedback = record.get("feedback")
        if not feedback:
            continue
        rated += 1
        if record.get("status") != 200 or not record.get("deployment"):
            skip("failed request")
            continue
        if not record.get("prompt"):
            skip("no stored prompt")
            continue
        text = user_text(str(record["prompt"]))
        if not text.strip():
            skip("no user message")
            continue
        rows.append((text, str(record["deployment"]), float(feedback["score"]), record))
    if rated == 0:
        raise LogsError("no rated requests in the records: rate answers with POST /v1/feedback first")
    if not rows:
        if skipped.get("no stored prompt", 0) == rated:
            raise LogsError(f"{rated} rated request(s), but {NO_PROMPTS}")
        raise LogsError(f"{rated} rated request(s), none usable ({_describe(skipped)})")
    counts: dict[str, int] = {}
    for _, deployment, _, _ in rows:
        counts[deployment] = counts.get(deployment, 0) + 1
    if models:
        chosen = list(dict.fromkeys(models))
        unknown = [m for m in chosen if m not in counts]
        if unknown:
            raise LogsError(
                f"no rated requests answered by {', '.join(unknown)} "
                f"(rated: {', '.join(f'{m} {n}' for m, n in counts.items())})"
            )
    else:
        chosen = [m for m in sorted(counts, key=lambda m: (-counts[m], m)) if counts[m] >= min_ratings]
    if len(chosen) < 2:
        raise LogsError(
            f"a router chooses between at least two deployments with at least {min_ratings} ratings "
            f"each; rated: {', '.join(f'{m} {n}' for m, n in counts.items())} "
            "(rate more answers, or lower --min-ratings)"
        )
    index = {m: j for j, m in enumerate(chosen)}
    prompt_row: dict[str, int] = {}
    sums: list[list[float]] = []
    ratings: list[list[int]] = []
    spent = {m: [0.0, 0.0, 0.0] for m in chosen}  # cost, tokens, calls
    completions: dict[str, list[float]] = {m: [] for m in chosen}
    for text, deployment, score, record in rows:
        if deployment not in index:
            skip("deployment not trained on")
            continue
        i = prompt_row.setdefault(text, len(prompt_row))
        if i == len(sums):
            sums.append([0.0] * len(chosen))
            ratings.append([0] * len(chosen))
        j = index[deployment]
        sums[i][j] += score
        ratings[i][j] += 1
        tokens = (record.get("prompt_tokens") or 0) + (record.get("completion_tokens") or 0)
        spent[deployment][0] += record.get("cost") or 0.0
        spent[deployment][1] += tokens
        spent[deployment][2] += 1
        if record.get("completion_tokens"):
            completions[deployment].append(float(record["completion_tokens"]))
    count = np.array(ratings, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        quality = np.where(count > 0, np.array(sums) / np.maximum(count, 1), np.nan)
    prices = {m: (round(1e6 * c / t, 6),) * 2 for m, (c, t, _) in spent.items() if c > 0 and t > 0}
    return LogOutcomes(
        prompts=list(prompt_row),
        models=chosen,
        quality=quality,
        ratings=count,
        output_tokens={
            m: float(np.median(v)) if v else float(DEFAULT_OUTPUT_TOKENS) for m, v in completions.items()
        },
        recorded_prices=prices,
        rated_records=rated,
        skipped=skipped,
    )


def _describe(skipped: Mapping[str, int]) -> str:
    return ", ".join(f"{why}: {n}" for why, n in skipped.items()) or "none skipped"


# --------------------------------------------------------------------------- training


@dataclass
class _Learner:
    name: str
    dense: tuple[str, ...]
    sparse: str | None
    c: float
    dense_scale: float


def _learners(blocks: Sequence[str]) -> list[_Learner]:
    have = set(blocks)
    dense = tuple(b for b in ("wordllama", "signals") if b in have)
    out = []
    if "tfidf" in have:
        out += [_Learner(f"linear(tfidf, C={c})", (), "tfidf", c, 1.0) for c in (0.03, 0.1, 0.5, 2.0)]
        if dense:
            out.append(_Learner(f"linear(tfidf+{'+'.join(dense)})", dense, "tfidf", 0.5, 0.1))
    if dense:
        out += [_Learner(f"linear({'+'.join(dense)}, C={c})", dense, None, c, 1.0) for c in (0.03, 0.1)]
    return out


def fit_masked_linear(
    feats: Features, quality: np.ndarray, weight: np.ndarray, rows: np.ndarray, learner: _Learner
) -> LinearPredictor:
    """One logistic model per deployment, each fitted on the `rows` rated for it (weighted by
    the number of ratings); deployments with no rated row predict their mean rating, or 0.5."""
    from scipy.sparse import csr_matrix, hstack

    from pointsman.learning.training import _fractional_logistic

    scaler = None
    parts = []
    if learner.sparse is not None:
        parts.append(feats.sparse[learner.sparse].to_scipy()[rows])
    n_dense = 0
    if learner.dense:
        raw = feats.stack(learner.dense)[rows]
        scaler = Standardizer.fit(raw)
        xd = scaler(raw) * learner.dense_scale
        n_dense = xd.shape[1]
        parts.append(csr_matrix(xd))
    x = hstack(parts).tocsr() if len(parts) > 1 else parts[0]
    m = quality.shape[1]
    width = feats.sparse[learner.sparse].width if learner.sparse is not None else 0
    w_dense = np.zeros((n_dense, m))
    w_sparse = np.zeros((width, m)) if learner.sparse is not None else None
    bias = np.zeros(m)
    for j in range(m):
        seen = np.flatnonzero(weight[rows, j] > 0)
        if not len(seen):
            continue
        coef, b = _fractional_logistic(x[seen], quality[rows[seen], j], learner.c, weight[rows[seen], j])
        if w_sparse is not None:
            w_sparse[:, j] = coef[:width]
        w_dense[:, j] = coef[width:]
        bias[j] = b
    return LinearPredictor(
        list(learner.dense), learner.sparse, scaler, learner.dense_scale, w_dense, w_sparse, bias
    )


def _brier(pred: np.ndarray, quality: np.ndarray, weight: np.ndarray) -> float:
    seen = weight > 0
    return float(np.sum(weight[seen] * (pred[seen] - quality[seen]) ** 2) / np.sum(weight[seen]))


def train_from_logs(
    outcomes: LogOutcomes,
    encoders: Sequence[str] = ("wordllama", "signals", "tfidf"),
    folds: int = 5,
    seed: int = 0,
    prices: Mapping[str, tuple[float, float]] | None = None,
    progress: Progress | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A router artifact trained on rated requests, and a report of how it was chosen.
    `prices` ($ per million tokens, input and output) cost each deployment; deployments
    without one are costed at the blended price their recorded costs imply."""
    from pointsman.learning.artifact import MULTI_MODEL, TWO_MODEL, RouterArtifact
    from pointsman.learning.calibration import (
        CalibrationError,
        Target,
        knob_for,
        multi_model_table,
        two_model_table,
    )
    from pointsman.learning.training import (
        PRESETS,
        _require_sklearn,
        encode,
        fit_encoders,
        fold_ids,
        train_router,
    )

    _require_sklearn()
    say = progress or (lambda _: None)
    models = list(outcomes.models)
    m = len(models)
    two = m == 2
    price = {mm: tuple(p) for mm, p in outcomes.recorded_prices.items()}
    price.update({mm: tuple(p) for mm, p in (prices or {}).items() if mm in models})
    tokens = np.array([-(-len(p) // CHARS_PER_TOKEN) for p in outcomes.prompts], dtype=np.float64)
    out_tokens = np.array([outcomes.output_tokens.get(mm, DEFAULT_OUTPUT_TOKENS) for mm in models])
    priced = all(mm in price for mm in models)
    if not priced:
        if not two:
            missing = [mm for mm in models if mm not in price]
            raise LogsError(
                f"no price for {', '.join(missing)}: give --config (deployment prices) or --prices"
            )
        cost = np.zeros((len(outcomes.prompts), 2))
    else:
        pin = np.array([price[mm][0] for mm in models])
        pout = np.array([price[mm][1] for mm in models])
        cost = (tokens[:, None] * pin[None, :] + out_tokens[None, :] * pout[None, :]) / 1e6
    info: dict[str, Any] = {
        "trained_on": [{"name": "logs", "rows": len(outcomes.prompts)}],
        "logs": outcomes.summary(),
    }
    info.update(meta or {})

    n = len(outcomes.prompts)
    if outcomes.complete:
        say("every prompt is rated on every deployment: the full training recipe applies")
        data = OutcomeData(
            name="logs",
            prompts=list(outcomes.prompts),
            models=models,
            quality=outcomes.quality.copy(),
            # Two models: the strong one costs 1 a call and the weak one 0 (the strong share).
            cost=cost
            if priced
            else np.tile(np.eye(2)[int(np.argmax(outcomes.quality.mean(axis=0)))], (n, 1)),
            prices={mm: price[mm] for mm in models if mm in price},  # type: ignore[misc]
            output_tokens=np.tile(out_tokens, (len(outcomes.prompts), 1)),
        )
        artifact, selection = train_router(
            [data], encoders=encoders, folds=folds, seed=seed, progress=say, meta=info
        )
        return artifact, {"method": "complete", "selection": selection.table, "chosen": selection.chosen}

    folds = max(2, min(folds, n))
    say(f"encoding {n} prompts with {', '.join(encoders)}")
    enc = fit_encoders(outcomes.prompts, encoders)
    feats = encode(enc, outcomes.prompts)
    quality = np.nan_to_num(outcomes.quality, nan=0.0)
    weight = outcomes.ratings
    fold = fold_ids(outcomes.prompts, folds, seed)
    means = np.array([np.average(quality[:, j], weights=weight[:, j]) for j in range(m)])
    baseline = _brier(np.tile(means, (n, 1)), quality, weight)
    table: list[dict[str, Any]] = [{"candidate": "mean rating (no prompt)", "brier": round(baseline, 5)}]
    best: tuple[float, _Learner, np.ndarray] | None = None
    for learner in _learners(list(enc)):
        oof = np.zeros((n, m))
        for k in range(folds):
            train, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            if len(train) and len(held):
                oof[held] = fit_masked_linear(feats, quality, weight, train, learner).predict(
                    feats.subset(held)
                )
        score = _brier(oof, quality, weight)
        table.append({"candidate": learner.name, "brier": round(score, 5)})
        say(f"{learner.name}: out-of-fold Brier {score:.4f}")
        if best is None or score < best[0]:
            best = (score, learner, oof)
    assert best is not None
    _, learner, oof = best
    say(f"chosen: {learner.name}")
    predictor = fit_masked_linear(feats, quality, weight, np.arange(n), learner)
    # Unrated cells take their out-of-fold prediction, so the knob is calibrated on every prompt.
    filled = np.where(weight > 0, quality, oof)
    order = list(range(m))
    if two and filled[:, 0].mean() > filled[:, 1].mean():
        order = [1, 0]  # (weak, strong)
    models = [models[j] for j in order]
    filled, oof, cost = filled[:, order], oof[:, order], cost[:, order]
    predictor.w_dense, predictor.bias = predictor.w_dense[:, order], predictor.bias[order]
    if predictor.w_sparse is not None:
        predictor.w_sparse = predictor.w_sparse[:, order]
    # With both deployments priced, two-model routers weigh dollars like every other router.
    rule = "threshold" if two and not priced else "utility"
    if rule == "threshold":
        cost = np.column_stack([np.zeros(n), np.ones(n)])
        calibration = two_model_table(oof[:, 1] - oof[:, 0], filled)
    else:
        calibration = multi_model_table(oof, cost, filled)
    kind = TWO_MODEL if two else MULTI_MODEL
    key = "threshold" if rule == "threshold" else "lambda"
    presets: dict[str, Any] = {}
    for name, share in PRESETS.items():
        try:
            preset = knob_for(rule, calibration, Target(quality=share))
        except CalibrationError:
            continue
        preset["target"] = {"quality": share}
        presets[name] = preset
    info.update(
        {
            "encoders": list(encoders),
            "folds": folds,
            "seed": seed,
            "selection": table,
            "chosen": [learner.name],
            "weights": [1.0],
            "selection_metric": "out-of-fold Brier score on the rated cells (lower is better)",
            "calibration_data": "ratings, unrated cells filled with out-of-fold predictions",
            "mean_quality": {mm: float(v) for mm, v in zip(models, filled.mean(axis=0), strict=True)},
        }
    )
    artifact = RouterArtifact(
        kind=kind,
        models=models,
        encoders=enc,
        predictor=predictor,
        prices={mm: price[mm] for mm in models if mm in price},  # type: ignore[misc]
        output_tokens={mm: float(outcomes.output_tokens.get(mm, DEFAULT_OUTPUT_TOKENS)) for mm in models},
        cost_ref=1.0 if rule == "threshold" else float(cost.max(axis=1).mean()) or 1.0,
        knob=dict(presets["balanced"]) if "balanced" in presets else {key: 0.0},
        calibration=calibration,
        presets=presets,
        meta=info,
        decision=rule,
    )
    report: dict[str, Any] = {"method": "partial", "selection": table, "chosen": [learner.name]}
    if best[0] >= baseline:
        report["warning"] = (
            "no learner predicts the ratings better than each deployment's mean rating: the prompts "
            f"say little yet about which deployment answers them better ({n} prompts); rate more answers"
        )
    return artifact, report


# --------------------------------------------------------------------------- reading records


def open_records(config: str | None = None, db: str | None = None) -> Any:
    """The record store of a config (PostgreSQL when it has `store.url`, else its SQLite file)
    or the SQLite file `db` (default: the default record path)."""
    from pointsman.store import RecordStore, default_db_path

    path: str | Path | None = db
    if config is not None:
        from pointsman.config import load_config

        settings = load_config(config).store
        if settings.url and db is None:
            from pointsman.store_postgres import PostgresRecordStore

            return PostgresRecordStore(
                settings.url, schema=settings.db_schema, connect_timeout_s=settings.connect_timeout_s
            )
        path = path or settings.path
    path = Path(path) if path else default_db_path()
    if not path.exists():
        raise LogsError(f"{path}: no record database (pass --db FILE or --config FILE)")
    return RecordStore(path)


def config_prices(config: str | None) -> dict[str, tuple[float, float]]:
    """Deployment prices from a config file ($ per million tokens), where set."""
    if config is None:
        return {}
    from pointsman.config import load_config

    return {
        d.name: (d.price.input, d.price.output)
        for d in load_config(config).deployments
        if d.price.input or d.price.output
    }
