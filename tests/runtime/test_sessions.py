"""Sessions: versions, atomic commits, exclusive mutations, fork isolation, paging."""

from __future__ import annotations

import pytest
import torch

from deltamem.runtime.errors import InvalidRequest, SessionBusy, SessionNotFound
from deltamem.runtime.sessions.manager import SessionManager


@pytest.fixture
def manager():
    return SessionManager(torch.zeros(2, 1, 4, 4))


def test_commit_bumps_version_and_abandoned_mutation_changes_nothing(manager):
    info = manager.create({"agent": "a"})
    with manager.mutation(info.session_id) as m:
        committed = m.commit(torch.ones(2, 1, 4, 4), tokens_written=5)
    assert (committed.memory_version, committed.tokens_written) == (1, 5)
    with pytest.raises(RuntimeError, match="boom"), manager.mutation(info.session_id) as m:
        raise RuntimeError("boom")
    now, state = manager.snapshot(info.session_id)
    assert now.memory_version == 1 and torch.equal(state, torch.ones(2, 1, 4, 4))


def test_a_non_finite_memory_is_never_committed(manager):
    """The last line of defence behind the import bound: a write whose result is NaN or inf commits nothing."""
    from deltamem.runtime.errors import NonFiniteOutput

    info = manager.create()
    for bad in (float("nan"), float("inf")):
        state = torch.ones(2, 1, 4, 4)
        state[1, 0, 2, 3] = bad
        with pytest.raises(NonFiniteOutput), manager.mutation(info.session_id) as m:
            m.commit(state, tokens_written=1)
    now, state = manager.snapshot(info.session_id)
    assert now.memory_version == 0 and torch.equal(state, torch.zeros(2, 1, 4, 4))


def test_concurrent_mutation_of_one_session_is_rejected(manager):
    a, b = manager.create(), manager.create()
    with manager.mutation(a.session_id):
        with pytest.raises(SessionBusy, match="in progress"), manager.mutation(a.session_id):
            pass
        with manager.mutation(b.session_id):  # other sessions are unaffected
            pass
    with manager.mutation(a.session_id):  # released afterwards
        pass


def test_fork_is_independent_of_its_parent(manager):
    parent = manager.create()
    with manager.mutation(parent.session_id) as m:
        m.commit(torch.full((2, 1, 4, 4), 2.0), 3)
    fork = manager.fork(parent.session_id, {"branch": "b"})
    assert (fork.parent_session_id, fork.parent_memory_version, fork.memory_version) == (parent.session_id, 1, 1)
    with manager.mutation(fork.session_id) as m:
        m.commit(torch.full((2, 1, 4, 4), 9.0), 1)
    assert torch.equal(manager.snapshot(parent.session_id)[1], torch.full((2, 1, 4, 4), 2.0))
    assert manager.snapshot(parent.session_id)[0].memory_version == 1


def test_deleting_during_a_mutation_loses_the_commit_not_the_server(manager):
    info = manager.create()
    with manager.mutation(info.session_id) as m:
        manager.delete(info.session_id)
        with pytest.raises(SessionNotFound, match="deleted during the call"):
            m.commit(torch.ones(2, 1, 4, 4), 1)
    with pytest.raises(SessionNotFound):
        manager.snapshot(info.session_id)


def test_ids_and_metadata_are_validated(manager):
    with pytest.raises(InvalidRequest, match="required"):
        manager.snapshot("")
    with pytest.raises(InvalidRequest, match="malformed"):
        manager.snapshot("../etc")
    with pytest.raises(SessionNotFound, match="does not exist"):
        manager.snapshot("0" * 32)
    with pytest.raises(InvalidRequest, match="metadata"):
        manager.create({"k": "v" * 300})
    with pytest.raises(InvalidRequest, match="not implemented"):
        manager.create(context_policy="elastic")
    with pytest.raises(InvalidRequest, match="window_tokens in"):
        manager.create(context_policy="window")
    with pytest.raises(InvalidRequest, match="only for the window policy"):
        manager.create(context_policy="full", window_tokens=8)
    assert manager.create(context_policy="window", window_tokens=64).window_tokens == 64


def test_paging_by_key_survives_deletions(manager):
    created = [manager.create().session_id for _ in range(7)]
    page, more = manager.list(None, 3)
    assert [i.session_id for i in page] == created[:3] and more
    manager.delete(created[3])
    rest, more = manager.list(page[-1].order, 10)
    assert [i.session_id for i in rest] == created[4:] and not more


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_the_session_quota_holds_under_concurrent_creates_and_forks(store_kind, tmp_path):
    """16 threads released together by a barrier create or fork sessions of one tenant with a limit of 5, three
    rounds: each round ends with exactly 5 sessions and 11 LimitExceeded (once 6, 5 and 11 sessions got in), and
    another tenant is not held back."""
    import threading

    from deltamem.runtime.errors import LimitExceeded
    from deltamem.runtime.sessions.sqlite_store import SqliteStore

    identity = {"backbone": "b", "adapter": "a", "state_shape": "2x1x2x2"}
    store = SqliteStore(tmp_path, identity) if store_kind == "sqlite" else None
    manager = SessionManager(torch.zeros(2, 1, 2, 2), store, max_sessions_per_tenant=5)
    for _ in range(3):
        source = manager.create(tenant="t")
        barrier, outcomes = threading.Barrier(16), []

        def one(index, source, barrier, outcomes):
            barrier.wait()
            try:
                (manager.fork(source.session_id, tenant="t") if index % 2 else manager.create(tenant="t"))
                outcomes.append("ok")
            except LimitExceeded:
                outcomes.append("limit")

        threads = [threading.Thread(target=one, args=(i, source, barrier, outcomes)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        owned = manager.list(None, 100, "t")[0]
        assert len(owned) == 5 and outcomes.count("ok") == 4 and outcomes.count("limit") == 12, outcomes
        assert manager.create(tenant="other").tenant == "other"
        for info in owned:
            manager.delete(info.session_id, "t")
