"""Engine benchmark on the default model, every figure measured in this one run.

    .venv/bin/python bench/engine.py [--new-tokens 32] [--fork-history 1024 32768]

- decode tokens/s of one session with δ-mem against the frozen backbone in the same engine (memory switched off);
- aggregate decode tokens/s with 1, 4 and 8 concurrent sessions (continuous batching);
- Hugging Face `generate` on the frozen backbone, batch 1, as an outside baseline (a stock copy of the model:
  PyTorch's own linears, not the engine's oneDNN ones);
- ForkSession latency over gRPC on loopback (p50, p90) for sessions with 1k and 32k tokens of history.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading
import time

import torch

from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.engine.requests import GenerationRequest
from deltamem.runtime.model.backbone import load_model
from deltamem.runtime.model.default_model import prepare_default_model
from deltamem.service.config import ServerConfig, configure_kernels, default_cache_dir

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def decode_rate(engine: BatchEngine, sessions: int, new_tokens: int) -> tuple[float, float]:
    """`sessions` concurrent greedy generations → (aggregate generated tokens/s over the wall time, prompt prefill
    included; decode tokens/s of the decode phase alone: the tokens after each session's first over the time
    after it, summed over sessions, i.e. what the sessions get once prefilled)."""
    prompt = engine.inputs.encode_messages([("user", PROMPT)], add_generation_prompt=True).ids
    request = GenerationRequest(prompt, max_new_tokens=new_tokens, ignore_end_of_turn=True)
    done, decode = [], []

    def run():
        first = first_tokens = None
        for event in engine.generate(engine.empty_state(), request):
            if first is None:
                first, first_tokens = time.perf_counter(), len(event.token_ids)
        decode.append((event.generated_tokens - first_tokens) / (time.perf_counter() - first))
        done.append(event.generated_tokens)

    list(engine.generate(engine.empty_state(), GenerationRequest(prompt, max_new_tokens=2)))  # warm-up
    threads = [threading.Thread(target=run) for _ in range(sessions)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - start), sum(decode)


def hf_generate_rate(model_dir, tokenizer, new_tokens: int, device: str) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"].to(model.device)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=2, do_sample=False)
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - start)


def fork_latencies(engine: BatchEngine, histories: list[int], repeats: int = 200) -> dict[int, tuple[float, float]]:
    """ForkSession through a real gRPC server on loopback, after writing `history` tokens into a session."""
    from deltamem.client import MemoryClient
    from deltamem.service.compose import open_sessions
    from deltamem.service.server import start_server

    config = ServerConfig(port=0, persist=False)
    running = start_server(engine, open_sessions(engine, config), config)
    results = {}
    try:
        with MemoryClient(f"127.0.0.1:{running.port}", timeout=3600) as client:
            for history in histories:
                session = client.create_session().session_id
                ids = (engine.inputs.encode_text(PROMPT * 200).ids * (history // 100 + 1))[:history]
                started = time.perf_counter()
                client.update_memory(session, list(ids))
                print(f"  wrote {history} tokens in {time.perf_counter() - started:.1f} s", flush=True)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    fork = client.fork_session(session)
                    times.append(time.perf_counter() - start)
                    client.delete_session(fork.session_id)
                times.sort()
                results[history] = (statistics.median(times), times[int(0.9 * len(times))])
    finally:
        running.stop(0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--fork-history", type=int, nargs="+", default=[1024, 32768])
    parser.add_argument("--rounds", type=int, default=5, help="alternating frozen/δ-mem decode runs")
    parser.add_argument(
        "--aggregate-rounds", type=int, default=3, help="interleaved 1/4/8-session runs; medians are reported"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    args = parser.parse_args()
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(f"# machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}{gpu}")
    chosen = configure_kernels()  # DELTAMEM_KERNELS, DELTAMEM_CPU_GEMM, as the server reads them
    print(f"# kernels: {chosen.backend}, CPU GEMMs: {chosen.cpu_gemm}")
    model_dir = prepare_default_model(default_cache_dir())
    loaded = load_model(model_dir, device=args.device)
    engine = BatchEngine(loaded, max_batch=8)

    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.rounds):  # alternating, so drift on a shared machine hits both alike
        for enabled in (False, True):
            loaded.model.memory_enabled = enabled
            runs[enabled].append(decode_rate(engine, 1, args.new_tokens))
    print(f"\n## decode, one session, same engine (median of {args.rounds} alternating runs)")
    for label, part in (("decode phase (after the first token)", 1), ("end to end (prompt prefill included)", 0)):
        frozen_runs, memory_runs = [r[part] for r in runs[False]], [r[part] for r in runs[True]]
        frozen, memory = statistics.median(frozen_runs), statistics.median(memory_runs)
        paired = statistics.median(m / f for f, m in zip(frozen_runs, memory_runs, strict=True))
        print(
            f"{label}: frozen backbone {frozen:.2f} tok/s; δ-mem {memory:.2f} tok/s; ratio {memory / frozen:.3f}"
            f"{' (target >= 0.95)' if part else ''}; median of the paired ratios (each δ-mem run over the frozen run"
            f" just before it) {paired:.3f}"
        )
    memory = statistics.median(r[0] for r in runs[True])

    print(
        f"\n## aggregate decode tokens/s, concurrent sessions (continuous batching, δ-mem on; median of "
        f"{args.aggregate_rounds} interleaved runs; each session's prompt prefill included)"
    )
    levels: dict[int, list[float]] = {1: [], 4: [], 8: []}
    for _ in range(args.aggregate_rounds):  # interleaved, like the decode runs
        for n, measured in levels.items():
            measured.append(decode_rate(engine, n, args.new_tokens)[0])
    rates = {n: statistics.median(measured) for n, measured in levels.items()}
    for n, rate in rates.items():
        each = ", ".join(f"{r:.1f}" for r in levels[n])
        print(f"{n} session(s): {rate:.2f} tok/s ({rate / rates[1]:.2f}x one session; runs {each})")
    print("target: 8 sessions >= 4x one")

    # on a thread that ends: an OpenMP pool left on a live thread (this one) would slow the engine's thread for the
    # rest of the run (libgomp throttles its workers' spinning once threads outnumber cores)
    measured_hf = []
    baseline = threading.Thread(
        target=lambda: measured_hf.append(hf_generate_rate(model_dir, loaded.tokenizer, args.new_tokens, args.device))
    )
    baseline.start()
    baseline.join()
    hf = measured_hf[0]
    print(f"\n## outside baseline: Hugging Face generate, frozen backbone, batch 1: {hf:.2f} tok/s")
    print(f"δ-mem engine, one session: {memory / hf:.2f}x HF generate; 8 sessions: {rates[8] / hf:.2f}x")

    print("\n## ForkSession over gRPC on loopback")
    for history, (p50, p90) in fork_latencies(engine, args.fork_history).items():
        print(f"history {history:>6} tokens: p50 {p50 * 1e3:.3f} ms, p90 {p90 * 1e3:.3f} ms")
    engine.close()


if __name__ == "__main__":
    main()
