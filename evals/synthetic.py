"""Deterministic open-vocabulary two-speaker conversations in the LoCoMo schema, for training and measuring δ-mem.

Speaker A (the user, when a conversation becomes chat messages) states `facts` personal facts across one or more
short sessions, with small talk between them; speaker B (the assistant) may state its own value of one of the
same attributes (a distractor); a later session may change one of A's facts ("I moved from Bergen to Kutno").
The QA asks about every fact, answered with the latest value: LoCoMo category 4 items with extra keys (`attribute`,
`subject` 'a' or 'b', `speaker`, `changed`, `previous`, `value_split`, `question_self` for A's facts,
`answer_sentence`, `answer_sentence_self`).

Splits: `train` uses training names, training templates and training values. `heldout` uses held-out names and
held-out templates (other wordings than any training one), with values from the held-out pool (`values="heldout"`,
the default: values no training example holds) or from the training pool (`values="train"`: the same unseen
conversations with seen values, to tell value recall apart from template and name generalisation).

Determinism: sample i draws from its own `random.Random` seeded by (split, values, seed, i), so output depends
neither on PYTHONHASHSEED, the process nor `count`, and prefixes of larger builds agree.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from typing import Any

from deltamem.evals.conversation import TrainingExample, history_messages, qa_pairs, to_training
from deltamem.evals.open_facts import ATTRIBUTES, SMALL_TALK, Attribute, fill
from deltamem.evals.value_pools import pool

__all__ = ["SPLITS", "Shape", "TrainingExample", "build", "history_messages", "make_sample", "qa_pairs", "to_training"]

SPLITS = ("train", "heldout")
SINGLE_HOP = 4
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """What one conversation holds: how many facts speaker A states (a range, inclusive), and how likely a
    distractor from B, a later change of one fact and small talk between facts are."""

    min_facts: int = 1
    max_facts: int = 4
    distractor_prob: float = 0.5
    change_prob: float = 0.3
    small_talk_prob: float = 0.5  # per fact: a small-talk exchange before it
    max_sessions: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.min_facts <= self.max_facts <= len(ATTRIBUTES) - 1:
            raise ValueError(f"facts must satisfy 1 <= min <= max <= {len(ATTRIBUTES) - 1}")
        for name in ("distractor_prob", "change_prob", "small_talk_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")


def build(
    split: str, count: int, seed: int = 0, *, shape: Shape = Shape(), values: str | None = None
) -> list[dict[str, Any]]:
    """`count` samples of one split; `values` picks the value pool ('train' or 'heldout'; default: the split's)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    values = values or split
    if split == "train" and values != "train":
        raise ValueError("the train split only uses training values")
    return [make_sample(split, seed, index, shape=shape, values=values) for index in range(count)]


def make_sample(split: str, seed: int, index: int, *, shape: Shape = Shape(), values: str | None = None) -> dict:
    """One conversation with its QA; see the module docstring."""
    values = values or split
    rng = random.Random(f"deltamem-open/{split}/{values}/{seed}/{index}/{shape}")
    names = pool("name", split)
    name, partner = rng.sample(names, 2)
    changeable = [a for a in ATTRIBUTES if a.changes is not None]
    attributes = rng.sample(ATTRIBUTES, rng.randint(shape.min_facts, shape.max_facts))
    facts = {a.key: _value(rng, a, values) for a in attributes}
    writer = _SessionWriter(rng, split, name, partner)

    sessions = rng.randint(1, min(shape.max_sessions, len(attributes)))
    cuts = sorted(rng.sample(range(1, len(attributes)), sessions - 1))
    groups = [attributes[lo:hi] for lo, hi in zip([0, *cuts], [*cuts, len(attributes)], strict=True)]
    distractor = rng.choice(attributes) if rng.random() < shape.distractor_prob else None
    stated: dict[tuple[str, str], str] = {}  # (subject, key) -> dia_id
    b_facts: dict[str, str] = {}
    for group in groups:
        writer.open_session()
        for attribute in group:
            if rng.random() < shape.small_talk_prob:
                writer.small_talk()
            statement = fill(rng.choice(attribute.statements.of(split)), facts[attribute.key])
            stated["a", attribute.key] = writer.pair(statement, rng.choice(SMALL_TALK.acknowledgements.of(split)))
            if attribute is distractor:
                other = _value(rng, attribute, values, avoid=facts[attribute.key])
                b_facts[attribute.key] = other
                stated["b", attribute.key] = writer.b_states(
                    fill(rng.choice(attribute.statements.of(split)), other),
                    rng.choice(SMALL_TALK.acknowledgements.of(split)),
                )
        writer.close_session()

    changed: dict[str, str] = {}
    candidates = [a for a in attributes if a in changeable]
    if candidates and rng.random() < shape.change_prob:
        attribute = rng.choice(candidates)
        old = facts[attribute.key]
        new = _value(rng, attribute, values, avoid=old)
        writer.open_session()
        if rng.random() < shape.small_talk_prob:
            writer.small_talk()
        change = fill(rng.choice(attribute.changes.of(split)), new, previous=old)
        stated["a", attribute.key] = writer.pair(change, rng.choice(SMALL_TALK.acknowledgements.of(split)))
        writer.close_session()
        changed[attribute.key] = old
        facts[attribute.key] = new

    qa = [
        _question(rng, split, a, "a", name, facts[a.key], stated["a", a.key], changed.get(a.key), values)
        for a in attributes
    ]
    qa += [
        _question(rng, split, a, "b", partner, b_facts[a.key], stated["b", a.key], None, values)
        for a in attributes
        if a.key in b_facts
    ]
    rng.shuffle(qa)
    conversation: dict[str, Any] = {"speaker_a": name, "speaker_b": partner}
    for number, (date_time, turns) in enumerate(writer.sessions, start=1):
        conversation[f"session_{number}_date_time"] = date_time
        conversation[f"session_{number}"] = turns
    return {"sample_id": f"open-{split}-{values}-{seed}-{index}", "conversation": conversation, "qa": qa}


def _value(rng: random.Random, attribute: Attribute, values: str, avoid: str = "") -> str:
    options = pool(attribute.pool, values)
    while (value := rng.choice(options)) == avoid:
        pass
    return value


def _question(rng, split, attribute: Attribute, subject: str, name: str, value: str, dia_id, previous, values):
    item = {
        "question": rng.choice(attribute.questions.of(split)).format(name=name),
        "answer": value,
        "evidence": [dia_id],
        "category": SINGLE_HOP,
        "attribute": attribute.key,
        "subject": subject,
        "speaker": name,
        "changed": previous is not None,
        "previous": previous,
        "value_split": values,
        "answer_sentence": fill(attribute.answer, value, name),
    }
    if subject == "a":  # only the user can ask about themself in the first person
        item["question_self"] = rng.choice(attribute.questions_self.of(split))
        item["answer_sentence_self"] = fill(attribute.answer_self, value)
    return item


class _SessionWriter:
    """Accumulates sessions of alternating turns (A first, B last, as chat messages need), with dia_ids."""

    def __init__(self, rng: random.Random, split: str, name: str, partner: str) -> None:
        self.rng, self.split, self.name, self.partner = rng, split, name, partner
        self.sessions: list[tuple[str, list[dict[str, str]]]] = []
        self.day = rng.randint(0, 300)  # days after 1 January 2023
        self.turns: list[dict[str, str]] = []

    def open_session(self) -> None:
        if self.sessions:
            self.day += self.rng.randint(1, 20)
        self.turns = []
        greeting = self.rng.choice(SMALL_TALK.greetings.of(self.split)).format(partner=self.partner)
        reply = self.rng.choice(SMALL_TALK.greeting_replies.of(self.split)).format(name=self.name)
        self.pair(greeting, reply)

    def small_talk(self) -> None:
        self.pair(
            self.rng.choice(SMALL_TALK.remarks.of(self.split)), self.rng.choice(SMALL_TALK.replies.of(self.split))
        )

    def pair(self, text_a: str, text_b: str) -> str:
        """An A turn and a B turn; returns the A turn's dia_id."""
        dia_a = self._turn(self.name, text_a)
        self._turn(self.partner, text_b)
        return dia_a

    def b_states(self, text_b: str, text_a: str) -> str:
        """A asks B back, B states its own fact, A acknowledges it, B closes; returns B's statement's dia_id."""
        self._turn(self.name, self.rng.choice(SMALL_TALK.asking_back.of(self.split)))
        dia_b = self._turn(self.partner, text_b)
        self.pair(text_a, self.rng.choice(SMALL_TALK.closers.of(self.split)))
        return dia_b

    def close_session(self) -> None:
        self.sessions.append((self._date_time(), self.turns))

    def _turn(self, speaker: str, text: str) -> str:
        dia_id = f"D{len(self.sessions) + 1}:{len(self.turns) + 1}"
        self.turns.append({"speaker": speaker, "dia_id": dia_id, "text": text})
        return dia_id

    def _date_time(self) -> str:
        """LoCoMo's format, e.g. '1:56 pm on 8 May, 2023'."""
        date = datetime.date(2023, 1, 1) + datetime.timedelta(days=self.day)
        hour, minute = self.rng.randint(1, 12), self.rng.randint(0, 59)
        return (
            f"{hour}:{minute:02d} {self.rng.choice(('am', 'pm'))} on {date.day} {MONTHS[date.month - 1]}, {date.year}"
        )
