"""Fused decode step in Triton: for each sequence, load its state from the pool slot, read, write in place.

The kernel mutates live state, so it is never autotuned (a tuning run would apply the update several times):
its configuration is pinned.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from deltamem.kernels.triton_blocks import load_row, square_block

PINNED_NUM_WARPS = 1


@triton.jit
def decode_step_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    beta_ptr,
    pool_ptr,
    slots_ptr,
    reads_ptr,
    stride_slot,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
):
    i_b = tl.program_id(0)
    i_n = tl.program_id(1)
    o_r = tl.arange(0, BR)
    m_r = o_r < R
    o_s, m_s = square_block(R, BR)
    slot = tl.load(slots_ptr + i_b).to(tl.int64)
    p_state = pool_ptr + slot * stride_slot + i_n * R * R + o_s
    b_s = tl.load(p_state, mask=m_s, other=0.0)
    o_tok = (i_b * N + i_n) * R + o_r
    b_q = load_row(q_ptr, o_tok, m_r)
    b_k = load_row(k_ptr, o_tok, m_r)
    b_v = load_row(v_ptr, o_tok, m_r)
    b_b = load_row(beta_ptr, o_tok, m_r)
    tl.store(reads_ptr + o_tok, tl.sum(b_s * b_q[None, :], axis=1), mask=m_r)
    b_sk = tl.sum(b_s * b_k[None, :], axis=1)
    b_s = (1.0 - b_b)[:, None] * b_s + (b_b * (b_v - b_sk))[:, None] * b_k[None, :]
    tl.store(p_state, b_s, mask=m_s)


def delta_rule_step_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, pool: torch.Tensor, slots: torch.Tensor
) -> torch.Tensor:
    """Same contract as delta_rule_step_naive; `pool` may be a layer view of a larger pool (slot stride any)."""
    batch, heads, rank = q.shape
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    reads = torch.empty(batch, heads, rank, dtype=torch.float32, device=q.device)
    if batch:
        decode_step_kernel[(batch, heads)](
            q,
            k,
            v,
            beta,
            pool,
            slots.to(torch.int32).contiguous(),
            reads,
            pool.stride(0),
            N=heads,
            R=rank,
            BR=triton.next_power_of_2(rank),
            num_warps=PINNED_NUM_WARPS,
        )
    return reads
