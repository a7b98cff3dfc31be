"""Strategies rank the deployments that survived the policies; see `base.Strategy`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from pointsman.strategies.balance import BalanceStrategy
from pointsman.strategies.bandit import BanditStrategy
from pointsman.strategies.base import Ranking, Strategy
from pointsman.strategies.conditions import ConditionsStrategy
from pointsman.strategies.learned import LearnedStrategy
from pointsman.strategies.rules import RulesStrategy
from pointsman.strategies.static import OrderedStrategy, WeightedStrategy
from pointsman.strategies.tiers import TiersStrategy

if TYPE_CHECKING:
    from pointsman.config import Config, VirtualModel

STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s
    for s in (
        OrderedStrategy,
        WeightedStrategy,
        ConditionsStrategy,
        BalanceStrategy,
        RulesStrategy,
        TiersStrategy,
        LearnedStrategy,
        BanditStrategy,
    )
}


def register(strategy: type[Strategy]) -> type[Strategy]:
    """Make a strategy available to configs under its `name`."""
    STRATEGIES[strategy.name] = strategy
    return strategy


def build_strategy(route: VirtualModel, config: Config) -> Strategy:
    cls = STRATEGIES[route.strategy]
    return cls(route, cls.Options.model_validate(route.options), config)


def validate_options(path: str, route: VirtualModel, config: Config) -> list[str]:
    """One line per problem with a route's strategy and options, in the config's path style."""
    from pointsman.config import describe_error, join_path

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


__all__ = ["STRATEGIES", "Ranking", "Strategy", "build_strategy", "register", "validate_options"]
