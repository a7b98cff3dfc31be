"""A trained router picks the deployment: predicted quality per abstract model, one
cost-quality knob, and a mapping from the router's abstract models to your deployments.

```yaml
models:
  auto:
    strategy: learned
    options:
      artifact: default              # a shipped router, or a folder written by `pointsman train`
      mapping: {strong: [gpt-4o], weak: [llama-8b, mistral-7b]}
      target: {strong_share: 0.3}    # or threshold: 0.05 / lambda: 0.2 / preset: economy
```

Routers whose models' costs are known (every router trained with prices or per-call costs, two
models included) rank models by predicted quality minus lambda times expected dollars per call
(reasons ``best_quality`` and ``cheaper_enough``): a model predicted both better and cheaper is
never passed over. Two-model routers trained without any cost (tiers ``weak`` and ``strong``)
send a prompt to the strong tier when its predicted quality gain over the weak tier exceeds the
threshold (reasons ``strong_needed`` and ``weak_ok``). A model whose cost is unknown (no price in
the artifact nor on its mapped deployment) is logged as a warning at start-up. The chosen tier's
deployments come first, the rest follow as fallbacks. numpy and the encoders load when the
strategy is built, once per artifact per process, never per request and never on `import
pointsman`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pointsman.strategies.base import Ranking, Strategy

if TYPE_CHECKING:
    from pointsman.config import Deployment
    from pointsman.learning.artifact import RouterArtifact
    from pointsman.signals import Signals


class LearnedTarget(BaseModel):
    """State the goal instead of the knob: exactly one of these."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    strong_share: float | None = Field(None, ge=0, le=1)
    cost_share: float | None = Field(None, ge=0, le=1.5)
    quality: float | None = Field(None, ge=0, le=1.5)

    @model_validator(mode="after")
    def _exactly_one(self) -> LearnedTarget:
        if sum(v is not None for v in (self.strong_share, self.cost_share, self.quality)) != 1:
            raise ValueError("give exactly one of strong_share, cost_share, quality")
        return self


class LearnedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    artifact: str = "default"
    # Abstract model (two-model routers: `weak`, `strong`) -> deployments, preferred first.
    mapping: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    threshold: float | None = None
    lambda_: float | None = Field(None, alias="lambda", ge=0)
    target: LearnedTarget | None = None
    preset: str | None = None
    # Price many-model choices with the mapped deployments' configured prices when they have one.
    use_deployment_prices: bool = True
    cache_size: int = Field(4096, ge=0)

    @field_validator("mapping", mode="before")
    @classmethod
    def _names_or_name(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (v,) if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_knob(self) -> LearnedOptions:
        given = [
            k
            for k, v in (
                ("threshold", self.threshold),
                ("lambda", self.lambda_),
                ("target", self.target),
                ("preset", self.preset),
            )
            if v is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of threshold, lambda, target, preset (got {', '.join(given)})"
            )
        return self


_ARTIFACTS: dict[tuple[str, float, int], RouterArtifact] = {}
_LOCK = threading.Lock()


def load_artifact(spec: str, cache_size: int = 4096) -> RouterArtifact:
    """The artifact for `spec`, loaded once per process (keyed by folder and its mtime)."""
    # numpy and the encoders load only when a learned route is configured.
    from pointsman.learning.artifact import RouterArtifact, resolve_artifact

    folder = resolve_artifact(spec)
    manifest = Path(folder) / "router.json"
    key = (str(folder.resolve()), manifest.stat().st_mtime, cache_size)
    with _LOCK:
        artifact = _ARTIFACTS.get(key)
        if artifact is None:
            artifact = RouterArtifact.load(folder, cache_size=cache_size)
            _ARTIFACTS[key] = artifact
    return artifact


class LearnedStrategy(Strategy):
    """Route by a trained quality predictor; see the module doc for the options."""

    name = "learned"
    Options = LearnedOptions
    options: LearnedOptions

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._problems: list[str] = []
        self._artifact: RouterArtifact | None = None
        self._knob: Any = None
        self._abstract: dict[str, str] = {}  # abstract name -> artifact model
        self._prices: dict[str, tuple[float, float]] = {}
        try:
            self._artifact = load_artifact(self.options.artifact, self.options.cache_size)
        except Exception as exc:  # any load failure is a config problem, reported by check()
            self._problems.append(f"artifact: {exc}")
            return
        art = self._artifact
        self._abstract = art.tiers
        try:
            from pointsman.learning.calibration import Target  # loaded with the artifact, not at import

            target = None
            if self.options.target is not None:
                t = self.options.target
                target = Target(strong_share=t.strong_share, cost_share=t.cost_share, quality=t.quality)
            self._knob = art.resolve_knob(
                threshold=self.options.threshold,
                lam=self.options.lambda_,
                target=target,
                preset=self.options.preset,
            )
        except ValueError as exc:
            where = (
                "target"
                if self.options.target is not None
                else "preset"
                if self.options.preset
                else "threshold"
            )
            self._problems.append(f"{where}: {exc}")
        if self.options.use_deployment_prices:
            known = {d.name: d for d in self.config.deployments}
            for abstract, names in self.options.mapping.items():
                model = self._abstract.get(abstract)
                dep = known.get(names[0]) if names else None
                if model and dep is not None and (dep.price.input or dep.price.output):
                    self._prices[model] = (dep.price.input, dep.price.output)
        mapped = {
            self._abstract[a] for a, names in self.options.mapping.items() if names and a in self._abstract
        }
        missing = [m for m in art.missing_costs(self._prices) if m in mapped]
        if missing:
            from pointsman.learning.costs import warn_missing

            warn_missing(f"learned router {self.options.artifact!r}", missing)

    @property
    def artifact(self) -> RouterArtifact:
        if self._artifact is None:
            raise RuntimeError("; ".join(self._problems))
        return self._artifact

    @property
    def knob(self) -> Any:
        """The resolved knob (`pointsman.learning.calibration.Knob`), per route if any."""
        return self._knob

    def referenced(self) -> set[str]:
        return {name for names in self.options.mapping.values() for name in names}

    def check(self, path: str) -> list[str]:
        problems = [f"{path}.{p}" for p in self._problems]
        if self._artifact is None:
            return problems
        tiers = list(self._abstract)
        for key, names in self.options.mapping.items():
            if key not in self._abstract:
                problems.append(
                    f"{path}.mapping.{key}: not a model of router {self.options.artifact!r} "
                    f"(expected one of: {', '.join(tiers)})"
                )
            problems += self.check_names(f"{path}.mapping.{key}", names)
        mapped = [k for k, v in self.options.mapping.items() if v and k in self._abstract]
        if self._artifact.kind == "two_model":
            for tier in tiers:
                if tier not in mapped:
                    problems.append(f"{path}.mapping.{tier}: missing: map the {tier!r} tier to deployments")
        elif len(mapped) < 2:
            problems.append(
                f"{path}.mapping: map at least two of the router's models to deployments "
                f"(models: {', '.join(tiers)})"
            )
        return problems

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        art = self.artifact
        alive = [d.name for d in candidates]
        alive_set = set(alive)
        mapping = self.options.mapping
        to_abstract = {model: abstract for abstract, model in self._abstract.items()}
        allowed = [
            model
            for abstract, model in self._abstract.items()
            if any(n in alive_set for n in mapping.get(abstract, ()))
        ]
        text = signals.last_user_text
        scores: dict[str, float]
        if not text.strip():
            means = art.meta.get("mean_quality", {})
            ranking = sorted(art.models, key=lambda m: -means.get(m, 0.0))
            if art.kind == "two_model":
                ranking = list(reversed(art.models))
            reason, scores, notes = "no_prompt", {}, ["no user text to predict from; strongest first"]
        else:
            choice = art.decide(
                text,
                self._knob,
                prompt_tokens=signals.estimated_tokens,
                prices=self._prices,
                allowed=allowed,
            )
            ranking, reason = choice.ranking, choice.reason
            scores = {}
            for model in ranking:
                for name in mapping.get(to_abstract[model], ()):
                    scores.setdefault(name, round(choice.predicted[model], 4))
            via = f"route {choice.route}: " if choice.route else ""
            if art.decision == "threshold":
                notes = [
                    f"{via}strong_gain {choice.scores['strong_gain']:+.3f} "
                    f"vs threshold {choice.scores['threshold']:+.3f}",
                    "predicted quality: "
                    + ", ".join(f"{to_abstract[m]} {choice.predicted[m]:.3f}" for m in art.models),
                ]
            else:
                notes = [
                    f"{via}lambda {choice.scores['lambda']:.4g}; predicted quality: "
                    + ", ".join(f"{m} {choice.predicted[m]:.3f}" for m in ranking[:4])
                ]
        order: list[str] = []
        for model in ranking:
            for name in mapping.get(to_abstract[model], ()):
                if name in alive_set and name not in order:
                    order.append(name)
        order += [n for n in alive if n not in order]
        return Ranking(order, reason, scores, notes)
