"""Shared inputs of the kernel tests (memory q, k, v and gates as the projection makes them: unit-norm q and k),
and the `compiled_ops` marker: such a test is skipped, with the build error, where the compiled CPU ops cannot
be built."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_memory_inputs(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.tanh(torch.randn(*shape, generator=g)), dim=-1)
    k = F.normalize(torch.tanh(torch.randn(*shape, generator=g)), dim=-1)
    v = torch.randn(*shape, generator=g)
    beta = torch.sigmoid(torch.randn(*shape, generator=g))
    return [x.to(dtype).to(DEVICE) for x in (q, k, v, beta)]


@pytest.fixture(scope="session")
def memory_inputs():
    """memory_inputs(shape, dtype=float32, seed=0) -> [q, k, v, beta] on the test device (CUDA if present)."""
    return make_memory_inputs


def pytest_configure(config):
    config.addinivalue_line("markers", "compiled_ops: needs the compiled CPU ops (skipped where they cannot be built)")


def pytest_runtest_setup(item):
    if item.get_closest_marker("compiled_ops") is not None:
        from deltamem.kernels.decode_step import cpu_native

        if cpu_native.load() is None:
            pytest.skip(f"the compiled CPU ops cannot be built here: {cpu_native._state.get('error')}")
