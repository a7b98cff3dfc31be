"""The one YAML config file: its schema, `${ENV_VAR}` substitution and readable validation errors.

Every problem becomes one line naming the key path and the reason, e.g.
``deployments[1].price.input: wrong type: expected a number, got 'cheap'``.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pointsman.prices import catalogue_price

PROVIDERS = ("openai", "anthropic", "gemini", "bedrock")
# Where a provider's API lives when a deployment names no api_base.
GEMINI_API_BASE = "https://generativelanguage.googleapis.com"


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


def check_regex(value: str | None) -> str | None:
    """For validators: `value` unchanged if it compiles as a regular expression."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """US dollars per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)


class Capabilities(_Strict):
    vision: bool = False
    tools: bool = True
    json_output: bool = True
    audio: bool = False


class Timeouts(_Strict):
    """Seconds. `first_byte` bounds the wait for a stream's first chunk, or for a non-streamed
    answer's status and headers; `inter_chunk` every later read of a stream; `total` bounds the
    whole upstream call."""

    connect: float = Field(5.0, gt=0)
    first_byte: float = Field(30.0, gt=0)
    inter_chunk: float = Field(30.0, gt=0)
    total: float = Field(600.0, gt=0)


class Deployment(_Strict):
    name: str = Field(min_length=1)
    provider: str
    model: str = Field(min_length=1)
    api_base: str = Field(min_length=1)
    api_key: str | None = None
    # Unset: looked up in the price catalogue (pointsman.prices); unknown prices count as zero.
    price: Price = Price()
    context_window: int = Field(128_000, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    capabilities: Capabilities = Capabilities()
    region: str | None = None
    tags: tuple[str, ...] = ()
    timeouts: Timeouts = Timeouts()
    max_retries: int = Field(0, ge=0, le=10)
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    # Ask OpenAI-compatible upstreams for usage on streams (stream_options.include_usage) so
    # streamed requests are costed; turn off for servers that reject the option.
    stream_usage: bool = True
    # What the deployment serves: chat (completions) or embeddings; embeddings deployments
    # belong to virtual models of `type: embeddings` and answer only /v1/embeddings.
    mode: Literal["chat", "embeddings"] = "chat"
    # The upstream API an openai-provider chat deployment is called with: `chat` (Chat
    # Completions) or `responses` (the Responses API; /v1/responses requests pass through).
    api: Literal["chat", "responses"] = "chat"
    # Outbound proxy for this deployment's calls: a URL (http://host:port), `none` to go direct,
    # or unset to follow HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
    proxy: str | None = None
    # provider: bedrock: the AWS region (api_base defaults to its bedrock-runtime endpoint) and,
    # optionally, a named profile of the AWS config files; credentials come from AWS's standard chain.
    aws_region: str | None = None
    aws_profile: str | None = None
    _price_source: str = PrivateAttr("config")

    @model_validator(mode="before")
    @classmethod
    def _default_api_base(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("api_base"):
            if data.get("provider") == "gemini":
                return {**data, "api_base": GEMINI_API_BASE}
            if data.get("provider") == "bedrock":
                if not isinstance(data.get("aws_region"), str):
                    raise ValueError("provider bedrock needs aws_region (or an api_base endpoint)")
                return {**data, "api_base": f"https://bedrock-runtime.{data['aws_region']}.amazonaws.com"}
        return data

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"unknown provider {value!r} (expected one of: {', '.join(PROVIDERS)})")
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is not None and value.lower() != "none" and not value.startswith("http://"):
            raise ValueError(f"expected an http://host:port proxy URL or 'none', got {value!r}")
        return value

    def model_post_init(self, context: Any) -> None:
        if "price" in self.model_fields_set:
            return
        found = catalogue_price(self.provider, self.model, self.api_base)
        if found is None:
            self._price_source = "unknown"
        else:
            # Frozen model: set once here, before anyone can read it.
            self.__dict__["price"] = Price(input=found[0], output=found[1])
            self._price_source = "catalogue"

    @property
    def price_source(self) -> str:
        """Where `price` came from: `config`, `catalogue` or `unknown` (then counted as free)."""
        return self._price_source

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price.input + completion_tokens * self.price.output) / 1e6


class VerifierSettings(_Strict):
    """The learned verifier judge: a trained artifact (`pointsman train-verifier`, or the
    shipped `gsm8k`) scores each cheap answer P(right); answers scoring below the threshold
    escalate. Give at most one of threshold, escalation_share, quality, cost_share (none: the
    artifact's own threshold)."""

    artifact: str = "gsm8k"
    threshold: float | None = Field(None, ge=0, le=1)
    # Targets met on the verifier's out-of-fold table: at most this share of answers escalated;
    # this share of the strong model's accuracy kept; at most this share of always-strong's
    # cost with the cheap call counted.
    escalation_share: float | None = Field(None, ge=0, le=1)
    quality: float | None = Field(None, gt=0, le=1)
    cost_share: float | None = Field(None, ge=0, le=1)
    # Ask OpenAI-compatible upstreams for token log-probabilities when the verifier learned
    # from them (the client gets them only if it asked); false never asks.
    logprobs: bool = True
    # A deployment asked for a second cheap answer to each judged request (the cheap one
    # itself for another sample); needs a verifier trained with second answers.
    second_opinion: str | None = None

    @model_validator(mode="after")
    def _one_knob(self) -> VerifierSettings:
        knobs = ("threshold", "escalation_share", "quality", "cost_share")
        given = [k for k in knobs if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(knobs)} (got {', '.join(given)})")
        return self


class CascadeSettings(_Strict):
    """Try the plan's deployments in order (cheap first) and accept an answer only when every
    judge accepts it; otherwise escalate to the next. Streaming requests are judged too: the
    cheap answer is buffered and released as a stream once accepted."""

    judges: tuple[Literal["rules", "logprobs", "llm", "verifier"], ...] = ("rules",)
    # verifier judge: the trained artifact and its threshold or target.
    verifier: VerifierSettings = VerifierSettings()
    # logprobs judge: the mean token log-probability an answer needs.
    min_logprob: float = -1.0
    # llm judge: the deployment that grades answers 1-10, and the score an answer needs.
    judge_deployment: str | None = None
    min_score: float = Field(7.0, ge=1, le=10)
    # rules judge: extra regular expressions that mark an answer as not good enough, one an
    # answer must contain (e.g. a final-answer marker), and whether worked arithmetic
    # ("12 * 3 = 36", "<<12*3=36>>") in the answer must check out.
    reject_patterns: tuple[str, ...] = ()
    require_pattern: str | None = None
    check_arithmetic: bool = False
    max_steps: int = Field(3, ge=1)


class HedgeSettings(_Strict):
    """If the first deployment has not answered within `after_s` (default: its recent p95),
    send the same request to the next one and take whichever good answer comes first."""

    after_s: float | None = Field(None, gt=0)
    default_after_s: float = Field(2.0, gt=0)
    min_samples: int = Field(20, ge=1)


class SemanticCacheSettings(_Strict):
    """Also answer a request whose last user turn is close in meaning to a cached one (cosine
    similarity of the bundled encoder's embeddings at least `threshold`), when everything else
    (earlier turns, system prompt, tools, parameters, tenant) is identical."""

    # Fitted by `python -m bench.semantic_threshold` (docs/cache-and-tracing.md): on held-out
    # pairs, precision 0.97 and recall 0.75 with the bundled encoder.
    threshold: float = Field(0.84, gt=0, le=1)
    # Nearest neighbours examined per lookup before the exact-context check.
    candidates: int = Field(8, ge=1, le=256)


class CacheSettings(_Strict):
    """A virtual model's response cache (`models.<name>.cache`): identical requests (same model
    as asked, messages, tools and answer-changing parameters) from the same tenant are answered
    from the cache, at no cost."""

    enabled: bool = True
    ttl_s: float = Field(3600.0, gt=0)
    # "tenant": one cache per virtual key's team (else per key); "shared": every caller's.
    scope: Literal["tenant", "shared"] = "tenant"
    # "deterministic": only requests with temperature <= max_temperature (a request without a
    # temperature has the API's default of 1) and one choice; "always": every request.
    policy: Literal["deterministic", "always"] = "deterministic"
    max_temperature: float = Field(0.0, ge=0)
    # "all": every caller; "opted_in": only virtual keys with metadata `cache: "on"`. A key
    # with metadata `cache: "off"` is never cached either way.
    keys: Literal["all", "opted_in"] = "all"
    semantic: SemanticCacheSettings | None = None


class CacheStoreSettings(_Strict):
    """Where cached answers live: in this process (an LRU bounded by entries and bytes), or
    in Redis when `state.url` is set, so every replica shares them (`backend: memory` keeps
    them local even then)."""

    backend: Literal["auto", "memory", "redis"] = "auto"
    max_entries: int = Field(10_000, ge=1)
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    # The most a lookup or store waits on Redis; past it the request goes on as a miss.
    timeout_s: float = Field(0.05, gt=0)


class TracingSettings(_Strict):
    """OpenTelemetry traces over OTLP/HTTP (the `otel` extra), configured by the standard
    OTEL_* environment variables. On when `enabled` is true, or when unset and
    OTEL_TRACES_EXPORTER=otlp or an OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set."""

    enabled: bool | None = None
    # Export prompts and answers as span attributes (off: never exported).
    capture_content: bool = False
    service_name: str = "pointsman"


class VirtualModel(_Strict):
    """A name clients may ask for (`auto`, `fast`, ...) that is routed by a strategy."""

    strategy: str = "ordered"
    deployments: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    options: dict[str, Any] = {}
    description: str = ""
    cascade: CascadeSettings | None = None
    hedge: HedgeSettings | None = None
    cache: CacheSettings | None = None
    # `embeddings` models route /v1/embeddings requests over `mode: embeddings` deployments
    # (strategies: EMBEDDING_STRATEGIES); chat models never serve embeddings, nor the reverse.
    type: Literal["chat", "embeddings"] = "chat"


# Strategies that rank without reading a conversation, so they can route embeddings requests.
EMBEDDING_STRATEGIES = ("ordered", "weighted", "balance")


class ClientTimeouts(_Strict):
    """Seconds a client connection may take, after which the server closes it: `keep_alive`
    idle between requests, `request_head` from a connection's start (or a request's first
    byte) to the end of the request's headers, `request_body` from there to the body's end."""

    keep_alive: float = Field(5.0, gt=0)
    request_head: float = Field(10.0, gt=0)
    request_body: float = Field(60.0, gt=0)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    # Reload the config when its file changes (requests in flight finish on the old one).
    watch_config: bool = False
    # Static client keys; when set, every /v1 request needs `Authorization: Bearer <one of them>`
    # (or, with virtual keys on, the master key or a virtual key).
    api_keys: tuple[str, ...] = ()
    timeouts: ClientTimeouts = ClientTimeouts()


class CircuitBreakerSettings(_Strict):
    """Open a deployment's circuit after `failure_threshold` failures in a row; after `open_s`
    let `half_open_probes` requests through, and close it on a success."""

    failure_threshold: int = Field(5, ge=1)
    open_s: float = Field(10.0, gt=0)
    half_open_probes: int = Field(1, ge=1)


class RouterSettings(_Strict):
    max_attempts: int = Field(5, ge=1, le=50)
    backoff_base_s: float = Field(0.05, ge=0)
    backoff_max_s: float = Field(2.0, ge=0)
    # A Retry-After up to this long is waited out in place; a longer one cools the deployment
    # down for that long and the request fails over at once.
    max_retry_wait_s: float = Field(1.0, ge=0)
    cooldown_s: float = Field(5.0, ge=0)
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    # When every deployment of a plan is cooling down or open, wait up to this long for the
    # earliest to recover before answering 503 with Retry-After.
    wait_for_recovery_s: float = Field(1.0, ge=0)
    # Seconds between active health probes of deployments whose circuit is open (off if unset).
    probe_interval_s: float | None = Field(None, gt=0)


class StoreSettings(_Strict):
    """Records in SQLite at `path` (default), or in PostgreSQL when `url` is set
    (`postgresql://user:password@host:port/db`, shared by every replica)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    path: str | None = None
    enabled: bool = True
    flush_interval_s: float = Field(0.2, gt=0)
    # Records older than this are deleted (hourly); kept forever when unset.
    retention_days: float | None = Field(None, gt=0)
    # Keep prompts and answers in the records (PII-masked). Off by default.
    store_content: bool = False
    url: str | None = None
    # The PostgreSQL schema holding the tables (created, and migrated, at start).
    db_schema: str = Field("public", alias="schema", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    # While PostgreSQL is unreachable: records kept in memory, past which they spill to a JSONL
    # file in `spill_dir` (default: `spill` beside the SQLite path) until it returns.
    buffer_records: int = Field(10_000, ge=0)
    spill_dir: str | None = None
    connect_timeout_s: float = Field(2.0, gt=0)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"expected a postgresql:// URL, got {value!r}")
        return value


class AuthSettings(_Strict):
    """Virtual keys. On when `enabled` is true, or when unset and the master key's environment
    variable is set."""

    enabled: bool | None = None
    master_key_env: str = "POINTSMAN_MASTER_KEY"


class BudgetLimit(_Strict):
    amount: float = Field(ge=0)
    period: Literal["day", "week", "month"] = "month"


class BudgetSettings(_Strict):
    """Money budgets beside the per-key ones; `users` applies to each distinct `user`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    total: BudgetLimit | None = Field(None, alias="global")
    teams: dict[str, BudgetLimit] = {}
    users: BudgetLimit | None = None
    # Past this share of any budget, requests are downgraded: to `downgrade[model]` when set,
    # else to the plan's cheapest deployments first.
    soft_limit: float = Field(0.8, gt=0, le=1)
    downgrade: dict[str, str] = {}
    # Output tokens assumed for the worst-case estimate when a request sets no max_tokens.
    default_max_output_tokens: int = Field(1024, gt=0)


class MetricsSettings(_Strict):
    enabled: bool = True
    # Label budgets of individual keys (bounded by the keys an admin creates).
    per_key_labels: bool = False


class ResidencySettings(_Strict):
    """Data residency: a request's region (caller metadata or `x-pointsman-region`, else
    `region`) admits only deployments hosted in the regions `allow` lists for it (by default
    the same region). Deployments without a `region` never serve a request that has one."""

    region: str | None = None
    allow: dict[str, tuple[str, ...]] = {}


class PIIRule(_Strict):
    """What to do when a request carries these kinds of personal data: `route` (only to the
    listed deployments, names or `tag:<tag>`), `mask` (placeholders upstream, originals put
    back in the answer), or `refuse` (400)."""

    kinds: tuple[Literal["email", "phone", "card", "iban", "national_id"], ...] = Field(min_length=1)
    action: Literal["route", "mask", "refuse"]
    deployments: tuple[str, ...] = ()


class PIISettings(_Strict):
    engine: Literal["builtin", "presidio"] = "builtin"
    rules: tuple[PIIRule, ...] = ()


class AccessRule(_Strict):
    """Allow and deny lists (deployment names or `tag:<tag>`) for the callers it names."""

    key: str | None = None
    user: str | None = None
    role: str | None = None
    tier: str | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        named = [f"{k} {v}" for k, v in (("user", self.user), ("role", self.role), ("tier", self.tier)) if v]
        return ", ".join((["this key"] if self.key else []) + named)


class UserTierRules(_Strict):
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_price: float | None = Field(None, ge=0)


class PoliciesSettings(_Strict):
    """Hard constraints applied before any strategy (see pointsman.policies)."""

    capabilities: bool = True
    residency: ResidencySettings | None = None
    pii: PIISettings | None = None
    access: tuple[AccessRule, ...] = ()
    user_tiers: dict[str, UserTierRules] = {}
    default_user_tier: str | None = None
    # USD per request, estimated from prompt tokens and max_tokens (else the assumed length).
    max_price: float | None = Field(None, ge=0)
    assumed_output_tokens: int = Field(500, gt=0)


class RoleMatch(_Strict):
    """How to recognise an agent's role when no key or header names it: a regular expression
    on the system prompt, or a prefix of the offered tools' names."""

    system_pattern: str | None = None
    tool_prefix: str | None = None

    @field_validator("system_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return check_regex(value)


class SignalsSettings(_Strict):
    # Agent roles by system prompt or tool names (checked in order; a key's or header's role wins).
    roles: dict[str, RoleMatch] = {}
    # Extra or replacement domain keyword lists (a request matches a domain by any keyword).
    domains: dict[str, tuple[str, ...]] = {}
    # The languages the detector chooses among (ISO 639-1); default: the 40 most common.
    languages: tuple[str, ...] = ()


class StateSettings(_Strict):
    """Where routing state lives: in this process (no url), or shared by every replica in
    Redis (`url: redis://host:port/db`)."""

    url: str | None = None
    # Keys are namespaced so several deployments of pointsman can share one Redis.
    prefix: str = "pointsman"
    # The most a request waits on one try of a Redis call (it tries `unhealthy_after` times)
    # before deciding locally: sized to a network round trip seen from a busy process, not to
    # an idle loopback.
    timeout_s: float = Field(1.0, gt=0)
    # How often health (open circuits, cooldowns) is exchanged with the other replicas.
    sync_interval_s: float = Field(0.1, gt=0)
    # Redis counts as away only after this many failed round trips in a row, not one slow call.
    unhealthy_after: int = Field(3, ge=1)
    # Replicas sharing the limits; while Redis is away each admits 1/replicas of every limit and
    # budget. Unset: learned from the replicas' heartbeats in Redis.
    replicas: int | None = Field(None, ge=1)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis:// URL, got {value!r}")
        return value


class KeySettings(_Strict):
    """How long a replica trusts what it knows of a virtual key."""

    # A key is re-read from the key store at most this often, so a revocation reaches every
    # replica within it.
    cache_s: float = Field(2.0, gt=0)
    # While the key store cannot be read, a key seen within this window keeps its last known state.
    outage_cache_s: float = Field(900.0, ge=0)


class Config(_Strict):
    server: ServerSettings = ServerSettings()
    router: RouterSettings = RouterSettings()
    store: StoreSettings = StoreSettings()
    state: StateSettings = StateSettings()
    auth: AuthSettings = AuthSettings()
    keys: KeySettings = KeySettings()
    budgets: BudgetSettings = BudgetSettings()
    metrics: MetricsSettings = MetricsSettings()
    deployments: tuple[Deployment, ...] = Field(min_length=1)
    models: dict[str, VirtualModel] = {}
    # Names clients already use (exact, or glob patterns like "claude-*") mapped to a virtual
    # model or deployment, so an agent configured for one model is routed transparently.
    aliases: dict[str, str] = {}
    policies: PoliciesSettings = PoliciesSettings()
    signals: SignalsSettings = SignalsSettings()
    cache: CacheStoreSettings = CacheStoreSettings()
    tracing: TracingSettings = TracingSettings()

    @field_validator("store", mode="before")
    @classmethod
    def _store_shorthand(cls, value: Any) -> Any:
        # `store: postgresql://...` is short for `store: {url: postgresql://...}`.
        return {"url": value} if isinstance(value, str) else value

    @field_validator("state", mode="before")
    @classmethod
    def _state_shorthand(cls, value: Any) -> Any:
        # `state: redis://...` is short for `state: {url: redis://...}`.
        return {"url": value} if isinstance(value, str) else value

    def deployment(self, name: str) -> Deployment:
        return self._by_name()[name]

    def model_type(self, name: str) -> str | None:
        """"chat" or "embeddings" for a virtual model or deployment name; None if unknown."""
        if name in self.models:
            return self.models[name].type
        deployment = self._by_name().get(name)
        return deployment.mode if deployment is not None else None

    def _by_name(self) -> dict[str, Deployment]:
        cached = self.__dict__.get("_deployments_by_name")
        if cached is None:
            cached = {d.name: d for d in self.deployments}
            self.__dict__["_deployments_by_name"] = cached
        return cached


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute_env(node: Any, path: str, problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute_env(v, join_path(path, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is not None:
                    return default
                problems.append(f"{path}: environment variable {name} is not set")
                return ""
            return value

        return _ENV.sub(replace, node)
    return node


def join_path(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


_TYPE_WORDS = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def describe_error(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _TYPE_WORDS:
        return f"wrong type: expected {_TYPE_WORDS[kind]}, got {error['input']!r}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return f"{error['msg'][0].lower()}{error['msg'][1:]} (got {error['input']!r})"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _check_references(config: Config) -> list[str]:
    problems: list[str] = []
    names = list(dict.fromkeys(d.name for d in config.deployments))
    seen: set[str] = set()
    for i, name in enumerate(d.name for d in config.deployments):
        if name in seen:
            problems.append(f"deployments[{i}].name: duplicate deployment name {name!r}")
        seen.add(name)
    for vname, vm in config.models.items():
        if vname in seen:
            problems.append(f"models.{vname}: name is also a deployment name; pick another")
        if vm.cascade and vm.cascade.judge_deployment and vm.cascade.judge_deployment not in seen:
            problems.append(
                f"models.{vname}.cascade.judge_deployment: unknown deployment "
                f"{vm.cascade.judge_deployment!r} (known: {', '.join(names)})"
            )
        second = vm.cascade.verifier.second_opinion if vm.cascade else None
        if second is not None and second not in seen:
            problems.append(
                f"models.{vname}.cascade.verifier.second_opinion: unknown deployment {second!r} "
                f"(known: {', '.join(names)})"
            )
        if vm.cascade and "llm" in vm.cascade.judges and not vm.cascade.judge_deployment:
            problems.append(f"models.{vname}.cascade.judge_deployment: required by the 'llm' judge")
        for field in ("deployments", "fallbacks"):
            for i, ref in enumerate(getattr(vm, field)):
                if ref not in seen:
                    problems.append(
                        f"models.{vname}.{field}[{i}]: unknown deployment {ref!r} (known: {', '.join(names)})"
                    )
    problems.extend(_check_modes(config))
    if config.cache.backend == "redis" and not config.state.url:
        problems.append("cache.backend: 'redis' needs state.url (the Redis the replicas share)")
    for vname, vm in config.models.items():
        if vm.cache is not None and vm.cache.semantic is not None and not _installed("usearch"):
            problems.append(
                f"models.{vname}.cache.semantic: needs the usearch package: pip install 'pointsman[cache]'"
            )
    if config.tracing.enabled and not _installed("opentelemetry.sdk"):
        problems.append("tracing.enabled: needs OpenTelemetry: pip install 'pointsman[otel]'")
    for alias, target in config.aliases.items():
        if target not in config.models and target not in seen:
            problems.append(
                f"aliases.{alias}: unknown model {target!r} (known: {', '.join([*config.models, *names])})"
            )
    for source, target in config.budgets.downgrade.items():
        for where, name in ((f"budgets.downgrade.{source}", source), (f"budgets.downgrade.{source}", target)):
            if name not in config.models:
                problems.append(
                    f"{where}: unknown virtual model {name!r} (known: {', '.join(config.models)})"
                )
    problems.extend(_check_policies(config))
    for check in CHECKS:
        problems.extend(check(config))
    return problems


def _check_modes(config: Config) -> list[str]:
    """Embeddings and chat stay apart: each virtual model uses deployments of its own type."""
    problems: list[str] = []
    by_name = config._by_name()
    for i, d in enumerate(config.deployments):
        if d.mode == "embeddings" and d.provider != "openai":
            problems.append(
                f"deployments[{i}].mode: provider {d.provider!r} has no embeddings API "
                "(embeddings deployments use provider 'openai', any OpenAI-compatible server)"
            )
        if d.api == "responses" and (d.provider != "openai" or d.mode != "chat"):
            problems.append(
                f"deployments[{i}].api: 'responses' needs provider 'openai' and mode 'chat'"
            )
    for vname, vm in config.models.items():
        if vm.type == "embeddings":
            if vm.strategy not in EMBEDDING_STRATEGIES:
                problems.append(
                    f"models.{vname}.strategy: {vm.strategy!r} cannot route embeddings "
                    f"(expected one of: {', '.join(EMBEDDING_STRATEGIES)})"
                )
            if vm.cascade is not None:
                problems.append(f"models.{vname}.cascade: embeddings models have no cascade")
        for field in ("deployments", "fallbacks"):
            for i, ref in enumerate(getattr(vm, field)):
                target = by_name.get(ref)
                if target is not None and target.mode != vm.type:
                    problems.append(
                        f"models.{vname}.{field}[{i}]: deployment {ref!r} has mode {target.mode!r} but "
                        f"model {vname!r} has type {vm.type!r} (set `type: {target.mode}` on the model, "
                        "or use deployments of its type)"
                    )
    return problems


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate a config mapping (as read from YAML); raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping, got {type(data).__name__}"], source)
    problems: list[str] = []
    data = _substitute_env(data, "", problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        failed_items = {e["loc"][0] for e in errors if len(e["loc"]) > 1}
        # "at least 1 item" after its items failed is noise: the items' own lines say it.
        errors = [
            e
            for e in errors
            if not (e["type"] == "too_short" and e["loc"][:1] and e["loc"][0] in failed_items)
        ]
        for error in errors:
            path = ""
            for part in error["loc"]:
                path = join_path(path, part)
            problems.append(f"{path or '(top level)'}: {describe_error(error)}")
        problems.extend(_references_despite(data, errors))
        raise ConfigError(problems, source) from None
    problems.extend(_check_references(config))
    if problems:
        raise ConfigError(problems, source)
    return config


def unpriced_deployments(config: Config) -> list[str]:
    """Deployments with neither a configured nor a catalogue price (they count as free)."""
    return [d.name for d in config.deployments if d.price_source == "unknown"]


def _references_despite(data: dict[str, Any], errors: list[Any]) -> list[str]:
    """Reference and strategy-option problems of a config whose schema failed, so that one
    `config check` lists them all: the keys that failed are taken out and the rest checked. Where
    that cannot give a valid config (a required key failed), nothing more is reported; lines about
    a key that was taken out are left to its own schema error."""
    pruned = copy.deepcopy(data)
    taken: list[str] = []
    for error in errors:
        *parents, leaf = error["loc"] or ("",)
        if error["type"] == "missing" or not isinstance(leaf, str):
            return []
        node: Any = pruned
        for part in parents:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return []
        if not isinstance(node, dict) or leaf not in node:
            return []
        del node[leaf]
        path = ""
        for part in error["loc"]:
            path = join_path(path, part)
        taken.append(path)
    try:
        config = Config.model_validate(pruned)
    except ValidationError:
        return []
    return [
        line
        for line in _check_references(config)
        if not any(line.startswith((f"{t}:", f"{t}.", f"{t}[")) for t in taken)
    ]


def load_config(source: str | Path | dict[str, Any]) -> Config:
    """Load and validate a config from a YAML file path or an already-parsed mapping. Checks
    that higher layers register (strategy options) run once those are imported, as importing
    `pointsman.router` does."""
    if isinstance(source, dict):
        return parse_config(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc.strerror}"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"(yaml): {where}: {reason}"], str(path)) from None
    return parse_config(data if data is not None else {}, str(path))


# Checks that live beside what they check and register here when their module is imported
# (strategy options: `pointsman.strategies`), so that this bottom layer names none of them;
# `pointsman.router` imports every such module.
CHECKS: list[Callable[[Config], list[str]]] = []


def register_check(check: Callable[[Config], list[str]]) -> Callable[[Config], list[str]]:
    """Run `check` on every config loaded from now on; it returns one line per problem, in
    this module's path style (`models.auto.options.rules[0]: ...`)."""
    CHECKS.append(check)
    return check


def _check_policies(config: Config) -> list[str]:
    """Problems with the `policies` section that need the whole config (unknown names)."""
    settings = config.policies
    names = {d.name for d in config.deployments}
    tags = {t for d in config.deployments for t in d.tags}
    problems: list[str] = []

    def check(path: str, entries: Sequence[str]) -> None:
        for i, entry in enumerate(entries):
            if entry.startswith("tag:"):
                if entry[4:] not in tags:
                    problems.append(f"{path}[{i}]: no deployment has the tag {entry[4:]!r}")
            elif entry not in names:
                problems.append(
                    f"{path}[{i}]: unknown deployment {entry!r} (known: {', '.join(sorted(names))})"
                )

    if settings.pii is not None:
        for i, rule in enumerate(settings.pii.rules):
            check(f"policies.pii.rules[{i}].deployments", rule.deployments)
            if rule.action == "route" and not rule.deployments:
                problems.append(
                    f"policies.pii.rules[{i}].deployments: a 'route' rule needs the approved "
                    "deployments (names or tag:<tag>)"
                )
    for i, access in enumerate(settings.access):
        check(f"policies.access[{i}].allow", access.allow)
        check(f"policies.access[{i}].deny", access.deny)
        if not (access.key or access.user or access.role or access.tier):
            problems.append(f"policies.access[{i}]: name who it applies to (key, user, role or tier)")
    for tier, rules in settings.user_tiers.items():
        check(f"policies.user_tiers.{tier}.allow", rules.allow)
        check(f"policies.user_tiers.{tier}.deny", rules.deny)
    if settings.default_user_tier and settings.default_user_tier not in settings.user_tiers:
        problems.append(
            f"policies.default_user_tier: unknown tier {settings.default_user_tier!r} "
            f"(known: {', '.join(settings.user_tiers) or 'none'})"
        )
    return problems
