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


def test_a_write_whose_deadline_passes_while_redis_is_frozen_is_never_committed(
    start_server_process, launch_redis, tmp_path
):
    """Once, calls that returned DEADLINE_EXCEEDED while Redis was frozen were committed when it resumed (a
    retrying client then wrote the fact twice). Here Redis is frozen while each Generate is streaming, after its
    session was read, so its commit waits on Redis past the call's deadline; Redis resumes before the store's
    own timeout, runs the put script, and the script, seeing the deadline has passed, writes nothing."""
    import threading

    process, url = launch_redis(tmp_path)
    server = start_server_process("--store", url)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.MemoryServiceStub(channel)
            sessions = [stub.CreateSession(pb.CreateSessionRequest(), timeout=30).session.session_id for _ in range(3)]
            streaming, codes = threading.Barrier(len(sessions) + 1), []

            def generate(session):
                request = pb.GenerateRequest(
                    session_id=session, input=pb.Input(text="Count to ten."), max_new_tokens=12, ignore_end_of_turn=True
                )
                stream = stub.Generate(request, timeout=4)  # ends ~2 s in: its commit then waits on redis
                try:
                    next(stream)  # the session is read and the generation running
                    streaming.wait(10)
                    list(stream)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as err:
                    codes.append(err.code())
                    streaming.abort()  # failed before streaming: the test fails below, saying how

            threads = [threading.Thread(target=generate, args=(s,)) for s in sessions]
            for thread in threads:
                thread.start()
            try:
                streaming.wait(30)
            except threading.BrokenBarrierError:
                raise AssertionError(f"a generation failed before it streamed: {codes}") from None
            process.send_signal(signal.SIGSTOP)
            time.sleep(4.5)  # past every deadline, within the store's 5 s timeout: the puts are waiting
            process.send_signal(signal.SIGCONT)
            for thread in threads:
                thread.join(30)
            health_becomes(health_pb2_grpc.HealthStub(channel), SERVING)
            assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 3, codes
            for session in sessions:
                read = stub.ReadState(pb.ReadStateRequest(session_id=session, summary_only=True), timeout=30)
                assert read.session.memory_version == 0, "a write was committed after its call had failed"
    finally:
        server.stop()
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)
