"""Builds and runs the gRPC server: MemoryService, standard health checking and reflection."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from deltamem.runtime.engine import Engine
from deltamem.runtime.sessions import SessionManager
from deltamem.service.config import ServerConfig
from deltamem.service.servicer import MemoryServicer
from deltamem.v1 import memory_service_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MemoryService"].full_name


class RunningServer:
    """A started server with its health servicer; `stop` drains it gracefully."""

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer, port: int):
        self.server = server
        self.health = health_servicer
        self.port = port

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def stop(self, grace: float) -> None:
        self.set_serving(False)
        self.server.stop(grace).wait()


def start_server(engine: Engine, config: ServerConfig) -> RunningServer:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.max_workers))
    from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

    pb_grpc.add_MemoryServiceServicer_to_server(MemoryServicer(engine, SessionManager(engine.empty_state())), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(config.address)
    if port == 0:
        raise OSError(f"could not bind {config.address}")
    server.start()
    running = RunningServer(server, health_servicer, port)
    running.set_serving(True)
    return running


def serve_until_signalled(running: RunningServer, grace: float) -> None:
    """Block until SIGINT or SIGTERM, then report NOT_SERVING and let in-flight calls finish within `grace`."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down: draining for up to %.0f s", grace)
    running.stop(grace)
