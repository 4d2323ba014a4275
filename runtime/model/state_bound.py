"""The largest memory the write rule can produce, per layer, state head and row: what ImportState accepts.

Derivation (each row s of a layer's state, one token's write, |k| = 1, beta in (0, 1), lambda = 1 - beta):
    s' = (1 - beta) s + beta (v - s.k) k = A s + beta v k,   A = (1 - beta) I - beta k k^T.
A's eigenvalues are 1 - 2 beta (along k) and 1 - beta, so |A| = max(|1 - 2 beta|, 1 - beta) < 1. If |s| <= B
then |s'| <= |A| B + beta |v| <= B whenever B >= |v| (beta <= 2/3) and B >= beta |v| / (2 - 2 beta) (beta >
2/3). From the empty state, by induction, every reachable row has norm at most
    B = V * max(1, beta_max / (2 - 2 beta_max)),
with V and beta_max the largest |v| and gate the row can see. The layer input x is RMSNorm output,
x = g * h / rms(h) with |h / rms(h)| <= sqrt(d), so |v_i| <= sqrt(d) |W_v[i] * g| and beta_i <=
sigmoid(sqrt(d) |W_b[i] * g| + b_i). Averaged message writes (SSW) stay inside the same bound.
Where float32 rounds beta_max to 1, beta = 1 exactly makes |A| = 1 along k, and a row can grow by up to V with
every token (same key, values of alternating sign). Only the length bound |s_T| <= T V holds there (|A| <= 1
for every beta); an import does not know how many tokens its exporter wrote, so those rows are held to
SATURATED_TOKENS tokens' worth, far more than any session is written, and far below what overflows float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SLACK = 1.001  # float32 rounding in the scan: reachable rows may exceed the exact bound by a hair
SATURATED_TOKENS = 2**24  # the length bound's T for rows whose gate can round to 1


@torch.no_grad()
def reachable_row_norms(layers: Sequence, norm_weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """[layers, state heads, r]: the bound B above for each row (SATURATED_TOKENS * V where the gate can be
    exactly 1), times SLACK.
    `layers`: the DeltaMemLayers; `norm_weights`: each layer's input RMSNorm weight g."""
    bounds = []
    for layer, norm in zip(layers, norm_weights, strict=True):
        heads, rank = layer.state_dims
        scale = math.sqrt(norm.numel())
        g = norm.detach().double()
        values = scale * (layer.memory_v_proj.detach().double() * g).norm(dim=1)
        logits = scale * (layer.beta_proj.detach().double() * g).norm(dim=1) + layer.beta_bias.detach().double()
        saturated = torch.sigmoid(logits.float()) >= 1.0  # float32 gates can be exactly 1 here
        beta = torch.sigmoid(logits)
        bound = values * torch.maximum(torch.ones_like(beta), beta / (2 - 2 * beta))
        bounds.append(torch.where(saturated, values * SATURATED_TOKENS, bound).mul(SLACK).view(heads, rank))
    return torch.stack(bounds).float()


def row_norm_excess(state: torch.Tensor, bound: torch.Tensor) -> str | None:
    """None if every row of `state` [L, N, r, r] is within `bound` [L, N, r]; else where the first one is not."""
    norms = state.double().norm(dim=-1)
    over = (norms > bound.double()).nonzero()
    if not len(over):
        return None
    layer, head, row = over[0].tolist()
    return (
        f"layer {layer}, state head {head}, row {row} has norm {norms[layer, head, row].item():.4g}, above "
        f"{bound[layer, head, row].item():.4g}, the most this adapter's write rule can produce"
    )


def model_row_bound(model) -> torch.Tensor:
    """reachable_row_norms of a MemoryModel (its adapter and its backbone's input norms)."""
    norms = [layer.input_layernorm.weight for layer in model.backbone.model.layers]
    return reachable_row_norms(list(model.adapters), norms)


def checkpoint_input_norms(model_dir, num_layers: int) -> list[torch.Tensor]:
    """Each layer's input RMSNorm weight read from a Hugging Face checkpoint's safetensors (for engines that do
    not hold the backbone in PyTorch)."""
    from pathlib import Path

    from safetensors import safe_open

    wanted = {f"model.layers.{i}.input_layernorm.weight": i for i in range(num_layers)}
    found: dict[int, torch.Tensor] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as tensors:
            for name in tensors.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                if name in wanted:
                    found[wanted[name]] = tensors.get_tensor(name).float()
    if len(found) != num_layers:
        raise ValueError(f"{model_dir}: input_layernorm weights found for {len(found)} of {num_layers} layers")
    return [found[i] for i in range(num_layers)]
