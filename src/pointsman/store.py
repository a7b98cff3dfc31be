"""Request records: one row per request, written in batches by a background thread so the
request path never touches the disk."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import Any

import orjson

COLUMNS = (
    ("request_id", "TEXT PRIMARY KEY"),
    ("ts", "REAL NOT NULL"),
    ("api_key", "TEXT"),
    ("user", "TEXT"),
    ("requested_model", "TEXT"),
    ("route", "TEXT"),
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
)
NAMES = tuple(name for name, _ in COLUMNS)
JSON_COLUMNS = ("decision", "attempts")
_INSERT = (
    f"INSERT OR REPLACE INTO requests ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))})"
)


def default_db_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "pointsman" / "records.db"


def connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"CREATE TABLE IF NOT EXISTS requests ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
    db.execute("CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)")
    db.commit()
    return db


class RecordStore:
    """SQLite record store. `add` only appends to a queue; a writer thread flushes every
    `flush_interval_s`, so a crash loses at most that interval's records."""

    def __init__(self, path: str | Path, flush_interval_s: float = 0.2) -> None:
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self._db = connect(self.path)
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="pointsman-records", daemon=True)
        self._thread.start()

    def add(self, record: dict[str, Any]) -> None:
        self._queue.append(
            tuple(
                orjson.dumps(record.get(n)).decode() if n in JSON_COLUMNS else record.get(n)
                for n in NAMES
            )
        )

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write everything queued so far."""
        with self._lock:
            rows = []
            while self._queue:
                rows.append(self._queue.popleft())
            if rows:
                self._db.executemany(_INSERT, rows)
                self._db.commit()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
        self._db.close()


def read_records(
    path: str | Path, limit: int = 20, model: str | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    """Most recent records first, JSON columns decoded."""
    db = sqlite3.connect(Path(path))
    db.row_factory = sqlite3.Row
    where, args = [], []
    if model:
        where.append("(requested_model = ? OR deployment = ?)")
        args += [model, model]
    if since is not None:
        where.append("ts >= ?")
        args.append(since)
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
