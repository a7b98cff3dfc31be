"""The one record of why a request went where it went: headers, logs and `--explain` read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Attempt:
    """One upstream call: which deployment, and how it ended."""

    deployment: str
    status: int | None = None
    error: str | None = None
    latency_ms: float = 0.0
    first_byte_ms: float | None = None


@dataclass(slots=True)
class Decision:
    request_id: str
    requested_model: str
    strategy: str = ""
    reason: str = ""
    plan: list[str] = field(default_factory=list)
    # Each entry: "removed <deployment>: <why>" from policies, or a strategy's notes.
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    answered_by: str | None = None

    @property
    def route(self) -> str:
        """The condensed form sent as the `x-pointsman-route` header."""
        return f"{self.strategy}:{self.reason}" if self.reason else self.strategy

    @property
    def fallbacks(self) -> int:
        """How many deployments were tried before the one that answered (or all, on failure)."""
        tried = list(dict.fromkeys(a.deployment for a in self.attempts))
        return len(tried) - 1 if self.answered_by else len(tried)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["route"] = self.route
        return data
