"""Triton kernels against their references: under TRITON_INTERPRET=1 on CPU, on real Triton with a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltamem.kernels import (
    delta_rule,
    delta_rule_naive,
    delta_rule_step,
    delta_rule_step_naive,
    delta_rule_varlen,
)
from deltamem.kernels.decode_step.triton_step import delta_rule_step_triton
from deltamem.kernels.delta_rule.triton_scan import delta_rule_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}  # compute is fp32 on rounded inputs


def memory_inputs(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.tanh(torch.randn(*shape, generator=g)), dim=-1)
    k = F.normalize(torch.tanh(torch.randn(*shape, generator=g)), dim=-1)
    v = torch.randn(*shape, generator=g)
    beta = torch.sigmoid(torch.randn(*shape, generator=g))
    return [x.to(dtype).to(DEVICE) for x in (q, k, v, beta)]


RAGGED = [
    pytest.param([5, 0, 19, 8], 2, 8, 4, torch.float32, True, id="lens5-0-19-8-N2-r8-BT4-fp32-h0"),
    pytest.param([1, 7, 8, 9], 1, 8, 8, torch.bfloat16, False, id="lens1-7-8-9-N1-r8-BT8-bf16"),
    pytest.param([13, 3], 4, 8, 4, torch.float16, True, id="lens13-3-N4-r8-BT4-fp16-h0"),
    pytest.param([11, 6], 1, 5, 4, torch.float32, True, id="lens11-6-N1-r5-BT4-fp32-h0"),
]


@pytest.mark.parametrize("lengths,heads,rank,block_t,dtype,with_h0", RAGGED)
def test_chunked_scan_matches_reference_on_ragged_batches(lengths, heads, rank, block_t, dtype, with_h0):
    total = sum(lengths)
    q, k, v, beta = memory_inputs((total, heads, rank), dtype)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    h0 = torch.randn(len(lengths), heads, rank, rank, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    reads, final = delta_rule_triton(q, k, v, beta, cu, h0 if with_h0 else None, block_t=block_t)
    for index, (start, end) in enumerate(zip(cu.tolist(), cu.tolist()[1:], strict=False)):
        init = h0[index : index + 1] if with_h0 else torch.zeros(1, heads, rank, rank, device=DEVICE)
        ref_reads, ref_final = delta_rule_naive(*(x[None, start:end] for x in (q, k, v, beta)), init)
        torch.testing.assert_close(reads[start:end], ref_reads[0], rtol=TOL[dtype], atol=TOL[dtype])
        torch.testing.assert_close(final[index], ref_final[0], rtol=TOL[dtype], atol=TOL[dtype])


def test_public_padded_api_runs_triton_with_write_mask(monkeypatch):
    monkeypatch.setenv("DELTAMEM_KERNELS", "triton")
    q, k, v, beta = memory_inputs((2, 21, 1, 8), seed=2)
    state = torch.randn(2, 1, 8, 8, device=DEVICE) * 0.3
    mask = torch.rand(2, 21, generator=torch.Generator().manual_seed(3)).to(DEVICE) > 0.3
    reads, final = delta_rule(q, k, v, beta, state, mask)
    ref_reads, ref_final = delta_rule_naive(q, k, v, beta, state, mask)
    torch.testing.assert_close(reads, ref_reads, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(final, ref_final, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_varlen_api_matches_on_both_backends(monkeypatch, kernels):
    monkeypatch.setenv("DELTAMEM_KERNELS", kernels)
    q, k, v, beta = memory_inputs((30, 2, 8), seed=4)
    cu = torch.tensor([0, 10, 10, 30], dtype=torch.int32, device=DEVICE)
    reads, final = delta_rule_varlen(q, k, v, beta, cu)
    ref_reads, ref_final = delta_rule_naive(
        *(x[None, 10:30] for x in (q, k, v, beta)), torch.zeros(1, 2, 8, 8, device=DEVICE)
    )
    torch.testing.assert_close(reads[10:30], ref_reads[0], rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(final[2], ref_final[0], rtol=2e-5, atol=2e-5)
    assert final[1].abs().sum() == 0  # an empty sequence keeps its (empty) initial state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_decode_step_updates_pool_slots_in_place(dtype):
    pool = torch.randn(6, 3, 2, 8, 8, generator=torch.Generator().manual_seed(5)).to(DEVICE)  # [P, L, N, r, r]
    slots = torch.tensor([4, 0, 2], device=DEVICE)
    q, k, v, beta = memory_inputs((3, 2, 8), dtype, seed=6)
    expected_pool = pool.clone()
    expected_reads = delta_rule_step_naive(q, k, v, beta, expected_pool[:, 1], slots)
    reads = delta_rule_step_triton(q, k, v, beta, pool[:, 1], slots)
    torch.testing.assert_close(reads, expected_reads, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(pool, expected_pool, rtol=2e-5, atol=2e-5)
    untouched = [1, 3, 5]
    assert torch.equal(pool[untouched], expected_pool[untouched])


@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_decode_step_equals_one_token_of_the_scan(monkeypatch, kernels):
    from deltamem.kernels import delta_rule_decode

    monkeypatch.setenv("DELTAMEM_KERNELS", kernels)
    q, k, v, beta = memory_inputs((2, 1, 1, 8), seed=7)
    state = torch.randn(2, 1, 8, 8, device=DEVICE)
    reads_scan, final_scan = delta_rule_naive(q, k, v, beta, state)
    pool = state.clone()
    reads_step = delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], pool, torch.arange(2, device=DEVICE))
    torch.testing.assert_close(reads_step, reads_scan[:, 0], rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(pool, final_scan, rtol=2e-5, atol=2e-5)
    before = state.clone()
    reads_fn, new_state = delta_rule_decode(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], state)
    torch.testing.assert_close(reads_fn, reads_scan[:, 0], rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(new_state, final_scan, rtol=2e-5, atol=2e-5)
    assert torch.equal(state, before)  # functional: the input state is untouched


def test_bad_inputs_raise_value_errors_with_shapes():
    q, k, v, beta = memory_inputs((1, 4, 1, 8))
    with pytest.raises(ValueError, match=r"k has shape \[1, 4, 1, 7\]"):
        delta_rule(q, k[..., :7], v, beta, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="float32"):
        delta_rule(q, k, v, beta, torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype torch.int64"):
        delta_rule(q, k, v, beta.long(), torch.zeros(1, 1, 8, 8))
    flat = [x[0] for x in (q, k, v, beta)]
    with pytest.raises(ValueError, match="cu_seqlens must rise"):
        delta_rule_varlen(*flat, torch.tensor([0, 3, 2, 4]))
    step = [x[:, 0] for x in (q, k, v, beta)]
    with pytest.raises(ValueError, match="distinct"):
        delta_rule_step(*[torch.cat([x, x]) for x in step], torch.zeros(3, 1, 8, 8), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"slots must lie in \[0, 3\)"):
        delta_rule_step(*step, torch.zeros(3, 1, 8, 8), torch.tensor([3]))


def test_backend_choice(monkeypatch):
    from deltamem.kernels import backend

    monkeypatch.setenv("DELTAMEM_KERNELS", "torch")
    assert backend.choose(torch.device("cuda")) == "torch"
    monkeypatch.setenv("DELTAMEM_KERNELS", "auto")
    assert backend.choose(torch.device("cpu")) == "torch"
    assert backend.choose(torch.device("cuda")) == ("triton" if backend.triton_available() else "torch")
    monkeypatch.setenv("DELTAMEM_KERNELS", "cuda-please")
    with pytest.raises(ValueError, match="not one of"):
        backend.choose(torch.device("cpu"))
    monkeypatch.setenv("DELTAMEM_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        backend.choose(torch.device("cpu"))


GRAD_CASES = [
    pytest.param([5, 0, 11, 8], 2, 8, 4, True, id="lens5-0-11-8-N2-r8-BT4-h0"),
    pytest.param([9, 3], 1, 5, 4, False, id="lens9-3-N1-r5-BT4"),
]


@pytest.mark.parametrize("lengths,heads,rank,block_t,with_h0", GRAD_CASES)
def test_backward_matches_reference_gradients(lengths, heads, rank, block_t, with_h0):
    total = sum(lengths)
    leaves = [x.requires_grad_() for x in memory_inputs((total, heads, rank), seed=11)]
    h0 = torch.randn(len(lengths), heads, rank, rank, generator=torch.Generator().manual_seed(12)).to(DEVICE)
    h0.requires_grad_(with_h0)
    ref_leaves = [x.detach().clone().requires_grad_() for x in leaves]
    ref_h0 = h0.detach().clone().requires_grad_(with_h0)
    g = torch.Generator().manual_seed(13)
    w_reads = torch.randn(total, heads, rank, generator=g).to(DEVICE)
    w_final = torch.randn(len(lengths), heads, rank, rank, generator=g).to(DEVICE)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)

    reads, final = delta_rule_triton(*leaves, cu, h0 if with_h0 else None, block_t=block_t)
    ((reads * w_reads).sum() + (final * w_final).sum()).backward()
    loss = 0.0
    bounds = cu.tolist()
    for index, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        init = ref_h0[index : index + 1] if with_h0 else torch.zeros(1, heads, rank, rank, device=DEVICE)
        r, f = delta_rule_naive(*(x[None, start:end] for x in ref_leaves), init)
        loss = loss + (r[0] * w_reads[start:end]).sum() + (f[0] * w_final[index]).sum()
    loss.backward()
    names = ["q", "k", "v", "beta"] + (["h0"] if with_h0 else [])
    pairs = list(zip(leaves, ref_leaves, strict=True)) + ([(h0, ref_h0)] if with_h0 else [])
    for name, (got, ref) in zip(names, pairs, strict=True):
        assert ref.grad.abs().max() > 0, name
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-4, atol=1e-5, msg=f"grad of {name} differs")


def test_adapter_training_runs_on_the_kernels(monkeypatch, make_tiny_model):
    """A write pass then a read pass on a tiny model: gradients through the Triton scan equal the PyTorch ones."""
    model = make_tiny_model("qwen3").to(DEVICE).train()
    history = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    target = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(2)).to(DEVICE)

    def adapter_grads(kernels):
        monkeypatch.setenv("DELTAMEM_KERNELS", kernels)
        model.zero_grad()
        written = model(history, model.empty_state(2, DEVICE), write=True).state
        logits = model(target, written, write=False).logits
        F.cross_entropy(logits[:, :-1].flatten(0, 1), target[:, 1:].flatten()).backward()
        return {name: p.grad.clone() for name, p in model.adapters.named_parameters() if p.grad is not None}

    triton_grads, torch_grads = adapter_grads("triton"), adapter_grads("torch")
    assert triton_grads.keys() == torch_grads.keys() and any("memory_k_proj" in n for n in triton_grads)
    for name in torch_grads:
        torch.testing.assert_close(triton_grads[name], torch_grads[name], rtol=1e-4, atol=1e-6, msg=name)


PROJECTION_CASES = [
    pytest.param((3, 37), 1, 8, 40, torch.float32, id="B3-T37-N1-r8-d40-fp32"),
    pytest.param((70,), 4, 8, 24, torch.bfloat16, id="M70-N4-r8-d24-bf16"),
    pytest.param((2, 5), 2, 5, 16, torch.float16, id="B2-T5-N2-r5-d16-fp16"),
]


@pytest.mark.parametrize("lead,heads,rank,dim,dtype", PROJECTION_CASES)
def test_memory_projection_forward_and_backward_match_reference(monkeypatch, lead, heads, rank, dim, dtype):
    from deltamem.kernels import memory_projection, memory_projection_naive

    monkeypatch.setenv("DELTAMEM_KERNELS", "triton")
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
    from deltamem.kernels import low_rank_correction, low_rank_correction_naive

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


def test_sequential_baseline_kernel_matches_reference():
    """The benchmark baseline (the reference layout) must be correct for its ratio to mean anything."""
    from deltamem.kernels.delta_rule.triton_sequential import delta_rule_sequential_triton

    q, k, v, beta = memory_inputs((17, 2, 8), seed=31)
    cu = torch.tensor([0, 6, 17], dtype=torch.int32, device=DEVICE)
    h0 = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(32)).to(DEVICE)
    reads, final = delta_rule_sequential_triton(q, k, v, beta, cu, h0)
    for index, (start, end) in enumerate([(0, 6), (6, 17)]):
        ref_reads, ref_final = delta_rule_naive(*(x[None, start:end] for x in (q, k, v, beta)), h0[index : index + 1])
        torch.testing.assert_close(reads[start:end], ref_reads[0], rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(final[index], ref_final[0], rtol=2e-5, atol=2e-5)


FUSED_DECODE = [
    pytest.param(3, 1, 8, 40, torch.float32, True, False, id="B3-N1-r8-d40-fp32-write"),
    pytest.param(2, 4, 8, 300, torch.float32, False, True, id="B2-N4-r8-d300-fp32-layer-view"),
    pytest.param(4, 2, 5, 129, torch.bfloat16, True, True, id="B4-N2-r5-d129-bf16-write-layer-view"),
    pytest.param(1, 1, 8, 576, torch.float16, False, False, id="B1-N1-r8-d576-fp16"),
]


@pytest.mark.parametrize("batch,heads,rank,dim,dtype,with_write,layer_view", FUSED_DECODE)
def test_fused_decode_kernel_matches_projection_then_token_reference(
    batch, heads, rank, dim, dtype, with_write, layer_view
):
    """The one-kernel decode step against the plain references: fp32 projection of the rounded inputs, then
    the per-token delta rule; the input state (a strided layer view of a [B, L, N, r, r] pool here) untouched."""
    from deltamem.kernels import delta_rule_token_naive, memory_projection_naive
    from deltamem.kernels.decode_step.triton_fused import memory_decode_step_triton

    g = torch.Generator().manual_seed(dim + batch)
    x = torch.randn(batch, dim, generator=g).to(dtype).to(DEVICE)
    weight = (torch.randn(4 * heads * rank, dim, generator=g) / dim**0.5).to(dtype).to(DEVICE)
    bias = torch.randn(heads * rank, generator=g).to(dtype).to(DEVICE)
    layers = torch.randn(batch, 3, heads, rank, rank, generator=g).to(DEVICE)
    state = layers[:, 1] if layer_view else layers[:, 1].contiguous()
    write = torch.rand(batch, generator=g).to(DEVICE) < 0.6 if with_write else None
    q, k, v, beta = memory_projection_naive(x.float(), weight.float(), bias.float(), heads, rank)
    if write is not None:
        beta = beta * write[:, None, None]
    want_reads, want_state = delta_rule_token_naive(q, k, v, beta, state)
    before = layers.clone()
    reads, new_state = memory_decode_step_triton(x, weight, bias, state, heads, rank, write)
    torch.testing.assert_close(reads, want_reads, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(new_state, want_state, rtol=2e-5, atol=2e-5)
    assert torch.equal(layers, before)


def test_memory_decode_step_refuses_mismatched_inputs():
    from deltamem.kernels import memory_decode_step

    x, weight, bias = torch.randn(2, 16), torch.randn(32, 16), torch.randn(8)
    state = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="weight"):
        memory_decode_step(x, torch.randn(32, 15), bias, state, 1, 8)
    with pytest.raises(ValueError, match="state has shape"):
        memory_decode_step(x, weight, bias, torch.zeros(3, 1, 8, 8), 1, 8)
    with pytest.raises(ValueError, match="float32"):
        memory_decode_step(x, weight, bias, state.double(), 1, 8)
    with pytest.raises(ValueError, match="bool"):
        memory_decode_step(x, weight, bias, state, 1, 8, torch.ones(2))


@pytest.mark.parametrize("kernels", ["torch", "triton", "native"] if DEVICE == "cpu" else ["torch", "triton"])
@pytest.mark.parametrize("heads", [1, 4])
def test_memory_decode_step_equals_projection_then_step(monkeypatch, kernels, heads):
    from deltamem.kernels import delta_rule_token_naive, memory_decode_step, memory_projection_naive

    monkeypatch.setenv("DELTAMEM_KERNELS", kernels)
    g = torch.Generator().manual_seed(41)
    x = torch.randn(3, 40, generator=g).to(DEVICE)
    weight = (torch.randn(4 * heads * 8, 40, generator=g) * 0.3).to(DEVICE)
    bias = torch.randn(heads * 8, generator=g).to(DEVICE)
    state = torch.randn(3, heads, 8, 8, generator=g).to(DEVICE)
    write = torch.tensor([True, False, True], device=DEVICE)
    q, k, v, beta = memory_projection_naive(x, weight, bias, heads, 8)
    want_reads, want_state = delta_rule_token_naive(q, k, v, beta * write[:, None, None], state)
    before = state.clone()
    with torch.no_grad():  # the one-call kernels run outside autograd
        reads, new_state = memory_decode_step(x, weight, bias, state, heads, 8, write)
    torch.testing.assert_close(reads, want_reads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_state, want_state, rtol=1e-5, atol=1e-6)
    assert torch.equal(new_state[1], before[1]) and torch.equal(state, before)
