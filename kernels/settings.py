"""The kernels' three settings, set by whoever configures the process: the server from its configuration
(service/config.py, flags --kernels and --cpu-gemm and the cache directory), a benchmark or a test. This package
reads no environment variable of its own.

- `backend`: auto | triton | torch | native. `auto` runs Triton on CUDA tensors, the PyTorch path elsewhere and, on
  the CPU, the compiled ops for float32 where they build. `triton` forces Triton (CPU tensors need Triton's
  interpreter, TRITON_INTERPRET=1, as the tests use it); `torch` is the plain PyTorch path everywhere, the twin the
  fast paths are tested against; `native` is the PyTorch path with the compiled CPU ops required (an error, not a
  fallback, where they cannot be built or the dtype is not float32).
- `cpu_gemm`: onednn | default: float32 CPU GEMMs outside autograd on oneDNN (cpu_linear.py), or PyTorch's own.
- `build_root`: where the compiled CPU ops are built, under torch_extensions/ (the server's cache directory).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

BACKENDS = ("auto", "triton", "torch", "native")
CPU_GEMMS = ("onednn", "default")
DEFAULT_BUILD_ROOT = Path.home() / ".cache" / "deltamem"


@dataclass(frozen=True)
class KernelSettings:
    backend: str = "auto"
    cpu_gemm: str = "onednn"
    build_root: Path = DEFAULT_BUILD_ROOT

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"kernels backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.cpu_gemm not in CPU_GEMMS:
            raise ValueError(f"cpu_gemm {self.cpu_gemm!r} is not one of {', '.join(CPU_GEMMS)}")


_current = KernelSettings()


def current() -> KernelSettings:
    return _current


def configure(settings: KernelSettings | None = None, **changes) -> KernelSettings:
    """Use `settings` (or the current ones with `changes`) from now on; returns the settings they replace."""
    global _current
    previous = _current
    _current = replace(settings or previous, **changes)
    return previous


@contextmanager
def using(**changes) -> Iterator[KernelSettings]:
    """The current settings with `changes` inside the block, the previous ones after it."""
    previous = configure(**changes)
    try:
        yield _current
    finally:
        configure(previous)
