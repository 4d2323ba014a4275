"""The δ-mem write scan: read each token from the state, then write the token into it."""

from deltamem.kernels.delta_rule.chunked import delta_rule_chunked
from deltamem.kernels.delta_rule.naive import delta_rule_naive

__all__ = ["delta_rule_chunked", "delta_rule_naive"]
