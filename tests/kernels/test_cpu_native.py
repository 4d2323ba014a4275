"""The compiled CPU decode step against its PyTorch twin and the plain references."""

from __future__ import annotations

import pytest
import torch

from deltamem.kernels import delta_rule_token_naive, memory_decode_step, memory_projection_naive
from deltamem.kernels.decode_step import cpu_native

op = cpu_native.load()
pytestmark = pytest.mark.skipif(
    op is None, reason=f"the CPU decode op cannot be built here: {cpu_native._state.get('error')}"
)

CASES = [
    pytest.param(1, 1, 8, 576, True, False, id="B1-N1-r8-d576-write"),
    pytest.param(3, 4, 8, 37, False, True, id="B3-N4-r8-d37-layer-view"),
    pytest.param(4, 2, 5, 130, True, True, id="B4-N2-r5-d130-write-layer-view"),
]


@pytest.mark.parametrize("batch,heads,rank,dim,with_write,layer_view", CASES)
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
    reads, new_state = op(x, weight, bias, state, write, heads, rank)
    torch.testing.assert_close(reads, want_reads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_state, want_state, rtol=1e-5, atol=1e-6)
    assert torch.equal(layers, before)
    if write is not None:  # a row that does not write keeps its state exactly
        for row in torch.nonzero(~write).flatten().tolist():
            assert torch.equal(new_state[row], state[row])


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("onednn", [False, True])
def test_native_decode_layer_is_the_gemm_the_step_and_both_corrections(batch, onednn):
    """The op gets x, [Wq; Wmem] (and q_proj's bias zero-padded) and a layer's slice of a pass state: it must update
    that slice as the references do (and nothing else), return the query x·Wqᵀ + b + scale·reads·Wdqᵀ and
    scale·reads·Wdoᵀ, through either GEMM."""
    from deltamem.kernels import cpu_linear, decode_layer_fn, low_rank_correction

    if onednn and not cpu_linear.onednn_available():
        pytest.skip("this PyTorch build has no oneDNN")
    layer = decode_layer_fn(torch.device("cpu"), torch.float32)
    assert decode_layer_fn(torch.device("cpu"), torch.bfloat16) is None
    heads, rank, dim, q_width = 2, 8, 48, 40
    g = torch.Generator().manual_seed(batch)
    x, weight = torch.randn(batch, 1, dim, generator=g), torch.randn(4 * heads * rank, dim, generator=g) / dim**0.5
    wq, q_bias = torch.randn(q_width, dim, generator=g), torch.randn(q_width, generator=g)
    bias, layers = torch.randn(heads * rank, generator=g), torch.randn(batch, 3, heads, rank, rank, generator=g)
    dq, do = torch.randn(q_width, heads * rank, generator=g), torch.randn(dim, heads * rank, generator=g)
    write = torch.tensor([True, False, True, True][:batch])
    q, k, v, beta = memory_projection_naive(x[:, 0], weight, bias, heads, rank)
    reads, want_state = delta_rule_token_naive(q, k, v, beta * write[:, None, None], layers[:, 1])
    fused, fused_bias = torch.cat([wq, weight]), torch.cat([q_bias, torch.zeros(4 * heads * rank)])
    corrections = (dq.t().contiguous(), do.t().contiguous(), 2.0, heads, rank, onednn)
    before = layers.clone()
    query, co = layer(x, fused, fused_bias, layers[:, 1], write, q_width, bias, *corrections)
    torch.testing.assert_close(layers[:, 1], want_state, rtol=1e-5, atol=1e-6)
    assert torch.equal(layers[:, 0], before[:, 0]) and torch.equal(layers[:, 2], before[:, 2])
    assert torch.equal(layers[1:2, 1], before[1:2, 1])  # the row that does not write keeps its state exactly
    flat = reads.flatten(1)
    want_query = low_rank_correction(x[:, 0] @ wq.t() + q_bias, flat, dq, 2.0)
    torch.testing.assert_close(query, want_query[:, None], rtol=1e-5, atol=1e-5)
    want_o = low_rank_correction(torch.zeros(batch, dim), flat, do, 2.0)
    torch.testing.assert_close(co, want_o[:, None], rtol=1e-5, atol=1e-5)
    state = layers[:, 1].contiguous()
    with pytest.raises(RuntimeError, match="correction weights"):
        layer(x, fused, None, state, write, q_width, bias, dq.t()[:15].contiguous(), *corrections[1:])
    with pytest.raises(RuntimeError, match="weight must be"):
        layer(x, fused, None, state, write, q_width - 1, bias, *corrections)
    with pytest.raises(RuntimeError, match="blocks contiguous"):
        layer(x, fused, None, state.transpose(2, 3), write, q_width, bias, *corrections)


SCAN_CASES = [
    pytest.param(1, 37, 1, 8, 576, False, id="B1-T37-N1-r8-d576"),
    pytest.param(3, 20, 4, 8, 40, True, id="B3-T20-N4-r8-d40-mask"),
    pytest.param(2, 1, 2, 5, 33, True, id="B2-T1-N2-r5-d33-mask"),
    pytest.param(2, 0, 1, 8, 16, False, id="B2-T0-empty"),
]


@pytest.mark.parametrize("batch,tokens,heads,rank,dim,with_mask", SCAN_CASES)
def test_native_scan_matches_the_per_token_reference_and_leaves_the_input_state(
    batch, tokens, heads, rank, dim, with_mask
):
    from deltamem.kernels import delta_rule_naive, memory_scan_fn

    scan = memory_scan_fn(torch.device("cpu"), torch.float32)
    assert memory_scan_fn(torch.device("cpu"), torch.bfloat16) is None
    g = torch.Generator().manual_seed(tokens * 10 + batch)
    x = torch.randn(batch, tokens, dim, generator=g)
    weight = torch.randn(4 * heads * rank, dim, generator=g) / dim**0.5
    bias = torch.randn(heads * rank, generator=g)
    layers = torch.randn(batch, 3, heads, rank, rank, generator=g) * 0.3
    state = layers[:, 1]  # a view into a multi-layer state, as the model passes it
    mask = torch.rand(batch, tokens, generator=g) < 0.7 if with_mask else None
    q, k, v, beta = memory_projection_naive(x, weight, bias, heads, rank)
    want_reads, want_final = delta_rule_naive(q, k, v, beta, state, mask)
    before = layers.clone()
    reads, final = scan(x, weight, bias, state, mask, heads, rank)
    torch.testing.assert_close(reads, want_reads, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, want_final, rtol=1e-5, atol=1e-5)
    assert torch.equal(layers, before)


def test_dispatch_uses_the_native_op_on_cpu_and_the_pytorch_twin_when_asked(monkeypatch):
    g = torch.Generator().manual_seed(3)
    x, weight, bias = torch.randn(2, 64, generator=g), torch.randn(32, 64, generator=g) / 8, torch.randn(8, generator=g)
    state = torch.randn(2, 1, 8, 8, generator=g)
    with torch.no_grad():
        monkeypatch.setenv("DELTAMEM_KERNELS", "native")
        native = memory_decode_step(x, weight, bias, state, 1, 8)
        monkeypatch.setenv("DELTAMEM_KERNELS", "torch")
        twin = memory_decode_step(x, weight, bias, state, 1, 8)
    for got, want in zip(native, twin, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("DELTAMEM_KERNELS", "native")
    with pytest.raises(ValueError, match="float32"), torch.no_grad():
        memory_decode_step(x.bfloat16(), weight.bfloat16(), bias.bfloat16(), state, 1, 8)


def test_the_op_refuses_malformed_inputs_with_a_reason():
    x, weight, bias, state = torch.randn(2, 16), torch.randn(32, 16), torch.randn(8), torch.zeros(2, 1, 8, 8)
    with pytest.raises(RuntimeError, match="x must be contiguous float32"):
        op(x.double(), weight, bias, state, None, 1, 8)
    with pytest.raises(RuntimeError, match="weight must be"):
        op(x, weight[:, :15], bias, state, None, 1, 8)
    with pytest.raises(RuntimeError, match="write must be"):
        op(x, weight, bias, state, torch.ones(2), 1, 8)
    with pytest.raises(RuntimeError, match="state must be"):
        op(x, weight, bias, torch.zeros(2, 1, 8, 7), None, 1, 8)
    scan = cpu_native.op("scan_cpu")
    with pytest.raises(RuntimeError, match="x must be float32"):
        scan(x, weight, bias, state, None, 1, 8)
    with pytest.raises(RuntimeError, match="write must be"):
        scan(x[:, None], weight, bias, state, torch.ones(2, 2, dtype=torch.bool), 1, 8)


def test_any_state_layout_is_read_as_its_values():
    """The ops copy the state into a new tensor, so a strided view gives what its contiguous copy gives."""
    g = torch.Generator().manual_seed(4)
    x, weight, bias = torch.randn(2, 16, generator=g), torch.randn(32, 16, generator=g), torch.randn(8, generator=g)
    state = torch.randn(2, 1, 8, 8, generator=g).transpose(2, 3)
    got, want = op(x, weight, bias, state, None, 1, 8), op(x, weight, bias, state.contiguous(), None, 1, 8)
    for got_part, want_part in zip(got, want, strict=True):
        assert torch.equal(got_part, want_part)


@pytest.mark.parametrize("arch,heads", [("llama", 1), ("qwen3", 4), ("smollm3", 1)])
def test_a_model_decoding_through_the_native_op_equals_its_pytorch_twin(monkeypatch, make_tiny_model, arch, heads):
    """Token-by-token decoding of a tiny model (a masked-out row included): logits and memory through the
    compiled op match the PyTorch decode path."""
    from transformers import DynamicCache

    model = make_tiny_model(arch, seed=5, num_state_heads=heads)
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(6))
    write_mask = torch.tensor([[True], [False]])
    results = {}
    for kernels in ("torch", "native"):
        monkeypatch.setenv("DELTAMEM_KERNELS", kernels)
        state, cache, logits = model.empty_state(2), DynamicCache(), []
        with torch.inference_mode():
            for t in range(ids.shape[1]):
                mask = write_mask if t % 2 else None
                out = model(ids[:, t : t + 1], state, write_mask=mask, past_key_values=cache, use_cache=True)
                state, cache = out.state, out.past_key_values
                logits.append(out.logits)
        results[kernels] = (torch.cat(logits, dim=1), state)
    torch.testing.assert_close(results["native"][0], results["torch"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["native"][1], results["torch"][1], rtol=1e-5, atol=1e-6)
    assert results["torch"][1].abs().sum() > 0  # memory was written


@pytest.mark.parametrize("arch,heads", [("llama", 1), ("qwen3", 4), ("smollm3", 1)])
def test_a_model_writing_through_the_native_scan_equals_its_pytorch_twin(monkeypatch, make_tiny_model, arch, heads):
    """A multi-token pass with writes (a ragged batch: padding masked out of the writes) and a read-only pass
    after it: logits and memory through the compiled scan match the PyTorch projection + chunked scan."""
    model = make_tiny_model(arch, seed=7, num_state_heads=heads)
    ids = torch.randint(3, 97, (2, 19), generator=torch.Generator().manual_seed(8))
    write_mask = torch.ones(2, 19, dtype=torch.bool)
    write_mask[1, 13:] = False
    results = {}
    for kernels in ("torch", "native"):
        monkeypatch.setenv("DELTAMEM_KERNELS", kernels)
        with torch.inference_mode():
            written = model(ids, model.empty_state(2), write_mask=write_mask)
            read = model(ids[:, :5], written.state, write=False)
        results[kernels] = (written.logits, written.state, read.logits)
    for got, want in zip(results["native"], results["torch"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert results["torch"][1].abs().sum() > 0  # memory was written
