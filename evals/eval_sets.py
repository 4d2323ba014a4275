"""What `deltamem eval` asks: sets of conversations and the questions asked after each.

Synthetic sets come from the held-out split (held-out names and templates), in two shapes and two value pools:
`single` (one fact stated in a short session) and `multi` (three to five facts among small talk over several
sessions, with distractors from the other speaker and changed facts), each with `unseen` values (no training
example holds them) and `seen` ones (values from the training pool: what a closed-vocabulary adapter could have
memorised). Speaker A's facts are asked in the first person ("Where do I live?", A is the user) or LoCoMo-style
by name, half and half; speaker B's by name. A LoCoMo-schema file is one set of its own, asked as written.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from deltamem.evals.synthetic import Shape, build, make_sample

SHAPES = {
    "single": Shape(
        min_facts=1, max_facts=1, distractor_prob=0.0, change_prob=0.0, small_talk_prob=0.5, max_sessions=1
    ),
    "multi": Shape(min_facts=3, max_facts=5, distractor_prob=0.5, change_prob=0.3, small_talk_prob=1.0, max_sessions=3),
}
VALUE_POOLS = {"unseen": "heldout", "seen": "train"}
SYNTHETIC_SETS = tuple(f"{shape}/{values}" for shape in SHAPES for values in VALUE_POOLS)
LOCOMO_SET = "locomo"


@dataclass
class Question:
    index: int  # position in the set's question list
    sample: int  # the conversation it is asked after
    text: str
    item: dict  # the QA item (answer, category, ...) the prediction is scored against
    person: str  # "self" (speaker A asks about themself), "a" (about A by name), "b" (about B by name), "locomo"


@dataclass
class EvalSet:
    name: str
    samples: list[dict]
    questions: list[Question]
    other: list[dict] = field(default_factory=list)  # per sample, a DIFFERENT conversation for the state_other control


def synthetic_set(name: str, count: int, seed: int) -> EvalSet:
    shape_name, values_name = name.split("/")
    shape, values = SHAPES[shape_name], VALUE_POOLS[values_name]
    samples = build("heldout", count, seed, shape=shape, values=values)
    rng = random.Random(f"eval-questions/{name}/{seed}")
    questions = []
    for index, sample in enumerate(samples):
        for item in sample["qa"]:
            if item["subject"] == "a" and rng.random() < 0.5:
                text, person = item["question_self"], "self"
            else:
                text, person = item["question"], item["subject"]
            sentence = item["answer_sentence_self"] if person == "self" else item["answer_sentence"]
            questions.append(Question(len(questions), index, text, {**item, "answer_sentence": sentence}, person))
    # the control reads the next conversation's memory; a set of one gets one more conversation for it
    other = (
        samples[1:] + samples[:1] if count > 1 else [make_sample("heldout", seed, count, shape=shape, values=values)]
    )
    return EvalSet(name, samples, questions, other)


def locomo_set(samples: list[dict]) -> EvalSet:
    asked = [
        (index, item)
        for index, sample in enumerate(samples)
        for item in sample["qa"]
        if item.get("category") != 5 and "answer" in item
    ]
    questions = [Question(n, index, item["question"], item, "locomo") for n, (index, item) in enumerate(asked)]
    other = samples[1:] + samples[:1] if len(samples) > 1 else []
    return EvalSet(LOCOMO_SET, samples, questions, other)
