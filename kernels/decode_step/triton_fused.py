"""The whole per-layer memory work of one decode token as one Triton kernel: projection, activations, read, write.

At batch 1 a decode step's memory work is a few thousand multiply-adds per layer, so its cost is launches, not
arithmetic: projection GEMM, activation kernel, state copy and step kernel were four launches (and an autograd
wrapper) per layer. Here one program per (sequence, state head) computes its 4·r projection rows against the
token's hidden vector in fp32, applies tanh + L2 norm to q and k and the biased sigmoid to the gate, reads its
state, and writes the updated state to a new tensor (the input state is untouched, so nothing live is mutated
and a failed step leaves memory as it was). The configuration is pinned: an autotuner's Python wrapper would
cost more per launch than the kernel runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from deltamem.kernels.triton_blocks import square_block

PINNED_NUM_WARPS = 2
BLOCK_D = 128  # hidden-vector elements per loop iteration
L2_EPS = 1e-6


@triton.jit
def _projected_rows(w_ptr, rows, m_r, o_d, m_d, b_x, D):
    """Dot products of `rows` of the row-major [*, D] weight with this block of the hidden vector, in fp32."""
    b_w = tl.load(w_ptr + rows.to(tl.int64)[:, None] * D + o_d[None, :], mask=m_r[:, None] & m_d[None, :], other=0.0)
    return tl.sum(b_w.to(tl.float32) * b_x[None, :], axis=1)


@triton.jit
def _tanh_l2(b_pre, m_r, EPS: tl.constexpr):
    b_u = tl.where(m_r, 1.0 - 2.0 / (tl.exp(2.0 * b_pre) + 1.0), 0.0)
    return b_u / tl.maximum(tl.sqrt(tl.sum(b_u * b_u, axis=0)), EPS)


@triton.jit
def fused_decode_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    write_ptr,
    state_ptr,
    new_state_ptr,
    reads_ptr,
    D,
    stride_state,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
    BD: tl.constexpr,
    HAS_WRITE: tl.constexpr,
    EPS: tl.constexpr,
):
    i_b = tl.program_id(0)
    i_n = tl.program_id(1)
    o_r = tl.arange(0, BR)
    m_r = o_r < R
    head_rows = i_n * R + o_r
    acc_q = tl.zeros([BR], dtype=tl.float32)
    acc_k = tl.zeros([BR], dtype=tl.float32)
    acc_v = tl.zeros([BR], dtype=tl.float32)
    acc_g = tl.zeros([BR], dtype=tl.float32)
    for d0 in range(0, D, BD):
        o_d = d0 + tl.arange(0, BD)
        m_d = o_d < D
        b_x = tl.load(x_ptr + i_b.to(tl.int64) * D + o_d, mask=m_d, other=0.0).to(tl.float32)
        acc_q += _projected_rows(w_ptr, head_rows, m_r, o_d, m_d, b_x, D)
        acc_k += _projected_rows(w_ptr, N * R + head_rows, m_r, o_d, m_d, b_x, D)
        acc_v += _projected_rows(w_ptr, 2 * N * R + head_rows, m_r, o_d, m_d, b_x, D)
        acc_g += _projected_rows(w_ptr, 3 * N * R + head_rows, m_r, o_d, m_d, b_x, D)
    b_q = _tanh_l2(acc_q, m_r, EPS)
    b_k = _tanh_l2(acc_k, m_r, EPS)
    b_bias = tl.load(bias_ptr + head_rows, mask=m_r, other=0.0).to(tl.float32)
    b_beta = tl.sigmoid(acc_g + b_bias)
    if HAS_WRITE:
        b_beta = b_beta * tl.load(write_ptr + i_b).to(tl.float32)
    o_s, m_s = square_block(R, BR)
    b_s = tl.load(state_ptr + i_b.to(tl.int64) * stride_state + i_n * R * R + o_s, mask=m_s, other=0.0)
    o_out = (i_b * N + i_n) * R + o_r
    tl.store(reads_ptr + o_out, tl.sum(b_s * b_q[None, :], axis=1), mask=m_r)
    b_sk = tl.sum(b_s * b_k[None, :], axis=1)
    b_s = (1.0 - b_beta)[:, None] * b_s + (b_beta * (acc_v - b_sk))[:, None] * b_k[None, :]
    tl.store(new_state_ptr + i_b.to(tl.int64) * (N * R * R) + i_n * R * R + o_s, b_s, mask=m_s)


def memory_decode_step_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    beta_bias: torch.Tensor,
    state: torch.Tensor,
    heads: int,
    rank: int,
    write: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as memory_decode_step: x [B, d], weight [4·N·r, d], beta_bias [N·r], state [B, N, r, r]
    fp32 (each row's [N, r, r] block contiguous; the batch stride may be a layer view's), write [B] bool or None.
    Returns (reads [B, N, r] fp32, new state [B, N, r, r] fp32 contiguous)."""
    batch, dim = x.shape
    reads = torch.empty(batch, heads, rank, dtype=torch.float32, device=x.device)
    new_state = torch.empty(batch, heads, rank, rank, dtype=torch.float32, device=x.device)
    if batch:
        fused_decode_kernel[(batch, heads)](
            x.contiguous(),
            weight.contiguous(),
            beta_bias.contiguous(),
            write if write is not None else reads,  # not read without HAS_WRITE
            state,
            new_state,
            reads,
            dim,
            state.stride(0),
            N=heads,
            R=rank,
            BR=triton.next_power_of_2(rank),
            BD=BLOCK_D,
            HAS_WRITE=write is not None,
            EPS=L2_EPS,
            num_warps=PINNED_NUM_WARPS,
        )
    return reads, new_state
