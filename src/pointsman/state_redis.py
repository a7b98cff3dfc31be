"""Routing state shared by replicas through Redis.

Every replica keeps its own `MemoryState` as the fast local view that the request path reads
without waiting. On top of it:

- health (open circuits, cooldowns) is published when it changes here and pulled every
  `sync_interval_s`, so a circuit one replica opened is open for all of them;
- per-key rate limits and parallelism, and budgets, are decided atomically in Redis by Lua
  scripts, one bounded round trip each (`timeout_s`), so limits hold exactly across replicas;
  token limits and budgets are charged an estimate at admission and settled with the actual
  after (`settle_tokens`, `settle`);
- every replica leaves a heartbeat, so each knows how many share the limits.

Redis counts as away after `unhealthy_after` failed round trips in a row (one slow call is not
an outage). Meanwhile every replica decides with its local state, admitting its share
(1/replicas) of each limit and of what was left of each budget; a request whose round trip
failed is decided the same way. What was admitted locally is owed to Redis and added once it
answers again (the request windows, the spend, the reservations to release), together with the
health this replica saw, so the shared totals are right after an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pointsman.budgets import Budget
    from pointsman.config import StateSettings
    from pointsman.state import MemoryState

log = logging.getLogger("pointsman.state")

WINDOW_MS = 60_000

# Sliding one-minute window of requests and tokens for one key; also its parallel slots.
# KEYS: requests zset, tokens zset, parallel counter
# ARGV: now_ms, rpm (-1: none), tpm (-1: none), tokens, member, max_parallel (-1: none)
RATE_SCRIPT = """
local now = tonumber(ARGV[1])
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local member, parallel = ARGV[5], tonumber(ARGV[6])
-- A retry of a call whose answer was lost: it was admitted then.
if redis.call('ZSCORE', KEYS[1], member) then return {1, 0, ''} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
local count = redis.call('ZCARD', KEYS[1])
if rpm >= 0 and count >= rpm then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + 60000 - now, 'rpm'}
end
if tpm >= 0 then
  local used = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    used = used + tonumber(string.match(m, ':(%d+)$'))
  end
  if used + tokens > tpm then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local wait = 1000
    if oldest[2] then wait = tonumber(oldest[2]) + 60000 - now end
    return {0, wait, 'tpm'}
  end
end
if parallel >= 0 then
  local running = tonumber(redis.call('GET', KEYS[3]) or '0')
  if running >= parallel then return {0, 0, 'parallel'} end
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 600000)
end
redis.call('ZADD', KEYS[1], now, member)
redis.call('ZADD', KEYS[2], now, member .. ':' .. tokens)
redis.call('PEXPIRE', KEYS[1], 60000)
redis.call('PEXPIRE', KEYS[2], 60000)
return {1, 0, ''}
"""

# Reserve `estimate` on every budget, or on none if one would be overrun, under the request's
# reservation id (so a retried call reserves once and the settlement releases once).
# KEYS: one hash per budget and period; ARGV: estimate, expire_at_ms, reservation id, then per
# budget its amount and the spend recorded before this process started (used only to seed a new
# hash). Returns {index of the exhausted budget (0: none), spent_1, reserved_1, spent_2, ...}.
RESERVE_SCRIPT = """
local estimate, rid = tonumber(ARGV[1]), 'r:' .. ARGV[3]
local again = redis.call('HEXISTS', KEYS[1], rid) == 1
local out = {0}
for i, key in ipairs(KEYS) do
  local amount, seed = tonumber(ARGV[2 + 2 * i]), ARGV[3 + 2 * i]
  redis.call('HSETNX', key, 'spent', seed)
  redis.call('HSETNX', key, 'reserved', '0')
  redis.call('PEXPIREAT', key, tonumber(ARGV[2]))
  local spent = tonumber(redis.call('HGET', key, 'spent'))
  local reserved = tonumber(redis.call('HGET', key, 'reserved'))
  table.insert(out, tostring(spent))
  table.insert(out, tostring(reserved))
  if not again and out[1] == 0 and estimate > 0 and estimate > amount - spent - reserved + 1e-12 then
    out[1] = i
  end
end
if out[1] == 0 and not again then
  for _, key in ipairs(KEYS) do
    redis.call('HSET', key, rid, ARGV[1])
    if estimate > 0 then redis.call('HINCRBYFLOAT', key, 'reserved', estimate) end
  end
end
return out
"""

# Replace a reservation with the real cost, once. KEYS: budget hashes; ARGV: reservation id,
# actual cost.
SETTLE_SCRIPT = """
local rid = 'r:' .. ARGV[1]
for _, key in ipairs(KEYS) do
  local estimate = tonumber(redis.call('HGET', key, rid))
  if estimate then
    redis.call('HDEL', key, rid)
    if estimate > 0 then redis.call('HINCRBYFLOAT', key, 'reserved', -estimate) end
    if tonumber(ARGV[2]) > 0 then redis.call('HINCRBYFLOAT', key, 'spent', ARGV[2]) end
  end
end
return 1
"""

# Replace a request's estimated tokens in the window with the actual count (once: the estimate's
# member is removed only if still there). KEYS: tokens zset; ARGV: old member, new member, ts_ms.
SETTLE_TOKENS_SCRIPT = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[2])
end
return 1
"""


class RedisUnavailable(Exception):
    """Redis did not answer in time; the caller falls back to local state."""


class SharedState:
    """The Redis side of a router's state; see the module docstring."""

    def __init__(self, settings: StateSettings, local: MemoryState, deployments: Sequence[str]) -> None:
        self.settings = settings
        self.local = local
        self.deployments = list(deployments)
        self.prefix = settings.prefix
        self.healthy = False
        self.round_trips = 0
        # Failed round trips in a row; Redis is away once they reach `unhealthy_after`.
        self.failures = 0
        # Counts the outages, so local shares are computed once per outage.
        self.outage = 0
        self.replica_id = uuid.uuid4().hex
        self._replicas_seen = 1
        self._client: Any = None
        self._pool: Any = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: dict[str, tuple[str, float]] = {}
        # While Redis was away: budget hash key -> dollars spent locally, added to the shared
        # budgets once it is back; and the settlements of shared reservations that failed
        # (budget keys, reservation id, actual cost), made again then.
        self._unsynced: dict[str, float] = {}
        self._unsettled: list[tuple[list[str], str, float]] = []
        # Requests admitted locally: rate scope -> [(ts_ms, member, tokens)], added to the
        # shared windows once Redis answers.
        self._unsynced_rates: dict[str, list[tuple[int, str, int]]] = {}
        self._scripts: dict[str, Any] = {}
        local.listener = self._changed
        # Called when another replica announces a config reload.
        self.on_reload: Callable[[], None] | None = None
        self._config_version: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (without failing: an unreachable Redis means degraded) and start syncing."""
        if self._task is not None:
            return
        import redis.asyncio as aioredis

        url = self.settings.url
        assert url is not None, "the router builds a SharedState only when state.url is set"
        self._loop = asyncio.get_running_loop()
        # A burst waits for a free connection (within the call's timeout) instead of failing.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=100,
            timeout=None,
            socket_connect_timeout=max(0.5, self.settings.timeout_s),
            socket_timeout=max(0.5, self.settings.timeout_s * 10),
            health_check_interval=0,
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        for name, source in (
            ("rate", RATE_SCRIPT),
            ("reserve", RESERVE_SCRIPT),
            ("settle", SETTLE_SCRIPT),
            ("settle_tokens", SETTLE_TOKENS_SCRIPT),
        ):
            self._scripts[name] = self._client.register_script(source)
        await self._check()
        self._task = asyncio.ensure_future(self._sync_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            await self._pool.disconnect()
            self._client = None

    @property
    def replicas(self) -> int:
        """How many replicas share the limits: configured, or seen in the heartbeats."""
        return self.settings.replicas or max(1, self._replicas_seen)

    def _failed(self) -> None:
        self.failures += 1
        if self.healthy and self.failures >= self.settings.unhealthy_after:
            self.healthy = False
            self.outage += 1
            log.warning(
                "state: Redis failed %d times in a row; deciding limits locally, 1/%d of each",
                self.failures,
                self.replicas,
            )

    async def _check(self) -> None:
        try:
            # A (re)connection takes several round trips: more time than one call.
            async with asyncio.timeout(max(1.0, 4 * self.settings.timeout_s)):
                await self._client.ping()
        except Exception:
            if self.healthy:
                self._failed()
            return
        self.failures = 0
        if not self.healthy:
            self.healthy = True
            log.warning("state: Redis answers again; adding what was admitted locally")
            await self._reconcile()

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, each try bounded by `timeout_s`; raises RedisUnavailable once Redis
        counts as away. Every script is idempotent, so a try whose answer is late (a slow
        network, a busy process) is simply made again while Redis counts as up: a request is
        never decided locally while Redis answers. A connection that fails counts against
        Redis's health; lateness does not (a busy process is late for everything): the sync
        loop judges that, and a Redis that stops answering is away after `unhealthy_after` of
        its syncs."""
        while True:
            if not self.healthy or self._client is None:
                raise RedisUnavailable()
            self.round_trips += 1
            try:
                async with asyncio.timeout(self.settings.timeout_s):
                    result = await self._scripts[script](keys=keys, args=args)
            except TimeoutError:
                continue
            except Exception as exc:
                self._failed()
                raise RedisUnavailable() from exc
            self.failures = 0
            return result

    # -- health --------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _changed(self, kind: str, deployment: str, seconds: float) -> None:
        self._outbox[deployment + "\x00" + ("cooldown" if kind == "cooldown" else "circuit")] = (
            kind,
            seconds,
        )

    async def _sync_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asleep = loop.time()
            await asyncio.sleep(self.settings.sync_interval_s)
            # A process this late waking up is busy: a late answer then says nothing of Redis.
            busy = loop.time() - asleep - self.settings.sync_interval_s > self.settings.timeout_s / 2
            if not self.healthy:
                await self._check()
                continue
            try:
                async with asyncio.timeout(max(0.5, self.settings.timeout_s * 2)):
                    await self.sync_health()
                    if self._unsynced or self._unsynced_rates or self._unsettled:
                        await self._push_owed()
            except TimeoutError:
                if not busy:
                    self._failed()
            except Exception:
                self._failed()
            else:
                self.failures = 0

    async def sync_health(self) -> None:
        """Publish this replica's health changes, then adopt everyone's (one pipeline)."""
        outbox, self._outbox = self._outbox, {}
        pipe = self._client.pipeline(transaction=False)
        for key, (kind, seconds) in outbox.items():
            deployment = key.split("\x00")[0]
            if kind == "closed":
                pipe.delete(self._key("open", deployment))
            else:
                name = "cooldown" if kind == "cooldown" else "open"
                pipe.set(self._key(name, deployment), "1", px=max(1, int(seconds * 1000)))
        for deployment in self.deployments:
            pipe.pttl(self._key("cooldown", deployment))
            pipe.pttl(self._key("open", deployment))
        pipe.get(self._key("config_version"))
        # The heartbeat: replicas seen within a few sync intervals share the limits.
        now_ms = int(time.time() * 1000)
        alive_ms = int(max(2.0, 10 * self.settings.sync_interval_s) * 1000)
        replicas = self._key("replicas")
        pipe.zadd(replicas, {self.replica_id: now_ms})
        pipe.zremrangebyscore(replicas, "-inf", now_ms - alive_ms)
        pipe.zcard(replicas)
        pipe.pexpire(replicas, 2 * alive_ms)
        results = await pipe.execute()
        self._replicas_seen = max(1, int(results[-2]))
        results = results[:-4]
        ttls = results[len(outbox) : -1]
        self.round_trips += 1
        version = int(results[-1] or 0)
        if self._config_version is None:
            self._config_version = version
        elif version != self._config_version:
            self._config_version = version
            if self.on_reload is not None:
                self.on_reload()
        for i, deployment in enumerate(self.deployments):
            cooldown_ms, open_ms = ttls[2 * i], ttls[2 * i + 1]
            self.local.apply_remote(deployment, max(0, cooldown_ms) / 1000, max(0, open_ms) / 1000)

    async def _reconcile(self) -> None:
        """Redis is back: republish what this replica knows and add the spend it charged."""
        for deployment in self.deployments:
            cooling = self.local.cooling_for(deployment)
            if cooling > 0:
                self._changed("cooldown", deployment, cooling)
            if self.local.circuit(deployment) == "open":
                self._changed("open", deployment, self.local.unavailable_for(deployment))
        await self._push_owed()

    async def _push_owed(self) -> None:
        """Add what was admitted locally to the shared budgets and request windows."""
        unsynced, self._unsynced = self._unsynced, {}
        rates, self._unsynced_rates = self._unsynced_rates, {}
        unsettled, self._unsettled = self._unsettled, []
        horizon = int(time.time() * 1000) - WINDOW_MS
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, spent in unsynced.items():
                pipe.hincrbyfloat(key, "spent", spent)
            for keys, rid, actual in unsettled:
                pipe.eval(SETTLE_SCRIPT, len(keys), *keys, rid, repr(actual))
            for scope, admitted in rates.items():
                recent = [entry for entry in admitted if entry[0] > horizon]
                if not recent:
                    continue
                requests, tokens = self._key("rpm", scope), self._key("tpm", scope)
                pipe.zadd(requests, {member: ts for ts, member, _ in recent})
                pipe.zadd(tokens, {f"{member}:{count}": ts for ts, member, count in recent})
                pipe.pexpire(requests, WINDOW_MS)
                pipe.pexpire(tokens, WINDOW_MS)
            await pipe.execute()
        except Exception:
            for key, spent in unsynced.items():
                self._unsynced[key] = self._unsynced.get(key, 0.0) + spent
            self._unsettled += unsettled
            for scope, admitted in rates.items():
                self._unsynced_rates.setdefault(scope, []).extend(admitted)
            self._failed()

    def owe_request(self, scope: str, ts_ms: int, member: str, tokens: int) -> None:
        """A request admitted locally (Redis away or slow), to count in the shared window later."""
        self._unsynced_rates.setdefault(scope, []).append((ts_ms, member, tokens))

    def owe_tokens(self, scope: str, member: str, tokens: int) -> None:
        """Correct the token count of a request owed with `owe_request`. (One counted in Redis
        whose settlement failed keeps its estimate there.)"""
        owed = self._unsynced_rates.get(scope, [])
        for i, (ts, owed_member, _count) in enumerate(owed):
            if owed_member == member:
                owed[i] = (ts, member, tokens)
                return

    def owe_spend(self, keys: list[str], spent: float) -> None:
        """Spend charged locally on shared budgets, to add once Redis answers."""
        for key in keys:
            self._unsynced[key] = self._unsynced.get(key, 0.0) + spent

    async def announce_reload(self) -> None:
        """Tell the other replicas to reload their config (they do within a sync interval)."""
        version = await self._client.incr(self._key("config_version"))
        self._config_version = int(version)

    # -- limits --------------------------------------------------------------------------------

    async def take_rate(
        self,
        scope: str,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
        max_parallel: int | None,
        *,
        member: str | None = None,
        ts_ms: int | None = None,
    ) -> tuple[bool, float, str]:
        """Count one request against a key's shared limits: (allowed, seconds to wait, which).
        `member` and `ts_ms` name the request in the window, for `settle_tokens`."""
        result = await self._call(
            "rate",
            [self._key("rpm", scope), self._key("tpm", scope), self._key("parallel", scope)],
            [
                int(time.time() * 1000) if ts_ms is None else ts_ms,
                -1 if rpm is None else rpm,
                -1 if tpm is None else tpm,
                tokens,
                member or uuid.uuid4().hex,
                -1 if max_parallel is None else max_parallel,
            ],
        )
        allowed, wait_ms, which = int(result[0]), float(result[1]), result[2]
        return bool(allowed), max(0.0, wait_ms / 1000), which.decode() if isinstance(which, bytes) else which

    async def settle_tokens(self, scope: str, member: str, ts_ms: int, estimate: int, actual: int) -> None:
        """Replace a request's estimated tokens in the shared window with the actual count."""
        try:
            await self._call(
                "settle_tokens",
                [self._key("tpm", scope)],
                [f"{member}:{estimate}", f"{member}:{actual}", ts_ms],
            )
        except RedisUnavailable:
            self.owe_tokens(scope, member, actual)

    async def release_parallel(self, scope: str) -> None:
        if not self.healthy or self._client is None:
            return
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                await self._client.decr(self._key("parallel", scope))
        except Exception:
            self._failed()

    # -- budgets -------------------------------------------------------------------------------

    def budget_key(self, budget: Budget, period_start: float) -> str:
        return self._key("budget", budget.scope, str(int(period_start)))

    async def reserve(
        self,
        budgets: list[Budget],
        keys: list[str],
        seeds: list[float],
        estimate: float,
        expire_at: float,
        rid: str,
    ) -> tuple[int, list[tuple[float, float]]]:
        """Atomically reserve on all budgets or none, under reservation id `rid`: (1-based
        index of the budget that would be overrun or 0, [(spent, reserved) per budget before
        this reservation])."""
        args: list[Any] = [repr(estimate), int(expire_at * 1000), rid]
        for budget, seed in zip(budgets, seeds, strict=True):
            args += [repr(budget.amount), repr(seed)]
        result = await self._call("reserve", keys, args)
        values = [float(v) for v in result[1:]]
        return int(result[0]), [(values[2 * i], values[2 * i + 1]) for i in range(len(budgets))]

    async def settle(self, keys: list[str], rid: str, actual: float) -> None:
        """Replace reservation `rid` with the actual cost (later, if Redis is away now)."""
        try:
            await self._call("settle", keys, [rid, repr(actual)])
        except RedisUnavailable:
            self._unsettled.append((keys, rid, actual))
