"""δ-mem compute kernels, each with its plain PyTorch reference beside it.

Public: `delta_rule` (padded batches), `delta_rule_varlen` (packed ragged batches) and `delta_rule_step` (the
decode step on a state pool) dispatch to Triton on CUDA and to PyTorch elsewhere (backend.py);
`delta_rule_naive` and `delta_rule_step_naive` are the oracles, `delta_rule_chunked` the CPU fast path.
"""

from deltamem.kernels.decode_step import delta_rule_step_naive
from deltamem.kernels.delta_rule import delta_rule_chunked, delta_rule_naive
from deltamem.kernels.ops import delta_rule, delta_rule_step, delta_rule_varlen

__all__ = [
    "delta_rule",
    "delta_rule_chunked",
    "delta_rule_naive",
    "delta_rule_step",
    "delta_rule_step_naive",
    "delta_rule_varlen",
]
