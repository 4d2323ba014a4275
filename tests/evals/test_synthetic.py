"""The synthetic conversations: deterministic, held out by value, template and name, and the QA answer is the
latest value its speaker stated."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys

import pytest

from deltamem.evals.conversation import session_numbers
from deltamem.evals.open_facts import ATTRIBUTES, BY_KEY, SMALL_TALK, Wordings
from deltamem.evals.synthetic import Shape, build, history_messages, make_sample, to_training
from deltamem.evals.value_pools import POOLS, pool, value_split

SENTENCE_KINDS = ("statements", "questions_self", "questions", "changes")
PLACEHOLDER = re.compile(r"\\\{(\w+)\\\}")
EMPTY = Wordings((), ())


def turns(sample: dict) -> list[dict]:
    conversation = sample["conversation"]
    return [turn for n in session_numbers(conversation) for turn in conversation[f"session_{n}"]]


def all_wordings() -> list[tuple[str, Wordings]]:
    found = [
        (f"{a.key}.{kind}", getattr(a, kind))
        for a in ATTRIBUTES
        for kind in SENTENCE_KINDS
        if getattr(a, kind) is not None
    ]
    return found + [(f"small_talk.{kind}", getattr(SMALL_TALK, kind)) for kind in SMALL_TALK.__dataclass_fields__]


def template_pattern(templates) -> re.Pattern:
    """One regex matching any sentence one of `templates` can produce, whatever fills its placeholders."""
    alternatives = [PLACEHOLDER.sub(".+", re.escape(t)) for t in templates]
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


def stated_values(text: str, attribute) -> set[str]:
    """The values of `attribute`'s pool that `text` states through one of its statement or change templates."""
    values = set(pool(attribute.pool, "train")) | set(pool(attribute.pool, "heldout"))
    found = set()
    for template in (
        *attribute.statements.train,
        *attribute.statements.heldout,
        *(attribute.changes or EMPTY).train,
        *(attribute.changes or EMPTY).heldout,
    ):
        regex = re.escape(template).replace(r"\{value\}", "(?P<value>.+)", 1)
        match = re.fullmatch(PLACEHOLDER.sub(".+", regex), text)
        if match and match.group("value") in values:
            found.add(match.group("value"))
    return found


def contains_word(text: str, value: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text) is not None


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


def test_value_pools_are_large_and_split_by_value_alone():
    for name in POOLS:
        train, heldout = set(pool(name, "train")), set(pool(name, "heldout"))
        assert len(heldout) >= 30 and len(train) >= 3 * len(heldout) * 0.8, name
        assert not train & heldout, name
        assert all(value_split(v) == "train" for v in train) and all(value_split(v) == "heldout" for v in heldout)
    every_train = {v.lower() for name in POOLS for v in pool(name, "train")}
    every_heldout = {v.lower() for name in POOLS for v in pool(name, "heldout")}
    assert not every_train & every_heldout  # a held-out value is held out in every pool it occurs in


def test_templates_of_the_two_splits_never_produce_the_same_sentence():
    for where, wordings in all_wordings():
        assert not set(wordings.train) & set(wordings.heldout), where
    train_patterns = [template_pattern(w.train) for _, w in all_wordings()]
    heldout_patterns = [template_pattern(w.heldout) for _, w in all_wordings()]
    for sample in build("heldout", 300, seed=4):
        texts = [t["text"] for t in turns(sample)] + [q["question"] for q in sample["qa"]]
        texts += [q["question_self"] for q in sample["qa"] if "question_self" in q]
        for text in texts:
            assert not any(p.fullmatch(text) for p in train_patterns), text
            assert any(p.fullmatch(text) for p in heldout_patterns), text  # the check can see a template
    for sample in build("train", 300, seed=4):
        for text in [t["text"] for t in turns(sample)] + [q["question"] for q in sample["qa"]]:
            assert not any(p.fullmatch(text) for p in heldout_patterns), text


def test_held_out_conversations_share_no_name_and_no_value_with_training():
    train = build("train", 2000, seed=0)
    train_names = {s["conversation"][k] for s in train for k in ("speaker_a", "speaker_b")}
    train_values = {q["answer"] for s in train for q in s["qa"]} | {q["previous"] for s in train for q in s["qa"]}
    assert train_names <= set(pool("name", "train"))
    heldout = build("heldout", 500, seed=0)
    seen_values = build("heldout", 500, seed=0, values="train")
    for sample in heldout + seen_values:
        assert not {sample["conversation"]["speaker_a"], sample["conversation"]["speaker_b"]} & train_names
    heldout_values = {q["answer"] for s in heldout for q in s["qa"]}
    assert heldout_values and not heldout_values & train_values
    assert all(q["value_split"] == "heldout" for s in heldout for q in s["qa"])
    assert {q["answer"] for s in seen_values for q in s["qa"]} <= {v for n in POOLS for v in pool(n, "train")}


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_the_answer_is_the_last_value_its_speaker_stated(split):
    for sample in build(split, 300, seed=5):
        conversation = sample["conversation"]
        by_id = {t["dia_id"]: t for t in turns(sample)}
        order = list(by_id)
        for qa in sample["qa"]:
            attribute = BY_KEY[qa["attribute"]]
            speaker = conversation["speaker_a" if qa["subject"] == "a" else "speaker_b"]
            evidence = by_id[qa["evidence"][0]]
            assert qa["speaker"] == speaker and evidence["speaker"] == speaker
            assert contains_word(evidence["text"], qa["answer"])
            assert speaker in qa["question"] and qa["answer"] in qa["answer_sentence"]
            assert qa["category"] == 4
            # no later turn of that speaker states a value of this attribute
            later = order[order.index(evidence["dia_id"]) + 1 :]
            assert not any(by_id[i]["speaker"] == speaker and stated_values(by_id[i]["text"], attribute) for i in later)
            if qa["changed"]:
                assert qa["previous"] != qa["answer"]
                earlier = order[: order.index(evidence["dia_id"])]
                assert any(
                    by_id[i]["speaker"] == speaker and contains_word(by_id[i]["text"], qa["previous"]) for i in earlier
                )
            if qa["subject"] == "a":
                assert qa["answer"] in qa["answer_sentence_self"] and "question_self" in qa
            else:
                assert "question_self" not in qa  # the user cannot ask about the assistant in the first person


def test_shape_controls_facts_distractors_changes_and_small_talk():
    one = build(
        "train", 100, shape=Shape(min_facts=1, max_facts=1, distractor_prob=0, change_prob=0, small_talk_prob=0)
    )
    assert all(len(s["qa"]) == 1 and s["qa"][0]["subject"] == "a" and not s["qa"][0]["changed"] for s in one)
    assert all(len(turns(s)) == 4 for s in one)  # greeting pair and statement pair
    always = build("train", 100, shape=Shape(min_facts=3, max_facts=3, distractor_prob=1, change_prob=1))
    for sample in always:
        assert sum(q["subject"] == "a" for q in sample["qa"]) == 3
        assert sum(q["subject"] == "b" for q in sample["qa"]) == 1
    changeable = {a.key for a in ATTRIBUTES if a.changes is not None}
    for sample in always:
        if {q["attribute"] for q in sample["qa"]} & changeable:
            assert sum(q["changed"] for q in sample["qa"]) == 1
    default = build("train", 500, seed=9)
    assert {len([q for q in s["qa"] if q["subject"] == "a"]) for s in default} == {1, 2, 3, 4}
    assert {len(session_numbers(s["conversation"])) for s in default} == {1, 2, 3, 4}


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
        Shape(change_prob=1.5)
    with pytest.raises(ValueError, match="facts"):
        Shape(min_facts=3, max_facts=2)
    with pytest.raises(ValueError, match="count"):
        build("train", -1)
    with pytest.raises(ValueError, match="only uses training values"):
        build("train", 1, values="heldout")
    with pytest.raises(ValueError, match="unknown value split"):
        build("heldout", 1, values="test")


def test_training_view_maps_speakers_to_roles_and_keeps_every_turn():
    sample = make_sample("train", 0, 11, shape=Shape(min_facts=2, max_facts=2, distractor_prob=1))
    example = to_training(sample)
    assert example.sample_id == sample["sample_id"]
    assert [m["content"] for m in example.messages] == [t["text"] for t in turns(sample)]
    assert [m["role"] for m in example.messages] == ["user", "assistant"] * (len(example.messages) // 2)
    assert example.pairs == [(q["question"], q["answer"]) for q in sample["qa"]]
    own_view = to_training(sample, first_person=True, sentence_answers=True)
    assert own_view.messages == history_messages(sample)
    expected = [
        (q["question_self"], q["answer_sentence_self"])
        if q["subject"] == "a"
        else (q["question"], q["answer_sentence"])
        for q in sample["qa"]
    ]
    assert own_view.pairs == expected


@pytest.mark.slow
def test_values_span_one_to_several_tokens_and_histories_stay_short(default_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    answers = [q["answer"] for s in build("heldout", 300) for q in s["qa"]]
    sizes = [len(tokenizer.encode(" " + v, add_special_tokens=False)) for v in answers]
    assert min(sizes) == 1 and max(sizes) >= 4 and sum(n > 1 for n in sizes) > len(sizes) / 3
    lengths = [
        len(tokenizer.encode(" ".join(m["content"] for m in history_messages(s)), add_special_tokens=False))
        for s in build("train", 300)
    ]
    assert max(lengths) <= 400
