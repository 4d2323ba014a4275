"""Sessions: each holds a versioned memory state. Mutations are exclusive per session and commit atomically.

A mutation works on the state it read and calls `commit` with the new state only when the whole call
succeeded; anything else (an error, a cancelled stream) leaves the session exactly as it was.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from deltamem.runtime.errors import InvalidRequest, LimitExceeded, SessionBusy, SessionNotFound

CONTEXT_POLICIES = ("none", "full", "window")
MAX_WINDOW_TOKENS = 1 << 20
MAX_METADATA_ENTRIES = 64
MAX_METADATA_BYTES = 256
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_TENANT = "default"  # the one tenant of a server without API keys


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    memory_version: int
    tokens_written: int
    parent_session_id: str
    parent_memory_version: int
    context_policy: str
    metadata: dict[str, str]
    created_at: float
    order: int  # creation sequence on this server: the paging key
    window_tokens: int = 0  # the window(n) policy's n; 0 for the other policies
    context_tokens: int = 0  # tokens kept as context right now
    tenant: str = DEFAULT_TENANT  # the owner: no other tenant can see or touch the session


@dataclass
class _Entry:
    info: SessionInfo
    state: torch.Tensor  # [L, N, r, r] fp32; replaced, never modified in place
    mutating: threading.Lock = field(default_factory=threading.Lock)
    context: object | None = None  # a SessionContext for the full and window policies; replaced, never modified


def check_session_id(session_id: str) -> str:
    if not session_id:
        raise InvalidRequest("session_id is required")
    if not _SESSION_ID.match(session_id):
        raise InvalidRequest(f"session_id {session_id[:64]!r} is malformed: expected 32 lowercase hex characters")
    return session_id


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidRequest(f"metadata has {len(metadata)} entries, at most {MAX_METADATA_ENTRIES} are allowed")
    for key, value in metadata.items():
        if not key or len(key.encode()) > MAX_METADATA_BYTES or len(value.encode()) > MAX_METADATA_BYTES:
            raise InvalidRequest(
                f"metadata key {key[:32]!r}: keys must be 1-{MAX_METADATA_BYTES} bytes, "
                f"values at most {MAX_METADATA_BYTES}"
            )
    return dict(metadata)


class Mutation:
    """Exclusive access to one session for one call; `commit` publishes the new state as version n+1."""

    def __init__(self, manager: SessionManager, entry: _Entry):
        self._manager = manager
        self._entry = entry
        self.info = entry.info
        self.state = entry.state
        self.context = entry.context
        self.committed: SessionInfo | None = None

    def commit(self, new_state: torch.Tensor | None, tokens_written: int, context: object | None = None) -> SessionInfo:
        """Publish the call's result at once: a new memory (version n+1; None keeps the memory and its version)
        and the context to keep (None: none)."""
        if self.committed is not None:
            raise RuntimeError("a mutation commits at most once")
        state = None if new_state is None else new_state.detach().clone()
        self.committed = self._manager._publish(self._entry, state, tokens_written, context)
        return self.committed


class SessionManager:
    def __init__(self, empty_state: torch.Tensor, store=None, max_sessions_per_tenant: int | None = None):
        """`store` (a runtime.store.SessionStore, or None for memory only) receives every change before it is
        published here, and gives back every session at start."""
        self._max_per_tenant = max_sessions_per_tenant
        self._empty = empty_state.detach().clone()
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._store = store
        if store is not None:
            for info, state in store.load_all():
                if state.shape != self._empty.shape:
                    raise ValueError(f"stored session {info.session_id} has state shape {list(state.shape)}")
                self._entries[info.session_id] = _Entry(info, state.to(self._empty.device))
        self._created = itertools.count(max((e.info.order for e in self._entries.values()), default=-1) + 1)

    def count(self) -> int:
        with self._lock:
            return len(self._entries)

    def _persist(self, info: SessionInfo, state: torch.Tensor) -> None:
        if self._store is not None:
            self._store.put(info, state)

    def _check_quota(self, tenant: str) -> None:
        """Called under the lock, before a session is added for `tenant`."""
        if self._max_per_tenant is None:
            return
        owned = sum(1 for e in self._entries.values() if e.info.tenant == tenant)
        if owned >= self._max_per_tenant:
            raise LimitExceeded(
                f"tenant {tenant!r} already has {owned} sessions, the limit; delete some before creating more"
            )

    def create(
        self,
        metadata: dict[str, str] | None = None,
        context_policy: str = "none",
        window_tokens: int = 0,
        tenant: str = DEFAULT_TENANT,
    ) -> SessionInfo:
        if context_policy not in CONTEXT_POLICIES:
            raise InvalidRequest(
                f"context policy {context_policy!r} is not implemented (supported: {CONTEXT_POLICIES})"
            )
        if context_policy == "window" and not 1 <= window_tokens <= MAX_WINDOW_TOKENS:
            raise InvalidRequest(
                f"the window policy needs window_tokens in [1, {MAX_WINDOW_TOKENS}], got {window_tokens}"
            )
        if context_policy != "window" and window_tokens:
            raise InvalidRequest(f"window_tokens is only for the window policy, not {context_policy!r}")
        info = SessionInfo(
            session_id=uuid.uuid4().hex,
            memory_version=0,
            tokens_written=0,
            parent_session_id="",
            parent_memory_version=0,
            context_policy=context_policy,
            metadata=check_metadata(metadata or {}),
            created_at=time.time(),
            order=next(self._created),
            window_tokens=window_tokens,
            tenant=tenant,
        )
        with self._lock:
            self._check_quota(tenant)
            self._persist(info, self._empty)
            self._entries[info.session_id] = _Entry(info, self._empty.clone())
        return info

    def _entry(self, session_id: str, tenant: str) -> _Entry:
        check_session_id(session_id)
        entry = self._entries.get(session_id)
        # another tenant's session is reported exactly like a missing one: nothing is revealed
        if entry is None or entry.info.tenant != tenant:
            raise SessionNotFound(f"session {session_id} does not exist")
        return entry

    def snapshot(self, session_id: str, tenant: str = DEFAULT_TENANT) -> tuple[SessionInfo, torch.Tensor]:
        """A consistent (info, state) pair at the latest committed version."""
        with self._lock:
            entry = self._entry(session_id, tenant)
            return entry.info, entry.state

    @contextmanager
    def mutation(self, session_id: str, tenant: str = DEFAULT_TENANT) -> Iterator[Mutation]:
        with self._lock:
            entry = self._entry(session_id, tenant)
            if not entry.mutating.acquire(blocking=False):
                raise SessionBusy(f"session {session_id} has another mutating call in progress; retry after it ends")
        try:
            yield Mutation(self, entry)
        finally:
            entry.mutating.release()

    def _publish(self, entry: _Entry, new_state, tokens_written: int, context) -> SessionInfo:
        with self._lock:
            if self._entries.get(entry.info.session_id) is not entry:
                raise SessionNotFound(f"session {entry.info.session_id} was deleted during the call")
            info = dataclasses.replace(
                entry.info,
                memory_version=entry.info.memory_version + (new_state is not None),
                tokens_written=entry.info.tokens_written + tokens_written,
                context_tokens=len(context.tokens) if context is not None else 0,
            )
            if new_state is not None:
                self._persist(info, new_state)  # on disk before anyone can see it (or an error, and no change)
                entry.state = new_state
            entry.info, entry.context = info, context
            return info

    def fork(
        self, session_id: str, metadata: dict[str, str] | None = None, tenant: str = DEFAULT_TENANT
    ) -> SessionInfo:
        """A new session with the source's committed memory; the state tensor is copied (KBs, any history)."""
        metadata = check_metadata(metadata or {})
        with self._lock:
            source = self._entry(session_id, tenant)
            self._check_quota(tenant)
            info = dataclasses.replace(
                source.info,
                session_id=uuid.uuid4().hex,
                parent_session_id=source.info.session_id,
                parent_memory_version=source.info.memory_version,
                metadata=metadata,
                created_at=time.time(),
                order=next(self._created),
            )
            # the context (tokens and KV) is shared, not copied: contexts are never modified in place, and a
            # request continues from a clone, so a fork costs the same whatever the history's length
            self._persist(info, source.state)
            self._entries[info.session_id] = _Entry(info, source.state.clone(), context=source.context)
            return info

    def delete(self, session_id: str, tenant: str = DEFAULT_TENANT) -> None:
        with self._lock:
            self._entry(session_id, tenant)
            if self._store is not None:
                self._store.delete(session_id)
            del self._entries[session_id]

    def list(self, after: int | None, limit: int, tenant: str = DEFAULT_TENANT) -> tuple[list[SessionInfo], bool]:
        """Up to `limit` of the tenant's sessions in creation order, strictly after the session whose `order` is
        `after`; returns (page, whether more follow). A key, not an offset, so deletions never skip or repeat."""
        with self._lock:
            owned = (e.info for e in self._entries.values() if e.info.tenant == tenant)
            infos = sorted(owned, key=lambda info: info.order)
        if after is not None:
            infos = [info for info in infos if info.order > after]
        return infos[:limit], len(infos) > limit
