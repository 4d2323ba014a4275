"""A request's own bad values fail only that request (issue 17): sampling is safe for every accepted parameter, and
a poisonous request batched next to healthy ones of another session leaves them exactly as they run alone."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.engine.requests import GenerationOutcome, GenerationRequest
from deltamem.runtime.engine.sampling import SamplingParams, make_generator, sample_next
from deltamem.runtime.errors import NonFiniteOutput


@pytest.mark.parametrize("temperature", [1e-38, 1e-30, 1e-8, 5e-324])
def test_tiny_temperatures_sample_the_most_likely_token(temperature):
    logits = torch.tensor([1.0, 30.0, -5.0, 29.9])
    for top_p, top_k in ((1.0, 0), (0.9, 0), (1.0, 3)):
        params = SamplingParams(temperature=float(temperature), top_p=top_p, top_k=top_k, seed=0)
        assert sample_next(logits, params, make_generator(params)) == 1


def test_nan_logits_are_never_chosen_and_all_nan_raises():
    logits = torch.tensor([float("nan"), 0.0, float("nan"), 1.0, float("inf")])
    greedy, hot = SamplingParams(), SamplingParams(temperature=10.0, seed=1)
    assert sample_next(logits, greedy, None) == 3
    assert {sample_next(logits, hot, make_generator(hot)) for _ in range(50)} <= {1, 3}
    for params in (greedy, hot):
        with pytest.raises(NonFiniteOutput):
            sample_next(torch.full((5,), float("nan")), params, make_generator(params))


def unshifted(logits, params, generator) -> int:
    """The sampler before the shift (its twin for ordinary temperatures): divide, mask, softmax, nucleus, draw."""
    logits = logits.float() / params.temperature
    kth = torch.topk(logits, params.top_k).values[-1]
    probs = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)
    ordered, order = torch.sort(probs, descending=True)
    ordered = ordered.masked_fill(ordered.cumsum(0) - ordered >= params.top_p, 0.0)
    return int(torch.multinomial(torch.zeros_like(probs).scatter(0, order, ordered), 1, generator=generator))


def test_ordinary_sampling_is_unchanged_by_the_shift():
    """Shifting logits by their maximum leaves the distribution as it was: same seed, same tokens."""
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3
    params = SamplingParams(temperature=0.7, top_p=0.95, top_k=50, seed=5)
    ours, twin = make_generator(params), make_generator(params)
    drawn = [sample_next(logits, params, ours) for _ in range(50)]
    assert drawn == [unshifted(logits, params, twin) for _ in range(50)]
    assert len(set(drawn)) > 3  # it really samples


@pytest.fixture(scope="module")
def engine(default_model_dir):
    from deltamem.runtime.model.backbone import load_model

    engine = BatchEngine(load_model(default_model_dir), max_batch=4)
    yield engine
    engine.close()


def run(engine, state, request) -> dict:
    try:
        events = list(engine.generate(state, request))
        return {"outcome": events[-1], "ids": [t for e in events[:-1] for t in e.token_ids]}
    except Exception as exc:  # noqa: BLE001 - handed to the test
        return {"error": exc}


def test_poisonous_requests_fail_alone_and_healthy_ones_finish_as_they_run_alone(engine):
    """A NaN memory with temperature > 0 fails its own call with NonFiniteOutput; a temperature of 1e-38 is served;
    a healthy greedy request of another session, batched in the same steps, gets exactly its solo tokens."""
    prompt = engine.inputs.encode_messages([("user", "Name three colours.")], add_generation_prompt=True).ids
    healthy = GenerationRequest(prompt, max_new_tokens=12, ignore_end_of_turn=True)
    alone = run(engine, engine.empty_state(), healthy)
    nan_state = torch.full_like(engine.empty_state(), float("nan"))
    poisoned = GenerationRequest(prompt, max_new_tokens=12, sampling=SamplingParams(temperature=1.0, seed=0))
    cold = GenerationRequest(prompt, max_new_tokens=12, sampling=SamplingParams(temperature=1e-38, seed=0))
    jobs = {
        "healthy": (engine.empty_state(), healthy),
        "nan": (nan_state, poisoned),
        "cold": (engine.empty_state(), cold),
        "healthy_2": (engine.empty_state(), healthy),
    }
    results: dict[str, dict] = {}
    barrier = threading.Barrier(len(jobs))

    def go(name, state, request):
        barrier.wait()
        results[name] = run(engine, state, request)

    threads = [threading.Thread(target=go, args=(name, *job)) for name, job in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert isinstance(results["nan"].get("error"), NonFiniteOutput), results["nan"]
    for name in ("healthy", "healthy_2"):
        assert isinstance(results[name]["outcome"], GenerationOutcome)
        assert results[name]["ids"] == alone["ids"], name
    assert results["cold"]["ids"][:4] == alone["ids"][:4]  # 1e-38 is greedy in all but name
    deadline = time.monotonic() + 10  # slots are freed when the loop retires the step's finished jobs
    while engine.slots_in_use and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.slots_in_use == 0
