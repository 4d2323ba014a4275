"""Health follows the session store on a real server with a real redis-server: NOT_SERVING while Redis is
frozen or stopped, SERVING again once it answers, and calls meanwhile UNAVAILABLE (issue 17, point 7)."""

from __future__ import annotations

import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def health_becomes(health, wanted, within: float = 30.0) -> float:
    """Seconds until Health.Check says `wanted` (fails the test after `within`); each check must answer."""
    start = time.monotonic()
    while True:
        if health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == wanted:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"health did not become {wanted} within {within} s"
        time.sleep(0.25)


def test_health_is_not_serving_while_redis_is_frozen_or_stopped_and_serving_when_it_returns(
    start_server_process, launch_redis, tmp_path
):
    process, url = launch_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server = start_server_process("--store", url)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health, stub = health_pb2_grpc.HealthStub(channel), pb_grpc.MemoryServiceStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
            session = stub.CreateSession(pb.CreateSessionRequest(), timeout=30).session.session_id
            process.send_signal(signal.SIGSTOP)
            health_becomes(health, NOT_SERVING)
            try:
                stub.ReadState(pb.ReadStateRequest(session_id=session), timeout=30)
                raise AssertionError("a read with Redis frozen succeeded")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            process.send_signal(signal.SIGCONT)
            health_becomes(health, SERVING)
            process.terminate()
            process.wait(10)
            health_becomes(health, NOT_SERVING)
            process, _ = launch_redis(tmp_path, port)
            health_becomes(health, SERVING)
            assert stub.ReadState(pb.ReadStateRequest(session_id=session), timeout=30).session.session_id == session
    finally:
        server.stop()
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)
