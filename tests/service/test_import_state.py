"""ImportState: a memory exported by ReadState loads into another server; anything altered or foreign is
refused with a clear status, and nothing changes."""

from __future__ import annotations

import grpc
import pytest
import torch

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


def with_values(state: pb.MemoryState, values: torch.Tensor) -> pb.MemoryState:
    """`state` carrying `values` (its shape) and their checksum."""
    from deltamem.runtime.sessions.state_codec import state_checksum

    def change(copy):
        for layer, rows in zip(copy.layers, values, strict=True):
            layer.values[:] = rows.flatten().tolist()
        copy.checksum = state_checksum(values)

    return altered(state, change)


def test_extreme_imports_are_refused_and_one_at_the_bound_survives_writes_and_sampling(client, default_engine):
    """Once an import of finite but extreme values (3e38) was accepted and the next write committed NaN. Now a
    memory no write could produce is INVALID_ARGUMENT and creates nothing; one just inside the bound
    (runtime/model/state_bound.py) is accepted, and writing and sampling on it stay finite."""
    from deltamem.runtime.model.state_bound import SLACK, model_row_bound

    state = exported(client)
    shape = tuple(state.shape)
    sessions_before = {s.session_id for s in client.list_sessions()}
    for extreme in (torch.full(shape, 3e38), torch.full(shape, 1e6)):
        with pytest.raises(grpc.RpcError) as err:
            client.import_state(with_values(state, extreme))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot have come from this adapter's writes" in err.value.details()
    assert {s.session_id for s in client.list_sessions()} == sessions_before
    assert state.adapter_fingerprint == default_engine.adapter_fingerprint  # the server's adapter: its bound
    bound = model_row_bound(default_engine.model)
    rows = torch.nn.functional.normalize(torch.randn(shape, generator=torch.Generator().manual_seed(0)), dim=-1)
    edge = rows * (bound / SLACK * 0.999)[..., None]  # every row just inside its bound
    session = client.import_state(with_values(state, edge)).session_id
    written = client.update_memory(session, "The red key is under the mat.")
    result = client.generate_text(session, "Where is the red key?", max_new_tokens=4, temperature=1.0, seed=1)
    after = client.read_state(session)
    values = torch.tensor([v for layer in after.state.layers for v in layer.values])
    assert written.memory_version == 2 and result.memory_version == 3
    assert torch.isfinite(values).all() and (values.view(shape).norm(dim=-1) <= bound).all()
