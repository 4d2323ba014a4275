"""Session stores: where sessions live, durably, and what every replica of a server shares.

A store maps session ids to (SessionInfo, memory) and is the source of truth: a server reads a session from
its store on every call and commits with a version check (`put(..., expected_version)`), so two replicas can
never interleave mutations of one session; the loser of a race gets StoreConflict. Three stores share this
contract and one test suite: `MemoryStore` (a dict; lost at exit), `SqliteStore` (sqlite_store.py: local disk,
WAL, synchronous=FULL, so a committed write survives the process being killed) and `RedisStore` (redis_store.py,
shared by replicas). Kept contexts (KV) are caches and are never stored. A durable store remembers the
backbone and adapter it was written with and refuses a server running others.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import secrets
import threading
import time
from typing import Protocol

import torch

from deltamem.runtime.errors import CommitTooLate
from deltamem.runtime.sessions.records import SessionInfo


class StoreMismatch(RuntimeError):
    """The store was written by a server with another backbone, adapter or state shape, or is corrupted."""


class StoreConflict(RuntimeError):
    """A put's version check failed: the session changed (or appeared, or vanished) since it was read."""


class SessionStore(Protocol):
    def get(self, session_id: str) -> tuple[SessionInfo, torch.Tensor] | None: ...

    def put(
        self, info: SessionInfo, state: torch.Tensor, expected_version: int | None, deadline: float | None = None
    ) -> None:
        """Write if the stored version is `expected_version` (None: the session must not exist yet) and, given a
        `deadline` (Unix time), only if the write happens before it (else CommitTooLate, nothing written)."""

    def delete(self, session_id: str) -> bool: ...

    def list_page(self, tenant: str, after: int | None, limit: int) -> list[SessionInfo]:
        """Up to `limit` of the tenant's sessions in creation order, with `order` > `after`: O(log n + page)."""

    def count_tenant(self, tenant: str) -> int:
        """How many sessions the tenant has: O(1), for the quota check on every create and fork."""

    def next_order(self) -> int:
        """A creation sequence number, increasing across every replica sharing the store."""

    def count(self) -> int: ...

    def secret(self, name: str) -> bytes:
        """A random 32-byte key made on first use and then the same for every replica sharing the store."""

    def ping(self) -> None:
        """Return if the store answers; raise (StoreUnavailable) if it does not. Health checking calls it."""


def refuse_if_late(deadline: float | None) -> None:
    """CommitTooLate if the call's `deadline` (Unix time) has passed: the check right before a store commits."""
    if deadline is not None and time.time() > deadline:
        raise CommitTooLate("the call's deadline passed before the store could commit it; nothing was written")


def encode_info(info: SessionInfo) -> str:
    return json.dumps(dataclasses.asdict(info) | {"context_tokens": 0}, sort_keys=True)


def decode_info(text: str) -> SessionInfo:
    return SessionInfo(**json.loads(text))


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
        self._by_tenant: dict[str, list[tuple[int, str]]] = {}  # tenant -> sorted (order, session id)
        self._secrets: dict[str, bytes] = {}

    def get(self, session_id):
        with self._lock:
            found = self._sessions.get(session_id)
        return None if found is None else (found[0], found[1].clone())

    def put(self, info, state, expected_version, deadline=None):
        with self._lock:
            refuse_if_late(deadline)
            current = self._sessions.get(info.session_id)
            if (current is None) != (expected_version is None) or (
                current is not None and current[0].memory_version != expected_version
            ):
                raise StoreConflict(f"session {info.session_id} changed since it was read")
            self._sessions[info.session_id] = (dataclasses.replace(info, context_tokens=0), state.detach().clone())
            if current is None:
                bisect.insort(self._by_tenant.setdefault(info.tenant, []), (info.order, info.session_id))

    def delete(self, session_id):
        with self._lock:
            found = self._sessions.pop(session_id, None)
            if found is not None:
                self._by_tenant[found[0].tenant].remove((found[0].order, session_id))
            return found is not None

    def list_page(self, tenant, after, limit):
        with self._lock:
            index = self._by_tenant.get(tenant, [])
            start = 0 if after is None else bisect.bisect_right(index, (after, "\U0010ffff"))
            return [self._sessions[session_id][0] for _, session_id in index[start : start + limit]]

    def count_tenant(self, tenant):
        with self._lock:
            return len(self._by_tenant.get(tenant, ()))

    def next_order(self):
        with self._lock:
            return next(self._orders)

    def count(self):
        with self._lock:
            return len(self._sessions)

    def secret(self, name):
        with self._lock:
            return self._secrets.setdefault(name, secrets.token_bytes(32))

    def ping(self):
        return None
