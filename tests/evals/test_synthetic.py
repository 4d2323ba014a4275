"""The synthetic conversations: deterministic, split-disjoint, and the QA answer is the latest stated value."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys

import pytest

from deltamem.evals.conversation import session_numbers
from deltamem.evals.synthetic import build, history_messages, make_sample, to_training
from deltamem.evals.synthetic_facts import (
    ACKNOWLEDGEMENTS,
    ATTRIBUTES,
    FILLERS_A,
    FILLERS_B,
    FIRST_GREETINGS_A,
    FIRST_GREETINGS_B,
    HELDOUT_NAMES,
    LATER_GREETINGS_A,
    LATER_GREETINGS_B,
    PARTNER_NAMES,
    TRAIN_NAMES,
)

VALUE_TO_ATTRIBUTE = {value.lower(): attribute.key for attribute in ATTRIBUTES for value in attribute.values}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def turns(sample: dict) -> list[dict]:
    conversation = sample["conversation"]
    return [turn for n in session_numbers(conversation) for turn in conversation[f"session_{n}"]]


def test_same_arguments_give_identical_json():
    assert json.dumps(build("train", 50, seed=3)) == json.dumps(build("train", 50, seed=3))


def test_output_does_not_depend_on_the_process_hash_seed():
    code = (
        "import json, hashlib; from deltamem.evals.synthetic import build; "
        "print(hashlib.sha256(json.dumps(build('heldout', 40, 7)).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in ("0", "12345")
    }
    assert len(digests) == 1


def test_a_sample_depends_only_on_split_seed_and_index():
    assert build("train", 30, seed=1)[:10] == build("train", 10, seed=1)
    assert build("train", 10, seed=1)[4] == make_sample("train", 1, 4)
    assert build("train", 10, seed=1) != build("train", 10, seed=2)
    assert len({s["sample_id"] for s in build("train", 200)}) == 200


def test_splits_never_share_a_speaker_or_a_name_and_facts_combination():
    assert not set(TRAIN_NAMES) & set(HELDOUT_NAMES)
    assert not set(PARTNER_NAMES) & (set(TRAIN_NAMES) | set(HELDOUT_NAMES))

    def combos(samples):
        return {
            (s["conversation"]["speaker_a"], frozenset((q["attribute"], q["answer"]) for q in s["qa"])) for s in samples
        }

    train, heldout = build("train", 1500, seed=0), build("heldout", 500, seed=0)
    assert {s["conversation"]["speaker_a"] for s in train} <= set(TRAIN_NAMES)
    assert {s["conversation"]["speaker_a"] for s in heldout} <= set(HELDOUT_NAMES)
    assert not combos(train) & combos(heldout)


def test_each_value_belongs_to_one_attribute_and_small_talk_mentions_none():
    all_values = [value.lower() for attribute in ATTRIBUTES for value in attribute.values]
    assert len(all_values) == len(set(all_values))
    small_talk = (
        FILLERS_A + FILLERS_B + ACKNOWLEDGEMENTS + FIRST_GREETINGS_A + FIRST_GREETINGS_B + LATER_GREETINGS_A
    ) + LATER_GREETINGS_B
    for sentence in small_talk:
        assert not set(words(sentence)) & set(all_values), sentence


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_the_answer_is_the_last_value_speaker_a_stated_for_that_attribute(split):
    for sample in build(split, 300, seed=5):
        name = sample["conversation"]["speaker_a"]
        last_stated: dict[str, tuple[str, str]] = {}  # attribute -> (value, dia_id)
        history: dict[str, list[str]] = {}
        for turn in turns(sample):
            for word in words(turn["text"]):
                if word in VALUE_TO_ATTRIBUTE:
                    assert turn["speaker"] == name, "speaker B must never state a fact"
                    last_stated[VALUE_TO_ATTRIBUTE[word]] = (word, turn["dia_id"])
                    history.setdefault(VALUE_TO_ATTRIBUTE[word], []).append(word)
        assert {q["attribute"] for q in sample["qa"]} == set(last_stated)
        for qa in sample["qa"]:
            value, dia_id = last_stated[qa["attribute"]]
            assert qa["answer"].lower() == value
            assert qa["evidence"] == [dia_id]
            assert qa["category"] == 4
            assert qa["changed"] == (len(history[qa["attribute"]]) == 2)
            assert (qa["previous"] or "").lower() == (history[qa["attribute"]][0] if qa["changed"] else "")
            assert name in qa["question"] and qa["answer"] in qa["answer_sentence"]


def test_change_probability_controls_how_many_samples_change_a_fact():
    def num_changed(sample):
        return sum(q["changed"] for q in sample["qa"])

    assert all(num_changed(s) == 0 for s in build("train", 200, change_prob=0.0))
    assert all(num_changed(s) == 1 for s in build("train", 200, change_prob=1.0))
    fraction = sum(num_changed(s) for s in build("train", 1000)) / 1000
    assert 0.42 < fraction < 0.58  # default 0.5; 1000 draws put 3 sigma at ±0.047


def test_sizes_stay_small_and_varied():
    samples = build("train", 500, seed=9)
    num_facts = {len(s["qa"]) for s in samples}
    num_sessions = {len(session_numbers(s["conversation"])) for s in samples}
    assert num_facts == {2, 3, 4}
    assert num_sessions == {1, 2, 3, 4}
    assert max(sum(len(words(t["text"])) for t in turns(s)) for s in samples) <= 150


def test_sessions_alternate_a_then_b_with_sequential_ids_and_increasing_dates():
    for sample in build("heldout", 200, seed=2):
        conversation = sample["conversation"]
        dates = []
        for n in session_numbers(conversation):
            session = conversation[f"session_{n}"]
            assert [t["speaker"] for t in session] == [conversation["speaker_a"], conversation["speaker_b"]] * (
                len(session) // 2
            )
            assert [t["dia_id"] for t in session] == [f"D{n}:{i}" for i in range(1, len(session) + 1)]
            dates.append(datetime.datetime.strptime(conversation[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y"))
        assert [d.date() for d in dates] == sorted(d.date() for d in dates)
        assert len({d.date() for d in dates}) == len(dates)


def test_unknown_split_and_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown split 'test'"):
        build("test", 1)
    with pytest.raises(ValueError, match="change_prob"):
        build("train", 1, change_prob=1.5)
    with pytest.raises(ValueError, match="count"):
        build("train", -1)


def test_training_view_maps_speakers_to_roles_and_keeps_every_turn():
    sample = make_sample("train", 0, 11)
    example = to_training(sample)
    assert example.sample_id == sample["sample_id"]
    assert [m["content"] for m in example.messages] == [t["text"] for t in turns(sample)]
    assert [m["role"] for m in example.messages] == ["user", "assistant"] * (len(example.messages) // 2)
    assert example.pairs == [(q["question"], q["answer"]) for q in sample["qa"]]
    own_view = to_training(sample, first_person=True, sentence_answers=True)
    assert own_view.messages == history_messages(sample)
    assert own_view.pairs == [(q["question_self"], q["answer_sentence_self"]) for q in sample["qa"]]
    assert all(answer.startswith("You") for _, answer in own_view.pairs)


@pytest.mark.slow
def test_every_value_is_one_token_after_a_space_and_histories_are_short(default_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    multi_token = [
        v for a in ATTRIBUTES for v in a.values if len(tokenizer.encode(" " + v, add_special_tokens=False)) != 1
    ]
    assert multi_token == []
    lengths = [
        len(tokenizer.encode(" ".join(m["content"] for m in history_messages(s)), add_special_tokens=False))
        for s in build("train", 300)
    ]
    assert max(lengths) <= 200
