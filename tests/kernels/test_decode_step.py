"""The decode step (one token per sequence, read then write its state): the pool-slot step and the functional step
against one token of the scan, the fused projection + step (Triton, and the compiled CPU op) against the projection
then the per-token reference, their input checks, and dispatch between them."""

from __future__ import annotations

import pytest
import torch

from deltamem.kernels import (
    delta_rule_naive,
    delta_rule_step,
    delta_rule_step_naive,
    delta_rule_token_naive,
    memory_decode_step,
    memory_projection_naive,
)
from deltamem.kernels.decode_step import cpu_native
from deltamem.kernels.decode_step.triton_step import delta_rule_step_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
native_op = cpu_native.load()


# ---- the step on a state pool, and the functional step
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_decode_step_updates_pool_slots_in_place(memory_inputs, dtype):
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
def test_decode_step_equals_one_token_of_the_scan(memory_inputs, use_kernels, kernels):
    from deltamem.kernels import delta_rule_decode

    use_kernels(kernels)
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


def test_bad_step_inputs_raise_value_errors(memory_inputs):
    step = memory_inputs((1, 1, 8))
    with pytest.raises(ValueError, match="distinct"):
        delta_rule_step(*[torch.cat([x, x]) for x in step], torch.zeros(3, 1, 8, 8), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"slots must lie in \[0, 3\)"):
        delta_rule_step(*step, torch.zeros(3, 1, 8, 8), torch.tensor([3]))


# ---- projection and step in one call
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
def test_memory_decode_step_equals_projection_then_step(use_kernels, kernels, heads):
    from deltamem.kernels import delta_rule_token_naive, memory_decode_step, memory_projection_naive

    use_kernels(kernels)
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


# ---- the compiled CPU step
NATIVE_CASES = [
    pytest.param(1, 1, 8, 576, True, False, id="B1-N1-r8-d576-write"),
    pytest.param(3, 4, 8, 37, False, True, id="B3-N4-r8-d37-layer-view"),
    pytest.param(4, 2, 5, 130, True, True, id="B4-N2-r5-d130-write-layer-view"),
]


@pytest.mark.compiled_ops
@pytest.mark.parametrize("batch,heads,rank,dim,with_write,layer_view", NATIVE_CASES)
def test_native_step_matches_the_references_and_leaves_the_input_state(batch, heads, rank, dim, with_write, layer_view):
    g = torch.Generator().manual_seed(batch * dim)
    x = torch.randn(batch, dim, generator=g)
    weight = torch.randn(4 * heads * rank, dim, generator=g) / dim**0.5
    bias = torch.randn(heads * rank, generator=g)
    layers = torch.randn(batch, 3, heads, rank, rank, generator=g)
    state = layers[:, 1] if layer_view else layers[:, 1].contiguous()
    write = torch.rand(batch, generator=g) < 0.5 if with_write else None
    q, k, v, beta = memory_projection_naive(x, weight, bias, heads, rank)
    want_reads, want_state = delta_rule_token_naive(
        q, k, v, beta if write is None else beta * write[:, None, None], state
    )
    before = layers.clone()
    reads, new_state = native_op(x, weight, bias, state, write, heads, rank)
    torch.testing.assert_close(reads, want_reads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_state, want_state, rtol=1e-5, atol=1e-6)
    assert torch.equal(layers, before)
    if write is not None:  # a row that does not write keeps its state exactly
        for row in torch.nonzero(~write).flatten().tolist():
            assert torch.equal(new_state[row], state[row])


@pytest.mark.compiled_ops
def test_dispatch_uses_the_native_op_on_cpu_and_the_pytorch_twin_when_asked(use_kernels):
    g = torch.Generator().manual_seed(3)
    x, weight, bias = torch.randn(2, 64, generator=g), torch.randn(32, 64, generator=g) / 8, torch.randn(8, generator=g)
    state = torch.randn(2, 1, 8, 8, generator=g)
    with torch.no_grad():
        use_kernels("native")
        native = memory_decode_step(x, weight, bias, state, 1, 8)
        use_kernels("torch")
        twin = memory_decode_step(x, weight, bias, state, 1, 8)
    for got, want in zip(native, twin, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    use_kernels("native")
    with pytest.raises(ValueError, match="float32"), torch.no_grad():
        memory_decode_step(x.bfloat16(), weight.bfloat16(), bias.bfloat16(), state, 1, 8)


@pytest.mark.compiled_ops
def test_the_op_refuses_malformed_inputs_with_a_reason():
    x, weight, bias, state = torch.randn(2, 16), torch.randn(32, 16), torch.randn(8), torch.zeros(2, 1, 8, 8)
    with pytest.raises(RuntimeError, match="x must be contiguous float32"):
        native_op(x.double(), weight, bias, state, None, 1, 8)
    with pytest.raises(RuntimeError, match="weight must be"):
        native_op(x, weight[:, :15], bias, state, None, 1, 8)
    with pytest.raises(RuntimeError, match="write must be"):
        native_op(x, weight, bias, state, torch.ones(2), 1, 8)
    with pytest.raises(RuntimeError, match="state must be"):
        native_op(x, weight, bias, torch.zeros(2, 1, 8, 7), None, 1, 8)


@pytest.mark.compiled_ops
def test_any_state_layout_is_read_as_its_values():
    """The ops copy the state into a new tensor, so a strided view gives what its contiguous copy gives."""
    g = torch.Generator().manual_seed(4)
    x, weight, bias = torch.randn(2, 16, generator=g), torch.randn(32, 16, generator=g), torch.randn(8, generator=g)
    state = torch.randn(2, 1, 8, 8, generator=g).transpose(2, 3)
    got, want = (
        native_op(x, weight, bias, state, None, 1, 8),
        native_op(x, weight, bias, state.contiguous(), None, 1, 8),
    )
    for got_part, want_part in zip(got, want, strict=True):
        assert torch.equal(got_part, want_part)
