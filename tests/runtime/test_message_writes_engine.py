"""Sequence-state (message_mean) adapters through the engine: chat spans, writes and generation."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from deltamem.runtime.engine.chat_spans import chat_tokens_with_message_ids
from deltamem.runtime.engine.requests import GenerationOutcome, GenerationRequest
from deltamem.runtime.engine.sequential import SequentialEngine
from deltamem.runtime.model.backbone import load_model
from deltamem.runtime.model.checkpoint import save_adapter

CHAT = [
    {"role": "system", "content": "You keep notes."},
    {"role": "user", "content": "My sister lives in Porto."},
    {"role": "assistant", "content": "Noted."},
]


def test_chat_spans_number_messages_and_skip_system_and_generation_prompt(default_engine):
    tokenizer = default_engine.tokenizer
    ids, owners = chat_tokens_with_message_ids(tokenizer, CHAT, add_generation_prompt=True)
    assert ids == list(tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)["input_ids"])
    assert len(owners) == len(ids)
    # runs in order: system (-1), user (0), assistant (1), generation prompt (-1)
    runs = [owners[0]] + [b for a, b in zip(owners, owners[1:], strict=False) if a != b]
    assert runs == [-1, 0, 1, -1]
    system_end = owners.index(0)
    assert "You keep notes." in tokenizer.decode(ids[:system_end])
    assert "Porto" in tokenizer.decode([i for i, o in zip(ids, owners, strict=True) if o == 0])


@pytest.fixture(scope="module")
def message_engine(tmp_path_factory, default_engine, make_tiny_backbone, make_tiny_model):
    """A tiny Llama with the real tokenizer and a message_mean adapter saved and loaded in the reference format."""
    root = tmp_path_factory.mktemp("ssw")
    make_tiny_backbone("llama", vocab_size=default_engine.inputs.vocab_size).save_pretrained(root / "model")
    default_engine.tokenizer.save_pretrained(root / "model")
    donor = make_tiny_model("llama", granularity="message_mean")
    save_adapter(root / "adapter", donor.config, list(donor.adapters))
    return SequentialEngine(load_model(root / "model", root / "adapter"))


def test_update_memory_writes_only_the_non_system_messages(message_engine):
    engine = message_engine
    encoded = engine.inputs.encode_messages([(m["role"], m["content"]) for m in CHAT], add_generation_prompt=False)
    state, written = engine.write(engine.empty_state(), encoded)
    assert written == sum(1 for m in encoded.message_ids if m >= 0) < len(encoded.ids)
    assert state.abs().sum() > 0
    # a conversation of only a system message writes nothing
    only_system = engine.inputs.encode_messages([("system", "You keep notes.")], add_generation_prompt=False)
    unchanged, written = engine.write(state, only_system)
    assert written == 0 and torch.equal(unchanged, state)


def test_generation_writes_the_prompt_messages_then_the_output_as_one_message(message_engine):
    engine = message_engine
    prompt = engine.inputs.encode_messages([("user", "Where does my sister live?")], add_generation_prompt=True)
    request = GenerationRequest(
        prompt.ids, max_new_tokens=5, ignore_end_of_turn=True, prompt_message_ids=prompt.message_ids
    )
    outcome = list(engine.generate(engine.empty_state(), request))[-1]
    assert isinstance(outcome, GenerationOutcome) and outcome.generated_tokens == 5
    generated = [t for e in list(engine.generate(engine.empty_state(), request))[:-1] for t in e.token_ids]
    assert outcome.written_tokens == sum(1 for m in prompt.message_ids if m >= 0) + 5

    # the semantics spelled out with the model: call 1 writes the prompt's messages; the output, attending to
    # the prompt's KV and reading the state after call 1, is written as the next message
    model = engine.model
    cache = DynamicCache()
    with torch.no_grad():
        after_prompt = model(
            torch.tensor([list(prompt.ids)]),
            model.empty_state(),
            message_ids=torch.tensor([list(prompt.message_ids)]),
            past_key_values=cache,
            use_cache=True,
        ).state
        expected = model(
            torch.tensor([generated]),
            after_prompt,
            message_ids=torch.full((1, 5), max(prompt.message_ids) + 1),
            past_key_values=cache,
            use_cache=True,
        ).state[0]
    torch.testing.assert_close(outcome.state, expected, rtol=1e-5, atol=1e-6)


def test_batched_engine_matches_for_message_mean_adapters(message_engine):
    from deltamem.runtime.engine.batch_engine import BatchEngine
    from deltamem.runtime.model.backbone import LoadedModel

    engine = message_engine
    batched = BatchEngine(
        LoadedModel(engine.model, engine.tokenizer, engine.backbone_fingerprint, engine.adapter_fingerprint)
    )
    try:
        chat = engine.inputs.encode_messages([(m["role"], m["content"]) for m in CHAT], add_generation_prompt=False)
        want_state, want_written = engine.write(engine.empty_state(), chat)
        have_state, have_written = batched.write(engine.empty_state(), chat)
        assert want_written == have_written
        torch.testing.assert_close(have_state, want_state, rtol=1e-5, atol=1e-6)
        prompt = engine.inputs.encode_messages([("user", "Where does my sister live?")], add_generation_prompt=True)
        request = GenerationRequest(
            prompt.ids, max_new_tokens=4, ignore_end_of_turn=True, prompt_message_ids=prompt.message_ids
        )
        want = list(engine.generate(want_state, request))[-1]
        have = list(batched.generate(want_state, request))[-1]
        assert have.text == want.text and have.written_tokens == want.written_tokens
        torch.testing.assert_close(have.state, want.state, rtol=1e-5, atol=1e-6)
    finally:
        batched.close()
