"""A few simple conditions on the request choose a deployment list; the full rules engine
(`all`/`any`/`not`, priorities, tiers) builds on the same seam."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pointsman.config import check_regex
from pointsman.strategies.base import Ranking, Strategy

if TYPE_CHECKING:
    from pointsman.config import Deployment
    from pointsman.signals import Signals


class When(BaseModel):
    """Every field given must hold (they are ANDed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    images: bool | None = None
    tools: bool | None = None
    json_output: bool | None = None
    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    keywords: tuple[str, ...] = ()
    regex: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return check_regex(value)


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    when: When
    use: tuple[str, ...] = Field(min_length=1)


class ConditionsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    conditions: tuple[Condition, ...] = ()


class _Compiled:
    """A condition turned into plain checks once, so evaluation does no parsing."""

    __slots__ = ("name", "use", "when", "keywords", "pattern", "headers")

    def __init__(self, condition: Condition) -> None:
        self.name = condition.name
        self.use = condition.use
        self.when = condition.when
        self.keywords = tuple(k.lower() for k in condition.when.keywords)
        self.pattern = re.compile(condition.when.regex, re.I) if condition.when.regex else None
        self.headers = {k.lower(): v for k, v in condition.when.headers.items()}

    def matches(self, s: Signals) -> bool:
        w = self.when
        if w.images is not None and s.has_images != w.images:
            return False
        if w.tools is not None and s.has_tools != w.tools:
            return False
        if w.json_output is not None and s.wants_json != w.json_output:
            return False
        if w.min_tokens is not None and s.estimated_tokens < w.min_tokens:
            return False
        if w.max_tokens is not None and s.estimated_tokens > w.max_tokens:
            return False
        if self.keywords:
            text = s.last_user_text.lower()
            if not any(k in text for k in self.keywords):
                return False
        if self.pattern is not None and not self.pattern.search(s.last_user_text):
            return False
        return all(s.header(k) == v for k, v in self.headers.items())


class ConditionsStrategy(Strategy):
    """First condition that matches (and has a deployment left after the policies) wins; the
    route's own `deployments` are the default."""

    name = "conditions"
    Options = ConditionsOptions
    options: ConditionsOptions

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._compiled = [_Compiled(c) for c in self.options.conditions]

    def referenced(self) -> set[str]:
        return {name for c in self.options.conditions for name in c.use}

    def check(self, path: str) -> list[str]:
        problems: list[str] = []
        for i, c in enumerate(self.options.conditions):
            problems += self.check_names(f"{path}.conditions[{i}].use", c.use)
        return problems

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        alive = {d.name for d in candidates}
        for condition in self._compiled:
            if condition.matches(signals):
                order = [n for n in condition.use if n in alive]
                if order:
                    return Ranking(order, condition.name)
        default = [n for n in self.route.deployments if n in alive]
        return Ranking(default, "default")
