"""The memory projection (q, k, v and the gate with their activations, Triton against the reference, outputs and
gradients) and the low-rank correction added to q_proj's and o_proj's outputs."""

from __future__ import annotations

import pytest
import torch

from deltamem.kernels import low_rank_correction, low_rank_correction_naive, memory_projection, memory_projection_naive

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PROJECTION_CASES = [
    pytest.param((3, 37), 1, 8, 40, torch.float32, id="B3-T37-N1-r8-d40-fp32"),
    pytest.param((70,), 4, 8, 24, torch.bfloat16, id="M70-N4-r8-d24-bf16"),
    pytest.param((2, 5), 2, 5, 16, torch.float16, id="B2-T5-N2-r5-d16-fp16"),
]


@pytest.mark.parametrize("lead,heads,rank,dim,dtype", PROJECTION_CASES)
def test_memory_projection_forward_and_backward_match_reference(use_kernels, lead, heads, rank, dim, dtype):

    use_kernels("triton")
    g = torch.Generator().manual_seed(21)
    x = torch.randn(*lead, dim, generator=g).to(dtype).to(DEVICE)
    weight = (torch.randn(4 * heads * rank, dim, generator=g) * 0.3).to(DEVICE)
    bias = torch.randn(heads * rank, generator=g).to(DEVICE)
    x[..., :1] *= 0  # a row direction where tanh is ~0 keeps the small-norm branch exercised
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref = [t.clone().requires_grad_() for t in (x, weight, bias)]
    outs = memory_projection(*leaves, heads, rank)
    ref_outs = memory_projection_naive(*ref, heads, rank)
    weights = [torch.randn(o.shape, generator=g).to(DEVICE) for o in ref_outs]
    for got, want in zip(outs, ref_outs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    sum((o * w).sum() for o, w in zip(outs, weights, strict=True)).backward()
    sum((o * w).sum() for o, w in zip(ref_outs, weights, strict=True)).backward()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, got, want in zip(["x", "weight", "beta_bias"], leaves, ref, strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=tol, atol=tol, msg=f"grad of {name} differs")


def test_low_rank_correction_is_one_addmm_equal_to_the_reference():

    g = torch.Generator().manual_seed(22)
    out, reads, weight = (
        torch.randn(2, 5, 36, generator=g),
        torch.randn(2, 5, 8, generator=g),
        torch.randn(36, 8, generator=g),
    )
    torch.testing.assert_close(
        low_rank_correction(out, reads, weight, 2.0), low_rank_correction_naive(out, reads, weight, 2.0)
    )
    with pytest.raises(ValueError, match="weight has shape"):
        low_rank_correction(out, reads, weight[:, :7], 2.0)
