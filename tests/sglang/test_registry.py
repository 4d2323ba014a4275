"""SGLang's own model registry finds our EntryClass through SGLANG_EXTERNAL_MODEL_PACKAGE, and the engine
arguments we give sglang.Engine are all fields of SGLang's ServerArgs. Needs SGLang importable (light venv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("sglang_models")

PROBE = """
import json, os
from sglang.srt.models.registry import ModelRegistry
from sglang.srt.models.llama import LlamaForCausalLM as StockLlama
from sglang.srt.models.qwen3 import Qwen3ForCausalLM as StockQwen3
found = {}
for arch, stock in (("LlamaForCausalLM", StockLlama), ("Qwen3ForCausalLM", StockQwen3)):
    cls, name = ModelRegistry.resolve_model_cls([arch])
    found[arch] = [cls.__module__, cls.__qualname__, name, issubclass(cls, stock), cls is stock]
found["Phi3ForCausalLM"] = ModelRegistry.resolve_model_cls(["Phi3ForCausalLM"])[0].__module__
print("RESULT " + json.dumps(found))
"""


def _probe(torchvision_shim: str, package: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SGLANG_EXTERNAL_MODEL_PACKAGE"}
    if package:
        env["SGLANG_EXTERNAL_MODEL_PACKAGE"] = package
    done = subprocess.run(
        [sys.executable, "-c", torchvision_shim + PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_registry_resolves_our_classes(torchvision_shim):
    found = _probe(torchvision_shim, "deltamem.runtime.sglang_backend")
    for arch in ("LlamaForCausalLM", "Qwen3ForCausalLM"):
        module, qualname, name, subclass, is_stock = found[arch]
        assert (module, qualname, name) == ("deltamem.runtime.sglang_backend.models", arch, arch)
        assert subclass and not is_stock
    assert found["Phi3ForCausalLM"] == "sglang.srt.models.llama"  # other architectures stay SGLang's


def test_without_the_package_sglang_keeps_its_own(torchvision_shim):
    found = _probe(torchvision_shim, None)
    assert found["LlamaForCausalLM"][0] == "sglang.srt.models.llama"
    assert found["Qwen3ForCausalLM"][0] == "sglang.srt.models.qwen3"


def test_engine_arguments_are_server_args_fields(tmp_path):
    from sglang.srt.server_args import ServerArgs

    from deltamem.runtime.sglang_backend.engine import server_args

    fields = set(ServerArgs.__struct_fields__)
    arguments = server_args(tmp_path, max_batch=4)
    assert set(arguments) <= fields, sorted(set(arguments) - fields)
    assert arguments["disable_radix_cache"] and arguments["skip_tokenizer_init"] and arguments["tp_size"] == 1


def test_sampling_arguments_are_sglang_sampling_params():
    from sglang.srt.sampling.sampling_params import TOP_K_ALL
    from sglang.srt.sampling.sampling_params import SamplingParams as SGLangSampling

    from deltamem.runtime.engine.sampling import SamplingParams
    from deltamem.runtime.sglang_backend.engine import sampling_args

    args = sampling_args(SamplingParams(temperature=0.7, top_p=0.9, top_k=0), 5)
    params = SGLangSampling(**args)
    params.verify(vocab_size=100)
    assert (params.max_new_tokens, params.top_k, params.ignore_eos) == (5, TOP_K_ALL, True)  # -1: no top-k
    assert (params.temperature, params.top_p) == (0.7, 0.9)
