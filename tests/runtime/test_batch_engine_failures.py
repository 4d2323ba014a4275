"""Two ways the batching engine once failed its callers (issue 16), each pinned by a test that failed then."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.engine.kv import SequenceKV
from deltamem.runtime.engine.scheduler import Scheduler


@pytest.fixture(scope="module")
def engine(default_model_dir):
    from deltamem.runtime.model.backbone import load_model

    engine = BatchEngine(load_model(default_model_dir), max_batch=2)
    yield engine
    engine.close()


def test_reencoding_returns_kv_even_when_the_loop_finishes_the_job_first(engine, monkeypatch):
    """The submitting thread is held until the loop has run the job to its end: a job must be whole when it is
    submitted (the flag saying "return the KV" was once set after submission, and the loop returned a state)."""
    original = Scheduler.submit

    def submit_then_wait(self, job):
        original(self, job)
        deadline = time.monotonic() + 60
        while job.events.empty() and time.monotonic() < deadline:
            time.sleep(0.01)

    monkeypatch.setattr(Scheduler, "submit", submit_then_wait)
    tokens = engine.inputs.encode_text("The door code is 4711.").ids
    kv = engine.encode_context(engine.empty_state(), tokens, 0)
    assert isinstance(kv, SequenceKV) and kv.length == len(tokens)


def call_with_timeout(fn, timeout: float = 60) -> dict:
    """fn() on a thread; {'value': ...} or {'error': ...}, failing the test if it does not return in time."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call hung"
    return result


def test_a_failed_admission_fails_its_call_and_the_engine_goes_on(engine):
    """A state that does not fit the pool fails at admission, on the loop thread: its caller gets the error (it
    once waited forever, the job being off the queue and not yet running) and later calls still run."""
    encoded = engine.inputs.encode_text("Hello there.")
    shape = engine.empty_state().shape
    misshapen = torch.zeros(shape[0] + 1, *shape[1:])
    failed = call_with_timeout(lambda: engine.write(misshapen, encoded))
    assert "shape" in str(failed.get("error"))
    assert engine.slots_in_use == 0
    ok = call_with_timeout(lambda: engine.write(engine.empty_state(), encoded))
    state, written = ok["value"]
    assert written == len(encoded.ids) and state.shape == shape
