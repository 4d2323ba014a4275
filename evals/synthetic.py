"""Deterministic synthetic multi-session conversations in the LoCoMo schema, for training and checking δ-mem.

Speaker A states 2–4 personal facts (from evals/synthetic_facts.py) across 1–3 short sessions among small talk; with
probability `change_prob` a later session changes one of them. The QA asks about every stated attribute and the
answer is always the latest value. All QA items are LoCoMo category 4 (single-hop) and carry extra keys:
`changed` (the value was replaced later), `previous` (the replaced value, or null), `attribute`, `question_self`
(the same question in the first person), `answer_sentence` / `answer_sentence_self` (the answer as a sentence,
e.g. "Maria lives in Paris." / "You live in Paris.": SmolLM2 encodes every value as one token after a space but
most as two or more at the start of a reply, so a sentence target is easier to learn than the bare value).
Category 2 is not used for changed facts because LoCoMo's category 2 means date questions, and the official LoCoMo
prompt appends a date instruction to them; select changed facts with `changed` instead.

Determinism: every sample draws from its own `random.Random` seeded by a string of (split, seed, index), which
Python hashes with SHA-512, so output does not depend on PYTHONHASHSEED, the process, or `count`.
"""

from __future__ import annotations

import datetime
import random
from typing import Any

from deltamem.evals.conversation import TrainingExample, history_messages, qa_pairs, to_training
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
    Attribute,
    indefinite_article,
)

__all__ = ["SPLITS", "TrainingExample", "build", "history_messages", "make_sample", "qa_pairs", "to_training"]

SPLITS: dict[str, tuple[str, ...]] = {"train": TRAIN_NAMES, "heldout": HELDOUT_NAMES}
SINGLE_HOP = 4
# spelled out rather than strftime("%B"), which follows the process locale
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def build(split: str, count: int, seed: int = 0, *, change_prob: float = 0.5) -> list[dict[str, Any]]:
    """`count` samples of one split; sample i depends only on (split, seed, i), so prefixes of larger builds agree."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not 0.0 <= change_prob <= 1.0:
        raise ValueError(f"change_prob must be in [0, 1], got {change_prob}")
    return [make_sample(split, seed, index, change_prob=change_prob) for index in range(count)]


def make_sample(split: str, seed: int, index: int, *, change_prob: float = 0.5) -> dict[str, Any]:
    """One conversation with its QA; see the module docstring for the shape."""
    rng = random.Random(f"deltamem-synthetic/{split}/{seed}/{index}")
    name = rng.choice(SPLITS[split])
    partner = rng.choice(PARTNER_NAMES)
    num_facts = rng.randint(2, 4)
    attributes = rng.sample(ATTRIBUTES, num_facts)
    values = {attribute.key: rng.choice(attribute.values) for attribute in attributes}

    # facts go into 1–3 sessions, each session holding at least one
    num_fact_sessions = rng.randint(1, min(3, num_facts))
    cuts = sorted(rng.sample(range(1, num_facts), num_fact_sessions - 1))
    groups = [attributes[lo:hi] for lo, hi in zip([0, *cuts], [*cuts, num_facts], strict=True)]

    writer = _SessionWriter(rng, name, partner)
    stated_at: dict[str, str] = {}
    for group in groups:
        writer.open_session()
        statements = {
            attribute.key: _fill(rng.choice(attribute.statements), values[attribute.key]) for attribute in group
        }
        for key, dia_id in writer.add_facts(statements).items():
            stated_at[key] = dia_id
        writer.close_session()

    changed: dict[str, str] = {}  # attribute key -> previous value
    if rng.random() < change_prob:
        attribute = rng.choice(attributes)
        old = values[attribute.key]
        new = rng.choice([value for value in attribute.values if value != old])
        writer.open_session()
        dia_id = writer.add_facts({attribute.key: _fill(rng.choice(attribute.changes), new)})[attribute.key]
        writer.close_session()
        changed[attribute.key] = old
        values[attribute.key] = new
        stated_at[attribute.key] = dia_id

    asked = list(attributes)
    rng.shuffle(asked)
    qa = [_question(attribute, name, values[attribute.key], stated_at[attribute.key], changed) for attribute in asked]
    conversation: dict[str, Any] = {"speaker_a": name, "speaker_b": partner}
    for number, (date_time, turns) in enumerate(writer.sessions, start=1):
        conversation[f"session_{number}_date_time"] = date_time
        conversation[f"session_{number}"] = turns
    return {"sample_id": f"synthetic-{split}-{seed}-{index}", "conversation": conversation, "qa": qa}


def _fill(template: str, value: str, name: str = "") -> str:
    return template.format(value=value, a=indefinite_article(value), name=name)


def _question(attribute: Attribute, name: str, value: str, dia_id: str, changed: dict[str, str]) -> dict[str, Any]:
    return {
        "question": attribute.question.format(name=name),
        "answer": value,
        "evidence": [dia_id],
        "category": SINGLE_HOP,
        "attribute": attribute.key,
        "changed": attribute.key in changed,
        "previous": changed.get(attribute.key),
        "question_self": attribute.question_self,
        "answer_sentence": _fill(attribute.answer_sentence, value, name),
        "answer_sentence_self": _fill(attribute.answer_sentence_self, value, name),
    }


class _SessionWriter:
    """Accumulates sessions whose turns strictly alternate A, B, starting with A and ending with B."""

    def __init__(self, rng: random.Random, name: str, partner: str) -> None:
        self.rng = rng
        self.name = name
        self.partner = partner
        self.sessions: list[tuple[str, list[dict[str, str]]]] = []
        self.day = rng.randint(0, 300)  # days after 1 January 2023
        self.turns: list[dict[str, str]] = []

    def open_session(self) -> None:
        if self.sessions:
            self.day += self.rng.randint(1, 20)
        self.turns = []
        greetings = (
            (FIRST_GREETINGS_A, FIRST_GREETINGS_B) if not self.sessions else (LATER_GREETINGS_A, LATER_GREETINGS_B)
        )
        self._pair(*(self.rng.choice(options).format(name=self.name, partner=self.partner) for options in greetings))

    def add_facts(self, statements: dict[str, str]) -> dict[str, str]:
        """One A turn per fact, each answered by B, with at most one small-talk pair somewhere in between."""
        filler_at = self.rng.randint(0, len(statements)) if self.rng.random() < 0.5 else -1
        where: dict[str, str] = {}
        for position, (key, sentence) in enumerate(statements.items()):
            if position == filler_at:
                self._pair(self.rng.choice(FILLERS_A), self.rng.choice(FILLERS_B))
            where[key] = self._pair(sentence, self.rng.choice(ACKNOWLEDGEMENTS))
        if filler_at == len(statements):
            self._pair(self.rng.choice(FILLERS_A), self.rng.choice(FILLERS_B))
        return where

    def close_session(self) -> None:
        self.sessions.append((self._date_time(), self.turns))

    def _pair(self, text_a: str, text_b: str) -> str:
        """Append an A turn and a B turn; return the A turn's dia_id."""
        session = len(self.sessions) + 1
        dia_a = f"D{session}:{len(self.turns) + 1}"
        self.turns.append({"speaker": self.name, "dia_id": dia_a, "text": text_a})
        self.turns.append({"speaker": self.partner, "dia_id": f"D{session}:{len(self.turns) + 1}", "text": text_b})
        return dia_a

    def _date_time(self) -> str:
        """LoCoMo's format, e.g. '1:56 pm on 8 May, 2023'."""
        date = datetime.date(2023, 1, 1) + datetime.timedelta(days=self.day)
        hour, minute = self.rng.randint(1, 12), self.rng.randint(0, 59)
        return (
            f"{hour}:{minute:02d} {self.rng.choice(('am', 'pm'))} on {date.day} {MONTHS[date.month - 1]}, {date.year}"
        )
