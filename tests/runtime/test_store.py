"""The durable session store and the session manager on top of it."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from deltamem.runtime.sessions import SessionManager
from deltamem.runtime.store import DATABASE_FILE, SqliteStore, StoreMismatch

IDENTITY = {"backbone": "b1", "adapter": "a1", "state_shape": "2x1x4x4"}
EMPTY = torch.zeros(2, 1, 4, 4)


def reopen(path, identity=IDENTITY):
    return SessionManager(EMPTY, SqliteStore(path, identity))


def test_every_change_survives_reopening(tmp_path):
    manager = reopen(tmp_path)
    a = manager.create({"agent": "a"}, context_policy="window", window_tokens=32)
    with manager.mutation(a.session_id) as m:
        m.commit(torch.full((2, 1, 4, 4), 1.5), 7)
    fork = manager.fork(a.session_id, {"branch": "b"})
    with manager.mutation(fork.session_id) as m:
        m.commit(torch.randn(2, 1, 4, 4), 3)
    gone = manager.create()
    manager.delete(gone.session_id)

    again = reopen(tmp_path)
    assert again.count() == 2
    for session_id in (a.session_id, fork.session_id):
        info, state = manager.snapshot(session_id)
        info_again, state_again = again.snapshot(session_id)
        assert info_again == info and torch.equal(state_again, state)
    assert again.snapshot(a.session_id)[0].window_tokens == 32
    assert again.create().order > fork.order  # creation order continues after the stored sessions


def test_a_failed_write_to_the_store_changes_nothing(tmp_path):
    manager = reopen(tmp_path)
    info = manager.create()

    class Broken(SqliteStore):
        def put(self, info, state):
            raise OSError("disk full")

    broken = SessionManager(EMPTY, Broken(tmp_path, IDENTITY))
    with pytest.raises(OSError, match="disk full"), broken.mutation(info.session_id) as m:
        m.commit(torch.ones(2, 1, 4, 4), 1)
    after, state = broken.snapshot(info.session_id)
    assert after.memory_version == 0 and torch.equal(state, EMPTY)
    assert reopen(tmp_path).snapshot(info.session_id)[0].memory_version == 0


def test_a_store_from_another_adapter_is_refused_by_name(tmp_path):
    reopen(tmp_path).create()
    with pytest.raises(StoreMismatch, match="adapter=a1.*adapter=a2"):
        reopen(tmp_path, IDENTITY | {"adapter": "a2"})


def test_a_corrupted_memory_is_detected(tmp_path):
    manager = reopen(tmp_path)
    info = manager.create()
    with manager.mutation(info.session_id) as m:
        m.commit(torch.ones(2, 1, 4, 4), 1)
    db = sqlite3.connect(tmp_path / DATABASE_FILE)
    db.execute("UPDATE sessions SET state = zeroblob(length(state)) WHERE id = ?", (info.session_id,))
    db.commit()
    db.close()
    with pytest.raises(StoreMismatch, match="fails its checksum"):
        reopen(tmp_path)
