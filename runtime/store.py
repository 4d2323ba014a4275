"""Session stores: where sessions live, durably, and what every replica of a server shares.

A store maps session ids to (SessionInfo, memory) and is the source of truth: a server reads a session from
its store on every call and commits with a version check (`put(..., expected_version)`), so two replicas can
never interleave mutations of one session; the loser of a race gets StoreConflict. Three stores share this
contract and one test suite: `MemoryStore` (a dict; lost at exit), `SqliteStore` (local disk, WAL,
synchronous=FULL: a committed write survives the process being killed) and `RedisStore` (redis_store.py,
shared by replicas). Kept contexts (KV) are caches and are never stored. A durable store remembers the
backbone and adapter it was written with and refuses a server running others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from deltamem.runtime.sessions import SessionInfo

DATABASE_FILE = "sessions-v2.sqlite3"


class StoreMismatch(RuntimeError):
    """The store was written by a server with another backbone, adapter or state shape, or is corrupted."""


class StoreConflict(RuntimeError):
    """A put's version check failed: the session changed (or appeared, or vanished) since it was read."""


class SessionStore(Protocol):
    def get(self, session_id: str) -> tuple[SessionInfo, torch.Tensor] | None: ...

    def put(self, info: SessionInfo, state: torch.Tensor, expected_version: int | None) -> None:
        """Write if the stored version is `expected_version` (None: the session must not exist yet)."""

    def delete(self, session_id: str) -> bool: ...

    def list(self, tenant: str) -> list[SessionInfo]: ...

    def next_order(self) -> int:
        """A creation sequence number, increasing across every replica sharing the store."""

    def count(self) -> int: ...


def encode_info(info: SessionInfo) -> str:
    return json.dumps(dataclasses.asdict(info) | {"context_tokens": 0}, sort_keys=True)


def decode_info(text: str) -> SessionInfo:
    return SessionInfo(**json.loads(text))


def encode_state(state: torch.Tensor) -> tuple[bytes, str, str]:
    """(little-endian float32 bytes, shape as JSON, SHA-256 of the bytes)."""
    data = state.detach().to(torch.float32).cpu().contiguous().numpy().astype("<f4", copy=False).tobytes()
    return data, json.dumps(list(state.shape)), hashlib.sha256(data).hexdigest()


def decode_state(data: bytes, shape: str, digest: str, where: str) -> torch.Tensor:
    if hashlib.sha256(data).hexdigest() != digest:
        raise StoreMismatch(f"{where}: the stored memory fails its checksum")
    return torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(json.loads(shape)).astype(np.float32))


def identity_problem(stored: dict[str, str], identity: dict[str, str], where: str) -> str | None:
    if stored == identity:
        return None
    differing = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
    return (
        f"{where} holds sessions written with another {', '.join(differing)} "
        f"({', '.join(f'{k}={stored.get(k)}' for k in differing)}); this server has "
        f"{', '.join(f'{k}={identity.get(k)}' for k in differing)}. Use another data directory or store."
    )


class MemoryStore:
    """Sessions in a dict: the store of a server started with --ephemeral, and the simplest twin in tests."""

    def __init__(self):
        self._sessions: dict[str, tuple[SessionInfo, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._orders = itertools.count()

    def get(self, session_id):
        with self._lock:
            found = self._sessions.get(session_id)
        return None if found is None else (found[0], found[1].clone())

    def put(self, info, state, expected_version):
        with self._lock:
            current = self._sessions.get(info.session_id)
            if (current is None) != (expected_version is None) or (
                current is not None and current[0].memory_version != expected_version
            ):
                raise StoreConflict(f"session {info.session_id} changed since it was read")
            self._sessions[info.session_id] = (dataclasses.replace(info, context_tokens=0), state.detach().clone())

    def delete(self, session_id):
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def list(self, tenant):
        with self._lock:
            return [info for info, _ in self._sessions.values() if info.tenant == tenant]

    def next_order(self):
        with self._lock:
            return next(self._orders)

    def count(self):
        with self._lock:
            return len(self._sessions)


class SqliteStore:
    def __init__(self, directory: Path, identity: dict[str, str]):
        """`identity`: what the stored memories mean (backbone and adapter fingerprints, state shape)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DATABASE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
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

    def get(self, session_id):
        with self._lock:
            row = self._db.execute(
                "SELECT info, shape, state, sha256 FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if row is None:
            return None
        info, shape, data, digest = row
        return decode_info(info), decode_state(data, shape, digest, f"{self.path}: session {session_id}")

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
                self._db.execute("ROLLBACK")
                raise

    def delete(self, session_id):
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0

    def list(self, tenant):
        with self._lock:
            rows = self._db.execute("SELECT info FROM sessions WHERE tenant = ?", (tenant,)).fetchall()
        return [decode_info(row[0]) for row in rows]

    def next_order(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO counters VALUES ('order', 0)")
            self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'order'")
            (value,) = self._db.execute("SELECT value FROM counters WHERE name = 'order'").fetchone()
            self._db.execute("COMMIT")
        return value

    def count(self):
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    def close(self) -> None:
        self._db.close()
