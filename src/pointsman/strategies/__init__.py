"""Strategies rank the deployments that survived the policies; see `base.Strategy`."""

from __future__ import annotations

from pointsman.config import Config, register_check
from pointsman.strategies.balance import BalanceStrategy
from pointsman.strategies.bandit import BanditStrategy
from pointsman.strategies.base import (
    STRATEGIES,
    Ranking,
    Strategy,
    build_strategy,
    register,
    validate_options,
)
from pointsman.strategies.conditions import ConditionsStrategy
from pointsman.strategies.learned import LearnedStrategy
from pointsman.strategies.rules import RulesStrategy
from pointsman.strategies.static import OrderedStrategy, WeightedStrategy
from pointsman.strategies.tiers import TiersStrategy

for _strategy in (
    OrderedStrategy,
    WeightedStrategy,
    ConditionsStrategy,
    BalanceStrategy,
    RulesStrategy,
    TiersStrategy,
    LearnedStrategy,
    BanditStrategy,
):
    register(_strategy)


@register_check
def check_strategies(config: Config) -> list[str]:
    """Each virtual model's strategy and options, validated by the strategy itself."""
    problems: list[str] = []
    for vname, vm in config.models.items():
        problems.extend(validate_options(f"models.{vname}", vm, config))
    return problems


__all__ = [
    "STRATEGIES",
    "Ranking",
    "Strategy",
    "build_strategy",
    "check_strategies",
    "register",
    "validate_options",
]
