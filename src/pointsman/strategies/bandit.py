"""An online bandit: Thompson sampling over the route's deployments, learning from feedback.

```yaml
models:
  auto:
    strategy: bandit
    deployments: [gpt-4o, claude-sonnet, llama-70b]   # the arms
    options:
      bucket: domain          # a separate bandit per detected domain (or language, tier: the
                              #   caller's x-pointsman-tier, role, header:<name>, none)
      floor: 0.05             # every arm keeps at least 5% of its bucket's traffic ...
      ceiling: 0.9            # ... and none takes more than 90%
```

Each arm's chance of a good answer has a Beta posterior, Beta(prior_a + rewards, prior_b +
observations - rewards), fed by `POST /v1/feedback` (a score in 0..1; thumbs up is 1, down 0).
The primary deployment is drawn with the probability that its arm is the best one (estimated
by sampling the posteriors), after that probability is bounded to [floor, ceiling] so that
exploration never stops and never takes over. The other arms follow, best posterior mean first.
Statistics live in the router's state (in memory, per process) and survive config reloads.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pointsman.strategies.base import Ranking, Strategy

if TYPE_CHECKING:
    from pointsman.config import Deployment
    from pointsman.signals import Signals

BUCKETS = ("none", "domain", "language", "tier", "role")
# The note a bandit decision carries, so feedback finds the bandit and bucket it came from.
_NOTE = "bandit route={route} bucket={bucket}"


class BanditOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # What separates one bandit from another: one of BUCKETS or "header:<name>".
    bucket: str = "none"
    floor: float = Field(0.05, ge=0, le=1)
    ceiling: float = Field(1.0, ge=0, le=1)
    # Beta prior of every arm: pseudo-counts of good and bad answers.
    prior: tuple[float, float] = (1.0, 1.0)
    # Posterior draws used to estimate each arm's chance of being the best.
    samples: int = Field(512, ge=16, le=100_000)
    seed: int | None = None

    @field_validator("bucket")
    @classmethod
    def _known_bucket(cls, value: str) -> str:
        if value in BUCKETS or (value.startswith("header:") and len(value) > 7):
            return value
        raise ValueError(f"expected one of {', '.join(BUCKETS)} or 'header:<name>', got {value!r}")

    @field_validator("prior")
    @classmethod
    def _positive_prior(cls, value: tuple[float, float]) -> tuple[float, float]:
        if min(value) <= 0:
            raise ValueError("both prior pseudo-counts must be above 0")
        return value

    @model_validator(mode="after")
    def _ordered_bounds(self) -> BanditOptions:
        if self.floor > self.ceiling:
            raise ValueError(f"floor {self.floor} is above ceiling {self.ceiling}")
        return self


class BanditStrategy(Strategy):
    """Thompson sampling per route bucket with bounded exploration; see the module doc."""

    name = "bandit"
    Options = BanditOptions
    options: BanditOptions

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.route_name = next((name for name, vm in self.config.models.items() if vm is self.route), "?")
        self._random = random.Random(self.options.seed)
        self._seed = self.options.seed
        # (bucket, arms, statistics) -> bounded shares; recomputed only when feedback arrives.
        self._shares: dict[tuple[Any, ...], dict[str, float]] = {}

    def check(self, path: str) -> list[str]:
        arms = len(self.route.deployments)
        o = self.options
        problems = []
        if arms and o.floor * arms > 1 + 1e-9:
            problems.append(
                f"{path}.floor: {o.floor} x {arms} arms is more than all the traffic (at most {1 / arms:.3g})"
            )
        if arms and o.ceiling * arms < 1 - 1e-9:
            problems.append(
                f"{path}.ceiling: {o.ceiling} x {arms} arms is less than all the traffic "
                f"(at least {1 / arms:.3g})"
            )
        return problems

    # -- ranking ------------------------------------------------------------------------------

    def bucket_of(self, signals: Signals) -> str:
        """The bucket a request's feedback counts in, e.g. ``domain=maths`` or ``all``."""
        kind = self.options.bucket
        if kind == "none":
            return "all"
        if kind == "domain":
            value = signals.domain
        elif kind == "language":
            value = signals.language
        elif kind == "tier":
            value = signals.user_tier
        elif kind == "role":
            value = signals.role
        else:
            value = signals.header(kind[7:])
        return f"{kind}={value or '-'}"

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        names = [d.name for d in candidates]
        arm_set = set(self.route.deployments)
        arms = [n for n in names if n in arm_set]
        if not arms:
            return Ranking(names, "no_arm", notes=["no arm of the bandit survived the policies"])
        bucket = self.bucket_of(signals)
        stats = self.state.bandit_stats(self.route_name, bucket) if self.state is not None else {}
        shares = self.shares(bucket, arms, stats)
        draw, primary = self._random.random(), arms[-1]
        for arm in arms:
            draw -= shares[arm]
            if draw < 0:
                primary = arm
                break
        means = {arm: self._mean(stats.get(arm)) for arm in arms}
        best = max(arms, key=lambda a: (means[a], -arms.index(a)))
        rest = sorted((a for a in arms if a != primary), key=lambda a: -means[a])
        order = [primary, *rest, *(n for n in names if n not in arm_set)]
        prior_a, prior_b = self.options.prior
        notes = [
            _NOTE.format(route=self.route_name, bucket=bucket),
            "arms: "
            + ", ".join(
                f"{a} mean {means[a]:.3f} n={stats.get(a, (0.0, 0.0))[0]:g} share {shares[a]:.3f}"
                for a in arms
            ),
        ]
        return Ranking(
            order,
            "exploit" if primary == best else "explore",
            {a: round(shares[a], 4) for a in arms},
            notes,
        )

    def _mean(self, stat: tuple[float, float] | None) -> float:
        a, b = self.options.prior
        n, r = stat or (0.0, 0.0)
        return (a + r) / (a + b + n)

    def shares(
        self, bucket: str, arms: Sequence[str], stats: Mapping[str, tuple[float, float]]
    ) -> dict[str, float]:
        """The share of the bucket's traffic each arm gets as primary: its chance of being the
        best arm under the posteriors, bounded to [floor, ceiling]."""
        key = (bucket, tuple(arms), tuple(stats.get(a, (0.0, 0.0)) for a in arms))
        cached = self._shares.get(key)
        if cached is not None:
            return cached
        import numpy as np

        prior_a, prior_b = self.options.prior
        n = np.array([stats.get(a, (0.0, 0.0))[0] for a in arms])
        r = np.array([stats.get(a, (0.0, 0.0))[1] for a in arms])
        rng = np.random.default_rng(self._seed)
        draws = rng.beta(prior_a + r, prior_b + n - r, size=(self.options.samples, len(arms)))
        wins = np.bincount(draws.argmax(axis=1), minlength=len(arms)) / self.options.samples
        bounded = bound_shares(wins.tolist(), self.options.floor, self.options.ceiling)
        result = dict(zip(arms, bounded, strict=True))
        if len(self._shares) > 4096:
            self._shares.clear()
        self._shares[key] = result
        return result

    # -- learning -----------------------------------------------------------------------------

    def learn(
        self, record: Mapping[str, Any], reward: float, previous: float | None = None
    ) -> dict[str, Any] | None:
        """Count a rating of a recorded request this bandit routed: the arm that answered gains
        one observation with this reward (a revised rating replaces the earlier one). Returns
        what was updated, or None when the request was not this bandit's to learn from."""
        found = bandit_of(record)
        arm = record.get("deployment")
        if found is None or self.state is None or not arm or arm not in self.route.deployments:
            return None
        route, bucket = found
        if route != self.route_name:
            return None
        if previous is None:
            self.state.bandit_update(route, bucket, arm, reward)
        else:
            self.state.bandit_update(route, bucket, arm, reward - previous, count=0.0)
        n, r = self.state.bandit_stats(route, bucket)[arm]
        return {
            "route": route,
            "bucket": bucket,
            "arm": arm,
            "observations": n,
            "mean": round(self._mean((n, r)), 4),
        }


def bandit_of(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(route, bucket) of a recorded decision made by a bandit, else None."""
    decision = record.get("decision") or {}
    if decision.get("strategy") != BanditStrategy.name:
        return None
    prefix = "bandit route="
    for note in decision.get("reasons") or ():
        if isinstance(note, str) and note.startswith(prefix):
            route, sep, bucket = note[len(prefix) :].partition(" bucket=")
            if sep:
                return route, bucket
    return None


def bound_shares(shares: Sequence[float], floor: float, ceiling: float) -> list[float]:
    """`shares` (summing to 1) as a split whose every share lies in [floor, ceiling]: each is
    clip(t x share, floor, ceiling) with the one scale t that makes them sum to 1, so the shares
    between the bounds keep their proportions. Bounds that no split can meet (floor x arms > 1,
    ceiling x arms < 1) are relaxed to an even split's."""
    k = len(shares)
    if k == 0:
        return []
    floor, ceiling = min(floor, 1.0 / k), max(ceiling, 1.0 / k)
    # A vanishing even part, so arms that never win can still be raised to the floor.
    p = [(1 - 1e-9) * float(v) + 1e-9 / k for v in shares]

    def total(t: float) -> float:
        return sum(min(ceiling, max(floor, t * v)) for v in p)

    low, high = 0.0, 1.0
    while total(high) < 1.0:
        high *= 2.0
    for _ in range(100):
        mid = (low + high) / 2
        if total(mid) < 1.0:
            low = mid
        else:
            high = mid
    out = [min(ceiling, max(floor, high * v)) for v in p]
    excess = sum(out) - 1.0
    # Bisection leaves a rounding error; take it from an arm strictly inside the bounds.
    inside = [i for i, v in enumerate(out) if floor < v < ceiling] or list(range(k))
    out[inside[0]] -= excess
    return out
