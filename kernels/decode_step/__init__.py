"""The decode step: one token per sequence, read then write each sequence's state in its pool slot."""

from deltamem.kernels.decode_step.naive import delta_rule_step_naive, delta_rule_token_naive

__all__ = ["delta_rule_step_naive", "delta_rule_token_naive"]
