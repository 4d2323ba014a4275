"""The durable local session store: SQLite in WAL mode with synchronous=FULL (see store.py for the contract)."""

from __future__ import annotations

import functools
import sqlite3
import threading
from pathlib import Path

from deltamem.runtime.errors import StoreFull, StoreUnavailable
from deltamem.runtime.sessions.state_codec import decode_state, encode_state
from deltamem.runtime.sessions.store import StoreConflict, StoreMismatch, decode_info, encode_info, identity_problem

DATABASE_FILE = "sessions-v2.sqlite3"
BUSY_TIMEOUT_SECONDS = 5.0  # a call waits this long for another writer's lock, then is UNAVAILABLE


def _mapped_sqlite_errors(method):
    """SQLite's full-disk/full-database errors become StoreFull (RESOURCE_EXHAUSTED), its other operational errors
    (I/O, locks) StoreUnavailable (UNAVAILABLE); a failed write has been rolled back, so nothing was written."""

    @functools.wraps(method)
    def mapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc):
                raise StoreFull(f"the session store {self.path} is full ({exc}); nothing was written") from None
            raise StoreUnavailable(f"the session store {self.path} failed {method.__name__}: {exc}") from None

    return mapped


class SqliteStore:
    def __init__(self, directory: Path, identity: dict[str, str]):
        """`identity`: what the stored memories mean (backbone and adapter fingerprints, state shape)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DATABASE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS identity (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, version INTEGER NOT NULL,"
            " info TEXT NOT NULL, shape TEXT NOT NULL, state BLOB NOT NULL, sha256 TEXT NOT NULL)"
        )
        with self._lock:
            stored = dict(self._db.execute("SELECT key, value FROM identity").fetchall())
            if not stored:
                self._db.executemany("INSERT INTO identity VALUES (?, ?)", sorted(identity.items()))
            elif problem := identity_problem(stored, identity, str(self.path)):
                raise StoreMismatch(problem)

    @_mapped_sqlite_errors
    def get(self, session_id):
        with self._lock:
            row = self._db.execute(
                "SELECT info, shape, state, sha256 FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if row is None:
            return None
        info, shape, data, digest = row
        return decode_info(info), decode_state(data, shape, digest, f"{self.path}: session {session_id}")

    @_mapped_sqlite_errors
    def put(self, info, state, expected_version):
        data, shape, digest = encode_state(state)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT version FROM sessions WHERE id = ?", (info.session_id,)).fetchone()
                if (row is None) != (expected_version is None) or (row is not None and row[0] != expected_version):
                    raise StoreConflict(f"session {info.session_id} changed since it was read")
                self._db.execute(
                    "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (info.session_id, info.tenant, info.memory_version, encode_info(info), shape, data, digest),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """Undo the open transaction, if SQLite has not already (it rolls back by itself on a full disk)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @_mapped_sqlite_errors
    def delete(self, session_id):
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0

    @_mapped_sqlite_errors
    def list(self, tenant):
        with self._lock:
            rows = self._db.execute("SELECT info FROM sessions WHERE tenant = ?", (tenant,)).fetchall()
        return [decode_info(row[0]) for row in rows]

    @_mapped_sqlite_errors
    def next_order(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR IGNORE INTO counters VALUES ('order', 0)")
                self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'order'")
                (value,) = self._db.execute("SELECT value FROM counters WHERE name = 'order'").fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return value

    @_mapped_sqlite_errors
    def count(self):
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    def close(self) -> None:
        self._db.close()
