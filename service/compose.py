"""Composition: the one place where a configuration becomes a running server (engine, session store and manager,
API keys, tracing, metrics, the gRPC server). A problem an operator can fix is a StartupError naming it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from deltamem.runtime import tracing
from deltamem.runtime.engine.protocol import Engine
from deltamem.runtime.sessions.manager import SessionManager
from deltamem.runtime.sessions.state_codec import StateIdentity
from deltamem.runtime.sessions.store import MemoryStore, StoreMismatch
from deltamem.runtime.sessions.traced_store import TracedStore
from deltamem.service.config import ServerConfig, configure_kernels, otel_settings
from deltamem.service.server import RunningServer, start_server

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The server cannot start as configured; the message says why."""


@dataclass
class Deployment:
    """A started server and what it runs; `close` stops them in order."""

    engine: Engine
    sessions: SessionManager
    running: RunningServer
    model_dir: Path
    metrics_port: int | None
    tracer_provider: object | None
    api_keys_enabled: bool

    def close(self) -> None:
        from deltamem.service.tracing import stop_tracing

        self.engine.close()
        if self.tracer_provider is not None:
            stop_tracing(self.tracer_provider)  # flushes the last spans


def open_engine(config: ServerConfig, model_dir: Path, adapter_dir: Path | None) -> Engine:
    """The configured backend: the in-process PyTorch BatchEngine, or SGLang (GPU only; docs/sglang.md)."""
    if config.backend == "sglang":
        try:
            import sglang  # noqa: F401 - fail here, with the reason, rather than deep inside the engine

            from deltamem.runtime.sglang_backend.engine import SGLangEngine
        except ImportError as exc:
            raise ImportError(f"--backend sglang needs SGLang on a GPU machine (see docs/sglang.md): {exc}") from exc
        if adapter_dir is None:
            raise ValueError("--backend sglang needs an adapter (--adapter DIR)")
        return SGLangEngine(
            model_dir, adapter_dir, max_batch=config.max_batch, max_input_tokens=config.max_input_tokens
        )
    from deltamem.runtime.engine.batch_engine import BatchEngine
    from deltamem.runtime.model.backbone import load_model

    loaded = load_model(model_dir, adapter_dir)
    return BatchEngine(loaded, max_batch=config.max_batch, max_input_tokens=config.max_input_tokens)


def open_sessions(engine: Engine, config: ServerConfig) -> SessionManager:
    """The session manager over the configured store: Redis if a URL is given, else SQLite in the data
    directory, or memory only when persistence is off."""
    identity = StateIdentity.of(engine).as_dict()
    if config.store_url:
        from deltamem.runtime.sessions.redis_store import RedisStore

        store = RedisStore(config.store_url, identity)
    elif config.persist:
        from deltamem.runtime.sessions.sqlite_store import SqliteStore

        store = SqliteStore(config.sessions_dir, identity)
    else:
        store = MemoryStore()
    if tracing.enabled():
        store = TracedStore(store)
    return SessionManager(engine.empty_state(), store, config.max_sessions_per_tenant)


def deploy(config: ServerConfig) -> Deployment:
    """Load the model and start serving it as `config` says."""
    from deltamem.runtime.model.default_model import DefaultModelUnavailable, default_adapter_dir, prepare_default_model
    from deltamem.service.auth import ApiKeys
    from deltamem.service.metrics import Metrics
    from deltamem.service.tracing import start_tracing

    configure_kernels(config)
    try:
        model_dir = config.model_dir or prepare_default_model(config.cache_dir)
        adapter_dir = default_adapter_dir(config.model_dir, config.adapter_dir, config.untrained_adapter)
        engine = open_engine(config, model_dir, adapter_dir)
    except (DefaultModelUnavailable, FileNotFoundError, ValueError, ImportError) as exc:
        raise StartupError(f"cannot load the model: {exc}") from exc
    try:
        keys = ApiKeys.load(config.api_keys_file, config.api_keys)
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot load API keys: {exc}") from exc
    try:
        provider = start_tracing(otel_settings()) if config.tracing else None
    except ValueError as exc:
        raise StartupError(f"cannot start tracing: {exc}") from exc
    try:
        sessions = open_sessions(engine, config)
    except StoreMismatch as exc:
        raise StartupError(str(exc)) from exc
    metrics = Metrics(sessions, engine) if config.metrics_port is not None else None
    running = start_server(engine, sessions, config, keys, metrics)
    metrics_port = metrics.serve(config.host, config.metrics_port) if metrics is not None else None
    return Deployment(engine, sessions, running, model_dir, metrics_port, provider, keys.enabled)
