"""Builds and runs the gRPC server: MemoryService, standard health checking and reflection."""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from deltamem.runtime import tracing
from deltamem.runtime.engine.protocol import Engine
from deltamem.runtime.sessions.manager import SessionManager
from deltamem.service.admission import Admission, AdmissionInterceptor
from deltamem.service.auth import ApiKeys
from deltamem.service.auth_interceptor import AuthInterceptor
from deltamem.service.config import ServerConfig
from deltamem.service.decoding_interceptor import DecodingInterceptor
from deltamem.service.servicer import MemoryServicer
from deltamem.service.store_watch import StoreWatch
from deltamem.service.tracing import TracingInterceptor
from deltamem.v1 import memory_service_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MemoryService"].full_name


class RunningServer:
    """A started server with its health servicer; `stop` drains it gracefully."""

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer, port: int, servicer):
        self.server = server
        self.health = health_servicer
        self.port = port
        self.servicer = servicer
        self._health_lock = threading.Lock()
        self._store_reachable = True
        self._draining = False
        self.store_watch = StoreWatch(servicer.sessions.ping, self._store_changed)

    def publish_health(self) -> None:
        """SERVING while the store answers and the server is not draining; NOT_SERVING otherwise."""
        with self._health_lock:
            serving = self._store_reachable and not self._draining
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE_NAME):
                self.health.set(name, status)

    def _store_changed(self, reachable: bool) -> None:
        self._store_reachable = reachable
        self.publish_health()

    def stop(self, grace: float, notice: float = 0.0) -> None:
        """Drain: health turns NOT_SERVING and new session-changing calls get UNAVAILABLE at once; after `notice`
        seconds (for probes and load balancers to see it) the server stops taking any call and gives the
        ones in flight up to `grace` seconds to finish."""
        self.store_watch.stop()
        self._draining = True
        self.publish_health()
        self.servicer.draining = True
        if notice:
            time.sleep(notice)
        self.server.stop(grace).wait()


def tls_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    """TLS with the configured certificate; with a client CA, clients must present a certificate it signed."""
    client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def start_server(
    engine: Engine,
    sessions: SessionManager,
    config: ServerConfig,
    keys: ApiKeys | None = None,
    metrics=None,
) -> RunningServer:
    """Serve `engine` and `sessions` (with API `keys`, by default none, and optional `metrics`) on
    config.address."""
    limits = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    interceptors = [TracingInterceptor()] if tracing.enabled() else []  # outermost: the span covers the rest
    if metrics is not None:
        interceptors.append(metrics.interceptor())
    if keys is not None and keys.enabled:
        interceptors.append(AuthInterceptor(keys))  # refusals are still traced and counted
    admission = Admission(config.max_calls, config.max_calls_per_tenant)
    interceptors.append(AdmissionInterceptor(admission, keys or ApiKeys({})))  # after the key check
    interceptors.append(DecodingInterceptor())  # after the key check: a keyless call is never decoded
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers), options=limits, interceptors=interceptors
    )
    from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

    servicer = MemoryServicer(engine, sessions, keys, metrics)
    pb_grpc.add_MemoryServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = (
        server.add_secure_port(config.address, tls_credentials(config))
        if config.tls_cert
        else (server.add_insecure_port(config.address))
    )
    if port == 0:
        raise OSError(f"could not bind {config.address}")
    server.start()
    running = RunningServer(server, health_servicer, port, servicer)
    running.publish_health()
    running.store_watch.start()
    return running


def serve_until_signalled(running: RunningServer, grace: float, notice: float) -> None:
    """Block until SIGINT or SIGTERM, then drain (see RunningServer.stop)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down: NOT_SERVING now, draining for up to %.0f s after a %.0f s notice", grace, notice)
    running.stop(grace, notice)
