"""Context policies through the real server: full keeps the conversation's KV, window(n) its newest n tokens,
and a kept context is never attended to under a memory other than the one it was computed under."""

from __future__ import annotations

import grpc
import pytest
import torch
from transformers import DynamicCache

from deltamem.client import state_values
from deltamem.runtime.engine.requests import GenerationRequest
from deltamem.runtime.sessions.kept_context import SessionContext
from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

TURN1 = [("user", "My name is Ada and I keep bees.")]
TURN2 = [("user", "What do I keep?")]


def create(address, policy, window=0):
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        return stub.CreateSession(pb.CreateSessionRequest(context_policy=policy, window_tokens=window)).session


def chat(client, session, turns, tokens=8):
    stream = client.generate(session, [{"role": r, "content": c} for r, c in turns], max_new_tokens=tokens)
    ids = [t for delta in stream for t in delta.token_ids]
    return stream.result, ids


def state_of(client, session):
    return torch.tensor(state_values(client.read_state(session).state))


def first_turn_context(engine, out1_ids, text1):
    prompt1 = engine.inputs.encode_messages(TURN1, add_generation_prompt=True).ids
    fed = prompt1 + tuple(out1_ids)
    return prompt1, SessionContext(fed, (*TURN1, ("assistant", text1)), len(fed), None, 0)


def test_full_context_equals_one_uncached_pass_over_the_conversation(client, address, default_engine):
    session = create(address, pb.CONTEXT_POLICY_FULL).session_id
    result1, out1 = chat(client, session, TURN1)
    info = client.read_state(session).session
    prompt1, kept = first_turn_context(default_engine, out1, result1.text)
    assert info.context_tokens == len(kept.tokens) and info.context_policy == pb.CONTEXT_POLICY_FULL
    result2, out2 = chat(client, session, TURN2)
    continuation = default_engine.inputs.continuation(kept, TURN2)
    assert result2.usage.prompt_tokens == len(continuation.ids) < len(prompt1)  # only the new turn was fed

    # the oracle: the sequential engine over the whole conversation in one call, from an empty memory
    whole = GenerationRequest(kept.tokens + continuation.ids, max_new_tokens=8)
    expected = list(default_engine.generate(default_engine.empty_state(), whole))[-1]
    assert result2.text == expected.text
    torch.testing.assert_close(state_of(client, session), expected.state, rtol=1e-5, atol=1e-6)
    assert client.read_state(session).session.context_tokens == len(kept.tokens) + len(continuation.ids) + len(out2)


def test_window_keeps_the_newest_tokens_and_matches_full_until_it_slides(client, address):
    full = create(address, pb.CONTEXT_POLICY_FULL).session_id
    wide = create(address, pb.CONTEXT_POLICY_WINDOW, window=4096).session_id
    narrow = create(address, pb.CONTEXT_POLICY_WINDOW, window=24).session_id
    for session in (full, wide, narrow):
        chat(client, session, TURN1)
    results = {session: chat(client, session, TURN2)[0] for session in (full, wide, narrow)}
    assert results[wide].text == results[full].text
    torch.testing.assert_close(state_of(client, wide), state_of(client, full), rtol=1e-5, atol=1e-6)
    assert client.read_state(narrow).session.context_tokens == 24
    assert client.read_state(full).session.context_tokens > 24
    third, _ = chat(client, narrow, [("user", "And my name?")])
    assert third.usage.generated_tokens > 0 and client.read_state(narrow).session.context_tokens == 24


def test_context_is_reencoded_under_a_changed_memory(client, address, default_engine):
    session = create(address, pb.CONTEXT_POLICY_FULL).session_id
    result1, out1 = chat(client, session, TURN1)
    _, kept = first_turn_context(default_engine, out1, result1.text)
    client.update_memory(session, "Ada moved to Lisbon last spring.")
    updated = state_of(client, session)
    result2, _ = chat(client, session, TURN2)

    # the oracle: the kept tokens read (not written) under the updated memory, then the new turn
    engine = default_engine
    cache = DynamicCache()
    engine._prefill(kept.tokens, updated, False, cache)
    continuation = engine.inputs.continuation(kept, TURN2)
    expected = list(engine.generate(updated, GenerationRequest(continuation.ids, max_new_tokens=8), cache))[-1]
    assert result2.text == expected.text
    torch.testing.assert_close(state_of(client, session), expected.state, rtol=1e-5, atol=1e-6)


def test_fork_shares_the_context_and_each_side_continues_alone(client, address):
    parent = create(address, pb.CONTEXT_POLICY_FULL).session_id
    chat(client, parent, TURN1)
    fork = client.fork_session(parent)
    assert fork.context_tokens == client.read_state(parent).session.context_tokens > 0
    on_fork, _ = chat(client, fork.session_id, TURN2)
    on_parent, _ = chat(client, parent, TURN2)
    assert on_fork.text == on_parent.text
    chat(client, fork.session_id, [("user", "Tell me a joke.")])
    assert client.read_state(fork.session_id).session.context_tokens > client.read_state(parent).session.context_tokens


@pytest.mark.parametrize(
    "policy,window,message",
    [(pb.CONTEXT_POLICY_WINDOW, 0, "window_tokens in"), (pb.CONTEXT_POLICY_FULL, 16, "only for the window policy")],
)
def test_bad_window_settings_are_rejected(address, policy, window, message):
    with pytest.raises(grpc.RpcError) as err:
        create(address, policy, window)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()
