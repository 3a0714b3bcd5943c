"""Hand-computed checks of the project's SQuAD scorer and of its `evaluate` module."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

METRIC_DIR = Path(__file__).resolve().parents[1] / "metrics" / "squad_v2"

# Loaded by path so the tests do not depend on how the repository is put on sys.path.
_spec = importlib.util.spec_from_file_location("squad_compute_score", METRIC_DIR / "compute_score.py")
cs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cs)

# "the big red dog" -> [big, red, dog]; "a big brown old dog" -> [big, brown, old, dog].
# Shared: big, dog. Precision 2/3, recall 2/4, F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7.
PARTIAL_PREDICTION, PARTIAL_GOLD, PARTIAL_F1 = "the big red dog", "a big brown old dog", 4 / 7

# Two answerable (q1 right, q2 partial) and two unanswerable (q3 abstains, q4 answers).
MIXED_PREDICTIONS = {
    "q1": ("paris", 0.1),
    "q2": (PARTIAL_PREDICTION, 0.2),
    "q3": ("", 0.3),
    "q4": ("London", 0.6),
}
MIXED_REFERENCES = {"q1": ["Paris"], "q2": [PARTIAL_GOLD], "q3": [], "q4": []}


def test_normalisation_drops_case_punctuation_articles_and_extra_spaces():
    assert cs.normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert cs.normalize_answer("  An  anthem,\tthe theatre's a-ha ") == "anthem theatres aha"
    assert cs.exact_match("The Eiffel Tower!", "eiffel tower") == 1
    assert cs.exact_match("Eiffel", "eiffel tower") == 0


def test_token_f1_partial_overlap():
    assert cs.token_f1(PARTIAL_PREDICTION, PARTIAL_GOLD) == pytest.approx(PARTIAL_F1)


def test_token_f1_counts_repeated_tokens_once_per_occurrence():
    # [dog, dog, dog] vs [dog]: one shared token, precision 1/3, recall 1, F1 = 1/2.
    assert cs.token_f1("dog dog dog", "dog") == pytest.approx(0.5)
    # [dog, dog] vs [dog, dog, cat]: two shared, precision 1, recall 2/3, F1 = 4/5.
    assert cs.token_f1("dog dog", "dog dog cat") == pytest.approx(0.8)


def test_token_f1_with_an_empty_side():
    assert cs.token_f1("", "") == 1.0
    assert cs.token_f1("the", "") == 1.0  # nothing left after normalisation
    assert cs.token_f1("", "Paris") == 0.0
    assert cs.token_f1("Paris", "") == 0.0


def test_best_score_over_several_gold_answers():
    golds = cs.gold_answers(["Carolina Panthers", "Broncos"])
    assert cs.best_score(cs.exact_match, "the Broncos", golds) == 1
    # vs "Broncos": precision 1/3, recall 1 -> F1 1/2; vs "Carolina Panthers": 0.
    assert cs.best_score(cs.token_f1, "Denver Broncos team", golds) == pytest.approx(0.5)


def test_gold_answers_of_unanswerable_question_is_the_empty_string():
    assert cs.gold_answers([]) == [""]
    assert cs.gold_answers(["", "a"]) == [""]
    assert cs.gold_answers(["", "Paris"]) == ["Paris"]


def test_empty_prediction_is_wrong_on_answerable_and_right_on_unanswerable():
    scores = cs.squad_v2_scores({"a": ("", 0.0), "u": ("", 0.0)}, {"a": ["Paris"], "u": []})
    assert (scores["HasAns_exact"], scores["HasAns_f1"]) == (0.0, 0.0)
    assert (scores["NoAns_exact"], scores["NoAns_f1"]) == (100.0, 100.0)


def test_no_answer_probability_above_threshold_means_no_answer():
    predictions = {"a": ("Paris", 0.9), "u": ("Lyon", 0.9)}
    references = {"a": ["Paris"], "u": []}
    abstaining = cs.squad_v2_scores(predictions, references, no_answer_threshold=0.5)
    assert (abstaining["HasAns_exact"], abstaining["NoAns_exact"]) == (0.0, 100.0)
    answering = cs.squad_v2_scores(predictions, references, no_answer_threshold=0.9)
    assert (answering["HasAns_exact"], answering["NoAns_exact"]) == (100.0, 0.0)


def test_v2_summary_breakdown_and_best_thresholds():
    scores = cs.squad_v2_scores(MIXED_PREDICTIONS, MIXED_REFERENCES)
    # Per question at threshold 1.0 (exact, f1): q1 (1, 1), q2 (0, 4/7), q3 (1, 1), q4 (0, 0).
    # Best thresholds: abstaining everywhere scores 2 (q3, q4). Answering in order of
    # probability adds, for exact: q1 +1 -> 3 at 0.1, q2 +0, q3 +0, q4 -1 -> best 3/4 at 0.1;
    # for f1: q1 +1 -> 3 at 0.1, q2 +4/7 -> 25/7 at 0.2, q3 +0, q4 -1 -> best 25/28 at 0.2.
    expected = {
        "exact": 50.0,
        "f1": 100 * (2 + PARTIAL_F1) / 4,
        "total": 4,
        "HasAns_exact": 50.0,
        "HasAns_f1": 100 * (1 + PARTIAL_F1) / 2,
        "HasAns_total": 2,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
        "best_exact": 75.0,
        "best_exact_thresh": 0.1,
        "best_f1": 100 * 25 / 28,
        "best_f1_thresh": 0.2,
    }
    assert list(scores) == list(expected)
    assert scores == pytest.approx(expected)


def test_best_threshold_is_zero_when_abstaining_everywhere_is_never_beaten():
    # Start 1 (u abstains); answering a adds 0, answering u takes 1 away.
    scores = cs.squad_v2_scores({"a": ("Lyon", 0.5), "u": ("Lyon", 0.7)}, {"a": ["Paris"], "u": []})
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (50.0, 0.0)
    assert (scores["best_f1"], scores["best_f1_thresh"]) == (50.0, 0.0)


def test_breakdown_keys_only_for_the_kinds_of_questions_present():
    answerable_only = cs.squad_v2_scores({"a": ("Paris", 0.0)}, {"a": ["Paris"]})
    assert "HasAns_total" in answerable_only and "NoAns_total" not in answerable_only
    unanswerable_only = cs.squad_v2_scores({"u": ("", 0.0)}, {"u": []})
    assert "NoAns_total" in unanswerable_only and "HasAns_total" not in unanswerable_only


def test_v1_scores():
    predictions = {"q1": "The Eiffel Tower!", "q2": PARTIAL_PREDICTION}
    references = {"q1": ["Paris", "eiffel tower"], "q2": [PARTIAL_GOLD]}
    assert cs.squad_v1_scores(predictions, references) == pytest.approx(
        {"exact_match": 50.0, "f1": 100 * (1 + PARTIAL_F1) / 2}
    )


def test_missing_prediction_is_a_wrong_answer_and_is_warned_about(caplog):
    # "u" is unanswerable, but without a prediction it does not get the abstention's 1:
    # best exact starts at 0 and answering "a" (probability 0.0) brings it to 1 of 2.
    scores = cs.squad_v2_scores({"a": ("Paris", 0.0), "extra": ("x", 0.0)}, {"a": ["Paris"], "u": []})
    assert (scores["exact"], scores["total"], scores["NoAns_exact"]) == (50.0, 2, 0.0)
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (50.0, 0.0)
    assert "1 of 2 references have no prediction" in caplog.text
    caplog.clear()
    assert cs.squad_v1_scores({"a": "Paris"}, {"a": ["Paris"], "b": ["Lyon"]})["exact_match"] == 50.0
    assert "1 of 2 references have no prediction" in caplog.text


def test_no_warning_when_every_reference_has_a_prediction(caplog):
    cs.squad_v2_scores(MIXED_PREDICTIONS, MIXED_REFERENCES)
    assert "no prediction" not in caplog.text


_LOAD_SCRIPT = """
import json, sys
import evaluate

def answers(texts):
    return {"text": texts, "answer_start": [0] * len(texts)}

cases = json.loads(sys.argv[2])
references = [{"id": qid, "answers": answers(texts)} for qid, texts in cases["references"].items()]
v2 = evaluate.load(sys.argv[1])
v2_predictions = [
    {"id": qid, "prediction_text": text, "no_answer_probability": p}
    for qid, (text, p) in cases["predictions"].items()
]
v1 = evaluate.load(sys.argv[1], "squad")
v1_predictions = [{"id": qid, "prediction_text": text} for qid, (text, _) in cases["predictions"].items()]
print(json.dumps({
    "v2": v2.compute(predictions=v2_predictions, references=references, no_answer_threshold=0.15),
    "v1": v1.compute(predictions=v1_predictions, references=references),
}))
"""


def test_evaluate_load_of_the_folder_matches_the_scorer(tmp_path):
    # evaluate needs as many predictions as references: "q5" replaces q4's, leaving q4 unpredicted.
    predictions = {**MIXED_PREDICTIONS, "q5": ("", 0.0)}
    del predictions["q4"]
    cases = {"predictions": predictions, "references": MIXED_REFERENCES}
    offline = {"HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(METRIC_DIR), json.dumps(cases)],
        env={**os.environ, **offline, "HF_HOME": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "1 of 4 references have no prediction" in result.stderr

    texts = {qid: text for qid, (text, _) in predictions.items()}
    # Same floats through the same arithmetic, so equal exactly (float32 inputs would not be).
    assert loaded["v2"] == cs.squad_v2_scores(predictions, MIXED_REFERENCES, 0.15)
    assert loaded["v1"] == cs.squad_v1_scores(texts, MIXED_REFERENCES)
    # Threshold 0.15 turns q2 (0.2) and q3 (0.3) into abstentions: q1 right, q2 wrong,
    # q3 right, q4 missing.
    assert (loaded["v2"]["exact"], loaded["v2"]["f1"]) == (50.0, 50.0)
    assert loaded["v1"] == pytest.approx({"exact_match": 50.0, "f1": 100 * (2 + PARTIAL_F1) / 4})
