"""A trained router on disk: ``router.json`` (everything readable) beside ``arrays.npz`` (the
numbers), loaded without pickle and run with numpy alone.

Two kinds: ``two_model`` (abstract tiers ``weak`` and ``strong``, the strong one the more
accurate in training) and ``multi_model`` (any number of named models). Two decision rules:

- ``utility`` (every router whose models' costs are known, and every many-model router): the
  choice is argmax(predicted quality - lambda x expected dollars per call / cost_ref), expected
  dollars from `pointsman.learning.costs` (prices, the prompt's tokens and each model's expected
  output length, or a per-call cost learned from recorded costs). With lambda >= 0 a model that
  is predicted both better and cheaper always wins over the other.
- ``threshold`` (two-model routers trained without any cost, and artifacts written before the
  cost model): strong when its predicted quality gain over weak exceeds the threshold; the cost
  axis is then the share of strong calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.learning.calibration import Knob, Target, knob_for
from pointsman.learning.costs import CostModel, warn_missing
from pointsman.learning.datasets import CHARS_PER_TOKEN
from pointsman.learning.encoders import CachedEncoder, Encoder, build_encoder
from pointsman.learning.predictors import ArtifactError as ArtifactError  # re-exported
from pointsman.learning.predictors import (
    Features,
    GatedPredictor,
    Predictor,
    load_predictor,
)

FORMAT = "pointsman-router"
VERSION = 1
TWO_MODEL = "two_model"
MULTI_MODEL = "multi_model"
UTILITY = "utility"
THRESHOLD = "threshold"


@dataclass
class Choice:
    """One routing decision of an artifact: the abstract model chosen, all models ranked best
    first, the reason code and the numbers behind it."""

    model: str
    ranking: list[str]
    reason: str
    predicted: dict[str, float]
    scores: dict[str, float] = field(default_factory=dict)
    route: str | None = None


@dataclass
class RouterArtifact:
    kind: str
    models: list[str]
    encoders: dict[str, Encoder]
    predictor: Predictor
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    output_tokens: dict[str, float] = field(default_factory=dict)
    cost_ref: float = 1.0
    knob: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    call_costs: dict[str, float] = field(default_factory=dict)
    decision: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (TWO_MODEL, MULTI_MODEL):
            raise ArtifactError(f"unknown router kind {self.kind!r}")
        if self.kind == TWO_MODEL and len(self.models) != 2:
            raise ArtifactError("a two-model router needs exactly two models (weak, strong)")
        if not self.decision:
            self.decision = THRESHOLD if self.kind == TWO_MODEL else UTILITY
        if self.decision not in (UTILITY, THRESHOLD) or (
            self.kind == MULTI_MODEL and self.decision != UTILITY
        ):
            raise ArtifactError(f"unknown decision rule {self.decision!r} for a {self.kind} router")

    @property
    def knob_key(self) -> str:
        """``threshold`` (threshold rule) or ``lambda`` (utility rule)."""
        return "threshold" if self.decision == THRESHOLD else "lambda"

    @property
    def costs(self) -> CostModel:
        return CostModel(
            list(self.models), dict(self.prices), dict(self.call_costs), dict(self.output_tokens)
        )

    def missing_costs(self, prices: dict[str, tuple[float, float]] | None = None) -> list[str]:
        """Models whose cost per call this router does not know (with `prices` added)."""
        if self.decision == THRESHOLD:
            return []  # the threshold rule never weighs cost: its cost axis is the strong share
        known = {**self.prices, **(prices or {})}
        return [m for m in self.models if m not in known and m not in self.call_costs]

    def _strong_cheaper(self, prices: dict[str, tuple[float, float]] | None) -> bool:
        """Threshold rule with serving prices for both tiers: is the strong tier the cheaper?"""
        if not prices or not all(m in prices for m in self.models):
            return False
        weak, strong = self.models
        return sum(prices[strong]) < sum(prices[weak])

    def warn_missing_costs(
        self, where: str, prices: dict[str, tuple[float, float]] | None = None
    ) -> str | None:
        """Log a warning naming models without a known cost; the message, or None."""
        return warn_missing(where, self.missing_costs(prices))

    # ------------------------------------------------------------------ prediction

    @property
    def tiers(self) -> dict[str, str]:
        """Abstract names a user maps to deployments: ``weak``/``strong`` or the model names."""
        if self.kind == TWO_MODEL:
            return {"weak": self.models[0], "strong": self.models[1]}
        return {m: m for m in self.models}

    def encode(self, texts: Sequence[str]) -> Features:
        feats = Features()
        for name, enc in self.encoders.items():
            if enc.sparse:
                feats.sparse[name] = enc.encode_sparse(texts)  # type: ignore[attr-defined]
            else:
                feats.dense[name] = enc.encode(texts)
        return feats

    @property
    def routes(self) -> list[str]:
        """Route names of a gated router (each with its own expert and knob), else none."""
        return list(self.predictor.routes) if isinstance(self.predictor, GatedPredictor) else []

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted quality, (len(texts), len(models)), each in 0..1."""
        return self.predictor.predict(self.encode(texts))

    def predict_with_routes(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str | None]]:
        """Predicted quality and each text's route (None for routers without routes)."""
        features = self.encode(texts)
        if isinstance(self.predictor, GatedPredictor):
            pred, idx = self.predictor.predict_with_routes(features)
            return pred, [self.predictor.routes[i] for i in idx]
        return self.predictor.predict(features), [None] * len(texts)

    def strong_gain(self, texts: Sequence[str]) -> np.ndarray:
        pred = self.predict(texts)
        gain: np.ndarray = pred[:, 1] - pred[:, 0]
        return gain

    def expected_cost(
        self,
        prompt_tokens: float,
        prices: dict[str, tuple[float, float]] | None = None,
    ) -> np.ndarray:
        """Expected dollars of one call to each model: prompt tokens plus the expected output
        length, at `prices` where given, else the artifact's prices, else its per-call costs
        (0 where none is known: see `missing_costs`)."""
        return self.costs.expected(prompt_tokens, prices)

    def resolve_knob(
        self,
        threshold: float | None = None,
        lam: float | None = None,
        target: Target | None = None,
        preset: str | None = None,
    ) -> Knob:
        """The threshold (two models) or lambda (many) to use, per route where the router has
        routes: explicit (the same for every route), from a target via the stored calibration
        tables, from a named preset, or the artifact's default."""
        key = self.knob_key
        if key == "threshold" and lam is not None:
            raise ArtifactError("lambda applies to routers that weigh cost; this one takes a threshold")
        if key == "lambda" and threshold is not None:
            raise ArtifactError(
                "threshold applies to two-model routers trained without costs; this one weighs "
                "dollars: use lambda, a target or a preset"
            )
        if threshold is not None:
            return Knob(float(threshold))
        if lam is not None:
            return Knob(float(lam))
        if target is not None:
            if not self.calibration:
                raise ArtifactError("this artifact has no calibration table; give the knob explicitly")
            tables = self.calibration.get("routes", {})
            return Knob(
                float(knob_for(self.decision, self.calibration, target)[key]),
                {r: float(knob_for(self.decision, t, target)[key]) for r, t in tables.items()},
            )
        chosen = self.knob
        if preset is not None:
            if preset not in self.presets:
                raise ArtifactError(f"no preset {preset!r} (have: {', '.join(self.presets) or 'none'})")
            chosen = self.presets[preset]
        return Knob(
            float(chosen.get(key, 0.0)),
            {r: float(v[key] if isinstance(v, dict) else v) for r, v in chosen.get("routes", {}).items()},
        )

    def decide(
        self,
        text: str,
        knob: Knob | float,
        prompt_tokens: float | None = None,
        prices: dict[str, tuple[float, float]] | None = None,
        allowed: Sequence[str] | None = None,
    ) -> Choice:
        """Route one prompt. `allowed` limits the models that may be chosen (those with a
        deployment left after the policies); the ranking still lists them all."""
        preds, routes = self.predict_with_routes([text])
        pred, route = preds[0], routes[0]
        if isinstance(knob, Knob):
            knob = knob.for_route(route)
        predicted = {m: float(p) for m, p in zip(self.models, pred, strict=True)}
        allowed_set = set(self.models if allowed is None else allowed)
        if self.decision == THRESHOLD:
            weak, strong = self.models
            gain = float(pred[1] - pred[0])
            wanted = strong if gain > knob else weak
            if gain > 0 and self._strong_cheaper(prices):
                # Dominance: predicted better and cheaper (by the deployments' prices) wins.
                wanted = strong
            other = weak if wanted == strong else strong
            reason = "strong_needed" if wanted == strong else "weak_ok"
            if wanted not in allowed_set and other in allowed_set:
                wanted, other = other, wanted
                reason = f"{reason}_unavailable"
            return Choice(
                wanted,
                [wanted, other],
                reason,
                predicted,
                {"strong_gain": gain, "threshold": knob},
                route,
            )
        tokens = prompt_tokens if prompt_tokens is not None else -(-len(text) // CHARS_PER_TOKEN)
        cost = self.expected_cost(tokens, prices)
        utility = pred - knob * cost / self.cost_ref
        order = sorted(range(len(self.models)), key=lambda j: (-utility[j], cost[j], j))
        ranking = [self.models[j] for j in order]
        usable = [m for m in ranking if m in allowed_set] or ranking
        best_quality = max(predicted[m] for m in usable)
        chosen = usable[0]
        reason = "best_quality" if predicted[chosen] >= best_quality - 1e-12 else "cheaper_enough"
        scores = {m: float(utility[j]) for j, m in enumerate(self.models)}
        scores["lambda"] = knob
        for j, m in enumerate(self.models):
            scores[f"cost:{m}"] = float(cost[j])
        if self.kind == TWO_MODEL:
            scores["strong_gain"] = float(pred[1] - pred[0])
        return Choice(chosen, ranking, reason, predicted, scores, route)

    def decide_batch(
        self, texts: Sequence[str], knob: Knob | float, cost: np.ndarray | None = None
    ) -> np.ndarray:
        """Index of the chosen model for each text (evaluation: costs from the dataset)."""
        pred, routes = self.predict_with_routes(texts)
        return self.choose(pred, routes, knob, cost, texts)

    def choose(
        self,
        pred: np.ndarray,
        routes: Sequence[str | None],
        knob: Knob | float,
        cost: np.ndarray | None = None,
        texts: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Chosen model index per row from predictions already made."""
        k = knob if isinstance(knob, Knob) else Knob(float(knob))
        values = np.array([k.for_route(r) for r in routes])
        if self.decision == THRESHOLD:
            picks: np.ndarray = (pred[:, 1] - pred[:, 0] > values).astype(np.int64)
            return picks
        if cost is None:
            assert texts is not None
            cost = np.stack([self.expected_cost(-(-len(t) // CHARS_PER_TOKEN)) for t in texts])
        utility = pred - values[:, None] * cost / self.cost_ref
        best: np.ndarray = np.argmax(utility - 1e-12 * cost, axis=1)
        return best

    # ------------------------------------------------------------------ storage

    def save(self, path: str | Path) -> Path:
        """Write ``router.json`` and ``arrays.npz`` into the folder `path` (created)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        encoders = []
        for name, enc in self.encoders.items():
            inner = enc.inner if isinstance(enc, CachedEncoder) else enc
            encoders.append({"block": name, **inner.spec()})
            arrays.update({f"enc_{name}_{k}": v for k, v in inner.arrays().items()})
        predictor_spec, predictor_arrays = self.predictor.export("p_")
        arrays.update(predictor_arrays)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "models": self.models,
            "tiers": self.tiers,
            "routes": self.routes,
            "decision": self.decision,
            "prices": {m: list(p) for m, p in self.prices.items()},
            "call_costs": self.call_costs,
            "output_tokens": self.output_tokens,
            "cost_ref": self.cost_ref,
            "knob": self.knob,
            "presets": self.presets,
            "calibration": self.calibration,
            "meta": self.meta,
            "encoders": encoders,
            "predictor": predictor_spec,
        }
        tmp_json = folder / "router.json.tmp"
        tmp_npz = folder / "arrays.tmp.npz"
        tmp_json.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        # mypy matches **arrays against savez_compressed's `allow_pickle: bool` keyword too
        np.savez_compressed(tmp_npz, **arrays)  # type: ignore[arg-type]
        # Replace both files only once both are written, so a reader never sees half a router.
        os.replace(tmp_npz, folder / "arrays.npz")
        os.replace(tmp_json, folder / "router.json")
        return folder

    @classmethod
    def load(cls, path: str | Path, cache_size: int = 4096) -> RouterArtifact:
        folder = resolve_artifact(path)
        doc = read_manifest(folder)
        try:
            with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{folder}/arrays.npz: cannot read ({exc})") from None
        encoders: dict[str, Encoder] = {}
        for spec in doc["encoders"]:
            name = spec["block"]
            own = {k[len(f"enc_{name}_") :]: v for k, v in arrays.items() if k.startswith(f"enc_{name}_")}
            enc = build_encoder(spec, own)
            encoders[name] = CachedEncoder(enc, cache_size) if not enc.sparse else enc
        return cls(
            kind=doc["kind"],
            models=list(doc["models"]),
            encoders=encoders,
            predictor=load_predictor(doc["predictor"], arrays),
            prices={m: (float(p[0]), float(p[1])) for m, p in doc.get("prices", {}).items()},
            output_tokens={m: float(v) for m, v in doc.get("output_tokens", {}).items()},
            cost_ref=float(doc.get("cost_ref", 1.0)),
            knob=dict(doc.get("knob", {})),
            calibration=dict(doc.get("calibration", {})),
            presets=dict(doc.get("presets", {})),
            meta=dict(doc.get("meta", {})),
            call_costs={m: float(v) for m, v in doc.get("call_costs", {}).items()},
            decision=str(doc.get("decision", "")),
        )


def shipped_dir() -> Path:
    return Path(str(resources.files("pointsman") / "data" / "routers"))


def shipped_routers() -> list[str]:
    folder = shipped_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "router.json").exists())


def resolve_artifact(path: str | Path) -> Path:
    """A shipped router by name (``default``, ...) or a folder holding ``router.json``."""
    text = str(path)
    if "/" not in text and "\\" not in text and not text.startswith("."):
        shipped = shipped_dir() / text
        if (shipped / "router.json").exists():
            return shipped
    folder = Path(text).expanduser()
    if folder.is_file() and folder.name == "router.json":
        folder = folder.parent
    if not (folder / "router.json").exists():
        names = ", ".join(shipped_routers()) or "none"
        raise ArtifactError(f"{text}: not a router folder (no router.json) nor a shipped router ({names})")
    return folder


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The artifact's ``router.json``, checked for format and version (arrays not loaded)."""
    folder = resolve_artifact(path)
    doc: dict[str, Any]
    try:
        doc = json.loads((folder / "router.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{folder}/router.json: cannot read ({exc})") from None
    if doc.get("format") != FORMAT:
        raise ArtifactError(f"{folder}/router.json: not a pointsman router (format {doc.get('format')!r})")
    if doc.get("version") != VERSION:
        raise ArtifactError(
            f"{folder}/router.json: version {doc.get('version')} (this pointsman reads {VERSION})"
        )
    return doc
