"""Hand-computed checks of the project's SQuAD scorer and of its `evaluate` module."""

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from fractions import Fraction
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


def assert_best_thresholds_reproduce(predictions, references):
    """Return the summary, after checking that each best threshold, applied as no_answer_threshold, scores
    exactly best_exact / best_f1."""
    scores = cs.squad_v2_scores(predictions, references)
    for name in ("exact", "f1"):
        applied = cs.squad_v2_scores(predictions, references, no_answer_threshold=scores[f"best_{name}_thresh"])
        assert applied[name] == scores[f"best_{name}"], name
    return scores


def test_abstaining_everywhere_reports_the_smallest_value_minus_one():
    # Start 1 (u abstains); answering a adds 0, answering u takes 1 away: abstaining everywhere is best, and
    # its threshold must lie below every value (the official 0.0 would answer nothing only for values > 0).
    scores = assert_best_thresholds_reproduce({"a": ("Lyon", 0.5), "u": ("Lyon", 0.7)}, {"a": ["Paris"], "u": []})
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (50.0, -0.5)
    assert (scores["best_f1"], scores["best_f1_thresh"]) == (50.0, -0.5)
    # null odds, negative and large: the official 0.0 would answer every question here (1 of 3 instead of 2)
    odds = {"a": ("Lyon", -80.0), "u": ("Lyon", -60.0), "v": ("Rome", 55.0)}
    scores = assert_best_thresholds_reproduce(odds, {"a": ["Paris"], "u": [], "v": []})
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (pytest.approx(200 / 3), -81.0)
    assert cs.squad_v2_scores(odds, {"a": ["Paris"], "u": [], "v": []}, 0.0)["exact"] == pytest.approx(100 / 3)


def test_abstain_everywhere_threshold_stays_below_huge_and_infinite_values():
    assert cs.threshold_below(-80.0) == -81.0 and cs.threshold_below(0.0) == -1.0
    for value in (2.0**60, 1e300, math.inf):  # value - 1 == value: the next float down
        below = cs.threshold_below(value)
        assert below < value and math.isfinite(below)
    references = {"u": [], "v": []}
    for value in (1e20, math.inf):
        scores = assert_best_thresholds_reproduce({"u": ("x", value), "v": ("", value)}, references)
        assert scores["best_exact"] == 100.0 and scores["best_exact_thresh"] < value


def test_infinite_values_are_ordered_and_reproduced():
    # The scripts give +inf null odds to a question without any non-empty candidate (its text is "").
    references = {"a": ["Paris"], "u": [], "e": ["the"]}  # e's only gold answer normalises to nothing
    predictions = {"a": ("Paris", 3.0), "u": ("", math.inf), "e": ("", math.inf)}
    # answering the +inf block gains e (the empty text matches its empty gold): the threshold must be +inf
    scores = assert_best_thresholds_reproduce(predictions, references)
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (100.0, math.inf)
    # -inf can never abstain, so abstaining everywhere is no candidate: the first block is always answered
    predictions = {"a": ("Lyon", -math.inf), "u": ("Rome", 1.0)}
    scores = assert_best_thresholds_reproduce(predictions, {"a": ["Paris"], "u": []})
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (50.0, -math.inf)
    with pytest.raises(ValueError, match="'a' is NaN"):
        cs.squad_v2_scores({"a": ("Paris", math.nan)}, {"a": ["Paris"]})


def test_large_null_odds_keep_their_order_and_their_best_threshold_reproduces():
    # Null odds well past where sigmoid saturates in float64 (sigmoid(55) == sigmoid(90) == sigmoid(120) == 1.0).
    predictions = {
        "q1": ("paris", -80.0),  # answerable, right: +1
        "q2": ("Lyon", -60.0),  # unanswerable, answered: -1
        "q3": (PARTIAL_PREDICTION, 55.0),  # answerable, exact 0, f1 4/7
        "q4": ("Rome", 90.0),  # answerable, right: +1
        "q5": ("Nice", 120.0),  # unanswerable, answered: -1
    }
    references = {"q1": ["Paris"], "q2": [], "q3": [PARTIAL_GOLD], "q4": ["rome"], "q5": []}
    # From 2 (q2, q5 abstain): exact 3 at -80, 2, 2, 3, 2 -> best 3 first at -80;
    # f1 3 at -80, 2, 2 + 4/7 at 55, 3 + 4/7 at 90, 2 + 4/7 -> best 3 + 4/7 at 90.
    scores = assert_best_thresholds_reproduce(predictions, references)
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (60.0, -80.0)
    assert scores["best_f1_thresh"] == 90.0 and scores["best_f1"] == pytest.approx(100 * (3 + PARTIAL_F1) / 5)
    assert 1 / (1 + math.exp(-55.0)) == 1 / (1 + math.exp(-120.0)) == 1.0  # why sigmoid could not order them


def test_tied_values_are_answered_together():
    # a and u share 5.0, listed so that the official per-question scan answers a (+1) first and stops there:
    # it reports 2 of 3 at 5.0, but at 5.0 u is answered too (-1), and only 1 of 3 is right.
    predictions = {"a": ("Paris", 5.0), "u": ("Lyon", 5.0), "b": ("Rome", 7.0)}
    references = {"a": ["Paris"], "u": [], "b": ["Rome"]}
    official = official_find_best_thresh(*official_inputs(predictions, references, "exact"))
    assert official == (pytest.approx(200 / 3), 5.0)
    assert cs.squad_v2_scores(predictions, references, 5.0)["exact"] == pytest.approx(100 / 3)
    # the block at 5.0 nets 0, so 2 of 3 is first reached after b, at 7.0 (everything answered)
    scores = assert_best_thresholds_reproduce(predictions, references)
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (pytest.approx(200 / 3), 7.0)
    assert (scores["best_f1"], scores["best_f1_thresh"]) == (pytest.approx(200 / 3), 7.0)
    # a block that gains as a whole is a candidate at its value; -0.0 and 0.0 are one value
    predictions = {"a": ("Paris", -0.0), "b": ("Rome", 0.0), "u": ("Lyon", 0.0), "v": ("Nice", 3.0)}
    references = {"a": ["Paris"], "b": ["Rome"], "u": [], "v": []}
    scores = assert_best_thresholds_reproduce(predictions, references)
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (75.0, 0.0)
    # the best total inside a block is out of reach: from 3 (u, v, w), the official scan reaches 5 of 5 after a
    # and b and reports it at 4.0, where u is answered too (-1): the block as a whole gives 4 of 5
    predictions = {"a": ("Paris", 4.0), "b": ("Rome", 4.0), "u": ("Lyon", 4.0), "v": ("Nice", 9.0), "w": ("", 9.0)}
    references = {"a": ["Paris"], "b": ["Rome"], "u": [], "v": [], "w": []}
    assert official_find_best_thresh(*official_inputs(predictions, references, "exact")) == (100.0, 4.0)
    scores = assert_best_thresholds_reproduce(predictions, references)
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (80.0, 4.0)


def official_find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
    """The official SQuAD v2.0 script's threshold search, restated: from abstaining everywhere, questions are
    answered one at a time in increasing no-answer value (a float running total: + the score of an answerable
    one, - 1 for an unanswerable one with a non-empty text); the first strict maximum and the value where it was
    reached are kept, 0.0 when abstaining everywhere is never beaten."""
    total = best = float(sum(not has_answer for has_answer in qid_to_has_ans.values()))
    threshold = 0.0
    for qid in sorted(na_probs, key=na_probs.get):
        if qid in scores:
            total += scores[qid] if qid_to_has_ans[qid] else -float(bool(preds[qid]))
            if total > best:
                best, threshold = total, na_probs[qid]
    return 100.0 * best / len(scores), threshold


def official_inputs(predictions, references, name):
    """(preds, scores, na_probs, qid_to_has_ans) of the official script for ``name`` ("exact" or "f1")."""
    texts = {qid: text for qid, (text, _) in predictions.items()}
    exact, f1 = cs.raw_scores(texts, {qid: cs.gold_answers(golds) for qid, golds in references.items()})
    na_probs = {qid: p for qid, (_, p) in predictions.items()}
    return texts, {"exact": exact, "f1": f1}[name], na_probs, {qid: bool(golds) for qid, golds in references.items()}


def random_case(rng, n, values):
    """Random questions: (raw exact, raw f1, answerable, texts, values), the raw scores consistent with the texts
    as the metric computes them (an unanswerable question scores 1 exactly when its text is empty)."""
    answerable = {f"q{i}": rng.random() < 0.5 for i in range(n)}
    texts = {qid: "" if rng.random() < 0.2 else f"text {qid}" for qid in answerable}
    exact, f1 = {}, {}
    for qid, has_answer in answerable.items():
        if not has_answer:
            exact[qid] = f1[qid] = float(not texts[qid])
        elif not texts[qid]:
            exact[qid] = f1[qid] = 0.0
        else:
            exact[qid] = float(rng.random() < 0.3)
            f1[qid] = 1.0 if exact[qid] else values(rng)
    return exact, f1, answerable, texts


def test_best_threshold_matches_the_official_search_on_random_untied_odds():
    rng = random.Random(20240611)
    quarters = lambda r: r.choice([0.0, 0.25, 0.5, 0.75])  # sums exact in floats, as the official script keeps them
    abstained_everywhere = 0
    for case in range(3000):
        exact, f1, answerable, texts = random_case(rng, rng.randint(1, 40), quarters)
        odds = {qid: rng.gauss(0.0, 60.0) for qid in answerable}
        assert len(set(odds.values())) == len(odds)  # continuous values: no ties
        abstentions = cs.abstention_scores(answerable, odds)
        for raw in (exact, f1):
            best, threshold = cs.best_threshold(raw, answerable, texts, odds)
            official_best, official_threshold = official_find_best_thresh(texts, raw, odds, answerable)
            assert best == official_best, case
            if official_best == 100.0 * sum(not a for a in answerable.values()) / len(raw):  # never beaten
                abstained_everywhere += 1
                assert threshold == min(odds.values()) - 1.0, case
            else:
                assert threshold == official_threshold, case
            applied = cs.apply_no_answer_threshold(raw, abstentions, odds, threshold)
            assert cs.percent(applied, list(raw)) == best, case
    assert abstained_everywhere > 100  # the case is exercised


def test_best_threshold_is_the_first_exact_maximum_over_every_threshold_with_ties_and_missing_predictions():
    # Any F1 values (totals kept exactly), values rounded so that ties are frequent, some questions unpredicted:
    # the reported threshold, applied, scores best exactly, and brute force over every distinct threshold finds
    # no higher total and no earlier equal one.
    rng = random.Random(7)
    unreachable_official = 0
    for case in range(800):
        exact, f1, answerable, texts = random_case(rng, rng.randint(1, 25), lambda r: r.random())
        odds = {qid: float(round(rng.gauss(0.0, 3.0))) * 20.0 for qid in answerable if rng.random() < 0.9}
        for qid in set(answerable) - set(odds):  # as cs.raw_scores scores a question without a prediction
            exact[qid] = f1[qid] = 0.0
        abstentions = cs.abstention_scores(answerable, odds)
        for raw in (exact, f1):
            best, threshold = cs.best_threshold(raw, answerable, texts, odds)
            applied = cs.apply_no_answer_threshold(raw, abstentions, odds, threshold)
            assert cs.percent(applied, list(raw)) == best, case
            candidates = sorted(set(odds.values()))
            candidates = ([cs.threshold_below(candidates[0])] if candidates else [0.0]) + candidates
            totals = [sum(map(Fraction, cs.apply_no_answer_threshold(raw, abstentions, odds, t).values()))
                      for t in candidates]
            first = max(range(len(totals)), key=lambda k: (totals[k], -k))
            assert (threshold, best) == (candidates[first], 100.0 * float(totals[first]) / len(raw)), case
            # the official per-question scan, stopping inside a block of ties, claims a total no threshold gives
            official_best, _ = official_find_best_thresh(texts, raw, odds, {qid: answerable[qid] for qid in odds})
            unreachable_official += official_best > best
    assert unreachable_official > 50  # ties that matter are exercised


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

v2, v1 = evaluate.load(sys.argv[1]), evaluate.load(sys.argv[1], "squad")
results = []
for cases in json.loads(sys.argv[2]):
    references = [{"id": qid, "answers": answers(texts)} for qid, texts in cases["references"].items()]
    v2_predictions = [
        {"id": qid, "prediction_text": text, "no_answer_probability": p}
        for qid, (text, p) in cases["predictions"].items()
    ]
    v1_predictions = [{"id": qid, "prediction_text": text} for qid, (text, _) in cases["predictions"].items()]
    results.append({
        "v2": v2.compute(predictions=v2_predictions, references=references,
                         no_answer_threshold=cases.get("threshold", 0.15)),
        "v1": v1.compute(predictions=v1_predictions, references=references),
    })
print(json.dumps(results))
"""


def loaded_results(cases, tmp_path):
    """What `evaluate.load` of the metric folder computes for each of `cases`, all in one fresh offline process (the
    load is what is tested, and a process costs seconds), with the process's stderr."""
    offline = {"HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(METRIC_DIR), json.dumps(cases)],
        env={**os.environ, **offline, "HF_HOME": str(tmp_path)}, cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


def test_evaluate_load_of_the_folder_matches_the_scorer_and_takes_null_odds_of_any_size(tmp_path):
    # evaluate needs as many predictions as references: "q5" replaces q4's, leaving q4 unpredicted.
    mixed = {**MIXED_PREDICTIONS, "q5": ("", 0.0)}
    del mixed["q4"]
    # Null odds of any size go through the module (float64) unchanged; its best thresholds are in odds units.
    odds = {"q1": ("paris", -80.0), "q2": ("Lyon", -60.0), "q3": (PARTIAL_PREDICTION, 55.0), "q4": ("Rome", 90.0),
            "q5": ("Nice", 120.0)}
    odds_references = {"q1": ["Paris"], "q2": [], "q3": [PARTIAL_GOLD], "q4": ["rome"], "q5": []}
    best = cs.squad_v2_scores(odds, odds_references)
    (loaded, loaded_odds), stderr = loaded_results(
        [{"predictions": mixed, "references": MIXED_REFERENCES},
         {"predictions": odds, "references": odds_references, "threshold": best["best_f1_thresh"]}], tmp_path)
    assert "1 of 4 references have no prediction" in stderr

    texts = {qid: text for qid, (text, _) in mixed.items()}
    # Same floats through the same arithmetic, so equal exactly (float32 inputs would not be).
    assert loaded["v2"] == cs.squad_v2_scores(mixed, MIXED_REFERENCES, 0.15)
    assert loaded["v1"] == cs.squad_v1_scores(texts, MIXED_REFERENCES)
    # Threshold 0.15 turns q2 (0.2) and q3 (0.3) into abstentions: q1 right, q2 wrong,
    # q3 right, q4 missing.
    assert (loaded["v2"]["exact"], loaded["v2"]["f1"]) == (50.0, 50.0)
    assert loaded["v1"] == pytest.approx({"exact_match": 50.0, "f1": 100 * (2 + PARTIAL_F1) / 4})

    loaded_odds = loaded_odds["v2"]
    assert loaded_odds == cs.squad_v2_scores(odds, odds_references, best["best_f1_thresh"])
    assert (loaded_odds["best_f1_thresh"], loaded_odds["best_exact_thresh"]) == (90.0, -80.0)
    assert loaded_odds["f1"] == loaded_odds["best_f1"] == best["best_f1"]
