"""LoCoMo and QASPER readers on small files the tests write, including the quirks of the real files."""

from __future__ import annotations

import copy
import json

import pytest

from deltamem.evals.conversation import history_messages, qa_pairs
from deltamem.evals.loaders import DataFormatError, load_locomo, load_qasper, validate_locomo
from deltamem.evals.synthetic import build


def locomo_sample() -> dict:
    """Shaped like a real locomo10.json sample, quirks included."""
    return {
        "sample_id": "conv-1",
        "conversation": {
            "speaker_a": "Caroline",
            "speaker_b": "Melanie",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Caroline", "dia_id": "D1:1", "text": "I went to a support group."},
                {
                    "speaker": "Melanie",
                    "dia_id": "D1:2",
                    "text": "Look at this.",
                    "img_url": ["https://example.invalid/x.jpg"],
                    "blip_caption": "a photo of a lake",
                },
            ],
            "session_2_date_time": "2:00 pm on 9 May, 2023",
            "session_2": [{"speaker": "Melanie", "dia_id": "D2:1", "text": "I painted a sunrise."}],
            "session_3_date_time": "3:00 pm on 1 June, 2023",  # a date without a session, as in conv-26
        },
        "qa": [
            {"question": "What did Caroline attend?", "answer": "support group", "evidence": ["D1:1"], "category": 4},
            {"question": "When did Melanie paint?", "answer": 2023, "evidence": ["D2:1"], "category": 2},
            {
                "question": "What did Melanie realise?",
                "adversarial_answer": "x",
                "evidence": ["D8:6; D9:17"],
                "category": 5,
            },
        ],
        "event_summary": {},
    }


def write(tmp_path, data, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_locomo_returns_the_samples_unchanged(tmp_path):
    samples = [locomo_sample()]
    assert load_locomo(write(tmp_path, samples)) == samples


def test_loaded_locomo_feeds_the_training_view(tmp_path):
    [sample] = load_locomo(write(tmp_path, [locomo_sample()]))
    assert [m["role"] for m in history_messages(sample)] == ["user", "assistant", "assistant"]
    assert history_messages(sample, with_captions=True)[1]["content"] == "Look at this. [shares a photo of a lake]"
    assert qa_pairs(sample) == [("What did Caroline attend?", "support group"), ("When did Melanie paint?", "2023")]


def test_synthetic_samples_pass_locomo_validation(tmp_path):
    samples = build("train", 50) + build("heldout", 50)
    assert load_locomo(write(tmp_path, samples)) == samples


def _drop(path):
    def edit(sample):
        *parents, last = path
        target = sample
        for key in parents:
            target = target[key]
        del target[last]

    return edit


def _set(path, value):
    def edit(sample):
        *parents, last = path
        target = sample
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


@pytest.mark.parametrize(
    "edit,message",
    [
        (_drop(["sample_id"]), r"sample 0: missing key 'sample_id'"),
        (_drop(["qa"]), r"sample 0 \('conv-1'\): missing key 'qa'"),
        (_drop(["conversation", "speaker_b"]), r"conversation: missing key 'speaker_b'"),
        (_drop(["conversation", "session_2_date_time"]), r"missing key 'session_2_date_time'"),
        (_drop(["conversation", "session_1", 0, "text"]), r"conversation\.session_1\[0\]: missing key 'text'"),
        (_set(["conversation", "session_2", 0, "speaker"], "Bob"), r"session_2\[0\]: speaker 'Bob' is neither"),
        (_set(["conversation", "session_1"], {"a": 1}), r"'session_1' must be list, got dict"),
        (_drop(["qa", 0, "answer"]), r"qa\[0\]: missing key 'answer'"),
        (_set(["qa", 1, "category"], 7), r"qa\[1\]: 'category' is 7"),
        (_set(["qa", 1, "category"], "2"), r"qa\[1\]: 'category' must be int, got str"),
        (_set(["qa", 1, "category"], True), r"qa\[1\]: 'category' must be int, got bool"),
        (_set(["qa", 0, "evidence"], "D1:1"), r"qa\[0\]: 'evidence' must be list"),
        (_set(["qa", 0, "answer"], None), r"qa\[0\]: 'answer' must be str or int, got NoneType"),
    ],
)
def test_load_locomo_names_the_bad_sample_and_key(tmp_path, edit, message):
    sample = locomo_sample()
    edit(sample)
    with pytest.raises(DataFormatError, match=message):
        load_locomo(write(tmp_path, [sample]))


def test_load_locomo_rejects_wrong_top_level_duplicates_and_sessionless_conversations(tmp_path):
    with pytest.raises(DataFormatError, match="expected a JSON list of samples, got dict"):
        load_locomo(write(tmp_path, {"sample_id": "x"}))
    with pytest.raises(DataFormatError, match=r"sample 1 \('conv-1'\): duplicate sample_id"):
        validate_locomo([locomo_sample(), locomo_sample()])
    sample = locomo_sample()
    sample["conversation"] = {"speaker_a": "A", "speaker_b": "B"}
    with pytest.raises(DataFormatError, match="has no session_N key"):
        validate_locomo([sample])
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        load_locomo(broken)
    with pytest.raises(FileNotFoundError):
        load_locomo(tmp_path / "absent.json")


def qasper_paper() -> dict:
    def annotation(**answer):
        base = {"unanswerable": False, "extractive_spans": [], "yes_no": None, "free_form_answer": ""}
        return {"answer": {**base, **answer, "evidence": []}, "annotation_id": "a", "worker_id": "w"}

    return {
        "title": "Tiny Models",
        "abstract": "We study tiny models.",
        "full_text": [
            {"section_name": "Introduction", "paragraphs": ["Tiny models are small.", "", "They run on CPUs."]},
            {"section_name": None, "paragraphs": ["An untitled section."]},
        ],
        "qas": [
            {
                "question": "What do they study?",
                "question_id": "q1",
                "answers": [annotation(extractive_spans=["tiny models", "CPUs"]), annotation(free_form_answer="x")],
            },
            {"question": "Is it open?", "question_id": "q2", "answers": [annotation(yes_no=False)]},
            {
                "question": "What is the budget?",
                "question_id": "q3",
                "answers": [annotation(unanswerable=True), annotation(free_form_answer="About ten dollars")],
            },
            {"question": "Who funded it?", "question_id": "q4", "answers": [annotation(unanswerable=True)]},
        ],
    }


EXPECTED_DOCUMENT = (
    "Tiny Models\n\nWe study tiny models.\n\nIntroduction\n\nTiny models are small.\n\nThey run on CPUs."
    "\n\nAn untitled section."
)


def test_load_qasper_official_layout(tmp_path):
    examples = load_qasper(write(tmp_path, {"1909.00001": qasper_paper()}))
    assert [(e.question_id, e.answer, e.answer_type) for e in examples] == [
        ("q1", "tiny models, CPUs", "extractive"),  # spans joined by ", ", and the first annotator wins
        ("q2", "No", "boolean"),
        ("q3", "About ten dollars", "abstractive"),  # the first answerable annotation, not the first one
    ]
    assert examples[2].references == ("Unanswerable", "About ten dollars")
    assert all(e.paper_id == "1909.00001" and e.document == EXPECTED_DOCUMENT for e in examples)
    assert examples[0].question == "What do they study?"


def test_load_qasper_keeps_unanswerable_questions_on_request(tmp_path):
    examples = load_qasper(write(tmp_path, {"p": qasper_paper()}), include_unanswerable=True)
    assert [(e.question_id, e.answer, e.answer_type) for e in examples][-1] == ("q4", "Unanswerable", "none")


@pytest.mark.parametrize("layout", ["list", "papers-key"])
def test_load_qasper_other_layouts(tmp_path, layout):
    paper = {**qasper_paper(), "id": "p7"}
    data = [paper] if layout == "list" else {"papers": [paper]}
    examples = load_qasper(write(tmp_path, data))
    assert [e.paper_id for e in examples] == ["p7"] * 3


@pytest.mark.parametrize(
    "edit,message",
    [
        (_drop(["title"]), r"paper 'p': missing key 'title'"),
        (_drop(["full_text", 0, "paragraphs"]), r"full_text\[0\]: missing key 'paragraphs'"),
        (_set(["qas", 1, "question"], 3), r"qas\[1\]: 'question' must be str, got int"),
        (_drop(["qas", 0, "answers", 1, "answer"]), r"qas\[0\]: answers\[1\]: missing key 'answer'"),
        (_set(["qas", 1, "answers", 0, "answer", "yes_no"], None), r"qas\[1\]: answers\[0\]: answer has no span"),
        (_set(["qas", 0, "answers", 0, "answer", "extractive_spans"], "tiny"), r"'extractive_spans' must be a list"),
    ],
)
def test_load_qasper_names_the_bad_paper_and_key(tmp_path, edit, message):
    paper = copy.deepcopy(qasper_paper())
    edit(paper)
    with pytest.raises(DataFormatError, match=message):
        load_qasper(write(tmp_path, {"p": paper}))
