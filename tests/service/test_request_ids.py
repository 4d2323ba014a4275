"""Client request ids make Generate and UpdateMemory retries idempotent on a real server, across a restart
(issue 17, point 6): a retry returns the first call's answer and writes nothing twice."""

from __future__ import annotations

import grpc
import pytest

from deltamem.runtime.sessions.records import RECEIPTS_KEPT, with_receipt
from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc


def update(stub, session: str, text: str, request_id: str = "") -> pb.UpdateMemoryResponse:
    request = pb.UpdateMemoryRequest(session_id=session, input=pb.Input(text=text), request_id=request_id)
    return stub.UpdateMemory(request, timeout=120)


def generate(stub, session: str, request_id: str) -> tuple[list[pb.GenerateResponse], pb.GenerateResult]:
    request = pb.GenerateRequest(
        session_id=session,
        input=pb.Input(text="Name a colour."),
        sampling=pb.SamplingParams(temperature=1.0),  # unseeded: a second run would most likely differ
        max_new_tokens=6,
        ignore_end_of_turn=True,
        request_id=request_id,
    )
    events = list(stub.Generate(request, timeout=120))
    return [e.delta for e in events if e.HasField("delta")], events[-1].result


def version(stub, session: str) -> int:
    return stub.ReadState(pb.ReadStateRequest(session_id=session, summary_only=True), timeout=60).session.memory_version


def test_retries_with_a_request_id_return_the_first_answer_and_write_nothing_twice_even_after_a_restart(
    start_server_process, tmp_path
):
    data = str(tmp_path / "sessions")
    proc = start_server_process("--data-dir", data)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
            stub = pb_grpc.MemoryServiceStub(channel)
            session = stub.CreateSession(pb.CreateSessionRequest(), timeout=60).session.session_id
            first = update(stub, session, "The spare key is in the blue pot.", "write-1")
            assert update(stub, session, "The spare key is in the blue pot.", "write-1") == first
            assert version(stub, session) == first.memory_version == 1
            deltas, result = generate(stub, session, "gen-1")
            text = "".join(d.text for d in deltas)
            ids = [i for d in deltas for i in d.token_ids]
            again_deltas, again = generate(stub, session, "gen-1")
            assert again == result and "".join(d.text for d in again_deltas) == text == result.text
            assert [i for d in again_deltas for i in d.token_ids] == ids
            assert version(stub, session) == result.memory_version == 2
            with pytest.raises(grpc.RpcError) as err:
                update(stub, session, "Something else entirely.", "write-1")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "different request" in err.value.details()
            for bad in ("has space", "x" * 129, "naïve"):
                with pytest.raises(grpc.RpcError) as err:
                    update(stub, session, "text", bad)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in err.value.details()
            fork = stub.ForkSession(pb.ForkSessionRequest(session_id=session), timeout=60).session.session_id
            assert update(stub, fork, "The spare key is in the blue pot.", "write-1").memory_version == 3  # new there
    finally:
        proc.stop()
    proc = start_server_process("--data-dir", data)  # the receipts are in the store with the memory
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
            stub = pb_grpc.MemoryServiceStub(channel)
            assert update(stub, session, "The spare key is in the blue pot.", "write-1") == first
            assert generate(stub, session, "gen-1")[1] == result
            assert version(stub, session) == 2
            assert update(stub, session, "A new fact.", "write-2").memory_version == 3
    finally:
        proc.stop()


def test_a_session_keeps_its_newest_receipts():
    receipts: dict[str, str] = {}
    for n in range(RECEIPTS_KEPT + 5):
        receipts = with_receipt(receipts, f"id-{n}", str(n))
    assert list(receipts) == [f"id-{n}" for n in range(5, RECEIPTS_KEPT + 5)]
    assert list(with_receipt(receipts, "id-5", "again"))[-1] == "id-5"
