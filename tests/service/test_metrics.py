"""The Prometheus endpoint of a real server: request counts and latencies by RPC and code, tokens, sessions,
and the state pool."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest

from deltamem.client import MemoryClient

METRICS_LINE = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_count_what_the_server_did(start_server_process, tmp_path):
    proc = start_server_process("--data-dir", str(tmp_path), "--metrics-port", "0", "--max-batch", "4")
    try:
        port = next(int(m.group(1)) for line in proc.lines if (m := METRICS_LINE.search(line)))
        with MemoryClient(f"127.0.0.1:{proc.port}", timeout=60) as client:
            sessions = [client.create_session().session_id for _ in range(3)]
            written = client.update_memory(sessions[0], "Metrics are counted.").tokens_written
            result = client.generate_text(sessions[0], "Hello", max_new_tokens=3, ignore_end_of_turn=True)
            with pytest.raises(grpc.RpcError):
                client.read_state("0" * 32)
        samples = scrape(port)
    finally:
        proc.stop()
    assert samples['deltamem_requests_total{code="OK",method="CreateSession"}'] == 3
    assert samples['deltamem_requests_total{code="NOT_FOUND",method="ReadState"}'] == 1
    assert samples['deltamem_requests_total{code="OK",method="Generate"}'] == 1
    assert samples['deltamem_request_seconds_count{method="Generate"}'] == 1
    assert samples['deltamem_request_seconds_bucket{le="+Inf",method="UpdateMemory"}'] == 1
    assert samples["deltamem_generated_tokens_total"] == result.usage.generated_tokens == 3
    assert samples["deltamem_written_tokens_total"] == written + result.usage.written_tokens
    assert samples["deltamem_sessions"] == 3
    assert samples["deltamem_state_pool_slots"] == 4 and samples["deltamem_state_pool_slots_in_use"] == 0
