"""The session manager: each session holds a versioned memory state; mutations are exclusive per session and
commit atomically.

A mutation works on the state it read and calls `commit` with the new state only when the whole call
succeeded; anything else (an error, a cancelled stream) leaves the session exactly as it was.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from deltamem.runtime.errors import InvalidRequest, LimitExceeded, NonFiniteOutput, SessionBusy, SessionNotFound
from deltamem.runtime.sessions.records import (
    CONTEXT_POLICIES,
    DEFAULT_TENANT,
    MAX_WINDOW_TOKENS,
    SessionInfo,
    check_metadata,
    check_session_id,
    with_receipt,
)
from deltamem.runtime.sessions.store import MemoryStore, StoreConflict

Receipt = tuple[str, Callable[[SessionInfo], str]]  # (request id, what the call returns, given the committed session)


class Mutation:
    """Exclusive access to one session for one call; `commit` publishes the new state as version n+1."""

    def __init__(
        self, manager: SessionManager, info: SessionInfo, state: torch.Tensor, context, deadline: float | None = None
    ):
        self._manager = manager
        self.info = info
        self.state = state
        self.context = context
        self.deadline = deadline  # Unix time after which the store must not commit (the call's own deadline)
        self.committed: SessionInfo | None = None

    def commit(
        self,
        new_state: torch.Tensor | None,
        tokens_written: int,
        context: object | None = None,
        receipt: Receipt | None = None,
    ) -> SessionInfo:
        """Publish the call's result at once: a new memory (version n+1; None keeps the memory and its version),
        which the store copies, the context to keep (None: none) and, for a call with a request id, its
        receipt, made from the session as committed and stored in the same put."""
        if self.committed is not None:
            raise RuntimeError("a mutation commits at most once")
        if new_state is not None and not bool(torch.isfinite(new_state).all()):
            raise NonFiniteOutput("the call made the memory non-finite (NaN or infinity); nothing was committed")
        self.committed = self._manager._publish(
            self.info, self.state, new_state, tokens_written, context, receipt, self.deadline
        )
        return self.committed


class SessionManager:
    """Sessions over a store (runtime/store.py), which is the source of truth: every call reads the session
    from it, and a commit is a versioned put, so replicas sharing a store never interleave mutations. This
    process keeps only what is local to it: a lock per session and the kept contexts (KV caches)."""

    def __init__(self, empty_state: torch.Tensor, store=None, max_sessions_per_tenant: int | None = None):
        self._max_per_tenant = max_sessions_per_tenant
        self._empty = empty_state.detach().clone()
        self._store = store if store is not None else MemoryStore()
        self._lock = threading.Lock()
        self._mutating: dict[str, threading.Lock] = {}
        self._creating: dict[str, threading.Lock] = {}  # tenant -> held while its quota is checked and used
        self._contexts: dict[str, tuple[int, object]] = {}  # session -> (memory version it was kept at, context)

    def count(self) -> int:
        return self._store.count()

    @contextmanager
    def _new_session_for(self, tenant: str) -> Iterator[None]:
        """Check the tenant's quota and store its new session as one step: the tenant's creates and forks are
        serialised here (other tenants' are not), so concurrent ones cannot all pass the check before any is
        stored. Within one process; replicas sharing a store can still each admit one more."""
        with self._lock:
            lock = self._creating.setdefault(tenant, threading.Lock())
        with lock:
            if self._max_per_tenant is not None:
                owned = self._store.count_tenant(tenant)
                if owned >= self._max_per_tenant:
                    raise LimitExceeded(
                        f"tenant {tenant!r} already has {owned} sessions, the limit; delete some before creating more"
                    )
            yield

    def _with_context(self, info: SessionInfo) -> tuple[SessionInfo, object | None]:
        with self._lock:
            kept = self._contexts.get(info.session_id)
        context = kept[1] if kept else None
        return dataclasses.replace(info, context_tokens=len(context.tokens) if context else 0), context

    def _load(self, session_id: str, tenant: str) -> tuple[SessionInfo, torch.Tensor]:
        check_session_id(session_id)
        found = self._store.get(session_id)
        # another tenant's session is reported exactly like a missing one: nothing is revealed
        if found is None or found[0].tenant != tenant:
            raise SessionNotFound(f"session {session_id} does not exist")
        info, state = found
        if state.shape != self._empty.shape:
            raise ValueError(f"stored session {session_id} has state shape {list(state.shape)}")
        return info, state.to(self._empty.device)

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
        metadata = check_metadata(metadata or {})
        info = SessionInfo(
            session_id=uuid.uuid4().hex,
            memory_version=0,
            tokens_written=0,
            parent_session_id="",
            parent_memory_version=0,
            context_policy=context_policy,
            metadata=metadata,
            created_at=time.time(),
            order=self._store.next_order(),
            window_tokens=window_tokens,
            tenant=tenant,
        )
        with self._new_session_for(tenant):
            self._store.put(info, self._empty, None)
        return info

    def snapshot(self, session_id: str, tenant: str = DEFAULT_TENANT) -> tuple[SessionInfo, torch.Tensor]:
        """A consistent (info, state) pair at the latest committed version."""
        info, state = self._load(session_id, tenant)
        return self._with_context(info)[0], state

    @contextmanager
    def mutation(
        self, session_id: str, tenant: str = DEFAULT_TENANT, deadline: float | None = None
    ) -> Iterator[Mutation]:
        """Exclusive access to the session for one call; its commit happens only before `deadline` (Unix time)."""
        info, state = self._load(session_id, tenant)
        with self._lock:
            lock = self._mutating.setdefault(session_id, threading.Lock())
        if not lock.acquire(blocking=False):
            raise SessionBusy(f"session {session_id} has another mutating call in progress; retry after it ends")
        try:
            info, context = self._with_context(info)
            yield Mutation(self, info, state, context, deadline)
        finally:
            lock.release()

    def _publish(
        self,
        info: SessionInfo,
        state,
        new_state,
        tokens_written: int,
        context,
        receipt: Receipt | None,
        deadline: float | None = None,
    ) -> SessionInfo:
        published = dataclasses.replace(
            info,
            memory_version=info.memory_version + (new_state is not None),
            tokens_written=info.tokens_written + tokens_written,
            context_tokens=len(context.tokens) if context is not None else 0,
        )
        if receipt is not None:
            request_id, make = receipt
            published = dataclasses.replace(
                published, receipts=with_receipt(info.receipts, request_id, make(published))
            )
        if new_state is not None or receipt is not None:
            try:  # on the store before anyone can see it (or an error, and no change)
                self._store.put(published, state if new_state is None else new_state, info.memory_version, deadline)
            except StoreConflict:
                if self._store.get(info.session_id) is None:
                    raise SessionNotFound(f"session {info.session_id} was deleted during the call") from None
                raise SessionBusy(
                    f"session {info.session_id} was changed by another call (on another replica?) meanwhile; retry"
                ) from None
        with self._lock:
            if context is None:
                self._contexts.pop(info.session_id, None)
            else:
                self._contexts[info.session_id] = (published.memory_version, context)
        return published

    def fork(
        self, session_id: str, metadata: dict[str, str] | None = None, tenant: str = DEFAULT_TENANT
    ) -> SessionInfo:
        """A new session with the source's committed memory; the state tensor is copied (KBs, any history)."""
        metadata = check_metadata(metadata or {})
        source, state = self._load(session_id, tenant)
        info = dataclasses.replace(
            source,
            session_id=uuid.uuid4().hex,
            parent_session_id=source.session_id,
            parent_memory_version=source.memory_version,
            metadata=metadata,
            created_at=time.time(),
            order=self._store.next_order(),
            context_tokens=0,
            receipts={},  # a retry is about the session it was sent to, not its forks
        )
        with self._new_session_for(tenant):
            self._store.put(info, state, None)
        # the context (tokens and KV) is shared, not copied: contexts are never modified in place, and a
        # request continues from a clone, so a fork costs the same whatever the history's length
        with self._lock:
            kept = self._contexts.get(session_id)
            if kept is not None and kept[0] == source.memory_version:
                self._contexts[info.session_id] = kept
        return self._with_context(info)[0]

    def delete(self, session_id: str, tenant: str = DEFAULT_TENANT) -> None:
        self._load(session_id, tenant)
        if not self._store.delete(session_id):
            raise SessionNotFound(f"session {session_id} does not exist")
        with self._lock:
            self._contexts.pop(session_id, None)

    def list(self, after: int | None, limit: int, tenant: str = DEFAULT_TENANT) -> tuple[list[SessionInfo], bool]:
        """Up to `limit` of the tenant's sessions in creation order, strictly after the session whose `order` is
        `after`; returns (page, whether more follow). A key, not an offset, so deletions never skip or repeat."""
        infos = self._store.list_page(tenant, after, limit + 1)
        return [self._with_context(info)[0] for info in infos[:limit]], len(infos) > limit

    def ping(self) -> None:
        """Raise if the store does not answer (health checking)."""
        self._store.ping()

    def shared_secret(self, name: str) -> bytes:
        """A key every replica on this store shares (page tokens are signed with it)."""
        return self._store.secret(name)
