"""Every acknowledged write survives SIGKILL of the server; a server with another adapter refuses the store."""

from __future__ import annotations

import grpc
import pytest
import torch

from deltamem.client import MemoryClient
from deltamem.runtime.model.checkpoint import WEIGHTS_FILE, save_adapter


def test_acknowledged_writes_survive_sigkill(start_server_process, tmp_path):
    data = str(tmp_path / "sessions")
    proc = start_server_process("--data-dir", data)
    acknowledged = {}
    try:
        with MemoryClient(f"127.0.0.1:{proc.port}", timeout=120) as client:
            sessions = [client.create_session({"n": str(i)}).session_id for i in range(3)]
            for i, session in enumerate(sessions):
                for j in range(i + 1):
                    client.update_memory(session, f"Note {j} for session {i}: the code is {1000 * i + j}.")
            client.generate_text(sessions[0], [{"role": "user", "content": "What is the code?"}], max_new_tokens=4)
            fork = client.fork_session(sessions[1]).session_id
            client.update_memory(fork, "The fork knows something else.")
            client.delete_session(sessions[2])
            for session in [*sessions[:2], fork]:
                read = client.read_state(session)
                acknowledged[session] = (read.session.memory_version, read.state.checksum, read.session.tokens_written)
    finally:
        proc.process.kill()  # SIGKILL: no chance to flush anything
        proc.process.wait(30)

    again = start_server_process("--data-dir", data)
    try:
        with MemoryClient(f"127.0.0.1:{again.port}", timeout=120) as client:
            for session, (version, checksum, written) in acknowledged.items():
                read = client.read_state(session)
                assert (read.session.memory_version, read.state.checksum, read.session.tokens_written) == (
                    version,
                    checksum,
                    written,
                )
            with pytest.raises(grpc.RpcError) as err:
                client.read_state(sessions[2])
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert {s.session_id for s in client.list_sessions()} == set(acknowledged)
    finally:
        again.stop()


def test_a_server_with_another_adapter_refuses_the_store(start_server_process, default_engine, tmp_path):
    data = str(tmp_path / "sessions")
    first = start_server_process("--data-dir", data)
    with MemoryClient(f"127.0.0.1:{first.port}", timeout=60) as client:
        client.create_session()
    first.stop()

    adapter_dir = tmp_path / "adapter"
    save_adapter(adapter_dir, default_engine.model.config, list(default_engine.model.adapters))
    tensors = torch.load(adapter_dir / WEIGHTS_FILE, weights_only=True)
    tensors["model.layers.0.self_attn.beta_bias"] += 1.0
    torch.save(tensors, adapter_dir / WEIGHTS_FILE)
    with pytest.raises(RuntimeError, match=r"(?s)server did not start.*written with another adapter"):
        start_server_process("--data-dir", data, "--adapter", str(adapter_dir))
