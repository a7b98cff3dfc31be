"""Declarative rules: `when` a condition over the request's signals holds, `then` route to a
virtual model, a complexity tier, an ordered deployment list, or a strategy. Rules are tried by
priority (highest first, then in file order); the first that matches and still has a deployment
after the policies wins; `default` (or the route's own deployments) serves the rest.

Conditions are compiled into closures at load, so evaluating one does no parsing::

    when:
      all:
        - language: {in: [de, fr]}          # a list means membership
        - tokens: {gt: 2000, lte: 100000}   # several operators are ANDed
        - not: {pii: true}
        - any:
            - text: {regex: '\\bcontract\\b'}
            - domain: legal                 # a bare value means eq
"""

from __future__ import annotations

import contextvars
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pointsman.config import VirtualModel
from pointsman.language import warm
from pointsman.strategies.base import Ranking, Strategy, build_strategy, validate_options
from pointsman.strategies.tiers import TiersStrategy

if TYPE_CHECKING:
    from pointsman.config import Config, Deployment
    from pointsman.signals import Signals

Check = Callable[["Signals"], bool]

# name -> (kind, getter). Kinds: number, string, bool, set. String values are compared
# case-insensitively (getters return lower case; `text` and `system_prompt` only via
# contains/regex, which ignore case).
SIGNALS: dict[str, tuple[str, Callable[[Signals], Any]]] = {
    "tokens": ("number", lambda s: s.estimated_tokens),
    "max_output_tokens": ("number", lambda s: s.max_output_tokens),
    "images": ("number", lambda s: s.image_count),
    "audio": ("bool", lambda s: s.has_audio),
    "tools": ("number", lambda s: s.tool_count),
    "json": ("bool", lambda s: s.wants_json),
    "language": ("string", lambda s: s.language),
    "language_confidence": ("number", lambda s: s.language_confidence),
    "code": ("number", lambda s: s.code),
    "math": ("number", lambda s: s.math),
    "reasoning": ("number", lambda s: s.reasoning),
    "multi_step": ("number", lambda s: s.multi_step),
    "constraints": ("number", lambda s: s.constraints),
    "structure": ("number", lambda s: s.structure),
    "output_length": ("number", lambda s: s.output_length),
    "chat": ("number", lambda s: s.chat),
    "domain": ("set", lambda s: s.domains),
    "pii": ("set", lambda s: s.pii_kinds),
    "turns": ("number", lambda s: s.turns),
    "depth": ("number", lambda s: s.depth),
    "system_prompt": ("string", lambda s: s.system_prompt),
    "text": ("string", lambda s: s.last_user_text),
    "region": ("string", lambda s: s.region),
    "user_tier": ("string", lambda s: s.user_tier),
    "role": ("string", lambda s: s.role),
    "stage": ("string", lambda s: s.stage),
    "user": ("string", lambda s: s.user),
    "key": ("string", lambda s: s.key),
    "session": ("string", lambda s: s.session),
    "model": ("string", lambda s: s.body.get("model")),
}
# Signals a tiers model provides; a rules model names it in `options.tiers` (or has one in
# the config).
TIER_SIGNALS = ("complexity", "complexity_score")
OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "contains", "regex", "exists")
_CASE_SENSITIVE = frozenset({"text", "system_prompt", "user", "key", "session", "model"})


class RuleError(Exception):
    """A problem in a rule, with the key path it is at."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.line = f"{path}: {message}"


class Then(BaseModel):
    """Where a matching rule sends the request: exactly one of `model`, `tier`, `deployments`
    (in order), or `strategy` (applied to `deployments` with `options`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = None
    tier: str | None = None
    deployments: tuple[str, ...] = ()
    strategy: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    priority: int = 0
    when: Any = None
    then: Then


class RulesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: tuple[Rule, ...] = ()
    default: Then | None = None
    # The tiers model that `then: {tier: ...}` and the `complexity` signals use; default: the
    # config's only virtual model with `strategy: tiers`.
    tiers: str | None = None


# -- compiling conditions ------------------------------------------------------------------------


class _Compiler:
    def __init__(self, tiers: Callable[[str], TiersStrategy]) -> None:
        self.tiers = tiers
        self.used: set[str] = set()

    def node(self, node: Any, path: str) -> Check:
        if node is None:
            return _always
        if not isinstance(node, dict):
            raise RuleError(path, f"expected a mapping of conditions, got {node!r}")
        if not node:
            return _always
        checks = [self.entry(key, value, f"{path}.{key}") for key, value in node.items()]
        return checks[0] if len(checks) == 1 else _all(checks)

    def entry(self, key: str, value: Any, path: str) -> Check:
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise RuleError(path, "expected a non-empty list of conditions")
            checks = [self.node(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return _all(checks) if key == "all" else _any(checks)
        if key == "not":
            inner = self.node(value, path)
            return lambda s: not inner(s)
        kind, getter = self.signal(key, path)
        self.used.add(key)
        if isinstance(value, dict):
            if not value:
                raise RuleError(path, "expected at least one operator")
            checks = [self.operator(key, kind, getter, op, arg, f"{path}.{op}") for op, arg in value.items()]
            return checks[0] if len(checks) == 1 else _all(checks)
        op = "in" if isinstance(value, list) else "eq"
        return self.operator(key, kind, getter, op, value, path)

    def signal(self, key: str, path: str) -> tuple[str, Callable[[Signals], Any]]:
        if key in SIGNALS:
            return SIGNALS[key]
        for prefix in ("metadata.", "header."):
            if key.startswith(prefix) and len(key) > len(prefix):
                name = key[len(prefix) :].lower()
                if prefix == "header.":
                    return "string", lambda s, name=name: s.header(name)
                return "string", lambda s, name=name: s.metadata.get(name)
        if key in TIER_SIGNALS:
            tiers = self.tiers(path)
            if key == "complexity":
                return "string", lambda s: tiers.classify(s).tier
            return "number", lambda s: tiers.classify(s).score
        known = ", ".join([*SIGNALS, *TIER_SIGNALS, "metadata.<name>", "header.<name>"])
        raise RuleError(path, f"unknown signal {key!r} (known: {known})")

    def operator(
        self, key: str, kind: str, get: Callable[[Signals], Any], op: str, arg: Any, path: str
    ) -> Check:
        if op not in OPERATORS:
            raise RuleError(path, f"unknown operator {op!r} (expected one of: {', '.join(OPERATORS)})")
        fold = kind == "string" and key not in _CASE_SENSITIVE
        if op == "exists":
            want = _expect_bool(arg, path)
            if kind == "set":
                return lambda s: bool(get(s)) is want
            return lambda s: (get(s) is not None) is want
        if op == "regex":
            if kind != "string":
                raise RuleError(path, f"regex needs a text signal; {key!r} is a {kind}")
            try:
                pattern = re.compile(_expect(arg, str, path), re.I)
            except re.error as exc:
                raise RuleError(path, f"invalid regular expression: {exc}") from None
            search = pattern.search
            return lambda s: (v := get(s)) is not None and search(v) is not None
        if op in ("lt", "lte", "gt", "gte"):
            if kind != "number":
                raise RuleError(path, f"{op} needs a number signal; {key!r} is a {kind}")
            bound = _expect_number(arg, path)
            compare: Callable[[Any], bool] = {
                "lt": lambda v: v < bound,
                "lte": lambda v: v <= bound,
                "gt": lambda v: v > bound,
                "gte": lambda v: v >= bound,
            }[op]
            return lambda s: compare(get(s))
        if op in ("in", "not_in"):
            if not isinstance(arg, list) or not arg:
                raise RuleError(path, f"{op} needs a non-empty list")
            values = frozenset(_scalar(v, kind, fold, f"{path}[{i}]") for i, v in enumerate(arg))
            if kind == "set":
                hit: Check = lambda s: not values.isdisjoint(get(s))  # noqa: E731
            else:
                hit = lambda s: _norm(get(s), fold) in values  # noqa: E731
            return hit if op == "in" else (lambda s: not hit(s))
        if op == "contains":
            if kind == "set":
                item = _scalar(arg, "string", True, path)
                return lambda s: item in get(s)
            if kind != "string":
                raise RuleError(path, f"contains needs a text or set signal; {key!r} is a {kind}")
            needle = _expect(arg, str, path).lower()
            return lambda s: (v := get(s)) is not None and needle in v.lower()
        # eq / ne
        if kind == "set":
            if isinstance(arg, bool):
                want = arg
                hit = lambda s: bool(get(s)) is want  # noqa: E731
            else:
                item = _scalar(arg, "string", True, path)
                hit = lambda s: item in get(s)  # noqa: E731
        elif kind == "number" and isinstance(arg, bool):
            want = arg
            hit = lambda s: bool(get(s)) is want  # noqa: E731
        else:
            value = _scalar(arg, kind, fold, path)
            hit = lambda s: _norm(get(s), fold) == value  # noqa: E731
        return hit if op == "eq" else (lambda s: not hit(s))


def _always(s: Signals) -> bool:
    return True


def _all(checks: list[Check]) -> Check:
    checks_t = tuple(checks)
    return lambda s: all(c(s) for c in checks_t)


def _any(checks: list[Check]) -> Check:
    checks_t = tuple(checks)
    return lambda s: any(c(s) for c in checks_t)


def _norm(value: Any, fold: bool) -> Any:
    return value.lower() if fold and isinstance(value, str) else value


def _expect(value: Any, kind: type, path: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RuleError(path, f"wrong type: expected a {kind.__name__}, got {value!r}")
    return value


def _expect_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise RuleError(path, f"wrong type: expected true or false, got {value!r}")
    return value


def _expect_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise RuleError(path, f"wrong type: expected a number, got {value!r}")
    return float(value)


def _scalar(value: Any, kind: str, fold: bool, path: str) -> Any:
    if kind == "number":
        return _expect_number(value, path)
    if kind == "bool":
        return _expect_bool(value, path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return _norm(_expect(value, str, path), fold)


# -- targets -------------------------------------------------------------------------------------


class _Target:
    """A compiled `then`."""

    describe: str

    def referenced(self) -> set[str]:
        raise NotImplementedError

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        raise NotImplementedError


class _List(_Target):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.describe = "deployments " + ", ".join(self.names)

    def referenced(self) -> set[str]:
        return set(self.names)

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        alive = {d.name for d in candidates}
        return Ranking([n for n in self.names if n in alive], "list")


class _Delegate(_Target):
    """Another virtual model: its strategy ranks what of its own pool survived, and its
    fallbacks follow."""

    def __init__(self, name: str, route: VirtualModel, strategy: Strategy) -> None:
        self.route, self.strategy = route, strategy
        self.pool = [*route.deployments, *sorted(strategy.referenced() - set(route.deployments))]
        self.pool += [n for n in route.fallbacks if n not in self.pool]
        self.pool_set = frozenset(self.pool)
        self.describe = f"model {name}"

    def referenced(self) -> set[str]:
        return set(self.pool)

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        mine = [d for d in candidates if d.name in self.pool_set]
        if not mine:
            return Ranking([], "none")
        ranking = self.strategy.rank(mine, signals)
        alive = {d.name for d in mine}
        order = list(dict.fromkeys(ranking.order))
        order += [n for n in self.route.fallbacks if n in alive and n not in order]
        return Ranking(order, f"{self.strategy.name}:{ranking.reason}", ranking.scores, ranking.notes)


class _Tier(_Target):
    def __init__(self, tier: str, tiers: TiersStrategy) -> None:
        self.tier, self.tiers = tier, tiers
        self.describe = f"tier {tier}"

    def referenced(self) -> set[str]:
        return set(self.tiers.deployments[self.tier])

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        ranking = self.tiers.rank_tier(self.tier, candidates)
        ranking.reason = f"tier:{ranking.reason}"
        return ranking


class _Inline(_Target):
    def __init__(self, strategy: Strategy, names: Sequence[str]) -> None:
        self.strategy = strategy
        self.names = set(names) | strategy.referenced()
        self.describe = f"strategy {strategy.name} over " + ", ".join(names)

    def referenced(self) -> set[str]:
        return set(self.names)

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        mine = [d for d in candidates if d.name in self.names]
        if not mine:
            return Ranking([], "none")
        ranking = self.strategy.rank(mine, signals)
        ranking.reason = f"{self.strategy.name}:{ranking.reason}"
        return ranking


@dataclass(slots=True)
class _CompiledRule:
    name: str
    priority: int
    matches: Check
    target: _Target


# Virtual models whose rules are being built, to catch `then: {model: ...}` cycles.
_building: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "pointsman_rules_building", default=()
)


class RulesStrategy(Strategy):
    """Declarative rules over the request's signals; see the module docstring."""

    name = "rules"
    Options = RulesOptions
    options: RulesOptions

    def __init__(self, route: VirtualModel, options: BaseModel, config: Config) -> None:
        super().__init__(route, options, config)
        self.problems: list[str] = []
        self._tiers: TiersStrategy | None = None
        self._own_name = next((n for n, vm in config.models.items() if vm is route), "")
        token = _building.set((*_building.get(), self._own_name))
        try:
            self._compile()
        finally:
            _building.reset(token)

    def _compile(self) -> None:
        compiler = _Compiler(self._tiers_for)
        rules: list[_CompiledRule] = []
        for i, rule in enumerate(self.options.rules):
            path = f"rules[{i}]"
            try:
                matches = compiler.node(rule.when, f"{path}.when")
                target = self._target(rule.then, f"{path}.then")
            except RuleError as exc:
                self.problems.append(exc.line)
                continue
            rules.append(_CompiledRule(rule.name, rule.priority, matches, target))
        # Highest priority first; `sorted` is stable, so ties keep file order.
        self._rules = sorted(rules, key=lambda r: -r.priority)
        self._default: _Target | None = None
        if self.options.default is not None:
            try:
                self._default = self._target(self.options.default, "default")
            except RuleError as exc:
                self.problems.append(exc.line)
        if compiler.used & {"language", "language_confidence"}:
            # The language model takes ~0.8 s to load: do it now, off the request path.
            languages = tuple(self.config.signals.languages) or None
            threading.Thread(target=warm, args=(languages,), daemon=True).start()
        names = [r.name for r in self.options.rules]
        for i, name in enumerate(names):
            if name in names[:i]:
                self.problems.append(f"rules[{i}].name: duplicate rule name {name!r}")

    def _tiers_for(self, path: str) -> TiersStrategy:
        if self._tiers is not None:
            return self._tiers
        name = self.options.tiers
        if name is None:
            found = [n for n, vm in self.config.models.items() if vm.strategy == "tiers"]
            if len(found) != 1:
                raise RuleError(
                    path,
                    "name the tiers model in options.tiers"
                    + (f" (one of: {', '.join(found)})" if found else " (the config has none)"),
                )
            name = found[0]
        vm = self.config.models.get(name)
        if vm is None or vm.strategy != "tiers":
            raise RuleError("tiers", f"{name!r} is not a virtual model with strategy: tiers")
        strategy = build_strategy(vm, self.config)
        assert isinstance(strategy, TiersStrategy)
        self._tiers = strategy
        return strategy

    def _target(self, then: Then, path: str) -> _Target:
        given = [
            k
            for k, v in (
                ("model", then.model),
                ("tier", then.tier),
                ("strategy", then.strategy),
                ("deployments", then.deployments and not then.strategy),
            )
            if v
        ]
        if len(given) != 1:
            raise RuleError(
                path,
                "give exactly one of model, tier, deployments, strategy"
                + (f" (got {', '.join(given)})" if given else ""),
            )
        if then.model is not None:
            vm = self.config.models.get(then.model)
            if vm is None:
                known = ", ".join(self.config.models)
                raise RuleError(f"{path}.model", f"unknown virtual model {then.model!r} (known: {known})")
            if then.model in _building.get():
                chain = " -> ".join([*_building.get(), then.model])
                raise RuleError(f"{path}.model", f"rules delegate in a cycle: {chain}")
            return _Delegate(then.model, vm, build_strategy(vm, self.config))
        if then.tier is not None:
            tiers = self._tiers_for(f"{path}.tier")
            if then.tier not in tiers.names:
                raise RuleError(
                    f"{path}.tier", f"unknown tier {then.tier!r} (known: {', '.join(tiers.names)})"
                )
            return _Tier(then.tier, tiers)
        unknown = self.check_names(f"{path}.deployments", then.deployments)
        if unknown:
            raise RuleError(*unknown[0].split(": ", 1))
        if then.strategy is None:
            return _List(then.deployments)
        inline = VirtualModel(strategy=then.strategy, deployments=then.deployments, options=then.options)
        problems = validate_options(path, inline, self.config)
        if problems:
            raise RuleError(*problems[0].split(": ", 1))
        return _Inline(build_strategy(inline, self.config), then.deployments)

    def referenced(self) -> set[str]:
        names: set[str] = set()
        for rule in self._rules:
            names |= rule.target.referenced()
        if self._default is not None:
            names |= self._default.referenced()
        return names

    def check(self, path: str) -> list[str]:
        return [f"{path}.{line}" for line in self.problems]

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        skipped: list[str] = []
        for rule in self._rules:
            if not rule.matches(signals):
                continue
            ranking = rule.target.rank(candidates, signals)
            if ranking.order:
                notes = [
                    *skipped,
                    f"rules: matched {rule.name!r} -> {rule.target.describe} ({ranking.reason})",
                ]
                return Ranking(ranking.order, rule.name, ranking.scores, notes + ranking.notes)
            skipped.append(f"rules: {rule.name!r} matched but none of its deployments survived the policies")
        if self._default is not None:
            ranking = self._default.rank(candidates, signals)
            notes = [
                *skipped,
                f"rules: no rule matched -> default {self._default.describe} ({ranking.reason})",
            ]
            return Ranking(ranking.order, "default", ranking.scores, notes + ranking.notes)
        alive = {d.name for d in candidates}
        order = [n for n in self.route.deployments if n in alive]
        return Ranking(
            order, "default", notes=[*skipped, "rules: no rule matched -> the route's deployments"]
        )

    def evaluate(self, signals: Signals) -> list[tuple[str, bool]]:
        """Every rule's verdict on `signals`, in evaluation order (for explanations)."""
        return [(rule.name, rule.matches(signals)) for rule in self._rules]
