"""What OpenMP work on a second long-lived thread costs the engine, measured in one run on the default model.

    .venv/bin/python bench/openmp_threads.py [--rounds 5]

Single-session tokens/s of the engine (frozen backbone and δ-mem, alternating rounds), three times in one process:
as the engine starts; after one forward on a thread that then ended; after one forward on the main thread, which
lives on. The baseline is the first row; the engine's loop thread is the only one that should run model work.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading

import torch
from engine import decode_rate  # bench/engine.py, beside this file

from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.model.backbone import load_model
from deltamem.runtime.model.default_model import prepare_default_model
from deltamem.service.config import configure_kernels, default_cache_dir


def rates(engine: BatchEngine, loaded, rounds: int) -> tuple[float, float]:
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for enabled in (False, True):
            loaded.model.memory_enabled = enabled
            runs[enabled].append(decode_rate(engine, 1, 32)[0])
    return statistics.median(runs[False]), statistics.median(runs[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"# machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"# backbone linears: {configure_kernels().cpu_gemm}")
    loaded = load_model(prepare_default_model(default_cache_dir()))
    engine = BatchEngine(loaded, max_batch=8)

    def forward() -> None:
        with torch.inference_mode():
            loaded.model.backbone(torch.randint(0, 1000, (1, 64)))

    first = rates(engine, loaded, args.rounds)
    print(f"engine alone: frozen {first[0]:.2f} tok/s, δ-mem {first[1]:.2f} tok/s (baseline)")
    worker = threading.Thread(target=forward)
    worker.start()
    worker.join()
    after = rates(engine, loaded, args.rounds)
    print(
        f"after a forward on a thread that ended: frozen {after[0]:.2f}, δ-mem {after[1]:.2f} tok/s "
        f"({after[0] / first[0]:.2f}x, {after[1] / first[1]:.2f}x the baseline)"
    )
    forward()
    after = rates(engine, loaded, args.rounds)
    print(
        f"after a forward on the main thread: frozen {after[0]:.2f}, δ-mem {after[1]:.2f} tok/s "
        f"({after[0] / first[0]:.2f}x, {after[1] / first[1]:.2f}x the baseline)"
    )
    engine.close()


if __name__ == "__main__":
    main()
