"""Virtual keys: one per application or person, stored hashed, each with its allowances (models,
tier, residency, rate limits, parallelism, a budget, an expiry) and metadata (team, app)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pointsman.errors import InvalidRequest, PointsmanError

log = logging.getLogger("pointsman.keys")

PERIODS = ("day", "week", "month")
Period = Literal["day", "week", "month"]
# "chat": may send requests; "dashboard": may read the dashboard. A read-only key has only the latter.
SCOPES = ("chat", "dashboard")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    spec TEXT NOT NULL
)
"""


class KeysUnavailable(PointsmanError):
    """The key store cannot be read and this replica has not seen the key recently."""

    status = 503
    code = "keys_unavailable"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def _fingerprint(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def key_fingerprint(key: str | None) -> str | None:
    """What the record keeps of a client key: enough to tell keys apart, never the key."""
    return _fingerprint(key) if key else None


@dataclass(slots=True)
class VirtualKey:
    """A key's allowances. `models` empty means every model; `budget` in US dollars per
    `budget_period`."""

    id: str
    name: str
    prefix: str = ""
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    models: list[str] = field(default_factory=list)
    tier: str | None = None
    region: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget: float | None = None
    budget_period: Period = "month"
    metadata: dict[str, str] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=lambda: ["chat"])

    @property
    def team(self) -> str | None:
        return self.metadata.get("team")

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models

    def can(self, scope: str) -> bool:
        return scope in self.scopes

    def public(self) -> dict[str, Any]:
        """Everything about the key except its secret (which is never stored)."""
        data = asdict(self)
        data["active"] = self.active()
        return data


_SPEC_FIELDS = (
    "models",
    "tier",
    "region",
    "rpm",
    "tpm",
    "max_parallel",
    "budget",
    "budget_period",
    "metadata",
    "scopes",
)

_Seconds = Annotated[float, Field(allow_inf_nan=False)]


class KeySpec(BaseModel):
    """A key as the admin API and the CLI describe it; every field optional but `name` when
    creating."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(None, min_length=1, max_length=200)
    expires_at: _Seconds | None = None
    expires_in_s: _Seconds | None = Field(None, gt=0)
    models: list[str] | None = None
    tier: str | None = None
    region: str | None = None
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    max_parallel: int | None = Field(None, gt=0)
    budget: _Seconds | None = Field(None, ge=0)
    budget_period: Period | None = None
    metadata: dict[str, str] | None = None
    scopes: list[Literal["chat", "dashboard"]] | None = Field(None, min_length=1)


# What each field must be, for errors that name the field and say what it takes.
_EXPECTED = {
    "name": "a non-empty string of at most 200 characters",
    "expires_at": "a time in seconds since the epoch (a finite number)",
    "expires_in_s": "a positive, finite number of seconds",
    "models": "a list of model names",
    "tier": "a string",
    "region": "a string",
    "rpm": "a positive integer",
    "tpm": "a positive integer",
    "max_parallel": "a positive integer",
    "budget": "a non-negative amount in US dollars",
    "budget_period": f"one of: {', '.join(PERIODS)}",
    "metadata": "an object mapping names to strings",
    "scopes": f"a non-empty list of: {', '.join(SCOPES)}",
}


def validate_spec(spec: Any) -> KeySpec:
    """Validate a key's description; raises InvalidRequest naming the first bad field."""
    if not isinstance(spec, dict):
        raise InvalidRequest("a key must be described by a JSON object", code="invalid_key_spec")
    try:
        return KeySpec.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "extra_forbidden":
            unknown = sorted(set(spec) - set(KeySpec.model_fields))
            message = f"unknown key field(s): {', '.join(unknown)}"
        else:
            message = f"'{field}' must be {_EXPECTED.get(field, 'valid')} (got {_shown(error['input'])})"
        raise InvalidRequest(message, code="invalid_key_spec") from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate key settings from the admin API or CLI; raises InvalidRequest naming the field.
    Returns the settings given (not the name or expiry)."""
    parsed = validate_spec(spec)
    out = parsed.model_dump(include=set(_SPEC_FIELDS), exclude_none=True)
    if "scopes" in out:
        out["scopes"] = list(dict.fromkeys(out["scopes"]))
    if "budget" in out:
        out["budget"] = float(out["budget"])
    return out


class KeyStore:
    """Keys in SQLite (beside the request records), looked up by hash through a small cache so
    the request path does no disk I/O for known keys. `PostgresKeyStore` shares them between
    replicas; both implement `_write` and `_read` over the same table.

    A key is re-read at most every `cache_s` seconds (so a revocation anywhere reaches this
    process within that time); while the store cannot be read, a key read within the last
    `outage_cache_s` seconds keeps its last known state, and any other key gets
    `KeysUnavailable` (503)."""

    def __init__(self, path: str | Path, cache_s: float = 2.0, outage_cache_s: float = 900.0) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.cache_s = cache_s
        self.outage_cache_s = outage_cache_s
        self._db = sqlite3.connect(Path(path), check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, VirtualKey | None]] = {}

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        """Run one statement that changes rows in its own transaction: committed, or rolled
        back when it fails (an open transaction would lock out every other writer)."""
        with self._lock:
            try:
                cursor = self._db.execute(sql, args)
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
            return cursor.rowcount

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def create(
        self,
        name: str,
        spec: dict[str, Any] | None = None,
        expires_at: float | None = None,
        secret: str | None = None,
    ) -> tuple[str, VirtualKey]:
        """A new key: returns the secret (shown once, never stored) and its record. `secret`
        imports a key issued elsewhere instead of generating one."""
        if not name or not isinstance(name, str):
            raise InvalidRequest("'name' is required", code="invalid_key_spec")
        settings = parse_spec(spec or {})
        if expires_at is not None:
            expires_at = validate_spec({"expires_at": expires_at}).expires_at
        if secret is not None and len(secret) < 20:
            raise InvalidRequest("an imported key must be at least 20 characters", code="invalid_key_spec")
        secret = secret or "pm-" + secrets.token_urlsafe(32)
        key = VirtualKey(
            id="key_" + secrets.token_hex(6),
            name=name,
            prefix=secret[:10],
            created_at=time.time(),
            expires_at=expires_at,
            **settings,
        )
        self._write(
            "INSERT INTO keys (id, name, hash, prefix, created_at, expires_at, spec)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                name,
                hash_key(secret),
                key.prefix,
                key.created_at,
                expires_at,
                orjson.dumps({f: getattr(key, f) for f in _SPEC_FIELDS}).decode(),
            ),
        )
        return secret, key

    def revoke(self, key_id: str) -> VirtualKey | None:
        self._write(
            "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
        )
        self._cache.clear()
        return self.get(key_id)

    def get(self, key_id: str) -> VirtualKey | None:
        rows = self._read("SELECT * FROM keys WHERE id = ?", (key_id,))
        return _row_to_key(rows[0]) if rows else None

    def list(self) -> list[VirtualKey]:
        return [_row_to_key(r) for r in self._read("SELECT * FROM keys ORDER BY created_at", ())]

    def lookup(self, secret: str) -> VirtualKey | None:
        """The key for a secret, active or not; None if unknown. Raises `KeysUnavailable`
        when the store cannot be read and the key was not seen within `outage_cache_s`."""
        digest = hash_key(secret)
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self.cache_s:
            return cached[1]
        return self._fetch(digest)

    async def alookup(self, secret: str) -> VirtualKey | None:
        """`lookup` for the event loop: a cached key is answered at once, anything else is
        read in a worker thread."""
        digest = hash_key(secret)
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self.cache_s:
            return cached[1]
        return await asyncio.to_thread(self._fetch, digest)

    def _fetch(self, digest: str) -> VirtualKey | None:
        try:
            rows = self._read("SELECT * FROM keys WHERE hash = ?", (digest,))
        except Exception as exc:
            cached = self._cache.get(digest)
            if cached is not None and time.monotonic() - cached[0] < self.outage_cache_s:
                return cached[1]
            log.warning("keys: the key store cannot be read (%s)", exc)
            raise KeysUnavailable(
                "the key store is unreachable and this API key was not seen recently; retry shortly"
            ) from None
        key = _row_to_key(rows[0]) if rows else None
        now = time.monotonic()
        if len(self._cache) > 50_000:
            # Bounded; what an outage may still need (seen within its window) stays.
            self._cache = {d: e for d, e in self._cache.items() if now - e[0] < self.outage_cache_s}
            if len(self._cache) > 50_000:
                self._cache.clear()
        self._cache[digest] = (now, key)
        return key

    def close(self) -> None:
        self._db.close()


class PostgresKeyStore(KeyStore):
    """Keys in PostgreSQL (the `keys` table the record store's migrations create), so every
    replica, on any host, knows every key. One connection, reopened when it breaks."""

    # After a failed attempt, lookups fail at once for this long instead of each waiting on a
    # connection that will not come.
    RETRY_S = 1.0

    def __init__(
        self,
        url: str,
        schema: str = "public",
        connect_timeout_s: float = 1.0,
        cache_s: float = 2.0,
        outage_cache_s: float = 900.0,
    ) -> None:
        self.url = url
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self.cache_s = cache_s
        self.outage_cache_s = outage_cache_s
        self._conn: Any = None
        self._lock = threading.Lock()
        self._cache = {}
        self._retry_at = 0.0

    def _connection(self) -> Any:
        # psycopg (the optional `postgres` extra) loads only for keys kept in PostgreSQL.
        import psycopg
        from psycopg import sql

        if self._conn is None or self._conn.closed:
            from pointsman.store_postgres import migrate

            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s))
            )
            migrate(conn, self.schema)  # the keys table may not exist yet (e.g. `pointsman keys` first)
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            self._conn = conn
        return self._conn

    def _run(self, sql: str, args: tuple[Any, ...], fetch: bool) -> Any:
        if time.monotonic() < self._retry_at:
            raise KeysUnavailable("the key store is unreachable; retry shortly")
        with self._lock:
            try:
                cursor = self._connection().execute(sql.replace("?", "%s"), args)
                return cursor.fetchall() if fetch else cursor.rowcount
            except Exception:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self._retry_at = time.monotonic() + self.RETRY_S
                raise

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        return int(self._run(sql, args, fetch=False))

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return list(self._run(sql, args, fetch=True))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _row_to_key(row: tuple[Any, ...]) -> VirtualKey:
    key_id, name, _hash, prefix, created_at, expires_at, revoked_at, spec = row
    try:
        settings = parse_spec(orjson.loads(spec))
    except (orjson.JSONDecodeError, TypeError, InvalidRequest) as exc:
        # A row written by an older version without validation: the key is listed, but it
        # admits nothing (no scopes) rather than whatever its settings meant.
        log.error("keys: key %s has unreadable settings (%s); it is disabled", key_id, exc)
        settings = {"scopes": []}
    return VirtualKey(
        id=key_id,
        name=name,
        prefix=prefix,
        created_at=_time_or(created_at, 0.0),
        # An unreadable expiry counts as expired: a damaged row never widens a key.
        expires_at=None if expires_at is None else _time_or(expires_at, 0.0),
        revoked_at=None if revoked_at is None else _time_or(revoked_at, 0.0),
        **settings,
    )


def _time_or(value: Any, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
