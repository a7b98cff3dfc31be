"""The seam every routing strategy plugs into, and the registry that finds one by name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pointsman.config import describe_error, join_path

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


# Filled by `pointsman.strategies` with the built-in strategies, and by `register` with others.
STRATEGIES: dict[str, type[Strategy]] = {}


def register(strategy: type[Strategy]) -> type[Strategy]:
    """Make a strategy available to configs under its `name`."""
    STRATEGIES[strategy.name] = strategy
    return strategy


def build_strategy(route: VirtualModel, config: Config) -> Strategy:
    cls = STRATEGIES[route.strategy]
    return cls(route, cls.Options.model_validate(route.options), config)


def validate_options(path: str, route: VirtualModel, config: Config) -> list[str]:
    """One line per problem with a route's strategy and options, in the config's path style."""
    cls = STRATEGIES.get(route.strategy)
    if cls is None:
        return [
            f"{path}.strategy: unknown strategy {route.strategy!r} "
            f"(expected one of: {', '.join(sorted(STRATEGIES))})"
        ]
    try:
        options = cls.Options.model_validate(route.options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = f"{path}.options"
            for part in error["loc"]:
                where = join_path(where, part)
            problems.append(f"{where}: {describe_error(error)}")
        return problems
    strategy = cls(route, options, config)
    problems = strategy.check(f"{path}.options")
    if not route.deployments and not strategy.referenced():
        problems.append(f"{path}.deployments: a virtual model needs at least one deployment")
    return problems
