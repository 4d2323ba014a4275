"""The δ-mem write scan in chunked PyTorch: the CPU fast path, built from batched matmuls and one triangular solve.

Row i of a state head follows s_j = a_j s_{j-1} + u_j k_j with a_j = 1 - beta_ij and the scalar innovation
u_j = beta_ij (v_ij - s_{j-1}.k_j). Inside a chunk starting from s_0, with decays D[j, l] = a_{l+1} ... a_j:
    s_j = D[j, 0] s_0 + sum_{l<=j} D[j, l] u_l k_l,
so the innovations solve a unit lower-triangular system (I + A) u = beta (v - D[j-1, 0] K s_0), with
A[j, l] = beta_j D[j-1, l] (k_j.k_l) for l < j. Writing u = w - W s_0 separates what depends on s_0: every chunk
is solved at once, then only the chunk boundaries are walked in order (s_C = s_0 P + U), and every token's read
m_j = D[j-1, 0] s_0.q_j + sum_{l<j} D[j-1, l] (q_j.k_l) u_l follows with matmuls. Decays are products formed in
log space; a gate of exactly 1 is clamped to 1 - 1e-30 so that logarithms stay finite (an error of 1e-30).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 16
_MIN_DECAY = 1e-30


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
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    bsz, seq_len, heads, rank = q.shape
    q, k, v, beta = (x.float() for x in (q, k, v, beta))
    state = state.float()
    if seq_len == 0:
        return q.new_zeros(q.shape), state.clone()
    if write_mask is not None:
        beta = beta * write_mask[:, :, None, None].to(beta.dtype)
    size = min(chunk_size, seq_len)
    pad = (-seq_len) % size
    if pad:
        # padded tokens have beta = 0: no decay, no write; their reads are dropped
        q, k, v, beta = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v, beta))
    chunks = q.shape[1] // size
    # shared by all rows of a head: [B, nC, N, C, r]; per row: [B, nC, N, r_row, C]
    q, k = (x.view(bsz, chunks, size, heads, rank).transpose(2, 3) for x in (q, k))
    v, beta = (x.view(bsz, chunks, size, heads, rank).permute(0, 1, 3, 4, 2) for x in (v, beta))

    log_decay = torch.log((1.0 - beta).clamp_min(_MIN_DECAY))
    through = log_decay.cumsum(-1)  # log D[j, 0]
    before = through - log_decay  # log D[j-1, 0]
    strict = torch.ones(size, size, dtype=torch.bool, device=q.device).tril(-1)
    # D[j-1, l] for l < j, zero elsewhere
    decay_pairs = torch.exp((before[..., :, None] - through[..., None, :]).masked_fill(~strict, float("-inf")))
    kk = (k @ k.transpose(-1, -2)).unsqueeze(3)  # [B, nC, N, 1, C, C]
    qk = (q @ k.transpose(-1, -2)).unsqueeze(3)
    system = beta[..., :, None] * decay_pairs * kk
    rhs = torch.cat([(beta * v)[..., None], (beta * torch.exp(before))[..., None] * k.unsqueeze(3)], dim=-1)
    eye = torch.eye(size, dtype=q.dtype, device=q.device)
    solved = torch.linalg.solve_triangular(system + eye, rhs, upper=False, unitriangular=True)
    w, big_w = solved[..., 0], solved[..., 1:]  # u = w - W s_0: [.., r_row, C] and [.., r_row, C, r]

    to_end = torch.exp(through[..., -1:] - through)  # D[C, l]
    kd = to_end[..., None] * k.unsqueeze(3)  # [.., r_row, C, r]
    trans = (
        torch.exp(through[..., -1])[..., None, None] * torch.eye(rank, device=q.device) - big_w.transpose(-1, -2) @ kd
    )  # [.., r_row, r, r]
    inp = (w.unsqueeze(-2) @ kd).squeeze(-2)  # [.., r_row, r]

    starts = []
    current = state
    for c in range(chunks):
        starts.append(current)
        current = (current.unsqueeze(-2) @ trans[:, c]).squeeze(-2) + inp[:, c]
    chunk_starts = torch.stack(starts, dim=1)  # [B, nC, N, r_row, r]

    innovations = w - (big_w @ chunk_starts.unsqueeze(-1)).squeeze(-1)  # [.., r_row, C]
    reads = torch.exp(before) * (chunk_starts @ q.transpose(-1, -2)) + (
        (decay_pairs * qk) @ innovations.unsqueeze(-1)
    ).squeeze(-1)
    reads = reads.permute(0, 1, 4, 2, 3).reshape(bsz, chunks * size, heads, rank)[:, :seq_len]
    return reads, current
