"""Training and evaluation end to end on a tiny random backbone that uses the default model's tokenizer (the
synthetic data and chat template are real; only the network is small)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from deltamem.evals.regimes import REGIMES, WITHOUT_STATE
from deltamem.evals.run_eval import EvalConfig, evaluate, table
from deltamem.evals.synthetic import build
from deltamem.evals.train import (
    TRAINER_STATE,
    TrainConfig,
    batch_loss,
    copy_init,
    focused_examples,
    lr_factor,
    synthetic_examples,
    train,
    value_token_mask,
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
    examples = synthetic_examples(tokenizer, build("train", config.examples, config.data_seed), config.data_seed)

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


def strong_adapter(model: MemoryModel) -> MemoryModel:
    """An adapter that does something, so state regimes differ from empty memory."""
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.beta_bias.fill_(1.0)
            adapter.delta_q_proj.mul_(40)
            adapter.delta_o_proj.mul_(40)
    return model


def run_eval(model, tokenizer, config: EvalConfig) -> dict:
    engine = BatchEngine(LoadedModel(model, tokenizer, "tiny", "tiny"), max_batch=4)
    try:
        return evaluate(engine, config)
    finally:
        engine.close()


def test_evaluation_runs_end_to_end_and_empty_memory_matches_the_frozen_model(tiny, tokenizer):
    config = EvalConfig(samples=2, max_new_tokens=3, window_tokens=8, sets="single/unseen,multi/unseen")
    results = run_eval(strong_adapter(tiny()), tokenizer, config)
    assert set(results["sets"]) == {"single/unseen", "multi/unseen"}
    multi = results["sets"]["multi/unseen"]
    assert set(multi["adapter"]) == set(multi["frozen"]) == set(REGIMES)
    count = multi["adapter"]["no_context"]["questions"]
    assert count >= 6  # three or more facts per conversation
    for side in ("adapter", "frozen"):
        for regime, scores in multi[side].items():
            if regime.startswith("window"):  # only facts outside the window
                assert 0 < scores["questions"] <= count
            else:
                assert scores["questions"] == count
            assert 0 <= scores["recall"] <= 1 and 0 <= scores["f1"] <= 1
    for regime, base in WITHOUT_STATE.items():  # with memory off a state regime is its regime without state
        assert multi["frozen"][regime] == multi["frozen"][base] or regime.startswith("window")
    predictions = [p for p in results["predictions"] if p["set"] == "multi/unseen"]
    assert len(predictions) == count
    assert {"question", "gold", "person", "answers", "evidence_outside_window"} <= set(predictions[0])
    assert any(p["answers"]["state_only"] != p["answers"]["no_context"] for p in predictions)  # memory acts
    assert any(p["answers"]["state_other"] != p["answers"]["state_only"] for p in predictions)  # which memory
    assert all(("window_state" in p["answers"]) == p["evidence_outside_window"] for p in predictions)
    assert results["wall_seconds"] > 0
    text = table(results)
    assert "state_only" in text and "targets on unseen values" in text


def test_an_empty_memory_gives_the_frozen_answers_bit_for_bit(tiny, tokenizer):
    """The eval reports no-state regimes once for both rows; that rests on this: with an empty memory the adapter
    answers exactly as the frozen model does."""
    from deltamem.evals.prompts import question_prompt
    from deltamem.evals.run_eval import answer

    model = strong_adapter(tiny())
    engine = BatchEngine(LoadedModel(model, tokenizer, "tiny", "tiny"), max_batch=2)
    try:
        prompts = [question_prompt(tokenizer, q) for q in ("Where do I live?", "What is Ada's job?")]
        with_memory = [answer(engine, engine.empty_state(), p, 6) for p in prompts]
        model.memory_enabled = False
        frozen = [answer(engine, engine.empty_state(), p, 6) for p in prompts]
    finally:
        model.memory_enabled = True
        engine.close()
    assert with_memory == frozen
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        logits = model(ids, model.empty_state(1), write=False).logits
        model.memory_enabled = False
        base = model(ids, model.empty_state(1), write=False).logits
        model.memory_enabled = True
    assert torch.equal(logits, base)


def test_the_wrong_memory_control_reads_another_conversation_even_for_one_sample(tiny, tokenizer):
    from deltamem.evals.eval_sets import synthetic_set

    one = synthetic_set("single/unseen", 1, 0)
    assert len(one.other) == 1 and one.other[0]["sample_id"] != one.samples[0]["sample_id"]
    assert one.other[0]["qa"][0]["answer"] != one.samples[0]["qa"][0]["answer"]
    several = synthetic_set("multi/seen", 3, 0)
    assert [s["sample_id"] for s in several.other] == [several.samples[i]["sample_id"] for i in (1, 2, 0)]
    results = run_eval(strong_adapter(tiny()), tokenizer, EvalConfig(samples=1, max_new_tokens=3, sets="single/unseen"))
    answers = results["predictions"][0]["answers"]
    assert answers["state_other"] != answers["state_only"]


def test_regimes_and_sets_are_chosen_by_name_and_bad_names_refused(tiny, tokenizer):
    config = EvalConfig(samples=1, max_new_tokens=2, regimes="state_only", sets="single/seen")
    results = run_eval(tiny(), tokenizer, config)
    scores = results["sets"]["single/seen"]
    assert set(scores["adapter"]) == {"state_only"}
    assert set(results["predictions"][0]["answers"]) == {"state_only", "no_context"}  # its frozen twin runs too
    with pytest.raises(ValueError, match="unknown regime"):
        EvalConfig(regimes="state_only,everything")
    with pytest.raises(ValueError, match="unknown set"):
        EvalConfig(sets="single/unseen,huge")


def test_a_history_longer_than_the_context_is_cut_explicitly_and_written_in_chunks(tiny, tokenizer):
    from deltamem.evals.regimes import fitted_prompt, write_chunks

    history = [{"role": r, "content": f"turn {i} " + "word " * 30} for i, r in enumerate(["user", "assistant"] * 6)]
    prompt, cut = fitted_prompt(tokenizer, history, "Where do I live?", 200)
    assert (
        cut
        and len(prompt) <= 200
        and "turn 11" in tokenizer.decode(prompt)
        and "turn 0 " not in tokenizer.decode(prompt)
    )
    full, kept = fitted_prompt(tokenizer, history, "Where do I live?", 10_000)
    assert not kept and "turn 0 " in tokenizer.decode(full)
    chunks = write_chunks(tokenizer, history, 120)
    assert len(chunks) > 1 and all(len(ids) <= 120 for ids, _ in chunks)
    assert "".join(tokenizer.decode(ids) for ids, _ in chunks).count("turn ") == len(history)  # every turn, once
    with pytest.raises(ValueError, match="alone takes"):
        write_chunks(tokenizer, history, 20)
    model = strong_adapter(tiny())
    model.backbone.config.max_position_embeddings = 160  # a short backbone: whole-history prompts must be cut
    results = run_eval(
        model, tokenizer, EvalConfig(samples=2, max_new_tokens=3, sets="multi/unseen", regimes="context_state")
    )
    assert results["sets"]["multi/unseen"]["truncated"]["context_state"] > 0


def test_evaluation_reads_a_locomo_file(tiny, tokenizer, tmp_path):
    """The --locomo path: a file in the LoCoMo schema (here two synthetic samples written out) is loaded,
    validated and scored by LoCoMo F1 per question and per category."""
    import json

    path = tmp_path / "locomo-like.json"
    path.write_text(json.dumps(build("heldout", 2, seed=5)))
    results = run_eval(tiny(), tokenizer, EvalConfig(samples=2, max_new_tokens=2, locomo=str(path)))
    scores = results["sets"]["locomo"]["adapter"]["no_context"]
    assert scores["questions"] == sum(len(s["qa"]) for s in json.loads(path.read_text()))
    assert scores["categories"]["categories"][4]["count"] == scores["questions"]


def test_focused_examples_hold_only_the_asked_fact_in_its_latest_form(tokenizer):
    samples = build("train", 30, seed=0)
    examples = focused_examples(tokenizer, samples, 0, third_person_fraction=0.0)
    items = [item for s in samples for item in s["qa"]]
    assert len(examples) == len(items)
    changed = [(e, item) for e, item in zip(examples, items, strict=True) if item["changed"]]
    assert changed, "the data has changed facts"
    for example, item in zip(examples, items, strict=True):
        text = tokenizer.decode(example.history)
        if item["subject"] == "a":
            assert example.pairs == [(item["question_self"], item["answer_sentence_self"])]
            assert text.count("<|im_start|>user") == 1  # the evidence turn, no other user turn
        else:
            assert example.pairs == [(item["question"], item["answer_sentence"])]
        assert item["answer"] in text
        marked = [t for t, on in zip(example.history, example.value_mask, strict=True) if on]
        assert tokenizer.decode(marked).strip() == item["answer"]  # gate supervision marks the value, only it
    for example, item in changed:  # the history is the change turn: the new value is the one asked for
        assert example.values == [item["answer"]] and item["previous"] != item["answer"]
    for example, item in zip(focused_examples(tokenizer, samples, 0, with_replies=False), items, strict=True):
        text = tokenizer.decode(example.history)
        assert example.values == [item["answer"]] and item["answer"] in text
        if item["subject"] == "a":
            assert "<|im_start|>assistant" not in text  # the statement alone
    third = focused_examples(tokenizer, samples, 0, third_person_fraction=1.0)
    assert all(e.pairs[0][0] == item["question"] for e, item in zip(third, items, strict=True))


def test_value_token_mask_marks_every_occurrence(tokenizer):
    ids = tokenizer.encode("I live in Lisbon. Lisbon is nice.", add_special_tokens=False)
    mask = value_token_mask(tokenizer, ids, ["Lisbon"])
    assert tokenizer.decode([t for t, on in zip(ids, mask, strict=True) if on]).split() == ["Lisbon", "Lisbon"]


def test_gate_supervision_opens_the_gates_on_values(tiny, tokenizer):
    """A few steps of gate supervision alone raise the gates on value tokens and lower them elsewhere."""
    model = tiny()
    samples = build("train", 4, seed=1)
    examples = focused_examples(tokenizer, samples, 1)
    config = TrainConfig(gate_supervision=1.0, gate_weight=0.0, target="value")

    def gates() -> tuple[float, float]:
        with torch.no_grad():
            ids = torch.tensor([examples[0].history])
            out = model(ids, model.empty_state(1), write=True, return_gates=True)
        beta = torch.stack(out.gates).mean((0, 3, 4))[0]
        mask = torch.tensor(examples[0].value_mask)
        return beta[mask].mean().item(), beta[~mask].mean().item()

    on, off = gates()
    from deltamem.evals.train import trainable_parameters

    params = trainable_parameters(model)
    optimizer = torch.optim.Adam(params, lr=5e-2)
    for _ in range(10):
        optimizer.zero_grad()
        _, reg = batch_loss(model, tokenizer, examples, [True] * len(examples), config)
        reg.backward()
        optimizer.step()
    new_on, new_off = gates()
    assert new_on > on + 0.2 and new_off < off - 0.01, (on, off, new_on, new_off)


def test_copy_init_ties_query_to_key_and_reads_back_the_value_direction(tiny):
    model = tiny()
    copy_init(model, 0.05)
    for adapter in model.adapters:
        assert torch.equal(adapter.memory_q_proj, adapter.memory_k_proj)
        columns = adapter.delta_o_proj.norm(dim=0)
        torch.testing.assert_close(columns, torch.full_like(columns, 0.05))
        cosine = torch.nn.functional.cosine_similarity(adapter.delta_o_proj.t(), adapter.memory_v_proj, dim=1)
        torch.testing.assert_close(cosine, torch.ones_like(cosine))
    with pytest.raises(ValueError, match="adapter_init must be one of"):
        TrainConfig(adapter_init="random")


def test_value_targets_put_the_loss_on_the_gold_value_tokens_only(tokenizer):
    from deltamem.evals.prompts import answer_ids
    from deltamem.evals.train import value_labels

    for example in synthetic_examples(tokenizer, build("train", 6, 0), 0):
        for (_, answer), value in zip(example.pairs, example.values, strict=True):
            reply = answer_ids(tokenizer, answer)
            labels = value_labels(tokenizer, reply, value)
            kept = [token for token in labels if token != -100]
            assert kept and tokenizer.decode(kept).strip() == value
            assert [t for t, label in zip(reply, labels, strict=True) if label != -100] == kept
    with pytest.raises(ValueError, match="does not contain its value"):
        value_labels(tokenizer, answer_ids(tokenizer, "You live in Paris."), "Rome")
    # a value that merges with the sentence's full stop ("H." + "." is one token "..") keeps the merged token
    reply = answer_ids(tokenizer, "Mandy's sister is called Hans-H..")
    kept = [token for token in value_labels(tokenizer, reply, "Hans-H.") if token != -100]
    assert "Hans-H." in tokenizer.decode(kept) and "called" not in tokenizer.decode(kept)


def test_a_value_target_loss_counts_only_the_value(tiny, tokenizer):
    """target=value gives a finite loss that differs from the whole-answer loss (which tokens count is checked
    above); unknown settings are refused by name."""
    model = tiny()
    examples = synthetic_examples(tokenizer, build("train", 2, 0), 0)
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
    assert done.returncode == 2 and "state_only_fraction must be in [0, 1]" in done.stderr


def test_fitted_init_opens_gates_on_values_keeps_them_shut_elsewhere_and_reads_back_token_directions(tiny, tokenizer):
    """The fitted start: value tokens open the gates to about GATE_OPEN and others stay near GATE_SHUT; only the
    last layers carry values; keys and queries follow the induction codes (a value's first token is keyed START,
    which non-value tokens query; a value token queries the code its successor is keyed with); an empty memory
    is still the frozen model, bit for bit."""
    from deltamem.evals import fitted_init as fitted

    model = tiny()
    examples = focused_examples(tokenizer, build("train", 12, 0), 0, False, 0.0, 0.5)
    report = fitted.fitted_init(model, examples)
    assert report["gate_balanced_accuracy_min"] > 0.6 and 0 < report["value_variance_explained"] <= 1
    with torch.no_grad():
        ids = torch.tensor([examples[0].history])
        gates = torch.stack(model(ids, model.empty_state(1), write=True, return_gates=True).gates).mean((0, 3, 4))[0]
        mask = torch.tensor(examples[0].value_mask)
        assert gates[mask].mean() > 0.1 and gates[~mask].mean() < 0.05, (gates[mask].mean(), gates[~mask].mean())
        first = round(len(model.adapters) * fitted.FIRST_LAYER_FRACTION)
        for layer, adapter in enumerate(model.adapters):
            assert (adapter.memory_v_proj.abs().sum() > 0) == (layer >= first)
            assert not adapter.delta_q_proj.any()
        features = fitted.token_features(model, examples)
        codes, start = fitted.token_codes(fitted.output_directions(model), model.config.rank)
        later = features.is_value & ~features.starts_value
        for adapter, x in zip(model.adapters, features.inputs, strict=True):
            keys = F.normalize(torch.tanh(x @ adapter.memory_k_proj.T), dim=-1)
            queries = F.normalize(torch.tanh(x @ adapter.memory_q_proj.T), dim=-1)
            # a tiny random net fits loosely: each code is nearer its own tokens than the others' (chance: equal)
            assert (keys[features.starts_value] @ start).mean() > (keys[later] @ start).mean() + 0.1
            assert (queries[~features.is_value] @ start).mean() > (queries[features.is_value] @ start).mean() + 0.1
            own = (keys[later] * codes[features.previous[later]]).sum(-1).mean()
            assert own > (keys[later] * codes[features.previous[later].roll(1)]).sum(-1).mean() + 0.1
            own = (queries[features.is_value] * codes[features.ids[features.is_value]]).sum(-1).mean()
            assert (
                own > (queries[features.is_value] * codes[features.ids[features.is_value].roll(1)]).sum(-1).mean() + 0.1
            )
        frozen = model.backbone(ids).logits
        model.memory_enabled = True
        assert torch.equal(model(ids, model.empty_state(1), write=False).logits, frozen)


def test_training_from_the_fitted_init_writes_bare_text_facts(tiny, tokenizer, tmp_path, monkeypatch):
    """--adapter-init fitted fits the start on the focused examples, and raw_text_fraction reaches them (bare
    UpdateMemory text: no chat template in the history)."""
    from deltamem.evals import train as training

    seen, real = [], training.fitted_init  # a spy: the real init still runs
    monkeypatch.setattr(training, "fitted_init", lambda model, examples: (seen.extend(examples), real(model, examples)))
    config = TrainConfig(
        steps=1, batch_size=2, examples=4, adapter_init="fitted", raw_text_fraction=1.0, target="value"
    )
    training.train(tiny(), tokenizer, tmp_path / "adapter", config)
    bare = [e for e in seen if e.history_message_ids == [0] * len(e.history)]
    assert seen and bare, "no bare-text fact reached the fitted init"
    assert not any(tokenizer.decode(e.history).startswith("<|im_start|>") for e in bare)


def test_the_memory_probe_reads_each_example_with_its_own_another_and_an_empty_memory(tiny, tokenizer):
    """The probe's empty memory is the frozen model, so with the reference init (a tiny random net) all three
    differ only by the memory; the probe set has unseen values."""
    from deltamem.evals.memory_probe import MEMORIES, probe, probe_examples

    model = tiny()
    examples = probe_examples(tokenizer, 4, 1)
    assert len(examples) == 4
    results = probe(model, tokenizer, examples)
    assert set(results) == set(MEMORIES)
    assert all(r["value_ce"] > 0 and 0 <= r["first_token_accuracy"] <= 1 for r in results.values())
    model.memory_enabled = False
    assert probe(model, tokenizer, examples)["own"] == results["empty"]
