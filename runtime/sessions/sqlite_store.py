"""The durable local session store: SQLite in WAL mode with synchronous=FULL (see store.py for the contract)."""

from __future__ import annotations

import functools
import secrets
import sqlite3
import threading
from pathlib import Path

from deltamem.runtime.errors import StoreFull, StoreUnavailable
from deltamem.runtime.sessions.state_codec import decode_state, encode_state
from deltamem.runtime.sessions.store import (
    StoreConflict,
    StoreMismatch,
    decode_info,
    encode_info,
    identity_problem,
    refuse_if_late,
)

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
        self._db.execute("CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, version INTEGER NOT NULL,"
            " info TEXT NOT NULL, shape TEXT NOT NULL, state BLOB NOT NULL, sha256 TEXT NOT NULL, ord INTEGER)"
        )
        with self._lock:
            stored = dict(self._db.execute("SELECT key, value FROM identity").fetchall())
            if not stored:
                self._db.executemany("INSERT INTO identity VALUES (?, ?)", sorted(identity.items()))
            elif problem := identity_problem(stored, identity, str(self.path)):
                raise StoreMismatch(problem)
            self._index_tenants()

    def _index_tenants(self) -> None:
        """The (tenant, creation order) index that pages and the per-tenant counts that quotas read, built once
        for a database written before they existed."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
            if "ord" not in columns:
                self._db.execute("ALTER TABLE sessions ADD COLUMN ord INTEGER")
            self._db.execute("UPDATE sessions SET ord = json_extract(info, '$.order') WHERE ord IS NULL")
            self._db.execute("CREATE INDEX IF NOT EXISTS sessions_by_tenant ON sessions (tenant, ord)")
            if not self._db.execute("SELECT name FROM sqlite_master WHERE name = 'tenant_counts'").fetchone():
                self._db.execute("CREATE TABLE tenant_counts (tenant TEXT PRIMARY KEY, n INTEGER NOT NULL)")
                self._db.execute("INSERT INTO tenant_counts SELECT tenant, COUNT(*) FROM sessions GROUP BY tenant")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

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
    def put(self, info, state, expected_version, deadline=None):
        data, shape, digest = encode_state(state)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT version FROM sessions WHERE id = ?", (info.session_id,)).fetchone()
                if (row is None) != (expected_version is None) or (row is not None and row[0] != expected_version):
                    raise StoreConflict(f"session {info.session_id} changed since it was read")
                refuse_if_late(deadline)
                self._db.execute(
                    "INSERT OR REPLACE INTO sessions (id, tenant, version, info, shape, state, sha256, ord)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        info.session_id,
                        info.tenant,
                        info.memory_version,
                        encode_info(info),
                        shape,
                        data,
                        digest,
                        info.order,
                    ),
                )
                if row is None:
                    self._db.execute(
                        "INSERT INTO tenant_counts VALUES (?, 1) ON CONFLICT (tenant) DO UPDATE SET n = n + 1",
                        (info.tenant,),
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
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("DELETE FROM sessions WHERE id = ? RETURNING tenant", (session_id,)).fetchone()
                if row is not None:
                    self._db.execute("UPDATE tenant_counts SET n = n - 1 WHERE tenant = ?", row)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return row is not None

    @_mapped_sqlite_errors
    def list_page(self, tenant, after, limit):
        with self._lock:
            rows = self._db.execute(
                "SELECT info FROM sessions WHERE tenant = ? AND ord > ? ORDER BY ord LIMIT ?",
                (tenant, -1 if after is None else after, limit),
            ).fetchall()
        return [decode_info(row[0]) for row in rows]

    @_mapped_sqlite_errors
    def count_tenant(self, tenant):
        with self._lock:
            row = self._db.execute("SELECT n FROM tenant_counts WHERE tenant = ?", (tenant,)).fetchone()
        return row[0] if row else 0

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

    @_mapped_sqlite_errors
    def secret(self, name):
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO secrets VALUES (?, ?)", (name, secrets.token_bytes(32)))
            return self._db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0]

    @_mapped_sqlite_errors
    def ping(self):
        with self._lock:
            self._db.execute("SELECT 1 FROM identity LIMIT 1").fetchall()

    def close(self) -> None:
        self._db.close()
