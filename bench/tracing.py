"""What tracing costs, measured in one run on the default model.

    .venv/bin/python bench/tracing.py [--new-tokens 32] [--rounds 5]

- tracing OFF: the per-request and per-step work the engine and servicer still do (no-op trace events) timed
  directly, as a share of one measured decode step;
- tracing ON (in-memory exporter) against OFF: single-session decode tokens/s of the same engine, alternating
  rounds so drift hits both alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from engine import decode_rate  # bench/engine.py, beside this file
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deltamem.runtime import tracing
from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.engine.job_trace import JobTrace
from deltamem.runtime.model.backbone import load_model
from deltamem.runtime.model.default_model import prepare_default_model
from deltamem.service.config import configure_kernels, default_cache_dir


def off_path_seconds(steps: int, repeats: int = 20000) -> float:
    """Seconds of trace bookkeeping for one request of `steps` decode steps while tracing is off."""
    assert not tracing.enabled()
    start = time.perf_counter()
    for _ in range(repeats):
        trace = JobTrace.start("generate", 20)
        trace.admitted(0, 1)
        for _ in range(steps):
            trace.step(1)
        trace.prefilled()
        trace.finished(generated_tokens=steps, finish_reason="length")
        tracing.annotate(memory_version=1, generated_tokens=steps)
        with tracing.span("deltamem.store.put"):
            pass
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_kernels()  # as the server would, from DELTAMEM_KERNELS and DELTAMEM_CPU_GEMM
    engine = BatchEngine(load_model(prepare_default_model(default_cache_dir())))
    print(f"machine: {platform.machine()} {platform.processor() or ''} ({platform.node()}), torch threads default")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rates = {"off": [], "on": []}
    try:
        decode_rate(engine, 1, 4)  # warm-up
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                if mode == "on":
                    tracing.enable(provider.get_tracer("bench"))
                rates[mode].append(decode_rate(engine, 1, args.new_tokens))
                tracing.disable()
    finally:
        engine.close()
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    step_s = 1.0 / off
    bookkeeping = off_path_seconds(args.new_tokens)
    print(f"decode tokens/s, one session, median of {args.rounds}: tracing off {off:.2f}, on {on:.2f}")
    print(f"  on / off = {on / off:.3f}  ({len(exporter.get_finished_spans())} spans recorded while on)")
    print(f"tracing off: bookkeeping per {args.new_tokens}-token request {bookkeeping * 1e6:.2f} us")
    share = bookkeeping / (args.new_tokens * step_s) * 100
    print(f"  = {share:.4f}% of that request's decode time ({step_s * 1e3:.1f} ms/step)")


if __name__ == "__main__":
    main()
