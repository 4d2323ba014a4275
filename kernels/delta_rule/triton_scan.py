"""The δ-mem write scan as Triton kernels: chunk summaries, a carry across chunks, then per-token outputs.

Each state row i follows s_t = s_{t-1} M_t + u_t with M_t = (1 - beta_i) I - beta_i k k^T. Three kernels:
  1. chunk_summary_kernel, one program per (chunk, head): the chunk's composite map (P, U) per row, so that
     S_end[i] = S_start[i] @ P[i] + U[i]. U is simply the scan of the chunk from a zero state.
  2. chunk_carry_kernel, one program per (sequence, head): walks the chunks in order, recording each chunk's
     entering state, and ends with the final state.
  3. chunk_output_kernel, one program per (chunk, head): replays the chunk from its entering state, emitting
     every token's read (taken before the token's write).
The sequential depth is 2*BT + T/BT steps instead of T. Sequences are packed and ragged (cu_seqlens).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from deltamem.kernels.triton_blocks import chunk_span, cube_block, load_row, square_block
from deltamem.kernels.triton_utils import autotune, warp_configs

DEFAULT_BLOCK_T = 64


@autotune(configs=warp_configs(1, 2, 4), key=["N", "R"])
@triton.jit(do_not_specialize=["num_chunks"])
def chunk_summary_kernel(
    k_ptr,
    v_ptr,
    beta_ptr,
    chunk_seq_ptr,
    chunk_bos_ptr,
    cu_seqlens_ptr,
    trans_ptr,
    inp_ptr,
    num_chunks,
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
    # P[i, a, b] starts as the identity for every row i
    b_p = tl.where(o_r[None, :, None] == o_r[None, None, :], 1.0, 0.0) + tl.zeros([BR, BR, BR], dtype=tl.float32)
    b_u = tl.zeros([BR, BR], dtype=tl.float32)
    for t in range(0, length):
        o_tok = ((bos + t).to(tl.int64) * N + i_n) * R + o_r
        b_k = load_row(k_ptr, o_tok, m_r)
        b_v = load_row(v_ptr, o_tok, m_r)
        b_b = load_row(beta_ptr, o_tok, m_r)
        # P <- P M = (1 - beta) P - beta (P k) k^T, row by row
        b_pk = tl.sum(b_p * b_k[None, None, :], axis=2)
        b_p = (1.0 - b_b)[:, None, None] * b_p - b_b[:, None, None] * b_pk[:, :, None] * b_k[None, None, :]
        # U <- U M + beta v k^T: the scan from a zero state
        b_uk = tl.sum(b_u * b_k[None, :], axis=1)
        b_u = (1.0 - b_b)[:, None] * b_u + (b_b * (b_v - b_uk))[:, None] * b_k[None, :]
    o_chunk = i_c.to(tl.int64) * N + i_n
    o_p, m_p = cube_block(R, BR)
    tl.store(trans_ptr + o_chunk * R * R * R + o_p, b_p, mask=m_p)
    o_s, m_s = square_block(R, BR)
    tl.store(inp_ptr + o_chunk * R * R + o_s, b_u, mask=m_s)


@autotune(configs=warp_configs(1, 2, 4), key=["N", "R"])
@triton.jit
def chunk_carry_kernel(
    trans_ptr,
    inp_ptr,
    h0_ptr,
    chunk_state_ptr,
    ht_ptr,
    cu_chunks_ptr,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
    HAS_H0: tl.constexpr,
):
    i_s = tl.program_id(0)
    i_n = tl.program_id(1)
    o_s, m_s = square_block(R, BR)
    o_p, m_p = cube_block(R, BR)
    o_seq = (i_s.to(tl.int64) * N + i_n) * R * R
    if HAS_H0:
        b_s = tl.load(h0_ptr + o_seq + o_s, mask=m_s, other=0.0).to(tl.float32)
    else:
        b_s = tl.zeros([BR, BR], dtype=tl.float32)
    c_start = tl.load(cu_chunks_ptr + i_s)
    c_end = tl.load(cu_chunks_ptr + i_s + 1)
    for i_c in range(c_start, c_end):
        o_chunk = i_c * N + i_n
        tl.store(chunk_state_ptr + o_chunk * R * R + o_s, b_s, mask=m_s)
        b_p = tl.load(trans_ptr + o_chunk * R * R * R + o_p, mask=m_p, other=0.0)
        b_u = tl.load(inp_ptr + o_chunk * R * R + o_s, mask=m_s, other=0.0)
        # S[i, b] <- sum_a S[i, a] P[i, a, b] + U[i, b]
        b_s = tl.sum(b_s[:, :, None] * b_p, axis=1) + b_u
    tl.store(ht_ptr + o_seq + o_s, b_s, mask=m_s)


@autotune(configs=warp_configs(1, 2, 4), key=["N", "R"])
@triton.jit
def chunk_output_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    beta_ptr,
    chunk_seq_ptr,
    chunk_bos_ptr,
    cu_seqlens_ptr,
    chunk_state_ptr,
    reads_ptr,
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
    b_s = tl.load(chunk_state_ptr + (i_c.to(tl.int64) * N + i_n) * R * R + o_s, mask=m_s, other=0.0)
    for t in range(0, length):
        o_tok = ((bos + t).to(tl.int64) * N + i_n) * R + o_r
        b_q = load_row(q_ptr, o_tok, m_r)
        b_k = load_row(k_ptr, o_tok, m_r)
        b_v = load_row(v_ptr, o_tok, m_r)
        b_b = load_row(beta_ptr, o_tok, m_r)
        # read before write: m = S q
        tl.store(reads_ptr + o_tok, tl.sum(b_s * b_q[None, :], axis=1), mask=m_r)
        b_sk = tl.sum(b_s * b_k[None, :], axis=1)
        b_s = (1.0 - b_b)[:, None] * b_s + (b_b * (b_v - b_sk))[:, None] * b_k[None, :]


def chunk_table(cu_seqlens: torch.Tensor, block_t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For packed sequences: each chunk's sequence index and first token, and the chunk offsets per sequence."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    counts = (lengths + block_t - 1) // block_t
    cu_chunks = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=cu_seqlens.device)
    cu_chunks[1:] = torch.cumsum(counts, 0)
    chunk_seq = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), counts)
    local = torch.arange(len(chunk_seq), device=cu_seqlens.device) - cu_chunks[:-1].long()[chunk_seq]
    chunk_bos = cu_seqlens[:-1].long()[chunk_seq] + local * block_t
    return chunk_seq.to(torch.int32), chunk_bos.to(torch.int32), cu_chunks


def _scan_forward(q, k, v, beta, cu_seqlens, initial_state, block_t):
    """Run the three forward kernels; return (reads, final, what the backward needs)."""
    total, heads, rank = q.shape
    num_seqs = cu_seqlens.numel() - 1
    chunk_seq, chunk_bos, cu_chunks = chunk_table(cu_seqlens.long(), block_t)
    num_chunks = chunk_seq.numel()
    device = q.device
    trans = torch.empty(num_chunks, heads, rank, rank, rank, dtype=torch.float32, device=device)
    inp = torch.empty(num_chunks, heads, rank, rank, dtype=torch.float32, device=device)
    chunk_state = torch.empty(num_chunks, heads, rank, rank, dtype=torch.float32, device=device)
    final = torch.empty(num_seqs, heads, rank, rank, dtype=torch.float32, device=device)
    reads = torch.empty(total, heads, rank, dtype=torch.float32, device=device)
    consts = dict(N=heads, R=rank, BR=triton.next_power_of_2(rank))
    cu_seqlens = cu_seqlens.to(torch.int32).contiguous()
    if num_chunks:
        chunk_summary_kernel[(num_chunks, heads)](
            k, v, beta, chunk_seq, chunk_bos, cu_seqlens, trans, inp, num_chunks, **consts, BT=block_t
        )
    h0 = initial_state.float().contiguous() if initial_state is not None else final
    chunk_carry_kernel[(num_seqs, heads)](
        trans, inp, h0, chunk_state, final, cu_chunks, **consts, HAS_H0=initial_state is not None
    )
    if num_chunks:
        chunk_output_kernel[(num_chunks, heads)](
            q, k, v, beta, chunk_seq, chunk_bos, cu_seqlens, chunk_state, reads, **consts, BT=block_t
        )
    saved = dict(
        chunk_seq=chunk_seq,
        chunk_bos=chunk_bos,
        cu_chunks=cu_chunks,
        cu_seqlens=cu_seqlens,
        trans=trans,
        chunk_state=chunk_state,
        block_t=block_t,
    )
    return reads, final, saved


class _DeltaRuleTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, cu_seqlens, initial_state, block_t):
        reads, final, saved = _scan_forward(q, k, v, beta, cu_seqlens, initial_state, block_t)
        ctx.save_for_backward(q, k, v, beta)
        ctx.saved = saved
        ctx.has_initial_state = initial_state is not None
        return reads, final

    @staticmethod
    def backward(ctx, dreads, dfinal):
        from deltamem.kernels.delta_rule.triton_scan_backward import delta_rule_triton_backward

        q, k, v, beta = ctx.saved_tensors
        saved = ctx.saved | dict(q=q, k=k, v=v, beta=beta)
        dreads = dreads if dreads is not None else torch.zeros_like(q, dtype=torch.float32)
        dq, dk, dv, dbeta, dh0 = delta_rule_triton_backward(saved, dreads, dfinal)
        grads = [g.to(x.dtype) for g, x in zip((dq, dk, dv, dbeta), (q, k, v, beta), strict=True)]
        return (*grads, None, dh0 if ctx.has_initial_state else None, None)


def delta_rule_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    cu_seqlens: torch.Tensor,
    initial_state: torch.Tensor | None,
    block_t: int = DEFAULT_BLOCK_T,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed form. q, k, v, beta: [total_T, N, r] (any float dtype); cu_seqlens: [S + 1] int32;
    initial_state: [S, N, r, r] or None (zeros). Returns (reads [total_T, N, r] fp32, final [S, N, r, r] fp32).
    Differentiable w.r.t. q, k, v, beta and initial_state (Triton backward)."""
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    if initial_state is not None:
        initial_state = initial_state.float().contiguous()
    return _DeltaRuleTriton.apply(q, k, v, beta, cu_seqlens, initial_state, block_t)
