"""Tracing with the in-memory exporter: a real server in this process on loopback, the real default model, and
the spans it records for each RPC, checked for their tree, attributes and ends."""

from __future__ import annotations

import threading

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from deltamem.client import MemoryClient
from deltamem.runtime import tracing
from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.model.backbone import load_model
from deltamem.service.compose import open_sessions
from deltamem.service.config import ServerConfig
from deltamem.service.server import start_server

SERVICE = "deltamem.v1.MemoryService"
SECRET_PROMPT = "The vault code is zebra-7731."


@pytest.fixture(scope="module")
def traced(default_model_dir, tmp_path_factory):
    """(address, exporter): a server with tracing on, its spans captured in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider.get_tracer("deltamem"))
    engine = BatchEngine(load_model(default_model_dir), max_batch=4)
    config = ServerConfig(port=0, data_dir=tmp_path_factory.mktemp("traced-sessions"))
    running = start_server(engine, open_sessions(engine, config), config)
    try:
        yield f"127.0.0.1:{running.port}", exporter
    finally:
        running.stop(0)
        engine.close()
        tracing.disable()


@pytest.fixture
def spans(traced):
    """The exporter, emptied before the test."""
    traced[1].clear()
    return traced[1]


def server_span(exporter, method: str):
    [span] = [s for s in exporter.get_finished_spans() if s.name == f"{SERVICE}/{method}"]
    return span


def children(exporter, parent) -> list:
    parent_id = parent.context.span_id
    return [s for s in exporter.get_finished_spans() if s.parent is not None and s.parent.span_id == parent_id]


def names(spans) -> list[str]:
    return [s.name for s in spans]


def test_generate_continues_the_callers_trace_with_engine_and_store_spans(traced, spans):
    caller = TracerProvider().get_tracer("agent")
    with MemoryClient(traced[0], timeout=120) as client:
        session = client.create_session().session_id
        spans.clear()
        with caller.start_as_current_span("agent-turn") as turn:
            result = client.generate_text(session, SECRET_PROMPT, max_new_tokens=4, ignore_end_of_turn=True)
    root = server_span(spans, "Generate")
    assert root.kind == SpanKind.SERVER
    assert root.context.trace_id == turn.get_span_context().trace_id
    assert root.parent.span_id == turn.get_span_context().span_id
    assert root.attributes["rpc.system"] == "grpc" and root.attributes["rpc.method"] == "Generate"
    assert root.attributes["rpc.grpc.status_code"] == 0
    assert root.attributes["deltamem.session_id"] == session
    assert root.attributes["deltamem.memory_version"] == result.memory_version == 1
    assert root.attributes["deltamem.generated_tokens"] == 4

    tree = children(spans, root)
    engine_spans = [s for s in tree if s.name.startswith("deltamem.engine.")]
    assert names(engine_spans) == ["deltamem.engine.queue", "deltamem.engine.prefill", "deltamem.engine.decode"]
    queued, prefill, decode = engine_spans
    assert queued.end_time <= prefill.start_time and prefill.end_time <= decode.start_time
    prompt_tokens = root.attributes["deltamem.prompt_tokens"]
    assert queued.attributes["deltamem.input_tokens"] == prefill.attributes["deltamem.input_tokens"] == prompt_tokens
    assert prefill.attributes["deltamem.steps"] >= 1 and prefill.attributes["deltamem.max_batch_size"] == 1
    # four tokens sampled: one from the prefill's logits, three decode steps, and one more to write the last
    assert decode.attributes["deltamem.steps"] == 4
    assert decode.attributes["deltamem.generated_tokens"] == 4
    assert decode.attributes["deltamem.finish_reason"] == "length"
    store = [s for s in tree if s.name.startswith("deltamem.store.")]
    assert "deltamem.store.get" in names(store) and "deltamem.store.put" in names(store)
    assert all(s.attributes["deltamem.store"] == "SqliteStore" for s in store)
    put = next(s for s in store if s.name == "deltamem.store.put")
    assert put.start_time >= decode.end_time  # the commit comes after the generation
    for span in spans.get_finished_spans():
        assert span.context.trace_id == root.context.trace_id
        assert all("zebra" not in str(value) for value in span.attributes.values())  # never prompt text


def test_update_memory_has_a_memory_write_span(traced, spans):
    with MemoryClient(traced[0], timeout=120) as client:
        session = client.create_session().session_id
        spans.clear()
        response = client.update_memory(session, "Remember that the meeting moved to Thursday.")
    root = server_span(spans, "UpdateMemory")
    assert root.attributes["deltamem.written_tokens"] == response.tokens_written
    assert root.attributes["deltamem.memory_version"] == response.memory_version
    engine_spans = [s for s in children(spans, root) if s.name.startswith("deltamem.engine.")]
    assert names(engine_spans) == ["deltamem.engine.queue", "deltamem.engine.memory_write"]
    assert engine_spans[1].attributes["deltamem.input_tokens"] == response.tokens_written


def test_a_refused_call_is_a_span_with_its_code_and_no_engine_work(traced, spans):
    with MemoryClient(traced[0], timeout=60) as client, pytest.raises(grpc.RpcError) as error:
        client.generate_text("0" * 32, "hello", max_new_tokens=2)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    root = server_span(spans, "Generate")
    assert root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert root.status.status_code == StatusCode.UNSET  # the caller's mistake, not the server's fault
    assert not [s for s in children(spans, root) if s.name.startswith("deltamem.engine.")]


def test_a_cancelled_stream_ends_its_decode_span_once_marked_abandoned(traced, spans, eventually):
    with MemoryClient(traced[0], timeout=120) as client:
        session = client.create_session().session_id
        stream = client.generate(session, "Count to a hundred.", max_new_tokens=200, ignore_end_of_turn=True)
        next(iter(stream))
        stream.cancel()
    assert eventually(lambda: [s for s in spans.get_finished_spans() if s.name == "deltamem.engine.decode"], 30)
    [decode] = [s for s in spans.get_finished_spans() if s.name == "deltamem.engine.decode"]
    assert decode.attributes["deltamem.abandoned"] == "cancelled"
    assert decode.attributes["deltamem.steps"] < 200


def test_concurrent_generations_report_their_batch_size(traced, spans):
    with MemoryClient(traced[0], timeout=120) as client:
        sessions = [client.create_session().session_id for _ in range(3)]
        options = {"max_new_tokens": 12, "ignore_end_of_turn": True}
        threads = [
            threading.Thread(target=client.generate_text, args=(s, "Tell me a story"), kwargs=options) for s in sessions
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    decodes = [s for s in spans.get_finished_spans() if s.name == "deltamem.engine.decode"]
    assert len(decodes) == 3
    assert max(s.attributes["deltamem.max_batch_size"] for s in decodes) >= 2
    roots = {s.context.span_id for s in spans.get_finished_spans() if s.name == f"{SERVICE}/Generate"}
    assert {s.parent.span_id for s in decodes} == roots  # each decode under its own RPC
