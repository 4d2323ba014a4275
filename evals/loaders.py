"""Readers for user-provided benchmark files: LoCoMo (locomo10.json) and QASPER.

Neither data set is downloaded or shipped (LoCoMo is CC BY-NC 4.0); the user passes a path. Both readers check the
shape before anything uses it and fail with a message naming the file, the sample and the key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltamem.evals.conversation import session_numbers
from deltamem.evals.locomo_score import CATEGORY_NAMES

_DATE_TIME_KEY = re.compile(r"session_(\d+)_date_time")


class DataFormatError(ValueError):
    """A benchmark file does not have the shape its reader expects."""


def load_locomo(path: str | Path) -> list[dict[str, Any]]:
    """The samples of a LoCoMo-schema JSON file, validated and otherwise unchanged."""
    path = Path(path)
    samples = _read_json(path)
    validate_locomo(samples, source=str(path))
    return samples


def validate_locomo(samples: Any, source: str = "<data>") -> None:
    """Raise DataFormatError unless `samples` is a list of LoCoMo samples.

    Required: sample_id (str, unique); conversation with speaker_a, speaker_b (str) and at least one session_N list
    of turns {speaker (one of the two), dia_id, text}, each session with a session_N_date_time string; qa, a list
    of {question (str), category (int 1-5), evidence (list of str)} with an answer (str or int) for categories 1-4.
    Allowed, as in the real file: extra keys anywhere, date_time keys without a session, empty sessions, category 5
    items holding `adversarial_answer` instead of `answer`, and free-form evidence strings.
    """
    if not isinstance(samples, list):
        raise DataFormatError(f"{source}: expected a JSON list of samples, got {type(samples).__name__}")
    seen: set[str] = set()
    for index, sample in enumerate(samples):
        where = f"{source}: sample {index}"
        if not isinstance(sample, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(sample).__name__}")
        sample_id = _require(sample, "sample_id", str, where)
        where = f"{source}: sample {index} ({sample_id!r})"
        if sample_id in seen:
            raise DataFormatError(f"{where}: duplicate sample_id")
        seen.add(sample_id)
        _validate_conversation(_require(sample, "conversation", dict, where), where)
        for number, item in enumerate(_require(sample, "qa", list, where)):
            _validate_qa(item, f"{where}: qa[{number}]")


def _validate_conversation(conversation: dict[str, Any], where: str) -> None:
    speakers = {
        _require(conversation, "speaker_a", str, f"{where}: conversation"),
        _require(conversation, "speaker_b", str, f"{where}: conversation"),
    }
    numbers = session_numbers(conversation)
    if not numbers:
        raise DataFormatError(f"{where}: conversation has no session_N key")
    for number in numbers:
        key = f"session_{number}"
        _require(conversation, f"{key}_date_time", str, f"{where}: conversation")
        session = _require(conversation, key, list, f"{where}: conversation")
        for position, turn in enumerate(session):
            at = f"{where}: conversation.{key}[{position}]"
            if not isinstance(turn, dict):
                raise DataFormatError(f"{at}: expected a turn object, got {type(turn).__name__}")
            speaker = _require(turn, "speaker", str, at)
            _require(turn, "dia_id", str, at)
            _require(turn, "text", str, at)
            if speaker not in speakers:
                raise DataFormatError(
                    f"{at}: speaker {speaker!r} is neither speaker_a nor speaker_b {sorted(speakers)}"
                )


def _validate_qa(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise DataFormatError(f"{where}: expected an object, got {type(item).__name__}")
    _require(item, "question", str, where)
    category = _require(item, "category", int, where)
    if category not in CATEGORY_NAMES:
        raise DataFormatError(f"{where}: 'category' is {category}, expected one of {sorted(CATEGORY_NAMES)}")
    evidence = _require(item, "evidence", list, where)
    if not all(isinstance(entry, str) for entry in evidence):
        raise DataFormatError(f"{where}: 'evidence' must be a list of strings, got {evidence!r}")
    if category != 5:
        _require(item, "answer", (str, int), where)


def _require(container: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in container:
        raise DataFormatError(f"{where}: missing key {key!r}")
    value = container[key]
    # bool is an int in Python, but a true/false category or answer is a broken file
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataFormatError(f"{where}: {key!r} must be {expected}, got {type(value).__name__} {value!r:.60}")
    return value


@dataclass(frozen=True)
class QasperExample:
    """One question about one paper; `answer` is the first answerable annotation, `references` all of them."""

    paper_id: str
    question_id: str
    document: str
    question: str
    answer: str
    answer_type: str  # "extractive" | "abstractive" | "boolean" | "none"
    references: tuple[str, ...]


def load_qasper(path: str | Path, *, include_unanswerable: bool = False) -> list[QasperExample]:
    """(document, question, answer) examples from a QASPER JSON file.

    Accepts the official layout ({paper_id: paper}), a list of papers (id from "id" or "paper_id"), or either under a
    top-level "papers" key. A paper has title, abstract, full_text [{section_name, paragraphs}] and qas [{question,
    question_id, answers: [{answer: {unanswerable, extractive_spans, free_form_answer, yes_no}}]}].
    Each annotation becomes a reference string the way QASPER's own evaluator does it: unanswerable -> "Unanswerable",
    else extractive spans joined by ", ", else the free-form answer, else "Yes"/"No". Questions no annotator could
    answer are skipped unless include_unanswerable, which keeps them with the answer "Unanswerable".
    """
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, dict) and "papers" in data:
        data = data["papers"]
    if isinstance(data, dict):
        papers = [(str(paper_id), paper) for paper_id, paper in data.items()]
    elif isinstance(data, list):
        papers = [(_paper_id(paper, index), paper) for index, paper in enumerate(data)]
    else:
        raise DataFormatError(f"{path}: expected an object of papers or a list of papers, got {type(data).__name__}")
    examples = []
    for paper_id, paper in papers:
        where = f"{path}: paper {paper_id!r}"
        if not isinstance(paper, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(paper).__name__}")
        document = _qasper_document(paper, where)
        for number, qa in enumerate(_require(paper, "qas", list, where)):
            at = f"{where}: qas[{number}]"
            if not isinstance(qa, dict):
                raise DataFormatError(f"{at}: expected an object, got {type(qa).__name__}")
            question = _require(qa, "question", str, at)
            annotations = _require(qa, "answers", list, at)
            references = [_qasper_reference(a, f"{at}: answers[{i}]") for i, a in enumerate(annotations)]
            answerable = [(text, kind) for text, kind in references if kind != "none"]
            if not answerable and not include_unanswerable:
                continue
            answer, answer_type = answerable[0] if answerable else ("Unanswerable", "none")
            examples.append(
                QasperExample(
                    paper_id=paper_id,
                    question_id=str(qa.get("question_id", f"{paper_id}-{number}")),
                    document=document,
                    question=question,
                    answer=answer,
                    answer_type=answer_type,
                    references=tuple(text for text, _ in references),
                )
            )
    return examples


def _paper_id(paper: Any, index: int) -> str:
    if isinstance(paper, dict):
        for key in ("id", "paper_id"):
            if key in paper:
                return str(paper[key])
    return str(index)


def _qasper_document(paper: dict[str, Any], where: str) -> str:
    """Title, abstract, then each section's name and its non-empty paragraphs, separated by blank lines."""
    parts = [_require(paper, "title", str, where), _require(paper, "abstract", str, where)]
    for number, section in enumerate(_require(paper, "full_text", list, where)):
        at = f"{where}: full_text[{number}]"
        if not isinstance(section, dict):
            raise DataFormatError(f"{at}: expected a section object, got {type(section).__name__}")
        name = section.get("section_name")  # null for some untitled sections in the real data
        if name is not None and not isinstance(name, str):
            raise DataFormatError(f"{at}: 'section_name' must be str or null, got {type(name).__name__}")
        paragraphs = _require(section, "paragraphs", list, at)
        if not all(isinstance(p, str) for p in paragraphs):
            raise DataFormatError(f"{at}: 'paragraphs' must be a list of strings")
        parts.extend([name] if name else [])
        parts.extend(p for p in paragraphs if p.strip())
    return "\n\n".join(part.strip() for part in parts if part.strip())


def _qasper_reference(annotation: Any, where: str) -> tuple[str, str]:
    if not isinstance(annotation, dict):
        raise DataFormatError(f"{where}: expected an object, got {type(annotation).__name__}")
    answer = _require(annotation, "answer", dict, where)
    if answer.get("unanswerable"):
        return "Unanswerable", "none"
    spans = answer.get("extractive_spans")
    if spans is not None and not (isinstance(spans, list) and all(isinstance(span, str) for span in spans)):
        raise DataFormatError(f"{where}: 'extractive_spans' must be a list of strings, got {spans!r:.60}")
    if spans:
        return ", ".join(spans), "extractive"
    if answer.get("free_form_answer"):
        return answer["free_form_answer"], "abstractive"
    if answer.get("yes_no") is not None:
        return ("Yes" if answer["yes_no"] else "No"), "boolean"
    raise DataFormatError(f"{where}: answer has no span, free-form text or yes/no and is not marked unanswerable")


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON ({error})") from None
