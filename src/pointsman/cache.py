"""The response cache, between select and dispatch: a request that was answered before (same
tenant, same model as asked, same messages, tools and answer-changing parameters) is answered
again from the cache, without an upstream call and at no cost.

- exact: a SHA-256 of the normalised request and the tenant; in this process (an LRU bounded by
  entries, bytes and a TTL) or in Redis when `state.url` is set, so every replica shares it.
  Redis trouble is a miss, never a failed request.
- semantic (optional per virtual model): the last user turn embedded with the bundled encoder,
  searched in an HNSW index (usearch, the `cache` extra) among the entries whose everything-else
  (tenant, earlier turns, system prompt, tools, parameters) hashes the same; a neighbour at or
  above the similarity threshold answers. The index lives in each replica.

A request may skip the cache: `cache-control: no-store` or `x-pointsman-cache: bypass` (no
lookup, no store), `cache-control: no-cache` or `x-pointsman-cache: refresh` (no lookup; the
fresh answer replaces the entry).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from pointsman.config import CacheSettings, CacheStoreSettings, Config, StateSettings
from pointsman.errors import InvalidRequest
from pointsman.learning.encoders import WordLlamaEncoder
from pointsman.signals import message_text

if TYPE_CHECKING:
    from pointsman.access import Grant

# Request fields that never change the answer; everything else is part of the key, so an
# unknown parameter can only make two requests differ, never make them collide.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})
HEADER = "x-pointsman-cache"


@dataclass(slots=True)
class CachedAnswer:
    """A stored answer: the OpenAI chat completion JSON, who made it and what it cost then."""

    body: bytes
    deployment: str | None
    cost: float
    created: float

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "body": self.body.decode(),
                "deployment": self.deployment,
                "cost": self.cost,
                "created": self.created,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer:
        data = orjson.loads(raw)
        return cls(
            data["body"].encode(), data.get("deployment"), float(data.get("cost") or 0.0), data["created"]
        )


@dataclass(slots=True)
class CacheTicket:
    """What the cache does for one request. `status` is what the response header says:
    "miss" (looked up, not found; the answer will be stored) or "bypass" (not looked up)."""

    settings: CacheSettings
    status: str
    lookup: bool
    store: bool
    key: str
    # For the record: "refresh" when the client asked to replace the entry.
    recorded: str
    # The semantic part: the hash everything but the last user turn must match, and that turn.
    context: str | None = None
    text: str | None = None
    index: tuple[str, str] | None = None
    # The last user turn's embedding, once computed (lookup and store share it).
    vector: np.ndarray | None = None


def tenant_of(grant: Grant | None, key: str | None) -> str:
    """Whose cache a request reads: a virtual key's team (else the key), the master key, a
    static or unchecked bearer token's fingerprint, or the anonymous caller's."""
    if grant is not None and grant.key is not None:
        team = grant.key.team
        return f"team:{team}" if team else f"key:{grant.key.id}"
    if grant is not None and grant.master:
        return "master"
    if key:
        return "token:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return "anonymous"


def _digest(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def request_key(body: Mapping[str, Any], tenant: str) -> str:
    """The exact key: the tenant and every answer-changing field of the request."""
    return _digest(tenant, {k: v for k, v in body.items() if k not in IGNORED_FIELDS})


def semantic_parts(body: Mapping[str, Any], tenant: str) -> tuple[str, str] | None:
    """(hash of everything but the last user turn's text, that text); None when the request
    has no user turn with text."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            text = message_text(message.get("content"))
            if not text.strip():
                return None
            content = message.get("content")
            # Only the turn's text is compared by meaning; its images, audio or files must match.
            others = (
                [p for p in content if not (isinstance(p, dict) and p.get("type") == "text")]
                if isinstance(content, list)
                else None
            )
            rest = [*messages[:i], {**message, "content": others}, *messages[i + 1 :]]
            fields = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and k != "messages"}
            return _digest(tenant, fields, rest), text
    return None


def cacheable(settings: CacheSettings, body: Mapping[str, Any]) -> bool:
    """Whether the policy lets this request be cached (deterministic enough, one choice)."""
    if settings.policy == "always":
        return True
    n = body.get("n")
    if n is not None and n != 1:
        return False
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    return isinstance(temperature, int | float) and temperature <= settings.max_temperature


def requested_mode(headers: Mapping[str, str] | None) -> str | None:
    """ "bypass", "refresh" or None from the request's headers; raises InvalidRequest on an
    unknown `x-pointsman-cache` value."""
    if not headers:
        return None
    asked = headers.get(HEADER)
    if asked is not None:
        asked = asked.strip().lower()
        if asked not in ("bypass", "refresh", ""):
            raise InvalidRequest(
                f"header {HEADER}: expected 'bypass' or 'refresh', got {asked!r}", code="invalid_cache_header"
            )
        if asked:
            return asked
    control = headers.get("cache-control")
    if control:
        directives = {d.strip().split("=", 1)[0].lower() for d in control.split(",")}
        if "no-store" in directives:
            return "bypass"
        if "no-cache" in directives:
            return "refresh"
    return None


# -- backends ---------------------------------------------------------------------------------


class MemoryBackend:
    """An LRU of answers bounded by entry count and bytes; each entry has its own expiry."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[float, CachedAnswer, int]] = OrderedDict()
        # The sync library face runs its own event loop thread beside the server's.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedAnswer | None:
        now = time.time()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] <= now:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return found[1]

    async def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        size = len(answer.body) + len(key) + 200
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (time.time() + ttl_s, answer, size)
            self.bytes += size
            while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, _, size = self._entries.pop(key)
        self.bytes -= size

    async def close(self) -> None:
        return None


class RedisBackend:
    """Answers in Redis under `<state.prefix>:cache:`, shared by every replica, expiring by
    Redis' own TTL. Every call is bounded by `timeout_s`; any failure is a miss (get) or a
    skipped store (put), and counts in `errors`."""

    def __init__(self, state: StateSettings, timeout_s: float) -> None:
        assert state.url is not None
        self.url = state.url
        self.prefix = f"{state.prefix}:cache:"
        self.timeout_s = timeout_s
        self.errors = 0
        self.healthy = True
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import redis.asyncio as aioredis  # the `redis` extra, needed only with state.url

            client = self._clients[loop] = aioredis.from_url(
                self.url,
                socket_connect_timeout=max(0.5, self.timeout_s),
                socket_timeout=max(0.5, self.timeout_s * 10),
                health_check_interval=0,
            )
        return client

    async def get(self, key: str) -> CachedAnswer | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self._client().get(self.prefix + key)
            self.healthy = True
            return CachedAnswer.decode(raw) if raw is not None else None
        except Exception:  # a cache error is a miss, whatever it was
            self._failed()
            return None

    async def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client().set(self.prefix + key, answer.encode(), px=max(1, int(ttl_s * 1000)))
            self.healthy = True
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.errors += 1
        self.healthy = False

    # -- semantic entries, shared: a Redis stream every replica's index is built from ----------

    @property
    def stream(self) -> str:
        return self.prefix + "semantic"

    async def publish(self, fields: dict[str, bytes | str], max_entries: int) -> None:
        """Append one semantic entry for the other replicas (bounded, approximately, to
        `max_entries`); a failure only means the others will not see it."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client().xadd(self.stream, fields, maxlen=max_entries, approximate=True)
        except Exception:
            self._failed()

    async def entries_after(self, last: str, block_ms: int) -> list[tuple[str, dict[bytes, bytes]]]:
        """Semantic entries published after id `last` (waiting up to `block_ms` for some)."""
        found = await self._client().xread({self.stream: last}, count=500, block=block_ms)
        return [(ident.decode(), fields) for _, entries in found for ident, fields in entries]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()


Backend = MemoryBackend | RedisBackend


# -- semantic index -----------------------------------------------------------------------------


class SemanticIndex:
    """Last-user-turn embeddings of cached requests in an HNSW index (usearch), one per tenant
    and requested model, each vector pointing at the exact entry that holds the answer.
    Bounded by `max_entries` (oldest out first); expired entries are skipped and dropped."""

    def __init__(self, max_entries: int) -> None:
        try:
            from usearch.index import Index  # the `cache` extra: only semantic caching needs it
        except ImportError:
            raise RuntimeError(
                "a semantic cache needs the usearch package: pip install 'pointsman[cache]'"
            ) from None
        self._index_type = Index
        self.encoder = WordLlamaEncoder()
        self.max_entries = max_entries
        self._indexes: dict[tuple[str, str], Any] = {}
        # id -> (index name, context hash, exact key, expires)
        self._entries: OrderedDict[int, tuple[tuple[str, str], str, str, float]] = OrderedDict()
        self._ids: dict[tuple[str, str], int] = {}
        self._next = 1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def embed(self, text: str) -> np.ndarray:
        vector: np.ndarray = self.encoder.encode([text])[0]
        return vector

    def search(
        self, name: tuple[str, str], context: str, vector: np.ndarray, threshold: float, candidates: int
    ) -> tuple[str, float] | None:
        """The exact key of the closest live entry with the same context, and its similarity,
        when that similarity is at least `threshold`."""
        with self._lock:
            index = self._indexes.get(name)
            if index is None or len(index) == 0:
                return None
            matches = index.search(vector, min(candidates, len(index)))
            now = time.time()
            for ident, distance in zip(matches.keys, matches.distances, strict=True):
                similarity = 1.0 - float(distance)
                # `not >=` so that a NaN (a zero vector) ends the search instead of matching.
                if not similarity >= threshold:
                    break
                entry = self._entries.get(int(ident))
                if entry is None:
                    continue
                if entry[3] <= now:
                    self._remove(int(ident))
                    continue
                if entry[1] == context:
                    self._entries.move_to_end(int(ident))
                    return entry[2], similarity
        return None

    def add(self, name: tuple[str, str], context: str, key: str, vector: np.ndarray, ttl_s: float) -> None:
        with self._lock:
            known = self._ids.get((context, key))
            if known is not None:
                self._remove(known)
            index = self._indexes.get(name)
            if index is None:
                index = self._indexes[name] = self._index_type(ndim=len(vector), metric="cos", dtype="f32")
            ident = self._next
            self._next += 1
            index.add(np.uint64(ident), vector)
            self._entries[ident] = (name, context, key, time.time() + ttl_s)
            self._ids[(context, key)] = ident
            while len(self._entries) > self.max_entries:
                self._remove(next(iter(self._entries)))

    def _remove(self, ident: int) -> None:
        name, context, key, _ = self._entries.pop(ident)
        self._ids.pop((context, key), None)
        index = self._indexes[name]
        index.remove(ident)
        if len(index) == 0:
            del self._indexes[name]


# -- the cache --------------------------------------------------------------------------------


class ResponseCache:
    """The router's response cache; built when any virtual model has a `cache` block."""

    def __init__(self, config: Config) -> None:
        self.settings: CacheStoreSettings = config.cache
        self.backend: Backend = self._backend(config)
        self.semantic: SemanticIndex | None = None
        # With Redis, semantic entries are published to a stream and every replica adds the
        # others' to its own index (`start`); this replica's own entries carry its id.
        self.replica = os.urandom(8).hex()
        self._follower: asyncio.Task[None] | None = None
        self.apply(config)

    @staticmethod
    def _backend(config: Config) -> Backend:
        settings = config.cache
        if settings.backend == "redis" or (settings.backend == "auto" and config.state.url):
            return RedisBackend(config.state, settings.timeout_s)
        return MemoryBackend(settings.max_entries, settings.max_bytes)

    def apply(self, config: Config) -> None:
        """Take the (re)loaded per-model settings; the stored answers stay."""
        self.models: dict[str, CacheSettings] = {
            name: vm.cache for name, vm in config.models.items() if vm.cache is not None and vm.cache.enabled
        }
        if self.semantic is None and any(s.semantic is not None for s in self.models.values()):
            self.semantic = SemanticIndex(config.cache.max_entries)

    def ticket(
        self,
        model: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None,
        grant: Grant | None,
        key: str | None,
    ) -> CacheTicket | None:
        """What the cache does for a request to virtual model `model`; None when that model
        has no cache (or this key may not use it). Raises InvalidRequest on a bad header."""
        settings = self.models.get(model)
        if settings is None:
            return None
        mode = requested_mode(headers)
        opted = grant.key.metadata.get("cache") if grant is not None and grant.key is not None else None
        if opted == "off" or (settings.keys == "opted_in" and opted != "on"):
            return None
        if mode == "bypass" or not cacheable(settings, body):
            return CacheTicket(settings, "bypass", False, False, "", "bypass")
        tenant = "shared" if settings.scope == "shared" else tenant_of(grant, key)
        try:
            exact = request_key(body, tenant)
        except (TypeError, orjson.JSONEncodeError):
            # A library caller's body that is not plain JSON data: answered, never cached.
            return CacheTicket(settings, "bypass", False, False, "", "bypass")
        ticket = CacheTicket(
            settings,
            "bypass" if mode == "refresh" else "miss",
            mode != "refresh",
            True,
            exact,
            "refresh" if mode == "refresh" else "miss",
        )
        if settings.semantic is not None and self.semantic is not None:
            parts = semantic_parts(body, tenant)
            if parts is not None:
                ticket.context, ticket.text = parts
                ticket.index = (tenant, str(body.get("model")))
        return ticket

    async def get(self, ticket: CacheTicket) -> tuple[CachedAnswer, float | None] | None:
        """The cached answer and, for a semantic hit, its similarity; None on a miss."""
        if not ticket.lookup:
            return None
        found = await self.backend.get(ticket.key)
        if found is not None:
            return found, None
        semantic = ticket.settings.semantic
        if semantic is None or self.semantic is None or ticket.context is None or ticket.index is None:
            return None
        assert ticket.text is not None
        ticket.vector = self.semantic.embed(ticket.text)
        if not np.any(ticket.vector):
            return None
        near = self.semantic.search(
            ticket.index, ticket.context, ticket.vector, semantic.threshold, semantic.candidates
        )
        if near is None:
            return None
        found = await self.backend.get(near[0])
        return (found, near[1]) if found is not None else None

    async def put(self, ticket: CacheTicket, body: bytes, deployment: str | None, cost: float) -> None:
        """Store an answer made upstream for this ticket's request."""
        if not ticket.store:
            return
        ttl = ticket.settings.ttl_s
        await self.backend.put(ticket.key, CachedAnswer(body, deployment, cost, time.time()), ttl)
        if self.semantic is not None and ticket.context is not None and ticket.index is not None:
            assert ticket.text is not None
            vector = ticket.vector if ticket.vector is not None else self.semantic.embed(ticket.text)
            if not np.any(vector):  # nothing the encoder knows: no neighbour can be meaningful
                return
            self.semantic.add(ticket.index, ticket.context, ticket.key, vector, ttl)
            if isinstance(self.backend, RedisBackend):
                fields: dict[str, bytes | str] = {
                    "replica": self.replica,
                    "tenant": ticket.index[0],
                    "model": ticket.index[1],
                    "context": ticket.context,
                    "key": ticket.key,
                    "expires": repr(time.time() + ttl),
                    "vector": vector.astype(np.float32).tobytes(),
                }
                await self.backend.publish(fields, self.settings.max_entries)

    async def start(self) -> None:
        """With Redis and a semantic cache: build this replica's index from the entries the
        replicas published, then follow new ones until `close`."""
        if self._follower is None and self.semantic is not None and isinstance(self.backend, RedisBackend):
            self._follower = asyncio.ensure_future(self._follow(self.backend, self.semantic))

    async def _follow(self, backend: RedisBackend, index: SemanticIndex) -> None:
        last = "0"
        while True:
            try:
                # Shorter than the client's socket timeout, so a quiet stream is not an error.
                entries = await backend.entries_after(last, block_ms=250)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the index keeps what it has; try again shortly
                await asyncio.sleep(1.0)
                continue
            now = time.time()
            for ident, fields in entries:
                last = ident
                left = float(fields[b"expires"]) - now
                if fields[b"replica"].decode() == self.replica or left <= 0:
                    continue
                vector = np.frombuffer(fields[b"vector"], dtype=np.float32)
                name = (fields[b"tenant"].decode(), fields[b"model"].decode())
                index.add(name, fields[b"context"].decode(), fields[b"key"].decode(), vector, left)

    @property
    def healthy(self) -> bool:
        return getattr(self.backend, "healthy", True)

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
            self._follower = None
        await self.backend.close()


# -- streams ----------------------------------------------------------------------------------


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def completion_events(body: bytes, include_usage: bool) -> list[bytes]:
    """A cached chat completion as the SSE events of a stream of it: the role and whole
    content (and tool calls) in one chunk per choice, the finish reasons, optionally the
    usage, then [DONE]."""
    answer = orjson.loads(body)
    head = {
        "id": answer.get("id") or "chatcmpl-cached",
        "object": "chat.completion.chunk",
        "created": answer.get("created") or int(time.time()),
        "model": answer.get("model") or "",
        "system_fingerprint": answer.get("system_fingerprint"),
    }
    events = []
    choices = answer.get("choices") or []
    for choice in choices:
        message = choice.get("message") or {}
        delta: dict[str, Any] = {
            "role": message.get("role") or "assistant",
            "content": message.get("content"),
        }
        if message.get("tool_calls"):
            delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        index = choice.get("index", 0)
        events.append(_event({**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}))
        events.append(
            _event(
                {
                    **head,
                    "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}],
                }
            )
        )
    if include_usage and answer.get("usage") is not None:
        events.append(_event({**head, "choices": [], "usage": answer["usage"]}))
    events.append(b"data: [DONE]\n\n")
    return events


class StreamAssembler:
    """Rebuilds the chat completion a stream delivered, from its SSE events, so a streamed
    miss is stored like any other answer."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None
        self.broken = False

    def feed(self, event: bytes) -> None:
        if self.broken:
            return
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if not data.startswith(b"{"):
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.broken = True
                return
            if "error" in chunk:
                self.broken = True
                return
            self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> None:
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            state = self.choices.setdefault(
                choice.get("index", 0), {"role": "assistant", "content": [], "tools": {}, "finish": None}
            )
            delta = choice.get("delta") or {}
            if delta.get("content"):
                state["content"].append(delta["content"])
            for call in delta.get("tool_calls") or ():
                slot = state["tools"].setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                state["finish"] = choice["finish_reason"]

    def completion(self, usage: tuple[int, int] | None = None) -> bytes | None:
        """The completion JSON, or None when the stream was broken or never finished. `usage`
        (prompt, completion tokens) stands in when the stream carried none to the client."""
        if self.broken or not self.choices or any(s["finish"] is None for s in self.choices.values()):
            return None
        choices = []
        for index, state in sorted(self.choices.items()):
            message: dict[str, Any] = {"role": state["role"], "content": "".join(state["content"]) or None}
            if state["tools"]:
                message["tool_calls"] = [state["tools"][i] for i in sorted(state["tools"])]
            choices.append(
                {"index": index, "message": message, "finish_reason": state["finish"], "logprobs": None}
            )
        answer = {
            "id": self.head.get("id"),
            "object": "chat.completion",
            "created": self.head.get("created"),
            "model": self.head.get("model"),
            "choices": choices,
            "usage": self.usage,
        }
        if self.usage is None and usage is not None:
            answer["usage"] = {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[0] + usage[1],
            }
        if self.head.get("system_fingerprint"):
            answer["system_fingerprint"] = self.head["system_fingerprint"]
        return orjson.dumps(answer)
