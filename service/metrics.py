"""Prometheus metrics: requests and latency by RPC and status code, tokens generated and written, sessions
stored, and state-pool slots in use. Served over HTTP on --metrics-port (off unless set)."""

from __future__ import annotations

import time
from contextlib import contextmanager

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from deltamem.runtime.engine.protocol import Engine
from deltamem.runtime.sessions.manager import SessionManager
from deltamem.service.interceptors import status_code, wrap_handler

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, sessions: SessionManager, engine: Engine):
        """`sessions` (counted) and `engine` (its state pool) are read at scrape time."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "deltamem_requests", "gRPC requests by method and status code", ["method", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "deltamem_request_seconds",
            "gRPC request duration, to the last message of a stream",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "deltamem_generated_tokens", "tokens generated (rate() gives tokens/s)", registry=self.registry
        )
        self.written_tokens = Counter("deltamem_written_tokens", "tokens written into memory", registry=self.registry)
        Gauge("deltamem_sessions", "sessions in the store", registry=self.registry).set_function(sessions.count)
        Gauge("deltamem_state_pool_slots", "slots of the engine's state pool", registry=self.registry).set(
            engine.max_batch
        )
        Gauge(
            "deltamem_state_pool_slots_in_use", "slots held by requests in flight", registry=self.registry
        ).set_function(lambda: engine.slots_in_use)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint; returns the port bound (port 0 picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port

    def interceptor(self) -> grpc.ServerInterceptor:
        return _MetricsInterceptor(self)


class _MetricsInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method.rsplit("/", 1)[-1]
        metrics = self._metrics

        @contextmanager
        def observed(_request, context):
            started, failed = time.perf_counter(), True
            try:
                yield
                failed = False
            finally:
                code = status_code(context)
                name = code.name if code is not None else ("UNKNOWN" if failed else "OK")
                metrics.requests.labels(method, name).inc()
                metrics.latency.labels(method).observe(time.perf_counter() - started)

        return wrap_handler(continuation(handler_call_details), observed)
