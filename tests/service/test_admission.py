"""Admission control on a real server: more open, unread Generate streams than workers, and health checks and
another tenant's short calls are still answered at once (issue 17, point 2)."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

KEY_A = "alpha-key-0123456789abcdef"
KEY_B = "bravo-key-0123456789abcdef"
WORKERS = 6


@pytest.fixture(scope="module")
def small_server(start_server_process, tmp_path_factory):
    root = tmp_path_factory.mktemp("admission")
    (root / "keys").write_text(f"alpha {KEY_A}\nbravo {KEY_B}\n")
    proc = start_server_process(
        "--data-dir", str(root / "sessions"), "--api-keys-file", str(root / "keys"),
        "--max-workers", str(WORKERS), "--max-calls", "3", "--max-calls-per-tenant", "2",
    )  # fmt: skip
    yield f"127.0.0.1:{proc.port}"
    proc.stop()


def as_tenant(key: str):
    return (("authorization", f"Bearer {key}"),)


def long_stream(stub, session: str, key: str):
    """A Generate of 4,096 tokens, read up to its first message and then left unread (a stalled client)."""
    request = pb.GenerateRequest(
        session_id=session, input=pb.Input(text="Tell a long story."), max_new_tokens=4096, ignore_end_of_turn=True
    )
    return stub.Generate(request, metadata=as_tenant(key), timeout=300)


def refusal(stream) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    return err.value.code(), err.value.details()


def test_unread_streams_beyond_the_workers_leave_health_and_short_calls_answered(small_server):
    with grpc.insecure_channel(small_server) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def new_session(key):
            return stub.CreateSession(pb.CreateSessionRequest(), metadata=as_tenant(key), timeout=60).session.session_id

        def started(key):
            stream = long_stream(stub, new_session(key), key)
            next(stream)  # running: it has streamed a token, and is never read again
            return stream

        admitted = [started(KEY_A), started(KEY_A)]
        code, details = refusal(long_stream(stub, new_session(KEY_A), KEY_A))  # A's limit: 2
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "this tenant" in details, details
        admitted.append(started(KEY_B))  # B is not held back by A; now the server's limit of 3 is reached
        refused = [long_stream(stub, new_session(key), key) for key in (KEY_B, KEY_A, KEY_B, KEY_B)]
        assert len(admitted) + 1 + len(refused) > WORKERS
        for stream in refused:
            code, details = refusal(stream)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 3 long calls" in details, details
        for _ in range(5):  # health and short calls still answered at once, while the streams stay open
            start = time.monotonic()
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            stub.ListSessions(pb.ListSessionsRequest(), metadata=as_tenant(KEY_B), timeout=5)
            made = stub.CreateSession(pb.CreateSessionRequest(), metadata=as_tenant(KEY_B), timeout=5)
            stub.DeleteSession(pb.DeleteSessionRequest(session_id=made.session.session_id), metadata=as_tenant(KEY_B))
            assert time.monotonic() - start < 5
        for stream in admitted:
            stream.cancel()
        again = new_session(KEY_A)
        deadline = time.monotonic() + 60  # a cancelled stream gives its slot back once its handler sees it
        while True:
            try:
                short = pb.GenerateRequest(session_id=again, input=pb.Input(text="Hi"), max_new_tokens=2)
                assert list(stub.Generate(short, metadata=as_tenant(KEY_A), timeout=60))
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                time.sleep(0.5)
