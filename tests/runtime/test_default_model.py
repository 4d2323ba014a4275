"""The default model cache: converted once, reused while valid, rebuilt when its marker no longer matches."""

from __future__ import annotations

import json

import deltamem.runtime.model.default_model as default_model
from deltamem.runtime.model.default_model import MARKER, gguf_source_path, is_cache_valid, prepare_default_model


def test_valid_cache_is_reused_without_converting(default_model_dir, monkeypatch):
    def refuse(*_):
        raise AssertionError("converted although the cache is valid")

    monkeypatch.setattr(default_model, "_convert", refuse)
    assert prepare_default_model(default_model_dir.parent.parent) == default_model_dir
    assert (default_model_dir / "model.safetensors").is_file()
    config = json.loads((default_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config


def test_marker_that_names_another_source_invalidates_the_cache(default_model_dir, tmp_path):
    copy = tmp_path / "model"
    copy.mkdir()
    (copy / "config.json").write_text((default_model_dir / "config.json").read_text())
    marker = json.loads((default_model_dir / MARKER).read_text())
    (copy / MARKER).write_text(json.dumps(marker))
    assert is_cache_valid(copy, gguf_source_path())
    (copy / MARKER).write_text(json.dumps(marker | {"size": marker["size"] + 1}))
    assert not is_cache_valid(copy, gguf_source_path())
    (copy / MARKER).write_text("{not json")
    assert not is_cache_valid(copy, gguf_source_path())


def test_the_embedded_model_gets_the_shipped_trained_adapter(tmp_path):
    from deltamem.runtime.model.adapter_config import DeltaMemConfig
    from deltamem.runtime.model.default_model import DEFAULT_ADAPTER_DIR, default_adapter_dir

    assert (DEFAULT_ADAPTER_DIR / "delta_mem_adapter.pt").is_file(), "the trained adapter ships in the package"
    assert DeltaMemConfig.load(DEFAULT_ADAPTER_DIR).memory_write_granularity == "token"
    assert default_adapter_dir(None, None) == DEFAULT_ADAPTER_DIR
    assert default_adapter_dir(None, None, untrained=True) is None  # --untrained-adapter
    assert default_adapter_dir(tmp_path, None) is None  # another model: the reference init
    assert default_adapter_dir(None, tmp_path) == tmp_path  # an explicit adapter wins


def test_the_shipped_adapter_loads_and_differs_from_the_untrained_init(default_model_dir):
    from deltamem.runtime.model.backbone import load_model
    from deltamem.runtime.model.default_model import DEFAULT_ADAPTER_DIR

    trained = load_model(default_model_dir, DEFAULT_ADAPTER_DIR)
    untrained = load_model(default_model_dir)
    assert trained.backbone_fingerprint == untrained.backbone_fingerprint
    assert trained.adapter_fingerprint != untrained.adapter_fingerprint
