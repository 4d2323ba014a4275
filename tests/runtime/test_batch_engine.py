"""The continuous-batching engine against its sequential twin, on the real default model."""

from __future__ import annotations

import threading

import pytest
import torch

from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.engine.requests import GenerationOutcome, GenerationRequest
from deltamem.runtime.engine.sampling import SamplingParams
from deltamem.runtime.engine.sequential import SequentialEngine

QUESTIONS = [
    "What is the capital of France?",
    "Name a colour.",
    "Write a haiku about the sea, please, in English.",
    "2+2=?",
    "Who wrote Hamlet?",
]


@pytest.fixture(scope="module")
def engines(default_model_dir):
    from deltamem.runtime.model.backbone import load_model

    loaded = load_model(default_model_dir)
    batched = BatchEngine(loaded, prefill_chunk=16, max_batch=3)
    yield SequentialEngine(loaded), batched
    batched.close()


def requests_for(engine: SequentialEngine) -> list[GenerationRequest]:
    modes = [(True, True), (True, False), (False, False), (True, True), (True, True)]
    return [
        GenerationRequest(
            engine.inputs.encode_messages([("user", q)], add_generation_prompt=True).ids,
            sampling=SamplingParams(temperature=0.8, seed=i) if i == 3 else SamplingParams(),
            max_new_tokens=6 + 2 * i,
            write_input=modes[i][0],
            write_output=modes[i][1],
            stop=("Paris",) if i == 0 else (),
        )
        for i, q in enumerate(QUESTIONS)
    ]


def run_concurrently(engine, state, requests):
    results = [None] * len(requests)

    def run(index):
        results[index] = list(engine.generate(state, requests[index]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_generations_match_the_sequential_engine(engines):
    sequential, batched = engines
    start, _ = sequential.write(
        sequential.empty_state(), sequential.inputs.encode_text("Earlier, we talked about maps.")
    )
    requests = requests_for(sequential)
    expected = [list(sequential.generate(start, r)) for r in requests]
    steps_before = batched.steps
    got = run_concurrently(batched, start, requests)  # 5 requests, 3 slots: two wait their turn
    assert batched.max_batch_seen >= 2, "requests were never batched together"
    for want, have in zip(expected, got, strict=True):
        assert isinstance(have[-1], GenerationOutcome)
        assert [e.text for e in have[:-1]] == [e.text for e in want[:-1]]
        assert [e.token_ids for e in have[:-1]] == [e.token_ids for e in want[:-1]]
        for field in ("finish_reason", "prompt_tokens", "generated_tokens", "written_tokens", "text"):
            assert getattr(have[-1], field) == getattr(want[-1], field), field
        torch.testing.assert_close(have[-1].state, want[-1].state, rtol=1e-5, atol=1e-6)
    assert batched.steps > steps_before


def test_writes_are_chunked_across_steps_and_equal_one_pass(engines):
    sequential, batched = engines
    text = " ".join(f"Fact {i}: the key for door {i} is under stone {i}." for i in range(6))
    encoded = sequential.inputs.encode_text(text)
    assert len(encoded.ids) > 3 * batched.prefill_chunk
    want, written = sequential.write(sequential.empty_state(), encoded)
    have, have_written = batched.write(sequential.empty_state(), encoded)
    assert written == have_written == len(encoded.ids)
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)


def test_abandoned_generation_frees_its_slot(engines):
    sequential, batched = engines
    request = GenerationRequest(
        sequential.inputs.encode_text("Tell me a long story.").ids, max_new_tokens=200, ignore_end_of_turn=True
    )
    for _ in range(batched.max_batch + 2):  # more abandoned requests than slots: each must give its slot back
        events = batched.generate(sequential.empty_state(), request)
        next(events)
        events.close()
    short = GenerationRequest(request.prompt_ids, max_new_tokens=2, ignore_end_of_turn=True)
    outcome = list(batched.generate(sequential.empty_state(), short))[-1]
    assert isinstance(outcome, GenerationOutcome) and outcome.generated_tokens == 2


def test_closing_the_engine_fails_waiting_requests_instead_of_hanging(default_model_dir):
    from deltamem.runtime.model.backbone import load_model

    engine = BatchEngine(load_model(default_model_dir), max_batch=1)
    request = GenerationRequest(
        engine.inputs.encode_text("Count to a thousand.").ids, max_new_tokens=500, ignore_end_of_turn=True
    )
    first = engine.generate(engine.empty_state(), request)
    next(first)  # running, holding the only slot
    results = []

    def waiting():
        try:
            list(engine.generate(engine.empty_state(), request))
        except RuntimeError as exc:
            results.append(str(exc))

    thread = threading.Thread(target=waiting)
    thread.start()
    engine.close()
    thread.join(30)
    assert results and "engine stopped" in results[0]
    with pytest.raises(RuntimeError, match="engine stopped"):
        list(first)


def test_a_write_no_longer_wanted_stops_within_a_chunk_and_frees_its_slot(engines, eventually):
    """Once a 32k-token UpdateMemory ran on for minutes after its deadline. Now the waiting write checks its
    caller: it raises CallCancelled, its slot is freed, and the engine serves the next call."""
    import time

    from deltamem.runtime.errors import CallCancelled

    sequential, batched = engines
    encoded = sequential.inputs.encode_text("The tide comes in and the tide goes out. " * 400)  # ~4k tokens
    started = time.monotonic()
    wanted_until = started + 0.5
    steps_before = batched.steps
    with pytest.raises(CallCancelled, match="nothing was written"):
        batched.write(sequential.empty_state(), encoded, lambda: time.monotonic() < wanted_until)
    stopped = time.monotonic()
    fed = batched.steps - steps_before
    assert fed * batched.prefill_chunk < len(encoded.ids) / 2, "the write ran on after it was cancelled"
    short = GenerationRequest(sequential.inputs.encode_text("Hi").ids, max_new_tokens=2, ignore_end_of_turn=True)
    assert list(batched.generate(sequential.empty_state(), short))[-1].generated_tokens == 2
    assert eventually(lambda: batched.slots_in_use == 0, 5), (stopped - started, batched.slots_in_use)


def test_a_long_write_yields_its_steps_to_others_and_still_equals_one_pass(engines, monkeypatch):
    """While another request runs, a long write's chunks shrink to the step budget (chunk_pacer.py); the written
    memory is still the one of a single pass, and the short request's tokens match the sequential twin."""
    from deltamem.runtime.engine import chunk_pacer

    sequential, batched = engines
    monkeypatch.setattr(chunk_pacer, "STEP_BUDGET_S", 1e-6)  # any step is over budget: the smallest chunks
    text = " ".join(f"Fact {i}: the key for door {i} is under stone {i}." for i in range(12))
    encoded = sequential.inputs.encode_text(text)
    want_state, _ = sequential.write(sequential.empty_state(), encoded)
    request = requests_for(sequential)[2]
    want_events = list(sequential.generate(sequential.empty_state(), request))
    sizes, forward = [], batched.runner.forward

    def recording(jobs, chunks, writes, messages):
        sizes.append([len(c) for c in chunks])
        return forward(jobs, chunks, writes, messages)

    monkeypatch.setattr(batched.runner, "forward", recording)
    results = {}
    writer = threading.Thread(target=lambda: results.update(write=batched.write(sequential.empty_state(), encoded)))
    writer.start()
    results["generate"] = list(batched.generate(sequential.empty_state(), request))
    writer.join()
    torch.testing.assert_close(results["write"][0], want_state, rtol=1e-5, atol=1e-6)
    assert [e.token_ids for e in results["generate"][:-1]] == [e.token_ids for e in want_events[:-1]]
    assert [chunk_pacer.MIN_CHUNK] in sizes, "the long write never yielded: its chunks stayed full while contended"
    batched.pacer.contended_chunk = batched.pacer.max_chunk
