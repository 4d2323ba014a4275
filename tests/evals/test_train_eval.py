"""Training and evaluation end to end on a tiny random backbone that uses the default model's tokenizer (the
synthetic data and chat template are real; only the network is small)."""

from __future__ import annotations

import pytest
import torch

from deltamem.evals.run_eval import REGIMES, EvalConfig, evaluate, table
from deltamem.evals.train import (
    TRAINER_STATE,
    TrainConfig,
    batch_loss,
    focused_examples,
    lr_factor,
    synthetic_examples,
    train,
)
from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.model.adapter_config import DeltaMemConfig
from deltamem.runtime.model.backbone import LoadedModel
from deltamem.runtime.model.checkpoint import WEIGHTS_FILE, load_adapter_weights
from deltamem.runtime.model.memory_model import MemoryModel


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture
def tiny(make_tiny_backbone, tokenizer):
    """A fresh tiny Llama with the real vocabulary and the reference-init adapter."""

    def make() -> MemoryModel:
        model = MemoryModel(make_tiny_backbone("llama", seed=3, vocab_size=len(tokenizer)), DeltaMemConfig())
        model.init_adapter(0)
        return model.eval().requires_grad_(False)

    return make


def adapter_tensors(model: MemoryModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.adapters.state_dict().items()}


def test_lr_schedule_warms_up_then_decays_to_zero():
    config = TrainConfig(steps=100, warmup_fraction=0.1)
    factors = [lr_factor(step, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] < 0.001


def test_a_tiny_training_run_lowers_the_loss_and_saves_the_reference_format(tiny, tokenizer, tmp_path):
    model = tiny()
    before = adapter_tensors(model)
    config = TrainConfig(steps=20, batch_size=2, lr=1e-2, examples=4, save_every=10, state_only_fraction=0.5)
    examples = synthetic_examples(tokenizer, config.examples, config.data_seed)

    def held_loss() -> float:  # the same batch, memory only, no sampling noise
        with torch.no_grad():
            return batch_loss(model, tokenizer, examples, [True] * len(examples), config)[0].item()

    initial = held_loss()
    log = train(model, tokenizer, tmp_path / "adapter", config)
    assert [entry["step"] for entry in log] == list(range(1, 21))
    assert held_loss() < initial - 0.1, (initial, held_loss())
    after = adapter_tensors(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(after["0.delta_k_proj"], before["0.delta_k_proj"])  # the format's zero k/v stay zero
    assert all(not p.requires_grad for p in model.backbone.parameters())
    saved = tmp_path / "adapter"
    assert (saved / WEIGHTS_FILE).is_file() and (saved / TRAINER_STATE).is_file()
    reloaded = tiny()
    load_adapter_weights(saved, list(reloaded.adapters))
    for key, value in adapter_tensors(reloaded).items():
        torch.testing.assert_close(value, after[key].to(torch.bfloat16).float())  # saved as bf16, as released


def test_an_interrupted_run_resumes_to_the_same_adapter(tiny, tokenizer, tmp_path):
    config = TrainConfig(steps=6, batch_size=1, lr=5e-3, examples=3, save_every=2)
    straight = tiny()
    train(straight, tokenizer, tmp_path / "straight", config)

    def interrupt(step: int, total: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    interrupted = tiny()
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, tokenizer, tmp_path / "resumed", config, progress=interrupt)
    assert torch.load(tmp_path / "resumed" / TRAINER_STATE, weights_only=False)["step"] == 4
    resumed = tiny()
    log = train(resumed, tokenizer, tmp_path / "resumed", config, resume=True)
    assert [entry["step"] for entry in log] == [1, 2, 3, 4, 5, 6]
    expected = adapter_tensors(straight)
    for key, value in adapter_tensors(resumed).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="another config"):
        train(tiny(), tokenizer, tmp_path / "resumed", TrainConfig(steps=7, examples=3), resume=True)


def test_evaluation_runs_end_to_end_and_empty_memory_matches_the_frozen_model(tiny, tokenizer):
    model = tiny()
    with torch.no_grad():  # an adapter that does something, so state regimes differ from empty memory
        for adapter in model.adapters:
            adapter.beta_bias.fill_(1.0)
            adapter.delta_q_proj.mul_(40)
            adapter.delta_o_proj.mul_(40)
    engine = BatchEngine(LoadedModel(model, tokenizer, "tiny", "tiny"), max_batch=4)
    try:
        results = evaluate(engine, EvalConfig(samples=2, max_new_tokens=3))
    finally:
        engine.close()
    assert set(results["adapter"]) == set(results["frozen"]) == set(REGIMES)
    count = results["adapter"]["no_context"]["questions"]
    assert count >= 4
    for side in ("adapter", "frozen"):
        for scores in results[side].values():
            assert scores["questions"] == count and 0 <= scores["recall"] <= 1 and 0 <= scores["f1"] <= 1
    assert results["frozen"]["state_only"] == results["frozen"]["no_context"]
    examples = results["examples"]
    assert examples and {"question", "gold", *REGIMES} <= set(examples[0])
    # with empty memory the adapter is exactly the frozen model: same greedy answers
    assert results["adapter"]["no_context"] == results["frozen"]["no_context"]
    assert results["adapter"]["context_only"] == results["frozen"]["context_only"]
    assert any(e["state_only"] != e["no_context"] for e in examples)  # memory changed something
    assert any(e["state_other"] != e["state_only"] for e in examples)  # and which memory matters
    assert results["frozen"]["state_other"] == results["frozen"]["no_context"]
    assert "state_only" in table(results)


def test_evaluation_reads_a_locomo_file(tiny, tokenizer, tmp_path):
    """The --locomo path: a file in the LoCoMo schema (here two synthetic samples written out) is loaded,
    validated and scored by LoCoMo F1 per question."""
    import json

    from deltamem.evals.synthetic import build

    path = tmp_path / "locomo-like.json"
    path.write_text(json.dumps(build("heldout", 2, seed=5)))
    engine = BatchEngine(LoadedModel(tiny(), tokenizer, "tiny", "tiny"), max_batch=4)
    try:
        results = evaluate(engine, EvalConfig(samples=2, max_new_tokens=2, locomo=str(path)))
    finally:
        engine.close()
    assert results["data"] == str(path)
    assert "recall" not in results["adapter"]["no_context"]  # LoCoMo is scored by F1
    assert results["adapter"]["no_context"]["questions"] == sum(len(s["qa"]) for s in json.loads(path.read_text()))


def test_focused_examples_hold_only_the_asked_fact_in_its_latest_form(tokenizer):
    from deltamem.evals.synthetic import build

    samples = build("train", 12, seed=0)
    examples = focused_examples(tokenizer, 12, 0)
    assert len(examples) == sum(len(s["qa"]) for s in samples)
    items = [item for s in samples for item in s["qa"]]
    changed = [(e, item) for e, item in zip(examples, items, strict=True) if item["changed"]]
    assert changed, "the data has changed facts"
    for example, item in zip(examples, items, strict=True):
        text = tokenizer.decode(example.history)
        assert example.pairs == [(item["question_self"], item["answer_sentence_self"])]
        assert item["answer"] in text
        assert text.count("<|im_start|>user") == len(item["evidence"])  # the evidence turns, no other user turn
    for example, item in changed:
        assert item["previous"] not in tokenizer.decode(example.history).split()  # the old value is not shown
    for example, item in zip(focused_examples(tokenizer, 12, 0, with_replies=False), items, strict=True):
        text = tokenizer.decode(example.history)
        assert example.values == [item["answer"]] and item["answer"] in text
        assert "<|im_start|>assistant" not in text  # the statement alone


def test_value_targets_put_the_loss_on_the_gold_value_tokens_only(tokenizer):
    from deltamem.evals.prompts import answer_ids
    from deltamem.evals.train import value_labels

    for example in synthetic_examples(tokenizer, 6, 0):
        for (_, answer), value in zip(example.pairs, example.values, strict=True):
            reply = answer_ids(tokenizer, answer)
            labels = value_labels(tokenizer, reply, value)
            kept = [token for token in labels if token != -100]
            assert kept and tokenizer.decode(kept).strip() == value
            assert [t for t, label in zip(reply, labels, strict=True) if label != -100] == kept
    with pytest.raises(ValueError, match="does not contain its value"):
        value_labels(tokenizer, answer_ids(tokenizer, "You live in Paris."), "Rome")


def test_a_value_target_loss_counts_only_the_value(tiny, tokenizer):
    """target=value gives a finite loss that differs from the whole-answer loss (which tokens count is checked
    above); unknown settings are refused by name."""
    model = tiny()
    examples = synthetic_examples(tokenizer, 2, 0)
    with torch.no_grad():
        whole = batch_loss(model, tokenizer, examples, [True, True], TrainConfig(target="answer"))[0]
        value = batch_loss(model, tokenizer, examples, [True, True], TrainConfig(target="value"))[0]
    assert torch.isfinite(value) and abs(value.item() - whole.item()) > 1e-3
    with pytest.raises(ValueError, match="target must be one of"):
        TrainConfig(target="everything")
    with pytest.raises(ValueError, match="focus_history must be one of"):
        TrainConfig(focus_history="all")


@pytest.mark.parametrize("command", ["train", "eval"])
def test_the_deltamem_command_reaches_train_and_eval(scripts_dir, command):
    import subprocess

    done = subprocess.run([str(scripts_dir / "deltamem"), command, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"usage: deltamem {command}" in done.stdout


def test_train_refuses_bad_settings_with_a_reason(scripts_dir, tmp_path):
    import subprocess

    done = subprocess.run(
        [str(scripts_dir / "deltamem"), "train", "--out", str(tmp_path / "a"), "--state-only-fraction", "2"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "state_only_fraction and focus_fraction must be in [0, 1]" in done.stderr
