"""Who may send what: virtual keys (401/403), their rate and parallelism limits (429), and money
budgets per key, user, team and globally (downgrade past the soft limit, 429 past the hard one)."""

from __future__ import annotations

import asyncio
import hmac
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pointsman.budgets import Budget, BudgetLedger, period_bounds
from pointsman.config import Config, Deployment
from pointsman.errors import AuthenticationFailed, PermissionDenied, RateLimited
from pointsman.keys import KeyStore, VirtualKey
from pointsman.state_redis import RedisUnavailable, SharedState

if TYPE_CHECKING:
    from pointsman.decision import Decision
    from pointsman.signals import Signals
    from pointsman.state import MemoryState


@dataclass(slots=True)
class Grant:
    """What admission decided for one request; settled once the request ends."""

    key: VirtualKey | None = None
    master: bool = False
    user: str | None = None
    budgets: list[Budget] = field(default_factory=list)
    estimate: float = 0.0
    reserved: bool = False
    parallel: str | None = None
    settled: bool = False
    # Set when the limits or budgets were decided in Redis (shared state).
    shared_parallel: str | None = None
    shared_budgets: list[str] | None = None
    # The shared budgets' hash keys when they were decided locally (Redis away): the spend is
    # owed to them.
    owed_budgets: list[str] | None = None
    # The id of the reservation in the shared budgets.
    reservation: str = ""
    # The request in its key's rate window: scope, member, time (ms), tokens charged, and
    # whether Redis counted it; settled with the actual tokens.
    rate: tuple[str, str, int, int, bool] | None = None


class AccessControl:
    def __init__(
        self,
        config: Config,
        keys: KeyStore | None,
        state: MemoryState,
        ledger: BudgetLedger,
        shared: SharedState | None = None,
    ) -> None:
        self.config = config
        self.shared = shared
        self.keys = keys
        self.state = state
        self.ledger = ledger
        auth = config.auth
        self.master_key = os.environ.get(auth.master_key_env) or None
        self._master = self.master_key.encode("utf-8", "surrogatepass") if self.master_key else None
        # Static client keys (server.api_keys) admit the API beside the master and virtual keys.
        self._static = tuple(k.encode("utf-8", "surrogatepass") for k in config.server.api_keys)
        self.enabled = auth.enabled if auth.enabled is not None else self.master_key is not None
        if self.enabled and keys is None:
            raise ValueError("virtual keys need a key store (records enabled or a --db path)")
        if keys is not None:
            keys.cache_s, keys.outage_cache_s = config.keys.cache_s, config.keys.outage_cache_s

    def is_master(self, secret: str | None) -> bool:
        # Compared as bytes: compare_digest refuses str with non-ASCII characters.
        return bool(
            secret
            and self._master is not None
            and hmac.compare_digest(secret.encode("utf-8", "surrogatepass"), self._master)
        )

    def is_static(self, secret: str | None) -> bool:
        """One of the static client keys of `server.api_keys`."""
        if not secret or not self._static:
            return False
        raw = secret.encode("utf-8", "surrogatepass")
        return any(hmac.compare_digest(raw, key) for key in self._static)

    # -- admission ----------------------------------------------------------------------------

    async def admit(self, secret: str | None, body: Mapping[str, Any], tokens: Callable[[], int]) -> Grant:
        """Authenticate the key and enforce its allowances and limits; raises 401/403/429.
        `tokens` estimates the request's tokens, asked only for keys with a token limit."""
        user = body.get("user") if isinstance(body.get("user"), str) else None
        grant = Grant(user=user)
        if self.enabled:
            grant.key = await self.aauthenticate(secret)
            # None is the master key or a static client key; only the master goes unbudgeted.
            grant.master = grant.key is None and self.is_master(secret)
            if grant.key is not None:
                self._check_allowances(grant.key, str(body.get("model")))
                await self._check_limits(grant, grant.key, body, tokens)
        grant.budgets = self.budgets_for(grant)
        return grant

    def authenticate(self, secret: str | None) -> VirtualKey | None:
        """The active key for a secret, None for the master key or a static client key; raises
        401 otherwise. Only meaningful when auth is enabled."""
        if not secret:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        if self.is_master(secret) or self.is_static(secret):
            return None
        assert self.keys is not None
        return self._usable(self.keys.lookup(secret))

    async def aauthenticate(self, secret: str | None) -> VirtualKey | None:
        """`authenticate` without blocking the event loop: a key not in the cache is read in
        a worker thread. Raises `KeysUnavailable` (503) when the key store cannot be read and
        the key was not seen within `keys.outage_cache_s`."""
        if not secret:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        if self.is_master(secret) or self.is_static(secret):
            return None
        assert self.keys is not None
        return self._usable(await self.keys.alookup(secret))

    @staticmethod
    def _usable(key: VirtualKey | None) -> VirtualKey:
        if key is None:
            raise AuthenticationFailed("invalid API key")
        if key.revoked_at is not None:
            raise AuthenticationFailed(f"API key {key.name!r} was revoked")
        if not key.active():
            raise AuthenticationFailed(f"API key {key.name!r} expired")
        return key

    def _check_allowances(self, key: VirtualKey, model: str) -> None:
        if not key.can("chat"):
            raise PermissionDenied(
                f"API key {key.name!r} is read-only (scopes: {', '.join(key.scopes)}): "
                "it may not send requests",
                code="read_only_key",
            )
        if not key.allows(model):
            raise PermissionDenied(
                f"API key {key.name!r} may not use model {model!r} (allowed: {', '.join(key.models)})",
                code="model_not_allowed",
            )

    async def _check_limits(
        self, grant: Grant, key: VirtualKey, body: Mapping[str, Any], estimate: Callable[[], int]
    ) -> None:
        """rpm, tpm and parallelism: in Redis when the state is shared (so they hold exactly
        across replicas), else in this process. While Redis is away (or a round trip failed)
        this replica admits only its share of each limit: limit / replicas."""
        if key.rpm is None and key.tpm is None and key.max_parallel is None:
            return
        scope = f"key:{key.id}"
        # Reserved: the prompt and as much output as the request allows; settled after.
        tokens = estimate() + _max_output(body) if key.tpm is not None else 0
        member, ts_ms = uuid.uuid4().hex, int(time.time() * 1000)
        shared = self.shared
        share = 1
        if shared is not None:
            if shared.healthy:
                try:
                    allowed, wait, which = await shared.take_rate(
                        scope, key.rpm, key.tpm, tokens, key.max_parallel, member=member, ts_ms=ts_ms
                    )
                except RedisUnavailable:
                    pass
                else:
                    if not allowed:
                        raise self._limited(key, which, wait)
                    if key.max_parallel is not None:
                        grant.shared_parallel = scope
                    # Counted here too: should Redis go away, this replica's share starts from
                    # what it admitted in the last minute.
                    self.state.count_request(scope, tokens)
                    grant.rate = (scope, member, ts_ms, tokens, True)
                    return
            share = shared.replicas
        requests, used = self.state.rates(scope)
        rpm, tpm, parallel_limit = (
            _share_of(key.rpm, share),
            _share_of(key.tpm, share),
            _share_of(key.max_parallel, share),
        )
        if rpm is not None and requests >= rpm:
            raise self._limited(key, "rpm", self.state.window_reset_in(scope))
        if tpm is not None and used + tokens > tpm:
            raise self._limited(key, "tpm", self.state.window_reset_in(scope))
        parallel = f"key-parallel:{key.id}"
        if parallel_limit is not None and self.state.in_flight(parallel) >= parallel_limit:
            raise self._limited(key, "parallel", 0)
        self.state.count_request(scope, tokens)
        grant.rate = (scope, member, ts_ms, tokens, False)
        if shared is not None:
            shared.owe_request(scope, ts_ms, member, tokens)
        if key.max_parallel is not None:
            grant.parallel = parallel
            self.state.enter(parallel)

    @staticmethod
    def _limited(key: VirtualKey, which: str, wait: float) -> RateLimited:
        if which == "parallel":
            return RateLimited(
                f"API key {key.name!r} allows {key.max_parallel} requests in parallel",
                code="too_many_parallel_requests",
            )
        limit = f"{key.rpm} requests" if which == "rpm" else f"{key.tpm} tokens"
        return RateLimited(
            f"API key {key.name!r} is limited to {limit} per minute",
            headers={"retry-after": str(max(1, round(wait)))},
        )

    def trusted_metadata(self, grant: Grant) -> dict[str, str] | None:
        """What the key says about its caller (metadata, tier, region) for the signals; it
        overrides any `x-pointsman-*` header the client sent, so a key's residency cannot be
        talked out of."""
        key = grant.key
        if key is None or (key.region is None and key.tier is None and not key.metadata):
            return None
        trusted = {name.lower(): value for name, value in key.metadata.items()}
        if key.tier is not None:
            trusted["tier"] = key.tier
        if key.region is not None:
            trusted["region"] = key.region
        return trusted

    # -- budgets -------------------------------------------------------------------------------

    def budgets_for(self, grant: Grant) -> list[Budget]:
        if grant.master:
            return []
        settings = self.config.budgets
        budgets = []
        key = grant.key
        if key is not None and key.budget is not None:
            budgets.append(Budget(f"key:{key.id}", f"key {key.name!r}", key.budget, key.budget_period))
        if grant.user and settings.users is not None:
            limit = settings.users
            budgets.append(Budget(f"user:{grant.user}", f"user {grant.user!r}", limit.amount, limit.period))
        team = key.team if key is not None else None
        if team and team in settings.teams:
            limit = settings.teams[team]
            budgets.append(Budget(f"team:{team}", f"team {team!r}", limit.amount, limit.period))
        if settings.total is not None:
            budgets.append(
                Budget("global", "the global budget", settings.total.amount, settings.total.period)
            )
        return budgets

    def downgrade_target(self, grant: Grant, model: str) -> str | None:
        """The virtual model to use instead once a budget is past its soft limit."""
        if not grant.budgets:
            return None
        if self.ledger.past_soft_limit(grant.budgets, self.config.budgets.soft_limit) is None:
            return None
        return self.config.budgets.downgrade.get(model)

    async def charge_plan(self, grant: Grant, decision: Decision, signals: Signals) -> None:
        """Check the plan's worst-case cost against the budgets and reserve it. Past the soft
        limit the cheapest deployments go first; past the hard limit only zero-priced ones may
        serve, and with none the request gets a 429 naming the budget and its reset."""
        if not grant.budgets:
            return
        out = signals.max_output_tokens or self.config.budgets.default_max_output_tokens
        deployments = [self.config.deployment(n) for n in decision.plan]

        def worst(ds: list[Deployment]) -> float:
            return max((d.cost(signals.estimated_tokens, out) for d in ds), default=0.0)

        soft = self.ledger.past_soft_limit(grant.budgets, self.config.budgets.soft_limit)
        if soft is not None and "budget: soft limit" not in " ".join(decision.reasons):
            deployments.sort(key=lambda d: d.price.input + d.price.output)
            decision.plan = [d.name for d in deployments]
            decision.reasons.append(f"budget: soft limit of {soft.label} reached; cheapest deployments first")
        estimate = worst(deployments)
        exhausted = await self._reserve(grant, estimate)
        if exhausted is not None:
            free = [d for d in deployments if d.price.input == 0 and d.price.output == 0]
            if not free:
                resets = self.ledger.resets_at(exhausted)
                spent = self.ledger.spent(exhausted)
                when = datetime.fromtimestamp(resets, UTC).strftime("%Y-%m-%d %H:%M UTC")
                raise RateLimited(
                    f"budget exhausted: {exhausted.label} allows ${exhausted.amount:.2f} per "
                    f"{exhausted.period} (${spent:.4f} spent, this request could cost up to "
                    f"${estimate:.4f}); it resets at {when}",
                    code="budget_exceeded",
                    headers={"retry-after": str(max(1, round(resets - time.time())))},
                )
            decision.plan = [d.name for d in free]
            decision.reasons.append(f"budget: {exhausted.label} exhausted; only zero-priced deployments")
            await self._reserve(grant, 0.0)

    async def _reserve(self, grant: Grant, estimate: float) -> Budget | None:
        """Reserve `estimate` on all the grant's budgets, or return the one it would overrun
        (reserving nothing). Atomic in Redis when the state is shared; while Redis is away,
        against this replica's share of what was left."""
        shared = self.shared
        if shared is None:
            exhausted = self.ledger.exhausted_by(grant.budgets, estimate) if estimate > 0 else None
        else:
            keys, seeds, expire_at = [], [], 0.0
            for budget in grant.budgets:
                start, resets = period_bounds(budget.period, time.time())
                keys.append(shared.budget_key(budget, start))
                seeds.append(self.ledger.spent(budget))
                expire_at = max(expire_at, resets + 86400)
            if shared.healthy:
                rid = uuid.uuid4().hex
                try:
                    index, states = await shared.reserve(grant.budgets, keys, seeds, estimate, expire_at, rid)
                except RedisUnavailable:
                    pass
                else:
                    # The local view follows the shared one, for soft limits and for a fallback.
                    for budget, (spent, reserved) in zip(grant.budgets, states, strict=True):
                        self.ledger.observe_spent(budget, spent, reserved)
                    if index:
                        return grant.budgets[index - 1]
                    grant.estimate, grant.reserved, grant.shared_budgets = estimate, True, keys
                    grant.reservation = rid
                    return None
            # A single failed round trip while Redis is healthy is judged on a fresh share.
            outage = shared.outage if not shared.healthy else None
            exhausted = (
                self.ledger.exhausted_by_share(grant.budgets, estimate, outage, shared.replicas)
                if estimate > 0
                else None
            )
            if exhausted is None:
                grant.owed_budgets = keys
        if exhausted is None:
            self.ledger.reserve(grant.budgets, estimate)
            grant.estimate, grant.reserved = estimate, True
        return exhausted

    def settle(self, grant: Grant, cost: float, tokens: int | None = None) -> None:
        """The request ended: replace its reservations with what it really used, `cost` in
        dollars on its budgets and `tokens` (prompt and completion; None: the estimate stands)
        in its key's token window, and free its parallel slot. Idempotent. Shared budgets,
        windows and slots are settled in Redis in the background."""
        if grant.settled:
            return
        grant.settled = True
        if grant.shared_budgets is not None:
            self.ledger.settle(grant.budgets, 0.0, cost)
        elif grant.budgets:
            self.ledger.settle(grant.budgets, grant.estimate if grant.reserved else 0.0, cost)
            if grant.owed_budgets is not None and self.shared is not None and cost > 0:
                self.shared.owe_spend(grant.owed_budgets, cost)
        if grant.parallel is not None:
            self.state.leave(grant.parallel)
        settle_tokens = False
        token_limited = grant.key is not None and grant.key.tpm is not None
        if token_limited and grant.rate is not None and tokens is not None and tokens != grant.rate[3]:
            scope, member, _ts_ms, charged, counted_shared = grant.rate
            self.state.adjust_tokens(scope, tokens - charged)
            if self.shared is not None:
                if counted_shared:
                    settle_tokens = True
                else:
                    self.shared.owe_tokens(scope, member, tokens)
        if self.shared is not None and (
            grant.shared_budgets is not None or grant.shared_parallel is not None or settle_tokens
        ):
            asyncio.ensure_future(self._settle_shared(grant, cost, tokens if settle_tokens else None))

    async def _settle_shared(self, grant: Grant, cost: float, tokens: int | None) -> None:
        assert self.shared is not None
        if grant.shared_budgets is not None:
            await self.shared.settle(grant.shared_budgets, grant.reservation, cost)
        if tokens is not None and grant.rate is not None:
            scope, member, ts_ms, charged, _ = grant.rate
            await self.shared.settle_tokens(scope, member, ts_ms, charged, tokens)
        if grant.shared_parallel is not None:
            await self.shared.release_parallel(grant.shared_parallel)

    def remaining(self) -> dict[str, float]:
        """Money left in each configured budget (global and team), and per key if asked to."""
        settings = self.config.budgets
        budgets = []
        if settings.total is not None:
            budgets.append(Budget("global", "global", settings.total.amount, settings.total.period))
        for team, limit in settings.teams.items():
            budgets.append(Budget(f"team:{team}", f"team:{team}", limit.amount, limit.period))
        if self.config.metrics.per_key_labels and self.keys is not None:
            for key in self.keys.list():
                if key.budget is not None and key.active():
                    budgets.append(Budget(f"key:{key.id}", f"key:{key.name}", key.budget, key.budget_period))
        return {b.label: self.ledger.remaining(b) for b in budgets}


def _share_of(limit: int | None, replicas: int) -> int | None:
    """One replica's share of a limit while they cannot coordinate (at least 1)."""
    return None if limit is None else max(1, limit // replicas)


def _max_output(body: Mapping[str, Any]) -> int:
    value = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def describe_auth(config: Config, environ: Mapping[str, str] | None = None) -> str:
    """One line on which keys admit what, for `serve` and `config check` to print."""
    env = os.environ if environ is None else environ
    name = config.auth.master_key_env
    master = bool(env.get(name))
    virtual = config.auth.enabled if config.auth.enabled is not None else master
    static = len(config.server.api_keys)
    admits = []
    if master:
        admits.append(f"the master key (${name}) admits admin, dashboard and the API")
    if virtual:
        admits.append("virtual keys admit the API")
    if static:
        plural = "s" if static > 1 else ""
        admits.append(f"{static} static client key{plural} (server.api_keys) admit the API")
    if not virtual and not static:
        open_api = f"the API is open to anyone who can reach it (set server.api_keys or ${name})"
        admits.append(open_api)
    return "auth: " + "; ".join(admits)
