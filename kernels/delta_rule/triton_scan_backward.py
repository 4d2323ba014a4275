"""Backward of the chunked δ-mem scan in Triton, so adapter training runs on the kernels.

The state adjoint G (gradient w.r.t. the state after a token) runs backwards in time:
    G_{t-1}[i] = G_t[i] M_t[i] + dm_t[i] q_t,   M_t[i] = (1 - beta_i) I - beta_i k k^T (symmetric),
the same kind of affine recurrence as the forward one. Across a chunk it composes to G_in = G_out P^T + U',
where P is the forward chunk map (saved by the forward) and U' the chunk's backward scan from zero. So:
  1. chunk_backward_summary_kernel: U' per (chunk, head), walking the chunk backwards;
  2. chunk_backward_carry_kernel: per (sequence, head), the adjoint leaving each chunk, and dh0;
  3. chunk_backward_output_kernel: per (chunk, head), replay the states forward into a scratch buffer, then walk
     backwards computing dq, dk, dv, dbeta token by token.
Per token, with s = S_{t-1}[i], e = v_i - s.k and g = G.k:
    dq = sum_i dm_i s_i;  dv_i = beta_i g_i;  dbeta_i = -G_i.s_i + e_i g_i;
    dk = sum_i beta_i (e_i G_i - g_i s_i).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from deltamem.kernels.triton_blocks import chunk_span, cube_block, load_row, square_block
from deltamem.kernels.triton_utils import autotune, warp_configs


@autotune(configs=warp_configs(1, 2, 4), key=["N", "R"])
@triton.jit
def chunk_backward_summary_kernel(
    q_ptr,
    k_ptr,
    beta_ptr,
    dreads_ptr,
    chunk_seq_ptr,
    chunk_bos_ptr,
    cu_seqlens_ptr,
    dinp_ptr,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
    BT: tl.constexpr,
):
    i_c = tl.program_id(0)
    i_n = tl.program_id(1)
    bos, length = chunk_span(chunk_seq_ptr, chunk_bos_ptr, cu_seqlens_ptr, i_c, BT)
    o_r = tl.arange(0, BR)
    m_r = o_r < R
    b_g = tl.zeros([BR, BR], dtype=tl.float32)
    for j in range(0, length):
        o_tok = ((bos + length - 1 - j).to(tl.int64) * N + i_n) * R + o_r
        b_q = load_row(q_ptr, o_tok, m_r)
        b_k = load_row(k_ptr, o_tok, m_r)
        b_b = load_row(beta_ptr, o_tok, m_r)
        b_dm = load_row(dreads_ptr, o_tok, m_r)
        b_gk = tl.sum(b_g * b_k[None, :], axis=1)
        b_g = (1.0 - b_b)[:, None] * b_g - (b_b * b_gk)[:, None] * b_k[None, :] + b_dm[:, None] * b_q[None, :]
    o_s, m_s = square_block(R, BR)
    tl.store(dinp_ptr + (i_c * N + i_n) * R * R + o_s, b_g, mask=m_s)


@autotune(configs=warp_configs(1, 2, 4), key=["N", "R"])
@triton.jit
def chunk_backward_carry_kernel(
    trans_ptr,
    dinp_ptr,
    dht_ptr,
    chunk_dstate_ptr,
    dh0_ptr,
    cu_chunks_ptr,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
    HAS_DHT: tl.constexpr,
):
    i_s = tl.program_id(0)
    i_n = tl.program_id(1)
    o_s, m_s = square_block(R, BR)
    o_p, m_p = cube_block(R, BR)
    o_seq = (i_s.to(tl.int64) * N + i_n) * R * R
    if HAS_DHT:
        b_g = tl.load(dht_ptr + o_seq + o_s, mask=m_s, other=0.0).to(tl.float32)
    else:
        b_g = tl.zeros([BR, BR], dtype=tl.float32)
    c_start = tl.load(cu_chunks_ptr + i_s)
    c_end = tl.load(cu_chunks_ptr + i_s + 1)
    for j in range(c_start, c_end):
        i_c = c_end - 1 - (j - c_start)
        o_chunk = i_c * N + i_n
        tl.store(chunk_dstate_ptr + o_chunk * R * R + o_s, b_g, mask=m_s)
        b_p = tl.load(trans_ptr + o_chunk * R * R * R + o_p, mask=m_p, other=0.0)
        b_u = tl.load(dinp_ptr + o_chunk * R * R + o_s, mask=m_s, other=0.0)
        # G[i, a] <- sum_b G[i, b] P[i, a, b] + U'[i, a]   (G P^T, row by row)
        b_g = tl.sum(b_g[:, None, :] * b_p, axis=2) + b_u
    tl.store(dh0_ptr + o_seq + o_s, b_g, mask=m_s)


@autotune(configs=warp_configs(1, 2, 4), key=["N", "R"])
@triton.jit
def chunk_backward_output_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    beta_ptr,
    dreads_ptr,
    chunk_seq_ptr,
    chunk_bos_ptr,
    cu_seqlens_ptr,
    chunk_state_ptr,
    chunk_dstate_ptr,
    states_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    dbeta_ptr,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
    BT: tl.constexpr,
):
    i_c = tl.program_id(0)
    i_n = tl.program_id(1)
    bos, length = chunk_span(chunk_seq_ptr, chunk_bos_ptr, cu_seqlens_ptr, i_c, BT)
    o_r = tl.arange(0, BR)
    m_r = o_r < R
    o_s, m_s = square_block(R, BR)
    o_chunk = (i_c * N + i_n) * R * R
    # forward replay: keep the state each token read (S_{t-1}) in the scratch buffer
    b_s = tl.load(chunk_state_ptr + o_chunk + o_s, mask=m_s, other=0.0)
    for t in range(0, length):
        o_tok = ((bos + t).to(tl.int64) * N + i_n) * R + o_r
        tl.store(states_ptr + ((bos + t).to(tl.int64) * N + i_n) * R * R + o_s, b_s, mask=m_s)
        b_k = load_row(k_ptr, o_tok, m_r)
        b_v = load_row(v_ptr, o_tok, m_r)
        b_b = load_row(beta_ptr, o_tok, m_r)
        b_sk = tl.sum(b_s * b_k[None, :], axis=1)
        b_s = (1.0 - b_b)[:, None] * b_s + (b_b * (b_v - b_sk))[:, None] * b_k[None, :]
    tl.debug_barrier()
    b_g = tl.load(chunk_dstate_ptr + o_chunk + o_s, mask=m_s, other=0.0)
    for j in range(0, length):
        i_t = (bos + length - 1 - j).to(tl.int64)
        o_tok = (i_t * N + i_n) * R + o_r
        b_s = tl.load(states_ptr + (i_t * N + i_n) * R * R + o_s, mask=m_s, other=0.0)
        b_q = load_row(q_ptr, o_tok, m_r)
        b_k = load_row(k_ptr, o_tok, m_r)
        b_v = load_row(v_ptr, o_tok, m_r)
        b_b = load_row(beta_ptr, o_tok, m_r)
        b_dm = load_row(dreads_ptr, o_tok, m_r)
        b_e = b_v - tl.sum(b_s * b_k[None, :], axis=1)
        b_gk = tl.sum(b_g * b_k[None, :], axis=1)
        tl.store(dq_ptr + o_tok, tl.sum(b_dm[:, None] * b_s, axis=0), mask=m_r)
        tl.store(dv_ptr + o_tok, b_b * b_gk, mask=m_r)
        tl.store(dbeta_ptr + o_tok, b_e * b_gk - tl.sum(b_g * b_s, axis=1), mask=m_r)
        b_dk = tl.sum(b_b[:, None] * (b_e[:, None] * b_g - b_gk[:, None] * b_s), axis=0)
        tl.store(dk_ptr + o_tok, b_dk, mask=m_r)
        b_g = (1.0 - b_b)[:, None] * b_g - (b_b * b_gk)[:, None] * b_k[None, :] + b_dm[:, None] * b_q[None, :]


def delta_rule_triton_backward(saved: dict, dreads: torch.Tensor, dfinal: torch.Tensor | None):
    """Gradients for delta_rule_triton's forward. `saved` holds its inputs, chunk tables and scratch (trans,
    chunk_state). Returns (dq, dk, dv, dbeta) in fp32 [total_T, N, r] and dh0 [S, N, r, r] fp32."""
    q, k, v, beta = saved["q"], saved["k"], saved["v"], saved["beta"]
    chunk_seq, chunk_bos, cu_chunks, cu_seqlens = (
        saved["chunk_seq"],
        saved["chunk_bos"],
        saved["cu_chunks"],
        saved["cu_seqlens"],
    )
    trans, chunk_state, block_t = saved["trans"], saved["chunk_state"], saved["block_t"]
    total, heads, rank = q.shape
    num_chunks, num_seqs = chunk_seq.numel(), cu_chunks.numel() - 1
    device, block_r = q.device, triton.next_power_of_2(rank)
    dreads = dreads.float().contiguous()
    dinp = torch.empty(num_chunks, heads, rank, rank, dtype=torch.float32, device=device)
    chunk_dstate = torch.empty_like(dinp)
    dh0 = torch.empty(num_seqs, heads, rank, rank, dtype=torch.float32, device=device)
    grads = [torch.zeros(total, heads, rank, dtype=torch.float32, device=device) for _ in range(4)]
    states = torch.empty(total, heads, rank, rank, dtype=torch.float32, device=device)
    consts = dict(N=heads, R=rank, BR=block_r)
    if num_chunks:
        chunk_backward_summary_kernel[(num_chunks, heads)](
            q, k, beta, dreads, chunk_seq, chunk_bos, cu_seqlens, dinp, **consts, BT=block_t
        )
    dht = dfinal.float().contiguous() if dfinal is not None else dh0
    chunk_backward_carry_kernel[(num_seqs, heads)](
        trans, dinp, dht, chunk_dstate, dh0, cu_chunks, **consts, HAS_DHT=dfinal is not None
    )
    if num_chunks:
        chunk_backward_output_kernel[(num_chunks, heads)](
            q,
            k,
            v,
            beta,
            dreads,
            chunk_seq,
            chunk_bos,
            cu_seqlens,
            chunk_state,
            chunk_dstate,
            states,
            *grads,
            **consts,
            BT=block_t,
        )
    return (*grads, dh0)
