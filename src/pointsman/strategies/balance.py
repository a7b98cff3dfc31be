"""Load balancing within a group of equivalent deployments."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field

from pointsman.strategies.base import Ranking
from pointsman.strategies.static import WeightedOptions, WeightedStrategy, weighted_shuffle

if TYPE_CHECKING:
    from pointsman.config import Deployment
    from pointsman.signals import Signals


class BalanceOptions(WeightedOptions):
    # A WeightedOptions (weights, seed), since BalanceStrategy reuses WeightedStrategy's code.
    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["weighted", "least_in_flight", "latency", "cost", "hash"] = "least_in_flight"
    weights: dict[str, float] = Field(default_factory=dict)
    # latency: share of requests sent to a random other deployment, and the idle time after
    # which a deployment is tried again whatever its average says (so a recovered one is seen).
    explore: float = Field(0.05, ge=0, le=1)
    revisit_after_s: float = Field(30.0, gt=0)
    # hash: where the session key comes from: "user" (the body's `user`) or "header:<name>".
    hash_key: str = "header:x-pointsman-session"
    seed: int | None = None


def _score(key: str, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest(), "big")


class BalanceStrategy(WeightedStrategy):
    """Spreads traffic over the route's deployments: weighted, least in flight, lowest moving
    latency (with bounded exploration), cheapest, or consistent hashing of a session key
    (rendezvous hashing: only the keys of a deployment that leaves or joins move). Deployments
    at their rpm/tpm limit or resting are skipped by dispatch whatever the order."""

    name = "balance"
    Options = BalanceOptions
    options: BalanceOptions

    def check(self, path: str) -> list[str]:
        problems = super().check(path)
        key = self.options.hash_key
        if key != "user" and not (key.startswith("header:") and len(key) > 7):
            problems.append(f"{path}.hash_key: expected 'user' or 'header:<name>', got {key!r}")
        return problems

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        method = self.options.method
        names = [d.name for d in candidates]
        if method == "hash":
            key = self._session_key(signals)
            if key is None:
                return Ranking(self._shuffle(names), "no_session_key")
            return Ranking(sorted(names, key=lambda n: _score(key, n), reverse=True), "session_hash")
        if method == "weighted":
            return Ranking(self._shuffle(names), "weighted_draw")
        if method == "cost":

            def price(d: Deployment) -> float:
                return d.price.input * signals.estimated_tokens + d.price.output * max(
                    signals.max_output_tokens, 256
                )

            cheapest = sorted(candidates, key=price)
            return Ranking(
                [d.name for d in cheapest], "cheapest", {d.name: price(d) / 1e6 for d in candidates}
            )
        state = self.state
        if state is None:
            return Ranking(names, "no_state")
        if method == "least_in_flight":
            # Ties broken at random so equal deployments share the load.
            keyed = sorted(names, key=lambda n: (state.in_flight(n), self._random.random()))
            return Ranking(keyed, "least_in_flight", {n: float(state.in_flight(n)) for n in names})
        # latency
        stale = [
            n for n in names if state.idle_for(n) > self.options.revisit_after_s or state.latency(n) is None
        ]
        if stale and (len(stale) < len(names) or self._random.random() < 0.5):
            first = self._random.choice(stale)
            rest = sorted((n for n in names if n != first), key=lambda n: state.latency(n) or 0.0)
            return Ranking([first, *rest], "explore_unmeasured")
        ordered = sorted(names, key=lambda n: state.latency(n) or 0.0)
        if len(ordered) > 1 and self._random.random() < self.options.explore:
            pick = self._random.choice(ordered[1:])
            ordered.remove(pick)
            ordered.insert(0, pick)
            return Ranking(ordered, "explore")
        return Ranking(
            ordered, "lowest_latency", {n: round((state.latency(n) or 0.0) * 1000, 3) for n in names}
        )

    def _session_key(self, signals: Signals) -> str | None:
        key = self.options.hash_key
        if key == "user":
            user = signals.body.get("user")
            return user if isinstance(user, str) and user else None
        return signals.header(key[7:])

    def _shuffle(self, names: list[str]) -> list[str]:
        return weighted_shuffle(names, self.options.weights, self._random)
