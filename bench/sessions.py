"""Session-store benchmark: what creating, forking and listing cost as one tenant's sessions grow, and whether
another tenant's calls slow down, on each store. Every figure is measured in this one run.

    .venv/bin/python bench/sessions.py [--sessions 10000] [--stores memory sqlite redis] [--redis URL]

For each store, tenant "big" is filled to 200, 1,000 and `--sessions` sessions (under a per-tenant quota, as
the server has by default); at each size it prints the p50 and p90 of: a create in "big" (the quota check
included), a fork in "big", the first page of 100 and a page
from the middle of the tenant's sessions, and a create by another tenant ("small"). The figures at the
largest size over those at 200 are the growth ratios. The SessionManager API (create, fork, list) is the
same before and after the per-tenant index, so this file also measures an older tree (put it first on
PYTHONPATH) as the baseline.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch

from deltamem.runtime.sessions.manager import SessionManager
from deltamem.runtime.sessions.sqlite_store import SqliteStore
from deltamem.runtime.sessions.store import MemoryStore

IDENTITY = {"backbone": "bench", "adapter": "bench", "state_shape": "30x1x8x8"}
EMPTY = torch.zeros(30, 1, 8, 8)  # SmolLM2-135M's state: 7.5 KB
SAMPLES = 30


def timed(figures: dict[str, list[float]], what: str, call):
    """call()'s result; its latency in ms appended to figures[what]."""
    start = time.perf_counter()
    result = call()
    figures[what].append((time.perf_counter() - start) * 1e3)
    return result


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    return f"p50 {statistics.median(values):7.2f} ms  p90 {values[int(len(values) * 0.9)]:7.2f} ms"


def measure(sessions: SessionManager, size: int, made: list[str]) -> dict[str, list[float]]:
    """Latencies at one tenant size; what it creates is deleted again, so the size stays `size`."""
    middle = sessions.list(None, size // 2, "big")[0][-1].order
    figures = {"create (big)": [], "fork (big)": [], "list first 100": [], "list middle 100": [], "create (small)": []}
    for _ in range(SAMPLES):
        created = timed(figures, "create (big)", lambda: sessions.create(tenant="big"))
        forked = timed(figures, "fork (big)", lambda: sessions.fork(made[0], tenant="big"))
        timed(figures, "list first 100", lambda: sessions.list(None, 100, "big"))
        timed(figures, "list middle 100", lambda: sessions.list(middle, 100, "big"))
        small = timed(figures, "create (small)", lambda: sessions.create(tenant="small"))
        for info, tenant in ((created, "big"), (forked, "big"), (small, "small")):
            sessions.delete(info.session_id, tenant)
    return figures


def run_store(name: str, store, sizes: list[int]) -> None:
    # with a quota, as a server has one by default: each create and fork then checks the tenant's count
    sessions = SessionManager(EMPTY, store, max_sessions_per_tenant=sizes[-1] + 10)
    made: list[str] = []
    first = {}
    for size in sizes:
        start = time.perf_counter()
        while len(made) < size:
            made.append(sessions.create(tenant="big").session_id)
        fill = time.perf_counter() - start
        figures = measure(sessions, size, made)
        print(f"{name}: tenant 'big' at {size:,} sessions (filled in {fill:.1f} s)")
        for what, values in figures.items():
            growth = ""
            if size == sizes[0]:
                first[what] = statistics.median(values)
            else:
                growth = f"  ×{statistics.median(values) / first[what]:.2f} of the p50 at {sizes[0]:,}"
            print(f"  {what:16s} {percentiles(values)}{growth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--stores", nargs="+", default=["memory", "sqlite", "redis"])
    parser.add_argument("--redis", help="redis URL (default: a redis-server started here, if installed)")
    args = parser.parse_args()
    sizes = sorted({200, 1000, args.sessions})  # from 200 on, the middle page is a full 100
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}")
    for name in args.stores:
        with tempfile.TemporaryDirectory() as directory:
            if name == "memory":
                run_store(name, MemoryStore(), sizes)
            elif name == "sqlite":
                run_store(name, SqliteStore(directory, IDENTITY), sizes)
            else:
                run_redis(args.redis, directory, sizes)


def run_redis(url: str | None, directory: str, sizes: list[int]) -> None:
    import shutil
    import subprocess

    from deltamem.runtime.sessions.redis_store import RedisStore

    process = None
    if url is None:
        if shutil.which("redis-server") is None:
            print("redis: skipped (no redis-server here and no --redis URL)")
            return
        port = 26379
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--dir", directory, "--appendonly", "yes",
             "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    try:
        run_store("redis", RedisStore(url, IDENTITY, prefix=f"bench-{time.time_ns()}"), sizes)
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
