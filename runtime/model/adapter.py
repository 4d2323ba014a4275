"""δ-mem adapter parameters for one attention layer and the math that uses them (projection, step, corrections).

Parameter names and shapes match the reference checkpoint (`model.layers.{i}.self_attn.{name}`); reading and
writing checkpoints is checkpoint.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deltamem.kernels import low_rank_correction, memory_decode_step, memory_projection
from deltamem.runtime.model.adapter_config import DeltaMemConfig

PARAMETER_NAMES = (
    "memory_q_proj",
    "memory_k_proj",
    "memory_v_proj",
    "beta_proj",
    "beta_bias",
    "delta_q_proj",
    "delta_k_proj",
    "delta_v_proj",
    "delta_o_proj",
)
# what training updates: everything but the zero K/V heads kept for the format
TRAINABLE_PARAMETER_NAMES = tuple(n for n in PARAMETER_NAMES if n not in ("delta_k_proj", "delta_v_proj"))


class DeltaMemLayer(nn.Module):
    """The trainable projections of one layer: memory q/k/v, the write gate, and the two low-rank heads."""

    def __init__(self, config: DeltaMemConfig, hidden_size: int, query_width: int, key_width: int, value_width: int):
        super().__init__()
        self.config = config
        width = config.read_width
        self.memory_q_proj = nn.Parameter(torch.zeros(width, hidden_size))
        self.memory_k_proj = nn.Parameter(torch.zeros(width, hidden_size))
        self.memory_v_proj = nn.Parameter(torch.zeros(width, hidden_size))
        self.beta_proj = nn.Parameter(torch.zeros(width, hidden_size))
        self.beta_bias = nn.Parameter(torch.full((width,), config.beta_bias_init))
        self.delta_q_proj = nn.Parameter(torch.zeros(query_width, width))
        # K and V are never corrected; the reference format carries these zero tensors, so we do too
        self.delta_k_proj = nn.Parameter(torch.zeros(key_width, width), requires_grad=False)
        self.delta_v_proj = nn.Parameter(torch.zeros(value_width, width), requires_grad=False)
        self.delta_o_proj = nn.Parameter(torch.zeros(hidden_size, width))

    def reset_parameters(self, q_weight: torch.Tensor, o_weight: torch.Tensor, generator: torch.Generator) -> None:
        """The reference training init: Kaiming-uniform memory projections, zero gate weights, and each delta
        head set to `online_gain` times the first `rank` L2-normalised columns of the frozen q / o weight."""
        with torch.no_grad():
            for weight in (self.memory_q_proj, self.memory_k_proj, self.memory_v_proj):
                bound = 1.0 / math.sqrt(weight.shape[1])  # kaiming_uniform_(a=sqrt(5)) reduces to this bound
                weight.copy_(torch.empty(weight.shape, dtype=weight.dtype).uniform_(-bound, bound, generator=generator))
            self.beta_proj.zero_()
            self.beta_bias.fill_(self.config.beta_bias_init)
            for head, base in ((self.delta_q_proj, q_weight), (self.delta_o_proj, o_weight)):
                head.zero_()
                width = min(self.config.rank, base.shape[1], head.shape[1])
                columns = F.normalize(base[:, :width].detach().float(), dim=0, eps=1e-6)
                head[:, :width].copy_(columns * self.config.online_gain)

    @property
    def state_dims(self) -> tuple[int, int]:
        """(state heads N, rank r), as the kernels take them."""
        return self.config.num_state_heads, self.config.rank

    def packed_projection_weight(self) -> torch.Tensor:
        """The four projection weights stacked [4 * N * r, d], as one GEMM wants them. Outside autograd the
        stack is cached and rebuilt only when a parameter changes (its version counter moves)."""
        parts = self.__dict__.get("_projection_parts")
        if parts is None or parts[0] is not self._parameters["memory_q_proj"]:  # bound once; rebound if replaced
            parts = (self.memory_q_proj, self.memory_k_proj, self.memory_v_proj, self.beta_proj)
            self.__dict__["_projection_parts"] = parts
        if torch.is_grad_enabled():
            return torch.cat(parts)
        versions = tuple(p._version for p in parts) + tuple(p.data_ptr() for p in parts)
        if getattr(self, "_packed_versions", None) != versions:
            self._packed, self._packed_versions = torch.cat(parts), versions
        return self._packed

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, T, d] → q, k, v, beta, each [B, T, N, r] in fp32."""
        weight = self.packed_projection_weight()
        return memory_projection(
            x.to(weight.dtype), weight, self.beta_bias, self.config.num_state_heads, self.config.rank
        )

    def decode_step(
        self, x: torch.Tensor, state: torch.Tensor, write: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode token per row: x [B, d], state [B, N, r, r] → (reads [B, N, r], new state), through the
        checked, dispatching kernels.memory_decode_step (the SGLang backend's decode)."""
        weight = self.packed_projection_weight()
        if x.dtype != weight.dtype:
            x = x.to(weight.dtype)
        return memory_decode_step(x, weight, self.beta_bias, state, *self.state_dims, write)

    def correct_query(self, q_out: torch.Tensor, reads: torch.Tensor) -> torch.Tensor:
        """q_proj's output plus scale · Wdq · m; reads: [B, T, N*r]."""
        return low_rank_correction(q_out, reads, self.delta_q_proj, self.config.scale)

    def correct_output(self, o_out: torch.Tensor, reads: torch.Tensor) -> torch.Tensor:
        """o_proj's output plus scale · Wdo · m."""
        return low_rank_correction(o_out, reads, self.delta_o_proj, self.config.scale)
