"""What the store suites share: the fixture that makes each kind of store (and the identity it is made with)."""

from __future__ import annotations

import time

import pytest
import torch

from deltamem.runtime.sessions.sqlite_store import SqliteStore
from deltamem.runtime.sessions.store import MemoryStore

IDENTITY = {"backbone": "b1", "adapter": "a1", "state_shape": "2x1x4x4"}
EMPTY = torch.zeros(2, 1, 4, 4)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request, tmp_path):
    """Factory: make_store(identity=IDENTITY) -> a store; every call of one test shares the same backing data (a
    second call is a replica, or a restart)."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda identity=IDENTITY: shared
    if request.param == "sqlite":
        return lambda identity=IDENTITY: SqliteStore(tmp_path, identity)
    from deltamem.runtime.sessions.redis_store import RedisStore

    url = request.getfixturevalue("redis_url")
    prefix = f"test-{request.node.name}-{time.monotonic_ns()}"
    return lambda identity=IDENTITY: RedisStore(url, identity, prefix=prefix)
