"""Request records: one row per request, written in batches by a background thread so the
request path never touches the disk."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

from pointsman.language import detect_language

COLUMNS = (
    ("request_id", "TEXT PRIMARY KEY"),
    ("ts", "REAL NOT NULL"),
    ("api_key", "TEXT"),
    ("key_id", "TEXT"),
    ("team", "TEXT"),
    ("user", "TEXT"),
    ("requested_model", "TEXT"),
    ("route", "TEXT"),
    ("reason", "TEXT"),
    ("region", "TEXT"),
    ("decision", "TEXT"),
    ("attempts", "TEXT"),
    ("deployment", "TEXT"),
    ("status", "INTEGER"),
    ("error", "TEXT"),
    ("stream", "INTEGER"),
    ("prompt_tokens", "INTEGER"),
    ("completion_tokens", "INTEGER"),
    ("cost", "REAL"),
    ("latency_ms", "REAL"),
    ("upstream_ms", "REAL"),
    ("first_token_ms", "REAL"),
    ("overhead_ms", "REAL"),
    ("prompt", "TEXT"),
    ("answer", "TEXT"),
    ("language", "TEXT"),
    # The response cache: "hit", "miss", "bypass" or "refresh" (NULL: no cache for the model),
    # and what a hit saved (the cost of the answer when it was made).
    ("cache", "TEXT"),
    ("saved_cost", "REAL"),
    # Where the token counts came from: "upstream" (its usage report) or "estimate" (none came,
    # e.g. a stream the client left: the prompt's estimate and the output relayed).
    ("usage_source", "TEXT"),
)
# Audit queries filter on these.
INDEXES = ("ts", "key_id", "requested_model", "deployment", "reason", "region", "team", "user", "language")
NAMES = tuple(name for name, _ in COLUMNS)
JSON_COLUMNS = ("decision", "attempts")
_LANGUAGE = NAMES.index("language")
_JSON_AT = tuple(NAMES.index(n) for n in JSON_COLUMNS)
# What a summary reads: never the stored prompts and answers.
WINDOW_FIELDS = (
    "request_id", "ts", "api_key", "key_id", "team", "user", "requested_model", "route", "reason",
    "decision", "attempts", "deployment", "status", "error", "prompt_tokens", "completion_tokens",
    "cost", "latency_ms", "upstream_ms", "first_token_ms", "overhead_ms", "language",
    "cache", "saved_cost", "usage_source",
)  # fmt: skip


class LanguageOf:
    """A record's language, detected from this text by the writer thread, off the request path."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def detect(self) -> str | None:
        if not self.text.strip():
            return None
        return detect_language(self.text[:120])[0]

    @staticmethod
    def warm_up() -> None:
        """Load the detector's model (seconds) in the background, once per process, so the
        record writer does not stall on it with records waiting."""
        global _warming
        with _warm_lock:
            if _warming:
                return
            _warming = True

        def load() -> None:
            LanguageOf("warm up").detect()
            _warm.set()

        threading.Thread(target=load, name="pointsman-language-warm-up", daemon=True).start()

    @staticmethod
    def ready() -> bool:
        """Whether detection is fast now (the model is loaded)."""
        return _warm.is_set()


_warm_lock = threading.Lock()
_warm = threading.Event()
_warming = False


_INSERT = f"INSERT OR REPLACE INTO requests ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))})"
# One rating per request (a later one replaces it), joined to the record by request id.
FEEDBACK_TABLE = (
    "CREATE TABLE IF NOT EXISTS feedback (request_id TEXT PRIMARY KEY, ts REAL NOT NULL,"
    " score REAL NOT NULL, comment TEXT)"
)
_FEEDBACK_UPSERT = (
    "INSERT INTO feedback (request_id, ts, score, comment) SELECT ?, ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM requests WHERE request_id = ?)"
    " ON CONFLICT (request_id) DO UPDATE SET ts = excluded.ts, score = excluded.score,"
    " comment = excluded.comment"
)
_WITH_FEEDBACK = (
    "SELECT r.*, f.score AS feedback_score, f.comment AS feedback_comment, f.ts AS feedback_ts"
    " FROM requests r {join} feedback f ON f.request_id = r.request_id"
)


def default_db_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "pointsman" / "records.db"


def connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"CREATE TABLE IF NOT EXISTS requests ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
    # Files written by an older version gain the columns they lack.
    present = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    for name, kind in COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind.replace(' PRIMARY KEY', '')}")
    for column in INDEXES:
        db.execute(f"CREATE INDEX IF NOT EXISTS requests_{column} ON requests ({column})")
    db.execute(FEEDBACK_TABLE)
    db.commit()
    return db


class RecordStore:
    """SQLite record store. `add` only appends to a queue; a writer thread flushes every
    `flush_interval_s`, so a crash loses at most that interval's records."""

    def __init__(
        self, path: str | Path, flush_interval_s: float = 0.2, retention_days: float | None = None
    ) -> None:
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.retention_days = retention_days
        self._next_retention = 0.0
        self._db = connect(self.path)
        LanguageOf.warm_up()
        self._queue: deque[list[Any]] = deque()
        # Records written without their language yet: (detector, request id).
        self._languages: list[tuple[LanguageOf, Any]] = []
        self._wake = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        if retention_days is not None:
            # At start, then hourly from the writer: never racing the first records.
            self.apply_retention()
            self._next_retention = time.monotonic() + 3600
        self._thread = threading.Thread(target=self._run, name="pointsman-records", daemon=True)
        self._thread.start()

    def add(self, record: dict[str, Any]) -> None:
        row = [record.get(n) for n in NAMES]
        for i in _JSON_AT:
            row[i] = orjson.dumps(row[i]).decode()
        self._queue.append(row)

    def _run(self) -> None:
        # Ticks at a fixed rate (not an interval after each flush ends), so what a crash can
        # lose stays one interval plus the flush in progress.
        tick = time.monotonic()
        while not self._closed:
            tick = max(tick + self.flush_interval_s, time.monotonic())
            self._wake.wait(tick - time.monotonic())
            self._wake.clear()
            self.flush(languages=LanguageOf.ready())
            if self.retention_days is not None and time.monotonic() >= self._next_retention:
                self.apply_retention()
                self._next_retention = time.monotonic() + 3600

    def apply_retention(self) -> int:
        """Delete records older than the retention setting; returns how many went."""
        if self.retention_days is None:
            return 0
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM requests WHERE ts < ?", (time.time() - self.retention_days * 86400,)
            )
            # Feedback goes with its record.
            self._db.execute("DELETE FROM feedback WHERE request_id NOT IN (SELECT request_id FROM requests)")
            self._db.commit()
        return cursor.rowcount

    def spent_since(self, scope: str, start: float) -> float:
        """Recorded spend of a budget scope ("global", "key:<id>", "team:<t>", "user:<u>")."""
        self.flush()
        kind, _, value = scope.partition(":")
        column = {"key": "key_id", "team": "team", "user": "user"}.get(kind)
        sql = "SELECT COALESCE(SUM(cost), 0) FROM requests WHERE ts >= ?"
        args: list[Any] = [start]
        if column is not None:
            sql += f" AND {column} = ?"
            args.append(value)
        with self._lock:
            return float(self._db.execute(sql, args).fetchone()[0])

    def flush(self, languages: bool = True) -> None:
        """Write everything queued so far. The rows are committed before their languages are
        detected, and the writer leaves detection (`languages`) for later while the detector
        loads (seconds), so a crash loses at most one flush interval of records."""
        with self._lock:
            rows = []
            while self._queue:
                row = self._queue.popleft()
                if isinstance(row[_LANGUAGE], LanguageOf):
                    self._languages.append((row[_LANGUAGE], row[0]))
                    row[_LANGUAGE] = None
                rows.append(row)
            if rows:
                self._db.executemany(_INSERT, rows)
                self._db.commit()
            if not (languages and self._languages):
                return
            pending, self._languages = self._languages, []
            detected = [(language.detect(), request_id) for language, request_id in pending]
            detected = [(code, request_id) for code, request_id in detected if code is not None]
            if detected:
                self._db.executemany("UPDATE requests SET language = ? WHERE request_id = ?", detected)
                self._db.commit()

    def query(self, limit: int = 20, **filters: Any) -> list[dict[str, Any]]:
        """Audit query over this store's records: see `read_records` for the filters."""
        self.flush()
        return read_records(self.path, limit, **filters)

    def add_feedback(self, request_id: str, score: float, comment: str | None, ts: float) -> bool:
        """Store a rating (0..1) of a recorded request, replacing an earlier one; False when
        no record has that id."""
        self.flush()
        with self._lock:
            cursor = self._db.execute(_FEEDBACK_UPSERT, (request_id, ts, score, comment, request_id))
            self._db.commit()
        return cursor.rowcount > 0

    def record(self, request_id: str) -> dict[str, Any] | None:
        """One record by id, JSON columns decoded, with its `feedback` (score, comment, ts)
        or None; None when there is no such record."""
        self.flush()
        rows = self._read_joined(
            _WITH_FEEDBACK.format(join="LEFT JOIN") + " WHERE r.request_id = ?", (request_id,)
        )
        return rows[0] if rows else None

    def feedback_records(self, since: float | None = None) -> list[dict[str, Any]]:
        """The records that have feedback, oldest first, each with its `feedback` (for
        retraining from logs)."""
        self.flush()
        sql = _WITH_FEEDBACK.format(join="JOIN")
        args: tuple[Any, ...] = ()
        if since is not None:
            sql += " WHERE r.ts >= ?"
            args = (since,)
        return self._read_joined(sql + " ORDER BY r.ts", args)

    def _read_joined(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(sql, args)
            names = [c[0] for c in cursor.description]
            rows = cursor.fetchall()
        return [with_feedback(dict(zip(names, row, strict=True))) for row in rows]

    def window(self, since: float, until: float) -> list[dict[str, Any]]:
        """The records with `since <= ts < until`, oldest first (for summaries)."""
        self.flush()
        return read_window(self.path, since, until)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
        self._db.close()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration like 90s, 30m, 24h, 7d or 2w (or a plain number of seconds)."""
    text = text.strip()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"expected a duration like 30m, 24h or 7d, got {text!r}") from None
    if not seconds > 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    return seconds


def read_window(path: str | Path, since: float, until: float) -> list[dict[str, Any]]:
    """The records with `since <= ts < until`, oldest first, JSON columns decoded."""
    path = Path(path)
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        present = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        if not present:
            return []
        columns = ", ".join(f if f in present else f"NULL AS {f}" for f in WINDOW_FIELDS)
        rows = db.execute(
            f"SELECT {columns} FROM requests WHERE ts >= ? AND ts < ? ORDER BY ts", (since, until)
        ).fetchall()
    finally:
        db.close()
    out = []
    for row in rows:
        record = dict(row)
        for name in ("decision", "attempts"):
            if record[name] is not None:
                record[name] = orjson.loads(record[name])
        out.append(record)
    return out


def with_feedback(row: dict[str, Any]) -> dict[str, Any]:
    """A record row read with the feedback columns: JSON decoded, the feedback folded into
    one `feedback` entry (None when the request has none)."""
    score, comment, ts = row.pop("feedback_score"), row.pop("feedback_comment"), row.pop("feedback_ts")
    for name in JSON_COLUMNS:
        if isinstance(row.get(name), (str, bytes)):
            row[name] = orjson.loads(row[name])
    row["feedback"] = None if score is None else {"score": score, "comment": comment, "ts": ts}
    return row


def read_records(
    path: str | Path,
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
    """Most recent records first, JSON columns decoded. `model` matches the model asked for
    or the deployment that answered; `key` a virtual key id or a key fingerprint; `reason`
    the decision's reason code or its whole route ("strategy:reason")."""
    db = sqlite3.connect(Path(path))
    db.row_factory = sqlite3.Row
    where: list[str] = []
    args: list[str | float] = []
    if model:
        where.append("(requested_model = ? OR deployment = ?)")
        args += [model, model]
    if since is not None:
        where.append("ts >= ?")
        args.append(since)
    if until is not None:
        where.append("ts < ?")
        args.append(until)
    if key:
        where.append("(key_id = ? OR api_key = ?)")
        args += [key, key]
    if reason:
        where.append("(reason = ? OR route = ?)")
        args += [reason, reason]
    for column, value in (("region", region), ("status", status), ("team", team), ("user", user)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    sql = "SELECT * FROM requests"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ts DESC LIMIT ?"
    try:
        rows = db.execute(sql, [*args, limit]).fetchall()
    finally:
        db.close()
    out = []
    for row in rows:
        record = dict(row)
        for name in JSON_COLUMNS:
            if record[name] is not None:
                record[name] = orjson.loads(record[name])
        out.append(record)
    return out
