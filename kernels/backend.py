"""Which implementation runs, by the kernels' settings (settings.py): Triton on CUDA tensors, the vectorised
PyTorch path elsewhere, and on the CPU the compiled ops for float32 when they build."""

from __future__ import annotations

import functools

import torch

from deltamem.kernels import settings


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether Triton runs its interpreter (its own TRITON_INTERPRET setting, which Triton reads)."""
    if not triton_available():
        return False
    import triton

    return bool(triton.knobs.runtime.interpret)


def choose(device: torch.device) -> str:
    """'triton' or 'torch' for tensors on `device`."""
    wanted = settings.current().backend
    if wanted in ("torch", "native"):
        return "torch"
    can_triton = triton_available() and (device.type == "cuda" or interpreting())
    if wanted == "triton":
        if not can_triton:
            raise RuntimeError(
                "kernels backend 'triton' needs the triton package and a CUDA device "
                "(or Triton's interpreter, TRITON_INTERPRET=1, for CPU tensors)"
            )
        return "triton"
    return "triton" if can_triton and device.type == "cuda" else "torch"


def native_op(device: torch.device, dtype: torch.dtype):
    """The compiled CPU ops' loader result where dispatch uses them (auto: float32 on CPU, when they build;
    native: required), else None."""
    wanted = settings.current().backend
    if device.type != "cpu" or wanted in ("torch", "triton"):
        return None
    from deltamem.kernels.decode_step import cpu_native

    if wanted == "native":
        if dtype != torch.float32:
            raise ValueError(f"kernels backend 'native' runs float32 only, got {dtype}")
        return cpu_native.load(strict=True)
    return cpu_native.load() if dtype == torch.float32 else None
