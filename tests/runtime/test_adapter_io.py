"""Adapter checkpoints in the reference format: round trip, key names, and clear rejection of bad input."""

from __future__ import annotations

import json

import pytest
import torch

from deltamem.runtime.model.adapter_config import CONFIG_FILE, AdapterConfigError, DeltaMemConfig
from deltamem.runtime.model.checkpoint import WEIGHTS_FILE, adapter_fingerprint, load_adapter_weights, save_adapter


def test_save_then_load_round_trips_in_reference_layout(make_tiny_model, tmp_path):
    source = make_tiny_model("llama", seed=1)
    save_adapter(tmp_path, source.config, list(source.adapters))
    tensors = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert len(tensors) == 9 * source.num_layers
    assert tensors["model.layers.1.self_attn.memory_q_proj"].shape == (8, 48)
    assert tensors["model.layers.0.self_attn.delta_q_proj"].shape == (48, 8)  # 4 heads x 12
    assert tensors["model.layers.0.self_attn.delta_k_proj"].abs().sum() == 0
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())

    target = make_tiny_model("llama", seed=2)
    assert adapter_fingerprint(target.config, list(target.adapters)) != adapter_fingerprint(
        source.config, list(source.adapters)
    )
    load_adapter_weights(tmp_path, list(target.adapters))
    for a, b in zip(source.adapters, target.adapters, strict=True):
        torch.testing.assert_close(b.delta_o_proj, a.delta_o_proj.to(torch.bfloat16).float())
    assert DeltaMemConfig.load(tmp_path) == source.config


def test_missing_and_misshapen_tensors_are_named(make_tiny_model, tmp_path):
    model = make_tiny_model("llama")
    save_adapter(tmp_path, model.config, list(model.adapters))
    tensors = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    tensors["model.layers.0.self_attn.beta_bias"] = torch.zeros(3)
    torch.save(tensors, tmp_path / WEIGHTS_FILE)
    with pytest.raises(AdapterConfigError, match=r"beta_bias has shape \[3\]"):
        load_adapter_weights(tmp_path, list(model.adapters))
    del tensors["model.layers.1.self_attn.memory_v_proj"]
    torch.save(tensors, tmp_path / WEIGHTS_FILE)
    with pytest.raises(AdapterConfigError, match="missing.*memory_v_proj"):
        load_adapter_weights(tmp_path, list(model.adapters))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("memory_write_granularity", "sentence", "memory_write_granularity"),
        ("couple_lambda", False, "couple_lambda"),
        ("num_memory_partitions", 2, "num_memory_partitions"),
        ("delta_heads", ["q", "k", "o"], "delta_heads"),
        ("latent_memory_layers", [3], "latent_memory_layers"),
        ("target_layers", [0, 1], "target_layers"),
    ],
)
def test_configs_that_enable_unimplemented_modes_are_rejected(make_tiny_model, tmp_path, field, value, message):
    data = DeltaMemConfig().to_json_dict() | {field: value}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(AdapterConfigError, match=message):
        DeltaMemConfig.load(tmp_path)


def test_unknown_reference_fields_survive_a_round_trip(make_tiny_model, tmp_path):
    data = DeltaMemConfig().to_json_dict() | {"memory_write_proposals_per_message": 2, "rank": 8}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(data))
    config = DeltaMemConfig.load(tmp_path)
    config.save(tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["memory_write_proposals_per_message"] == 2
