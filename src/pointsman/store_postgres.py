"""Request records in PostgreSQL, one table shared by every replica.

The request path only appends to a queue. A writer thread copies batches in (COPY into a temp
table, then INSERT ... ON CONFLICT (request_id) DO NOTHING, so a replayed batch never duplicates a
row). While PostgreSQL is unreachable the writer appends what is queued to a local JSONL file
every flush interval (fsynced, so a crash loses at most one interval of records); when PostgreSQL
returns it replays the spill, then the queue, and deletes the spill once written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import IO, Any

import orjson

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("PostgreSQL records need psycopg: pip install 'pointsman[postgres]'") from exc
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from pointsman.errors import PointsmanError
from pointsman.store import (
    JSON_COLUMNS,
    NAMES,
    WINDOW_FIELDS,
    LanguageOf,
    default_db_path,
    with_feedback,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - no advisory file locks: spills of dead processes stay put
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("pointsman.records")

Row = tuple[Any, ...]

_LANGUAGE = NAMES.index("language")
_JSON_INDEXES = frozenset(NAMES.index(name) for name in JSON_COLUMNS)
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MIGRATION = re.compile(r"(\d+)_(\w+)\.sql")
_SCOPES = {"key": "key_id", "team": "team", "user": "user"}
_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, NAMES))
_COPY = sql.SQL("COPY pointsman_batch ({}) FROM STDIN").format(_COLUMNS)
_INSERT = sql.SQL(
    "INSERT INTO requests ({0}) SELECT {0} FROM pointsman_batch ON CONFLICT (request_id) DO NOTHING"
).format(_COLUMNS)
_FEEDBACK_UPSERT = (
    "INSERT INTO feedback (request_id, ts, score, comment) SELECT %s, %s, %s, %s"
    " WHERE EXISTS (SELECT 1 FROM requests WHERE request_id = %s)"
    " ON CONFLICT (request_id) DO UPDATE SET ts = EXCLUDED.ts, score = EXCLUDED.score,"
    " comment = EXCLUDED.comment"
)
_WITH_FEEDBACK = sql.SQL(
    "SELECT {}, f.score AS feedback_score, f.comment AS feedback_comment, f.ts AS feedback_ts"
    " FROM requests r {} feedback f ON f.request_id = r.request_id"
)
_R_COLUMNS = sql.SQL(", ").join(sql.Identifier("r", n) for n in NAMES)
_RETENTION_CHUNK = 10_000
_ORPHAN_SCAN_S = 60.0


class RecordsUnavailable(PointsmanError):
    """The record database cannot be read right now (writes are buffered meanwhile)."""

    status = 503
    code = "records_unavailable"


def migrations() -> list[tuple[int, str, str]]:
    """The project's migrations as (version, file name, SQL), in the order they apply."""
    found = []
    for entry in (resources.files("pointsman") / "migrations").iterdir():
        match = _MIGRATION.fullmatch(entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Apply, in one transaction, the migrations `schema` has not recorded yet; returns their
    names. An advisory lock makes replicas that start together take turns."""
    with conn.transaction():
        # A migration may rebuild a big table: no statement timeout, and replicas wait for it.
        conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id("migrations", schema),))
        # Checked first: CREATE ... IF NOT EXISTS needs the CREATE privilege even when there is
        # nothing to create, and a role that only writes records may lack it.
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        if conn.execute("SELECT to_regclass('pointsman_migrations')").fetchone() == (None,):
            conn.execute(
                "CREATE TABLE pointsman_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        done = {row[0] for row in conn.execute("SELECT version FROM pointsman_migrations")}
        applied = []
        for version, name, text in migrations():
            if version in done:
                continue
            conn.execute(text.encode())
            conn.execute("INSERT INTO pointsman_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(name)
    return applied


def _lock_id(purpose: str, schema: str) -> int:
    digest = hashlib.blake2b(f"pointsman:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(repr(value)).decode()


def _prepare(row: Row, detect: bool = True) -> Row:
    """A queued row made ready to write: language detected, NULs (which PostgreSQL refuses in
    text and JSONB) replaced. With `detect` false (a spill, which must not wait for the
    detector to load), the text to detect from is kept as `{"detect": text}` instead."""
    values = list(row)
    if detect and isinstance(values[_LANGUAGE], dict):  # a row back from a failed spill
        values[_LANGUAGE] = LanguageOf(str(values[_LANGUAGE].get("detect") or ""))
    if isinstance(values[_LANGUAGE], LanguageOf):
        language = values[_LANGUAGE]
        values[_LANGUAGE] = language.detect() if detect else {"detect": language.text}
    for i, value in enumerate(values):
        if isinstance(value, str):
            values[i] = (
                value.replace("\\u0000", "\\ufffd") if i in _JSON_INDEXES else value.replace("\x00", "\ufffd")
            )
    return tuple(values)


class PostgresRecordStore:
    """PostgreSQL record store, the same interface as `RecordStore`. `add` never blocks and
    never raises; every database call happens in the writer thread (or in `flush`, `query`,
    `window`, `spent_since` and `apply_retention` on the caller's thread), each bounded by
    `connect_timeout_s` to connect and by a statement timeout.

    While PostgreSQL is unreachable `healthy` is false: every flush interval the queued records
    spill to a JSONL file in `spill_dir` (only when that file cannot be written do they wait in
    memory); they are written, exactly once, when it returns. A spill left by a process that
    died is replayed by the next store started on the same `spill_dir` and database."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        flush_interval_s: float = 0.2,
        retention_days: float | None = None,
        spill_dir: str | Path | None = None,
        buffer_records: int = 10_000,
        batch_records: int = 1_000,
        connect_timeout_s: float = 2.0,
        statement_timeout_s: float = 10.0,
        retry_interval_s: float = 1.0,
    ) -> None:
        if not _SCHEMA.fullmatch(schema):
            raise ValueError(f"schema must be a plain SQL identifier, got {schema!r}")
        self.url = url
        self.schema = schema
        self.flush_interval_s = flush_interval_s
        self.retention_days = retention_days
        self.spill_dir = Path(spill_dir) if spill_dir else default_db_path().parent / "spill"
        self.buffer_records = buffer_records
        self.batch_records = max(1, batch_records)
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self.retry_interval_s = retry_interval_s
        # Records PostgreSQL refused one by one (bad data); logged and counted, never retried.
        self.rejected = 0
        info = conninfo_to_dict(url)
        where = f"{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"
        # Spill files name their database, so a replay never writes records into another one.
        self._spill_prefix = f"records-{schema}-{hashlib.blake2b(where.encode(), digest_size=4).hexdigest()}"
        self._queue: deque[Row] = deque()
        # Records written without their language yet: (detector, request id).
        self._languages: list[tuple[LanguageOf, Any]] = []
        self._lock = threading.Lock()  # the writer connection and the spill file
        self._read_lock = threading.Lock()
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._healthy = False
        self._next_connect = 0.0
        self._next_retention = 0.0
        self._next_orphan_scan = 0.0
        self._spill: IO[bytes] | None = None
        self._spill_path: Path | None = None
        self._spilled = 0
        self._closed = False
        self._wake = threading.Event()
        LanguageOf.warm_up()
        # One attempt now, so a reachable database is migrated before the first request.
        with self._lock:
            self._connected()
        self._thread = threading.Thread(target=self._run, name="pointsman-records-pg", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        """Whether the last attempt to reach PostgreSQL succeeded."""
        return self._healthy

    @property
    def backlog(self) -> int:
        """Records accepted but not yet in PostgreSQL (in memory or spilled)."""
        return len(self._queue) + self._spilled

    def add(self, record: dict[str, Any]) -> None:
        row = tuple(_json(record.get(n)) if n in JSON_COLUMNS else record.get(n) for n in NAMES)
        self._queue.append(row)
        # A full batch is written (or, while PostgreSQL is away, spilled) without waiting for
        # the next tick; once per batch, so an outage does not wake the writer on every add.
        if len(self._queue) % self.batch_records == 0:
            self._wake.set()

    # -- the writer ------------------------------------------------------------------------

    def _run(self) -> None:
        # Ticks at a fixed rate (not an interval after each flush ends), so what a crash can
        # lose stays one interval plus the flush in progress.
        tick = time.monotonic()
        while not self._closed:
            tick = max(tick + self.flush_interval_s, time.monotonic())
            self._wake.wait(tick - time.monotonic())
            self._wake.clear()
            try:
                self.flush(languages=LanguageOf.ready())
                if (
                    self.retention_days is not None
                    and self._healthy
                    and time.monotonic() >= self._next_retention
                ):
                    self._next_retention = time.monotonic() + 3600
                    self.apply_retention()
            except Exception:  # the writer must outlive any surprise; the rows stay queued
                log.exception("record writer failed; retrying")

    def flush(self, languages: bool = True) -> None:
        """Write everything queued so far; while PostgreSQL is unreachable, spill it instead.
        Languages are detected after the rows are written; the writer leaves that for later
        (`languages` false) while the detector loads."""
        with self._lock:
            self._flush_locked(languages)

    def _flush_locked(self, languages: bool = True) -> None:
        if self._connected():
            try:
                self._replay_spills()
                while self._queue:
                    count = min(len(self._queue), self.batch_records)
                    queued = [self._queue.popleft() for _ in range(count)]
                    # Written before their languages are detected: a crash loses at most one
                    # flush interval of records, never the time detection takes.
                    batch = [_prepare(row[:_LANGUAGE] + (None,) + row[_LANGUAGE + 1 :]) for row in queued]
                    try:
                        self._write(batch)
                    except BaseException:
                        self._queue.extendleft(reversed(queued))
                        raise
                    self._languages += [
                        (row[_LANGUAGE], row[0]) for row in queued if isinstance(row[_LANGUAGE], LanguageOf)
                    ]
                if languages and self._languages:
                    self._fill_languages()
                return
            except psycopg.Error as exc:
                self._lost(exc)
        # PostgreSQL is away: what is queued goes to disk now, not when the buffer is full, so
        # a crash loses at most one flush interval of records.
        if self._queue:
            self._spill_queue()

    def _connected(self) -> bool:
        """Whether the writer holds a connection, trying to open one (at most once per
        `retry_interval_s`) when it does not."""
        if self._writer is not None and not self._writer.closed:
            return True
        if time.monotonic() < self._next_connect:
            return False
        conn = None
        try:
            conn = self._open()
            migrate(conn, self.schema)
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS pointsman_batch"
                " (LIKE requests INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
        except (psycopg.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            self._lost(exc)
            return False
        if not self._healthy:
            log.info("records: writing to PostgreSQL (schema %s)", self.schema)
        self._writer = conn
        self._healthy = True
        self._next_orphan_scan = 0.0
        return True

    def _open(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(1, round(self.connect_timeout_s)),
            application_name="pointsman",
            # A peer that vanishes without closing is noticed in seconds, not at TCP's leisure.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
            tcp_user_timeout=int(max(self.connect_timeout_s, 5) * 1000),
        )
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(int(self.statement_timeout_s * 1000)),)
        )
        return conn

    def _lost(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning("records: PostgreSQL unreachable, buffering records (%s)", exc)
        self._healthy = False
        self._next_connect = time.monotonic() + self.retry_interval_s
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, rows: list[Row]) -> None:
        """Insert `rows`, skipping any already present. Connection errors propagate; a row the
        database refuses is set aside (logged, counted in `rejected`) so it cannot block the rest."""
        conn = self._writer
        assert conn is not None
        try:
            self._copy(conn, rows)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) or conn.broken or conn.closed:
                raise
            if len(rows) > 1:
                for row in rows:
                    self._write([row])
                return
            self.rejected += 1
            log.error("records: PostgreSQL refused record %s: %s", rows[0][0], exc)

    def _fill_languages(self) -> None:
        pending, self._languages = self._languages, []
        detected = [(language.detect(), request_id) for language, request_id in pending]
        detected = [(code, request_id) for code, request_id in detected if code is not None]
        if detected and self._writer is not None:
            with self._writer.cursor() as cursor:
                cursor.executemany("UPDATE requests SET language = %s WHERE request_id = %s", detected)

    @staticmethod
    def _copy(conn: psycopg.Connection[Any], rows: Iterable[Row]) -> None:
        with conn.transaction(), conn.cursor() as cursor:
            with cursor.copy(_COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(_INSERT)

    # -- spilling to disk --------------------------------------------------------------------

    def _spill_queue(self) -> None:
        rows = [_prepare(self._queue.popleft(), detect=False) for _ in range(len(self._queue))]
        try:
            if self._spill is None:
                self._spill, self._spill_path = self._new_spill()
            self._spill.write(
                b"".join(orjson.dumps(dict(zip(NAMES, row, strict=True))) + b"\n" for row in rows)
            )
            self._spill.flush()
            os.fsync(self._spill.fileno())
        except OSError as exc:
            self._queue.extendleft(reversed(rows))
            log.error("records: cannot spill to %s, keeping records in memory (%s)", self.spill_dir, exc)
            return
        if not self._spilled:
            log.warning("records: spilling to %s", self._spill_path)
        self._spilled += len(rows)

    def _new_spill(self) -> tuple[IO[bytes], Path]:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        name = f"{self._spill_prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Locked before it takes the name other stores look for, so none replays a live spill.
        partial = self.spill_dir / f"{name}.partial"
        handle = open(partial, "ab")  # noqa: SIM115 - held open (and locked) until replayed
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = self.spill_dir / f"{name}.jsonl"
        partial.rename(path)
        return handle, path

    def _replay_spills(self) -> None:
        """Write this store's spill, then any a dead process left behind, deleting each once
        written. Connection errors propagate and leave the file for the next try."""
        if self._spill is not None and self._spill_path is not None:
            with open(self._spill_path, "rb") as lines:
                self._replay(lines)
            self._spill_path.unlink(missing_ok=True)
            self._spill.close()
            log.info("records: replayed %d spilled records", self._spilled)
            self._spill, self._spill_path, self._spilled = None, None, 0
        if fcntl is None or time.monotonic() < self._next_orphan_scan:
            return
        self._next_orphan_scan = time.monotonic() + _ORPHAN_SCAN_S
        for path in sorted(self.spill_dir.glob(f"{self._spill_prefix}-*.jsonl")):
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed below, after the lock is tried
            except FileNotFoundError:
                continue
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live store's spill
                self._replay(handle)
                path.unlink(missing_ok=True)
                log.info("records: replayed the spill %s", path.name)

    def _replay(self, lines: IO[bytes]) -> None:
        batch: list[Row] = []
        for line in lines:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.error("records: skipping a damaged spill line (%d bytes)", len(line))
                continue
            language = record.get("language")
            if isinstance(language, dict):
                record["language"] = LanguageOf(str(language.get("detect") or ""))
            batch.append(_prepare(tuple(record.get(n) for n in NAMES)))
            if len(batch) >= self.batch_records:
                self._write(batch)
                batch = []
        if batch:
            self._write(batch)

    # -- reading -------------------------------------------------------------------------------

    def spent_since(self, scope: str, start: float) -> float:
        """Recorded spend of a budget scope ("global", "key:<id>", "team:<t>", "user:<u>"),
        records not yet written included. While PostgreSQL is unreachable (or the writer is
        stuck for longer than `connect_timeout_s`), only this process's unwritten records count."""
        kind, _, value = scope.partition(":")
        column = _SCOPES.get(kind)
        where: sql.Composable = sql.SQL("ts >= %s")
        args: list[Any] = [start]
        if column is not None:
            where = sql.SQL("ts >= %s AND {} = %s").format(sql.Identifier(column))
            args.append(value)
        index = NAMES.index(column) if column else None
        if not self._lock.acquire(timeout=self.connect_timeout_s):
            return self._unwritten_spend(index, value, start)
        try:
            recorded = 0.0
            # Only over a connection already open: a request never waits for a connect here.
            if self._writer is not None:
                query = sql.SQL("SELECT COALESCE(SUM(cost), 0) FROM requests WHERE {}").format(where)
                try:
                    row = self._writer.execute(query, args).fetchone()
                    recorded = float(row[0]) if row else 0.0
                except psycopg.Error as exc:
                    self._lost(exc)
            return recorded + self._unwritten_spend(index, value, start)
        finally:
            self._lock.release()

    def _unwritten_spend(self, index: int | None, value: str, start: float) -> float:
        cost, ts = NAMES.index("cost"), NAMES.index("ts")
        return sum(
            row[cost] or 0.0
            for row in list(self._queue)
            if row[ts] >= start and (index is None or row[index] == value)
        )

    def query(
        self,
        limit: int = 20,
        model: str | None = None,
        since: float | None = None,
        *,
        until: float | None = None,
        key: str | None = None,
        reason: str | None = None,
        region: str | None = None,
        status: int | None = None,
        team: str | None = None,
        user: str | None = None,
    ) -> list[dict[str, Any]]:
        """Audit query, newest first, with the filters of `store.read_records`. Raises
        `RecordsUnavailable` (503) while PostgreSQL is unreachable."""
        self.flush()
        where: list[sql.Composable] = []
        args: list[Any] = []
        if model:
            where.append(sql.SQL("(requested_model = %s OR deployment = %s)"))
            args += [model, model]
        if since is not None:
            where.append(sql.SQL("ts >= %s"))
            args.append(since)
        if until is not None:
            where.append(sql.SQL("ts < %s"))
            args.append(until)
        if key:
            where.append(sql.SQL("(key_id = %s OR api_key = %s)"))
            args += [key, key]
        if reason:
            where.append(sql.SQL("(reason = %s OR route = %s)"))
            args += [reason, reason]
        for column, value in (("region", region), ("status", status), ("team", team), ("user", user)):
            if value is not None:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                args.append(value)
        query = sql.SQL("SELECT {} FROM requests").format(_COLUMNS)
        if where:
            query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query += sql.SQL(" ORDER BY ts DESC LIMIT %s")
        return self._read(query, [*args, limit])

    def window(self, since: float, until: float) -> list[dict[str, Any]]:
        """The records with `since <= ts < until`, oldest first (for summaries)."""
        self.flush()
        query = sql.SQL("SELECT {} FROM requests WHERE ts >= %s AND ts < %s ORDER BY ts").format(
            sql.SQL(", ").join(map(sql.Identifier, WINDOW_FIELDS))
        )
        return self._read(query, [since, until])

    def add_feedback(self, request_id: str, score: float, comment: str | None, ts: float) -> bool:
        """Store a rating (0..1) of a recorded request, replacing an earlier one; False when
        no record has that id. Raises `RecordsUnavailable` while PostgreSQL is unreachable."""
        with self._lock:
            # The record may still be queued: write it first, so its feedback finds it.
            self._flush_locked()
            if not self._connected():
                raise RecordsUnavailable("the record database is unreachable; try the feedback again later")
            conn = self._writer
            assert conn is not None
            try:
                count = conn.execute(_FEEDBACK_UPSERT, (request_id, ts, score, comment, request_id)).rowcount
            except psycopg.Error as exc:
                self._lost(exc)
                raise RecordsUnavailable(f"the record database did not answer: {exc}") from None
        return count > 0

    def record(self, request_id: str) -> dict[str, Any] | None:
        """One record by id with its `feedback` (score, comment, ts) or None; None when there
        is no such record."""
        self.flush()
        query = _WITH_FEEDBACK.format(_R_COLUMNS, sql.SQL("LEFT JOIN")) + sql.SQL(" WHERE r.request_id = %s")
        rows = self._read(query, [request_id])
        return with_feedback(rows[0]) if rows else None

    def feedback_records(self, since: float | None = None) -> list[dict[str, Any]]:
        """The records that have feedback, oldest first, each with its `feedback`."""
        self.flush()
        query = _WITH_FEEDBACK.format(_R_COLUMNS, sql.SQL("JOIN"))
        args: list[Any] = []
        if since is not None:
            query += sql.SQL(" WHERE r.ts >= %s")
            args.append(since)
        return [with_feedback(row) for row in self._read(query + sql.SQL(" ORDER BY r.ts"), args)]

    def _read(self, query: sql.Composed, args: list[Any]) -> list[dict[str, Any]]:
        if not self._healthy:
            raise RecordsUnavailable("the record database is unreachable; records are buffered meanwhile")
        with self._read_lock:
            try:
                if self._reader is None or self._reader.closed:
                    self._reader = self._open()
                with self._reader.cursor(row_factory=dict_row) as cursor:
                    return cursor.execute(query, args).fetchall()
            except psycopg.Error as exc:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
                raise RecordsUnavailable(f"the record database did not answer: {exc}") from None

    # -- retention and shutdown ----------------------------------------------------------------

    def apply_retention(self) -> int:
        """Delete records older than `retention_days`, in chunks; returns how many went (0 while
        another replica is doing it, or while PostgreSQL is unreachable)."""
        if self.retention_days is None:
            return 0
        cutoff = time.time() - self.retention_days * 86400
        chunk = sql.SQL(
            "DELETE FROM requests WHERE request_id IN"
            " (SELECT request_id FROM requests WHERE ts < %s LIMIT {})"
        ).format(sql.Literal(_RETENTION_CHUNK))
        deleted = 0
        while True:
            with self._lock:
                if not self._connected():
                    return deleted
                conn = self._writer
                assert conn is not None
                try:
                    with conn.transaction():
                        lock = conn.execute(
                            "SELECT pg_try_advisory_xact_lock(%s)", (_lock_id("retention", self.schema),)
                        ).fetchone()
                        if not (lock and lock[0]):
                            return deleted
                        gone = conn.execute(chunk, (cutoff,)).rowcount
                except psycopg.Error as exc:
                    self._lost(exc)
                    return deleted
            deleted += gone
            if gone < _RETENTION_CHUNK:
                return deleted

    def close(self) -> None:
        """Stop the writer after a last flush; what cannot be written now stays in the spill
        file, for the next store on this `spill_dir` to replay."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=self.connect_timeout_s + self.statement_timeout_s)
        with self._lock:
            self._next_connect = 0.0
            self._flush_locked()
            if self._queue:
                self._spill_queue()
            if self._spill is not None:
                self._spill.close()
                self._spill = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
