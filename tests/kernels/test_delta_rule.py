"""The vectorised write scan against the per-token reference, and the reference against the equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltamem.kernels import delta_rule_chunked, delta_rule_naive


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
