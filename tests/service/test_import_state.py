"""ImportState: a memory exported by ReadState loads into another server; anything altered or foreign is
refused with a clear status, and nothing changes."""

from __future__ import annotations

import grpc
import pytest

from deltamem.client import MemoryClient
from deltamem.v1 import memory_service_pb2 as pb


@pytest.fixture(scope="module")
def second_server(start_server_process, tmp_path_factory):
    proc = start_server_process("--data-dir", str(tmp_path_factory.mktemp("second")))
    yield f"127.0.0.1:{proc.port}"
    proc.stop()


def exported(client) -> pb.MemoryState:
    session = client.create_session().session_id
    client.update_memory(session, "The blue notebook is in the second drawer.")
    return client.read_state(session).state


def test_export_then_import_into_another_server(client, second_server):
    state = exported(client)
    with MemoryClient(second_server, timeout=60) as other:
        created = other.import_state(state, metadata={"from": "first"})
        assert created.memory_version == 1 and created.metadata["from"] == "first"
        assert other.read_state(created.session_id).state.checksum == state.checksum
        target = other.create_session().session_id
        other.update_memory(target, "Something else entirely.")
        over = other.import_state(state, session_id=target)
        assert over.memory_version == 2 and other.read_state(target).state.checksum == state.checksum


def altered(state: pb.MemoryState, change) -> pb.MemoryState:
    copy = pb.MemoryState()
    copy.CopyFrom(state)
    change(copy)
    return copy


@pytest.mark.parametrize(
    "change,code,message",
    [
        (lambda s: setattr(s, "adapter_fingerprint", "0123456789abcdef"), "FAILED_PRECONDITION", "adapter"),
        (lambda s: setattr(s, "backbone_fingerprint", "0123456789abcdef"), "FAILED_PRECONDITION", "backbone"),
        (lambda s: s.shape.__setitem__(0, 29), "FAILED_PRECONDITION", "shape"),
        (lambda s: setattr(s, "dtype", "bfloat16"), "INVALID_ARGUMENT", "dtype"),
        (lambda s: s.layers[3].values.__setitem__(5, 1.0), "INVALID_ARGUMENT", "checksum"),
        (lambda s: s.layers[3].ClearField("values"), "INVALID_ARGUMENT", "summary_only"),
        (lambda s: s.ClearField("layers"), "INVALID_ARGUMENT", "layers"),
    ],
    ids=["adapter", "backbone", "shape", "dtype", "tampered", "summary", "empty"],
)
def test_foreign_or_altered_memories_are_refused_and_change_nothing(client, change, code, message):
    state = exported(client)
    target = client.create_session().session_id
    client.update_memory(target, "Keep me.")
    before = client.read_state(target)
    sessions_before = {s.session_id for s in client.list_sessions()}
    with pytest.raises(grpc.RpcError) as err:
        client.import_state(altered(state, change), session_id=target)
    assert err.value.code().name == code and message in err.value.details(), err.value.details()
    with pytest.raises(grpc.RpcError):
        client.import_state(altered(state, change))  # into a new session: none is left behind
    after = client.read_state(target)
    assert (after.session.memory_version, after.state.checksum) == (
        before.session.memory_version,
        before.state.checksum,
    )
    assert {s.session_id for s in client.list_sessions()} == sessions_before


def test_a_write_that_would_make_the_memory_non_finite_commits_nothing(client):
    """An imported memory of finite but extreme values (3e38) overflows on the next write: the call gets
    FAILED_PRECONDITION and the session keeps its version and memory (once, a NaN memory was committed)."""
    import torch

    from deltamem.runtime.sessions.state_codec import state_checksum

    state = exported(client)
    extreme = torch.full(tuple(state.shape), 3e38)
    huge = altered(
        state, lambda s: [layer.values.__setitem__(slice(None), [3e38] * len(layer.values)) for layer in s.layers]
    )
    huge.checksum = state_checksum(extreme)
    session = client.import_state(huge)
    before = client.read_state(session.session_id)
    with pytest.raises(grpc.RpcError) as err:
        client.update_memory(session.session_id, "The red key is under the mat.")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "non-finite" in err.value.details()
    after = client.read_state(session.session_id)
    assert after.session.memory_version == before.session.memory_version
    assert after.state.checksum == before.state.checksum
