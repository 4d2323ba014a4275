"""The compiled CPU memory ops (csrc/decode_step_cpu.cpp), built once per machine with the system C++ compiler.

At batch 1 the PyTorch decode step is dispatch-bound (~15 small operations per layer); the native ops do the
same math in one call per layer (decode_step_cpu, decode_layer_cpu), and scan_cpu does a pass over several tokens
(prefill, memory writes) the same way. It is built on first use with torch.utils.cpp_extension into
<build_root>/torch_extensions (settings.py; the server's cache directory; rebuilt only when the source or torch
changes) and loaded as torch.ops.deltamem.* (`op(name)`). Where it cannot be built (no compiler), `auto` dispatch
falls back to the PyTorch path with one warning; the `native` backend makes that an error instead.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from deltamem.kernels import settings

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "decode_step_cpu.cpp"
_lock = threading.Lock()
_state: dict[str, object] = {}  # "op" once built, or "error" once a build failed


def build_directory() -> Path:
    return settings.current().build_root / "torch_extensions" / f"torch-{torch.__version__.replace('+', '-')}"


def load(strict: bool = False):
    """The op (a callable), or None when it cannot be built here; `strict` raises the build error instead."""
    op = _state.get("op")
    if op is not None:  # every decode step of every layer asks: no lock once built
        return op
    with _lock:
        if "op" not in _state and "error" not in _state:
            try:
                _state["op"] = _build()
            except Exception as exc:  # a missing or failing compiler: keep the reason, use the PyTorch path
                _state["error"] = exc
                log.warning("CPU decode op not built (%s); decode uses the PyTorch path", exc)
        if strict and "error" in _state:
            raise RuntimeError(f"kernels backend 'native': the CPU decode op cannot be built: {_state['error']}")
        return _state.get("op")


def _build():
    from torch.utils import cpp_extension

    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    log.info("loading the CPU decode op (built once into %s; the first build takes about a minute)", directory)
    cpp_extension.load(
        name="deltamem_decode_cpu",
        sources=[str(SOURCE)],
        extra_cflags=["-O3"],
        build_directory=str(directory),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.deltamem.decode_step_cpu


def op(name: str):
    """torch.ops.deltamem.<name> (decode_step_cpu, decode_layer_cpu or scan_cpu), from the one
    build of csrc/decode_step_cpu.cpp; None where that did not build."""
    return None if load() is None else getattr(torch.ops.deltamem, name)
