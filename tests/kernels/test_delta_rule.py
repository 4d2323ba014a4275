"""The delta rule (read then write, token by token) in every implementation: the per-token reference against the
equations, the chunked PyTorch scan and the Triton scans (under TRITON_INTERPRET=1 on CPU, real Triton with a GPU)
against the reference, outputs and gradients, and the public padded and packed entry points on both backends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltamem.kernels import delta_rule, delta_rule_chunked, delta_rule_naive, delta_rule_varlen
from deltamem.kernels.delta_rule.triton_scan import delta_rule_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}  # compute is fp32 on rounded inputs


# ---- the reference and the chunked PyTorch scan
def make_inputs(batch, seq_len, heads, rank, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.tanh(torch.randn(batch, seq_len, heads, rank, generator=g)), dim=-1)
    k = F.normalize(torch.tanh(torch.randn(batch, seq_len, heads, rank, generator=g)), dim=-1)
    v = torch.randn(batch, seq_len, heads, rank, generator=g)
    beta = torch.sigmoid(torch.randn(batch, seq_len, heads, rank, generator=g))
    state = torch.randn(batch, heads, rank, rank, generator=g) * 0.5
    tensors = [q, k, v, beta, state]
    if requires_grad:
        tensors = [t.clone().requires_grad_(True) for t in tensors]
    return tensors


CASES = [
    pytest.param(1, 1, 1, 8, 32, id="B1-T1-N1-r8"),
    pytest.param(2, 37, 1, 8, 32, id="B2-T37-N1-r8"),
    pytest.param(3, 64, 4, 8, 16, id="B3-T64-N4-r8-C16"),
    pytest.param(2, 130, 2, 5, 32, id="B2-T130-N2-r5"),
    pytest.param(1, 257, 1, 8, 64, id="B1-T257-N1-r8-C64"),
    pytest.param(2, 100, 1, 8, 12, id="B2-T100-N1-r8-C12"),
]


@pytest.mark.parametrize("batch,seq_len,heads,rank,chunk", CASES)
def test_chunked_matches_per_token_reference(batch, seq_len, heads, rank, chunk):
    q, k, v, beta, state = make_inputs(batch, seq_len, heads, rank)
    reads_ref, state_ref = delta_rule_naive(q, k, v, beta, state)
    reads, final = delta_rule_chunked(q, k, v, beta, state, chunk_size=chunk)
    torch.testing.assert_close(reads, reads_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, state_ref, rtol=1e-5, atol=1e-5)


def test_write_mask_skips_writes_but_not_reads():
    q, k, v, beta, state = make_inputs(2, 29, 1, 8, seed=3)
    mask = torch.rand(2, 29, generator=torch.Generator().manual_seed(4)) > 0.4
    reads_ref, state_ref = delta_rule_naive(q, k, v, beta, state, mask)
    reads, final = delta_rule_chunked(q, k, v, beta, state, mask, chunk_size=8)
    torch.testing.assert_close(reads, reads_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, state_ref, rtol=1e-5, atol=1e-5)
    # a fully masked sequence leaves the state untouched and every token reads the initial state
    reads_off, final_off = delta_rule_chunked(q, k, v, beta, state, torch.zeros(2, 29, dtype=torch.bool))
    torch.testing.assert_close(final_off, state)
    torch.testing.assert_close(reads_off, torch.einsum("bnij,btnj->btni", state, q))


def test_reference_follows_the_equations_for_one_token():
    """S = diag(1-beta) S + diag(beta) (v - S k) k^T, with the read m = S_prev q taken before the write."""
    q, k, v, beta, state = make_inputs(1, 1, 1, 3, seed=7)
    reads, final = delta_rule_naive(q, k, v, beta, state)
    s, qv, kv, vv, b = state[0, 0], q[0, 0, 0], k[0, 0, 0], v[0, 0, 0], beta[0, 0, 0]
    expected = torch.empty(3, 3)
    for i in range(3):
        for j in range(3):
            expected[i, j] = (1 - b[i]) * s[i, j] + b[i] * (vv[i] - (s[i] @ kv)) * kv[j]
    torch.testing.assert_close(final[0, 0], expected)
    torch.testing.assert_close(reads[0, 0, 0], s @ qv)


def test_chunking_a_sequence_carries_the_state_exactly():
    q, k, v, beta, state = make_inputs(1, 50, 1, 8, seed=5)
    reads_all, final_all = delta_rule_chunked(q, k, v, beta, state)
    reads_a, mid = delta_rule_chunked(q[:, :17], k[:, :17], v[:, :17], beta[:, :17], state)
    reads_b, final = delta_rule_chunked(q[:, 17:], k[:, 17:], v[:, 17:], beta[:, 17:], mid)
    torch.testing.assert_close(torch.cat([reads_a, reads_b], dim=1), reads_all, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, final_all, rtol=1e-5, atol=1e-5)


def test_gradients_match_reference():
    inputs_ref = make_inputs(2, 45, 2, 8, seed=11, requires_grad=True)
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs_ref]
    g = torch.Generator().manual_seed(12)
    w_reads, w_state = torch.randn(2, 45, 2, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g)

    def loss(fn, tensors):
        reads, final = fn(*tensors)
        return (reads * w_reads).sum() + (final * w_state).sum()

    loss(delta_rule_naive, inputs_ref).backward()
    loss(lambda *t: delta_rule_chunked(*t, chunk_size=16), inputs).backward()
    for name, ref, got in zip("q k v beta state".split(), inputs_ref, inputs, strict=True):
        assert ref.grad.abs().sum() > 0, name
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-4, atol=1e-5, msg=f"grad of {name} differs")


def test_empty_sequence_and_bad_chunk_size():
    q, k, v, beta, state = make_inputs(1, 0, 1, 8)
    reads, final = delta_rule_chunked(q, k, v, beta, state)
    assert reads.shape == (1, 0, 1, 8)
    torch.testing.assert_close(final, state)
    with pytest.raises(ValueError, match="positive"):
        delta_rule_chunked(*make_inputs(1, 4, 1, 8), chunk_size=0)


def test_saturated_gates_stay_finite_and_exact():
    """A gate of exactly 1 (decay 0) overwrites the row; the log-space decays must not turn it into NaN."""
    q, k, v, beta, state = make_inputs(1, 40, 1, 8, seed=13)
    beta[:, 5] = 1.0
    beta[:, 20:23] = 1.0
    beta[:, 30] = 0.0
    reads_ref, state_ref = delta_rule_naive(q, k, v, beta, state)
    reads, final = delta_rule_chunked(q, k, v, beta, state, chunk_size=16)
    assert torch.isfinite(reads).all() and torch.isfinite(final).all()
    torch.testing.assert_close(reads, reads_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, state_ref, rtol=1e-5, atol=1e-5)


# ---- the Triton scans and the public entry points
RAGGED = [
    pytest.param([5, 0, 19, 8], 2, 8, 4, torch.float32, True, id="lens5-0-19-8-N2-r8-BT4-fp32-h0"),
    pytest.param([1, 7, 8, 9], 1, 8, 8, torch.bfloat16, False, id="lens1-7-8-9-N1-r8-BT8-bf16"),
    pytest.param([13, 3], 4, 8, 4, torch.float16, True, id="lens13-3-N4-r8-BT4-fp16-h0"),
    pytest.param([11, 6], 1, 5, 4, torch.float32, True, id="lens11-6-N1-r5-BT4-fp32-h0"),
]


@pytest.mark.parametrize("lengths,heads,rank,block_t,dtype,with_h0", RAGGED)
def test_chunked_scan_matches_reference_on_ragged_batches(memory_inputs, lengths, heads, rank, block_t, dtype, with_h0):
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


def test_public_padded_api_runs_triton_with_write_mask(memory_inputs, use_kernels):
    use_kernels("triton")
    q, k, v, beta = memory_inputs((2, 21, 1, 8), seed=2)
    state = torch.randn(2, 1, 8, 8, device=DEVICE) * 0.3
    mask = torch.rand(2, 21, generator=torch.Generator().manual_seed(3)).to(DEVICE) > 0.3
    reads, final = delta_rule(q, k, v, beta, state, mask)
    ref_reads, ref_final = delta_rule_naive(q, k, v, beta, state, mask)
    torch.testing.assert_close(reads, ref_reads, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(final, ref_final, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_varlen_api_matches_on_both_backends(memory_inputs, use_kernels, kernels):
    use_kernels(kernels)
    q, k, v, beta = memory_inputs((30, 2, 8), seed=4)
    cu = torch.tensor([0, 10, 10, 30], dtype=torch.int32, device=DEVICE)
    reads, final = delta_rule_varlen(q, k, v, beta, cu)
    ref_reads, ref_final = delta_rule_naive(
        *(x[None, 10:30] for x in (q, k, v, beta)), torch.zeros(1, 2, 8, 8, device=DEVICE)
    )
    torch.testing.assert_close(reads[10:30], ref_reads[0], rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(final[2], ref_final[0], rtol=2e-5, atol=2e-5)
    assert final[1].abs().sum() == 0  # an empty sequence keeps its (empty) initial state


def test_bad_inputs_raise_value_errors_with_shapes(memory_inputs):
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


GRAD_CASES = [
    pytest.param([5, 0, 11, 8], 2, 8, 4, True, id="lens5-0-11-8-N2-r8-BT4-h0"),
    pytest.param([9, 3], 1, 5, 4, False, id="lens9-3-N1-r5-BT4"),
]


@pytest.mark.parametrize("lengths,heads,rank,block_t,with_h0", GRAD_CASES)
def test_backward_matches_reference_gradients(memory_inputs, lengths, heads, rank, block_t, with_h0):
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


def test_adapter_training_runs_on_the_kernels(use_kernels, make_tiny_model):
    """A write pass then a read pass on a tiny model: gradients through the Triton scan equal the PyTorch ones."""
    model = make_tiny_model("qwen3").to(DEVICE).train()
    history = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    target = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(2)).to(DEVICE)

    def adapter_grads(kernels):
        use_kernels(kernels)
        model.zero_grad()
        written = model(history, model.empty_state(2, DEVICE), write=True).state
        logits = model(target, written, write=False).logits
        F.cross_entropy(logits[:, :-1].flatten(0, 1), target[:, 1:].flatten()).backward()
        return {name: p.grad.clone() for name, p in model.adapters.named_parameters() if p.grad is not None}

    triton_grads, torch_grads = adapter_grads("triton"), adapter_grads("torch")
    assert triton_grads.keys() == torch_grads.keys() and any("memory_k_proj" in n for n in triton_grads)
    for name in torch_grads:
        torch.testing.assert_close(triton_grads[name], torch_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_sequential_baseline_kernel_matches_reference(memory_inputs):
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
