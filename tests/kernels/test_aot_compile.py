"""Every Triton kernel and every autotune config compiles to a cubin for sm_90 and sm_80, with no GPU present
(scripts/aot_check.py, a development check: it is not shipped inside the package)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "aot_check.py"


@pytest.fixture(scope="module")
def aot(load_script):
    return load_script("aot_check")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))  # compile for real, not from a cache
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_kernel_config_and_target_compiles(aot, compiled):
    got = {(row["kernel"], row["arch"], row["num_warps"]) for row in compiled if row["cubin_bytes"] > 0}
    for spec in aot.kernel_specs():
        for arch in (90, 80):
            for num_warps in aot.configs_of(spec):
                assert (spec.name, arch, num_warps) in got, f"{spec.name} sm_{arch} num_warps={num_warps}"


def test_input_dtypes_compile_for_kernels_that_read_inputs(compiled):
    dtypes = {row["dtype"] for row in compiled if row["kernel"] == "chunk_output_kernel"}
    assert dtypes == {"bf16", "fp16", "fp32"}


def test_kernels_on_live_state_are_pinned_not_autotuned(aot):
    pinned = [spec for spec in aot.kernel_specs() if spec.pinned_num_warps is not None]
    # the live-state step and the reference-layout baseline; the fused decode kernel is pinned for launch cost
    assert {spec.name for spec in pinned} == {"decode_step_kernel", "sequential_row_scan_kernel", "fused_decode_kernel"}
    tuned = [spec for spec in aot.kernel_specs() if spec.pinned_num_warps is None]
    assert tuned
    for spec in tuned:
        key = aot.tuning_key(spec)
        # keys are shape constants only (heads, rank), never a length that varies per request
        assert key and set(key) <= {"N", "R"}, (spec.name, key)


def test_every_triton_kernel_in_the_package_is_in_the_compile_check(aot):
    """A new kernel cannot slip past the AOT check: every *_kernel in deltamem.kernels must have a spec."""
    import importlib
    import pkgutil

    import deltamem.kernels as package

    found = set()
    for module_info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(module_info.name)
        found |= {name for name in vars(module) if name.endswith("_kernel") and not name.startswith("_")}
    assert found == {spec.name for spec in aot.kernel_specs()}


def test_the_compile_check_is_not_shipped_in_the_package():
    import importlib.util

    assert importlib.util.find_spec("deltamem.kernels.aot_check") is None
