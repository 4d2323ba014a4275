"""API keys, tenant isolation and limits on a real server."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deltamem.client import MemoryClient

KEY_A = "alpha-key-0123456789abcdef"
KEY_B = "bravo-key-0123456789abcdef"


@pytest.fixture(scope="module")
def tenant_server(start_server_process, tmp_path_factory):
    root = tmp_path_factory.mktemp("tenants")
    (root / "keys").write_text(f"# tenant key\nalpha {KEY_A}\nbravo {KEY_B}\n")
    proc = start_server_process(
        "--data-dir", str(root / "sessions"), "--api-keys-file", str(root / "keys"),
        "--max-sessions-per-tenant", "3", "--max-input-tokens", "64", "--max-message-bytes", "1000000",
    )  # fmt: skip
    yield f"127.0.0.1:{proc.port}"
    proc.stop()


def status(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_calls_need_a_valid_key_but_health_does_not(tenant_server):
    with MemoryClient(tenant_server, timeout=60) as anonymous:
        code, details = status(anonymous.create_session)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "API key" in details
    with MemoryClient(tenant_server, timeout=60, api_key="wrong-key-0123456789abcdef") as wrong:
        assert status(lambda: list(wrong.list_sessions()))[0] == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(tenant_server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_no_tenant_sees_or_touches_another_tenants_session(tenant_server):
    with (
        MemoryClient(tenant_server, timeout=60, api_key=KEY_A) as a,
        MemoryClient(tenant_server, timeout=60, api_key=KEY_B) as b,
    ):
        mine = a.create_session().session_id
        a.update_memory(mine, "Alpha's secret plan.")
        before = a.read_state(mine)
        unknown = "0" * 32
        calls = [
            lambda s: b.read_state(s),
            lambda s: b.fork_session(s),
            lambda s: b.delete_session(s),
            lambda s: b.update_memory(s, "overwrite"),
            lambda s: b.generate_text(s, "hello", max_new_tokens=2),
            lambda s: b.import_state(before.state, session_id=s),
        ]
        for call in calls:
            code, details = status(lambda call=call: call(mine))
            unknown_code, unknown_details = status(lambda call=call: call(unknown))
            # exactly what a session that does not exist gives: nothing is revealed
            assert code == unknown_code == grpc.StatusCode.NOT_FOUND
            assert details.replace(mine, "ID") == unknown_details.replace(unknown, "ID")
        assert mine not in {s.session_id for s in b.list_sessions()}
        after = a.read_state(mine)
        assert after.session.memory_version == before.session.memory_version == 1
        assert after.state.checksum == before.state.checksum
        a.delete_session(mine)


def test_limits_have_their_own_statuses(tenant_server):
    with MemoryClient(tenant_server, timeout=60, api_key=KEY_B) as b:
        sessions = [b.create_session().session_id for _ in range(2)]
        sessions.append(b.fork_session(sessions[0]).session_id)
        code, details = status(b.create_session)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in details
        assert status(lambda: b.fork_session(sessions[0]))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED

        code, details = status(lambda: b.update_memory(sessions[0], list(range(100, 200))))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 64" in details
        code, details = status(lambda: b.generate_text(sessions[0], list(range(100, 200)), max_new_tokens=2))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 64" in details
        code, _ = status(lambda: b.update_memory(sessions[0], "x" * 2_000_000))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert b.read_state(sessions[0]).session.memory_version == 0  # none of it changed anything
        for session in sessions:
            b.delete_session(session)
        b.create_session()  # room again


def test_async_client_sends_its_key(tenant_server):
    import asyncio

    from deltamem.client import AsyncMemoryClient

    async def scenario():
        async with AsyncMemoryClient(tenant_server, timeout=60, api_key=KEY_A) as a:
            session = (await a.create_session()).session_id
            result = await a.generate_text(session, "Hi", max_new_tokens=2)
            listed = [s.session_id async for s in a.list_sessions()]
            await a.delete_session(session)
            return result, listed, session

    result, listed, session = asyncio.run(scenario())
    assert result.memory_version == 1 and session in listed


def test_keys_are_checked_before_the_request_is_read_and_conflicting_keys_are_refused(tenant_server):
    """Undecodable request bytes without a key get UNAUTHENTICATED, not a parse error: the key check runs before
    the request is deserialised (so no unauthenticated caller makes the server parse or tokenise anything); a
    call that presents two different keys is refused even when each is valid."""
    garbage = b"\xff\xff\xff\xff\x0f not a protobuf"
    with grpc.insecure_channel(tenant_server) as channel:
        for method, stream in (("UpdateMemory", False), ("Generate", True), ("ListSessions", False)):
            path = f"/deltamem.v1.MemoryService/{method}"
            rpc = (channel.unary_stream if stream else channel.unary_unary)(path)  # raw bytes both ways
            code, details = status(
                lambda rpc=rpc, stream=stream: list(rpc(garbage, timeout=60)) if stream else rpc(garbage, timeout=60)
            )
            assert code == grpc.StatusCode.UNAUTHENTICATED and "API key" in details, (method, code, details)
        list_sessions = channel.unary_unary("/deltamem.v1.MemoryService/ListSessions")
        both = (("authorization", f"Bearer {KEY_A}"), ("x-api-key", KEY_B))
        code, details = status(lambda: list_sessions(b"", metadata=both, timeout=60))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "more than one API key" in details
        same = (("authorization", f"Bearer {KEY_A}"), ("x-api-key", KEY_A))
        assert list_sessions(b"", metadata=same, timeout=60) is not None


def test_page_tokens_are_scoped_to_their_tenant(tenant_server):
    """A tenant's next_page_token is refused for another tenant (it would otherwise page from a position in the
    shared creation counter) and carries no readable counter."""
    from deltamem.v1 import memory_service_pb2 as pb
    from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

    with MemoryClient(tenant_server, timeout=60, api_key=KEY_A) as a:
        made = [a.create_session().session_id for _ in range(2)]
        try:
            with grpc.insecure_channel(tenant_server) as channel:
                stub = pb_grpc.MemoryServiceStub(channel)
                as_a, as_b = [(("authorization", f"Bearer {key}"),) for key in (KEY_A, KEY_B)]
                first = stub.ListSessions(pb.ListSessionsRequest(page_size=1), metadata=as_a, timeout=60)
                token = first.next_page_token
                assert len(token) == 48 and not token.isdigit()
                second = stub.ListSessions(pb.ListSessionsRequest(page_token=token), metadata=as_a, timeout=60)
                assert [s.session_id for s in (*first.sessions, *second.sessions)] == made
                code, details = status(
                    lambda: stub.ListSessions(pb.ListSessionsRequest(page_token=token), metadata=as_b, timeout=60)
                )
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details
        finally:
            for session in made:
                a.delete_session(session)


def test_page_tokens_stay_valid_across_a_restart(start_server_process, tmp_path):
    """The token key lives in the store, so a restarted server (or another replica) reads the tokens it gave."""
    from deltamem.v1 import memory_service_pb2 as pb
    from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

    data = str(tmp_path / "sessions")
    proc = start_server_process("--data-dir", data)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
            stub = pb_grpc.MemoryServiceStub(channel)
            made = [stub.CreateSession(pb.CreateSessionRequest(), timeout=60).session.session_id for _ in range(2)]
            token = stub.ListSessions(pb.ListSessionsRequest(page_size=1), timeout=60).next_page_token
    finally:
        proc.stop()
    proc = start_server_process("--data-dir", data)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
            stub = pb_grpc.MemoryServiceStub(channel)
            page = stub.ListSessions(pb.ListSessionsRequest(page_token=token), timeout=60)
            assert [s.session_id for s in page.sessions] == made[1:] and not page.next_page_token
    finally:
        proc.stop()
