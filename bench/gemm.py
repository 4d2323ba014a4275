"""CPU GEMM benchmark: the backbone's linears through oneDNN (what the engine runs, runtime/cpu_linear.py) against
PyTorch's F.linear (MKL's sgemm), on the default model's shapes, measured in one run.

    .venv/bin/python bench/gemm.py [--repeats 30]

Rows: a decode step at batch 1 and batch 8 (one token per sequence) and a prefill of 8 prompts of 42 tokens.
Each workload runs the shapes of one whole decoder layer, then the lm_head, over enough distinct weight copies to
exceed the last-level cache, so the weights come from DRAM as they do in a real step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from deltamem.kernels import cpu_linear

# SmolLM2-135M: (out, in) of q, k, v, o, gate, up, down; and the lm_head
LAYER_SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
LM_HEAD = (49152, 576)
ROWS = {"decode, batch 1": 1, "decode, batch 8": 8, "prefill, 8 x 42 tokens": 8 * 42}
LAYERS = 30


def onednn(x, weight):
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


def seconds(fn, weights, rows: int, repeats: int) -> list[float]:
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    times = []
    for _ in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        for weight in weights:
            fn(inputs[weight.shape[1]], weight)
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"# machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    if not cpu_linear.onednn_available():
        raise SystemExit("this PyTorch build has no oneDNN: nothing to compare")
    g = torch.Generator().manual_seed(0)
    layer = [torch.randn(out, d, generator=g) / d**0.5 for _ in range(LAYERS) for out, d in LAYER_SHAPES]
    head = [torch.randn(*LM_HEAD, generator=g) / LM_HEAD[1] ** 0.5]
    print(f"{LAYERS} layers' linears ({sum(w.numel() for w in layer) * 4 / 2**20:.0f} MiB) and the lm_head, fp32")
    print("workload                      F.linear (MKL)   oneDNN    speed-up")
    with torch.inference_mode():
        for name, rows in ROWS.items():
            for part, weights in (("layers", layer), ("lm_head", head)):
                runs = {"mkl": [], "onednn": []}
                for _ in range(3):  # interleaved, so drift hits both alike
                    runs["mkl"] += seconds(F.linear, weights, rows, args.repeats // 3)
                    runs["onednn"] += seconds(onednn, weights, rows, args.repeats // 3)
                mkl, dnn = statistics.median(runs["mkl"]), statistics.median(runs["onednn"])
                label = f"{name}, {part}"
                print(f"{label:<36} {mkl * 1e3:8.2f} ms {dnn * 1e3:8.2f} ms   {mkl / dnn:5.2f}x")


if __name__ == "__main__":
    main()
