"""Compile every Triton kernel, with every autotune config, for GPU targets, without a GPU.

    python scripts/aot_check.py [--arch 90 80] [--json]

The interpreter accepts code that a GPU compiler rejects; this proves each kernel lowers to a cubin for
sm_90 and sm_80. Must run with TRITON_INTERPRET unset (the test suite runs it in a subprocess). A development
check of the installed `deltamem.kernels`, so it lives here and is not shipped with the package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

INPUT_DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class KernelSpec:
    name: str
    kernel: object  # a JITFunction or an Autotuner around one
    # argument -> triton type; "IN" stands for the input dtype under test
    signature: dict[str, str]
    constexprs: dict[str, int]
    pinned_num_warps: int | None = None  # kernels that mutate live state are never autotuned


def kernel_specs() -> list[KernelSpec]:
    from deltamem.kernels.decode_step import triton_fused, triton_step
    from deltamem.kernels.delta_rule import triton_scan
    from deltamem.kernels.delta_rule import triton_scan_backward as bwd
    from deltamem.kernels.delta_rule import triton_sequential as seq
    from deltamem.kernels.memory_projection import triton_activations as act

    scan_consts = {"N": 1, "R": 8, "BR": 8, "BT": triton_scan.DEFAULT_BLOCK_T}
    return [
        KernelSpec(
            "chunk_summary_kernel",
            triton_scan.chunk_summary_kernel,
            {
                "k_ptr": "*IN",
                "v_ptr": "*IN",
                "beta_ptr": "*IN",
                "chunk_seq_ptr": "*i32",
                "chunk_bos_ptr": "*i32",
                "cu_seqlens_ptr": "*i32",
                "trans_ptr": "*fp32",
                "inp_ptr": "*fp32",
                "num_chunks": "i32",
            },
            scan_consts,
        ),
        KernelSpec(
            "chunk_carry_kernel",
            triton_scan.chunk_carry_kernel,
            {
                "trans_ptr": "*fp32",
                "inp_ptr": "*fp32",
                "h0_ptr": "*fp32",
                "chunk_state_ptr": "*fp32",
                "ht_ptr": "*fp32",
                "cu_chunks_ptr": "*i32",
            },
            {"N": 1, "R": 8, "BR": 8, "HAS_H0": True},
        ),
        KernelSpec(
            "chunk_output_kernel",
            triton_scan.chunk_output_kernel,
            {
                "q_ptr": "*IN",
                "k_ptr": "*IN",
                "v_ptr": "*IN",
                "beta_ptr": "*IN",
                "chunk_seq_ptr": "*i32",
                "chunk_bos_ptr": "*i32",
                "cu_seqlens_ptr": "*i32",
                "chunk_state_ptr": "*fp32",
                "reads_ptr": "*fp32",
            },
            scan_consts,
        ),
        KernelSpec(
            "chunk_backward_summary_kernel",
            bwd.chunk_backward_summary_kernel,
            {
                "q_ptr": "*IN",
                "k_ptr": "*IN",
                "beta_ptr": "*IN",
                "dreads_ptr": "*fp32",
                "chunk_seq_ptr": "*i32",
                "chunk_bos_ptr": "*i32",
                "cu_seqlens_ptr": "*i32",
                "dinp_ptr": "*fp32",
            },
            scan_consts,
        ),
        KernelSpec(
            "chunk_backward_carry_kernel",
            bwd.chunk_backward_carry_kernel,
            {
                "trans_ptr": "*fp32",
                "dinp_ptr": "*fp32",
                "dht_ptr": "*fp32",
                "chunk_dstate_ptr": "*fp32",
                "dh0_ptr": "*fp32",
                "cu_chunks_ptr": "*i32",
            },
            {"N": 1, "R": 8, "BR": 8, "HAS_DHT": True},
        ),
        KernelSpec(
            "chunk_backward_output_kernel",
            bwd.chunk_backward_output_kernel,
            {
                "q_ptr": "*IN",
                "k_ptr": "*IN",
                "v_ptr": "*IN",
                "beta_ptr": "*IN",
                "dreads_ptr": "*fp32",
                "chunk_seq_ptr": "*i32",
                "chunk_bos_ptr": "*i32",
                "cu_seqlens_ptr": "*i32",
                "chunk_state_ptr": "*fp32",
                "chunk_dstate_ptr": "*fp32",
                "states_ptr": "*fp32",
                "dq_ptr": "*fp32",
                "dk_ptr": "*fp32",
                "dv_ptr": "*fp32",
                "dbeta_ptr": "*fp32",
            },
            scan_consts,
        ),
        KernelSpec(
            "activation_forward_kernel",
            act.activation_forward_kernel,
            {
                "pre_ptr": "*fp32",
                "bias_ptr": "*fp32",
                "q_ptr": "*fp32",
                "k_ptr": "*fp32",
                "v_ptr": "*fp32",
                "beta_ptr": "*fp32",
                "num_rows": "i32",
            },
            {"N": 1, "R": 8, "BR": 8, "BM": act.BLOCK_M, "EPS": act.L2_EPS},
        ),
        KernelSpec(
            "activation_backward_kernel",
            act.activation_backward_kernel,
            {
                "pre_ptr": "*fp32",
                "bias_ptr": "*fp32",
                "dq_ptr": "*fp32",
                "dk_ptr": "*fp32",
                "dv_ptr": "*fp32",
                "dbeta_ptr": "*fp32",
                "dpre_ptr": "*fp32",
                "num_rows": "i32",
            },
            {"N": 1, "R": 8, "BR": 8, "BM": act.BLOCK_M, "EPS": act.L2_EPS},
        ),
        KernelSpec(
            "sequential_row_scan_kernel",
            seq.sequential_row_scan_kernel,
            {
                "q_ptr": "*IN",
                "k_ptr": "*IN",
                "v_ptr": "*IN",
                "beta_ptr": "*IN",
                "cu_seqlens_ptr": "*i32",
                "h0_ptr": "*fp32",
                "reads_ptr": "*fp32",
                "ht_ptr": "*fp32",
            },
            {"N": 1, "R": 8, "BR": 8},
            pinned_num_warps=1,
        ),
        KernelSpec(
            "decode_step_kernel",
            triton_step.decode_step_kernel,
            {
                "q_ptr": "*IN",
                "k_ptr": "*IN",
                "v_ptr": "*IN",
                "beta_ptr": "*IN",
                "pool_ptr": "*fp32",
                "slots_ptr": "*i32",
                "reads_ptr": "*fp32",
                "stride_slot": "i32",
            },
            {"N": 1, "R": 8, "BR": 8},
            pinned_num_warps=triton_step.PINNED_NUM_WARPS,
        ),
        KernelSpec(
            "fused_decode_kernel",
            triton_fused.fused_decode_kernel,
            {
                "x_ptr": "*IN",
                "w_ptr": "*IN",
                "bias_ptr": "*IN",
                "write_ptr": "*i1",
                "state_ptr": "*fp32",
                "new_state_ptr": "*fp32",
                "reads_ptr": "*fp32",
                "D": "i32",
                "stride_state": "i32",
            },
            {"N": 1, "R": 8, "BR": 8, "BD": triton_fused.BLOCK_D, "HAS_WRITE": 1, "EPS": triton_fused.L2_EPS},
            pinned_num_warps=triton_fused.PINNED_NUM_WARPS,
        ),
    ]


def configs_of(spec: KernelSpec) -> list[int]:
    """The num_warps values a kernel can launch with: its autotune configs, or its pinned value."""
    from deltamem.kernels.triton_utils import TUNING

    if spec.pinned_num_warps is not None:
        if spec.name in TUNING:
            raise AssertionError(f"{spec.name} mutates live state and must not be autotuned")
        return [spec.pinned_num_warps]
    return [config.num_warps for config in TUNING[spec.name][0]]


def tuning_key(spec: KernelSpec) -> list[str]:
    from deltamem.kernels.triton_utils import TUNING

    return TUNING[spec.name][1] if spec.name in TUNING else []


def compile_one(spec: KernelSpec, arch: int, num_warps: int, dtype: str) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.autotuner import Autotuner

    fn = spec.kernel.fn if isinstance(spec.kernel, Autotuner) else spec.kernel
    if not hasattr(fn, "arg_names"):
        raise RuntimeError("kernels are interpreted (TRITON_INTERPRET=1): unset it to compile")
    signature = {name: kind.replace("IN", dtype) for name, kind in spec.signature.items()}
    signature |= {name: "constexpr" for name in spec.constexprs}
    missing = set(fn.arg_names) - set(signature)
    if missing:
        raise AssertionError(f"{spec.name}: no type given for {sorted(missing)}")
    started = time.perf_counter()
    source = ASTSource(fn=fn, signature=signature, constexprs=dict(spec.constexprs))
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    return {
        "kernel": spec.name,
        "arch": arch,
        "num_warps": num_warps,
        "dtype": dtype,
        "cubin_bytes": len(compiled.asm["cubin"]),
        "seconds": round(time.perf_counter() - started, 2),
    }


def run(archs: list[int], dtypes: list[str]) -> list[dict]:
    results = []
    for spec in kernel_specs():
        uses_input_dtype = any("IN" in kind for kind in spec.signature.values())
        for arch in archs:
            for num_warps in configs_of(spec):
                for dtype in dtypes if uses_input_dtype else dtypes[:1]:
                    results.append(compile_one(spec, arch, num_warps, dtype))
    return results


def main() -> int:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: the interpreter does not compile", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    parser.add_argument("--dtype", nargs="+", default=["bf16", "fp16", "fp32"], choices=sorted(INPUT_DTYPES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.arch, args.dtype)
    if args.json:
        print(json.dumps(results))
    else:
        for row in results:
            print(
                f"{row['kernel']:<22} sm_{row['arch']} warps={row['num_warps']} {row['dtype']:<5} "
                f"cubin {row['cubin_bytes']:>6} B  {row['seconds']:.2f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
