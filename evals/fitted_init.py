"""A fitted start for the adapter (`--adapter-init fitted`): the memory can carry unseen values from step 0.

Why: from the reference init (or the transpose "copy" init) the answer loss learns the answer's prior — any city
— and the memory never starts to matter (docs/results.md: no own-vs-other gap after 150 steps). Here every
piece is fitted to the frozen backbone's hidden states instead, so the state holds the value itself:
- write gates: per layer a logistic regression "this token is part of a stated value" (evals/gate_fit.py),
  rescaled so that value tokens open to about GATE_OPEN and other tokens stay below GATE_SHUT (the decay is
  1 - gate, so shut gates keep the fact; an open gate > 0.5 would flip the sign of what the row held);
- keys and queries, as an induction head in memory: a value token's key is a code of the token BEFORE it (the
  first value token's: a reserved START code), a query is the code of the current token on value tokens and
  START elsewhere. So the question's last token reads the value's first token, and each value token, once
  said, reads the next one. (One shared key for every token let each value token overwrite the one before: the
  first token, the one asked for, was the weakest in the state; docs/results.md has both figures.) Codes are
  a fixed random projection of the token's output-embedding direction, in the r - 1 dimensions beside START;
- values and output heads: per layer a rank-(N·r) reduced-rank regression from the layer's attention input at a
  token to that token's output-embedding direction (final-norm weight × tied embedding row), each layer taking
  the directions the layers after it did not explain; the output head adds that direction, so a read raises
  the logits of the tokens the memory holds. It is fitted on all tokens of the training text, so it is a map
  of token identity, not a list of values.
Only the last layers (from FIRST_LAYER_FRACTION of the depth) get values: early-layer inputs carry the current
token, which the layers above would turn into a prediction of the token after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from deltamem.evals.gate_fit import fit_gates, frozen_layer_inputs, gate_features
from deltamem.runtime.model.memory_model import MemoryModel

GATE_OPEN = 0.3  # median gate on value tokens after rescaling
GATE_SHUT = 0.002  # 95th percentile of the gates on other tokens
FIRST_LAYER_FRACTION = 2 / 3  # layers from here on (SmolLM2-135M: 20 of 30) carry values
OUTPUT_GAIN = 16.0  # output head scale: own-memory value CE below other-memory CE at init (docs/results.md)
CODE_SCALE = 2.0  # tanh argument of a key or query code's unit entries: saturated enough to keep its direction
VALUE_WEIGHT = (10.0, 5.0)  # weight of value tokens against others in the key and query fits (they are rare)
KEY_RIDGE = 0.01  # per fitted token
RIDGE = 1e-2
CODE_SEED = 0


@dataclass
class TokenFeatures:
    """The frozen backbone's view of every history token of the fit examples."""

    inputs: list[torch.Tensor]  # per layer the attention inputs [n, d]
    ids: torch.Tensor  # [n] the token
    previous: torch.Tensor  # [n] the token before it (itself at the start of a history)
    is_value: torch.Tensor  # [n] part of a stated value
    starts_value: torch.Tensor  # [n] the first token of a stated value


@torch.no_grad()
def token_features(model: MemoryModel, examples) -> TokenFeatures:
    inputs: list[list[torch.Tensor]] = [[] for _ in model.adapters]
    ids, previous, is_value, starts = [], [], [], []
    for example in examples:
        for layer, x in enumerate(frozen_layer_inputs(model, example.history)):
            inputs[layer].append(x)
        tokens, mask = torch.tensor(example.history), torch.tensor(example.value_mask)
        ids.append(tokens)
        previous.append(torch.cat([tokens[:1], tokens[:-1]]))
        is_value.append(mask)
        starts.append(mask & ~torch.cat([torch.tensor([False]), mask[:-1]]))
    return TokenFeatures([torch.cat(x) for x in inputs], *(torch.cat(t) for t in (ids, previous, is_value, starts)))


def output_directions(model: MemoryModel) -> torch.Tensor:
    """[vocab, d]: each token's output-embedding direction as the last hidden state sees it."""
    backbone = model.backbone
    return (backbone.get_output_embeddings().weight * backbone.model.norm.weight).float()


def token_codes(directions: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [vocab, r], START [r]): unit codes of every token in dimensions 1.. (a fixed random projection of
    its normalised output direction) and the START code, dimension 0, orthogonal to them all."""
    generator = torch.Generator().manual_seed(CODE_SEED)
    basis = torch.linalg.qr(torch.randn(directions.shape[1], rank - 1, generator=generator))[0]
    codes = F.normalize(F.normalize(directions, dim=1) @ basis, dim=1)
    start = torch.zeros(rank)
    start[0] = 1.0
    return torch.cat([torch.zeros(len(codes), 1), codes], 1), start


def weighted_ridge(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, ridge: float) -> torch.Tensor:
    """[d, k]: argmin_W sum_i weights_i |x_i W - y_i|^2 + ridge |W|^2."""
    xw = x * weights[:, None]
    return torch.linalg.solve(x.T @ xw + ridge * torch.eye(x.shape[1]), xw.T @ y)


@torch.no_grad()
def fit_keys(model: MemoryModel, features: TokenFeatures) -> None:
    """Keys and queries as the module docstring says, the same in every state head."""
    codes, start = token_codes(output_directions(model), model.config.rank)
    keys = codes[features.previous]
    keys[features.starts_value] = start
    queries = torch.where(features.is_value[:, None], codes[features.ids], start)
    key_weight, query_weight = (torch.where(features.is_value, w, 1.0) for w in VALUE_WEIGHT)
    heads = model.config.num_state_heads
    ridge = KEY_RIDGE * len(features.ids)
    for adapter, x in zip(model.adapters, features.inputs, strict=True):
        for projection, target, weight in (
            (adapter.memory_k_proj, keys, key_weight),
            (adapter.memory_q_proj, queries, query_weight),
        ):
            projection.copy_(weighted_ridge(x, target * CODE_SCALE, weight, ridge).T.repeat(heads, 1))


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
def fit_values(model: MemoryModel, features: TokenFeatures, gain: float) -> float:
    """Set values and output heads as the module docstring says; returns the share of the targets' variance the
    chosen layers explain together."""
    width = model.config.read_width
    first = round(len(model.adapters) * FIRST_LAYER_FRACTION)
    targets = output_directions(model)[features.ids]
    left = targets.clone()
    for layer in range(len(model.adapters) - 1, -1, -1):
        adapter = model.adapters[layer]
        adapter.delta_q_proj.zero_()
        adapter.delta_o_proj.zero_()
        adapter.memory_v_proj.zero_()
        if layer < first:
            continue
        x = features.inputs[layer]
        weights = torch.linalg.solve(x.T @ x + RIDGE * torch.eye(x.shape[1]), x.T @ left)  # [d, d]
        fitted = x @ weights
        directions = torch.linalg.svd(fitted, full_matrices=False).Vh[:width].T
        adapter.memory_v_proj.copy_((weights @ directions).T)
        adapter.delta_o_proj.copy_(directions * gain)
        left -= fitted @ directions @ directions.T
    return 1 - (left.square().sum() / targets.square().sum()).item()


def fitted_init(model: MemoryModel, examples, gain: float = OUTPUT_GAIN) -> dict:
    """Fit gates, keys, values and output heads of `model`'s adapter to `examples` (training Examples with value
    masks); returns what the fit measured."""
    gates = fit_gates(model, examples)
    x, is_value = gate_features(model, examples)
    rescale_gates(model, x, is_value, GATE_OPEN, GATE_SHUT)
    features = token_features(model, examples)
    fit_keys(model, features)
    explained = fit_values(model, features, gain)
    accuracy = [g["balanced_accuracy"] for g in gates]
    return {"gate_balanced_accuracy_min": min(accuracy), "value_variance_explained": round(explained, 4)}
