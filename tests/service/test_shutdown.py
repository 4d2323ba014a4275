"""Graceful shutdown: on SIGTERM health turns NOT_SERVING, new session changes are refused, a stream in flight
finishes within the grace period, and the server exits cleanly."""

from __future__ import annotations

import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deltamem.client import MemoryClient


def test_sigterm_drains_then_exits(start_server_process, tmp_path):
    proc = start_server_process("--data-dir", str(tmp_path), "--grace", "60", "--drain-notice", "3")
    address = f"127.0.0.1:{proc.port}"
    with MemoryClient(address, timeout=120) as client, grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        session = client.create_session().session_id
        stream = client.generate(session, "Once upon a time", max_new_tokens=40, ignore_end_of_turn=True)
        deltas = iter(stream)
        next(deltas)
        proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "health never turned NOT_SERVING"
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as err:
            client.create_session()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in err.value.details()
        assert client.read_state(session).session.memory_version == 0  # reads are still served during the notice
        rest = list(deltas)  # the stream in flight runs to its end
        assert stream.result is not None and stream.result.usage.generated_tokens == 40 and rest
    assert proc.wait_exit(60) == 0
    assert any("deltamem stopped" in line for line in proc.lines)
