"""The δ-mem parameters of an SGLang model and how reference-format checkpoints map onto them.

The model holds one `DeltaMemLayer` per decoder layer in `delta_mem` (so parameter `delta_mem.{i}.{name}`), and
the reference checkpoint names the same tensor `model.layers.{i}.self_attn.{name}`. Shapes come from the HF
config SGLang built the model from, for tensor-parallel size 1 (the only size this backend supports).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deltamem.runtime.model.adapter import PARAMETER_NAMES, DeltaMemLayer
from deltamem.runtime.model.adapter_config import AdapterConfigError, DeltaMemConfig
from deltamem.runtime.model.checkpoint import WEIGHTS_FILE, state_dict_key

ATTRIBUTE = "delta_mem"


def attention_widths(hf_config) -> tuple[int, int, int, int]:
    """(hidden size, query width, key width, value width) of one attention layer."""
    hidden = hf_config.hidden_size
    head_dim = getattr(hf_config, "head_dim", None) or hidden // hf_config.num_attention_heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    return hidden, hf_config.num_attention_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim


def build_adapters(config: DeltaMemConfig, hf_config) -> nn.ModuleList:
    """One fp32 DeltaMemLayer per decoder layer (the state is fp32; keeping the projections fp32 costs little)."""
    hidden, query, key, value = attention_widths(hf_config)
    layers = nn.ModuleList(
        DeltaMemLayer(config, hidden_size=hidden, query_width=query, key_width=key, value_width=value)
        for _ in range(hf_config.num_hidden_layers)
    )
    return layers.float().requires_grad_(False)


def weight_map(num_layers: int) -> dict[str, str]:
    """Reference checkpoint key -> the model's parameter name."""
    return {state_dict_key(i, name): f"{ATTRIBUTE}.{i}.{name}" for i in range(num_layers) for name in PARAMETER_NAMES}


def load_reference_adapter(model: nn.Module, directory: Path) -> list[str]:
    """Copy a reference-format checkpoint into `model`'s δ-mem parameters; every parameter must be covered and
    every tensor used, with matching shapes. Returns the parameter names loaded."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise AdapterConfigError(f"{path} does not exist")
    tensors = torch.load(path, map_location="cpu", weights_only=True)
    params = {name: p for name, p in model.named_parameters() if name.startswith(ATTRIBUTE + ".")}
    mapping = weight_map(len(getattr(model, ATTRIBUTE)))
    missing = sorted(set(mapping) - tensors.keys())
    unexpected = sorted(tensors.keys() - set(mapping))
    unmapped = sorted(set(params) ^ set(mapping.values()))
    if missing or unexpected or unmapped:
        raise AdapterConfigError(
            f"{path} does not match this model: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"parameters not matching the layer count {unmapped[:3]}"
        )
    with torch.no_grad():
        for key, name in mapping.items():
            param, value = params[name], tensors[key]
            if value.shape != param.shape:
                raise AdapterConfigError(f"{key} has shape {list(value.shape)}, this model needs {list(param.shape)}")
            param.copy_(value.to(param.dtype))
    return list(mapping.values())
