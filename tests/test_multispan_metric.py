"""MultiSpanQA's metric (metrics/multispanqa): hand-worked cases, and agreement with a restatement of its official
definition on random span sets."""

import random

import pytest

from metrics.multispanqa.compute_score import longest_common_substring, multispan_scores
from tests.independent_scorer import independent_multispan_scores

# q1: one span exactly right ("Dave Stewart"), one a part of its gold span ("Gaskin" of "Barbara Gaskin", 6 of its
# 14 characters); q2: nothing predicted for two gold spans.
GOLDS = {"q1": ["Dave Stewart", "Barbara Gaskin"], "q2": ["1871", "1872"]}
PREDICTIONS = {"q1": ["dave stewart", "Gaskin"], "q2": []}


def test_hand_worked_exact_and_partial_scores():
    scores = multispan_scores(PREDICTIONS, GOLDS)
    # exact: 1 right of 3 predicted (an empty prediction counts as one) and of 4 gold spans
    assert scores["em_precision"] == pytest.approx(100 / 3)
    assert scores["em_recall"] == pytest.approx(25)
    assert scores["em_f1"] == pytest.approx(100 * 2 / 7)
    # partial: both predicted spans lie whole inside a gold span (credit 2 of 3); the gold spans earn 1 + 6/14 of 4
    assert scores["overlap_precision"] == pytest.approx(100 * 2 / 3)
    assert scores["overlap_recall"] == pytest.approx(100 * 5 / 14)
    assert scores["overlap_f1"] == pytest.approx(100 * 20 / 43)
    assert (scores["questions"], scores["gold_spans"], scores["predicted_spans"]) == (2, 4, 3)


def test_spans_are_compared_as_sets_of_normalised_strings():
    scores = multispan_scores({"q": ["The Beatles", "beatles!", "Wings"]}, {"q": ["Beatles", "Wings"]})
    assert scores["em_f1"] == scores["overlap_f1"] == 100.0 and scores["predicted_spans"] == 2


def test_no_gold_span_and_no_prediction_is_right_on_partial_match():
    scores = multispan_scores({"q": [""]}, {"q": []})
    assert scores["overlap_f1"] == 100.0 and scores["em_f1"] == 0.0  # as the official script scores it


def test_a_missing_prediction_scores_as_none_and_is_reported(caplog):
    scores = multispan_scores({}, {"q": ["Paris"]})
    assert scores["em_f1"] == scores["overlap_f1"] == 0.0 and "have no prediction" in caplog.text


def test_longest_common_substring():
    assert longest_common_substring("barbara gaskin", "gaskin") == 6
    assert longest_common_substring("abcxyz", "xyzabc") == 3
    assert longest_common_substring("abc", "") == longest_common_substring("abc", "def") == 0


WORDS = ["red", "dog", "the", "big", "a", "cat", "blue", "sky", "sea", "an", "old", "ship", "Red!"]


def random_spans(rng):
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 4))]


def test_scores_equal_the_official_definition_on_random_span_sets():
    rng = random.Random(0)
    golds = {f"q{i}": random_spans(rng) for i in range(300)}
    predictions = {qid: random_spans(rng) if rng.random() < 0.7 else list(spans) for qid, spans in golds.items()}
    scores, official = multispan_scores(predictions, golds), independent_multispan_scores(predictions, golds)
    for kind in ("em", "overlap"):
        got = tuple(scores[f"{kind}_{name}"] for name in ("precision", "recall", "f1"))
        assert got == pytest.approx(official[kind], abs=1e-9)
    assert 0 < scores["em_f1"] < scores["overlap_f1"] < 100
