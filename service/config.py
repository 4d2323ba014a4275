"""Server configuration. The only module that reads environment variables (DELTAMEM_*, and whether the
OTEL_* ones ask for tracing; the OpenTelemetry SDK reads the rest of them itself)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def default_cache_dir() -> Path:
    """Where converted models live: $DELTAMEM_CACHE_DIR, else ~/.cache/deltamem."""
    return Path(os.environ.get("DELTAMEM_CACHE_DIR") or Path.home() / ".cache" / "deltamem")


BACKENDS = ("torch", "sglang")


def tracing_requested(env: Mapping[str, str]) -> bool:
    """Tracing is off unless OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is set; OTEL_SDK_DISABLED
    turns it off whatever else is set (the OpenTelemetry convention)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    model_dir: Path | None = None  # None = the embedded default model
    adapter_dir: Path | None = None  # None = the shipped trained adapter (embedded model) or the reference init
    untrained_adapter: bool = False  # the reference init even for the embedded model
    backend: str = "torch"  # the engine: torch (in-process) or sglang (GPU)
    cache_dir: Path = Path(".cache")
    data_dir: Path | None = None  # where sessions are stored durably; None = cache_dir / "sessions"
    persist: bool = True  # False: sessions live in memory only and are lost at exit
    store_url: str = ""  # redis://host:port/db: share sessions with other replicas through Redis
    max_workers: int = 16
    max_batch: int = 8  # requests the engine runs together; more wait for a free slot
    grace_seconds: float = 30.0  # how long calls in flight may run on after shutdown begins
    drain_notice_seconds: float = 2.0  # NOT_SERVING, and still answering reads, before the server stops
    log_level: str = "INFO"
    api_keys_file: Path | None = None  # `tenant key` lines; with DELTAMEM_API_KEYS, none at all = auth off
    api_keys: str = ""  # DELTAMEM_API_KEYS: tenant:key,tenant:key
    max_sessions_per_tenant: int = 10_000
    max_input_tokens: int = 32_768  # per Generate or UpdateMemory call
    max_message_bytes: int = 16 << 20  # largest request the server accepts
    metrics_port: int | None = None  # Prometheus endpoint on host:metrics_port; None = off, 0 = a free port
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, the server speaks TLS only
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM CA bundle: clients must present a certificate it signed (mTLS)
    tracing: bool = False  # OpenTelemetry spans, configured by the standard OTEL_* variables
    prepare_only: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers}")
        if self.grace_seconds < 0 or self.drain_notice_seconds < 0:
            raise ValueError("grace_seconds and drain_notice_seconds must be >= 0")
        if self.max_sessions_per_tenant < 1 or self.max_input_tokens < 1:
            raise ValueError("max_sessions_per_tenant and max_input_tokens must be >= 1")
        if self.store_url and not self.store_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"store_url must be a redis:// URL, got {self.store_url!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("mutual TLS (a client CA) needs the server's own certificate and key too")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir or self.cache_dir / "sessions"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls) -> ServerConfig:
        """Defaults overridden by DELTAMEM_HOST, _PORT, _MODEL, _ADAPTER, _CACHE_DIR, _DATA_DIR, _STORE_URL,
        _MAX_WORKERS, _MAX_BATCH, _GRACE_SECONDS, _DRAIN_NOTICE_SECONDS, _LOG_LEVEL, _API_KEYS_FILE, _API_KEYS,
        _MAX_SESSIONS_PER_TENANT, _MAX_INPUT_TOKENS, _METRICS_PORT, _TLS_CERT, _TLS_KEY, _TLS_CLIENT_CA, _BACKEND."""
        env = os.environ
        return cls(
            host=env.get("DELTAMEM_HOST", cls.host),
            port=int(env.get("DELTAMEM_PORT", cls.port)),
            model_dir=Path(env["DELTAMEM_MODEL"]) if env.get("DELTAMEM_MODEL") else None,
            adapter_dir=Path(env["DELTAMEM_ADAPTER"]) if env.get("DELTAMEM_ADAPTER") else None,
            data_dir=Path(env["DELTAMEM_DATA_DIR"]) if env.get("DELTAMEM_DATA_DIR") else None,
            store_url=env.get("DELTAMEM_STORE_URL", ""),
            cache_dir=default_cache_dir(),
            max_workers=int(env.get("DELTAMEM_MAX_WORKERS", cls.max_workers)),
            max_batch=int(env.get("DELTAMEM_MAX_BATCH", cls.max_batch)),
            grace_seconds=float(env.get("DELTAMEM_GRACE_SECONDS", cls.grace_seconds)),
            drain_notice_seconds=float(env.get("DELTAMEM_DRAIN_NOTICE_SECONDS", cls.drain_notice_seconds)),
            log_level=env.get("DELTAMEM_LOG_LEVEL", cls.log_level),
            api_keys_file=Path(env["DELTAMEM_API_KEYS_FILE"]) if env.get("DELTAMEM_API_KEYS_FILE") else None,
            api_keys=env.get("DELTAMEM_API_KEYS", ""),
            max_sessions_per_tenant=int(env.get("DELTAMEM_MAX_SESSIONS_PER_TENANT", cls.max_sessions_per_tenant)),
            max_input_tokens=int(env.get("DELTAMEM_MAX_INPUT_TOKENS", cls.max_input_tokens)),
            metrics_port=int(env["DELTAMEM_METRICS_PORT"]) if env.get("DELTAMEM_METRICS_PORT") else None,
            tls_cert=Path(env["DELTAMEM_TLS_CERT"]) if env.get("DELTAMEM_TLS_CERT") else None,
            tls_key=Path(env["DELTAMEM_TLS_KEY"]) if env.get("DELTAMEM_TLS_KEY") else None,
            tls_client_ca=Path(env["DELTAMEM_TLS_CLIENT_CA"]) if env.get("DELTAMEM_TLS_CLIENT_CA") else None,
            tracing=tracing_requested(env),
            backend=env.get("DELTAMEM_BACKEND", cls.backend),
        )
