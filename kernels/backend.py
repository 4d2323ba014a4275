"""Which implementation runs: Triton on CUDA tensors, the vectorised PyTorch path elsewhere, and on the CPU the
compiled decode-step op for float32 decode steps when it builds.

DELTAMEM_KERNELS=auto|triton|torch|native forces a choice (this package's one setting, read here and nowhere
else). `triton` on CPU tensors needs TRITON_INTERPRET=1 (the tests use it); `torch` is the plain PyTorch path
everywhere (the twin the fast paths are tested against); `native` is the PyTorch path with the compiled CPU
decode step required (an error, not a fallback, where it cannot be built or the dtype is not float32).
"""

from __future__ import annotations

import functools
import os

import torch

ENV_VAR = "DELTAMEM_KERNELS"
CHOICES = ("auto", "triton", "torch", "native")


def requested() -> str:
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {', '.join(CHOICES)}")
    return value


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def choose(device: torch.device) -> str:
    """'triton' or 'torch' for tensors on `device`."""
    wanted = requested()
    if wanted in ("torch", "native"):
        return "torch"
    can_triton = triton_available() and (device.type == "cuda" or interpreting())
    if wanted == "triton":
        if not can_triton:
            raise RuntimeError(
                f"{ENV_VAR}=triton needs the triton package and a CUDA device (or TRITON_INTERPRET=1 for CPU tensors)"
            )
        return "triton"
    return "triton" if can_triton and device.type == "cuda" else "torch"


def native_decode_op(device: torch.device, dtype: torch.dtype):
    """The compiled CPU decode-step op where dispatch uses it (auto: float32 on CPU, when it builds; native:
    required), else None."""
    wanted = requested()
    if device.type != "cpu" or wanted in ("torch", "triton"):
        return None
    from deltamem.kernels.decode_step import cpu_native

    if wanted == "native":
        if dtype != torch.float32:
            raise ValueError(f"{ENV_VAR}=native runs float32 decode steps only, got {dtype}")
        return cpu_native.load(strict=True)
    return cpu_native.load() if dtype == torch.float32 else None
