"""The δ-mem write scan in vectorised PyTorch: the CPU fast path.

Each row i of a state head is an independent linear recurrence s_t = s_{t-1} M_t + u_t with
M_t = (1 - beta_i) I - beta_i k k^T and u_t = beta_i v_i k^T. Pairs (M, u) compose associatively, so inside a
chunk of C tokens the prefix transitions come from log2(C) doubling steps over all chunks at once, and only
the T / C chunk boundaries are walked in order. The per-token loop becomes a handful of batched matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 32


def delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    write_mask: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `delta_rule_naive`; differentiable through every input, the state included.

    q, k, v, beta: [B, T, N, r]; state: [B, N, r, r] fp32; write_mask: optional [B, T] bool
    returns (reads [B, T, N, r] fp32, final state [B, N, r, r] fp32)
    """
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two, got {chunk_size}")
    bsz, seq_len, heads, rank = q.shape
    q, k, v, beta = (x.float() for x in (q, k, v, beta))
    state = state.float()
    if seq_len == 0:
        return q.new_zeros(q.shape), state.clone()
    if write_mask is not None:
        beta = beta * write_mask[:, :, None, None].to(beta.dtype)

    size = min(chunk_size, 1 << (seq_len - 1).bit_length())
    pad = (-seq_len) % size
    if pad:
        # padded tokens have beta = 0: identity transition, no write; their reads are dropped
        q, k, v, beta = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v, beta))
    num_chunks = q.shape[1] // size
    q, k, v, beta = (x.reshape(bsz, num_chunks, size, heads, rank) for x in (q, k, v, beta))

    # per-token, per-row transition M: [B, nC, C, N, r_row, r, r] and input u: [B, nC, C, N, r_row, r]
    eye = torch.eye(rank, dtype=q.dtype, device=q.device)
    kk = k[..., :, None] * k[..., None, :]
    trans = (1.0 - beta)[..., None, None] * eye - beta[..., None, None] * kk[..., None, :, :]
    inp = (beta * v)[..., None] * k[..., None, :]

    # inclusive prefix composition inside every chunk (Hillis-Steele doubling)
    step = 1
    while step < size:
        earlier_t, earlier_u = trans[:, :, :-step], inp[:, :, :-step]
        later_t = trans[:, :, step:]
        trans = torch.cat([trans[:, :, :step], earlier_t @ later_t], dim=2)
        inp = torch.cat([inp[:, :, :step], (earlier_u[..., None, :] @ later_t).squeeze(-2) + inp[:, :, step:]], dim=2)
        step *= 2

    # walk the chunk boundaries: the state entering each chunk
    starts = []
    current = state
    for c in range(num_chunks):
        starts.append(current)
        current = (current[..., None, :] @ trans[:, c, -1]).squeeze(-2) + inp[:, c, -1]
    chunk_starts = torch.stack(starts, dim=1)  # [B, nC, N, r, r]

    # the state each token reads is the one before its own write: shift the prefixes by one token
    trans_before = torch.cat([eye.expand_as(trans[:, :, :1]), trans[:, :, :-1]], dim=2)
    inp_before = torch.cat([torch.zeros_like(inp[:, :, :1]), inp[:, :, :-1]], dim=2)
    state_before = (chunk_starts[:, :, None, ..., None, :] @ trans_before).squeeze(-2) + inp_before
    reads = (state_before @ q[..., :, None]).squeeze(-1)
    reads = reads.reshape(bsz, num_chunks * size, heads, rank)[:, :seq_len]
    return reads, current
