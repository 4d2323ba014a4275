"""A fitted start for the adapter (`--adapter-init fitted`): the memory can carry unseen values from step 0.

Why: from the reference init (or the transpose "copy" init) the answer loss learns the answer's prior — any city
— and the memory never starts to matter (docs/results.md: no own-vs-other gap after 150 steps). Here every
piece is fitted to the frozen backbone's hidden states instead, so the state holds the value itself:
- write gates: per layer a logistic regression "this token is part of a stated value" (evals/gate_fit.py),
  rescaled so that value tokens open to about GATE_OPEN and other tokens stay below GATE_SHUT (the decay is
  1 - gate, so shut gates keep the fact; an open gate > 0.5 would flip the sign of what the row held);
- values and output heads: per layer a rank-r reduced-rank regression from the layer's attention input at a
  token to that token's output-embedding direction (final-norm weight × tied embedding row), each layer taking
  the directions the layers after it did not explain; the output head adds that direction, so a read raises
  the logits of the tokens the memory holds. It is fitted on all tokens of the training text, so it is a map
  of token identity, not a list of values;
- keys and queries: one shared direction (the layer's mean input, saturated), so every read sees what was
  written; training then learns when to read.
Only the last layers (from FIRST_LAYER_FRACTION of the depth) get values: early-layer inputs carry the current
token, which the layers above would turn into a prediction of the token after it.
"""

from __future__ import annotations

import math

import torch

from deltamem.evals.gate_fit import fit_gates, frozen_layer_inputs, gate_features
from deltamem.runtime.model.memory_model import MemoryModel

GATE_OPEN = 0.3  # median gate on value tokens after rescaling
GATE_SHUT = 0.002  # 95th percentile of the gates on other tokens
FIRST_LAYER_FRACTION = 2 / 3  # layers from here on (SmolLM2-135M: 20 of 30) carry values
OUTPUT_GAIN = 16.0  # output head scale: own-memory value CE below other-memory CE at init (docs/results.md)
KEY_SATURATION = 3.0  # tanh argument of the shared key, so the key is the same for every token
RIDGE = 1e-2


@torch.no_grad()
def token_features(model: MemoryModel, examples) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(per layer the attention inputs [n, d] at every history token of `examples`, the targets [n, d]: each
    token's output-embedding direction), from the frozen backbone."""
    backbone = model.backbone
    directions = backbone.get_output_embeddings().weight * backbone.model.norm.weight
    inputs: list[list[torch.Tensor]] = [[] for _ in model.adapters]
    for example in examples:
        for layer, x in enumerate(frozen_layer_inputs(model, example.history)):
            inputs[layer].append(x)
    targets = torch.cat([directions[torch.tensor(example.history)].float() for example in examples])
    return [torch.cat(x) for x in inputs], targets


@torch.no_grad()
def rescale_gates(model: MemoryModel, x: torch.Tensor, is_value: torch.Tensor, open_: float, shut: float) -> None:
    """Affine-rescale each layer's fitted gate logits so the median value token opens to `open_` and the 95th
    percentile of the other tokens to `shut`."""
    low, high = math.log(shut / (1 - shut)), math.log(open_ / (1 - open_))
    for layer, adapter in enumerate(model.adapters):
        logits = x[layer] @ adapter.beta_proj[0] + adapter.beta_bias[0]
        on, off = logits[is_value].median(), torch.quantile(logits[~is_value], 0.95)
        slope = (high - low) / (on - off).clamp(min=1e-3)
        adapter.beta_proj.mul_(slope)
        adapter.beta_bias.copy_(adapter.beta_bias * slope + (low - slope * off))


@torch.no_grad()
def fit_values(model: MemoryModel, inputs: list[torch.Tensor], targets: torch.Tensor, gain: float) -> float:
    """Set values, output heads and keys as the module docstring says; returns the share of the targets'
    variance the chosen layers explain together."""
    rank = model.config.rank
    first = round(len(model.adapters) * FIRST_LAYER_FRACTION)
    left = targets.clone()
    for layer in range(len(model.adapters) - 1, -1, -1):
        adapter = model.adapters[layer]
        adapter.delta_q_proj.zero_()
        adapter.delta_o_proj.zero_()
        adapter.memory_v_proj.zero_()
        x = inputs[layer]
        mean = x.mean(0)
        adapter.memory_k_proj.copy_((mean / mean.square().sum() * KEY_SATURATION).expand_as(adapter.memory_k_proj))
        adapter.memory_q_proj.copy_(adapter.memory_k_proj)
        if layer < first:
            continue
        weights = torch.linalg.solve(x.T @ x + RIDGE * torch.eye(x.shape[1]), x.T @ left)  # [d, d]
        fitted = x @ weights
        directions = torch.linalg.svd(fitted, full_matrices=False).Vh[: rank * model.config.num_state_heads].T
        adapter.memory_v_proj.copy_((weights @ directions).T)
        adapter.delta_o_proj.copy_(directions * gain)
        left -= fitted @ directions @ directions.T
    return 1 - (left.square().sum() / targets.square().sum()).item()


def fitted_init(model: MemoryModel, examples, gain: float = OUTPUT_GAIN) -> dict:
    """Fit gates, values, keys and output heads of `model`'s adapter to `examples` (training Examples with value
    masks); returns what the fit measured."""
    gates = fit_gates(model, examples)
    x, is_value = gate_features(model, examples)
    rescale_gates(model, x, is_value, GATE_OPEN, GATE_SHUT)
    explained = fit_values(model, *token_features(model, examples), gain)
    accuracy = [g["balanced_accuracy"] for g in gates]
    return {"gate_balanced_accuracy_min": min(accuracy), "value_variance_explained": round(explained, 4)}
