"""Write-scan benchmark: the vectorised PyTorch scan against the per-token reference loop, in one run.

    .venv/bin/python bench/scan.py [--lengths 1024 4096 16384 32768] [--repeats 3]

Prints, per sequence length, the median time of each and the speed-up ratio (reference / vectorised). One
layer's scan: batch 1, one 8x8 state, fp32, on the CPU (the Triton kernels and GPU figures are issue 3).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from deltamem.kernels import delta_rule_chunked, delta_rule_naive


def inputs(seq_len: int, rank: int = 8):
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.tanh(torch.randn(1, seq_len, 1, rank, generator=g)), dim=-1)
    k = F.normalize(torch.tanh(torch.randn(1, seq_len, 1, rank, generator=g)), dim=-1)
    v = torch.randn(1, seq_len, 1, rank, generator=g)
    beta = torch.sigmoid(torch.randn(1, seq_len, 1, rank, generator=g))
    return q, k, v, beta, torch.zeros(1, 1, rank, rank)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'tokens':>8} {'reference loop':>15} {'vectorised':>12} {'ratio':>7}")
    with torch.inference_mode():
        for seq_len in args.lengths:
            data = inputs(seq_len)
            reference = median_seconds(lambda data=data: delta_rule_naive(*data), args.repeats)
            vectorised = median_seconds(lambda data=data: delta_rule_chunked(*data), args.repeats)
            print(f"{seq_len:>8} {reference * 1e3:>13.1f}ms {vectorised * 1e3:>10.1f}ms {reference / vectorised:>6.2f}x")


if __name__ == "__main__":
    main()
