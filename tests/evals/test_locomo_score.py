"""LoCoMo scoring against hand-computed numbers, one block per rule of the reference scorer."""

from __future__ import annotations

import pytest

from deltamem.evals.locomo_score import (
    exact_match_recall,
    is_abstention,
    multi_hop_f1,
    normalize_answer,
    score_qa,
    stemmed_tokens,
    summarize,
    token_f1,
)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The Cat, and a Dog!", "cat dog"),  # comma and '!' deleted; the/and/a become spaces
        ("pottery,camping", "potterycamping"),  # deleting the comma joins the words, as the reference does
        ("the-end", "theend"),  # punctuation goes before articles, so 'the' is no longer a word
        ("Don't  STOP\n", "dont stop"),
        ("Anderson and Thea", "anderson thea"),  # only whole words are articles
        ("An apple AND a pear", "apple pear"),
        ("\u201cquoted\u201d", "\u201cquoted\u201d"),  # curly quotes are not in string.punctuation
        ("the a\u0301", "a\u0301"),  # decomposed á: `regex` sees no word boundary before the accent, so 'a' stays
        ("", ""),
        ("?!. ,", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_tokens_are_porter_stemmed():
    assert stemmed_tokens("The dogs were running") == ["dog", "were", "run"]


@pytest.mark.parametrize(
    "prediction,gold,expected",
    [
        ("Adoption agencies", "adoption agencies", 1.0),
        # pred [may, 2023], gold [7, may, 2023]: same 2, P 2/2, R 2/3, F1 = 2*(2/3)/(1+2/3) = 0.8
        ("May 2023", "7 May 2023", 0.8),
        # pred [she, run] ('runs' -> 'run'), gold [run]: same 1, P 1/2, R 1, F1 = 1/(3/2) = 2/3
        ("She runs", "running", 2 / 3),
        # multiset overlap: min(2, 1) = 1 shared 'cat', P 1/2, R 1, F1 = 2/3
        ("cat cat", "cat", 2 / 3),
        ("dog", "cat", 0.0),
        ("", "cat", 0.0),  # empty prediction
        ("?!...", "cat", 0.0),  # punctuation only
        ("The a an and", "cat", 0.0),  # articles only
        ("", "", 0.0),  # no tokens on either side: 0, not 1
    ],
)
def test_token_f1(prediction, gold, expected):
    assert token_f1(prediction, gold) == pytest.approx(expected)


@pytest.mark.parametrize(
    "prediction,gold,expected",
    [
        # gold parts pottery | camping | painting; best matches 1, 1, 0 -> (1+1+0)/3
        ("camping, pottery", "Pottery, camping, painting", 2 / 3),
        # one prediction part [beach, mountain] vs gold 'beach': P 1/2, R 1 -> 2/3; same for 'mountains'; mean 2/3
        ("the beach and the mountains", "beach, mountains", 2 / 3),
        ("beach, mountains", "beach, mountains", 1.0),
        # trailing comma: gold parts 'x' and '' -> (1 + 0)/2, an empty gold part counts as a miss in the reference
        ("x", "x,", 0.5),
        ("", "beach, mountains", 0.0),
    ],
)
def test_multi_hop_f1(prediction, gold, expected):
    assert multi_hop_f1(prediction, gold) == pytest.approx(expected)


def test_category_1_uses_the_multi_hop_rule():
    item = {"category": 1, "answer": "Pottery, camping, painting"}
    assert score_qa(item, "camping, pottery") == pytest.approx(2 / 3)
    # the same strings under plain F1: pred [camp, potteri] vs gold [potteri, camp, paint]: P 1, R 2/3 -> 0.8
    assert score_qa({**item, "category": 4}, "camping, pottery") == pytest.approx(0.8)


def test_category_2_is_plain_f1_and_accepts_integer_answers():
    # pred [in, 2022] vs gold [2022]: P 1/2, R 1 -> 2/3
    assert score_qa({"category": 2, "answer": 2022}, "In 2022") == pytest.approx(2 / 3)


def test_category_3_scores_only_the_gold_before_the_semicolon():
    item = {"category": 3, "answer": "Yes; it's classical music"}
    assert score_qa(item, "yes") == 1.0
    # as category 4 the whole gold counts: [ye, it, classic, music] vs [ye]: P 1, R 1/4, F1 = (1/2)/(5/4) = 0.4
    assert score_qa({**item, "category": 4}, "yes") == pytest.approx(0.4)


def test_category_4_is_plain_f1():
    # pred [she, move, to, pari] vs gold [pari]: P 1/4, R 1, F1 = (1/2)/(5/4) = 0.4
    assert score_qa({"category": 4, "answer": "Paris"}, "She moved to Paris.") == pytest.approx(0.4)


@pytest.mark.parametrize(
    "prediction,expected",
    [
        ("No information available.", 1.0),
        ("That is not mentioned in the conversation", 1.0),
        ("NOT MENTIONED", 1.0),
        ("(a) Not mentioned in the conversation", 1.0),
        ("The information is not available", 0.0),  # only the two exact phrases count
        ("It was never mentioned", 0.0),
        ("self-care is important", 0.0),  # repeating the adversarial answer is wrong
        ("", 0.0),
    ],
)
def test_category_5_is_right_only_when_the_prediction_abstains(prediction, expected):
    item = {"category": 5, "adversarial_answer": "self-care is important", "question": "What did she realise?"}
    assert score_qa(item, prediction) == expected
    assert is_abstention(prediction) == bool(expected)


def test_bad_items_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="category 6"):
        score_qa({"category": 6, "answer": "x"}, "x")
    with pytest.raises(ValueError, match="category '4'"):
        score_qa({"category": "4", "answer": "x"}, "x")
    with pytest.raises(ValueError, match="has no 'answer'"):
        score_qa({"category": 4, "question": "Who?"}, "x")


@pytest.mark.parametrize(
    "prediction,gold,expected",
    [
        ("Maria lives in Paris.", "Paris", True),
        ("paris", "PARIS", True),
        ("He plays the bass.", "the bass", True),  # gold normalises to 'bass'
        ("ice cream cone", "ice cream", True),
        ("cream ice", "ice cream", False),  # order matters
        ("Comparison", "Paris", False),  # inside a word is not a match
        ("I have two cats", "cat", False),  # no stemming
        ("", "tea", False),
        ("!!!", "tea", False),
        ("tea", "", False),  # an empty gold never matches
        ("the tea", "the", False),
    ],
)
def test_exact_match_recall(prediction, gold, expected):
    assert exact_match_recall(prediction, gold) is expected


def test_summarize_averages_per_category_and_over_the_paper_categories():
    summary = summarize([(1, 1.0), (1, 0.5), (4, 0.0), (5, 1.0)])
    assert summary["overall"] == pytest.approx(0.5)  # (1.0 + 0.5 + 0.0) / 3; category 5 left out
    assert summary["count"] == 3
    assert summary["categories"][1] == {"name": "multi_hop", "mean": 0.75, "count": 2}
    assert summary["categories"][5] == {"name": "adversarial", "mean": 1.0, "count": 1}
    assert summarize([(1, 1.0), (5, 0.0)], categories=[1, 5])["overall"] == pytest.approx(0.5)
    assert summarize([])["overall"] is None
