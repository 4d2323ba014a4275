"""Kernel choice: the settings pick one implementation per device and dtype (backend.py), `memory_ops` gives a
model's inference passes always-callable ops, and every implementation of them (the compiled CPU ops, Triton, the
PyTorch twin) equals the references, alone and inside a model."""

from __future__ import annotations

import pytest
import torch

from deltamem.kernels import (
    KernelSettings,
    cpu_linear,
    delta_rule_naive,
    delta_rule_token_naive,
    low_rank_correction,
    memory_ops,
    memory_projection_naive,
)
from deltamem.kernels import backend as kernel_backend
from deltamem.kernels.decode_step import cpu_native

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
compiled = cpu_native.load()
# every implementation this machine can run: the compiled ops only on the CPU, Triton (interpreted) everywhere
IMPLEMENTATIONS = ["torch", "triton"] + (["native"] if DEVICE == "cpu" and compiled is not None else [])


def test_the_settings_choose_the_backend(use_kernels, monkeypatch):
    use_kernels("torch")
    assert kernel_backend.choose(torch.device("cuda")) == "torch"
    use_kernels("auto")
    assert kernel_backend.choose(torch.device("cpu")) == "torch"
    assert kernel_backend.choose(torch.device("cuda")) == ("triton" if kernel_backend.triton_available() else "torch")
    with pytest.raises(ValueError, match="'cuda-please' is not one of auto, triton, torch, native"):
        KernelSettings(backend="cuda-please")
    use_kernels("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # Triton's own setting, read by Triton
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernel_backend.choose(torch.device("cpu"))


def test_memory_ops_are_picked_once_per_settings_device_and_dtype(use_kernels):
    cpu = torch.device("cpu")
    use_kernels("auto")
    auto = memory_ops(cpu, torch.float32)
    assert auto.implementation == ("compiled" if compiled is not None else "torch")
    assert memory_ops("cpu", torch.float32) is auto  # resolved once, not per pass
    assert memory_ops(cpu, torch.bfloat16).implementation == "torch"
    use_kernels("torch")
    assert memory_ops(cpu, torch.float32).implementation == "torch"
    use_kernels("triton")
    assert memory_ops(cpu, torch.float32).implementation == "triton"
    use_kernels("native")
    with pytest.raises(ValueError, match="float32"):
        memory_ops(cpu, torch.bfloat16)


def decode_layer_case(batch: int, with_bias: bool, q_dtype=torch.float32):
    """A layer's weights, its token x [B, 1, d], a [B, 3, N, r, r] pass state, and what the DecodeLayer must give
    for layer slice 1: (query, Δo, the slice's new state), from the projection and the per-token reference."""
    heads, rank, dim, q_width = 2, 8, 48, 40
    g = torch.Generator().manual_seed(batch + 10 * with_bias)
    x = torch.randn(batch, 1, dim, generator=g).to(q_dtype).float()  # the references see the rounded token
    weights = {
        "q_weight": torch.randn(q_width, dim, generator=g).to(q_dtype),
        "q_bias": torch.randn(q_width, generator=g).to(q_dtype) if with_bias else None,
        "memory_weight": torch.randn(4 * heads * rank, dim, generator=g) / dim**0.5,
        "beta_bias": torch.randn(heads * rank, generator=g),
        "delta_q": torch.randn(q_width, heads * rank, generator=g),
        "delta_o": torch.randn(dim, heads * rank, generator=g),
        "scale": 2.0,
        "heads": heads,
        "rank": rank,
    }
    layers = torch.randn(batch, 3, heads, rank, rank, generator=g)
    write = torch.tensor([True, False, True, True][:batch])
    q, k, v, beta = memory_projection_naive(x[:, 0], weights["memory_weight"], weights["beta_bias"], heads, rank)
    reads, want_state = delta_rule_token_naive(q, k, v, beta * write[:, None, None], layers[:, 1])
    flat = reads.flatten(1)
    plain_query = x[:, 0] @ weights["q_weight"].float().t()
    if with_bias:
        plain_query = plain_query + weights["q_bias"].float()
    want_query = low_rank_correction(plain_query, flat, weights["delta_q"], 2.0)
    want_o = low_rank_correction(torch.zeros(batch, dim), flat, weights["delta_o"], 2.0)
    return weights, x.to(q_dtype), layers, write, (want_query[:, None], want_o[:, None], want_state)


@pytest.mark.parametrize("kernels", IMPLEMENTATIONS)
@pytest.mark.parametrize("cpu_gemm", ["onednn", "default"])
@pytest.mark.parametrize("batch,with_bias", [(1, False), (4, True)], ids=["B1", "B4-bias"])
def test_a_decode_layer_is_the_gemm_the_step_and_both_corrections(use_kernels, kernels, cpu_gemm, batch, with_bias):
    """Every implementation gets a layer's slice of a pass state: it must update that slice as the references do
    (and nothing else: a row that does not write keeps its state exactly) and return the query
    x·Wqᵀ + b + scale·reads·Wdqᵀ and scale·reads·Wdoᵀ."""
    if cpu_gemm == "onednn" and not cpu_linear.onednn_available():
        pytest.skip("this PyTorch build has no oneDNN")
    use_kernels(kernels, cpu_gemm=cpu_gemm)
    weights, x, layers, write, (want_query, want_o, want_state) = decode_layer_case(batch, with_bias)
    layer = memory_ops("cpu", torch.float32).decode_layer(**weights)
    before = layers.clone()
    with torch.inference_mode():
        query, delta_o = layer(x, layers[:, 1], write)
    torch.testing.assert_close(layers[:, 1], want_state, rtol=1e-5, atol=1e-6)
    assert torch.equal(layers[:, 0], before[:, 0]) and torch.equal(layers[:, 2], before[:, 2])
    assert torch.equal(layers[1:2, 1], before[1:2, 1])
    torch.testing.assert_close(query, want_query, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(delta_o, want_o, rtol=1e-5, atol=1e-5)


@pytest.mark.compiled_ops
def test_a_backbone_of_another_dtype_takes_the_twin_around_the_compiled_step(use_kernels):
    """The compiled decode layer is float32 throughout: a bfloat16 q_proj gets the PyTorch twin, still exact."""
    use_kernels("auto")
    weights, x, layers, write, (want_query, want_o, want_state) = decode_layer_case(2, True, torch.bfloat16)
    layer = memory_ops("cpu", torch.float32).decode_layer(**weights)
    with torch.inference_mode():
        query, delta_o = layer(x, layers[:, 1], write)
    assert query.dtype == delta_o.dtype == torch.bfloat16
    torch.testing.assert_close(layers[:, 1], want_state, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(query.float(), want_query, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(delta_o.float(), want_o, rtol=2e-2, atol=2e-2)


@pytest.mark.compiled_ops
def test_the_compiled_decode_layer_refuses_malformed_inputs_with_a_reason():
    weights, x, layers, write, _ = decode_layer_case(2, False)
    op, state = cpu_native.op("decode_layer_cpu"), layers[:, 1].contiguous()
    fused = torch.cat([weights["q_weight"], weights["memory_weight"]])
    q_width, bias = weights["q_weight"].shape[0], weights["beta_bias"]
    corrections = (weights["delta_q"].t().contiguous(), weights["delta_o"].t().contiguous(), 2.0, 2, 8, False)
    with pytest.raises(RuntimeError, match="correction weights"):
        op(x, fused, None, state, write, q_width, bias, corrections[0][:15].contiguous(), *corrections[1:])
    with pytest.raises(RuntimeError, match="weight must be"):
        op(x, fused, None, state, write, q_width - 1, bias, *corrections)
    with pytest.raises(RuntimeError, match="blocks contiguous"):
        op(x, fused, None, state.transpose(2, 3), write, q_width, bias, *corrections)


SCAN_CASES = [
    pytest.param(1, 37, 1, 8, 576, False, id="B1-T37-N1-r8-d576"),
    pytest.param(3, 20, 4, 8, 40, True, id="B3-T20-N4-r8-d40-mask"),
    pytest.param(2, 1, 2, 5, 33, True, id="B2-T1-N2-r5-d33-mask"),
    pytest.param(2, 0, 1, 8, 16, False, id="B2-T0-empty"),
]


@pytest.mark.parametrize("kernels", IMPLEMENTATIONS)
@pytest.mark.parametrize("batch,tokens,heads,rank,dim,with_mask", SCAN_CASES)
def test_the_scan_matches_the_per_token_reference_and_leaves_the_input_state(
    use_kernels, kernels, batch, tokens, heads, rank, dim, with_mask
):
    use_kernels(kernels)
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
    with torch.inference_mode():
        reads, final = memory_ops("cpu", torch.float32).scan(x, weight, bias, state, mask, heads, rank)
    torch.testing.assert_close(reads, want_reads, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, want_final, rtol=1e-5, atol=1e-5)
    assert torch.equal(layers, before)


@pytest.mark.compiled_ops
def test_the_compiled_scan_refuses_malformed_inputs_with_a_reason():
    x, weight, bias, state = torch.randn(2, 16), torch.randn(32, 16), torch.randn(8), torch.zeros(2, 1, 8, 8)
    scan = cpu_native.op("scan_cpu")
    with pytest.raises(RuntimeError, match="x must be float32"):
        scan(x, weight, bias, state, None, 1, 8)
    with pytest.raises(RuntimeError, match="write must be"):
        scan(x[:, None], weight, bias, state, torch.ones(2, 2, dtype=torch.bool), 1, 8)


# ---- inside a model ---------------------------------------------------------------------------------------------
@pytest.mark.compiled_ops
@pytest.mark.parametrize("arch,heads", [("llama", 1), ("qwen3", 4), ("smollm3", 1)])
def test_a_model_decoding_through_the_compiled_ops_equals_its_pytorch_twin(use_kernels, make_tiny_model, arch, heads):
    """Token-by-token decoding of a tiny model (a masked-out row included): logits and memory through the
    compiled op match the PyTorch decode path."""
    from transformers import DynamicCache

    model = make_tiny_model(arch, seed=5, num_state_heads=heads)
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(6))
    write_mask = torch.tensor([[True], [False]])
    results = {}
    for kernels in ("torch", "native"):
        use_kernels(kernels)
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


@pytest.mark.compiled_ops
@pytest.mark.parametrize("arch,heads", [("llama", 1), ("qwen3", 4), ("smollm3", 1)])
def test_a_model_writing_through_the_compiled_scan_equals_its_pytorch_twin(use_kernels, make_tiny_model, arch, heads):
    """A multi-token pass with writes (a ragged batch: padding masked out of the writes) and a read-only pass
    after it: logits and memory through the compiled scan match the PyTorch projection + chunked scan."""
    model = make_tiny_model(arch, seed=7, num_state_heads=heads)
    ids = torch.randint(3, 97, (2, 19), generator=torch.Generator().manual_seed(8))
    write_mask = torch.ones(2, 19, dtype=torch.bool)
    write_mask[1, 13:] = False
    results = {}
    for kernels in ("torch", "native"):
        use_kernels(kernels)
        with torch.inference_mode():
            written = model(ids, model.empty_state(2), write_mask=write_mask)
            read = model(ids[:, :5], written.state, write=False)
        results[kernels] = (written.logits, written.state, read.logits)
    for got, want in zip(results["native"], results["torch"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert results["torch"][1].abs().sum() > 0  # memory was written
