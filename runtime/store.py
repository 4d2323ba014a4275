"""Durable session storage: every acknowledged mutation is on disk before the reply.

`SqliteStore` keeps one row per session (its metadata and its memory as float32 bytes with a SHA-256) in an
SQLite database in WAL mode with synchronous=FULL, so a committed write survives the process being killed.
The kept context (KV) is a cache and is not stored. A store remembers the backbone and adapter it was
written with, and refuses to be opened by a server running others: a memory means nothing to another adapter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from deltamem.runtime.sessions import SessionInfo

DATABASE_FILE = "sessions.sqlite3"


class StoreMismatch(RuntimeError):
    """The store was written by a server with another backbone, adapter or state shape, or is corrupted."""


class SessionStore(Protocol):
    def put(self, info: SessionInfo, state: torch.Tensor) -> None: ...

    def delete(self, session_id: str) -> None: ...

    def load_all(self) -> Iterator[tuple[SessionInfo, torch.Tensor]]: ...


def state_bytes(state: torch.Tensor) -> bytes:
    return state.detach().to(torch.float32).cpu().contiguous().numpy().astype("<f4", copy=False).tobytes()


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
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, info TEXT NOT NULL, shape TEXT NOT NULL, "
            "state BLOB NOT NULL, sha256 TEXT NOT NULL)"
        )
        self._check_identity(identity)

    def _check_identity(self, identity: dict[str, str]) -> None:
        stored = dict(self._db.execute("SELECT key, value FROM identity").fetchall())
        if not stored:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO identity VALUES (?, ?)", sorted(identity.items()))
                self._db.execute("COMMIT")
            return
        if stored != identity:
            differing = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            raise StoreMismatch(
                f"{self.path} holds sessions written with another {', '.join(differing)} "
                f"({', '.join(f'{k}={stored.get(k)}' for k in differing)}); this server has "
                f"{', '.join(f'{k}={identity.get(k)}' for k in differing)}. Use another data directory."
            )

    def put(self, info: SessionInfo, state: torch.Tensor) -> None:
        data = state_bytes(state)
        record = json.dumps(dataclasses.asdict(info) | {"context_tokens": 0})
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)",
                (info.session_id, record, json.dumps(list(state.shape)), data, hashlib.sha256(data).hexdigest()),
            )

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def load_all(self) -> Iterator[tuple[SessionInfo, torch.Tensor]]:
        rows = self._db.execute("SELECT id, info, shape, state, sha256 FROM sessions").fetchall()
        for session_id, record, shape, data, digest in rows:
            if hashlib.sha256(data).hexdigest() != digest:
                raise StoreMismatch(f"{self.path}: the stored memory of session {session_id} fails its checksum")
            array = np.frombuffer(data, dtype="<f4").reshape(json.loads(shape))
            yield SessionInfo(**json.loads(record)), torch.from_numpy(array.astype(np.float32))

    def close(self) -> None:
        self._db.close()
