"""The ops a model's inference passes call, for one device and the adapter's dtype: `memory_ops(device, dtype)`
gives them all, each always callable, the kernels' settings (settings.py) having picked its implementation. The
caller names the op; which code runs is decided here, once per settings, device and dtype.

- `decode_layer(q_weight, q_bias, memory_weight, beta_bias, delta_q, delta_o, scale, heads, rank)` builds a
  layer's DecodeLayer from its weights (once, while they do not change): `layer(x, state, write)` with x
  [B, 1, d] (the attention input of one token per row), state [B, N, r, r] fp32 (updated in place; a layer's
  slice of a [B, L, N, r, r] pass state will do) and write [B] bool or None returns (query [B, 1, Dq]: q_proj's
  output x·Wqᵀ + b plus the query correction scale·reads·Wdqᵀ, the output correction scale·reads·Wdoᵀ
  [B, 1, Do] that o_proj's output gets added). On the CPU in float32 it is the compiled op, one call with the
  GEMM over [Wq; Wmem] inside (on oneDNN when the cpu_gemm setting says so); elsewhere q_proj's GEMM, the decode
  step (Triton's fused kernel on CUDA) and the two corrections.
- `scan(x, weight, beta_bias, state, write_mask, heads, rank)`: (reads [B, T, N, r], final state [B, N, r, r])
  of T tokens per row written in order, `state` untouched: the compiled scan on the CPU in float32, else
  memory_projection followed by delta_rule.

Both run outside autograd; the differentiable path is memory_projection and delta_rule themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deltamem.kernels import backend, cpu_linear, settings
from deltamem.kernels.ops import decode_step_fn, delta_rule, low_rank_correction, memory_projection

DecodeLayer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True, eq=False)
class MemoryOps:
    implementation: str  # "compiled" (the CPU ops), "triton" or "torch": what runs, for logs and tests
    decode_layer: Callable[..., DecodeLayer]
    scan: Callable[..., tuple[torch.Tensor, torch.Tensor]]


def memory_ops(device: torch.device | str, dtype: torch.dtype) -> MemoryOps:
    """The ops for activations on `device` and memory weights of `dtype`, under the current settings."""
    return _memory_ops(torch.device(device), dtype, settings.current())


@functools.cache
def _memory_ops(device: torch.device, dtype: torch.dtype, _settings: settings.KernelSettings) -> MemoryOps:
    if backend.native_op(device, dtype) is not None:
        from deltamem.kernels.decode_step import cpu_native

        layer_op, scan_op = cpu_native.op("decode_layer_cpu"), cpu_native.op("scan_cpu")
        return MemoryOps(
            "compiled", functools.partial(compiled_decode_layer, layer_op), functools.partial(compiled_scan, scan_op)
        )
    return MemoryOps(
        backend.choose(device), functools.partial(decode_layer, decode_step_fn(device, dtype)), scan_projected
    )


def decode_layer(
    step, q_weight, q_bias, memory_weight, beta_bias, delta_q, delta_o, scale: float, heads: int, rank: int
) -> DecodeLayer:
    """The DecodeLayer from q_proj's GEMM, `step` (kernels.decode_step_fn's pick) and two GEMMs with add."""
    delta_o_t = delta_o.t().to(q_weight.dtype)  # Δo comes out in o_proj's dtype, the backbone's

    def layer(x, state, write):
        query = cpu_linear.linear(x, q_weight, q_bias)
        rows = x.reshape(x.shape[0], x.shape[-1]).to(memory_weight.dtype)
        reads, new_state = step(rows, memory_weight, beta_bias, state, heads, rank, write)
        state.copy_(new_state)
        flat = reads.reshape(x.shape[0], 1, -1)  # [B, 1, N*r]
        delta = torch.matmul(flat.to(delta_o_t.dtype), delta_o_t).mul_(scale)
        return low_rank_correction(query, flat, delta_q, scale), delta

    return layer


def compiled_decode_layer(
    op, q_weight, q_bias, memory_weight, beta_bias, delta_q, delta_o, scale: float, heads: int, rank: int
) -> DecodeLayer:
    """The DecodeLayer as one call of the compiled CPU op `op` (float32 throughout; a backbone of another dtype
    takes the PyTorch twin around the compiled step)."""
    if q_weight.dtype != torch.float32:
        step = decode_step_fn(q_weight.device, memory_weight.dtype)
        return decode_layer(step, q_weight, q_bias, memory_weight, beta_bias, delta_q, delta_o, scale, heads, rank)
    onednn = cpu_linear.onednn_for_inference()
    # q_proj's weight extended by the memory projection (its bias zero-padded): one GEMM gives a token its query
    # and its memory pre-activations. A copy of q_proj's weight, which the caller keeps while nothing changes.
    weight = torch.cat([q_weight, memory_weight])
    bias = None if q_bias is None else torch.cat([q_bias, q_bias.new_zeros(memory_weight.shape[0])])
    q_width, delta_q_t, delta_o_t = q_weight.shape[0], delta_q.t().contiguous(), delta_o.t().contiguous()

    def layer(x, state, write):
        return op(x, weight, bias, state, write, q_width, beta_bias, delta_q_t, delta_o_t, scale, heads, rank, onednn)

    return layer


def scan_projected(x, weight, beta_bias, state, write_mask, heads: int, rank: int):
    """The scan as memory_projection then delta_rule (Triton's on CUDA, the chunked PyTorch scan elsewhere)."""
    q, k, v, beta = memory_projection(x.to(weight.dtype), weight, beta_bias, heads, rank)
    return delta_rule(q, k, v, beta, state, write_mask)


def compiled_scan(op, x, weight, beta_bias, state, write_mask, heads: int, rank: int):
    """The scan as one call of the compiled CPU op `op`: the projection and every token's step."""
    mask = None if write_mask is None else write_mask.contiguous()
    return op(x.to(weight.dtype).contiguous(), weight, beta_bias, state, mask, heads, rank)
