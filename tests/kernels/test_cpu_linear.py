"""The backbone's oneDNN linears against F.linear, and a model decoding through them (with the fused q_proj +
memory-projection GEMM) against the plain PyTorch path."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deltamem.kernels import KernelSettings, cpu_linear
from deltamem.kernels.decode_step import cpu_native

needs_onednn = pytest.mark.skipif(not cpu_linear.onednn_available(), reason="this PyTorch build has no oneDNN")


@needs_onednn
@pytest.mark.parametrize("shape", [(5, 40), (2, 3, 40)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_equals_f_linear(use_kernels, shape, with_bias):
    use_kernels(cpu_gemm="onednn")
    g = torch.Generator().manual_seed(len(shape))
    x, weight = torch.randn(*shape, generator=g), torch.randn(24, 40, generator=g)
    bias = torch.randn(24, generator=g) if with_bias else None
    with torch.inference_mode():
        torch.testing.assert_close(cpu_linear.linear(x, weight, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
        strided = torch.randn(40, 7, generator=g).t()  # a non-contiguous input
        torch.testing.assert_close(cpu_linear.linear(strided, weight), F.linear(strided, weight), rtol=1e-5, atol=1e-5)


def test_gradients_and_other_dtypes_take_f_linear(use_kernels):
    """oneDNN's op has no backward: wherever autograd needs one, and for other dtypes, it is F.linear exactly."""
    use_kernels(cpu_gemm="onednn")
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(6, 5, generator=g)
    x = torch.randn(4, 5, generator=g, requires_grad=True)
    cpu_linear.linear(x, weight).square().sum().backward()
    x_twin = x.detach().clone().requires_grad_(True)
    F.linear(x_twin, weight).square().sum().backward()
    assert torch.equal(x.grad, x_twin.grad)
    half = x.detach().to(torch.bfloat16)
    assert torch.equal(cpu_linear.linear(half, weight.to(torch.bfloat16)), F.linear(half, weight.to(torch.bfloat16)))


def test_the_setting_default_is_pytorch_and_a_bad_value_is_refused(use_kernels):
    g = torch.Generator().manual_seed(4)
    x, weight = torch.randn(3, 33, generator=g), torch.randn(17, 33, generator=g)
    use_kernels(cpu_gemm="default")
    with torch.inference_mode():
        assert torch.equal(cpu_linear.linear(x, weight), F.linear(x, weight))
    with pytest.raises(ValueError, match="cpu_gemm 'fastest' is not one of onednn, default"):
        KernelSettings(cpu_gemm="fastest")


def test_install_changes_every_linear_and_keeps_the_outputs(make_tiny_backbone, use_kernels):
    use_kernels(cpu_gemm="onednn")
    plain, fast = make_tiny_backbone("qwen3", seed=2), make_tiny_backbone("qwen3", seed=2)
    linears = sum(isinstance(m, nn.Linear) for m in fast.modules())
    assert cpu_linear.install(fast) == linears > 0
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(fast(ids).logits, plain(ids).logits, rtol=1e-4, atol=1e-4)


def _biased_llama_model():
    """A tiny Llama whose attention projections have biases (the fused q GEMM pads q_proj's bias)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from deltamem.runtime.model.adapter_config import DeltaMemConfig
    from deltamem.runtime.model.memory_model import MemoryModel

    config = AutoConfig.for_model(
        "llama", vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=12, attention_bias=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(11)
    model = MemoryModel(AutoModelForCausalLM.from_config(config).float().eval(), DeltaMemConfig(num_state_heads=2))
    generator = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for layer in model.backbone.model.layers:  # HF initialises biases to zero
            layer.self_attn.q_proj.bias.copy_(torch.randn(layer.self_attn.q_proj.bias.shape, generator=generator))
        for adapter in model.adapters:
            for param in adapter.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


def _decode(model, ids, steps_with_mask=(1, 3)):
    """Prefill ids[:, :3], then decode the rest one token at a time (some steps with a row not writing)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        out = model(ids[:, :3], model.empty_state(ids.shape[0]), past_key_values=cache, use_cache=True)
        logits, state = [out.logits[:, -1:]], out.state
        for t in range(3, ids.shape[1]):
            mask = torch.tensor([[True], [False]]) if t - 3 in steps_with_mask else None
            out = model(ids[:, t : t + 1], state, write_mask=mask, past_key_values=cache, use_cache=True)
            logits.append(out.logits)
            state = out.state
    return torch.cat(logits, dim=1), state


@needs_onednn
@pytest.mark.skipif(cpu_native.load() is None, reason="the compiled CPU op cannot be built here")
@pytest.mark.parametrize("arch", ["llama-bias", "qwen3", "smollm3"])
def test_decoding_through_onednn_and_the_fused_op_equals_the_pytorch_path(use_kernels, make_tiny_model, arch):
    """The serving path (oneDNN linears, q_proj and the memory projection in one GEMM, the compiled decode op)
    against the plain one (F.linear, the torch kernels); then a changed adapter weight and a replaced q_proj
    weight must reach the next decode step (the fused weights are cached)."""
    use_kernels(cpu_gemm="onednn")

    def build():
        return _biased_llama_model() if arch == "llama-bias" else make_tiny_model(arch, seed=9, num_state_heads=2)

    plain, fast = build(), build()
    # q_proj and o_proj keep the model's own forwards (install leaves those alone); those call the GEMMs directly
    assert cpu_linear.install(fast) == sum(isinstance(m, nn.Linear) for m in fast.modules()) - 2 * fast.num_layers
    ids = torch.randint(3, 97, (2, 8), generator=torch.Generator().manual_seed(10))

    def compare():
        use_kernels("torch")
        want = _decode(plain, ids)
        use_kernels("auto")
        got = _decode(fast, ids)
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
        return want

    before = compare()
    with torch.no_grad():
        for model in (plain, fast):
            model.adapters[1].memory_v_proj.mul_(-2.0)
            model.adapters[0].delta_o_proj.add_(0.5)
            query = model.backbone.model.layers[1].self_attn.q_proj
            query.weight.data = query.weight.data * 0.5
    after = compare()
    assert not torch.allclose(after[0], before[0])
