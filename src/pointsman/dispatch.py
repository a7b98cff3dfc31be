"""Walks a plan: calls deployments in order with bounded retries, backoff that honours
Retry-After, circuit breakers, cooldowns, rate limits and timeouts, and fails over on the
deployment's faults (401/403/408/409/429/5xx, timeouts, broken connections, answers that are not
answers) and context-window errors; the request's own faults (400/404/413/422) go back to the
client untried elsewhere, and leave health alone. For streams, failover happens until the
first chunk is in hand. Optional per route: cascades (escalate when a judge rejects a cheap
answer) and hedging (a second request when the first is slow)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from pointsman.cascade import Cascade
from pointsman.config import Config, Deployment, HedgeSettings
from pointsman.decision import Attempt, Decision
from pointsman.errors import InvalidRequest, PointsmanError, UpstreamFailed, UpstreamRejected
from pointsman.providers import Completion, Provider, StreamUsage, UpstreamError
from pointsman.signals import Signals
from pointsman.state import MemoryState

if TYPE_CHECKING:
    from pointsman.tracing import Tracing


@dataclass(slots=True)
class Outcome:
    """What the dispatcher spent: upstream time of all attempts and deliberate waits (so the
    router's own overhead is the rest), and the cost of steps that did not answer."""

    deployment: Deployment | None = None
    upstream_s: float = 0.0
    waited_s: float = 0.0
    first_byte_s: float | None = None
    usage: StreamUsage = field(default_factory=StreamUsage)
    extra_cost: float = 0.0


class _Walk:
    """One request's progress through its plan."""

    __slots__ = ("min_window", "retry_wait", "tried", "tokens")

    def __init__(self, tokens: int) -> None:
        # A deployment whose window overflowed rules out every one no larger.
        self.min_window = 0
        # Set by a failure worth retrying on the same deployment: seconds to wait first.
        self.retry_wait: float | None = None
        self.tried: set[str] = set()
        self.tokens = tokens


class Dispatcher:
    def __init__(self, config: Config, provider: Callable[[Deployment], Provider], state: MemoryState):
        self.config = config
        self.settings = config.router
        self.provider = provider
        self.state = state
        # Set by the router when tracing is on: a span per upstream attempt.
        self.tracing: Tracing | None = None

    # -- non-streaming ------------------------------------------------------------------------

    async def complete(
        self,
        decision: Decision,
        body: dict[str, Any],
        outcome: Outcome,
        signals: Signals | None = None,
        cascade: Cascade | None = None,
        hedge: HedgeSettings | None = None,
    ) -> Completion:
        walk = _Walk(_token_estimate(body, signals))
        # Logprobs the judges asked for are stripped from the answer; a client's own are kept.
        wants = cascade is not None and cascade.wants_logprobs and body.get("logprobs") is not True
        request = {**body, "logprobs": True} if wants else body
        held: tuple[Completion, Deployment] | None = None  # a rejected answer, kept as last resort
        steps = 0
        async for deployment in self._walk(decision, outcome, walk):
            try:
                if hedge is not None and steps == 0:
                    completion, deployment = await self._hedged(
                        deployment, request, decision, outcome, walk, hedge
                    )
                else:
                    completion = await self._call(deployment, request, decision, outcome, walk)
            except UpstreamError:
                continue
            steps += 1
            if cascade is not None and steps < cascade.settings.max_steps and self._has_next(decision, walk):
                answer = orjson.loads(completion.body)
                verdicts = await cascade.judge(answer, body)
                attempt = next(a for a in reversed(decision.attempts) if a.status == 200)
                for verdict in verdicts:
                    if verdict.judged_by is not None:
                        outcome.extra_cost += verdict.cost
                        decision.attempts.append(
                            Attempt(
                                verdict.judged_by,
                                status=200,
                                role="judge",
                                cost=verdict.cost,
                                verdict=f"score {verdict.score}",
                            )
                        )
                verdict = verdicts[-1]
                attempt.verdict = f"{verdict.judge}:{verdict.reason}"
                scored = {
                    f"{v.judge}:{deployment.name}": round(v.score, 4) for v in verdicts if v.score is not None
                }
                if scored:
                    # A new dict: the strategy's ranking may own the one the decision holds.
                    decision.scores = {**decision.scores, **scored}
                if not verdict.accepted:
                    if held is not None:
                        outcome.extra_cost += held[1].cost(held[0].prompt_tokens, held[0].completion_tokens)
                    held = (completion, deployment)
                    score = f" (score {verdict.score:.3f})" if verdict.score is not None else ""
                    decision.reasons.append(
                        f"cascade: escalated from {deployment.name}: "
                        f"{verdict.judge} judge said {verdict.reason}{score}"
                    )
                    continue
            if held is not None:
                outcome.extra_cost += held[1].cost(held[0].prompt_tokens, held[0].completion_tokens)
            return self._answered(
                completion, deployment, decision, outcome, strip_logprobs=request is not body
            )
        if held is not None:
            decision.reasons.append("cascade: no stronger deployment answered; returning the rejected answer")
            return self._answered(held[0], held[1], decision, outcome, strip_logprobs=request is not body)
        raise self._exhausted(decision)

    def _answered(
        self,
        completion: Completion,
        deployment: Deployment,
        decision: Decision,
        outcome: Outcome,
        strip_logprobs: bool,
    ) -> Completion:
        outcome.deployment = deployment
        decision.answered_by = deployment.name
        if strip_logprobs:
            answer = orjson.loads(completion.body)
            for choice in answer.get("choices") or ():
                choice["logprobs"] = None
            completion = Completion(
                orjson.dumps(answer), completion.prompt_tokens, completion.completion_tokens
            )
        return completion

    def _has_next(self, decision: Decision, walk: _Walk) -> bool:
        return any(name not in walk.tried for name in decision.plan)

    async def _call(
        self,
        deployment: Deployment,
        body: dict[str, Any],
        decision: Decision,
        outcome: Outcome,
        walk: _Walk,
        role: str = "answer",
    ) -> Completion:
        """One upstream call with its bookkeeping; raises UpstreamError after judging it."""
        started = perf_counter()
        attempt = Attempt(deployment.name, role=role)
        decision.attempts.append(attempt)
        if self.tracing is not None:
            self.tracing.attempt(decision, attempt, deployment)
        walk.tried.add(deployment.name)
        self.state.count_request(deployment.name, walk.tokens)
        try:
            completion = await self.provider(deployment).complete(body)
        except UpstreamError as exc:
            self._failed(attempt, exc, started, outcome, deployment)
            self._judge(exc, deployment, decision, walk)
            raise
        except asyncio.CancelledError:
            attempt.error = "cancelled"
            attempt.latency_ms = (perf_counter() - started) * 1000
            self.state.release(deployment.name, ok=False, health_failure=False)
            raise
        elapsed = perf_counter() - started
        attempt.status = 200
        attempt.latency_ms = elapsed * 1000
        attempt.cost = deployment.cost(completion.prompt_tokens, completion.completion_tokens)
        outcome.upstream_s += elapsed
        outcome.usage.prompt_tokens = completion.prompt_tokens
        outcome.usage.completion_tokens = completion.completion_tokens
        self.state.release(deployment.name, ok=True)
        self.state.observe_latency(deployment.name, elapsed)
        return completion

    async def _hedged(
        self,
        first: Deployment,
        body: dict[str, Any],
        decision: Decision,
        outcome: Outcome,
        walk: _Walk,
        hedge: HedgeSettings,
    ) -> tuple[Completion, Deployment]:
        """Call `first`; if it has not answered within the hedge delay, also call the next
        available deployment and keep whichever good answer comes first."""
        after = hedge.after_s or self.state.latency_quantile(first.name, 0.95, hedge.min_samples)
        after = after if after is not None else hedge.default_after_s
        primary = asyncio.ensure_future(self._call(first, body, decision, outcome, walk))
        done, _ = await asyncio.wait({primary}, timeout=after)
        if done:
            return primary.result(), first
        second = self._next_available(decision, walk)
        if second is None or not self.state.acquire(second.name):
            return await primary, first
        decision.reasons.append(f"hedge: {first.name} slower than {after:.3f}s, also sent to {second.name}")
        backup = asyncio.ensure_future(self._call(second, body, decision, outcome, walk, role="hedge"))
        racing = {primary: first, backup: second}
        error: UpstreamError | None = None
        while racing:
            done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                deployment = racing.pop(task)
                if task.exception() is None:
                    for loser in racing:
                        loser.cancel()
                    await asyncio.gather(*racing, return_exceptions=True)
                    return task.result(), deployment
                exc = task.exception()
                if not isinstance(exc, UpstreamError):
                    for other in racing:
                        other.cancel()
                    raise exc  # type: ignore[misc]
                error = exc
        assert error is not None
        raise error

    def _next_available(self, decision: Decision, walk: _Walk) -> Deployment | None:
        for name in decision.plan:
            if name not in walk.tried and self._skip_reason(self.config.deployment(name), walk) is None:
                return self.config.deployment(name)
        return None

    # -- streaming ------------------------------------------------------------------------------

    async def open_stream(
        self, decision: Decision, body: dict[str, Any], outcome: Outcome, signals: Signals | None = None
    ) -> tuple[bytes, AsyncGenerator[bytes, None]]:
        """The first chunk and the rest of the stream of the first deployment that produced one.
        The caller must `finish_stream` when the stream ends."""
        walk = _Walk(_token_estimate(body, signals))
        async for deployment in self._walk(decision, outcome, walk):
            started = perf_counter()
            attempt = Attempt(deployment.name)
            decision.attempts.append(attempt)
            if self.tracing is not None:
                self.tracing.attempt(decision, attempt, deployment)
            walk.tried.add(deployment.name)
            self.state.count_request(deployment.name, walk.tokens)
            usage = StreamUsage()
            stream = self.provider(deployment).stream(body, usage)
            try:
                async with asyncio.timeout(deployment.timeouts.first_byte):
                    first = await anext(stream)
            except (UpstreamError, TimeoutError, StopAsyncIteration) as exc:
                await stream.aclose()
                error = _as_upstream_error(exc, deployment)
                self._failed(attempt, error, started, outcome, deployment)
                self._judge(error, deployment, decision, walk)
                continue
            except BaseException:
                await stream.aclose()
                self.state.release(deployment.name, ok=False, health_failure=False)
                raise
            elapsed = perf_counter() - started
            attempt.status = 200
            attempt.first_byte_ms = elapsed * 1000
            outcome.upstream_s += elapsed
            outcome.first_byte_s = elapsed
            outcome.deployment = deployment
            outcome.usage = usage
            decision.answered_by = deployment.name
            return first, stream
        raise self._exhausted(decision)

    def finish_stream(self, decision: Decision, outcome: Outcome, ok: bool, health_failure: bool) -> None:
        """Account for the end of a stream opened by `open_stream`."""
        if outcome.deployment is None:
            return
        name = outcome.deployment.name
        self.state.release(name, ok=ok, health_failure=health_failure)
        attempt = decision.attempts[-1]
        attempt.latency_ms = (perf_counter() - attempt.started) * 1000
        attempt.cost = outcome.deployment.cost(outcome.usage.prompt_tokens, outcome.usage.completion_tokens)
        if ok:
            self.state.observe_latency(name, attempt.latency_ms / 1000, outcome.first_byte_s)

    # -- the walk -------------------------------------------------------------------------------

    def _skip_reason(self, deployment: Deployment, walk: _Walk) -> str | None:
        name = deployment.name
        unavailable = self.state.unavailable_for(name)
        if unavailable > 0:
            if self.state.cooling_for(name) > 0:
                return f"cooling down for {unavailable:.1f}s"
            return f"circuit {self.state.circuit(name)} for {unavailable:.1f}s"
        if deployment.context_window <= walk.min_window:
            return (
                f"context window {deployment.context_window} is not larger than one that already overflowed"
            )
        if deployment.rpm is not None or deployment.tpm is not None:
            requests, tokens = self.state.rates(name)
            if deployment.rpm is not None and requests >= deployment.rpm:
                return f"at its limit of {deployment.rpm} requests per minute"
            if deployment.tpm is not None and tokens + walk.tokens > deployment.tpm:
                return f"at its limit of {deployment.tpm} tokens per minute"
        return None

    async def _walk(self, decision: Decision, outcome: Outcome, walk: _Walk) -> AsyncIterator[Deployment]:
        """Yields the deployment to call next, one call per yield, within the attempt budget.
        Retries of one deployment happen here (after `_judge` decided one is worth it)."""
        budget = self.settings.max_attempts
        waited = False
        while True:
            skipped: list[str] = []
            for name in decision.plan:
                if name in walk.tried:
                    continue
                deployment = self.config.deployment(name)
                why = self._skip_reason(deployment, walk)
                if why is None and not self.state.acquire(name):
                    why = "circuit half-open, probe already in flight"
                if why is not None:
                    skipped.append(name)
                    decision.reasons.append(f"dispatch: skipped {name}: {why}")
                    continue
                retries = deployment.max_retries
                while budget > 0:
                    budget -= 1
                    walk.retry_wait = None
                    yield deployment
                    if walk.retry_wait is None or retries == 0 or budget == 0:
                        break
                    retries -= 1
                    outcome.waited_s += walk.retry_wait
                    await asyncio.sleep(walk.retry_wait)
                    if not self.state.acquire(name):
                        break
                if budget == 0:
                    if any(n not in walk.tried for n in decision.plan):
                        decision.reasons.append(
                            f"dispatch: attempt budget of {self.settings.max_attempts} spent"
                        )
                    return
            # Everything left is resting: wait (boundedly) for the first to recover, once.
            if waited or not skipped or decision.attempts:
                return
            soonest = min(self.state.unavailable_for(n) for n in skipped)
            if not 0 < soonest <= self.settings.wait_for_recovery_s:
                return
            waited = True
            # A hair past the recovery: the event loop's clock may wake a little early.
            soonest += 0.01
            decision.reasons.append(f"dispatch: every deployment resting; waited {soonest:.2f}s")
            outcome.waited_s += soonest
            await asyncio.sleep(soonest)
            decision.reasons[:] = [r for r in decision.reasons if not r.startswith("dispatch: skipped")]

    def _failed(
        self, attempt: Attempt, exc: UpstreamError, started: float, outcome: Outcome, deployment: Deployment
    ) -> None:
        elapsed = perf_counter() - started
        attempt.status = exc.status
        attempt.error = exc.describe()
        attempt.latency_ms = elapsed * 1000
        outcome.upstream_s += elapsed
        # A request the upstream rejects as malformed says nothing about the deployment's health.
        self.state.release(deployment.name, ok=False, health_failure=exc.health_failure)

    def _judge(self, exc: UpstreamError, deployment: Deployment, decision: Decision, walk: _Walk) -> None:
        """Decide what a failure means: raise it to the client, retry here, or fail over."""
        if exc.client_fault:
            # The request itself is at fault; another deployment would say the same.
            raise UpstreamRejected.of(exc, deployment.name)
        if exc.kind == "context_length":
            walk.min_window = max(walk.min_window, deployment.context_window)
            return
        if exc.status == 429:
            wait = exc.retry_after
            # Every request skips it until Retry-After has passed; this one may wait a short
            # Retry-After out in place if the deployment allows retries.
            self.state.cool_down(deployment.name, wait if wait is not None else self.settings.cooldown_s)
            if wait is not None and wait <= self.settings.max_retry_wait_s:
                walk.retry_wait = wait
            return
        attempt_no = sum(1 for a in decision.attempts if a.deployment == deployment.name)
        backoff = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt_no - 1))
        # Full jitter keeps many clients from retrying in lockstep.
        walk.retry_wait = random.uniform(0, backoff)

    def _exhausted(self, decision: Decision) -> PointsmanError:
        tried = "; ".join(f"{a.deployment}: {a.error}" for a in decision.attempts if a.error)
        skipped = [
            r.removeprefix("dispatch: ") for r in decision.reasons if r.startswith("dispatch: skipped")
        ]
        detail = "; ".join(filter(None, [tried, *skipped])) or "nothing could be tried"
        message = f"all deployments failed for model {decision.requested_model!r}: {detail}"
        if decision.attempts and all(a.error and a.error.startswith("timeout") for a in decision.attempts):
            return UpstreamFailed(message, status=504, code="upstream_timeout")
        waits = [w for w in (self.state.unavailable_for(name) for name in decision.plan) if w > 0]
        headers = {"retry-after": str(max(1, math.ceil(min(waits))))} if waits else {}
        return UpstreamFailed(message, status=503, headers=headers)


def _token_estimate(body: dict[str, Any], signals: Signals | None) -> int:
    signals = signals or Signals(body)
    return signals.estimated_tokens + signals.max_output_tokens


def _as_upstream_error(exc: BaseException, deployment: Deployment) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamError("timeout", f"no first chunk within {deployment.timeouts.first_byte:g}s")
    return UpstreamError("protocol", "upstream stream ended without any chunk")


def validate_chat_body(body: Any) -> None:
    """The minimum a chat request needs before routing; the upstream checks the rest."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("'model' is required and must be a non-empty string", code="missing_model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array", code="invalid_messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{i}] must be an object with a string 'role'", code="invalid_messages"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest("'stream' must be true or false", code="invalid_stream")
