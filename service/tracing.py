"""OpenTelemetry tracing for the server, configured by the standard OTEL_* environment variables.

Off unless asked for (config.tracing_requested): then a TracerProvider exports in batches to the exporters
OTEL_TRACES_EXPORTER names (otlp over gRPC, console), the SDK reading OTEL_EXPORTER_OTLP_*, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and OTEL_BSP_* itself. Each RPC gets a server span that continues
the caller's W3C trace context from the call metadata; the engine and store spans nest under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

import grpc

from deltamem.runtime import tracing
from deltamem.service.interceptors import status_code, wrap_handler

# gRPC codes that are the server's fault (OpenTelemetry's convention for server spans); the rest are the caller's
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
SUPPORTED_EXPORTERS = ("otlp", "console")


def span_exporters(env: Mapping[str, str]) -> list:
    """The exporters OTEL_TRACES_EXPORTER names (default otlp); a clear error for any we do not ship."""
    names = [name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if name.strip()]
    unknown = [name for name in names if name not in SUPPORTED_EXPORTERS]
    if unknown:
        raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported {unknown}; use {' or '.join(SUPPORTED_EXPORTERS)}")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if "otlp" in names and protocol != "grpc":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this server exports OTLP over grpc only")
    exporters = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        else:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
    return exporters


def start_tracing(env: Mapping[str, str], exporters: list | None = None):
    """Create the tracer provider (service name `deltamem` unless OTEL_SERVICE_NAME says otherwise), attach a
    batching processor per exporter, and turn on the engine's and store's spans; `env` holds the OTEL_* settings
    (config.otel_settings). Returns the provider; call stop_tracing(provider) at exit so the last spans are
    flushed."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    defaults = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "deltamem"}
    provider = TracerProvider(resource=Resource.create(defaults))
    for exporter in exporters if exporters is not None else span_exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    tracing.enable(provider.get_tracer("deltamem"))
    return provider


def stop_tracing(provider) -> None:
    tracing.disable()
    provider.shutdown()


class TracingInterceptor(grpc.ServerInterceptor):
    """A server span per RPC, child of the caller's span when the metadata carries a W3C traceparent."""

    def intercept_service(self, continuation, handler_call_details):
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")

        @contextmanager
        def traced(request, context):
            tracer = tracing.tracer()
            if tracer is None:  # tracing was stopped while the server still runs
                yield
                return
            carrier = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
            session_id = getattr(request, "session_id", "")
            if session_id:
                attributes["deltamem.session_id"] = session_id
            with tracer.start_as_current_span(
                f"{service}/{method}",
                context=propagate.extract(carrier),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    yield
                finally:
                    code = status_code(context) or grpc.StatusCode.OK
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in SERVER_ERRORS:
                        span.set_status(Status(StatusCode.ERROR, code.name))

        return wrap_handler(continuation(handler_call_details), traced)
