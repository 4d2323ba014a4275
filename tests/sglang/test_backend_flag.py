"""`--backend`: the flag, its refusal where SGLang cannot run, and the service's answer to sessions that would
need a kept context on a backend that keeps none. Runs under make test (no SGLang needed)."""

from __future__ import annotations

import importlib.util
import subprocess

import grpc
import pytest

from deltamem.client import MemoryClient
from deltamem.service.config import ServerConfig
from deltamem.v1 import memory_service_pb2 as pb


def test_config_accepts_only_known_backends():
    assert ServerConfig().backend == "torch"
    assert ServerConfig(backend="sglang").backend == "sglang"
    with pytest.raises(ValueError, match="backend must be one of"):
        ServerConfig(backend="vllm")


def test_unknown_backend_is_refused_by_the_cli(scripts_dir):
    done = subprocess.run([str(scripts_dir / "deltamem-server"), "--backend", "vllm"], capture_output=True, text=True)
    assert done.returncode == 2 and "--backend='vllm': expected one of torch, sglang" in done.stderr


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="SGLang is installed here")
def test_sglang_backend_without_sglang_exits_with_the_reason(scripts_dir, default_model_dir):
    done = subprocess.run(
        [str(scripts_dir / "deltamem-server"), "--backend", "sglang", "--port", "0", "--ephemeral"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--backend sglang needs SGLang on a GPU machine" in done.stderr


def test_a_backend_that_keeps_no_context_refuses_context_policies(default_model_dir):
    from deltamem.runtime.engine.sequential import SequentialEngine
    from deltamem.runtime.model.backbone import load_model
    from deltamem.service.compose import open_sessions
    from deltamem.service.server import start_server

    engine = SequentialEngine(load_model(default_model_dir))  # keeps no context, as SGLangEngine
    config = ServerConfig(port=0, persist=False)
    running = start_server(engine, open_sessions(engine, config), config)
    try:
        with MemoryClient(f"127.0.0.1:{running.port}", timeout=60) as client:
            stub = client._stub
            with pytest.raises(grpc.RpcError) as refused:
                stub.CreateSession(pb.CreateSessionRequest(context_policy=pb.CONTEXT_POLICY_FULL))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "keeps no context" in refused.value.details()
            assert client.create_session().session_id  # policy none still works
            assert len(list(client.list_sessions())) == 1  # the refused call made nothing
    finally:
        running.stop(0)
        engine.close()
