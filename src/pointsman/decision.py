"""The one record of why a request went where it went: headers, logs and `--explain` read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import Any


@dataclass(slots=True)
class Attempt:
    """One upstream call: which deployment, and how it ended."""

    deployment: str
    status: int | None = None
    error: str | None = None
    latency_ms: float = 0.0
    first_byte_ms: float | None = None
    # "answer", or "hedge" for a hedged duplicate, or "judge" for a cascade's grading call.
    role: str = "answer"
    # A cascade judge's verdict on this answer, e.g. "rules:refusal_or_unsure".
    verdict: str | None = None
    cost: float = 0.0
    started: float = field(default_factory=perf_counter, repr=False)

    def as_record(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "role": self.role,
            "status": self.status,
            "error": self.error,
            "verdict": self.verdict,
            "latency_ms": round(self.latency_ms, 3),
            "first_byte_ms": None if self.first_byte_ms is None else round(self.first_byte_ms, 3),
            "cost": self.cost,
        }


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
    # The request signals the routing computed (token estimate, language, ...), by name.
    signals: dict[str, Any] = field(default_factory=dict)

    @property
    def route(self) -> str:
        """The condensed form sent as the `x-pointsman-route` header."""
        return f"{self.strategy}:{self.reason}" if self.reason else self.strategy

    @property
    def fallbacks(self) -> int:
        """How many deployments were tried before the one that answered (or all, on failure)."""
        tried = list(dict.fromkeys(a.deployment for a in self.attempts))
        return len(tried) - 1 if self.answered_by else len(tried)

    def as_dict(self, attempts: bool = True) -> dict[str, Any]:
        """Every field as plain data, and the route; without the attempts for the record's
        `decision` column (they have a column of their own). Written out by hand: it runs on
        every request, and `dataclasses.asdict` deep-copies."""
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "requested_model": self.requested_model,
            "strategy": self.strategy,
            "reason": self.reason,
            "plan": list(self.plan),
            "reasons": list(self.reasons),
            "scores": dict(self.scores),
        }
        if attempts:
            data["attempts"] = [a.as_record() for a in self.attempts]
        data["answered_by"] = self.answered_by
        data["signals"] = dict(self.signals)
        data["route"] = self.route
        return data
