"""Which implementation runs: Triton on CUDA tensors, the vectorised PyTorch path elsewhere.

DELTAMEM_KERNELS=auto|triton|torch forces a choice (this package's one setting, read here and nowhere else).
`triton` on CPU tensors needs TRITON_INTERPRET=1 (the tests use it); `torch` runs anywhere.
"""

from __future__ import annotations

import functools
import os

import torch

ENV_VAR = "DELTAMEM_KERNELS"
CHOICES = ("auto", "triton", "torch")


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
    if wanted == "torch":
        return "torch"
    can_triton = triton_available() and (device.type == "cuda" or interpreting())
    if wanted == "triton":
        if not can_triton:
            raise RuntimeError(
                f"{ENV_VAR}=triton needs the triton package and a CUDA device (or TRITON_INTERPRET=1 for CPU tensors)"
            )
        return "triton"
    return "triton" if can_triton and device.type == "cuda" else "torch"
