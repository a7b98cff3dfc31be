"""The pipeline in one place: analyse, constrain, select, dispatch, record."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

import orjson

from pointsman.access import AccessControl, Grant
from pointsman.budgets import BudgetLedger
from pointsman.cache import CachedAnswer, CacheTicket, ResponseCache, StreamAssembler, completion_events
from pointsman.cascade import Cascade, JudgeReply, answer_text, completion_as_stream
from pointsman.config import Config, Deployment, load_config
from pointsman.decision import Decision
from pointsman.dispatch import Dispatcher, Outcome, validate_chat_body
from pointsman.embeddings import validate_embeddings_body
from pointsman.errors import InvalidRequest, ModelNotFound, NoDeployment, PointsmanError, PolicyRefused
from pointsman.keys import KeyStore, PostgresKeyStore, key_fingerprint
from pointsman.metrics import Metrics
from pointsman.pii import Detector
from pointsman.policies import PIIGuard, apply_policies, build_policies
from pointsman.providers import HTTPClient, Provider, UpstreamError, make_provider
from pointsman.signals import CHARS_PER_TOKEN, Signals, SignalSettings, message_text
from pointsman.state import BreakerSettings, MemoryState
from pointsman.state_redis import SharedState
from pointsman.store import LanguageOf, RecordStore, default_db_path
from pointsman.strategies import Strategy, build_strategy
from pointsman.tracing import RequestTrace, build_tracing

_random_hex: list[str] = []
# A forked child must not hand out the random parts its parent already drew.
os.register_at_fork(after_in_child=_random_hex.clear)


def new_request_id() -> str:
    """"req_" and 24 hex digits: the time in milliseconds (48 bits), then 48 random bits. Ids
    in time order keep the records' primary-key index appending at its end instead of writing
    all over it; the random bits come from the OS 512 ids at a time (a getrandom call per
    request cost more than the whole rest of making the id)."""
    try:
        tail = _random_hex.pop()
    except IndexError:
        raw = os.urandom(6 * 512).hex()
        _random_hex.extend([raw[i : i + 12] for i in range(0, len(raw), 12)])
        tail = _random_hex.pop()
    return f"req_{int(time.time() * 1000) & 0xFFFFFFFFFFFF:012x}{tail}"


@dataclass(slots=True)
class Reply:
    """A routed answer: JSON bytes, or a stream of SSE events (first one already received)."""

    decision: Decision
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None


@dataclass(slots=True)
class _Call:
    """Facts about one request that end up in its record."""

    request_id: str
    started: float
    requested_model: str | None
    key: str | None
    user: str | None
    stream: bool
    ts: float = field(default_factory=time.time)
    grant: Grant | None = None
    body: Any = None
    signals: Signals | None = None
    # The response cache's part: "hit", "miss", "bypass" or "refresh", and a hit's saving.
    cache: CacheTicket | None = None
    cache_status: str | None = None
    saved_cost: float | None = None
    trace: RequestTrace | None = None
    # Where the answer's token counts came from: "upstream" (its usage report) or "estimate"
    # (a stream that ended without one: the prompt's estimate and what was relayed).
    usage_source: str | None = None

    def last_user_text(self) -> str:
        """For the record's language: the routing's own Signals when there are some."""
        if self.signals is not None:
            return self.signals.last_user_text
        return Signals(self.body).last_user_text if isinstance(self.body, dict) else ""


class _Connections:
    """One pooled keep-alive HTTP client (and the providers using it) per event loop."""

    def __init__(self, config: Config) -> None:
        self.client = HTTPClient()
        self.providers: dict[str, Provider] = {
            d.name: make_provider(d, self.client) for d in config.deployments
        }


class Router:
    """Routes OpenAI-shaped chat requests to the configured deployments.

    Build with `Router.from_config(path_or_dict)`; call `await acompletion(...)`,
    `completion(...)` or `decide(...)`.
    """

    def __init__(
        self, config: Config, *, store: RecordStore | None = None, keys: KeyStore | None = None
    ) -> None:
        self.store = store
        self.keys = keys
        breaker = config.router.circuit_breaker
        self.state = MemoryState(
            BreakerSettings(breaker.failure_threshold, breaker.open_s, breaker.half_open_probes)
        )
        self._connections: dict[asyncio.AbstractEventLoop, _Connections] = {}
        self.ledger = BudgetLedger(store.spent_since if store else (lambda scope, start: 0.0), time.time)
        self.shared = (
            SharedState(config.state, self.state, [d.name for d in config.deployments])
            if config.state.url
            else None
        )
        self._shared_started = False
        if self.shared is not None:
            self.shared.on_reload = self._reload_announced
        self.access = AccessControl(config, keys, self.state, self.ledger, self.shared)
        self.metrics = (
            Metrics(config.models, (d.name for d in config.deployments)) if config.metrics.enabled else None
        )
        if self.metrics is not None:
            self.metrics.watch_circuits(self.state.circuits)
        self._sync_loop: asyncio.AbstractEventLoop | None = None
        self.config_path: Path | None = None
        self.config_version = 0
        self.tracing = build_tracing(config)
        self.cache: ResponseCache | None = None
        self._apply(config)

    def _apply(self, config: Config) -> None:
        """Build everything that follows from the config. A request in flight keeps the
        dispatcher (and so the deployments) it started with."""
        # -- policies: applied before any strategy (pointsman.policies) --
        policies = build_policies(config)
        signal_settings = SignalSettings(
            config.signals.domains,
            config.signals.languages or None,
            pii_engine=config.policies.pii.engine if config.policies.pii else "builtin",
            roles={n: (r.system_pattern, r.tool_prefix) for n, r in config.signals.roles.items()},
        )
        strategies: dict[str, Strategy] = {
            name: build_strategy(vm, config) for name, vm in config.models.items()
        }
        pools: dict[str, list[Deployment]] = {}
        for name, vm in config.models.items():
            names = [*vm.deployments, *sorted(strategies[name].referenced() - set(vm.deployments))]
            names += [n for n in vm.fallbacks if n not in names]
            pools[name] = [config.deployment(n) for n in names]
        for strategy in strategies.values():
            strategy.state = self.state
        self.config = config
        self.policies = policies
        self.governance = tuple(p for p in policies if p.governance)
        self.pii = PIIGuard(config.policies.pii.rules) if config.policies.pii else None
        self.signal_settings = signal_settings
        self.strategies = strategies
        self._pools = pools
        self.cascades: dict[str, Cascade] = {
            name: Cascade(
                vm.cascade,
                self._judge_caller(vm.cascade.judge_deployment),
                self._judge_caller(vm.cascade.verifier.second_opinion),
            )
            for name, vm in config.models.items()
            if vm.cascade is not None
        }
        self.dispatcher = Dispatcher(config, self._provider, self.state)
        # Names (virtual models and deployments) that serve embeddings, not chat.
        self.embedding_models = frozenset(
            [n for n, vm in config.models.items() if vm.type == "embeddings"]
            + [d.name for d in config.deployments if d.mode == "embeddings"]
        )
        self.dispatcher.tracing = self.tracing
        if self.cache is not None:
            self.cache.apply(config)
        elif any(vm.cache is not None for vm in config.models.values()):
            self.cache = ResponseCache(config)
        self.access.config = config
        if self.metrics is not None:
            self.metrics.known_models = set(config.models) | {d.name for d in config.deployments}
        if self.shared is not None:
            self.shared.deployments = [d.name for d in config.deployments]

    def _reload_announced(self) -> None:
        try:
            self.reload()
        except Exception as exc:  # keep serving the config that works; say why
            print(f"pointsman: config reload announced by another replica failed: {exc}", file=sys.stderr)

    async def watch_config(self, interval_s: float = 1.0) -> None:
        """Reload whenever the config file changes on disk, until cancelled."""
        if self.config_path is None:
            return
        seen = self.config_path.stat().st_mtime_ns
        while True:
            await asyncio.sleep(interval_s)
            try:
                mtime = self.config_path.stat().st_mtime_ns
            except OSError:
                continue
            if mtime != seen:
                seen = mtime
                try:
                    self.reload()
                except Exception as exc:
                    print(f"pointsman: {self.config_path} changed but was not loaded: {exc}", file=sys.stderr)

    def reload(self, source: str | Path | dict[str, Any] | None = None) -> Config:
        """Re-read the config (default: the file it came from) and switch to it; requests in
        flight finish with the config they started with. Raises ConfigError, leaving the
        running config untouched, when the new one is invalid. The record store, keys and
        state backend stay as they are."""
        source = source if source is not None else self.config_path
        if source is None:
            raise ValueError("this router was built from a dict: pass the new config to reload()")
        config = load_config(source)
        self._apply(config)
        self.config_version += 1
        return config

    @classmethod
    def from_config(
        cls, source: str | Path | dict[str, Any], *, db: str | Path | None = None, records: bool = True
    ) -> Router:
        """A router from a YAML path or a config dict. Records go to PostgreSQL when the config
        has a `store.url`, else to `db`, else the config's `store.path`, else the default under
        the user's data directory (unless disabled in the config or by `records=False`)."""
        config = load_config(source)
        path = db or config.store.path or default_db_path()
        store: Any = None
        if config.store.enabled and records and config.store.url:
            from pointsman.store_postgres import PostgresRecordStore  # psycopg: the optional `postgres` extra

            settings = config.store
            store = PostgresRecordStore(
                config.store.url,
                schema=settings.db_schema,
                flush_interval_s=settings.flush_interval_s,
                retention_days=settings.retention_days,
                spill_dir=settings.spill_dir or Path(path).parent / "spill",
                buffer_records=settings.buffer_records,
                connect_timeout_s=settings.connect_timeout_s,
            )
        elif config.store.enabled and records:
            store = RecordStore(path, config.store.flush_interval_s, config.store.retention_days)
        keys = None
        if config.auth.enabled or (
            config.auth.enabled is None and os.environ.get(config.auth.master_key_env)
        ):
            # Keys live with the records: shared by replicas when those are in PostgreSQL.
            keys = (
                PostgresKeyStore(config.store.url, config.store.db_schema)
                if config.store.url
                else KeyStore(path)
            )
        router = cls(config, store=store, keys=keys)
        if not isinstance(source, dict):
            router.config_path = Path(source)
        return router

    # -- analyse, constrain, select ---------------------------------------------------------

    def analyse(
        self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None, *, key: str | None = None
    ) -> Signals:
        """The request's `Signals`, made once where it enters (`handle`, or a face that needs
        them too) and shared by admission, routing, dispatch and the record."""
        return Signals(body, headers, settings=self.signal_settings, key=key)

    def route(
        self,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        *,
        key: str | None = None,
        metadata: Mapping[str, str] | None = None,
        signals: Signals | None = None,
    ) -> tuple[Decision, Signals]:
        """Route `body`; `signals` are the request's own when it has them already (they hold
        its headers, key and trusted metadata), else they are made from those."""
        decision = Decision(request_id or new_request_id(), body["model"])
        model = self.resolve_alias(body["model"])
        if model != body["model"]:
            decision.reasons.append(f"alias: {body['model']} -> {model}")
        if signals is None:
            signals = Signals(body, headers, metadata=metadata, settings=self.signal_settings, key=key)
        try:
            self._route(model, decision, signals)
        finally:
            # An agent's role and loop stage are always on record (both cost next to nothing).
            signals.role, signals.stage  # noqa: B018
            decision.signals = signals.computed()
        return decision, signals

    def resolve_alias(self, model: str) -> str:
        """The virtual model or deployment an alias (exact name first, then glob patterns in
        config order) stands for; names that are not aliases stay as they are."""
        aliases = self.config.aliases
        if not aliases or model in self.strategies or model in self.config._by_name():
            return model
        if model in aliases:
            return aliases[model]
        for pattern, target in aliases.items():
            if fnmatch.fnmatchcase(model, pattern):
                return target
        return model

    def _route(self, model: str, decision: Decision, signals: Signals) -> None:
        if self.pii is not None:
            self.pii.screen(signals)
        if model in self.strategies:
            strategy = self.strategies[model]
            candidates = apply_policies(self._pools[model], signals, self.policies, decision.reasons)
            if not candidates:
                raise self._refusal(f"no deployment of model {model!r} can serve this request", decision)
            ranking = strategy.rank(candidates, signals)
            alive = {d.name for d in candidates}
            plan = list(dict.fromkeys(ranking.order))
            plan += [n for n in self.config.models[model].fallbacks if n not in plan]
            # Only survivors of every policy, whatever a strategy proposed: failover can never
            # reach a deployment a policy removed.
            plan = [n for n in plan if n in alive]
            decision.strategy, decision.reason = strategy.name, ranking.reason
            decision.scores, decision.plan = ranking.scores, plan
            decision.reasons.extend(ranking.notes)
            if not plan:
                raise NoDeployment(f"strategy {strategy.name!r} chose no deployment for model {model!r}")
        elif model in self.config._by_name():
            # The caller chose the deployment, so capability checks stay off; governance holds.
            target = self.config.deployment(model)
            if not apply_policies([target], signals, self.governance, decision.reasons):
                raise self._refusal(f"deployment {model!r} may not serve this request", decision)
            decision.strategy, decision.reason, decision.plan = "explicit", "deployment", [model]
        else:
            known = ", ".join([*self.config.models, *(d.name for d in self.config.deployments)])
            raise ModelNotFound(f"model {model!r} does not exist (known models: {known})")

    def _refusal(self, message: str, decision: Decision) -> PointsmanError:
        """403 when a governance policy removed a candidate, else 400 (the request asks for
        something no deployment can do)."""
        detail = "; ".join(r.split(": ", 1)[1] for r in decision.reasons)
        governance = {p.name for p in self.governance}
        if any(r.split(": ", 1)[0] in governance for r in decision.reasons):
            return PolicyRefused(f"{message}: {detail}")
        return NoDeployment(f"{message}: {detail}")

    def decide(self, request: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Decision:
        """The decision for a chat request (an OpenAI-shaped dict), without calling any model."""
        validate_chat_body(request)
        return self.route(request, headers)[0]

    # -- dispatch and record ----------------------------------------------------------------

    def _provider(self, deployment: Deployment) -> Provider:
        loop = asyncio.get_running_loop()
        connections = self._connections.get(loop)
        if connections is None:
            connections = self._connections[loop] = _Connections(self.config)
        provider = connections.providers.get(deployment.name)
        if provider is None or provider.deployment is not deployment:
            # A deployment added or changed by a reload: same pooled client, new settings.
            provider = connections.providers[deployment.name] = make_provider(deployment, connections.client)
        return provider

    async def handle(
        self,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        request_id: str | None = None,
        started: float | None = None,
        key: str | None = None,
        signals: Signals | None = None,
        kind: Literal["chat", "embeddings"] = "chat",
    ) -> Reply:
        """Route and dispatch one request body (a chat request, or with kind="embeddings" an
        OpenAI embeddings request); always records it. Raises PointsmanError.
        `signals`: the request's own, when the face that received it made them (`analyse`)."""
        call = _Call(
            request_id or new_request_id(),
            started if started is not None else perf_counter(),
            body.get("model") if isinstance(body, dict) else None,
            key,
            body.get("user") if isinstance(body, dict) and isinstance(body.get("user"), str) else None,
            bool(body.get("stream")) if isinstance(body, dict) else False,
        )
        call.body = body
        if self.tracing is not None:
            call.trace = self.tracing.start(call.request_id, body, headers)
        dispatcher = self.dispatcher  # the config this request started with, whatever reloads
        decision: Decision | None = None
        outcome = Outcome()
        grant: Grant | None = None
        try:
            if kind == "chat":
                validate_chat_body(body)
            else:
                validate_embeddings_body(body)
            if self.embedding_models or kind != "chat":
                self._check_model_type(body["model"], kind)
            if self.shared is not None and not self._shared_started:
                await self.start()
            signals = call.signals = signals if signals is not None else self.analyse(body, headers, key=key)
            grant = call.grant = await self.access.admit(key, body, lambda: signals.estimated_tokens)
            signals.trust(self.access.trusted_metadata(grant))
            routing_ns = time.time_ns() if call.trace is not None else 0
            decision, _ = self.route(body, headers, call.request_id, signals=signals)
            routed = self.resolve_alias(body["model"])
            downgrade = self.access.downgrade_target(grant, routed)
            if downgrade is not None:
                routed = downgrade
                decision, _ = self.route(
                    {**body, "model": downgrade}, headers, call.request_id, signals=signals
                )
                decision.requested_model = body["model"]
                decision.reasons.append(f"budget: soft limit reached; routed as {downgrade!r}")
            await self.access.charge_plan(grant, decision, signals)
            if call.trace is not None and self.tracing is not None:
                self.tracing.routed(call.trace, decision, routing_ns)
            # -- response cache hook: after every policy and limit, before any upstream call.
            if self.cache is not None:
                call.cache = self.cache.ticket(self.resolve_alias(body["model"]), body, headers, grant, key)
                if call.cache is not None:
                    call.cache_status = call.cache.recorded
                    found = await self.cache.get(call.cache)
                    if found is not None:
                        return self._cached_reply(call, decision, outcome, *found)
            # -- PII masking hook (policies.pii, action: mask): placeholders go upstream, the
            # originals are put back into the answer before the client sees it.
            masker = self.pii.masker(signals, decision.reasons) if self.pii is not None else None
            upstream_body = masker.mask_body(body, signals.text_segments[1]) if masker else body
            if call.stream and routed in self.cascades:
                return await self._judged_stream(
                    call, decision, outcome, dispatcher, upstream_body, signals, routed, masker
                )
            if call.stream:
                first, rest = await dispatcher.open_stream(decision, upstream_body, outcome, signals)
                if masker:
                    first, rest = masker.restore_stream(first, rest)
                return Reply(
                    decision,
                    self._headers(decision, call, outcome),
                    stream=self._relay(first, rest, decision, call, outcome, dispatcher),
                )
            route = self.config.models.get(routed)
            completion = await dispatcher.complete(
                decision,
                upstream_body,
                outcome,
                signals,
                cascade=self.cascades.get(routed),
                hedge=route.hedge if route is not None else None,
            )
            self._usage_of(call, outcome, completion.body)
            headers_out = self._headers(decision, call, outcome)
            answer_body = masker.restore_completion(completion.body) if masker else completion.body
            if call.cache is not None and self.cache is not None:
                await self.cache.put(call.cache, answer_body, decision.answered_by, self._cost(outcome))
            if call.trace is not None and self.tracing is not None:
                self.tracing.answer(call.trace, answer_body)
            answer = answer_text(orjson.loads(answer_body)) if self.config.store.store_content else None
            self._record(call, decision, outcome, 200, None, answer)
            return Reply(decision, headers_out, body=answer_body)
        except PointsmanError as exc:
            self._record(call, decision, outcome, exc.status, exc.message)
            if decision is not None:
                exc.headers.update(self._headers(decision, call, outcome))
            raise
        except BaseException:
            if grant is not None:
                self.access.settle(grant, self._cost(outcome))
            raise

    @staticmethod
    def _usage_of(call: _Call, outcome: Outcome, body: bytes) -> None:
        """Say where an answer's token counts came from; estimate them (the prompt's estimate,
        the answer's length) when the upstream reported none, so no answer is free."""
        usage = outcome.usage
        if usage.prompt_tokens or usage.completion_tokens:
            call.usage_source = "upstream"
            return
        call.usage_source = "estimate"
        usage.prompt_tokens = call.signals.estimated_tokens if call.signals is not None else 0
        usage.completion_tokens = -(-_output_size(body) // CHARS_PER_TOKEN)

    def _check_model_type(self, model: str, kind: str) -> None:
        """400 when a chat request names an embeddings model, or the reverse."""
        routed = self.resolve_alias(model)
        known = routed in self.strategies or routed in self.config._by_name()
        if known and (routed in self.embedding_models) != (kind == "embeddings"):
            served, endpoint = (
                ("an embeddings", "/v1/embeddings")
                if kind == "chat"
                else ("a chat", "/v1/chat/completions or /v1/responses")
            )
            raise InvalidRequest(
                f"model {model!r} is {served} model and cannot serve {kind} requests; send it to {endpoint}",
                code="wrong_model_type",
            )

    def _headers(self, decision: Decision, call: _Call, outcome: Outcome) -> dict[str, str]:
        overhead = perf_counter() - call.started - outcome.upstream_s - outcome.waited_s
        headers = {
            "x-pointsman-route": decision.route,
            "x-pointsman-request-id": call.request_id,
            "x-pointsman-overhead-ms": f"{overhead * 1000:.2f}",
        }
        if decision.answered_by:
            headers["x-pointsman-model"] = decision.answered_by
        if call.cache is not None:
            headers["x-pointsman-cache"] = call.cache.status
        return headers

    async def _judged_stream(
        self,
        call: _Call,
        decision: Decision,
        outcome: Outcome,
        dispatcher: Dispatcher,
        body: dict[str, Any],
        signals: Signals,
        routed: str,
        masker: Any,
    ) -> Reply:
        """A streaming request to a cascade: buffer-then-release. Each cheap answer is taken
        whole and judged before any byte reaches the client, so escalation happens before the
        first byte; the accepted answer is then streamed as chunks."""
        plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        route = self.config.models.get(routed)
        completion = await dispatcher.complete(
            decision,
            plain,
            outcome,
            signals,
            cascade=self.cascades[routed],
            hedge=route.hedge if route is not None else None,
        )
        self._usage_of(call, outcome, completion.body)
        answer_body = masker.restore_completion(completion.body) if masker else completion.body
        answer = orjson.loads(answer_body)
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        chunks = completion_as_stream(answer, include_usage)
        text = answer_text(answer) if self.config.store.store_content else None
        headers = self._headers(decision, call, outcome)
        return Reply(decision, headers, stream=self._released(chunks, decision, call, outcome, text))

    async def _released(
        self, chunks: list[bytes], decision: Decision, call: _Call, outcome: Outcome, answer: str | None
    ) -> AsyncIterator[bytes]:
        status, error = 200, None
        try:
            for chunk in chunks:
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client disconnected mid-stream"
            raise
        finally:
            self._record(call, decision, outcome, status, error, answer)
    def _cached_reply(
        self, call: _Call, decision: Decision, outcome: Outcome, found: CachedAnswer, similarity: float | None
    ) -> Reply:
        """Answer from the cache: recorded like any request, at cost 0, with what it saved."""
        call.cache_status, call.saved_cost = "hit", found.cost
        kind = "exact" if similarity is None else f"semantic, similarity {similarity:.3f}"
        decision.reasons.append(
            f"cache: hit ({kind}); answer made by {found.deployment} saved ${found.cost:.6f}"
        )
        headers = self._headers(decision, call, outcome)
        headers["x-pointsman-cache"] = "hit"
        if call.trace is not None and self.tracing is not None:
            self.tracing.answer(call.trace, found.body)
        answer = answer_text(orjson.loads(found.body)) if self.config.store.store_content else None
        self._record(call, decision, outcome, 200, None, answer)
        if not call.stream:
            return Reply(decision, headers, body=found.body)
        options = call.body.get("stream_options") if isinstance(call.body, dict) else None
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return Reply(decision, headers, stream=_replay(completion_events(found.body, usage)))

    async def _relay(
        self,
        first: bytes,
        rest: AsyncGenerator[bytes, None],
        decision: Decision,
        call: _Call,
        outcome: Outcome,
        dispatcher: Dispatcher,
    ) -> AsyncIterator[bytes]:
        status, error, health_failure = 200, None, False
        # Content is collected only when the config keeps it.
        pieces: list[str] | None = [] if self.config.store.store_content else None
        # A streamed miss is stored once the whole answer is in.
        assembler = StreamAssembler() if call.cache is not None and call.cache.store else None
        trace = call.trace
        # What was relayed, for an estimate should the upstream's usage never arrive.
        relayed = _output_size(first)
        events = 1 if relayed else 0
        try:
            yield first
            if pieces is not None:
                pieces.append(_delta_text(first))
            if assembler is not None:
                assembler.feed(first)
            if trace is not None and self.tracing is not None:
                self.tracing.chunk(trace, first)
            async for chunk in rest:
                if size := _output_size(chunk):
                    relayed += size
                    events += 1
                if pieces is not None:
                    pieces.append(_delta_text(chunk))
                if assembler is not None:
                    assembler.feed(chunk)
                if trace is not None and self.tracing is not None:
                    self.tracing.chunk(trace, chunk)
                yield chunk
            whole = (
                assembler.completion((outcome.usage.prompt_tokens, outcome.usage.completion_tokens))
                if assembler is not None
                else None
            )
            if whole is not None and call.cache is not None and self.cache is not None:
                await self.cache.put(call.cache, whole, decision.answered_by, self._cost(outcome))
        except UpstreamError as exc:
            # Bytes already reached the client: end the stream with an error event the
            # OpenAI client raises, never a silent truncation.
            status, error, health_failure = 502, f"stream interrupted: {exc.describe()}", True
            if decision.attempts:
                decision.attempts[-1].error = error
            yield (
                b"data: "
                + orjson.dumps(
                    {
                        "error": {
                            "message": f"upstream {decision.answered_by} failed mid-stream: {exc.message}",
                            "type": "upstream_error",
                            "param": None,
                            "code": "stream_interrupted",
                        }
                    }
                )
                + b"\n\n"
            )
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client disconnected mid-stream"
            raise
        finally:
            await rest.aclose()
            usage = outcome.usage
            if usage.prompt_tokens or usage.completion_tokens:
                call.usage_source = "upstream"
            else:
                # No usage report (the client left before it came, or the upstream sends none):
                # charged for the prompt and for what was relayed, so leaving early costs the same.
                call.usage_source = "estimate"
                usage.prompt_tokens = call.signals.estimated_tokens if call.signals is not None else 0
                usage.completion_tokens = max(events, -(-relayed // CHARS_PER_TOKEN))
            dispatcher.finish_stream(decision, outcome, status == 200, health_failure)
            self._record(call, decision, outcome, status, error, "".join(pieces) if pieces else None)

    def _record(
        self,
        call: _Call,
        decision: Decision | None,
        outcome: Outcome,
        status: int,
        error: str | None,
        answer: str | None = None,
    ) -> None:
        cost = self._cost(outcome)
        if call.grant is not None:
            usage = outcome.usage
            self.access.settle(call.grant, cost, usage.prompt_tokens + usage.completion_tokens)
        total = perf_counter() - call.started
        if self.metrics is not None:
            self._observe(call, decision, outcome, status, cost, total)
        if call.trace is not None and self.tracing is not None:
            usage = outcome.usage
            self.tracing.finish(
                call.request_id, call.trace, decision, outcome.deployment,
                (usage.prompt_tokens, usage.completion_tokens), status, error, call.cache_status, cost,
            )  # fmt: skip
        if self.store is None:
            return
        deployment = outcome.deployment
        usage = outcome.usage
        key = call.grant.key if call.grant is not None else None
        routed_language = (decision.signals or {}).get("language") if decision is not None else None
        self.store.add(
            {
                "request_id": call.request_id,
                "ts": call.ts,
                "api_key": key_fingerprint(call.key),
                "key_id": key.id if key is not None else None,
                "team": key.team if key is not None else None,
                "user": call.user,
                "requested_model": call.requested_model if isinstance(call.requested_model, str) else None,
                "route": decision.route if decision else None,
                "reason": decision.reason if decision else None,
                "region": deployment.region if deployment is not None else None,
                "decision": decision.as_dict(attempts=False) if decision else None,
                "attempts": [a.as_record() for a in decision.attempts] if decision else [],
                "deployment": decision.answered_by if decision else None,
                "status": status,
                "error": error,
                "stream": int(call.stream),
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cost": cost,
                "latency_ms": total * 1000,
                "upstream_ms": outcome.upstream_s * 1000,
                "first_token_ms": outcome.first_byte_s * 1000 if outcome.first_byte_s is not None else None,
                "overhead_ms": (total - outcome.upstream_s - outcome.waited_s) * 1000,
                "prompt": redact(prompt_text(call.body)) if self.config.store.store_content else None,
                "answer": redact(answer) if answer and self.config.store.store_content else None,
                # Routing's own detection when it ran, else a short sample detected by the
                # writer thread: a full detection per record would cost more than the routing.
                "language": routed_language or LanguageOf(call.last_user_text()),
                "cache": call.cache_status,
                "saved_cost": call.saved_cost,
                "usage_source": call.usage_source,
            }
        )

    @staticmethod
    def _cost(outcome: Outcome) -> float:
        cost = outcome.extra_cost
        if outcome.deployment is not None:
            usage = outcome.usage
            cost += outcome.deployment.cost(usage.prompt_tokens, usage.completion_tokens)
        return cost

    def _observe(
        self, call: _Call, decision: Decision | None, outcome: Outcome, status: int, cost: float, total: float
    ) -> None:
        m = self.metrics
        assert m is not None
        model = m.model_label(
            self.resolve_alias(call.requested_model) if isinstance(call.requested_model, str) else None
        )
        answered = decision.answered_by if decision and decision.answered_by else "none"
        m.child(m.requests, model, answered, str(status)).inc()
        m.child(m.latency, model).observe(total)
        m.overhead.observe(max(0.0, total - outcome.upstream_s - outcome.waited_s))
        if status != 200:
            m.child(m.errors, model, str(status)).inc()
        if decision is not None:
            m.child(m.decisions, decision.strategy or "none", decision.reason or "none").inc()
            for attempt in decision.attempts:
                if attempt.error and attempt.role != "judge":
                    m.child(m.attempt_failures, attempt.deployment).inc()
            if decision.answered_by and decision.fallbacks:
                m.child(m.fallbacks, model).inc()
        if outcome.deployment is not None:
            name = outcome.deployment.name
            m.child(m.tokens, name, "input").inc(outcome.usage.prompt_tokens)
            m.child(m.tokens, name, "output").inc(outcome.usage.completion_tokens)
            m.child(m.cost, name).inc(cost)
            if outcome.first_byte_s is not None:
                m.child(m.first_token, name).observe(outcome.first_byte_s)

    def _judge_caller(self, name: str | None) -> Any:
        """For an LLM judge: send one grading request to deployment `name`, return its text."""
        if name is None:
            return None
        deployment = self.config.deployment(name)

        async def ask(body: dict[str, Any]) -> JudgeReply:
            completion = await self._provider(deployment).complete({**body, "model": deployment.model})
            cost = deployment.cost(completion.prompt_tokens, completion.completion_tokens)
            return JudgeReply(answer_text(orjson.loads(completion.body)), cost, deployment.name)

        return ask

    async def start(self) -> None:
        """Connect the shared state backend, if any (never fails: unreachable means degraded).
        The server calls this at start-up; the library on the first request."""
        if self.shared is not None and not self._shared_started:
            self._shared_started = True
            await self.shared.start()
        if self.cache is not None:
            await self.cache.start()

    @property
    def degraded(self) -> list[str]:
        """What this router is running without: e.g. ["state"] while Redis is unreachable."""
        out = []
        if self.shared is not None and not self.shared.healthy:
            out.append("state")
        if self.store is not None and not getattr(self.store, "healthy", True):
            out.append("store")
        if self.cache is not None and not self.cache.healthy:
            out.append("cache")
        return out

    async def probe_resting(self) -> dict[str, bool]:
        """Active health check: one tiny request to each deployment whose circuit is not
        closed; a success closes the circuit at once instead of after `open_s`."""
        results: dict[str, bool] = {}
        for deployment in self.config.deployments:
            if self.state.circuit(deployment.name) == "closed":
                continue
            body = (
                {"model": deployment.model, "input": "ping"}
                if deployment.mode == "embeddings"
                else {
                    "model": deployment.model,
                    "messages": [{"role": "user", "content": "ping"}],
                    "max_tokens": 1,
                }
            )
            try:
                await self._provider(deployment).complete(body)
            except UpstreamError:
                results[deployment.name] = False
                continue
            self.state.release(deployment.name, ok=True)
            results[deployment.name] = True
        return results

    async def run_probes(self) -> None:
        """Probe resting deployments every `router.probe_interval_s` until cancelled."""
        interval = self.config.router.probe_interval_s
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            await self.probe_resting()

    def record_rejection(
        self, exc: PointsmanError, *, request_id: str, started: float, key: str | None = None
    ) -> None:
        """Record a request refused before routing (bad JSON, too large, unauthorised)."""
        call = _Call(request_id, started, None, key, None, False)
        self._record(call, None, Outcome(), exc.status, exc.message)

    # -- library face -------------------------------------------------------------------------

    async def acompletion(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Any:
        """Like the server's /v1/chat/completions: returns an `openai` ChatCompletion, or with
        `stream=True` an async iterator of ChatCompletionChunk."""
        from openai.types.chat import ChatCompletion

        body = {"model": model, "messages": messages, **params}
        if stream:
            body["stream"] = True
        reply = await self.handle(body, {k.lower(): v for k, v in (headers or {}).items()})
        if reply.stream is not None:
            return _chunks(reply.stream)
        assert reply.body is not None
        return ChatCompletion.model_validate_json(reply.body)

    def completion(self, model: str, messages: list[dict[str, Any]], **params: Any) -> Any:
        """Blocking `acompletion`; with `stream=True` returns a plain iterator of chunks."""
        loop = self._loop()
        result = asyncio.run_coroutine_threadsafe(self.acompletion(model, messages, **params), loop).result()
        if not params.get("stream"):
            return result
        return _blocking_iter(result, loop)

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._sync_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="pointsman-sync", daemon=True).start()
            self._sync_loop = loop
        return self._sync_loop

    async def aclose(self) -> None:
        if self.cache is not None:
            await self.cache.close()
        if self.tracing is not None:
            # Export what is left (an HTTP call: off the event loop).
            await asyncio.to_thread(self.tracing.flush)
        if self.shared is not None and self._shared_started:
            await self.shared.close()
            self._shared_started = False
        connections = self._connections.pop(asyncio.get_running_loop(), None)
        if connections is not None:
            await connections.client.close()

    def close(self) -> None:
        """Flush records and release connections made by `completion`."""
        if self._sync_loop is not None:
            asyncio.run_coroutine_threadsafe(self.aclose(), self._sync_loop).result()
            self._sync_loop.call_soon_threadsafe(self._sync_loop.stop)
            self._sync_loop = None
        if self.store is not None:
            self.store.close()
        if self.tracing is not None:
            self.tracing.close()


async def _replay(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


async def _chunks(stream: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    import httpx2
    from openai import APIError
    from openai.types.chat import ChatCompletionChunk

    async for event in stream:
        data = event[6:].strip()
        if data == b"[DONE]":
            return
        parsed = orjson.loads(data)
        if "error" in parsed:
            # The openai client's errors carry the request they answer; the library's is in-process.
            request = httpx2.Request("POST", "http://pointsman.invalid/v1/chat/completions")
            raise APIError(parsed["error"]["message"], request=request, body=parsed["error"])
        yield ChatCompletionChunk.model_validate(parsed)


def _blocking_iter(stream: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    async def step() -> Any:
        return await anext(stream)

    while True:
        try:
            yield asyncio.run_coroutine_threadsafe(step(), loop).result()
        except StopAsyncIteration:
            return


# Where the generated text of an OpenAI answer or chunk starts: `content` (and, by its suffix,
# `reasoning_content`) and tool-call `arguments`; compact JSON (streams), else spaced.
_OUTPUT_AT = (b'content":"', b'arguments":"')
_SPACED_OUTPUT_AT = (b'content": "', b'arguments": "')


def _output_size(event: bytes) -> int:
    """Bytes of generated text in an SSE chunk event or an answer, found without parsing its
    JSON (this runs for every relayed chunk): the lengths of the strings the markers open."""
    size = _strings_after(event, _OUTPUT_AT)
    if not size and b'": "' in event:
        size = _strings_after(event, _SPACED_OUTPUT_AT)
    return size


def _strings_after(event: bytes, markers: tuple[bytes, ...]) -> int:
    size = 0
    for marker in markers:
        start = event.find(marker)
        while start >= 0:
            start += len(marker)
            end = event.find(b'"', start)
            while end > 0 and event[end - 1] == 0x5C:  # an escaped quote is inside the string
                end = event.find(b'"', end + 1)
            if end < 0:
                break
            size += end - start
            start = event.find(marker, end)
    return size


def _delta_text(event: bytes) -> str:
    """The content text in one SSE chunk event (for records that keep content)."""
    data = event[6:].strip()
    if not data.startswith(b"{"):
        return ""
    choices = orjson.loads(data).get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or ""


def prompt_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    return "\n".join(
        f"{m.get('role')}: {message_text(m.get('content'))}"
        for m in body.get("messages") or ()
        if isinstance(m, dict)
    )


_DETECTOR: Detector | None = None


def redact(text: str) -> str:
    """`text` with personal data (emails, phones, cards, IBANs, national ids) replaced by
    its kind, e.g. ``[EMAIL]``; used when records keep prompts and answers."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = Detector()
    for finding in sorted(_DETECTOR.scan([text]), key=lambda f: f.start, reverse=True):
        text = text[: finding.start] + f"[{finding.kind.upper()}]" + text[finding.end :]
    return text
