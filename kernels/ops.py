"""The public δ-mem kernels: input checks, then dispatch to Triton, the compiled CPU ops or PyTorch (backend.py)."""

from __future__ import annotations

import torch

from deltamem.kernels import backend
from deltamem.kernels.decode_step.naive import delta_rule_step_naive, delta_rule_token_naive
from deltamem.kernels.delta_rule.chunked import delta_rule_chunked
from deltamem.kernels.memory_projection.naive import memory_projection_naive

INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor) -> None:
    for name, x in (("k", k), ("v", v), ("beta", beta)):
        if x.shape != q.shape:
            raise ValueError(f"{name} has shape {list(x.shape)}, q has {list(q.shape)}: they must match")
    for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        if x.dtype not in INPUT_DTYPES:
            raise ValueError(f"{name} has dtype {x.dtype}; supported: float32, bfloat16, float16")


def _check_state(name: str, state: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(state.shape) != shape:
        raise ValueError(f"{name} has shape {list(state.shape)}, expected {list(shape)}")
    if state.dtype != torch.float32:
        raise ValueError(f"{name} must be float32 (states are kept in fp32), got {state.dtype}")


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    write_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read then write T tokens per sequence. q, k, v, beta: [B, T, N, r]; state: [B, N, r, r] fp32;
    write_mask: optional [B, T] bool (False: the token reads but does not write).
    Returns (reads [B, T, N, r] fp32, final state [B, N, r, r] fp32); `state` is not modified."""
    if q.dim() != 4:
        raise ValueError(f"q must be [B, T, N, r], got shape {list(q.shape)}")
    _check_inputs(q, k, v, beta)
    batch, seq_len, heads, rank = q.shape
    _check_state("state", state, (batch, heads, rank, rank))
    if write_mask is not None and tuple(write_mask.shape) != (batch, seq_len):
        raise ValueError(f"write_mask has shape {list(write_mask.shape)}, expected {[batch, seq_len]}")
    if backend.choose(q.device) == "torch":
        return delta_rule_chunked(q, k, v, beta, state, write_mask)
    from deltamem.kernels.delta_rule.triton_scan import delta_rule_triton

    if write_mask is not None:
        beta = beta * write_mask[:, :, None, None].to(beta.dtype)
    cu_seqlens = torch.arange(batch + 1, device=q.device, dtype=torch.int32) * seq_len
    flat = [x.reshape(batch * seq_len, heads, rank) for x in (q, k, v, beta)]
    reads, final = delta_rule_triton(*flat, cu_seqlens, state)
    return reads.view(batch, seq_len, heads, rank), final


def delta_rule_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    cu_seqlens: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed ragged batch. q, k, v, beta: [total_T, N, r]; cu_seqlens: [S + 1] non-decreasing, from 0 to
    total_T; initial_state: [S, N, r, r] fp32 or None (empty). Returns (reads [total_T, N, r], final [S, N, r, r])."""
    if q.dim() != 3:
        raise ValueError(f"q must be [total_T, N, r], got shape {list(q.shape)}")
    _check_inputs(q, k, v, beta)
    total, heads, rank = q.shape
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError("cu_seqlens must be a 1-D tensor of at least two offsets")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != total or any(b < a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"cu_seqlens must rise from 0 to {total} (q's length), got {bounds[:8]}...")
    num_seqs = len(bounds) - 1
    if initial_state is not None:
        _check_state("initial_state", initial_state, (num_seqs, heads, rank, rank))
    if backend.choose(q.device) == "triton":
        from deltamem.kernels.delta_rule.triton_scan import delta_rule_triton

        return delta_rule_triton(q, k, v, beta, cu_seqlens, initial_state)
    if initial_state is None:
        initial_state = q.new_zeros(num_seqs, heads, rank, rank, dtype=torch.float32)
    reads, finals = [], []
    for index, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        part = [x[None, start:end] for x in (q, k, v, beta)]
        r, f = delta_rule_chunked(*part, initial_state[index : index + 1])
        reads.append(r[0])
        finals.append(f)
    return torch.cat(reads), torch.cat(finals)


def delta_rule_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, pool: torch.Tensor, slots: torch.Tensor
) -> torch.Tensor:
    """One decode token per sequence. q, k, v, beta: [B, N, r]; pool: [P, N, r, r] fp32 (a layer's view of a
    state pool; only the slot stride may differ from contiguous); slots: [B] distinct slot indices.
    Reads each state, then writes it in place. Returns reads [B, N, r] fp32."""
    if q.dim() != 3:
        raise ValueError(f"q must be [B, N, r], got shape {list(q.shape)}")
    _check_inputs(q, k, v, beta)
    batch, heads, rank = q.shape
    if pool.dim() != 4 or tuple(pool.shape[1:]) != (heads, rank, rank) or pool.dtype != torch.float32:
        raise ValueError(f"pool must be float32 [P, {heads}, {rank}, {rank}], got {pool.dtype} {list(pool.shape)}")
    if pool.stride()[1:] != (rank * rank, rank, 1):
        raise ValueError("pool's per-slot [N, r, r] block must be contiguous")
    if slots.shape != (batch,):
        raise ValueError(f"slots has shape {list(slots.shape)}, expected [{batch}]")
    if batch and (slots.min() < 0 or slots.max() >= pool.shape[0]):
        raise ValueError(f"slots must lie in [0, {pool.shape[0]}), got {slots.tolist()[:8]}")
    if slots.unique().numel() != batch:
        raise ValueError("slots must be distinct: two sequences cannot update one state in the same step")
    if backend.choose(q.device) == "torch":
        return delta_rule_step_naive(q, k, v, beta, pool, slots.long())
    from deltamem.kernels.decode_step.triton_step import delta_rule_step_triton

    return delta_rule_step_triton(q, k, v, beta, pool, slots)


def delta_rule_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token for each of B sequences, functionally: q, k, v, beta: [B, N, r]; state: [B, N, r, r] fp32.
    Returns (reads [B, N, r], new state); `state` is untouched. Triton runs the fused step kernel on a copy;
    PyTorch runs the update directly (cheaper than a gather/scatter through a pool on the CPU)."""
    _check_inputs(q, k, v, beta)
    batch, heads, rank = q.shape
    _check_state("state", state, (batch, heads, rank, rank))
    if backend.choose(q.device) == "torch":
        return delta_rule_token_naive(q, k, v, beta, state)
    from deltamem.kernels.decode_step.triton_step import delta_rule_step_triton

    new_state = state.clone()
    slots = torch.arange(batch, device=q.device, dtype=torch.int32)
    return delta_rule_step_triton(q, k, v, beta, new_state, slots), new_state


def memory_decode_step(
    x: torch.Tensor,
    weight: torch.Tensor,
    beta_bias: torch.Tensor,
    state: torch.Tensor,
    heads: int,
    rank: int,
    write: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode token per sequence, projection included: x [B, d] → (reads [B, N, r], new state), with
    state [B, N, r, r] fp32 untouched; `write` ([B] bool) False makes a row read without writing.
    Equal to memory_projection followed by delta_rule_decode. At batch 1 a decode step's memory work is mostly
    per-operation overhead, so outside autograd it is one call per layer: a Triton kernel on CUDA, the compiled
    op on the CPU (float32); with gradients enabled, or the `torch` backend, the PyTorch operations."""
    width = heads * rank
    if x.dim() != 2 or weight.shape != (4 * width, x.shape[-1]) or beta_bias.shape != (width,):
        raise ValueError(
            f"x must be [B, d] with weight [{4 * width}, d] and beta_bias [{width}]; got x {list(x.shape)}, "
            f"weight {list(weight.shape)}, beta_bias {list(beta_bias.shape)}"
        )
    _check_state("state", state, (x.shape[0], heads, rank, rank))
    if write is not None and (write.shape != (x.shape[0],) or write.dtype != torch.bool):
        raise ValueError(f"write must be a bool [{x.shape[0]}] tensor, got {write.dtype} {list(write.shape)}")
    if torch.is_grad_enabled() or not x.dtype == weight.dtype == beta_bias.dtype:
        return memory_decode_step_torch(x, weight, beta_bias, state, heads, rank, write)  # the differentiable one
    if state.stride()[1:] != (rank * rank, rank, 1):
        state = state.contiguous()  # the one-call kernels want each row's [N, r, r] block contiguous
    step = decode_step_fn(x.device, x.dtype)
    return step(x.contiguous(), weight.contiguous(), beta_bias.contiguous(), state, heads, rank, write)


def decode_step_fn(device: torch.device, dtype: torch.dtype):
    """The implementation of memory_decode_step that dispatch picks for this device and dtype, to call outside
    autograd with checked, contiguous inputs (same signature). Hot loops resolve it once per forward pass instead
    of once per layer: at batch 1 the dispatch and checks cost more than the step itself."""
    if backend.choose(device) != "torch":
        from deltamem.kernels.decode_step.triton_fused import memory_decode_step_triton

        return memory_decode_step_triton
    native = backend.native_op(device, dtype)
    if native is None:
        return memory_decode_step_torch

    def native_step(x, weight, beta_bias, state, heads: int, rank: int, write=None):
        return native(x, weight, beta_bias, state, write, heads, rank)

    return native_step


def memory_decode_step_torch(x, weight, beta_bias, state, heads: int, rank: int, write=None):
    """memory_decode_step in the fewest PyTorch operations (differentiable; the twin of the one-call kernels)."""
    pre = torch.nn.functional.linear(x, weight).float().view(-1, 4, heads, rank)
    qk = torch.nn.functional.normalize(torch.tanh(pre[:, :2]), dim=-1, eps=1e-6)  # [B, 2, N, r]
    beta = torch.sigmoid(pre[:, 3] + beta_bias.view(heads, rank))
    if write is not None:
        beta = beta * write[:, None, None].to(beta.dtype)
    both = state @ qk.permute(0, 2, 3, 1)  # [B, N, r, 2]: S q and S k in one matmul
    reads, s_k = both[..., 0], both[..., 1]
    new_state = torch.addcmul((1.0 - beta)[..., None] * state, (beta * (pre[:, 2] - s_k))[..., None], qk[:, 1, :, None])
    return reads, new_state


def memory_projection(
    x: torch.Tensor, weight: torch.Tensor, beta_bias: torch.Tensor, heads: int, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: [..., d]; weight: [4 * heads * rank, d] (memory q, k, v and gate rows); beta_bias: [heads * rank].
    Returns q, k (tanh + per-head L2 norm), v, beta (sigmoid), each [..., heads, rank] fp32. Differentiable."""
    width = heads * rank
    if weight.dim() != 2 or weight.shape != (4 * width, x.shape[-1]):
        raise ValueError(f"weight has shape {list(weight.shape)}, expected {[4 * width, x.shape[-1]]}")
    if beta_bias.shape != (width,):
        raise ValueError(f"beta_bias has shape {list(beta_bias.shape)}, expected {[width]}")
    if backend.choose(x.device) == "torch":
        return memory_projection_naive(x, weight, beta_bias, heads, rank)
    from deltamem.kernels.memory_projection.triton_activations import memory_projection_triton

    return memory_projection_triton(x, weight, beta_bias, heads, rank)


def low_rank_correction(out: torch.Tensor, reads: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """out + scale * reads @ weight^T as one fused GEMM-with-add (addmm) on every backend.
    out: [..., D]; reads: [..., W]; weight: [D, W]."""
    if weight.shape != (out.shape[-1], reads.shape[-1]):
        raise ValueError(f"weight has shape {list(weight.shape)}, expected {[out.shape[-1], reads.shape[-1]]}")
    flat_out = out.reshape(-1, out.shape[-1])
    flat_reads = reads.reshape(-1, reads.shape[-1])
    if flat_reads.dtype != out.dtype:
        flat_reads = flat_reads.to(out.dtype)
    if weight.dtype != out.dtype:
        weight = weight.to(out.dtype)
    return torch.addmm(flat_out, flat_reads, weight.t(), alpha=scale).view(out.shape)


def prepare_decode(device: torch.device | str) -> None:
    """Build the compiled CPU decode op now when dispatch will use it, so the first request does not wait."""
    backend.native_op(torch.device(device), torch.float32)
