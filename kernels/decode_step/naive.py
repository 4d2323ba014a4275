"""The slow, obviously correct decode step: one token per sequence, states gathered from a pool by slot."""

from __future__ import annotations

import torch


def delta_rule_step_naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, pool: torch.Tensor, slots: torch.Tensor
) -> torch.Tensor:
    """q, k, v, beta: [B, N, r]; pool: [P, N, r, r] fp32, updated in place at `slots` ([B], distinct).
    Returns the reads [B, N, r] fp32, taken before the write."""
    reads, pool[slots] = delta_rule_token_naive(q, k, v, beta, pool[slots])
    return reads


def delta_rule_token_naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per sequence, functionally. q, k, v, beta: [B, N, r]; state: [B, N, r, r].
    Returns (reads [B, N, r] fp32, new state [B, N, r, r] fp32)."""
    state = state.float()
    q, k, v, beta = (x.float() for x in (q, k, v, beta))
    reads = (state @ q[..., None]).squeeze(-1)
    s_k = (state @ k[..., None]).squeeze(-1)
    return reads, (1.0 - beta)[..., None] * state + (beta * (v - s_k))[..., None] * k[:, :, None, :]
