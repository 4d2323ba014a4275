"""Two server processes sharing one Redis store behave as replicas of one service."""

from __future__ import annotations

import grpc
import pytest

from deltamem.client import MemoryClient


def test_two_replicas_share_sessions_through_redis(start_server_process, redis_url, tmp_path):
    url = redis_url.rsplit("/", 1)[0] + "/3"  # a database of its own
    first = start_server_process("--store", url)
    second = start_server_process("--store", url)
    try:
        with (
            MemoryClient(f"127.0.0.1:{first.port}", timeout=60) as a,
            MemoryClient(f"127.0.0.1:{second.port}", timeout=60) as b,
        ):
            session = a.create_session({"made": "on a"}).session_id
            a.update_memory(session, "Written through replica A.")
            on_b = b.read_state(session)
            assert on_b.session.memory_version == 1 and on_b.state.checksum == a.read_state(session).state.checksum
            b.update_memory(session, "And then through replica B.")
            assert a.read_state(session).session.memory_version == 2
            fork = b.fork_session(session).session_id
            assert {s.session_id for s in a.list_sessions()} >= {session, fork}
            a.delete_session(fork)
            with pytest.raises(grpc.RpcError) as err:
                b.read_state(fork)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        first.stop()
        second.stop()
