"""Every RPC through the Python client against the real server and the real default model."""

from __future__ import annotations

import asyncio
import hashlib
import threading

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from deltamem.client import AsyncMemoryClient, WriteMode, state_values, verify_checksum
from deltamem.v1 import memory_service_pb2 as pb

FACT = "Note to self: the spare key is under the blue flowerpot by the back door."
QUESTION = [{"role": "user", "content": "Where is the spare key?"}]


def state_tensor(response: pb.ReadStateResponse) -> torch.Tensor:
    return torch.tensor(state_values(response.state))


def test_health_and_reflection(address):
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "deltamem.v1.MemoryService"):
            assert (
                health.Check(health_pb2.HealthCheckRequest(service=name)).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert {"deltamem.v1.MemoryService", "grpc.health.v1.Health"} <= names


def test_read_state_is_exactly_what_the_engine_computes(client, default_engine):
    session = client.create_session({"test": "read_state"})
    empty = client.read_state(session.session_id)
    assert list(empty.state.shape) == [30, 1, 8, 8] and empty.state.dtype == "float32"
    assert state_tensor(empty).abs().sum() == 0 and empty.session.memory_version == 0

    update = client.update_memory(session.session_id, FACT)
    encoded = default_engine.inputs.encode_text(FACT)
    ids = encoded.ids
    assert (update.tokens_written, update.memory_version) == (len(ids), 1)
    read = client.read_state(session.session_id)
    assert verify_checksum(read.state)
    assert read.state.backbone_fingerprint == default_engine.backbone_fingerprint
    assert read.state.adapter_fingerprint == default_engine.adapter_fingerprint
    assert (read.session.memory_version, read.session.tokens_written) == (1, len(ids))
    expected = default_engine.write(default_engine.empty_state(), encoded)[0]
    torch.testing.assert_close(state_tensor(read), expected, rtol=1e-5, atol=1e-6)
    # the checksum is over the float32 bytes, independently recomputed here from the engine's own state
    assert hashlib.sha256(expected.contiguous().numpy().astype("<f4").tobytes()).hexdigest() == read.state.checksum

    summary = client.read_state(session.session_id, summary_only=True)
    assert all(len(layer.values) == 0 for layer in summary.state.layers)
    assert summary.state.checksum == read.state.checksum
    norms = [layer.frobenius_norm for layer in summary.state.layers]
    torch.testing.assert_close(torch.tensor(norms), torch.linalg.vector_norm(expected.flatten(1), dim=1))


def test_memory_persists_across_generate_and_update(client):
    session = client.create_session().session_id
    client.update_memory(session, FACT)
    stream = client.generate(session, QUESTION, max_new_tokens=16)
    deltas = list(stream)
    result = stream.result
    assert result is not None and result.memory_version == 2
    assert "".join(d.text for d in deltas) == result.text
    assert result.usage.generated_tokens == sum(len(d.token_ids) for d in deltas)
    assert result.usage.written_tokens == result.usage.prompt_tokens + result.usage.generated_tokens
    after = client.read_state(session)
    assert after.session.memory_version == 2
    assert after.session.tokens_written == client.read_state(session).session.tokens_written
    # read-only generation reads the memory but leaves its version and values alone
    ro = client.generate_text(session, QUESTION, max_new_tokens=4, write_mode=WriteMode.NONE)
    assert ro.memory_version == 2 and ro.usage.written_tokens == 0
    assert client.read_state(session).state.checksum == after.state.checksum


def test_fork_is_an_independent_copy(client):
    parent = client.create_session().session_id
    client.update_memory(parent, FACT)
    before = client.read_state(parent)
    fork = client.fork_session(parent, {"branch": "b"})
    assert fork.parent_session_id == parent and fork.parent_memory_version == 1 and fork.metadata["branch"] == "b"
    assert client.read_state(fork.session_id).state.checksum == before.state.checksum
    client.update_memory(fork.session_id, "Actually the key is with the neighbour.")
    assert client.read_state(fork.session_id).state.checksum != before.state.checksum
    unchanged = client.read_state(parent)
    assert unchanged.state.checksum == before.state.checksum and unchanged.session.memory_version == 1


def test_delete_and_list(client):
    a = client.create_session().session_id
    b = client.create_session().session_id
    listed = [s.session_id for s in client.list_sessions(page_size=1)]
    assert listed.index(a) < listed.index(b)
    client.delete_session(a)
    assert a not in {s.session_id for s in client.list_sessions()}
    with pytest.raises(grpc.RpcError) as err:
        client.read_state(a)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and a in err.value.details()


def test_cancelling_a_stream_leaves_memory_at_its_previous_version(client, eventually):
    session = client.create_session().session_id
    client.update_memory(session, FACT)
    before = client.read_state(session)
    stream = client.generate(session, QUESTION, max_new_tokens=400, ignore_end_of_turn=True)
    iterator = iter(stream)
    next(iterator)
    next(iterator)
    stream.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(iterator)
    assert err.value.code() == grpc.StatusCode.CANCELLED

    # once the server has let go of the session, a new mutation is accepted; the memory is as before
    def unlocked():
        try:
            client.generate_text(session, "x", max_new_tokens=1, write_mode=WriteMode.NONE)
            return True
        except grpc.RpcError:
            return False

    after = client.read_state(session)
    assert after.session.memory_version == 1 and after.state.checksum == before.state.checksum
    assert eventually(unlocked)
    assert client.read_state(session).session.memory_version == 1


def test_concurrent_mutation_is_rejected_not_interleaved(client):
    session = client.create_session().session_id
    stream = client.generate(session, QUESTION, max_new_tokens=200, ignore_end_of_turn=True)
    iterator = iter(stream)
    next(iterator)  # the Generate call now holds the session
    with pytest.raises(grpc.RpcError) as err:
        client.update_memory(session, FACT)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "in progress" in err.value.details()
    stream.cancel()


@pytest.mark.parametrize(
    "call,code,message",
    [
        (lambda c, s: c.read_state(""), grpc.StatusCode.INVALID_ARGUMENT, "session_id is required"),
        (lambda c, s: c.read_state("not-an-id"), grpc.StatusCode.INVALID_ARGUMENT, "malformed"),
        (lambda c, s: c.fork_session("f" * 32), grpc.StatusCode.NOT_FOUND, "does not exist"),
        (lambda c, s: c.delete_session("e" * 32), grpc.StatusCode.NOT_FOUND, "does not exist"),
        (lambda c, s: c.update_memory(s, ""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (lambda c, s: c.update_memory(s, [10**7]), grpc.StatusCode.INVALID_ARGUMENT, "outside the vocabulary"),
        (
            lambda c, s: c.update_memory(s, [{"role": "robot", "content": "x"}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "role",
        ),
        (lambda c, s: c.generate_text(s, "hi", temperature=-1), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        (
            lambda c, s: c.generate_text(s, "hi", max_new_tokens=5000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_new_tokens",
        ),
        (lambda c, s: c.generate_text(s, "hi", stop=[""]), grpc.StatusCode.INVALID_ARGUMENT, "stop sequence"),
        (lambda c, s: c.generate_text(s, "hi", top_p=2.0), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (lambda c, s: c.generate_text("a" * 32, "hi"), grpc.StatusCode.NOT_FOUND, "does not exist"),
    ],
    ids=[
        "empty-id",
        "malformed-id",
        "fork-unknown",
        "delete-unknown",
        "empty-text",
        "bad-token",
        "bad-role",
        "temperature",
        "max-new-tokens",
        "empty-stop",
        "top-p",
        "generate-unknown",
    ],
)
def test_bad_requests_get_clear_statuses_and_change_nothing(client, call, code, message):
    session = client.create_session().session_id
    client.update_memory(session, FACT)
    before = client.read_state(session)
    with pytest.raises(grpc.RpcError) as err:
        call(client, session)
    assert err.value.code() == code and message in err.value.details(), err.value.details()
    after = client.read_state(session)
    assert after.session.memory_version == 1 and after.state.checksum == before.state.checksum


def test_raw_requests_missing_fields(address):
    from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        session = stub.CreateSession(pb.CreateSessionRequest()).session.session_id
        with pytest.raises(grpc.RpcError) as err:
            stub.UpdateMemory(pb.UpdateMemoryRequest(session_id=session))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input is required" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.ListSessions(pb.ListSessionsRequest(page_token="garbage"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateSession(pb.CreateSessionRequest(context_policy=7))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "context_policy" in err.value.details()


def test_async_client(address):
    async def scenario():
        async with AsyncMemoryClient(address, timeout=120) as client:
            session = (await client.create_session()).session_id
            await client.update_memory(session, FACT)
            stream = client.generate(session, QUESTION, max_new_tokens=6)
            texts = [delta.text async for delta in stream]
            assert stream.result.memory_version == 2 and "".join(texts) == stream.result.text
            fork = await client.fork_session(session)
            state = await client.read_state(fork.session_id)
            assert state.session.memory_version == 2 and verify_checksum(state.state)
            listed = [s.session_id async for s in client.list_sessions()]
            assert session in listed and fork.session_id in listed
            await client.delete_session(fork.session_id)

    asyncio.run(scenario())


def test_concurrent_sessions_are_served_side_by_side(client):
    sessions = [client.create_session().session_id for _ in range(3)]
    results, errors = {}, []

    def work(session_id):
        try:
            client.update_memory(session_id, FACT)
            results[session_id] = client.generate_text(session_id, QUESTION, max_new_tokens=4)
        except grpc.RpcError as exc:  # collected, then asserted empty
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results[s].memory_version == 2 for s in sessions)
    # identical histories give the same memories whatever the batching (to float rounding: a batch's
    # composition changes the summation order of its matmuls)
    states = [state_tensor(client.read_state(s)) for s in sessions]
    for other in states[1:]:
        torch.testing.assert_close(other, states[0], rtol=1e-5, atol=1e-6)


def test_deadline_stops_generation_and_changes_nothing(client, eventually):
    session = client.create_session().session_id
    client.update_memory(session, FACT)
    before = client.read_state(session)
    stream = client.generate(session, QUESTION, max_new_tokens=400, ignore_end_of_turn=True, timeout=1.0)
    with pytest.raises(grpc.RpcError) as err:
        stream.finish()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def released():
        try:
            client.update_memory(session, "x")
            return True
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            return False

    # the abandoned call commits nothing: the next mutation is version 2, built on the untouched version 1
    assert eventually(released)
    after = client.read_state(session)
    assert after.session.memory_version == 2
    assert after.session.tokens_written == before.session.tokens_written + 1
