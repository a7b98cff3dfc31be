"""Walks a plan: calls deployments in order with bounded retries, backoff that honours
Retry-After, timeouts, and failover on 429, 5xx, timeouts, broken connections and context-window
errors. For streams, failover happens until the first chunk is in hand."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from pointsman.config import Config, Deployment
from pointsman.decision import Attempt, Decision
from pointsman.errors import InvalidRequest, PointsmanError, UpstreamFailed
from pointsman.providers import Completion, Provider, StreamUsage, UpstreamError
from pointsman.state import MemoryState


@dataclass(slots=True)
class Outcome:
    """What the dispatcher spent: upstream time of all attempts and deliberate waits, so the
    router's own overhead is the rest."""

    deployment: Deployment | None = None
    upstream_s: float = 0.0
    waited_s: float = 0.0
    first_byte_s: float | None = None
    usage: StreamUsage = field(default_factory=StreamUsage)


class _Walk:
    """One request's progress through its plan."""

    __slots__ = ("min_window", "retry_wait")

    def __init__(self) -> None:
        # A deployment whose window overflowed rules out every one no larger.
        self.min_window = 0
        # Set by a failure worth retrying on the same deployment: seconds to wait first.
        self.retry_wait: float | None = None


class Dispatcher:
    def __init__(
        self, config: Config, provider: Callable[[Deployment], Provider], state: MemoryState
    ):
        self.config = config
        self.settings = config.router
        self.provider = provider
        self.state = state

    async def complete(
        self, decision: Decision, body: dict[str, Any], outcome: Outcome
    ) -> Completion:
        walk = _Walk()
        async for deployment in self._walk(decision, outcome, walk):
            started = perf_counter()
            attempt = Attempt(deployment.name)
            decision.attempts.append(attempt)
            try:
                completion = await self.provider(deployment).complete(body)
            except UpstreamError as exc:
                self._failed(attempt, exc, started, outcome)
                self._judge(exc, deployment, decision, walk)
                continue
            attempt.status = 200
            attempt.latency_ms = (perf_counter() - started) * 1000
            outcome.upstream_s += perf_counter() - started
            outcome.deployment = deployment
            decision.answered_by = deployment.name
            return completion
        raise self._exhausted(decision)

    async def open_stream(
        self, decision: Decision, body: dict[str, Any], outcome: Outcome
    ) -> tuple[bytes, AsyncIterator[bytes]]:
        """The first chunk and the rest of the stream of the first deployment that produced one."""
        walk = _Walk()
        async for deployment in self._walk(decision, outcome, walk):
            started = perf_counter()
            attempt = Attempt(deployment.name)
            decision.attempts.append(attempt)
            usage = StreamUsage()
            stream = self.provider(deployment).stream(body, usage)
            try:
                async with asyncio.timeout(deployment.timeouts.first_byte):
                    first = await anext(stream)
            except (UpstreamError, TimeoutError, StopAsyncIteration) as exc:
                await stream.aclose()
                error = _as_upstream_error(exc, deployment)
                self._failed(attempt, error, started, outcome)
                self._judge(error, deployment, decision, walk)
                continue
            except BaseException:
                await stream.aclose()
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

    async def _walk(
        self, decision: Decision, outcome: Outcome, walk: _Walk
    ) -> AsyncIterator[Deployment]:
        """Yields the deployment to call next, one call per yield, within the attempt budget.
        Retries of one deployment happen here (after `_judge` decided one is worth it)."""
        budget = self.settings.max_attempts
        for name in decision.plan:
            deployment = self.config.deployment(name)
            cooling = self.state.cooling_for(name)
            if cooling > 0:
                decision.reasons.append(
                    f"dispatch: skipped {name}: cooling down for {cooling:.1f}s"
                )
                continue
            if deployment.context_window <= walk.min_window:
                decision.reasons.append(
                    f"dispatch: skipped {name}: context window {deployment.context_window} "
                    f"is not larger than one that already overflowed"
                )
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
            if budget == 0:
                if name != decision.plan[-1]:
                    decision.reasons.append(
                        f"dispatch: attempt budget of {self.settings.max_attempts} spent"
                    )
                return

    def _failed(
        self, attempt: Attempt, exc: UpstreamError, started: float, outcome: Outcome
    ) -> None:
        elapsed = perf_counter() - started
        attempt.status = exc.status
        attempt.error = exc.describe()
        attempt.latency_ms = elapsed * 1000
        outcome.upstream_s += elapsed

    def _judge(
        self, exc: UpstreamError, deployment: Deployment, decision: Decision, walk: _Walk
    ) -> None:
        """Decide what a failure means: raise it to the client, retry here, or fail over."""
        if not exc.retryable:
            # The request itself is at fault; another deployment would say the same.
            raise PointsmanError(
                f"{deployment.name} rejected the request: {exc.message}",
                status=exc.status or 400,
                code="upstream_rejected",
            )
        if exc.kind == "context_length":
            walk.min_window = max(walk.min_window, deployment.context_window)
            return
        if exc.status == 429:
            wait = exc.retry_after
            # Every request skips it until Retry-After has passed; this one may wait a short
            # Retry-After out in place if the deployment allows retries.
            self.state.cool_down(
                deployment.name, wait if wait is not None else self.settings.cooldown_s
            )
            if wait is not None and wait <= self.settings.max_retry_wait_s:
                walk.retry_wait = wait
            return
        attempt_no = sum(1 for a in decision.attempts if a.deployment == deployment.name)
        backoff = min(
            self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt_no - 1)
        )
        # Full jitter keeps many clients from retrying in lockstep.
        walk.retry_wait = random.uniform(0, backoff)

    def _exhausted(self, decision: Decision) -> PointsmanError:
        tried = "; ".join(f"{a.deployment}: {a.error}" for a in decision.attempts)
        skipped = [
            r.removeprefix("dispatch: ")
            for r in decision.reasons
            if r.startswith("dispatch: skipped")
        ]
        detail = "; ".join(filter(None, [tried, *skipped])) or "nothing could be tried"
        message = f"all deployments failed for model {decision.requested_model!r}: {detail}"
        if decision.attempts and all(
            a.error and a.error.startswith("timeout") for a in decision.attempts
        ):
            return UpstreamFailed(message, status=504, code="upstream_timeout")
        waits = [self.state.cooling_for(name) for name in decision.plan]
        waits = [w for w in waits if w > 0]
        headers = {"retry-after": str(math.ceil(min(waits)))} if waits else {}
        return UpstreamFailed(message, status=503, headers=headers)


def _as_upstream_error(exc: BaseException, deployment: Deployment) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamError(
            "timeout", f"no first chunk within {deployment.timeouts.first_byte:g}s"
        )
    return UpstreamError("protocol", "upstream stream ended without any chunk")


def validate_chat_body(body: Any) -> None:
    """The minimum a chat request needs before routing; the upstream checks the rest."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest(
            "'model' is required and must be a non-empty string", code="missing_model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "'messages' is required and must be a non-empty array", code="invalid_messages"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{i}] must be an object with a string 'role'", code="invalid_messages"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest("'stream' must be true or false", code="invalid_stream")
