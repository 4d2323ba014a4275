"""Server configuration: every option declared once, as a field of ServerConfig whose metadata gives its flag,
its environment variable and its help text; the command line, the environment and `--help` all come from them.
A value is taken from the flag, else the variable, else the default; a bad one is a ConfigError naming where it
came from and what is wanted.

The only module that reads environment variables: DELTAMEM_*, and whether the OTEL_* ones ask for tracing (the
OpenTelemetry SDK reads the rest of them itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deltamem.kernels import settings as kernel_settings
from deltamem.kernels.settings import BACKENDS as KERNEL_BACKENDS
from deltamem.kernels.settings import CPU_GEMMS, DEFAULT_BUILD_ROOT, KernelSettings

ENV_PREFIX = "DELTAMEM_"
BACKENDS = ("torch", "sglang")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
STORE_SCHEMES = ("redis://", "rediss://", "unix://")


class ConfigError(ValueError):
    """A bad option value or command line; the message names the flag or variable and what it must be."""


def tracing_requested(env: Mapping[str, str]) -> bool:
    """Tracing is off unless OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is set; OTEL_SDK_DISABLED
    turns it off whatever else is set (the OpenTelemetry convention)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def otel_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The OTEL_* variables, for the tracer provider's own checks (service/tracing.py)."""
    env = os.environ if env is None else env
    return {key: value for key, value in env.items() if key.startswith("OTEL_")}


# ---- how an option reads its text ------------------------------------------------------------------------------
def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected an integer") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


def _choice(choices: tuple[str, ...], normalise: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    def read(text: str) -> str:
        value = normalise(text.strip())
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return read


@dataclass(frozen=True)
class Option:
    """How a ServerConfig field is set: `--flag VALUE` (a switch takes no value) or the environment variable."""

    flag: str | None  # None: no flag (the help text says why)
    env: str
    help: str
    read: Callable[[str], object]  # text -> value; a ValueError says what was expected
    switch: bool = False  # a flag without a value: sets `switch_value`
    switch_value: bool = True
    metavar: str | None = None

    def parse(self, text: str, source: str):
        try:
            return self.read(text)
        except ValueError as exc:
            raise ConfigError(f"{source}={text!r}: {exc}") from None


def option(
    default,
    help: str,
    *,
    name: str | None = None,
    env: str | None = None,
    read: Callable[[str], object] = str,
    switch: bool = False,
    switch_value: bool = True,
    no_flag: bool = False,
    metavar: str | None = None,
):
    """A ServerConfig field with its Option: flag --<name>, variable DELTAMEM_<NAME> unless given (name: the field's
    own, dashes for underscores, unless given)."""

    def declare(field_name: str) -> Option:
        stem = name or field_name.replace("_", "-")
        shown = metavar or {_integer: "N", _optional_integer: "N", _number: "SECONDS"}.get(read)
        return Option(
            flag=None if no_flag else f"--{stem}",
            env=env or ENV_PREFIX + stem.upper().replace("-", "_"),
            help=help,
            read=read,
            switch=switch,
            switch_value=switch_value,
            metavar=shown,
        )

    return field(default=default, metadata={"option": declare})


def _path(text: str) -> Path:
    return Path(text)


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def _optional_integer(text: str) -> int | None:
    return _integer(text) if text else None


@dataclass(frozen=True)
class ServerConfig:
    host: str = option("127.0.0.1", "address to bind")
    port: int = option(50051, "port; 0 picks a free one", read=_integer)
    model_dir: Path | None = option(
        None,
        "local HF Llama/Qwen3/SmolLM3 directory (default: the embedded SmolLM2-135M-Instruct)",
        name="model",
        read=_optional_path,
        metavar="DIR",
    )
    adapter_dir: Path | None = option(
        None,
        "δ-mem adapter in the reference format (default: the shipped trained adapter for the embedded model, the "
        "untrained reference init for any other)",
        name="adapter",
        read=_optional_path,
        metavar="DIR",
    )
    untrained_adapter: bool = option(
        False, "use the untrained reference init even for the embedded model", read=_switch, switch=True
    )
    backend: str = option(
        "torch",
        "engine: torch (in-process, CPU or GPU) or sglang (GPU; docs/sglang.md)",
        read=_choice(BACKENDS),
        metavar="|".join(BACKENDS),
    )
    kernels: str = option(
        "auto",
        "memory kernels: auto, or force triton, torch (the plain PyTorch path) or native (the compiled CPU ops, "
        "required); docs/kernels.md",
        read=_choice(KERNEL_BACKENDS),
        metavar="|".join(KERNEL_BACKENDS),
    )
    cpu_gemm: str = option(
        "onednn",
        "float32 CPU linears on oneDNN, or PyTorch's default path",
        read=_choice(CPU_GEMMS),
        metavar="|".join(CPU_GEMMS),
    )
    cache_dir: Path = option(DEFAULT_BUILD_ROOT, "converted models and the compiled CPU ops", read=_path, metavar="DIR")
    data_dir: Path | None = option(
        None, "durable session store (default: CACHE_DIR/sessions)", read=_optional_path, metavar="DIR"
    )
    persist: bool = option(
        True,
        "keep sessions in memory only (lost at exit)",
        name="ephemeral",
        read=lambda text: not _switch(text),
        switch=True,
        switch_value=False,
    )
    store_url: str = option(
        "",
        "share sessions with other replicas through Redis (redis://host:port/db)",
        name="store",
        env="DELTAMEM_STORE_URL",
        metavar="REDIS_URL",
    )
    max_workers: int = option(16, "gRPC worker threads", read=_integer)
    max_batch: int = option(8, "requests the engine runs together; more wait for a free slot", read=_integer)
    max_calls: int = option(
        12,
        "long calls (Generate, UpdateMemory, ImportState) in flight at once; more are RESOURCE_EXHAUSTED. Below "
        "max-workers: the other workers stay free for health checks and short calls",
        read=_integer,
    )
    max_calls_per_tenant: int = option(6, "long calls one tenant may have in flight", read=_integer)
    grace_seconds: float = option(
        30.0,
        "seconds calls in flight may run on after shutdown begins",
        name="grace",
        env="DELTAMEM_GRACE_SECONDS",
        read=_number,
    )
    drain_notice_seconds: float = option(
        2.0,
        "seconds of NOT_SERVING (reads still answered) before the server stops taking calls",
        name="drain-notice",
        env="DELTAMEM_DRAIN_NOTICE_SECONDS",
        read=_number,
    )
    log_level: str = option("INFO", "logging level", read=_choice(LOG_LEVELS, str.upper), metavar="|".join(LOG_LEVELS))
    api_keys_file: Path | None = option(
        None,
        "'tenant key' lines; without keys (here or DELTAMEM_API_KEYS) authentication is off",
        read=_optional_path,
        metavar="FILE",
    )
    api_keys: str = option(
        "",
        "API keys as tenant:key,tenant:key (kept off the command line, which `ps` shows)",
        no_flag=True,
    )
    max_sessions_per_tenant: int = option(10_000, "sessions one tenant may hold", read=_integer)
    max_input_tokens: int = option(32_768, "tokens one Generate or UpdateMemory input may have", read=_integer)
    max_message_bytes: int = option(16 << 20, "largest request accepted", read=_integer)
    metrics_port: int | None = option(
        None, "serve Prometheus metrics on this port, 0: a free one (default: off)", read=_optional_integer
    )
    tls_cert: Path | None = option(None, "PEM certificate chain (enables TLS)", read=_optional_path, metavar="FILE")
    tls_key: Path | None = option(None, "PEM private key", read=_optional_path, metavar="FILE")
    tls_client_ca: Path | None = option(
        None,
        "PEM CA bundle; clients must present a certificate it signed (mutual TLS)",
        read=_optional_path,
        metavar="FILE",
    )
    prepare_only: bool = option(
        False, "convert the default model into the cache if needed, then exit", read=_switch, switch=True
    )
    # not an option: OpenTelemetry spans, on when the standard OTEL_* variables ask for them (tracing_requested)
    tracing: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers}")
        if not 1 <= self.max_calls < self.max_workers:
            raise ValueError(
                f"max_calls must be at least 1 and below max_workers ({self.max_workers}), got {self.max_calls}"
            )
        if not 1 <= self.max_calls_per_tenant <= self.max_calls:
            raise ValueError(f"max_calls_per_tenant must be in [1, max_calls], got {self.max_calls_per_tenant}")
        if self.grace_seconds < 0 or self.drain_notice_seconds < 0:
            raise ValueError("grace_seconds and drain_notice_seconds must be >= 0")
        if self.max_sessions_per_tenant < 1 or self.max_input_tokens < 1 or self.max_message_bytes < 1:
            raise ValueError("max_sessions_per_tenant, max_input_tokens and max_message_bytes must be >= 1")
        if self.store_url and not self.store_url.startswith(STORE_SCHEMES):
            raise ValueError(f"store_url must be a redis:// URL, got {self.store_url!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("mutual TLS (a client CA) needs the server's own certificate and key too")
        for name, choices in (("backend", BACKENDS), ("kernels", KERNEL_BACKENDS), ("cpu_gemm", CPU_GEMMS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir or self.cache_dir / "sessions"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kernel_settings(self) -> KernelSettings:
        """What the kernels are told (kernels/settings.py): backend, CPU GEMMs, where the compiled ops are built."""
        return KernelSettings(backend=self.kernels, cpu_gemm=self.cpu_gemm, build_root=self.cache_dir)

    @classmethod
    def parse(cls, argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
        """The configuration the command line `argv` (default sys.argv[1:]) and the environment `env` (default
        os.environ) ask for; a ConfigError for anything they get wrong. `--help` prints every option and exits."""
        env = os.environ if env is None else env
        given = vars(parser().parse_args(argv))
        values = {}
        for name, spec in options().items():
            if env.get(spec.env):
                values[name] = spec.parse(env[spec.env], spec.env)
            if name in given:
                values[name] = given[name] if spec.switch else spec.parse(given[name], spec.flag)
        try:
            return cls(**values, tracing=tracing_requested(env))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        """Defaults overridden by the environment alone (no command line)."""
        return cls.parse([], env)


def options() -> dict[str, Option]:
    """Field name -> its Option, in declaration order."""
    found = {}
    for item in dataclasses.fields(ServerConfig):
        declare = item.metadata.get("option")
        if declare is not None:
            found[item.name] = declare(item.name)
    return found


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(message)


def parser() -> argparse.ArgumentParser:
    """The command line, built from the options: values are kept as text (parse reads them) and absent flags are
    absent (the environment or the default applies)."""
    flagless = [spec for spec in options().values() if spec.flag is None]
    command = _Parser(
        prog="deltamem-server",
        description="Serve δ-mem sessions over gRPC. Each option can also be set by the environment variable shown.",
        epilog="Environment only: "
        + "; ".join(f"{spec.env}: {spec.help}" for spec in flagless)
        + "; tracing: the standard OTEL_* variables (docs/operations.md).",
        argument_default=argparse.SUPPRESS,
    )
    defaults = ServerConfig.__dataclass_fields__
    for name, spec in options().items():
        if spec.flag is None:
            continue
        default = defaults[name].default
        shown = "off" if spec.switch else ("none" if default is None or default == "" else default)
        text = f"{spec.help} [{spec.env}]" + ("" if "(default" in spec.help else f" (default: {shown})")
        text = text.replace("%", "%%")
        if spec.switch:
            command.add_argument(spec.flag, dest=name, action="store_const", const=spec.switch_value, help=text)
        else:
            command.add_argument(spec.flag, dest=name, metavar=spec.metavar or name.upper(), help=text)
    return command


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where converted models live: the cache_dir option's environment variable, else its default."""
    env = os.environ if env is None else env
    spec = options()["cache_dir"]
    return spec.parse(env[spec.env], spec.env) if env.get(spec.env) else ServerConfig.cache_dir


def configure_kernels(config: ServerConfig | None = None) -> KernelSettings:
    """Give the kernels the settings `config` (by default the environment's) asks for, and return them: what the
    server does as it starts, and what in-process users (benchmarks, tests, evaluations) do to run as it would."""
    chosen = (config or ServerConfig.from_env()).kernel_settings
    kernel_settings.configure(chosen)
    return chosen
