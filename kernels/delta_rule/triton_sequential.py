"""The scan laid out as the reference implementation lays it out: one program per (sequence, state row), looping
over every token in order. Kept as the benchmark baseline for the chunked kernels (bench/kernels.py), and tested
against the per-token reference like every other kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def sequential_row_scan_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    beta_ptr,
    cu_seqlens_ptr,
    h0_ptr,
    reads_ptr,
    ht_ptr,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
):
    i_s = tl.program_id(0)
    i_nr = tl.program_id(1)  # head * R + row
    i_n = i_nr // R
    i_row = i_nr % R
    o_r = tl.arange(0, BR)
    m_r = o_r < R
    # 64-bit bounds make the loop variable 64-bit: token offsets never overflow
    bos = tl.load(cu_seqlens_ptr + i_s).to(tl.int64)
    eos = tl.load(cu_seqlens_ptr + i_s + 1).to(tl.int64)
    o_state = ((i_s.to(tl.int64) * N + i_n) * R + i_row) * R + o_r
    b_s = tl.load(h0_ptr + o_state, mask=m_r, other=0.0)
    for t in range(bos, eos):
        o_tok = (t * N + i_n) * R
        b_q = tl.load(q_ptr + o_tok + o_r, mask=m_r, other=0.0).to(tl.float32)
        b_k = tl.load(k_ptr + o_tok + o_r, mask=m_r, other=0.0).to(tl.float32)
        b_v = tl.load(v_ptr + o_tok + i_row).to(tl.float32)
        b_b = tl.load(beta_ptr + o_tok + i_row).to(tl.float32)
        tl.store(reads_ptr + o_tok + i_row, tl.sum(b_s * b_q))
        b_s = (1.0 - b_b) * b_s + b_b * (b_v - tl.sum(b_s * b_k)) * b_k
    tl.store(ht_ptr + o_state, b_s, mask=m_r)


def delta_rule_sequential_triton(q, k, v, beta, cu_seqlens, initial_state):
    """Same contract as delta_rule_triton (packed, ragged), forward only; initial_state is required."""
    total, heads, rank = q.shape
    num_seqs = cu_seqlens.numel() - 1
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    reads = torch.empty(total, heads, rank, dtype=torch.float32, device=q.device)
    final = torch.empty(num_seqs, heads, rank, rank, dtype=torch.float32, device=q.device)
    sequential_row_scan_kernel[(num_seqs, heads * rank)](
        q,
        k,
        v,
        beta,
        cu_seqlens.to(torch.int32).contiguous(),
        initial_state.float().contiguous(),
        reads,
        final,
        N=heads,
        R=rank,
        BR=triton.next_power_of_2(rank),
        num_warps=1,
    )
    return reads, final
