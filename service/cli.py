"""`deltamem-server` (also `deltamem serve`): prepare the model, load it with its adapter, serve gRPC."""

from __future__ import annotations

import logging
import sys
import time

from deltamem.service.config import ConfigError, ServerConfig

log = logging.getLogger("deltamem")


def main(argv: list[str] | None = None) -> int:
    try:
        config = ServerConfig.parse(argv)
    except ConfigError as exc:  # one line saying what is wrong, never a traceback
        print(f"deltamem-server: error: {exc} (see deltamem-server --help)", file=sys.stderr)
        return 2
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
