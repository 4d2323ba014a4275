"""Property test of the gRPC inputs: whatever a client sends, the server answers with a deliberate status (never
INTERNAL or UNKNOWN) and keeps serving. Derandomised, so a run is reproducible."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

ids = st.one_of(st.text(max_size=40), st.just(""), st.just("0" * 32), st.from_regex(r"[0-9a-f]{32}", fullmatch=True))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, 0.5, 1.0, -1.0]))
roles = st.one_of(st.sampled_from(["user", "assistant", "system"]), st.text(max_size=10))
messages = st.lists(st.builds(pb.ChatMessage, role=roles, content=st.text(max_size=60)), max_size=3)
token_ids = st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=20)
inputs = st.one_of(
    st.builds(pb.Input),
    st.builds(lambda t: pb.Input(text=t), st.text(max_size=80)),
    st.builds(lambda m: pb.Input(messages=pb.ChatMessages(messages=m)), messages),
    st.builds(lambda t: pb.Input(token_ids=pb.TokenIds(ids=t)), token_ids),
)
enums = st.integers(min_value=-3, max_value=9)
metadata = st.dictionaries(st.text(max_size=300), st.text(max_size=300), max_size=3)


def call(stub_method, request):
    try:
        response = stub_method(request, timeout=60)
        if hasattr(response, "__iter__") and not hasattr(response, "ListFields"):
            list(response)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


def real_session(stub) -> str:
    return stub.CreateSession(pb.CreateSessionRequest()).session.session_id


@FUZZ
@given(
    session=st.one_of(ids, st.just("REAL")),
    input_=inputs,
    temperature=floats,
    top_p=floats,
    top_k=st.integers(min_value=0, max_value=2**32 - 1),
    max_new_tokens=st.sampled_from([1, 2, 3, 4097, 2**32 - 1]),
    stop=st.lists(st.text(max_size=300), max_size=10),
    write_mode=enums,
)
def test_generate_inputs(address, session, input_, temperature, top_p, top_k, max_new_tokens, stop, write_mode):
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        request = pb.GenerateRequest(
            session_id=real_session(stub) if session == "REAL" else session,
            input=input_,
            sampling=pb.SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k),
            max_new_tokens=max_new_tokens,
            stop=stop,
            write_mode=write_mode,
        )
        assert call(stub.Generate, request) in ALLOWED


@FUZZ
@given(session=st.one_of(ids, st.just("REAL")), input_=inputs)
def test_update_memory_inputs(address, session, input_):
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        session_id = real_session(stub) if session == "REAL" else session
        assert call(stub.UpdateMemory, pb.UpdateMemoryRequest(session_id=session_id, input=input_)) in ALLOWED


@FUZZ
@given(
    policy=enums,
    window=st.integers(min_value=0, max_value=2**32 - 1),
    meta=metadata,
    session=ids,
    page_size=st.integers(min_value=0, max_value=2**32 - 1),
    token=st.one_of(st.text(max_size=30), st.sampled_from(["²", "①", "٣", "9" * 4301, "9" * 20, "1\n"])),
    summary=st.booleans(),
    shape=st.lists(st.integers(min_value=0, max_value=64), max_size=5),
    values=st.lists(st.floats(width=32), max_size=70),
    checksum=st.text(max_size=64),
)
def test_session_rpcs_inputs(
    address, policy, window, meta, session, page_size, token, summary, shape, values, checksum
):
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        state = pb.MemoryState(shape=shape, dtype="float32", layers=[pb.LayerState(values=values)], checksum=checksum)
        codes = [
            call(
                stub.CreateSession, pb.CreateSessionRequest(context_policy=policy, window_tokens=window, metadata=meta)
            ),
            call(stub.ReadState, pb.ReadStateRequest(session_id=session, summary_only=summary)),
            call(stub.ForkSession, pb.ForkSessionRequest(session_id=session, metadata=meta)),
            call(stub.DeleteSession, pb.DeleteSessionRequest(session_id=session)),
            call(stub.ListSessions, pb.ListSessionsRequest(page_size=page_size, page_token=token)),
            call(stub.ImportState, pb.ImportStateRequest(session_id=session, state=state, metadata=meta)),
        ]
        assert set(codes) <= ALLOWED, codes


def test_digit_lookalike_page_tokens_and_ids_with_a_newline_are_invalid_arguments(address):
    """Once INTERNAL (str.isdigit accepts "²"; int() refuses 4,301 digits) or NOT_FOUND ("$" matches before a
    trailing newline): each is now INVALID_ARGUMENT with a message."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        for token in ("²", "①", "٣", "9" * 4301, "9" * 19, "12\n", " 12", "1"):  # "1": the old plain counter
            with pytest.raises(grpc.RpcError) as err:
                stub.ListSessions(pb.ListSessionsRequest(page_token=token), timeout=60)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, token
            assert "page_token" in err.value.details()
        session = real_session(stub)
        real_session(stub)
        first = stub.ListSessions(pb.ListSessionsRequest(page_size=1), timeout=60)
        assert first.next_page_token and not first.next_page_token.isdigit()
        assert stub.ListSessions(pb.ListSessionsRequest(page_token=first.next_page_token), timeout=60).sessions
        with pytest.raises(grpc.RpcError) as err:
            stub.ReadState(pb.ReadStateRequest(session_id=session + "\n"), timeout=60)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed" in err.value.details()


@pytest.mark.parametrize(
    "method,stream",
    [("UpdateMemory", False), ("Generate", True), ("DeleteSession", False), ("ReadState", False)],
)
def test_undecodable_request_bytes_are_invalid_arguments(address, method, stream):
    """Truncated messages and invalid UTF-8 in a string field were INTERNAL (gRPC's deserialiser raised)."""
    truncated = pb.ReadStateRequest(session_id="0" * 32).SerializeToString()[:-3]
    bad_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (a string in every request here) holding invalid UTF-8
    with grpc.insecure_channel(address) as channel:
        path = f"/deltamem.v1.MemoryService/{method}"
        rpc = (channel.unary_stream if stream else channel.unary_unary)(path)  # raw bytes both ways
        for raw in (truncated, bad_utf8, b"\xff" * 7):
            with pytest.raises(grpc.RpcError) as err:
                result = rpc(raw, timeout=60)
                if stream:
                    list(result)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, raw, err.value.details())
            assert "could not be decoded" in err.value.details()
        health = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert health(b"", timeout=60)  # still serving


METHODS = [(method.name, method.server_streaming) for method in pb.DESCRIPTOR.services_by_name["MemoryService"].methods]


@FUZZ
@given(method=st.sampled_from(METHODS), raw=st.binary(max_size=200))
def test_any_request_bytes_get_a_deliberate_status(address, method, raw):
    """Raw bytes to every MemoryService method: whatever decodes is served or refused on its merits, whatever
    does not is INVALID_ARGUMENT; never INTERNAL or UNKNOWN."""
    name, stream = method
    with grpc.insecure_channel(address) as channel:
        rpc = (channel.unary_stream if stream else channel.unary_unary)(f"/deltamem.v1.MemoryService/{name}")
        try:
            result = rpc(raw, timeout=60)
            if stream:
                list(result)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        assert code in ALLOWED, (name, raw, code)
