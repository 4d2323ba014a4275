"""Server options: each declared once (service/config.py) with its flag, its environment variable and its help
text; flags override the environment, which overrides the defaults; a bad value is one clear line, never a
traceback, through the real entry points; and no other module of the package reads the environment."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deltamem.service.config import ConfigError, ServerConfig, options, parser

ROOT = Path(__file__).resolve().parents[2]


def test_every_option_has_its_flag_variable_and_help():
    declared = options()
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    assert set(declared) == fields - {"tracing"}  # tracing follows the OTEL_* convention instead
    envs = [spec.env for spec in declared.values()]
    flags = [spec.flag for spec in declared.values() if spec.flag is not None]
    assert len(set(envs)) == len(envs) and len(set(flags)) == len(flags)
    assert all(env.startswith("DELTAMEM_") for env in envs)
    assert [name for name, spec in declared.items() if spec.flag is None] == ["api_keys"]  # a secret: env only
    text = parser().format_help()
    for spec in declared.values():
        assert spec.help and spec.env in text
        if spec.flag is not None:
            assert re.search(rf"{re.escape(spec.flag)}\b", text), spec.flag


def test_a_flag_overrides_the_environment_which_overrides_the_default():
    env = {"DELTAMEM_PORT": "7000", "DELTAMEM_MAX_BATCH": "3", "DELTAMEM_EPHEMERAL": "yes", "DELTAMEM_KERNELS": "torch"}
    config = ServerConfig.parse(["--port", "0", "--log-level", "debug", "--cpu-gemm", "default"], env)
    assert (config.port, config.max_batch, config.persist, config.log_level) == (0, 3, False, "DEBUG")
    assert (config.kernel_settings.backend, config.kernel_settings.cpu_gemm) == ("torch", "default")
    assert ServerConfig.parse([], {}) == ServerConfig()
    assert ServerConfig.parse(["--ephemeral"], {}).persist is False
    assert ServerConfig.from_env({"DELTAMEM_STORE_URL": "redis://r:6379/0"}).store_url == "redis://r:6379/0"
    assert ServerConfig.from_env({"OTEL_TRACES_EXPORTER": "console"}).tracing


@pytest.mark.parametrize(
    "argv,env,message",
    [
        ([], {"DELTAMEM_PORT": "abc"}, "DELTAMEM_PORT='abc': expected an integer"),
        (["--grace", "soon"], {}, "--grace='soon': expected a number of seconds"),
        ([], {"DELTAMEM_EPHEMERAL": "maybe"}, "DELTAMEM_EPHEMERAL='maybe': expected true or false"),
        (["--kernels", "fast"], {}, "--kernels='fast': expected one of auto, triton, torch, native"),
        (["--max-batch", "0"], {}, "max_batch must be >= 1, got 0"),
        (["--portt", "1"], {}, "unrecognized arguments: --portt 1"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_where_it_came_from(argv, env, message):
    with pytest.raises(ConfigError) as error:
        ServerConfig.parse(argv, env)
    assert message in str(error.value)


def run_server(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("DELTAMEM_")} | env
    command = [str(Path(sys.executable).parent / "deltamem-server"), *args]
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args,env,message",
    [
        ((), {"DELTAMEM_PORT": "abc"}, "DELTAMEM_PORT='abc': expected an integer"),
        (("--log-level", "loud"), {}, "--log-level='loud': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        (("--tls-cert", "cert.pem"), {}, "TLS needs both a certificate and a key"),
    ],
)
def test_the_server_command_reports_a_bad_value_in_one_line(args, env, message):
    done = run_server(*args, **env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"deltamem-server: error: {message} (see deltamem-server --help)"]


def test_python_dash_m_reports_the_same_line():
    env = {key: value for key, value in os.environ.items() if not key.startswith("DELTAMEM_")}
    env["DELTAMEM_MAX_WORKERS"] = "many"
    done = subprocess.run(
        [sys.executable, "-m", "deltamem.service"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "deltamem-server: error: DELTAMEM_MAX_WORKERS='many': expected an integer (see deltamem-server --help)"
    ]


def test_only_the_config_module_reads_the_environment():
    """os.environ / os.getenv appear nowhere in the package but service/config.py and the documented process
    handoff to SGLang's model process (runtime/sglang_backend/handoff.py)."""
    allowed = {ROOT / "service" / "config.py", ROOT / "runtime" / "sglang_backend" / "handoff.py"}
    pattern = re.compile(r"\bos\.(environ|getenv|putenv)\b|\bfrom os import .*\b(environ|getenv)\b")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("kernels", "runtime", "service")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path not in allowed and pattern.search(path.read_text())
    ]
    assert offenders == []
