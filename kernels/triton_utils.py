"""Small helpers shared by the Triton kernels: interpreter detection and interpreter-safe autotuning."""

from __future__ import annotations

import triton

from deltamem.kernels.backend import interpreting

# kernel name -> (autotune configs, autotune key), whether or not the interpreter is on: the ahead-of-time
# compile check and the tests read the configs from here
TUNING: dict[str, tuple[list[triton.Config], list[str]]] = {}


def autotune(configs: list[triton.Config], key: list[str]):
    """`triton.autotune`, except under the interpreter, which has no driver to benchmark on: there the kernel
    runs with its launch defaults. Keys must never name a sequence length."""

    def wrap(fn):
        TUNING[fn.__name__ if hasattr(fn, "__name__") else fn.fn.__name__] = (configs, key)
        return fn if interpreting() else triton.autotune(configs=configs, key=key)(fn)

    return wrap


def warp_configs(*num_warps: int) -> list[triton.Config]:
    return [triton.Config({}, num_warps=w) for w in num_warps]
