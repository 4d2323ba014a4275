"""The reachable-memory bound ImportState enforces (runtime/model/state_bound.py): its induction step holds for
every gate, key, value and row the write rule allows; real writes stay inside it; saturating gates fall back to
the length bound; the SGLang engine's copy of the norms is the model's."""

from __future__ import annotations

import math

import torch

from deltamem.runtime.model.state_bound import (
    SATURATED_TOKENS,
    SLACK,
    checkpoint_input_norms,
    model_row_bound,
    reachable_row_norms,
    row_norm_excess,
)


def test_the_induction_step_keeps_every_row_inside_the_bound():
    value = 1.0
    for beta_max in (0.05, 0.5, 2 / 3, 0.8, 0.99, 0.999999):
        bound = value * max(1.0, beta_max / (2 - 2 * beta_max))
        beta = torch.linspace(0, beta_max, 10_001, dtype=torch.float64)
        contraction = torch.maximum((1 - 2 * beta).abs(), 1 - beta)  # |A|
        worst = contraction * bound + beta * value  # the largest |A s + beta v k| over |s| <= bound
        assert worst.max().item() <= bound * (1 + 1e-12), (beta_max, worst.max().item(), bound)
        # and random rows, keys and values inside the limits stay inside too
        generator = torch.Generator().manual_seed(0)
        s = torch.nn.functional.normalize(torch.randn(4096, 8, generator=generator, dtype=torch.float64), dim=1)
        s = s * bound * torch.rand(4096, 1, generator=generator, dtype=torch.float64)
        k = torch.nn.functional.normalize(torch.randn(4096, 8, generator=generator, dtype=torch.float64), dim=1)
        v = (torch.rand(4096, 1, generator=generator, dtype=torch.float64) * 2 - 1) * value
        b = torch.rand(4096, 1, generator=generator, dtype=torch.float64) * beta_max
        after = (1 - b) * s + b * (v - (s * k).sum(1, keepdim=True)) * k
        assert after.norm(dim=1).max().item() <= bound * (1 + 1e-12)


def test_real_writes_stay_inside_the_bound_of_a_tiny_model_with_strong_gates(make_tiny_model):
    model = make_tiny_model(seed=4)
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.beta_bias.fill_(2.0)  # gates near 0.9: the regime where the bound is largest
    norms = [layer.input_layernorm.weight for layer in model.backbone.model.layers]
    bound = reachable_row_norms(list(model.adapters), norms)
    assert torch.equal(bound, model_row_bound(model)) and torch.isfinite(bound).all()
    generator = torch.Generator().manual_seed(1)
    state = model.empty_state(4)
    for _ in range(8):
        ids = torch.randint(3, 97, (4, 64), generator=generator)
        state = model(ids, state, write=True, logits_to_keep=1).state
        assert row_norm_excess(state[0], bound) is None
        assert (state.norm(dim=-1) <= bound).all()
    assert row_norm_excess(state[0] * 0 + bound.max() * 2, bound).startswith("layer 0, state head 0, row 0")


def test_gates_that_can_round_to_one_get_the_length_bound(make_tiny_model):
    model = make_tiny_model(seed=5)
    with torch.no_grad():
        model.adapters[0].beta_bias[3] = 40.0  # float32 sigmoid(40) == 1
    norms = [layer.input_layernorm.weight for layer in model.backbone.model.layers]
    bound = reachable_row_norms(list(model.adapters), norms)
    adapter, g = model.adapters[0], norms[0].double()
    largest_value = math.sqrt(g.numel()) * (adapter.memory_v_proj[3].double() * g).norm().item()
    assert math.isclose(bound[0, 0, 3].item(), largest_value * SATURATED_TOKENS * SLACK, rel_tol=1e-5)
    assert torch.isfinite(bound).all()


def test_the_checkpoint_norms_are_the_models(default_model_dir, default_engine):
    layers = default_engine.model.backbone.model.layers
    read = checkpoint_input_norms(default_model_dir, len(layers))
    assert all(torch.equal(r, layer.input_layernorm.weight.float()) for r, layer in zip(read, layers, strict=True))
