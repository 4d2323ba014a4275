"""Any local HF Llama / Qwen3 / SmolLM3 checkpoint directory loads with an adapter and generates; others are refused."""

from __future__ import annotations

import json

import pytest

from deltamem.runtime.engine.requests import GenerationOutcome, GenerationRequest
from deltamem.runtime.engine.sequential import SequentialEngine
from deltamem.runtime.model.backbone import load_model
from deltamem.runtime.model.memory_model import UnsupportedBackbone


@pytest.mark.parametrize("arch", ["llama", "qwen3", "smollm3"])
def test_local_checkpoint_directory_serves(tmp_path, default_engine, make_tiny_backbone, arch):
    make_tiny_backbone(arch, vocab_size=default_engine.inputs.vocab_size).save_pretrained(tmp_path)
    default_engine.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.model.state_shape == (2, 1, 8, 8)  # 2 layers
    engine = SequentialEngine(loaded)
    events = list(engine.generate(engine.empty_state(), GenerationRequest((1, 2, 3), max_new_tokens=3)))
    outcome = events[-1]
    assert isinstance(outcome, GenerationOutcome) and outcome.written_tokens == 3 + outcome.generated_tokens
    assert outcome.state.abs().sum() > 0


def test_unsupported_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UnsupportedBackbone, match="gpt2"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "missing")
