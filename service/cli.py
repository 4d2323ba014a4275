"""`deltamem-server` (also `deltamem serve`): prepare the model, load it with its adapter, serve gRPC."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from deltamem.service.config import BACKENDS, ServerConfig

log = logging.getLogger("deltamem")


def parse_config(argv: list[str] | None = None) -> ServerConfig:
    base = ServerConfig.from_env()
    parser = argparse.ArgumentParser(prog="deltamem-server", description="Serve δ-mem sessions over gRPC.")
    parser.add_argument("--host", default=base.host, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=base.port, help="port; 0 picks a free one (default %(default)s)")
    parser.add_argument(
        "--model",
        type=Path,
        default=base.model_dir,
        help="local HF Llama/Qwen3/SmolLM3 directory (default: embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--adapter",
        type=Path,
        default=base.adapter_dir,
        help="δ-mem adapter in the reference format (default: the shipped trained adapter for the embedded model, "
        "the untrained reference init for any other)",
    )
    parser.add_argument(
        "--untrained-adapter", action="store_true", help="use the untrained reference init even for the embedded model"
    )
    parser.add_argument("--cache-dir", type=Path, default=base.cache_dir, help="model cache (default %(default)s)")
    parser.add_argument(
        "--data-dir", type=Path, default=base.data_dir, help="durable session store (default: CACHE_DIR/sessions)"
    )
    parser.add_argument("--ephemeral", action="store_true", help="keep sessions in memory only (lost at exit)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=base.backend,
        help="engine: torch (in-process, CPU or GPU) or sglang (GPU; docs/sglang.md) (default %(default)s)",
    )
    parser.add_argument(
        "--store",
        default=base.store_url,
        metavar="REDIS_URL",
        help="share sessions with other replicas through Redis (redis://host:port/db)",
    )
    parser.add_argument("--max-workers", type=int, default=base.max_workers, help="gRPC worker threads")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=base.max_batch,
        help="requests batched together by the engine (default %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=base.grace_seconds,
        help="seconds calls in flight may run on at shutdown (default %(default)s)",
    )
    parser.add_argument(
        "--drain-notice",
        type=float,
        default=base.drain_notice_seconds,
        help="seconds of NOT_SERVING before the server stops taking calls (default %(default)s)",
    )
    parser.add_argument(
        "--api-keys-file",
        type=Path,
        default=base.api_keys_file,
        help="'tenant key' lines; without keys (here or DELTAMEM_API_KEYS) auth is off",
    )
    parser.add_argument("--max-sessions-per-tenant", type=int, default=base.max_sessions_per_tenant)
    parser.add_argument(
        "--max-input-tokens",
        type=int,
        default=base.max_input_tokens,
        help="tokens one Generate or UpdateMemory input may have (default %(default)s)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=base.max_message_bytes,
        help="largest request accepted (default %(default)s)",
    )
    parser.add_argument("--tls-cert", type=Path, default=base.tls_cert, help="PEM certificate chain (enables TLS)")
    parser.add_argument("--tls-key", type=Path, default=base.tls_key, help="PEM private key")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        default=base.tls_client_ca,
        help="PEM CA bundle; clients must present a certificate it signed (mutual TLS)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=base.metrics_port,
        help="serve Prometheus metrics on this port (0: a free one; default: off)",
    )
    parser.add_argument("--log-level", default=base.log_level)
    parser.add_argument(
        "--prepare-only", action="store_true", help="convert the default model into the cache if needed, then exit"
    )
    args = parser.parse_args(argv)
    try:
        return ServerConfig(
            host=args.host,
            port=args.port,
            model_dir=args.model,
            adapter_dir=args.adapter,
            untrained_adapter=args.untrained_adapter,
            backend=args.backend,
            cache_dir=args.cache_dir,
            data_dir=args.data_dir,
            persist=not args.ephemeral,
            store_url=args.store,
            max_workers=args.max_workers,
            max_batch=args.max_batch,
            grace_seconds=args.grace,
            api_keys_file=args.api_keys_file,
            api_keys=base.api_keys,
            tracing=base.tracing,
            max_sessions_per_tenant=args.max_sessions_per_tenant,
            max_input_tokens=args.max_input_tokens,
            max_message_bytes=args.max_message_bytes,
            metrics_port=args.metrics_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            drain_notice_seconds=args.drain_notice,
            log_level=args.log_level,
            prepare_only=args.prepare_only,
        )
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from deltamem.runtime.model.default_model import DefaultModelUnavailable, prepare_default_model
    from deltamem.service.compose import StartupError, deploy
    from deltamem.service.server import serve_until_signalled

    started = time.monotonic()
    if config.prepare_only:
        try:
            log.info("default model ready: %s", prepare_default_model(config.cache_dir))
        except DefaultModelUnavailable as exc:
            log.error("%s", exc)
            return 2
        return 0
    try:
        deployment = deploy(config)
    except StartupError as exc:
        log.error("%s", exc)
        return 2
    engine, running = deployment.engine, deployment.running
    provider = deployment.tracer_provider
    log.info("tracing: %s", "OpenTelemetry (OTEL_* settings)" if provider else "off (no OTEL_* exporter set)")
    if deployment.metrics_port is not None:
        log.info("metrics on http://%s:%d/metrics", config.host, deployment.metrics_port)
    log.info(
        "authentication: %s", "API keys required" if deployment.api_keys_enabled else "off (no API keys configured)"
    )
    transport = "mutual TLS" if config.tls_client_ca else "TLS" if config.tls_cert else "plaintext"
    log.info("transport: %s", transport)
    sessions = deployment.sessions
    log.info("sessions: %s (%d loaded)", config.sessions_dir if config.persist else "in memory only", sessions.count())
    # the line tests and operators wait for; it names the port actually bound
    log.info(
        "deltamem serving %s on %s:%d (model %s, adapter %s, ready in %.1f s)",
        deployment.model_dir.name,
        config.host,
        running.port,
        engine.backbone_fingerprint,
        engine.adapter_fingerprint,
        time.monotonic() - started,
    )
    serve_until_signalled(running, config.grace_seconds, config.drain_notice_seconds)
    deployment.close()
    log.info("deltamem stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
