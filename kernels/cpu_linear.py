"""The backbone's linear layers on oneDNN for CPU inference.

PyTorch's `F.linear` runs float32 GEMMs on the CPU through MKL's sgemm. On the AMD EPYC (Zen 5) machines this
project runs on, oneDNN's GEMM (shipped inside PyTorch as `torch.ops.mkldnn._linear_pointwise`, the op
TorchInductor emits for CPU linears) does the same products 1.6-3.6x faster: decode at batch 1 and 8 and prefill
(bench/gemm.py measures both on the machine it runs on). Same math, float32 throughout; the sums are ordered
differently, so results agree to float32 rounding, not bit for bit.

It is used only where that is exact and safe: float32 tensors on the CPU outside autograd (the op has no backward,
so training and anything else that needs gradients takes `F.linear`). The `cpu_gemm` setting `default`
(settings.py; the server's --cpu-gemm) keeps PyTorch's own path everywhere; `F.linear` is the twin the tests
compare with.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from deltamem.kernels import settings


@functools.cache
def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_for_inference() -> bool:
    """Whether float32 CPU GEMMs outside autograd go to oneDNN (the compiled decode op asks, to run its own GEMM
    the same way)."""
    return settings.current().cpu_gemm == "onednn" and onednn_available()


def _uses_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return False
    return onednn_for_inference()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), on oneDNN where that applies."""
    if _uses_onednn(x, weight, bias):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def install(module: nn.Module) -> int:
    """Give every nn.Linear in `module` a forward through `linear` (an instance attribute, so the module's class
    and its weights are untouched); returns how many were changed. Linears that already have a forward of their
    own (the adapter's q_proj / o_proj) are left alone. Whether they run on oneDNN is decided at each call, by the
    settings then."""
    count = 0
    for layer in module.modules():
        if isinstance(layer, nn.Linear) and "forward" not in layer.__dict__:
            layer.forward = functools.partial(_forward, layer)
            count += 1
    return count


def _forward(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, layer.weight, layer.bias)
