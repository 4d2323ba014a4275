"""The slow, obviously correct decode step: one token per sequence, states gathered from a pool by slot."""

from __future__ import annotations

import torch


def delta_rule_step_naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, pool: torch.Tensor, slots: torch.Tensor
) -> torch.Tensor:
    """q, k, v, beta: [B, N, r]; pool: [P, N, r, r] fp32, updated in place at `slots` ([B], distinct).
    Returns the reads [B, N, r] fp32, taken before the write."""
    state = pool[slots].float()
    q, k, v, beta = (x.float() for x in (q, k, v, beta))
    reads = torch.einsum("bnij,bnj->bni", state, q)
    s_k = torch.einsum("bnij,bnj->bni", state, k)
    pool[slots] = (1.0 - beta)[..., None] * state + (beta * (v - s_k))[..., None] * k[:, :, None, :]
    return reads
