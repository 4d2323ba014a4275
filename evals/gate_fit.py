"""A data-driven start for the write gates: per layer, a logistic regression from the frozen backbone's attention
inputs to "this token is part of a stated value".

Why: with the reference init every gate is sigmoid(-1.5) = 0.18 on every token, so the state is a moving average
of the last few tokens and a fact is washed out by the dozen template tokens after it; the answer loss then
learns the answer's prior (any city) long before it learns to store the value. Gates that start open on
values and shut elsewhere give the state one clean fact from the first step. The regression sees only hidden
states, so the fitted gates recognise values they were never shown (measured on held-out values in the fit).
"""

from __future__ import annotations

import random

import torch
from torch.nn import functional as F

from deltamem.runtime.model.memory_model import MemoryModel

OFF_PER_EXAMPLE = 8  # non-value tokens sampled per example (value tokens are all kept)


@torch.no_grad()
def frozen_layer_inputs(model: MemoryModel, ids: list[int]) -> list[torch.Tensor]:
    """Every layer's attention input (after its input RMSNorm) at each of `ids`, [T, d] per layer, from the frozen
    backbone (memory off): what the adapter's projections see, so what their fits are fitted to."""
    captured: list[torch.Tensor] = []
    layers = model.backbone.model.layers
    hooks = [layer.input_layernorm.register_forward_hook(lambda _m, _i, out: captured.append(out)) for layer in layers]
    enabled = model.memory_enabled
    model.memory_enabled = False
    try:
        model(torch.tensor([ids]), model.empty_state(1), write=False, logits_to_keep=1)
    finally:
        model.memory_enabled = enabled
        for hook in hooks:
            hook.remove()
    return [x[0].float() for x in captured]


@torch.no_grad()
def gate_features(model: MemoryModel, examples, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [L, n, d], is_value [n]): every layer's attention input at all value tokens of `examples` and at
    `OFF_PER_EXAMPLE` random other tokens of each, from the frozen backbone (memory off)."""
    rng = random.Random(seed)
    features, labels = [[] for _ in model.adapters], []
    for example in examples:
        on = [i for i, v in enumerate(example.value_mask) if v]
        off = [i for i, v in enumerate(example.value_mask) if not v]
        chosen = on + rng.sample(off, min(OFF_PER_EXAMPLE, len(off)))
        for layer, x in enumerate(frozen_layer_inputs(model, example.history)):
            features[layer].append(x[chosen])
        labels += [True] * len(on) + [False] * (len(chosen) - len(on))
    return torch.stack([torch.cat(f) for f in features]), torch.tensor(labels)


def fit_gates(model: MemoryModel, examples, steps: int = 300, seed: int = 0) -> list[dict]:
    """Set every layer's beta_proj rows and beta_bias to a balanced logistic regression of `examples`' value
    tokens; returns per layer the fit's balanced accuracy on its own data."""
    x, y = gate_features(model, examples, seed)
    weights = torch.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
    report = []
    for layer, adapter in enumerate(model.adapters):
        scale = x[layer].std(0).clamp(min=1e-4)
        w = torch.zeros(x.shape[-1], requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.Adam([w, b], lr=0.05)
        for _ in range(steps):
            optimizer.zero_grad()
            logits = (x[layer] / scale) @ w + b
            loss = (F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none") * weights).sum()
            (loss + 1e-3 * w.square().sum()).backward()
            optimizer.step()
        with torch.no_grad():
            row = (w / scale).to(adapter.beta_proj.dtype)
            adapter.beta_proj.copy_(row.expand_as(adapter.beta_proj))
            adapter.beta_bias.fill_(b.item())
            predicted = ((x[layer] / scale) @ w + b) > 0
            accuracy = 0.5 * (predicted[y].float().mean() + (~predicted[~y]).float().mean())
        report.append({"layer": layer, "balanced_accuracy": round(accuracy.item(), 4)})
    return report
