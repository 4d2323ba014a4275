"""The per-tenant index every store keeps: pages in creation order, O(1) quota counts, a shared secret, and the
one-time migration of stores written before the index existed."""

from __future__ import annotations

import sqlite3
import time

import torch

from deltamem.runtime.sessions.manager import SessionManager
from deltamem.runtime.sessions.sqlite_store import DATABASE_FILE, SqliteStore

IDENTITY = {"backbone": "b1", "adapter": "a1", "state_shape": "2x1x4x4"}  # as conftest.make_store makes them
EMPTY = torch.zeros(2, 1, 4, 4)


def test_pages_follow_creation_order_per_tenant_and_counts_follow_creates_forks_and_deletes(make_store):
    store = make_store()
    sessions = SessionManager(EMPTY, store)
    made = [sessions.create(tenant="a") for _ in range(5)]
    made.append(sessions.fork(made[1].session_id, tenant="a"))
    other = sessions.create(tenant="b")
    sessions.delete(made[2].session_id, "a")
    alive = [info.session_id for info in made if info is not made[2]]
    assert [i.session_id for i in store.list_page("a", None, 100)] == alive
    assert [i.session_id for i in store.list_page("a", made[1].order, 2)] == alive[2:4]
    assert [i.session_id for i in store.list_page("a", made[2].order, 100)] == alive[2:]  # a deleted key still pages
    assert [i.session_id for i in store.list_page("b", None, 100)] == [other.session_id]
    assert store.list_page("nobody", None, 10) == []
    assert (store.count_tenant("a"), store.count_tenant("b"), store.count_tenant("nobody")) == (5, 1, 0)
    with sessions.mutation(made[0].session_id, "a") as mutation:  # an update is not a second create
        mutation.commit(torch.ones(2, 1, 4, 4), 1)
    assert store.count_tenant("a") == 5
    replica = make_store()
    assert replica.count_tenant("a") == 5 and [i.session_id for i in replica.list_page("a", None, 100)] == alive


def test_the_secret_is_made_once_and_shared_by_every_replica(make_store):
    first = make_store().secret("page-tokens")
    assert len(first) == 32 and make_store().secret("page-tokens") == first
    assert make_store().secret("other") != first


def test_a_sqlite_store_written_before_the_index_gets_it_on_open(tmp_path):
    store = SqliteStore(tmp_path, IDENTITY)
    sessions = SessionManager(EMPTY, store)
    made = [sessions.create(tenant=t) for t in ("a", "b", "a")]
    store.close()
    db = sqlite3.connect(tmp_path / DATABASE_FILE)  # back to the old schema: no order column, no counts
    db.executescript("DROP INDEX sessions_by_tenant; DROP TABLE tenant_counts; ALTER TABLE sessions DROP COLUMN ord;")
    db.close()
    reopened = SqliteStore(tmp_path, IDENTITY)
    assert [i.session_id for i in reopened.list_page("a", None, 10)] == [made[0].session_id, made[2].session_id]
    assert (reopened.count_tenant("a"), reopened.count_tenant("b")) == (2, 1)


def test_a_redis_store_written_with_unordered_tenant_sets_is_moved_to_sorted_ones(redis_url):
    import redis

    from deltamem.runtime.sessions.redis_store import RedisStore

    prefix = f"test-old-sets-{time.monotonic_ns()}"
    sessions = SessionManager(EMPTY, RedisStore(redis_url, IDENTITY, prefix=prefix))
    made = [sessions.create(tenant="a") for _ in range(3)]
    client = redis.Redis.from_url(redis_url)
    client.delete(f"{prefix}:tenant-by-order:a")
    client.sadd(f"{prefix}:tenant:a", *[info.session_id for info in reversed(made)])  # the old layout
    reopened = RedisStore(redis_url, IDENTITY, prefix=prefix)
    assert [i.session_id for i in reopened.list_page("a", None, 10)] == [info.session_id for info in made]
    assert reopened.count_tenant("a") == 3 and not client.exists(f"{prefix}:tenant:a")
