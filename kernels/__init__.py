"""δ-mem compute kernels, each with its plain PyTorch reference beside it.

The caller names the op; this package picks its implementation for the device and dtype, by its settings
(settings.py: `configure`, `KernelSettings`; the server sets them from its configuration): Triton on CUDA, the
compiled CPU ops for float32 on the CPU, PyTorch elsewhere (backend.py).

Per op: `delta_rule` (padded batches), `delta_rule_varlen` (packed ragged batches), `delta_rule_step` (the decode
step on a state pool), `delta_rule_decode` (the same step, functional), `memory_decode_step` (projection and step
together: one fused Triton kernel on CUDA, one compiled op on the CPU), `memory_projection` (q, k, v and gate with
their activations) and `low_rank_correction` (one addmm everywhere). For a model's inference passes,
`memory_ops(device, dtype)` gives the one-call ops, each always callable: a decode layer's whole memory work (its
q_proj GEMM included) and a pass's projection and scan (inference.py). `cpu_linear` puts the backbone's float32
CPU linears on oneDNN. The `*_naive` functions are the oracles; `delta_rule_chunked` is the differentiable CPU
path; `prepare_decode` builds the compiled CPU ops ahead of the first request.
"""

from deltamem.kernels.decode_step import delta_rule_step_naive, delta_rule_token_naive
from deltamem.kernels.delta_rule import delta_rule_chunked, delta_rule_naive
from deltamem.kernels.inference import MemoryOps, memory_ops
from deltamem.kernels.memory_projection import low_rank_correction_naive, memory_projection_naive
from deltamem.kernels.ops import (
    delta_rule,
    delta_rule_decode,
    delta_rule_step,
    delta_rule_varlen,
    low_rank_correction,
    memory_decode_step,
    memory_projection,
    prepare_decode,
)
from deltamem.kernels.settings import KernelSettings, configure

__all__ = [
    "KernelSettings",
    "MemoryOps",
    "configure",
    "delta_rule",
    "delta_rule_chunked",
    "delta_rule_decode",
    "delta_rule_naive",
    "delta_rule_step",
    "delta_rule_step_naive",
    "delta_rule_token_naive",
    "delta_rule_varlen",
    "low_rank_correction",
    "low_rank_correction_naive",
    "memory_decode_step",
    "memory_ops",
    "memory_projection",
    "memory_projection_naive",
    "prepare_decode",
]
