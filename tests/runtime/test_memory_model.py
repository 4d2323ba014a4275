"""δ-mem on a frozen backbone: exactness with an empty state, hook placement, loop vs vectorised, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import deltamem.kernels.inference as inference_module
from deltamem.kernels import delta_rule_naive
from deltamem.runtime.model.adapter import TRAINABLE_PARAMETER_NAMES

ARCHS = ["llama", "qwen3", "smollm3"]


def tokens(n: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randint(0, 97, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_empty_state_reproduces_frozen_backbone_exactly(make_tiny_model, arch):
    model = make_tiny_model(arch)
    ids = tokens(23)
    with torch.no_grad():
        frozen = model.backbone(input_ids=ids).logits  # hooks are inert outside MemoryModel.forward
        read_only = model(ids, model.empty_state(), write=False).logits
        writing = model(ids, model.empty_state(), write=True).logits
    assert torch.equal(read_only, frozen)
    # with writes on, the first token still reads an empty state; later tokens read what came before them
    assert torch.equal(writing[:, 0], frozen[:, 0])
    assert (writing[:, 1:] - frozen[:, 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_corrections_are_added_to_q_proj_and_o_proj_with_the_read_before_the_write(make_tiny_model, arch):
    """Capture the attention input and the q/o projection outputs, then recompute the corrections from the
    equations with the per-token reference: Δq = 2 Wdq m, Δo = 2 Wdo m, m = S_prev q_m."""
    model = make_tiny_model(arch)
    attn, adapter = model.backbone.model.layers[1].self_attn, model.adapters[1]
    captured = {}
    hooks = [
        attn.register_forward_pre_hook(
            lambda m, a, kw: captured.__setitem__("x", kw["hidden_states"]), with_kwargs=True
        ),
        attn.q_proj.register_forward_hook(lambda m, a, out: captured.__setitem__("q", out)),
        attn.o_proj.register_forward_hook(lambda m, a, out: captured.__setitem__("o", (a[0], out))),
    ]
    state = torch.randn(1, *model.state_shape, generator=torch.Generator().manual_seed(3)) * 0.2
    with torch.no_grad():
        model(tokens(9), state, write=True)
        for hook in hooks:
            hook.remove()
        x, q_out, (o_in, o_out) = captured["x"], captured["q"], captured["o"]
        qm, km, vm, beta = adapter.project(x)
        reads, _ = delta_rule_naive(qm, km, vm, beta, state[:, 1])
        reads = reads.flatten(-2)
        torch.testing.assert_close(q_out, F.linear(x, attn.q_proj.weight) + 2.0 * reads @ adapter.delta_q_proj.T)
        torch.testing.assert_close(o_out, F.linear(o_in, attn.o_proj.weight) + 2.0 * reads @ adapter.delta_o_proj.T)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_state_heads", [1, 4])
@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_token_by_token_loop_matches_one_vectorised_pass(make_tiny_model, use_kernels, arch, num_state_heads, kernels):
    """Decode steps (the fused step kernel) against one pass (the chunked scan), on either kernel backend."""
    use_kernels(kernels)
    model = make_tiny_model(arch, num_state_heads=num_state_heads)
    from transformers import DynamicCache

    ids = tokens(31, seed=1)
    state0 = torch.randn(1, *model.state_shape, generator=torch.Generator().manual_seed(2)) * 0.1
    with torch.no_grad():
        full = model(ids, state0, write=True)
        cache, state, step_logits = DynamicCache(), state0, []
        for t in range(ids.shape[1]):
            out = model(ids[:, t : t + 1], state, write=True, past_key_values=cache, use_cache=True)
            state = out.state
            step_logits.append(out.logits)
    torch.testing.assert_close(torch.cat(step_logits, dim=1), full.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state, full.state, rtol=1e-4, atol=5e-5)


def test_vectorised_scan_matches_per_token_scan_inside_the_model(make_tiny_model, use_kernels, monkeypatch):
    """An inference pass's scan on the PyTorch path (the chunked scan) against the per-token reference in its place."""
    use_kernels("torch")
    model = make_tiny_model("qwen3")
    ids = tokens(40, seed=5, batch=2)
    with torch.no_grad():
        fast = model(ids, model.empty_state(2), write=True)
        monkeypatch.setattr(inference_module, "delta_rule", delta_rule_naive)
        slow = model(ids, model.empty_state(2), write=True)
    torch.testing.assert_close(fast.logits, slow.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.state, slow.state, rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_adapter_through_the_state(make_tiny_model):
    """The reference training step: a write pass keeps the graph through S; a read-only pass with loss on the
    target. memory_k_proj, memory_v_proj and the gate act only through the written state."""
    model = make_tiny_model("llama")
    model.train()
    history, target = tokens(25, seed=8), tokens(12, seed=9)
    written = model(history, model.empty_state(), write=True).state
    logits = model(target, written, write=False).logits
    loss = F.cross_entropy(logits[0, :-1], target[0, 1:])
    loss.backward()
    for adapter in model.adapters:
        for name in TRAINABLE_PARAMETER_NAMES:
            grad = getattr(adapter, name).grad
            assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.backbone.parameters())


def test_state_shape_is_checked(make_tiny_model):
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match="state has shape"):
        model(tokens(3), torch.zeros(1, 5, 1, 8, 8))


def test_memory_can_be_switched_off_to_give_the_frozen_backbone(make_tiny_model):
    model = make_tiny_model("llama")
    ids = tokens(9)
    state = torch.randn(1, *model.state_shape) * 0.3
    with torch.no_grad():
        frozen = model.backbone(input_ids=ids).logits
        model.memory_enabled = False
        off = model(ids, state, write=True)
        model.memory_enabled = True
        on = model(ids, state, write=True)
    assert torch.equal(off.logits, frozen) and torch.equal(off.state, state)
    assert not torch.equal(on.logits, frozen)
