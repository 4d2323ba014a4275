"""Fairness benchmark: a short Generate's latency while another session writes a long input, against the same
Generate alone, on the default model in one engine. Every figure is measured in this one run.

    .venv/bin/python bench/fairness.py [--write-tokens 32768] [--samples 5]

Prints the 2-token Generate's latency alone (p50 and spread over --samples), then repeatedly during one
--write-tokens UpdateMemory-style write on another session (the write's progress is reported at each
sample), the ratio of the medians (target: at most 3x), the write's own tokens/s, and the process's peak
resident memory before and after the write (the write's KV: about 46 KB per token for SmolLM2-135M in fp32).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import threading
import time

from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.engine.requests import GenerationRequest
from deltamem.runtime.model.backbone import load_model
from deltamem.runtime.model.default_model import prepare_default_model
from deltamem.service.config import ServerConfig, configure_kernels, default_cache_dir

FILLER = "The harbour master logs every boat that comes in, its name, its cargo and the hour. "


def short_generate(engine: BatchEngine, request: GenerationRequest) -> float:
    start = time.perf_counter()
    list(engine.generate(engine.empty_state(), request))
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-tokens", type=int, default=32_768)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    configure_kernels()
    engine = BatchEngine(load_model(prepare_default_model(default_cache_dir())), max_batch=ServerConfig().max_batch)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, prefill chunk {engine.prefill_chunk}")
    prompt = engine.inputs.encode_messages([("user", "Say hi.")], add_generation_prompt=True).ids
    request = GenerationRequest(prompt, max_new_tokens=2, ignore_end_of_turn=True)
    short_generate(engine, request)  # warm-up
    alone = [short_generate(engine, request) for _ in range(args.samples)]
    text_tokens = len(engine.inputs.encode_text(FILLER).ids)
    encoded = engine.inputs.encode_text(FILLER * (args.write_tokens // text_tokens + 1))
    encoded = engine.inputs.encode_token_ids(encoded.ids[: args.write_tokens])
    rss_before = peak_rss_mib()
    done = threading.Event()
    timing = {}

    def write() -> None:
        start = time.perf_counter()
        engine.write(engine.empty_state(), encoded)
        timing["write_s"] = time.perf_counter() - start
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    during = []
    while not done.is_set():
        latency = short_generate(engine, request)
        if not done.is_set():
            during.append(latency)
            print(f"  during the write: {latency:.2f} s (context chunk now {engine.pacer.contended_chunk})", flush=True)
        time.sleep(1.0)
    writer.join()
    base, loaded = statistics.median(alone), statistics.median(during) if during else float("nan")
    print(f"2-token Generate alone:        p50 {base:.3f} s (range {min(alone):.3f}-{max(alone):.3f})")
    if during:
        spread = f"range {min(during):.3f}-{max(during):.3f}, n={len(during)}"
        print(f"  during the write:          p50 {loaded:.3f} s ({spread})")
    print(f"  ratio during / alone:      {loaded / base:.2f}x (target <= 3x)")
    rate = len(encoded.ids) / timing["write_s"]
    print(f"{len(encoded.ids):,}-token write: {timing['write_s']:.1f} s, {rate:.0f} tokens/s")
    print(f"peak resident memory: {rss_before:.0f} MiB before the write, {peak_rss_mib():.0f} MiB after")
    engine.close()


if __name__ == "__main__":
    main()
