"""The plain PyTorch twin of the memory projections and the low-rank corrections (delta-mem.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

L2_EPS = 1e-6


def memory_projection_naive(
    x: torch.Tensor, weight: torch.Tensor, beta_bias: torch.Tensor, heads: int, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: [..., d]; weight: [4 * heads * rank, d], the rows of Wq_m, Wk_m, Wv_m, Wb stacked; beta_bias: [heads * rank].
    Returns q = l2norm(tanh(Wq x)), k = l2norm(tanh(Wk x)) (per state head), v = Wv x, beta = sigmoid(Wb x + b),
    each [..., heads, rank] in fp32."""
    pre = F.linear(x.float(), weight.float()).view(*x.shape[:-1], 4, heads, rank)
    q = F.normalize(torch.tanh(pre[..., 0, :, :]), dim=-1, eps=L2_EPS)
    k = F.normalize(torch.tanh(pre[..., 1, :, :]), dim=-1, eps=L2_EPS)
    v = pre[..., 2, :, :]
    beta = torch.sigmoid(pre[..., 3, :, :] + beta_bias.float().view(heads, rank))
    return q, k, v, beta


def low_rank_correction_naive(
    out: torch.Tensor, reads: torch.Tensor, weight: torch.Tensor, scale: float
) -> torch.Tensor:
    """out + scale * reads @ weight^T. out: [..., D]; reads: [..., W]; weight: [D, W]."""
    return out + scale * F.linear(reads.to(weight.dtype), weight).to(out.dtype)
