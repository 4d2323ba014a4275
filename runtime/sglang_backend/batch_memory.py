"""The δ-mem math of one attention layer over an SGLang batch: tokens of many requests packed in one [T, d]
tensor, each request's state in a row of a pool. Pure PyTorch + deltamem.kernels, no SGLang: the model hooks
call it, and the tests compare it with MemoryModel on CPU.

A prefill (extend) chunk reads then writes token by token through the ragged scan (delta_rule_varlen); a decode
step (one token per request) goes through the fused single-step kernel. A request that does not write in this
forward has its gate set to zero, which reads the state and leaves it exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deltamem.kernels import delta_rule_varlen
from deltamem.runtime.model.adapter import DeltaMemLayer


@dataclass
class BatchPlan:
    """One forward: which pool rows the requests use, how many tokens each feeds, and which ones write."""

    rows: torch.Tensor  # [B] long: pool rows, one per request, distinct
    lengths: list[int]  # tokens per request in this forward (all 1 when decoding)
    writes: torch.Tensor  # [B] bool
    decode: bool
    mailbox_slots: list[int] = field(default_factory=list)  # per request, -1: not one of ours
    reads: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [T, N*r], filled by layer_memory

    def __post_init__(self) -> None:
        if len(self.lengths) != self.rows.shape[0] or self.writes.shape != self.rows.shape:
            raise ValueError("rows, lengths and writes must give one entry per request")
        if self.decode and any(n != 1 for n in self.lengths):
            raise ValueError("a decode step feeds exactly one token per request")
        offsets = [0]
        for n in self.lengths:
            offsets.append(offsets[-1] + n)
        self.total = offsets[-1]
        self.cu_seqlens = torch.tensor(offsets, dtype=torch.int32, device=self.rows.device)
        lengths = torch.tensor(self.lengths, device=self.rows.device)
        self.token_writes = torch.repeat_interleave(self.writes, lengths, output_size=self.total)


def layer_memory(adapter: DeltaMemLayer, x: torch.Tensor, pool: torch.Tensor, layer: int, plan: BatchPlan):
    """x: [T, d], the layer's attention input for every token of the batch; pool: [P, L, N, r, r] fp32, updated
    in place for the requests that write. Returns the reads [T, N*r] the corrections need."""
    if x.shape[0] != plan.total:
        raise ValueError(f"the batch has {x.shape[0]} tokens, the plan {plan.total}")
    if plan.decode:
        reads, new = adapter.decode_step(x, pool[plan.rows, layer], plan.writes)
        pool[plan.rows, layer] = new
        return reads.flatten(-2)
    q, k, v, beta = adapter.project(x)  # [T, N, r] each
    beta = beta * plan.token_writes[:, None, None].to(beta.dtype)
    reads, final = delta_rule_varlen(q, k, v, beta, plan.cu_seqlens, pool[plan.rows, layer])
    pool[plan.rows, layer] = final
    return reads.flatten(-2)


def correct_qkv(adapter: DeltaMemLayer, qkv: torch.Tensor, reads: torch.Tensor, q_size: int) -> torch.Tensor:
    """SGLang's fused qkv_proj output [T, q + 2 kv] with the query correction added to its q slice (before q_norm
    and RoPE, as in the paper); k and v are untouched."""
    query = adapter.correct_query(qkv[..., :q_size], reads)
    return torch.cat([query, qkv[..., q_size:]], dim=-1)
