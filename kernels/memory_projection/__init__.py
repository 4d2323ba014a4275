"""Memory projections (q, k, v, gate with their activations) and the low-rank corrections."""

from deltamem.kernels.memory_projection.naive import low_rank_correction_naive, memory_projection_naive

__all__ = ["low_rank_correction_naive", "memory_projection_naive"]
