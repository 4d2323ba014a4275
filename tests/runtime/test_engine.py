"""The embedded engine on the real default model: chunk independence, generation and memory consistency."""

from __future__ import annotations

import pytest
import torch

from deltamem.runtime.engine.detokenizer import IncrementalDetokenizer
from deltamem.runtime.engine.requests import EncodedInput, GenerationOutcome, GenerationRequest, TokenEvent
from deltamem.runtime.engine.sampling import SamplingParams
from deltamem.runtime.errors import InvalidRequest

TEXT = (
    "Maria moved to Lisbon in March. She adopted a grey cat called Pixel, and she works as a marine biologist "
    "at the aquarium. Her brother Tomas visits every second weekend."
)


def write_ids(engine, state, ids):
    """Write token ids (one message for message_mean adapters); return the new state."""
    return engine.write(state, EncodedInput(tuple(ids), (0,) * len(ids)))[0]


def run(engine, state, request):
    events = list(engine.generate(state, request))
    assert isinstance(events[-1], GenerationOutcome)
    assert all(isinstance(e, TokenEvent) for e in events[:-1])
    return events[:-1], events[-1]


@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_writing_in_chunks_yields_the_same_state_as_one_call(default_engine, chunk):
    ids = default_engine.inputs.encode_text(TEXT).ids
    whole = write_ids(default_engine, default_engine.empty_state(), ids)
    default_engine.prefill_chunk, saved = chunk, default_engine.prefill_chunk
    try:
        chunked = write_ids(default_engine, default_engine.empty_state(), ids)
    finally:
        default_engine.prefill_chunk = saved
    assert whole.abs().max() > 0
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_generation_writes_exactly_the_prompt_and_the_generated_tokens(default_engine):
    engine = default_engine
    prompt = list(engine.inputs.encode_messages([("user", "Name three colours.")], add_generation_prompt=True).ids)
    events, outcome = run(engine, engine.empty_state(), GenerationRequest(tuple(prompt), max_new_tokens=12))
    generated = [t for e in events for t in e.token_ids]
    assert len(generated) == outcome.generated_tokens and 0 < outcome.generated_tokens <= 12
    assert outcome.written_tokens == len(prompt) + len(generated)
    assert "".join(e.text for e in events) == outcome.text
    # the memory after generating equals writing prompt + output in one pass
    expected = write_ids(engine, engine.empty_state(), prompt + generated)
    torch.testing.assert_close(outcome.state, expected, rtol=1e-5, atol=1e-5)


def test_write_modes(default_engine):
    engine = default_engine
    prompt = engine.inputs.encode_text(TEXT).ids
    start = engine.write(engine.empty_state(), engine.inputs.encode_text("Earlier notes."))[0]
    _, none = run(engine, start, GenerationRequest(prompt, max_new_tokens=3, write_input=False, write_output=False))
    assert none.written_tokens == 0 and torch.equal(none.state, start)
    _, input_only = run(engine, start, GenerationRequest(prompt, max_new_tokens=3, write_output=False))
    assert input_only.written_tokens == len(prompt)
    torch.testing.assert_close(input_only.state, write_ids(engine, start, prompt), rtol=1e-5, atol=1e-5)


def test_greedy_generation_is_deterministic_and_seeded_sampling_reproducible(default_engine):
    engine = default_engine
    prompt = engine.inputs.encode_messages([("user", "Tell me a fact about the sea.")], add_generation_prompt=True).ids
    first = run(engine, engine.empty_state(), GenerationRequest(prompt, max_new_tokens=8))[1]
    second = run(engine, engine.empty_state(), GenerationRequest(prompt, max_new_tokens=8))[1]
    assert first.text == second.text and torch.equal(first.state, second.state)
    sampled = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=7)
    a = run(engine, engine.empty_state(), GenerationRequest(prompt, sampling=sampled, max_new_tokens=8))[1]
    b = run(engine, engine.empty_state(), GenerationRequest(prompt, sampling=sampled, max_new_tokens=8))[1]
    assert a.text == b.text


def test_stop_sequence_and_length_finish(default_engine):
    engine = default_engine
    prompt = engine.inputs.encode_messages(
        [("user", "Count from 1 to 20 separated by commas.")], add_generation_prompt=True
    ).ids
    _, free = run(engine, engine.empty_state(), GenerationRequest(prompt, max_new_tokens=30))
    assert "5" in free.text, free.text
    stop = free.text[free.text.index("5") :][:2]
    events, stopped = run(engine, engine.empty_state(), GenerationRequest(prompt, max_new_tokens=30, stop=(stop,)))
    assert stopped.finish_reason == "stop_sequence"
    assert stopped.text == free.text[: free.text.index(stop)]
    assert "".join(e.text for e in events) == stopped.text
    _, short = run(engine, engine.empty_state(), GenerationRequest(prompt, max_new_tokens=2, ignore_end_of_turn=True))
    assert short.finish_reason == "length" and short.generated_tokens == 2


def test_detokenizer_holds_back_partial_stop_sequences(default_engine):
    tokenizer = default_engine.tokenizer
    ids = tokenizer.encode("alpha beta gamma delta", add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer, stop=("gamma",))
    pieces = [detok.add(i) for i in ids if not detok.stopped]
    assert detok.stopped and "".join(pieces) == "alpha beta " == detok.text


def test_bad_requests_are_rejected_with_reasons(default_engine):
    with pytest.raises(InvalidRequest, match="empty"):
        GenerationRequest(())
    with pytest.raises(InvalidRequest, match="max_new_tokens"):
        GenerationRequest((1,), max_new_tokens=0)
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        default_engine.inputs.encode_token_ids([1, 10**6])
    with pytest.raises(InvalidRequest, match="role"):
        default_engine.inputs.encode_messages([("robot", "hi")], add_generation_prompt=True)
    with pytest.raises(InvalidRequest, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(InvalidRequest, match="top_p"):
        SamplingParams(top_p=1.5)
