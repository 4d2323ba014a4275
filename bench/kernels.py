"""Kernel benchmark: the δ-mem write scan and decode step against named baselines, measured in one run.

    .venv/bin/python bench/kernels.py [--lengths 1024 4096 16384 32768] [--repeats 5] [--skip-model]

Scan (one layer, batch 1, one 8x8 state, fp32 inputs), per sequence length:
  CPU  ours = the vectorised PyTorch scan (what training runs on CPU); baseline = the per-token loop. Then a
       layer's whole write (projection + scan, d=576): the compiled scan_cpu op that inference passes run,
       against its PyTorch twin.
  GPU  ours = the chunked Triton scan; baselines = the sequential per-row Triton scan laid out like the reference
       implementation (one program per (sequence, row) over all T tokens) and the PyTorch scan on the GPU.
Decode (the default model, 256 tokens of context): one backbone decode step with δ-mem against the frozen
backbone's step in the same engine, and the δ-mem share of a write (prefill) of 1024 tokens.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

from deltamem.kernels import delta_rule_chunked, delta_rule_naive


def scan_inputs(seq_len: int, device: str):
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.tanh(torch.randn(1, seq_len, 1, 8, generator=g)), dim=-1)
    k = F.normalize(torch.tanh(torch.randn(1, seq_len, 1, 8, generator=g)), dim=-1)
    v = torch.randn(1, seq_len, 1, 8, generator=g)
    beta = torch.sigmoid(torch.randn(1, seq_len, 1, 8, generator=g))
    return [x.to(device) for x in (q, k, v, beta)] + [torch.zeros(1, 1, 8, 8, device=device)]


def interleaved_medians(fns, repeats: int, device: str) -> list[float]:
    """Median seconds of each workload, run in turn so that drift in the machine's speed hits all equally."""
    for fn in fns:
        fn()  # warm-up (and Triton compilation / autotuning)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def median_seconds(fn, repeats: int, device: str) -> float:
    return interleaved_medians([fn], repeats, device)[0]


def paired_median_seconds(first, second, repeats: int, device: str) -> tuple[float, float]:
    first_time, second_time = interleaved_medians([first, second], repeats, device)
    return first_time, second_time


def bench_scan_cpu(lengths, repeats):
    print("\n## scan, CPU: vectorised PyTorch (ours) vs per-token loop")
    print(f"{'tokens':>8} {'per-token loop':>15} {'ours':>10} {'ours speed-up':>14}")
    for seq_len in lengths:
        data = scan_inputs(seq_len, "cpu")
        loop = median_seconds(lambda d=data: delta_rule_naive(*d), max(1, repeats // 2), "cpu")
        ours = median_seconds(lambda d=data: delta_rule_chunked(*d), repeats, "cpu")
        print(f"{seq_len:>8} {loop * 1e3:>13.1f}ms {ours * 1e3:>8.1f}ms {loop / ours:>13.2f}x")


def bench_layer_write_cpu(lengths, repeats, dim: int = 576):
    """One layer's memory work for a write of T tokens (projection, activations, scan) on the CPU: the compiled
    scan_cpu op that inference passes use against its PyTorch twin (memory_projection + the chunked scan)."""
    from deltamem.kernels import memory_ops, memory_projection

    ops = memory_ops("cpu", torch.float32)
    if ops.implementation != "compiled":
        print(f"\n## layer write, CPU: the compiled scan op does not run here ({ops.implementation}); skipped")
        return
    print(f"\n## layer write, CPU (d={dim}, one 8x8 state): compiled scan_cpu (ours) vs PyTorch projection + scan")
    print(f"{'tokens':>8} {'PyTorch':>10} {'ours':>10} {'speed-up':>9}")
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(32, dim, generator=g) / dim**0.5, torch.full((8,), -1.5)
    for seq_len in lengths:
        x, state = torch.randn(1, seq_len, dim, generator=g), torch.zeros(1, 1, 8, 8)

        def twin(x=x, state=state):
            return delta_rule_chunked(*memory_projection(x, weight, bias, 1, 8), state)

        def compiled(x=x, state=state):
            return ops.scan(x, weight, bias, state, None, 1, 8)

        with torch.inference_mode():
            pytorch, ours = paired_median_seconds(twin, compiled, repeats, "cpu")
        print(f"{seq_len:>8} {pytorch * 1e3:>8.2f}ms {ours * 1e3:>8.2f}ms {pytorch / ours:>8.2f}x")


def bench_scan_gpu(lengths, repeats):
    from deltamem.kernels.delta_rule.triton_scan import delta_rule_triton
    from deltamem.kernels.delta_rule.triton_sequential import delta_rule_sequential_triton

    print(f"\n## scan, GPU ({torch.cuda.get_device_name()}): chunked Triton (ours) vs baselines")
    print(
        f"{'tokens':>8} {'sequential rows':>16} {'PyTorch':>10} {'ours':>10} {'vs sequential':>14} {'vs PyTorch':>11}"
    )
    for seq_len in lengths:
        q, k, v, beta, h0 = scan_inputs(seq_len, "cuda")
        flat = [x[0] for x in (q, k, v, beta)]
        cu = torch.tensor([0, seq_len], dtype=torch.int32, device="cuda")
        with torch.inference_mode():
            seq = median_seconds(partial(delta_rule_sequential_triton, *flat, cu, h0), repeats, "cuda")
            pt = median_seconds(partial(delta_rule_chunked, q, k, v, beta, h0), repeats, "cuda")
            ours = median_seconds(partial(delta_rule_triton, *flat, cu, h0), repeats, "cuda")
        print(
            f"{seq_len:>8} {seq * 1e3:>14.3f}ms {pt * 1e3:>8.3f}ms {ours * 1e3:>8.3f}ms {seq / ours:>13.2f}x "
            f"{pt / ours:>10.2f}x"
        )


def bench_model(device: str, repeats: int, context: int = 256, write_tokens: int = 1024):
    from transformers import DynamicCache

    from deltamem.runtime.model.backbone import load_model
    from deltamem.runtime.model.default_model import prepare_default_model
    from deltamem.service.config import default_cache_dir

    model = load_model(prepare_default_model(default_cache_dir()), device=device).model
    ids = torch.randint(0, 49152, (1, context), generator=torch.Generator().manual_seed(0)).to(device)
    step = ids[:, -1:]
    with torch.inference_mode():
        frozen_cache, memory_cache = DynamicCache(), DynamicCache()
        model.backbone(input_ids=ids, past_key_values=frozen_cache, use_cache=True)
        out = model(ids, model.empty_state(1, device), past_key_values=memory_cache, use_cache=True)
        state = out.state

        def frozen_step():
            model.backbone(input_ids=step, past_key_values=frozen_cache, use_cache=True, logits_to_keep=1)
            frozen_cache.crop(-1)

        def memory_step():
            model(step, state, past_key_values=memory_cache, use_cache=True, logits_to_keep=1)
            memory_cache.crop(-1)

        frozen, memory = paired_median_seconds(frozen_step, memory_step, repeats * 8, device)
        print(f"\n## decode step, default model on {device} ({context} tokens of context)")
        print(
            f"frozen backbone step {frozen * 1e3:.2f} ms; with δ-mem {memory * 1e3:.2f} ms; "
            f"δ-mem adds {100 * (memory - frozen) / frozen:.1f}% (target <= 5% on GPU)"
        )
        long_ids = torch.randint(0, 49152, (1, write_tokens), generator=torch.Generator().manual_seed(1)).to(device)
        frozen_w = median_seconds(lambda: model.backbone(input_ids=long_ids, logits_to_keep=1), repeats, device)
        memory_w = median_seconds(
            lambda: model(long_ids, model.empty_state(1, device), logits_to_keep=1), repeats, device
        )
        print(
            f"write of {write_tokens} tokens: frozen forward {frozen_w * 1e3:.1f} ms; "
            f"with δ-mem {memory_w * 1e3:.1f} ms; "
            f"memory share of the write {100 * (memory_w - frozen_w) / memory_w:.1f}% (target <= 10% on CPU)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-model", action="store_true", help="only the scan")
    parser.add_argument("--skip-scan", action="store_true", help="only the default model's figures")
    args = parser.parse_args()
    from deltamem.service.config import configure_kernels

    chosen = configure_kernels()  # DELTAMEM_KERNELS, DELTAMEM_CPU_GEMM, as the server reads them
    print(
        f"# machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} CPU threads, "
        f"torch {torch.__version__}, cuda: {torch.cuda.is_available()}; kernels: {chosen.backend}"
    )
    if not args.skip_scan:
        bench_scan_cpu(args.lengths, args.repeats)
        bench_layer_write_cpu(args.lengths, args.repeats)
        if torch.cuda.is_available():
            bench_scan_gpu(args.lengths, args.repeats)
    if not args.skip_model:
        bench_model("cpu", args.repeats)
        if torch.cuda.is_available():
            bench_model("cuda", args.repeats)


if __name__ == "__main__":
    main()
