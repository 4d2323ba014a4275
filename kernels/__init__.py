"""δ-mem compute kernels, each with its plain PyTorch reference beside it.

Public functions check their inputs, then dispatch to Triton on CUDA and to PyTorch elsewhere (backend.py):
`delta_rule` (padded batches), `delta_rule_varlen` (packed ragged batches), `delta_rule_step` (the decode step
on a state pool), `delta_rule_decode` (the same step, functional), `memory_decode_step` (projection and step
together: one fused Triton kernel on CUDA, one compiled op on the CPU) and `memory_projection` (q, k, v and gate
with their activations); `low_rank_correction` is one addmm everywhere. For inference passes on the CPU,
`decode_layer_fn` (a decode layer's q_proj GEMM extended by the memory projection, step and both corrections)
and `memory_scan_fn` (projection and scan of several tokens) return the compiled one-call ops. The `*_naive`
functions are the oracles; `delta_rule_chunked` is the differentiable CPU path; `prepare_decode` builds the
compiled CPU ops ahead of the first request.
"""

from deltamem.kernels.decode_step import delta_rule_step_naive, delta_rule_token_naive
from deltamem.kernels.delta_rule import delta_rule_chunked, delta_rule_naive
from deltamem.kernels.memory_projection import low_rank_correction_naive, memory_projection_naive
from deltamem.kernels.ops import (
    decode_layer_fn,
    decode_step_fn,
    delta_rule,
    delta_rule_decode,
    delta_rule_step,
    delta_rule_varlen,
    low_rank_correction,
    memory_decode_step,
    memory_projection,
    memory_scan_fn,
    prepare_decode,
)

__all__ = [
    "decode_layer_fn",
    "decode_step_fn",
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
    "memory_projection",
    "memory_projection_naive",
    "memory_scan_fn",
    "prepare_decode",
]
