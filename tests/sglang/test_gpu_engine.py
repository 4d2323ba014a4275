"""End to end on a GPU: SGLangEngine (sglang.Engine running our EntryClass) against the PyTorch BatchEngine, on
the default model with a random adapter. Greedy outputs must match token for token and the memories closely.
Runs wherever CUDA and a full SGLang install are present; skipped elsewhere, saying which is missing."""

from __future__ import annotations

import pytest
import torch

from deltamem.runtime.engine.requests import GenerationOutcome, GenerationRequest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def engines(request, sglang_models, tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the SGLang engine runs on GPUs only")
    default_model_dir = request.getfixturevalue("default_model_dir")  # only now: preparing it takes a while
    from deltamem.runtime.engine.batch_engine import BatchEngine
    from deltamem.runtime.model.backbone import load_model
    from deltamem.runtime.model.checkpoint import save_adapter
    from deltamem.runtime.model.memory_model import MemoryModel
    from deltamem.runtime.sglang_backend.engine import SGLangEngine

    adapter_dir = tmp_path_factory.mktemp("adapter")
    reference = load_model(default_model_dir, device="cuda")
    model: MemoryModel = reference.model
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for adapter in model.adapters:
            for name in (
                "memory_q_proj",
                "memory_k_proj",
                "memory_v_proj",
                "beta_proj",
                "delta_q_proj",
                "delta_o_proj",
            ):
                param = getattr(adapter, name)
                param.copy_((torch.randn(param.shape, generator=generator) * 0.05).to(param.device))
    save_adapter(adapter_dir, model.config, list(model.adapters))
    torch_engine = BatchEngine(load_model(default_model_dir, adapter_dir, device="cuda"), max_batch=4)
    sglang_engine = SGLangEngine(
        default_model_dir,
        adapter_dir,
        max_batch=4,
        dtype="float32",
        attention_backend="triton",
        mem_fraction_static=0.3,
    )
    yield torch_engine, sglang_engine
    sglang_engine.close()
    torch_engine.close()


def _run(engine, state, request):
    events = list(engine.generate(state, request))
    outcome = events[-1]
    assert isinstance(outcome, GenerationOutcome)
    return [t for e in events[:-1] for t in e.token_ids], outcome


def test_fingerprints_and_shapes_agree(engines):
    torch_engine, sglang_engine = engines
    assert sglang_engine.backbone_fingerprint == torch_engine.backbone_fingerprint
    assert sglang_engine.adapter_fingerprint == torch_engine.adapter_fingerprint
    assert sglang_engine.empty_state().shape == torch_engine.empty_state().shape


@pytest.mark.parametrize("write_input,write_output", [(True, True), (True, False), (False, False)])
def test_greedy_generation_and_memory_match(engines, write_input, write_output):
    torch_engine, sglang_engine = engines
    messages = [("user", "My cat is called Pixel. What is my cat called?")]
    prompt = torch_engine.inputs.encode_messages(messages, add_generation_prompt=True)
    state, _ = torch_engine.write(torch_engine.empty_state(), torch_engine.inputs.encode_text("I live in Lisbon."))
    request = GenerationRequest(
        prompt_ids=prompt.ids, max_new_tokens=24, write_input=write_input, write_output=write_output
    )
    tokens_t, outcome_t = _run(torch_engine, state.cpu(), request)
    tokens_s, outcome_s = _run(sglang_engine, state.cpu(), request)
    assert tokens_s == tokens_t
    assert (outcome_s.finish_reason, outcome_s.written_tokens) == (outcome_t.finish_reason, outcome_t.written_tokens)
    torch.testing.assert_close(outcome_s.state.cpu(), outcome_t.state.cpu(), atol=1e-3, rtol=1e-3)


def test_write_matches(engines):
    torch_engine, sglang_engine = engines
    encoded = torch_engine.inputs.encode_text("The meeting moved to Thursday at 3 pm, room 12. " * 20)
    state_t, n_t = torch_engine.write(torch_engine.empty_state(), encoded)
    state_s, n_s = sglang_engine.write(sglang_engine.empty_state(), encoded)
    assert n_s == n_t
    torch.testing.assert_close(state_s.cpu(), state_t.cpu(), atol=1e-3, rtol=1e-3)
    assert sglang_engine.slots_in_use == 0
