"""When tracing is on, and which exporters it may use: the standard OTEL_* variables, with clear errors."""

from __future__ import annotations

import pytest

from deltamem.runtime import tracing
from deltamem.runtime.engine.job_trace import NO_TRACE, JobTrace
from deltamem.service.config import tracing_requested
from deltamem.service.tracing import span_exporters


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_tracing_is_off_unless_an_exporter_or_endpoint_is_set(env, on):
    assert tracing_requested(env) is on


def test_exporters_named_by_otel_traces_exporter():
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    exporters = span_exporters({"OTEL_TRACES_EXPORTER": "otlp,console"})
    assert [type(e) for e in exporters] == [OTLPSpanExporter, ConsoleSpanExporter]
    for exporter in exporters:
        exporter.shutdown()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "unsupported ['zipkin']"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "OTLP over grpc only"),
    ],
)
def test_unsupported_exporter_settings_are_refused_by_name(env, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        span_exporters(env)


def test_with_tracing_off_nothing_is_traced():
    assert not tracing.enabled()
    assert tracing.current_context() is None
    assert tracing.start_span("x", None) is None
    assert JobTrace.start("generate", 10) is NO_TRACE
    with tracing.span("x") as span:
        assert span is None
