"""LoCoMo QA scoring as the LoCoMo authors' evaluation computes it (snap-research/locomo, task_eval/evaluation.py),
plus exact-match recall for our synthetic facts.

Reference behaviour reproduced on purpose, quirks included:
- normalisation: delete commas, lowercase, delete ASCII punctuation (string.punctuation; curly quotes stay), replace
  the words a/an/the/and with a space (Unicode word boundaries as the `regex` module draws them), collapse whitespace;
  no Unicode normal form is applied. Deleting punctuation joins words: "pottery,camping" becomes "potterycamping".
- tokens are Porter-stemmed with nltk's PorterStemmer in its default mode; F1 is over token multisets and is 0 when
  either side has no tokens.
- category 1 (multi-hop): gold and prediction are both split on ',' (parts stripped, empty parts kept: an empty
  gold part scores 0); the score is the mean over gold parts of the best F1 against any prediction part.
- category 3 (open-domain): only the gold answer before the first ';' counts.
- categories 2 and 4: plain F1 on the whole strings.
- category 5 (adversarial): 1 iff the lowercased prediction contains "no information available" or "not mentioned";
  the gold (`adversarial_answer`) is not used.
The δ-mem authors' copy (declare-lab/delta-Mem, eval/locomo_protocol.py) differs in two small ways we do not follow:
it NFD-normalises text first and drops empty comma parts in multi-hop answers.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable
from typing import Any

import regex
from nltk.stem import PorterStemmer

__all__ = [
    "ABSTENTION_PHRASES",
    "CATEGORY_NAMES",
    "PAPER_CATEGORIES",
    "exact_match_recall",
    "is_abstention",
    "multi_hop_f1",
    "normalize_answer",
    "score_qa",
    "stemmed_tokens",
    "summarize",
    "token_f1",
]

CATEGORY_NAMES: dict[int, str] = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop", 5: "adversarial"}
PAPER_CATEGORIES: tuple[int, ...] = (1, 2, 3, 4)  # the δ-mem paper's LoCoMo F1 averages these; 5 is left out
ABSTENTION_PHRASES: tuple[str, ...] = ("no information available", "not mentioned")

_ARTICLES = regex.compile(r"\b(a|an|the|and)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_STEMMER = PorterStemmer()


def normalize_answer(text: str) -> str:
    """Lowercase, strip ASCII punctuation and the words a/an/the/and, collapse whitespace (see module docstring)."""
    text = text.replace(",", "").lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def stemmed_tokens(text: str) -> list[str]:
    """Normalised, whitespace-split, Porter-stemmed tokens."""
    return [_STEMMER.stem(token) for token in normalize_answer(text).split()]


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-stemmed-tokens F1; 0.0 when nothing overlaps (including when either side is empty)."""
    predicted, expected = stemmed_tokens(prediction), stemmed_tokens(gold)
    num_same = sum((Counter(predicted) & Counter(expected)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(predicted), num_same / len(expected)
    return 2 * precision * recall / (precision + recall)


def multi_hop_f1(prediction: str, gold: str) -> float:
    """Mean over the gold's comma-separated parts of the best token F1 against any comma-separated prediction part."""
    predicted_parts = [part.strip() for part in prediction.split(",")]
    gold_parts = [part.strip() for part in gold.split(",")]
    return sum(max(token_f1(p, g) for p in predicted_parts) for g in gold_parts) / len(gold_parts)


def is_abstention(prediction: str) -> bool:
    """Whether the prediction says the answer is not in the conversation, by LoCoMo's two fixed phrases."""
    lowered = prediction.lower()
    return any(phrase in lowered for phrase in ABSTENTION_PHRASES)


def score_qa(item: dict[str, Any], prediction: str) -> float:
    """Score one prediction for one LoCoMo QA item ({category, answer, ...}) by its category's rule."""
    category = item.get("category")
    if category not in CATEGORY_NAMES:
        raise ValueError(f"QA item has category {category!r}; LoCoMo categories are {sorted(CATEGORY_NAMES)}")
    if category == 5:
        return 1.0 if is_abstention(prediction) else 0.0
    if item.get("answer") is None:
        raise ValueError(f"category {category} QA item {item.get('question')!r} has no 'answer'")
    gold = str(item["answer"])  # a few LoCoMo answers are bare integers (years)
    if category == 1:
        return multi_hop_f1(prediction, gold)
    if category == 3:
        gold = gold.split(";")[0].strip()
    return token_f1(prediction, gold)


def exact_match_recall(prediction: str, gold: str) -> bool:
    """Whether the normalised gold appears in the normalised prediction as a contiguous run of whole tokens.

    No stemming: "cats" does not match "cat". An empty normalised gold never matches.
    """
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not expected:
        return False
    width = len(expected)
    return any(predicted[start : start + width] == expected for start in range(len(predicted) - width + 1))


def summarize(scored: Iterable[tuple[int, float]], categories: Iterable[int] = PAPER_CATEGORIES) -> dict[str, Any]:
    """Per-category mean and count, and the overall mean over every question in `categories` (micro average).

    Returns {"overall": float | None, "count": int, "categories": {category: {"name", "mean", "count"}}}; the
    per-category table covers every category seen, the overall only the selected ones.
    """
    selected = set(categories)
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for category, score in scored:
        sums[category] = sums.get(category, 0.0) + score
        counts[category] = counts.get(category, 0) + 1
    total = sum(counts[c] for c in counts if c in selected)
    return {
        "overall": sum(sums[c] for c in sums if c in selected) / total if total else None,
        "count": total,
        "categories": {
            c: {"name": CATEGORY_NAMES.get(c, "unknown"), "mean": sums[c] / counts[c], "count": counts[c]}
            for c in sorted(counts)
        },
    }
