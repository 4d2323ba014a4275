"""One test suite for every session store (memory, SQLite, Redis), and the session manager on top of them,
including two managers sharing one store the way replicas do."""

from __future__ import annotations

import sqlite3
import time

import pytest
import torch

from deltamem.runtime.errors import SessionBusy, SessionNotFound
from deltamem.runtime.sessions.manager import SessionManager
from deltamem.runtime.sessions.sqlite_store import DATABASE_FILE, SqliteStore
from deltamem.runtime.sessions.store import StoreConflict, StoreMismatch

IDENTITY = {"backbone": "b1", "adapter": "a1", "state_shape": "2x1x4x4"}  # as conftest.make_store makes them
EMPTY = torch.zeros(2, 1, 4, 4)


def manager(store):
    return SessionManager(EMPTY, store)


def test_put_get_and_version_checks(make_store):
    store = make_store()
    replica = manager(store)
    info = replica.create({"a": "b"})
    got_info, got_state = store.get(info.session_id)
    assert got_info == info and torch.equal(got_state, EMPTY)
    with pytest.raises(StoreConflict):
        store.put(info, EMPTY, None)  # already exists
    with pytest.raises(StoreConflict):
        store.put(info, EMPTY, 5)  # not at version 5
    assert store.get("0" * 32) is None
    assert store.delete(info.session_id) and not store.delete(info.session_id)
    first, second = store.next_order(), store.next_order()
    assert second > first


def test_every_change_is_seen_through_the_store(make_store):
    a = manager(make_store())
    info = a.create(context_policy="window", window_tokens=32, tenant="t1")
    with a.mutation(info.session_id, "t1") as m:
        m.commit(torch.full((2, 1, 4, 4), 1.5), 7)
    fork = a.fork(info.session_id, {"branch": "b"}, tenant="t1")
    gone = a.create(tenant="t1")
    a.delete(gone.session_id, "t1")
    other = a.create(tenant="t2")

    b = manager(make_store())  # a second process on the same store: a replica, or a restart
    assert b.snapshot(info.session_id, "t1")[0] == a.snapshot(info.session_id, "t1")[0]
    assert torch.equal(b.snapshot(info.session_id, "t1")[1], torch.full((2, 1, 4, 4), 1.5))
    assert b.snapshot(info.session_id, "t1")[0].window_tokens == 32
    assert [i.session_id for i in b.list(None, 10, "t1")[0]] == [info.session_id, fork.session_id]
    assert [i.session_id for i in b.list(None, 10, "t2")[0]] == [other.session_id]
    with pytest.raises(SessionNotFound):
        b.snapshot(gone.session_id, "t1")
    with pytest.raises(SessionNotFound):
        b.snapshot(info.session_id, "t2")  # another tenant's session does not exist for it


def test_replicas_never_interleave_a_sessions_mutations(make_store):
    a, b = manager(make_store()), manager(make_store())
    info = a.create()
    with a.mutation(info.session_id) as on_a, b.mutation(info.session_id) as on_b:
        on_a.commit(torch.ones(2, 1, 4, 4), 1)
        with pytest.raises(SessionBusy, match="changed by another call"):
            on_b.commit(torch.full((2, 1, 4, 4), 9.0), 1)
    current, state = b.snapshot(info.session_id)
    assert current.memory_version == 1 and torch.equal(state, torch.ones(2, 1, 4, 4))


def test_a_failed_write_to_the_store_changes_nothing(make_store):
    store = make_store()
    info = manager(store).create()

    class Broken:
        def __getattr__(self, name):
            return getattr(store, name)

        def put(self, info, state, expected_version, deadline=None):
            raise OSError("disk full")

    broken = SessionManager(EMPTY, Broken())
    with pytest.raises(OSError, match="disk full"), broken.mutation(info.session_id) as m:
        m.commit(torch.ones(2, 1, 4, 4), 1)
    after, state = manager(store).snapshot(info.session_id)
    assert after.memory_version == 0 and torch.equal(state, EMPTY)


def test_durable_stores_refuse_another_adapter(make_store, request):
    if request.node.callspec.params["make_store"] == "memory":
        pytest.skip("a memory store holds nothing across servers")
    manager(make_store()).create()
    with pytest.raises(StoreMismatch, match="adapter=a1.*adapter=a2"):
        make_store(IDENTITY | {"adapter": "a2"})


def test_a_corrupted_sqlite_memory_is_detected(tmp_path):
    store = SqliteStore(tmp_path, IDENTITY)
    info = manager(store).create()
    db = sqlite3.connect(tmp_path / DATABASE_FILE)
    db.execute("UPDATE sessions SET state = zeroblob(length(state)) WHERE id = ?", (info.session_id,))
    db.execute("UPDATE sessions SET state = CAST(X'01' || substr(state, 2) AS BLOB) WHERE id = ?", (info.session_id,))
    db.commit()
    db.close()
    with pytest.raises(StoreMismatch, match="fails its checksum"):
        manager(SqliteStore(tmp_path, IDENTITY)).snapshot(info.session_id)


def test_a_frozen_or_stopped_redis_is_store_unavailable_and_the_store_recovers(tmp_path, launch_redis):
    """With redis-server frozen (SIGSTOP) a call ends after the store timeout with StoreUnavailable (it once hung:
    no socket timeout), a put's message says its outcome is unknown; stopped, the same; restarted on the same
    data, every acknowledged write is there and calls work again."""
    import dataclasses
    import signal

    from deltamem.runtime.errors import StoreUnavailable
    from deltamem.runtime.sessions.redis_store import RedisStore

    process, url = launch_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        store = RedisStore(url, IDENTITY, prefix="faults", timeout=1.0)
        manager = SessionManager(torch.zeros(2, 1, 4, 4), store)
        kept = manager.create(metadata={"k": "v"})
        process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="redis did not answer get"):
            store.get(kept.session_id)
        assert time.monotonic() - started < 5
        with pytest.raises(StoreUnavailable, match="is unknown: read the session"):
            store.put(dataclasses.replace(kept, memory_version=1), torch.ones(2, 1, 4, 4), 0)
        process.send_signal(signal.SIGCONT)
        assert store.get(kept.session_id) is not None
        process.terminate()
        process.wait(10)
        with pytest.raises(StoreUnavailable):
            manager.create()
        process, _ = launch_redis(tmp_path, port)
        found = store.get(kept.session_id)
        assert found is not None and found[0].metadata == {"k": "v"}
        assert manager.create().session_id
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)


def test_a_full_sqlite_store_is_store_full_writes_nothing_and_recovers(tmp_path):
    """A database that cannot grow (SQLite's own limit, as a full disk behaves) makes a write StoreFull
    (RESOURCE_EXHAUSTED), never an OperationalError or "cannot rollback - no transaction is active"; what was
    stored before is intact, and once there is room again writes succeed."""
    from deltamem.runtime.errors import StoreFull

    store = SqliteStore(tmp_path, IDENTITY)
    manager = SessionManager(torch.zeros(2, 1, 4, 4), store)
    kept = manager.create(metadata={"k": "v"})
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreFull, match="is full"):
        for _ in range(200):
            manager.create(metadata={"pad": "x" * 200})
    before = {info.session_id for info in store.list_page("default", None, 1000)}
    assert kept.session_id in before and store.get(kept.session_id)[0].metadata == {"k": "v"}
    store._db.execute("PRAGMA max_page_count = 1073741823")
    made = manager.create()
    assert {info.session_id for info in store.list_page("default", None, 1000)} == before | {made.session_id}
