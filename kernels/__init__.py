"""δ-mem compute kernels, each with its plain PyTorch reference beside it.

`delta_rule` is what the runtime calls: the vectorised scan on every device until the Triton kernels land
(issue 3); `delta_rule_naive` is the per-token oracle.
"""

from deltamem.kernels.delta_rule import delta_rule_chunked, delta_rule_naive

delta_rule = delta_rule_chunked

__all__ = ["delta_rule", "delta_rule_chunked", "delta_rule_naive"]
