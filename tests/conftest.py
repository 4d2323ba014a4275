"""Shared fixtures: tiny random-weight backbones, the real default model (converted once per cache), and a real
server process on a free loopback port serving it.

Tests run with --import-mode=importlib and through the `pytest` script, so the repository root is never on
sys.path: the installed `deltamem.*` packages are what is tested, and no top-level `kernels` can shadow anything.
"""

from __future__ import annotations

import os

# Triton kernels run on the CPU interpreter unless a GPU is present; this must precede any @triton.jit import
if not os.path.exists("/dev/nvidia0") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from deltamem import kernels
from deltamem.client import MemoryClient
from deltamem.runtime.model.adapter import TRAINABLE_PARAMETER_NAMES
from deltamem.runtime.model.adapter_config import DeltaMemConfig
from deltamem.runtime.model.memory_model import MemoryModel
from deltamem.service.config import configure_kernels

configure_kernels()  # as a server in this environment would (DELTAMEM_KERNELS, _CPU_GEMM, _CACHE_DIR)


def tiny_backbone(model_type: str, seed: int = 0, vocab_size: int = 97):
    """A random-weight causal LM of the given architecture, small enough to run hundreds of times."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        # SmolLM3 skips RoPE in some layers: make one of the two a NoPE layer
        **({"no_rope_layers": [1, 0]} if model_type == "smollm3" else {}),
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).float().eval()


def tiny_memory_model(
    model_type: str = "llama", seed: int = 0, num_state_heads: int = 1, granularity: str = "token"
) -> MemoryModel:
    """A tiny backbone with an adapter whose gates and heads are random and large enough to matter."""
    config = DeltaMemConfig(num_state_heads=num_state_heads, memory_write_granularity=granularity)
    model = MemoryModel(tiny_backbone(model_type, seed), config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for adapter in model.adapters:
            for name in TRAINABLE_PARAMETER_NAMES:
                param = getattr(adapter, name)
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
            adapter.beta_bias.copy_(torch.randn(adapter.beta_bias.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="session")
def default_model_dir():
    from deltamem.runtime.model.default_model import prepare_default_model
    from deltamem.service.config import default_cache_dir

    return prepare_default_model(default_cache_dir())


@pytest.fixture(scope="session")
def default_engine(default_model_dir):
    """The real default model with the server's default (untrained, deterministic) adapter, in-process."""
    from deltamem.runtime.engine.sequential import SequentialEngine
    from deltamem.runtime.model.backbone import load_model

    return SequentialEngine(load_model(default_model_dir))


@pytest.fixture
def use_kernels():
    """use_kernels(backend=..., cpu_gemm=...) changes the kernels' settings for the rest of one test."""
    before = kernels.settings.current()
    yield lambda backend=None, **changes: kernels.configure(**({"backend": backend} if backend else {}), **changes)
    kernels.configure(before)


@pytest.fixture(scope="session")
def make_tiny_backbone():
    """Factory fixture: make_tiny_backbone(arch, seed=0, vocab_size=97) -> a random-weight HF causal LM."""
    return tiny_backbone


@pytest.fixture(scope="session")
def make_tiny_model():
    """Factory fixture: make_tiny_model(arch="llama", seed=0, num_state_heads=1, granularity="token")."""
    return tiny_memory_model


# ---- a real server ----------------------------------------------------------------------------------------
SCRIPTS = Path(sys.executable).parent
READY = re.compile(r"deltamem serving .* on 127\.0\.0\.1:(\d+)")
START_TIMEOUT_S = 300


class ServerProcess:
    """`deltamem-server --port 0` as a subprocess; the port comes from its "serving" log line."""

    def __init__(self, model_dir: Path, *args: str, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(
            [str(SCRIPTS / "deltamem-server"), "--host", "127.0.0.1", "--port", "0", "--model", str(model_dir), *args],
            env={**os.environ, **(env or {})},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            match = READY.search(line)
            if match:
                self.port = int(match.group(1))
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> str:
        if not self._ready.wait(START_TIMEOUT_S) or self.port is None:
            raise RuntimeError("server did not start:\n" + "".join(self.lines[-40:]))
        return f"127.0.0.1:{self.port}"

    def wait_exit(self, timeout: float) -> int:
        """The exit code, once the process has ended and all of its log has been read."""
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def start_server_process(default_model_dir):
    """Factory: start_server_process(*extra_args, env=extra_environment) -> a ready ServerProcess (stop it
    yourself)."""

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(default_model_dir, *args, env=env)
        proc.wait_ready()
        return proc

    return start


@pytest.fixture(scope="session")
def server(start_server_process, tmp_path_factory):
    """The shared server for the end-to-end tests, with its own durable session store; yields (address, proc)."""
    proc = start_server_process("--data-dir", str(tmp_path_factory.mktemp("sessions")))
    try:
        yield f"127.0.0.1:{proc.port}", proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def address(server):
    return server[0]


@pytest.fixture
def client(address):
    with MemoryClient(address, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def load_script():
    """load_script("gen_proto") -> the module scripts/gen_proto.py (scripts/ is not a package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # registered first: dataclasses look their module up while it runs
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def scripts_dir() -> Path:
    """Where the installed console scripts (deltamem, deltamem-server) live."""
    return SCRIPTS


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def eventually():
    """eventually(predicate, timeout=10) polls until the predicate holds; returns whether it did."""
    return wait_until


def start_redis(directory, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A real redis-server on loopback (a free port unless given) persisting every write (appendfsync always),
    answering pings: (its process, its URL)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make test installs it with apt where it can)")
    pytest.importorskip("redis", reason="the redis Python package is not installed")
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=1)
    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} (directory {directory}, port {port})")
        try:
            client.ping()
            break
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def launch_redis():
    """launch_redis(directory, port=None) -> (process, url): a redis-server of the test's own, to stop or freeze."""
    return start_redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server shared by the session's tests."""
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(10)
