"""Reference-format adapter checkpoints map onto the SGLang model's δ-mem parameters, exactly and completely."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deltamem.runtime.model.adapter_config import AdapterConfigError
from deltamem.runtime.model.checkpoint import WEIGHTS_FILE, save_adapter
from deltamem.runtime.sglang_backend.adapter_weights import (
    ATTRIBUTE,
    build_adapters,
    load_reference_adapter,
    weight_map,
)


class Holder(nn.Module):
    """Stands for the entry class's own attributes: only `delta_mem.*` parameters are the adapter's."""

    def __init__(self, adapters: nn.ModuleList):
        super().__init__()
        self.lm_head = nn.Linear(4, 4)  # a backbone parameter the adapter loader must leave alone
        setattr(self, ATTRIBUTE, adapters)


@pytest.mark.parametrize("arch,heads", [("llama", 1), ("qwen3", 1), ("llama", 4)])
def test_checkpoint_covers_every_parameter(make_tiny_model, tmp_path, arch, heads):
    source = make_tiny_model(arch, seed=3, num_state_heads=heads)
    save_adapter(tmp_path, source.config, list(source.adapters))
    target = Holder(build_adapters(source.config, source.backbone.config))
    head_before = target.lm_head.weight.clone()
    loaded = load_reference_adapter(target, tmp_path)
    adapter_params = {n for n, _ in target.named_parameters() if n.startswith(ATTRIBUTE + ".")}
    assert set(loaded) == adapter_params == set(weight_map(len(source.adapters)).values())
    saved = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    for key, name in weight_map(len(source.adapters)).items():
        assert torch.equal(target.get_parameter(name), saved[key].float()), name
        assert target.get_parameter(name).dtype == torch.float32
    assert torch.equal(target.lm_head.weight, head_before)


def test_mismatches_are_named(make_tiny_model, tmp_path):
    source = make_tiny_model("llama", seed=1)
    save_adapter(tmp_path, source.config, list(source.adapters))
    path = tmp_path / WEIGHTS_FILE
    tensors = torch.load(path, weights_only=True)
    target = Holder(build_adapters(source.config, source.backbone.config))

    del tensors["model.layers.1.self_attn.beta_bias"]
    torch.save(tensors, path)
    with pytest.raises(AdapterConfigError, match="missing.*layers.1.self_attn.beta_bias"):
        load_reference_adapter(target, tmp_path)

    tensors["model.layers.1.self_attn.beta_bias"] = torch.zeros(8)
    tensors["model.layers.2.self_attn.memory_q_proj"] = torch.zeros(8, 48)
    torch.save(tensors, path)
    with pytest.raises(AdapterConfigError, match="unexpected.*layers.2.self_attn.memory_q_proj"):
        load_reference_adapter(target, tmp_path)

    del tensors["model.layers.2.self_attn.memory_q_proj"]
    tensors["model.layers.0.self_attn.delta_o_proj"] = torch.zeros(47, 8)
    torch.save(tensors, path)
    with pytest.raises(AdapterConfigError, match="delta_o_proj has shape"):
        load_reference_adapter(target, tmp_path)

    with pytest.raises(AdapterConfigError, match="does not exist"):
        load_reference_adapter(target, tmp_path / "nowhere")
