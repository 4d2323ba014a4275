"""The slow, obviously correct δ-mem write scan: one token at a time, exactly as delta-mem.md states it.

This is the oracle every faster form of the scan is tested against; never optimise it.
"""

from __future__ import annotations

import torch


def delta_rule_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    write_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read then write every token in order.

    q, k, v, beta: [B, T, N, r] (q and k already tanh + L2-normalised, beta already a sigmoid gate)
    state: [B, N, r, r] fp32, the memory before the first token (not modified)
    write_mask: optional [B, T] bool; a token where it is False reads but does not write
    returns (reads [B, T, N, r] fp32, final state [B, N, r, r] fp32)
    """
    s = state.float().clone()
    q, k, v, beta = (x.float() for x in (q, k, v, beta))
    reads = []
    for t in range(q.shape[1]):
        # read: m = S_prev @ q (the state before this token's write)
        reads.append(torch.einsum("bnij,bnj->bni", s, q[:, t]))
        k_t, b_t = k[:, t], beta[:, t]
        if write_mask is not None:
            b_t = b_t * write_mask[:, t, None, None].to(b_t.dtype)
        s_k = torch.einsum("bnij,bnj->bni", s, k_t)
        # write: S = diag(1 - beta) S + diag(beta) (v - S k) k^T
        s = (1.0 - b_t)[..., None] * s + (b_t * (v[:, t] - s_k))[..., None] * k_t[:, :, None, :]
    reads_t = torch.stack(reads, dim=1) if reads else q.new_zeros(q.shape)
    return reads_t, s
