"""Virtual keys: one per application or person, stored hashed, each with its allowances (models,
tier, residency, rate limits, parallelism, a budget, an expiry) and metadata (team, app)."""

from __future__ import annotations

import functools
import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from pointsman.errors import InvalidRequest

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


def parse_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate key settings from the admin API or CLI; raises InvalidRequest naming the field."""
    unknown = set(spec) - set(_SPEC_FIELDS) - {"name", "expires_at", "expires_in_s"}
    if unknown:
        raise InvalidRequest(f"unknown key field(s): {', '.join(sorted(unknown))}", code="invalid_key_spec")
    out: dict[str, Any] = {}
    if "models" in spec:
        if not isinstance(spec["models"], list) or not all(isinstance(m, str) for m in spec["models"]):
            raise InvalidRequest("'models' must be a list of model names", code="invalid_key_spec")
        out["models"] = spec["models"]
    for name in ("tier", "region"):
        if spec.get(name) is not None:
            if not isinstance(spec[name], str):
                raise InvalidRequest(f"'{name}' must be a string", code="invalid_key_spec")
            out[name] = spec[name]
    for name in ("rpm", "tpm", "max_parallel"):
        if spec.get(name) is not None:
            if not isinstance(spec[name], int) or isinstance(spec[name], bool) or spec[name] <= 0:
                raise InvalidRequest(f"'{name}' must be a positive integer", code="invalid_key_spec")
            out[name] = spec[name]
    if spec.get("budget") is not None:
        if (
            not isinstance(spec["budget"], (int, float))
            or isinstance(spec["budget"], bool)
            or spec["budget"] < 0
        ):
            raise InvalidRequest(
                "'budget' must be a non-negative amount in US dollars", code="invalid_key_spec"
            )
        out["budget"] = float(spec["budget"])
    if spec.get("budget_period") is not None:
        if spec["budget_period"] not in PERIODS:
            raise InvalidRequest(
                f"'budget_period' must be one of: {', '.join(PERIODS)}", code="invalid_key_spec"
            )
        out["budget_period"] = spec["budget_period"]
    if spec.get("metadata") is not None:
        meta = spec["metadata"]
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise InvalidRequest("'metadata' must map names to strings", code="invalid_key_spec")
        out["metadata"] = meta
    if spec.get("scopes") is not None:
        scopes = spec["scopes"]
        if not isinstance(scopes, list) or not scopes or not all(s in SCOPES for s in scopes):
            raise InvalidRequest(
                f"'scopes' must be a non-empty list of: {', '.join(SCOPES)}", code="invalid_key_spec"
            )
        out["scopes"] = list(dict.fromkeys(scopes))
    return out


class KeyStore:
    """Keys in SQLite (beside the request records), looked up by hash through a small cache so
    the request path does no disk I/O for known keys. `PostgresKeyStore` shares them between
    replicas; both implement `_write` and `_read` over the same table."""

    CACHE_S = 2.0

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(Path(path), check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, VirtualKey | None]] = {}

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        """Run one statement that changes rows; returns how many it changed."""
        with self._lock:
            cursor = self._db.execute(sql, args)
            self._db.commit()
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
        """The key for a secret, active or not; None if unknown. Cached for `CACHE_S`; while
        the database cannot be read, a key seen before keeps its last known state."""
        digest = hash_key(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.CACHE_S:
            return cached[1]
        try:
            rows = self._read("SELECT * FROM keys WHERE hash = ?", (digest,))
        except Exception:
            if cached is not None:
                return cached[1]
            raise
        key = _row_to_key(rows[0]) if rows else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, key)
        return key

    def close(self) -> None:
        self._db.close()


class PostgresKeyStore(KeyStore):
    """Keys in PostgreSQL (the `keys` table the record store's migrations create), so every
    replica, on any host, knows every key. One connection, reopened when it breaks."""

    def __init__(self, url: str, schema: str = "public", connect_timeout_s: float = 1.0) -> None:
        self.url = url
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None
        self._lock = threading.Lock()
        self._cache = {}

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
        with self._lock:
            try:
                cursor = self._connection().execute(sql.replace("?", "%s"), args)
                return cursor.fetchall() if fetch else cursor.rowcount
            except Exception:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
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
    return VirtualKey(
        id=key_id,
        name=name,
        prefix=prefix,
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
        **orjson.loads(spec),
    )
