"""Turn one LoCoMo-schema sample (synthetic or real) into what training and evaluation consume.

Role mapping: speaker_a -> "user", speaker_b -> "assistant"; one chat message per dialogue turn, sessions in numeric
order, message content is the turn's text alone (no speaker name, no date). Synthetic sessions always start with A
and end with B, so their messages strictly alternate; real LoCoMo sessions sometimes start with B, so roles can
repeat across a session boundary there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SESSION_KEY = re.compile(r"session_(\d+)")


@dataclass(frozen=True)
class TrainingExample:
    """The history to write into memory, and the questions to answer from it."""

    sample_id: str
    messages: list[dict[str, str]]  # [{"role": "user" | "assistant", "content": str}]
    pairs: list[tuple[str, str]]  # (question, answer)


def session_numbers(conversation: dict[str, Any]) -> list[int]:
    """Numbers N of the `session_N` keys holding turns, ascending (numeric, so session_10 follows session_9)."""
    return sorted(int(match.group(1)) for key in conversation if (match := _SESSION_KEY.fullmatch(key)))


def history_messages(sample: dict[str, Any], *, with_captions: bool = False) -> list[dict[str, str]]:
    """The conversation as chat messages, speaker A as the user and speaker B as the assistant.

    with_captions=True appends a shared image's caption the way LoCoMo's prompts show it: "text [shares caption]".
    """
    conversation = sample["conversation"]
    roles = {conversation["speaker_a"]: "user", conversation["speaker_b"]: "assistant"}
    messages = []
    for number in session_numbers(conversation):
        for turn in conversation[f"session_{number}"]:
            if turn["speaker"] not in roles:
                raise ValueError(
                    f"sample {sample.get('sample_id')!r} turn {turn.get('dia_id')!r}: speaker {turn['speaker']!r} "
                    f"is neither speaker_a nor speaker_b ({sorted(roles)})"
                )
            content = turn["text"]
            if with_captions and turn.get("blip_caption"):
                content = f"{content} [shares {turn['blip_caption']}]"
            messages.append({"role": roles[turn["speaker"]], "content": content})
    return messages


def qa_pairs(
    sample: dict[str, Any], *, first_person: bool = False, sentence_answers: bool = False
) -> list[tuple[str, str]]:
    """(question, answer) for every QA item with an answer; LoCoMo's adversarial items (category 5) are skipped.

    first_person=True uses the synthetic `question_self` phrasing where present ("What is my job?"), which fits the
    chat form in which speaker A is the user asking; items without it (speaker B's facts, real LoCoMo) keep their
    third-person question. sentence_answers=True uses the synthetic answer sentence that goes with the question
    (`answer_sentence_self` or `answer_sentence`) where present, else the short answer.
    """
    pairs = []
    for item in sample["qa"]:
        if item.get("answer") is None or item.get("category") == 5:
            continue
        if first_person and "question_self" in item:
            question, sentence = item["question_self"], item.get("answer_sentence_self")
        else:
            question, sentence = item["question"], item.get("answer_sentence")
        answer = sentence if sentence_answers and sentence is not None else item["answer"]
        pairs.append((question, str(answer)))
    return pairs


def to_training(
    sample: dict[str, Any], *, first_person: bool = False, sentence_answers: bool = False
) -> TrainingExample:
    """History messages plus (question, answer) pairs of one sample; options as in `qa_pairs`."""
    return TrainingExample(
        sample_id=str(sample["sample_id"]),
        messages=history_messages(sample),
        pairs=qa_pairs(sample, first_person=first_person, sentence_answers=sentence_answers),
    )
