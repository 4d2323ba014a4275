"""Loading a frozen backbone (any local HF Llama / Qwen3 / SmolLM3 directory) and attaching the adapter."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from deltamem.kernels import cpu_linear, prepare_decode
from deltamem.runtime.model.adapter_config import DeltaMemConfig
from deltamem.runtime.model.checkpoint import adapter_fingerprint, load_adapter_weights
from deltamem.runtime.model.memory_model import SUPPORTED_MODEL_TYPES, MemoryModel, UnsupportedBackbone

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: MemoryModel
    tokenizer: object
    backbone_fingerprint: str
    adapter_fingerprint: str


def backbone_fingerprint(model_dir: Path) -> str:
    """Digest of config.json and the weight files' bytes: identical weights give identical fingerprints."""
    digest = hashlib.sha256(Path(model_dir, "config.json").read_bytes())
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_model(
    model_dir: Path,
    adapter_dir: Path | None = None,
    device: str = "cpu",
    seed: int = 0,
    init_config: DeltaMemConfig | None = None,
) -> LoadedModel:
    """Load the backbone in fp32 inference mode with a δ-mem adapter: from `adapter_dir` (reference format) if
    given, else the deterministic untrained init of the reference recipe."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedBackbone(f"{model_dir}: model_type {model_type!r} is not one of {SUPPORTED_MODEL_TYPES}")
    backbone = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    cpu_linear.install(backbone)  # before the adapter wraps q_proj / o_proj, so their plain forward is this one
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if adapter_dir is not None:
        config = DeltaMemConfig.load(Path(adapter_dir))
        model = MemoryModel(backbone, config).to(device)
        load_adapter_weights(Path(adapter_dir), list(model.adapters))
        log.info("adapter loaded from %s", adapter_dir)
    else:
        model = MemoryModel(backbone, init_config or DeltaMemConfig()).to(device)
        model.init_adapter(seed)
        log.warning("no adapter given: using an UNTRAINED adapter (reference init, seed %d)", seed)
    model.eval().requires_grad_(False)
    prepare_decode(device)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        backbone_fingerprint=backbone_fingerprint(model_dir),
        adapter_fingerprint=adapter_fingerprint(model.config, list(model.adapters)),
    )
