"""One Generate's trace arrives in a real OTLP backend: Arize Phoenix on loopback (installed by `make test` into
its own virtual environment, as it pins packages of its own), fed by a real server over OTLP/gRPC."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest
from opentelemetry.sdk.trace import TracerProvider

from deltamem.client import MemoryClient
from deltamem.service.config import default_cache_dir

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """(REST base URL, OTLP gRPC endpoint) of a Phoenix server bound to 127.0.0.1 only."""
    binary = default_cache_dir() / "phoenix-venv" / "bin" / "phoenix"
    if not binary.exists():
        pytest.skip(f"Arize Phoenix is not installed at {binary} (make test installs it)")
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(tmp_path_factory.mktemp("phoenix")),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = open(tmp_path_factory.mktemp("phoenix-log") / "phoenix.log", "w+")  # noqa: SIM115 - closed below
    process = subprocess.Popen([str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                get_json(f"{base}/v1/projects")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError("Phoenix did not start:\n" + log.read()[-4000:]) from None
                time.sleep(1)
        yield base, f"http://127.0.0.1:{grpc_port}"
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def spans_of_trace(base: str, trace_id: str) -> list[dict]:
    found = get_json(f"{base}/v1/projects/default/spans?limit=1000")["data"]
    return [span for span in found if span["context"]["trace_id"] == trace_id]


def test_a_generate_trace_arrives_in_phoenix_with_its_span_tree(phoenix, start_server_process, tmp_path, eventually):
    base, endpoint = phoenix
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "deltamem-test",
    }
    proc = start_server_process("--data-dir", str(tmp_path), env=otel)
    caller = TracerProvider().get_tracer("agent")  # the caller's own trace, which the server continues
    try:
        assert any("tracing: OpenTelemetry" in line for line in proc.lines)
        with MemoryClient(f"127.0.0.1:{proc.port}", timeout=120) as client:
            session = client.create_session().session_id
            with caller.start_as_current_span("agent-turn") as turn:
                client.generate_text(session, "Hello there", max_new_tokens=3, ignore_end_of_turn=True)
        trace_id = format(turn.get_span_context().trace_id, "032x")
        expected = {"Generate", "deltamem.engine.queue", "deltamem.engine.prefill", "deltamem.engine.decode"}

        def arrived() -> bool:
            return expected <= {span["name"].rsplit("/", 1)[-1] for span in spans_of_trace(base, trace_id)}

        assert eventually(arrived, 30)
    finally:
        proc.stop()
    spans = {span["name"]: span for span in spans_of_trace(base, trace_id)}
    root = spans["deltamem.v1.MemoryService/Generate"]
    assert root["span_kind"] == "SERVER" or root["attributes"].get("rpc.method") == "Generate"
    assert root["parent_id"] == format(turn.get_span_context().span_id, "016x")
    assert root["attributes"]["deltamem.session_id"] == session
    for name in ("deltamem.engine.queue", "deltamem.engine.prefill", "deltamem.engine.decode"):
        assert spans[name]["parent_id"] == root["context"]["span_id"], name
    assert spans["deltamem.engine.decode"]["attributes"]["deltamem.generated_tokens"] == 3
    assert any(name.startswith("deltamem.store.") for name in spans)
