"""The memory projections' activations as one Triton kernel, forward and backward.

The projection itself is one GEMM (cuBLAS does it best); what it saves to fuse is the chain after it: tanh, the
per-head L2 norm and division for q and k, the bias and sigmoid for the gate — about ten element-wise kernels
and their memory traffic, replaced by one pass over the [M, 4, N, r] pre-activations. The backward is one pass
too, followed by the two GEMMs for dx and dW.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from deltamem.kernels.triton_utils import autotune, warp_configs

L2_EPS = 1e-6
BLOCK_M = 32


@triton.jit
def _tanh(x):
    # 1 - 2 / (exp(2x) + 1): saturates cleanly to +-1 when exp overflows or vanishes
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@autotune(configs=warp_configs(1, 2, 4), key=["N", "R"])
@triton.jit(do_not_specialize=["num_rows"])
def activation_forward_kernel(
    pre_ptr,
    bias_ptr,
    q_ptr,
    k_ptr,
    v_ptr,
    beta_ptr,
    num_rows,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
    BM: tl.constexpr,
    EPS: tl.constexpr,
):
    i_m = tl.program_id(0)
    i_n = tl.program_id(1)
    o_m = i_m * BM + tl.arange(0, BM)
    o_r = tl.arange(0, BR)
    m_x = (o_m < num_rows)[:, None] & (o_r < R)[None, :]
    o_pre = o_m.to(tl.int64)[:, None] * (4 * N * R) + i_n * R + o_r[None, :]
    o_out = o_m.to(tl.int64)[:, None] * (N * R) + i_n * R + o_r[None, :]
    for part in tl.static_range(2):
        b_u = _tanh(tl.load(pre_ptr + o_pre + part * N * R, mask=m_x, other=0.0).to(tl.float32))
        b_norm = tl.maximum(tl.sqrt(tl.sum(b_u * b_u, axis=1)), EPS)
        if part == 0:
            tl.store(q_ptr + o_out, b_u / b_norm[:, None], mask=m_x)
        else:
            tl.store(k_ptr + o_out, b_u / b_norm[:, None], mask=m_x)
    tl.store(v_ptr + o_out, tl.load(pre_ptr + o_pre + 2 * N * R, mask=m_x, other=0.0).to(tl.float32), mask=m_x)
    b_bias = tl.load(bias_ptr + i_n * R + o_r, mask=o_r < R, other=0.0).to(tl.float32)
    b_gate = tl.load(pre_ptr + o_pre + 3 * N * R, mask=m_x, other=0.0).to(tl.float32) + b_bias[None, :]
    tl.store(beta_ptr + o_out, tl.sigmoid(b_gate), mask=m_x)


@autotune(configs=warp_configs(1, 2, 4), key=["N", "R"])
@triton.jit(do_not_specialize=["num_rows"])
def activation_backward_kernel(
    pre_ptr,
    bias_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    dbeta_ptr,
    dpre_ptr,
    num_rows,
    N: tl.constexpr,
    R: tl.constexpr,
    BR: tl.constexpr,
    BM: tl.constexpr,
    EPS: tl.constexpr,
):
    i_m = tl.program_id(0)
    i_n = tl.program_id(1)
    o_m = i_m * BM + tl.arange(0, BM)
    o_r = tl.arange(0, BR)
    m_x = (o_m < num_rows)[:, None] & (o_r < R)[None, :]
    o_pre = o_m.to(tl.int64)[:, None] * (4 * N * R) + i_n * R + o_r[None, :]
    o_out = o_m.to(tl.int64)[:, None] * (N * R) + i_n * R + o_r[None, :]
    for part in tl.static_range(2):
        b_u = _tanh(tl.load(pre_ptr + o_pre + part * N * R, mask=m_x, other=0.0).to(tl.float32))
        raw_norm = tl.sqrt(tl.sum(b_u * b_u, axis=1))
        b_norm = tl.maximum(raw_norm, EPS)
        b_y = b_u / b_norm[:, None]
        if part == 0:
            b_dy = tl.load(dq_ptr + o_out, mask=m_x, other=0.0).to(tl.float32)
        else:
            b_dy = tl.load(dk_ptr + o_out, mask=m_x, other=0.0).to(tl.float32)
        # d(u / max(|u|, eps)): the radial part vanishes only where the norm is not clamped
        radial = tl.where(raw_norm > EPS, tl.sum(b_y * b_dy, axis=1), 0.0)
        b_du = (b_dy - b_y * radial[:, None]) / b_norm[:, None]
        tl.store(dpre_ptr + o_pre + part * N * R, b_du * (1.0 - b_u * b_u), mask=m_x)
    tl.store(dpre_ptr + o_pre + 2 * N * R, tl.load(dv_ptr + o_out, mask=m_x, other=0.0).to(tl.float32), mask=m_x)
    b_bias = tl.load(bias_ptr + i_n * R + o_r, mask=o_r < R, other=0.0).to(tl.float32)
    b_gate = tl.sigmoid(tl.load(pre_ptr + o_pre + 3 * N * R, mask=m_x, other=0.0).to(tl.float32) + b_bias[None, :])
    b_db = tl.load(dbeta_ptr + o_out, mask=m_x, other=0.0).to(tl.float32)
    tl.store(dpre_ptr + o_pre + 3 * N * R, b_db * b_gate * (1.0 - b_gate), mask=m_x)


def _launch(kernel, rows: int, heads: int, rank: int, *args) -> None:
    if rows:
        grid = (triton.cdiv(rows, BLOCK_M), heads)
        kernel[grid](*args, rows, N=heads, R=rank, BR=triton.next_power_of_2(rank), BM=BLOCK_M, EPS=L2_EPS)


class _MemoryProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, beta_bias, heads, rank):
        flat = x.reshape(-1, x.shape[-1])
        pre = (flat.float() @ weight.float().t()).contiguous()  # [M, 4 * N * r]
        rows = pre.shape[0]
        outs = [torch.empty(rows, heads, rank, dtype=torch.float32, device=x.device) for _ in range(4)]
        bias = beta_bias.float().contiguous()
        _launch(activation_forward_kernel, rows, heads, rank, pre, bias, *outs)
        ctx.save_for_backward(flat, weight, bias, pre)
        ctx.shape = (x.shape, heads, rank)
        return tuple(out.view(*x.shape[:-1], heads, rank) for out in outs)

    @staticmethod
    def backward(ctx, dq, dk, dv, dbeta):
        flat, weight, bias, pre = ctx.saved_tensors
        shape, heads, rank = ctx.shape
        rows = pre.shape[0]
        grads = [
            (g if g is not None else torch.zeros(1, device=pre.device).expand(rows * heads * rank))
            .float()
            .reshape(rows, heads, rank)
            .contiguous()
            for g in (dq, dk, dv, dbeta)
        ]
        dpre = torch.empty_like(pre)
        _launch(activation_backward_kernel, rows, heads, rank, pre, bias, *grads, dpre)
        dx = (dpre @ weight.float()).to(flat.dtype).view(shape)
        dweight = (dpre.t() @ flat.float()).to(weight.dtype)
        dbias = dpre.view(rows, 4, heads * rank)[:, 3].sum(0).to(bias.dtype)
        return dx, dweight, dbias, None, None


def memory_projection_triton(x, weight, beta_bias, heads: int, rank: int):
    """Same contract as memory_projection_naive; differentiable w.r.t. x, weight and beta_bias."""
    return _MemoryProjection.apply(x, weight, beta_bias, heads, rank)
