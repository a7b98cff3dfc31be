"""Per-process routing state behind one small interface: health (circuit breakers, cooldowns),
load (in-flight counts, request and token rates), latency statistics and the statistics of
online bandits. In memory here; a shared backend implements the same methods."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
WINDOW_S = 60.0
LATENCY_SAMPLES = 200
EWMA_ALPHA = 0.2


@dataclass(slots=True)
class BreakerSettings:
    failure_threshold: int = 5
    open_s: float = 10.0
    half_open_probes: int = 1


@dataclass(slots=True)
class _Health:
    state: str = CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probes_in_flight: int = 0
    cooldown_until: float = 0.0


@dataclass(slots=True)
class _Load:
    in_flight: int = 0
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0
    latency_ewma: float | None = None
    first_byte_ewma: float | None = None
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    last_used: float = 0.0


class MemoryState:
    """Health and load of every deployment, as seen by this process."""

    def __init__(self, breaker: BreakerSettings | None = None) -> None:
        self.breaker = breaker or BreakerSettings()
        self._health: dict[str, _Health] = {}
        self._load: dict[str, _Load] = {}
        # (route, bucket) -> arm -> [observations, reward sum]
        self._bandits: dict[tuple[str, str], dict[str, list[float]]] = {}
        # Told of every health change ("cooldown" | "open" | "closed", deployment, seconds
        # left), so a shared backend can pass it on to other replicas.
        self.listener: Callable[[str, str, float], None] | None = None

    def _h(self, name: str) -> _Health:
        health = self._health.get(name)
        if health is None:
            health = self._health[name] = _Health()
        return health

    def _l(self, name: str) -> _Load:
        load = self._load.get(name)
        if load is None:
            load = self._load[name] = _Load()
        return load

    # -- health -----------------------------------------------------------------------------

    def cool_down(self, deployment: str, seconds: float) -> None:
        """Rest a deployment (a 429's Retry-After): every request skips it until then."""
        health = self._h(deployment)
        health.cooldown_until = max(health.cooldown_until, monotonic() + seconds)
        if self.listener is not None:
            self.listener("cooldown", deployment, health.cooldown_until - monotonic())

    def cooling_for(self, deployment: str) -> float:
        """Seconds left in the deployment's cooldown; 0 when it may be called."""
        health = self._health.get(deployment)
        if health is None:
            return 0.0
        return max(0.0, health.cooldown_until - monotonic())

    def circuit(self, deployment: str) -> str:
        health = self._health.get(deployment)
        if health is None:
            return CLOSED
        if health.state == OPEN and monotonic() - health.opened_at >= self.breaker.open_s:
            health.state, health.probes_in_flight = HALF_OPEN, 0
        return health.state

    def unavailable_for(self, deployment: str) -> float:
        """Seconds until the deployment may be called (cooldown or open circuit); 0 if now."""
        wait = self.cooling_for(deployment)
        health = self._health.get(deployment)
        if health is not None:
            state = self.circuit(deployment)
            if state == OPEN:
                wait = max(wait, health.opened_at + self.breaker.open_s - monotonic())
            elif state == HALF_OPEN and health.probes_in_flight >= self.breaker.half_open_probes:
                # Probes are out; the next chance is when one of them reports back.
                wait = max(wait, 0.05)
        return wait

    def acquire(self, deployment: str) -> bool:
        """Claim a call on the deployment: False if its circuit allows none right now.
        A half-open circuit lets `half_open_probes` calls through at a time."""
        state = self.circuit(deployment)
        if state == OPEN:
            return False
        if state == HALF_OPEN:
            health = self._h(deployment)
            if health.probes_in_flight >= self.breaker.half_open_probes:
                return False
            health.probes_in_flight += 1
        load = self._l(deployment)
        load.in_flight += 1
        load.last_used = monotonic()
        return True

    def release(self, deployment: str, ok: bool, *, health_failure: bool | None = None) -> None:
        """Report a call's end. `health_failure` (default: not ok) says whether a failed call
        counts against the circuit: one that does not (a request the upstream rejected as the
        client's fault, a cancelled call) leaves the deployment's health as it was."""
        load = self._l(deployment)
        load.in_flight = max(0, load.in_flight - 1)
        health = self._h(deployment)
        if health.state == HALF_OPEN:
            health.probes_in_flight = max(0, health.probes_in_flight - 1)
        failed = (not ok) if health_failure is None else health_failure
        if not ok and not failed:
            return
        if not failed:
            health.consecutive_failures = 0
            if health.state != CLOSED:
                health.state = CLOSED
                if self.listener is not None:
                    self.listener("closed", deployment, 0.0)
            return
        health.consecutive_failures += 1
        if health.state == HALF_OPEN or health.consecutive_failures >= self.breaker.failure_threshold:
            health.state, health.opened_at = OPEN, monotonic()
            if self.listener is not None:
                self.listener("open", deployment, self.breaker.open_s)

    def apply_remote(self, deployment: str, cooldown_s: float, open_s: float) -> None:
        """Adopt what another replica saw: a cooldown or an open circuit with this many
        seconds left (0 for none). Never shortens what this replica knows itself."""
        health = self._h(deployment)
        now = monotonic()
        if cooldown_s > 0:
            health.cooldown_until = max(health.cooldown_until, now + cooldown_s)
        if open_s > 0:
            opened_at = now + open_s - self.breaker.open_s
            if health.state != OPEN or opened_at > health.opened_at:
                health.state, health.opened_at, health.probes_in_flight = OPEN, opened_at, 0

    def circuits(self) -> dict[str, str]:
        return {name: self.circuit(name) for name in self._health}

    # -- load -------------------------------------------------------------------------------

    def enter(self, scope: str) -> None:
        """Count a request in flight for a scope that is not a deployment (e.g. a key)."""
        self._l(scope).in_flight += 1

    def leave(self, scope: str) -> None:
        load = self._l(scope)
        load.in_flight = max(0, load.in_flight - 1)

    def window_reset_in(self, scope: str) -> float:
        """Seconds until the oldest request of the one-minute window leaves it."""
        load = self._load.get(scope)
        if load is None or not load.requests:
            return 0.0
        return max(0.0, load.requests[0] + WINDOW_S - monotonic())

    def in_flight(self, deployment: str) -> int:
        load = self._load.get(deployment)
        return load.in_flight if load else 0

    def count_request(self, deployment: str, tokens: int) -> None:
        now = monotonic()
        load = self._l(deployment)
        load.requests.append(now)
        load.tokens.append((now, tokens))
        load.token_sum += tokens
        # Trimmed here as well as in `rates`: windows of deployments without limits are never
        # read, and must not grow with every request.
        self._trim(load, now - WINDOW_S)

    def adjust_tokens(self, scope: str, tokens: int) -> None:
        """Correct the tokens counted in the current window (an estimate settled with the
        actual count); `tokens` may be negative."""
        if tokens:
            load = self._l(scope)
            load.tokens.append((monotonic(), tokens))
            load.token_sum += tokens

    @staticmethod
    def _trim(load: _Load, horizon: float) -> None:
        while load.requests and load.requests[0] < horizon:
            load.requests.popleft()
        while load.tokens and load.tokens[0][0] < horizon:
            load.token_sum -= load.tokens.popleft()[1]

    def rates(self, deployment: str) -> tuple[int, int]:
        """Requests and tokens sent to the deployment in the last minute."""
        load = self._load.get(deployment)
        if load is None:
            return 0, 0
        self._trim(load, monotonic() - WINDOW_S)
        return len(load.requests), load.token_sum

    # -- latency ----------------------------------------------------------------------------

    def observe_latency(self, deployment: str, total_s: float, first_byte_s: float | None = None) -> None:
        load = self._l(deployment)
        load.latencies.append(total_s)
        load.latency_ewma = (
            total_s
            if load.latency_ewma is None
            else EWMA_ALPHA * total_s + (1 - EWMA_ALPHA) * load.latency_ewma
        )
        if first_byte_s is not None:
            load.first_byte_ewma = (
                first_byte_s
                if load.first_byte_ewma is None
                else EWMA_ALPHA * first_byte_s + (1 - EWMA_ALPHA) * load.first_byte_ewma
            )

    def latency(self, deployment: str) -> float | None:
        """Moving average of the deployment's total latency (seconds), None before any call."""
        load = self._load.get(deployment)
        return load.latency_ewma if load else None

    def first_byte_latency(self, deployment: str) -> float | None:
        load = self._load.get(deployment)
        return load.first_byte_ewma if load else None

    def latency_quantile(self, deployment: str, q: float, min_samples: int = 10) -> float | None:
        """The q-quantile of recent latencies, None with fewer than `min_samples`."""
        load = self._load.get(deployment)
        if load is None or len(load.latencies) < min_samples:
            return None
        ordered = sorted(load.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def idle_for(self, deployment: str) -> float:
        load = self._load.get(deployment)
        return monotonic() - load.last_used if load and load.last_used else float("inf")

    # -- bandits ----------------------------------------------------------------------------

    def bandit_update(self, route: str, bucket: str, arm: str, reward: float, count: float = 1.0) -> None:
        """Add `count` observations with total `reward` (each in 0..1) to an arm of a route's
        bandit in one bucket; a revised rating passes its change with `count=0`."""
        arms = self._bandits.setdefault((route, bucket), {})
        stats = arms.setdefault(arm, [0.0, 0.0])
        stats[0] = max(0.0, stats[0] + count)
        stats[1] = min(stats[0], max(0.0, stats[1] + reward))

    def bandit_stats(self, route: str, bucket: str) -> dict[str, tuple[float, float]]:
        """(observations, reward sum) of each arm seen in a route's bucket."""
        arms = self._bandits.get((route, bucket))
        return {arm: (s[0], s[1]) for arm, s in arms.items()} if arms else {}

    def bandit_buckets(self, route: str) -> list[str]:
        """The buckets of a route's bandit that have statistics."""
        return [bucket for (r, bucket) in self._bandits if r == route]
