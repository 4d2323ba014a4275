"""Adapters in the reference checkpoint format load unchanged on Llama, Qwen3 and SmolLM3 backbones, and save
back in the same format. The checkpoint here is built by hand from the format's description (delta-mem.md):
the config carries every field of the reference config, and the weights are bf16 tensors keyed
model.layers.{i}.self_attn.{name}."""

from __future__ import annotations

import json

import pytest
import torch

from deltamem.runtime.model.adapter import PARAMETER_NAMES
from deltamem.runtime.model.adapter_config import CONFIG_FILE, AdapterConfigError
from deltamem.runtime.model.backbone import load_model
from deltamem.runtime.model.checkpoint import WEIGHTS_FILE, save_adapter

# every field of the reference adapter config, at the values of a token-state release
REFERENCE_CONFIG = {
    "rank": 8, "alpha": 16.0, "beta_bias_init": -1.5, "normalize_qk": True, "couple_lambda": True,
    "state_update_mode": "standard", "rankwise_gates": True, "output_init": "base_slice",
    "base_slice_ref_width": 8, "online_gain": 0.05, "num_state_heads": 1, "num_memory_partitions": 1,
    "num_global_memory_partitions": 0, "memory_partition_routing": "soft", "memory_partition_basis": "shared",
    "tie_memory_partition_read_write": False, "memory_partition_read_mode": "softmax",
    "memory_partition_sigmoid_gate_bias_init": -2.0, "slot_read_top_k": 0, "global_memory_mode": "shared_rw",
    "global_memory_read_top_k": 0, "global_memory_merge_mode": "gated_residual",
    "global_memory_gate_bias_init": -2.0, "global_memory_read_logit_bias": 0.0, "memory_reader_layers": [],
    "memory_reader_hidden_size": 1024, "memory_reader_residual_scale": 0.1, "memory_reader_read_only": True,
    "memory_readout_mode": "delta", "memory_write_source": "learned_hidden", "memory_write_granularity": "token",
    "memory_write_proposals_per_message": 2, "synthetic_memory_slots": 1, "latent_memory_layers": [],
    "latent_memory_hidden_size": 1024, "latent_memory_residual_scale": 0.1, "latent_memory_slots": 4,
    "latent_memory_init_std": 0.002, "latent_gate_init": 0.01, "target_modules": ["self_attn"],
    "target_layers": [], "delta_heads": ["q", "o"], "delta_o_rmsnorm": False, "delta_o_rmsnorm_eps": 1e-06,
    "trainable_delta_scale": False, "delta_scale_init": 1.0, "delta_scale_max": 2.0,
    "delta_scale_granularity": "layer", "delta_scale_parameterization": "alpha_over_rank",
}  # fmt: skip


def reference_checkpoint(directory, backbone, config: dict):
    """Write a checkpoint the way the reference code lays it out, with random values."""
    directory.mkdir(parents=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    width = config["rank"] * config["num_state_heads"]
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i, layer in enumerate(backbone.model.layers):
        attn = layer.self_attn
        shapes = {
            "memory_q_proj": (width, attn.q_proj.in_features),
            "memory_k_proj": (width, attn.q_proj.in_features),
            "memory_v_proj": (width, attn.q_proj.in_features),
            "beta_proj": (width, attn.q_proj.in_features),
            "beta_bias": (width,),
            "delta_q_proj": (attn.q_proj.out_features, width),
            "delta_k_proj": (attn.k_proj.out_features, width),
            "delta_v_proj": (attn.v_proj.out_features, width),
            "delta_o_proj": (attn.o_proj.out_features, width),
        }
        for name, shape in shapes.items():
            value = torch.zeros(shape) if name in ("delta_k_proj", "delta_v_proj") else torch.randn(shape, generator=g)
            tensors[f"model.layers.{i}.self_attn.{name}"] = value.to(torch.bfloat16)
    torch.save(tensors, directory / WEIGHTS_FILE)
    return tensors


@pytest.mark.parametrize("arch", ["llama", "qwen3", "smollm3"])
@pytest.mark.parametrize("num_state_heads,granularity", [(1, "token"), (4, "token"), (1, "message_mean")])
def test_reference_checkpoint_loads_unchanged_and_saves_back_identically(
    tmp_path, default_engine, make_tiny_backbone, arch, num_state_heads, granularity
):
    backbone = make_tiny_backbone(arch, vocab_size=default_engine.inputs.vocab_size)
    backbone.save_pretrained(tmp_path / "model")
    default_engine.tokenizer.save_pretrained(tmp_path / "model")
    config = REFERENCE_CONFIG | {"num_state_heads": num_state_heads, "memory_write_granularity": granularity}
    tensors = reference_checkpoint(tmp_path / "adapter", backbone, config)

    loaded = load_model(tmp_path / "model", tmp_path / "adapter")
    assert loaded.model.state_shape == (2, num_state_heads, 8, 8)
    for i, adapter in enumerate(loaded.model.adapters):
        for name in PARAMETER_NAMES:
            assert torch.equal(getattr(adapter, name), tensors[f"model.layers.{i}.self_attn.{name}"].float()), name

    save_adapter(tmp_path / "saved", loaded.model.config, list(loaded.model.adapters))
    saved = torch.load(tmp_path / "saved" / WEIGHTS_FILE, weights_only=True)
    assert saved.keys() == tensors.keys()
    for key, value in tensors.items():
        assert saved[key].dtype == torch.bfloat16 and torch.equal(saved[key], value), key
    assert json.loads((tmp_path / "saved" / CONFIG_FILE).read_text()) == config


@pytest.mark.parametrize(
    "field,value",
    [("slot_read_top_k", 2), ("target_modules", ["mlp"]), ("memory_readout_mode", "reader"),
     ("num_global_memory_partitions", 1), ("state_update_mode", "no_lambda"), ("memory_write_granularity",
     "sentence_mean"), ("trainable_delta_scale", True), ("memory_write_source", "synthetic")],
)  # fmt: skip
def test_reference_configs_with_unimplemented_modes_are_rejected_by_name(tmp_path, field, value):
    (tmp_path / CONFIG_FILE).write_text(json.dumps(REFERENCE_CONFIG | {field: value}))
    from deltamem.runtime.model.adapter_config import DeltaMemConfig

    with pytest.raises(AdapterConfigError, match=field):
        DeltaMemConfig.load(tmp_path)
