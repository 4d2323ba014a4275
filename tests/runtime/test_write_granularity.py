"""Sequence-state (message_mean), multi-state and read-only writes against the reference semantics, and no
silent fallback from one granularity to another."""

from __future__ import annotations

import pytest
import torch

from deltamem.kernels import delta_rule_naive, memory_projection_naive


def capture_attention_inputs(model):
    captured, hooks = {}, []
    for index, layer in enumerate(model.backbone.model.layers):
        hooks.append(
            layer.self_attn.register_forward_pre_hook(
                lambda m, a, kw, index=index: captured.__setitem__(index, kw["hidden_states"]), with_kwargs=True
            )
        )
    return captured, hooks


def message_mean_reference(model, captured, message_ids, state):
    """Per layer: mean of x over each message's tokens, projected, written message by message (naive loop)."""
    finals = []
    for index, adapter in enumerate(model.adapters):
        x = captured[index][0]
        ids = sorted({int(i) for i in message_ids[0].tolist() if i >= 0})
        means = torch.stack([x[message_ids[0] == i].mean(0) for i in ids])[None]
        weight = torch.cat([adapter.memory_q_proj, adapter.memory_k_proj, adapter.memory_v_proj, adapter.beta_proj])
        q, k, v, beta = memory_projection_naive(means, weight, adapter.beta_bias, model.config.num_state_heads, 8)
        finals.append(delta_rule_naive(q, k, v, beta, state[:, index])[1])
    return torch.stack(finals, dim=1)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "smollm3"])
def test_message_mean_writes_each_message_once_and_every_token_reads_the_start_state(make_tiny_model, arch):
    model = make_tiny_model(arch, granularity="message_mean")
    ids = torch.randint(0, 97, (1, 14), generator=torch.Generator().manual_seed(3))
    # a system span (-1), messages 0 and 1, then a generation prompt (-1); message 2 is absent (a gap)
    message_ids = torch.tensor([[-1, -1, 0, 0, 0, 0, 1, 1, 1, 3, 3, 3, -1, -1]])
    state = torch.randn(1, *model.state_shape, generator=torch.Generator().manual_seed(4)) * 0.2
    captured, hooks = capture_attention_inputs(model)
    with torch.no_grad():
        out = model(ids, state, write=True, message_ids=message_ids)
        for hook in hooks:
            hook.remove()
        read_only = model(ids, state, write=False)
    assert torch.equal(out.logits, read_only.logits)  # all tokens read the state as it was at the call's start
    expected = message_mean_reference(model, captured, message_ids, state)
    torch.testing.assert_close(out.state, expected, rtol=1e-5, atol=1e-5)


def test_message_mean_with_nothing_to_write_keeps_the_state(make_tiny_model):
    model = make_tiny_model("llama", granularity="message_mean")
    state = torch.randn(1, *model.state_shape) * 0.1
    with torch.no_grad():
        out = model(torch.tensor([[5, 6, 7]]), state, write=True, message_ids=torch.tensor([[-1, -1, -1]]))
    assert torch.equal(out.state, state)


def test_no_granularity_silently_falls_back(make_tiny_model):
    ssw = make_tiny_model("llama", granularity="message_mean")
    tsw = make_tiny_model("llama")
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="message_ids are required"):
        ssw(ids, ssw.empty_state(), write=True)
    with pytest.raises(ValueError, match="only for message_mean"):
        tsw(ids, tsw.empty_state(), write=True, message_ids=torch.zeros_like(ids))
    with torch.no_grad():  # reading needs no message ids
        assert torch.equal(ssw(ids, ssw.empty_state(), write=False).state, ssw.empty_state())


def test_message_mean_gradients_reach_the_adapter(make_tiny_model):
    model = make_tiny_model("qwen3", granularity="message_mean").train()
    ids = torch.randint(0, 97, (1, 10), generator=torch.Generator().manual_seed(5))
    written = model(ids, model.empty_state(), write=True, message_ids=torch.tensor([[0] * 5 + [1] * 5])).state
    model(ids, written, write=False).logits.square().mean().backward()
    for adapter in model.adapters:
        assert adapter.memory_k_proj.grad.abs().sum() > 0 and adapter.beta_proj.grad.abs().sum() > 0


def test_multi_state_reads_are_four_states_concatenated(make_tiny_model):
    """MSW: N = 4 independent 8x8 states per layer, read width 32, corrections fed all four reads."""
    model = make_tiny_model("llama", num_state_heads=4)
    assert model.state_shape == (2, 4, 8, 8)
    assert model.adapters[0].memory_q_proj.shape == (32, 48) and model.adapters[0].delta_o_proj.shape == (48, 32)
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = model(ids, model.empty_state(), write=True)
        # zeroing one state head's read columns in Wdo changes the output: every head is read
        model.adapters[1].delta_o_proj[:, 24:].zero_()
        changed = model(ids, model.empty_state(), write=True)
    assert out.state[:, :, 3].abs().sum() > 0
    assert not torch.allclose(out.logits, changed.logits)
