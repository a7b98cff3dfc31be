"""The seam every routing strategy plugs into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from pointsman.config import Config, Deployment, VirtualModel
    from pointsman.signals import Signals
    from pointsman.state import MemoryState


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(slots=True)
class Ranking:
    """A strategy's answer: deployments best first, a reason code, and optional per-deployment
    scores and notes for the explanation."""

    order: list[str]
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Strategy:
    """Ranks the candidates that survived the policies. Built once at config load.

    Subclasses set `name`, optionally an `Options` pydantic model (validated at load, errors
    reported under `models.<name>.options`), and implement `rank`.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    # The router's health and load state, set by the router once built.
    state: MemoryState | None = None

    def __init__(self, route: VirtualModel, options: BaseModel, config: Config) -> None:
        self.route = route
        self.options = options
        self.config = config

    def referenced(self) -> set[str]:
        """Deployment names this strategy may choose beyond the route's own list."""
        return set()

    def check(self, path: str) -> list[str]:
        """Problems with the options that need the whole config (e.g. unknown names)."""
        return []

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        raise NotImplementedError

    def check_names(self, path: str, names: Sequence[str], keyed: bool = False) -> list[str]:
        """A line per unknown deployment name; `keyed` for names that are mapping keys."""
        known = list(dict.fromkeys(d.name for d in self.config.deployments))
        hint = f"(known: {', '.join(known)})"
        return [
            f"{path}.{name}: unknown deployment {name!r} {hint}"
            if keyed
            else f"{path}[{i}]: unknown deployment {name!r} {hint}"
            for i, name in enumerate(names)
            if name not in known
        ]
