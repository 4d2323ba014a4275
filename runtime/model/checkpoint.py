"""The reference checkpoint format for a whole model's adapter: delta_mem_config.json + delta_mem_adapter.pt.

A checkpoint saved here loads in the reference implementation and the other way round; the fingerprint names an
adapter's exact values, so durable stores and exported memories can refuse a server running another one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from deltamem.runtime.model.adapter import PARAMETER_NAMES, DeltaMemLayer
from deltamem.runtime.model.adapter_config import AdapterConfigError, DeltaMemConfig

WEIGHTS_FILE = "delta_mem_adapter.pt"


def state_dict_key(layer: int, name: str) -> str:
    return f"model.layers.{layer}.self_attn.{name}"


def save_adapter(directory: Path, config: DeltaMemConfig, layers: list[DeltaMemLayer]) -> None:
    """Write the reference format: delta_mem_config.json + delta_mem_adapter.pt (bf16, as released)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save(directory)
    tensors = {
        state_dict_key(i, name): getattr(layer, name).detach().to(torch.bfloat16).cpu().contiguous()
        for i, layer in enumerate(layers)
        for name in PARAMETER_NAMES
    }
    torch.save(tensors, directory / WEIGHTS_FILE)


def load_adapter_weights(directory: Path, layers: list[DeltaMemLayer]) -> None:
    """Load reference-format weights into `layers`, checking that every tensor is present and shaped right."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise AdapterConfigError(f"{path} does not exist")
    tensors = torch.load(path, map_location="cpu", weights_only=True)
    expected = {state_dict_key(i, name) for i in range(len(layers)) for name in PARAMETER_NAMES}
    missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if missing or unexpected:
        raise AdapterConfigError(
            f"{path} does not match this backbone: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for name in PARAMETER_NAMES:
                param, value = getattr(layer, name), tensors[state_dict_key(i, name)]
                if value.shape != param.shape:
                    raise AdapterConfigError(
                        f"{state_dict_key(i, name)} has shape {list(value.shape)}, "
                        f"this backbone needs {list(param.shape)}"
                    )
                param.copy_(value.to(param.dtype))


def adapter_fingerprint(config: DeltaMemConfig, layers: list[DeltaMemLayer]) -> str:
    """A short digest of the config and every parameter value: two servers agree iff their adapters do."""
    digest = hashlib.sha256(repr(sorted(config.to_json_dict().items())).encode())
    for layer in layers:
        for name in PARAMETER_NAMES:
            digest.update(getattr(layer, name).detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
