"""Calibrated answers: the calibrator's pieces on hand-worked and synthetic cases, then `--calibrate` end to end on
MiniLM fine-tuned until it answers (the `learned` folders, evaluated on 120 sample questions, most of which they
never trained on): the calibrator stored in the config, the pipeline's and the endpoint's `probability` equal to
what evaluation measured, the figures re-computed from the written files, and the refusals."""

import json
import re

import numpy as np
import pytest
from transformers import pipeline

import qa_runner
from calibration_fitting import CalibrationEvidence, calibration_report, fitted_logistic, reliability
from metrics.squad_v2.compute_score import best_score, exact_match, gold_answers
from model_folder.calibration import Calibrator, sigmoid, span_margins
from qa_data import questions_from_file
from run_qa import SPAN_HEAD
from tests.conftest import DEV, HEADS, LEARNED_WINDOWS, TRAIN, read_json, train_heads
from tests.test_handler import served

CALIBRATION_QUESTIONS = 120


# --- the pieces ----------------------------------------------------------------------------------------------------

def test_span_margins_are_over_no_answer_and_over_the_best_span_with_another_text():
    margins = span_margins(["Paris", "paris", "Lyon"], [5.0, 4.0, 2.0], null_score=1.0)
    # "paris" is the top text again (case ignored): its rival is "Lyon"; "Lyon"'s rival is the top span
    assert margins.tolist() == [[4.0, 3.0], [3.0, 2.0], [1.0, -3.0]]
    assert span_margins(["Paris"], [5.0], null_score=-40.0).tolist() == [[30.0, 30.0]]  # clipped; no rival


def test_reliability_on_a_hand_worked_case():
    result = reliability([0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1])
    # bin 1: 2 answers at 0.1, half right: |1 - 0.2| / 4; bin 13: 2 at 0.9, both right: |2 - 1.8| / 4
    assert result["ece"] == pytest.approx(0.25)
    assert result["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    filled = [b for b in result["bins"] if b["count"]]
    assert [(b["count"], b["probability"], b["right"]) for b in filled] == [(2, pytest.approx(0.1), 0.5),
                                                                           (2, pytest.approx(0.9), 1.0)]


def test_the_logistic_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2)) * 2
    y = rng.random(20000) < sigmoid(-1.0 + x @ np.array([1.5, -0.5]))
    assert fitted_logistic(x, y) == pytest.approx([-1.0, 1.5, -0.5], abs=0.1)


def synthetic_evidence(questions=3000, seed=0):
    """Answers right with probability sigmoid(margin - 2), whose raw probability says sigmoid(margin): overconfident."""
    rng = np.random.default_rng(seed)
    margins = rng.normal(2.0, 2.0, size=(questions, 2))
    null_odds = rng.normal(0.0, 2.0, size=(questions, 1))
    returned_empty = null_odds[:, 0] > 1.0
    span_right = rng.random(questions) < sigmoid(margins[:, 0] - 2.0)
    empty_right = rng.random(questions) < sigmoid(null_odds[:, 0] - 1.0)
    raw = np.where(returned_empty, sigmoid(null_odds[:, 0] + 2), sigmoid(margins[:, 0]))
    return CalibrationEvidence(margins, span_right, null_odds, empty_right, returned_empty, raw,
                               np.array([f"context {i // 3}" for i in range(questions)], dtype=object))


def test_cross_validated_calibration_repairs_an_overconfident_score():
    calibrator, metrics, bins = calibration_report(synthetic_evidence())
    assert metrics["raw_ece"] > 0.2 and metrics["calibrated_ece"] < 0.03
    assert metrics["calibrated_brier"] < metrics["raw_brier"]
    assert calibrator.span == pytest.approx([-2.0, 1.0, 0.0], abs=0.25)
    assert sum(b["count"] for b in bins["calibrated"]) == metrics["calibration_questions"] == 3000


# --- --calibrate end to end ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def calibrated(learned, tmp_path_factory):
    """{head: model folder} written by an evaluation-only --calibrate run of each learned model."""
    folders = {head: tmp_path_factory.mktemp(f"calibrated-{head}") for head in HEADS}
    train_heads({head: ["--model_name_or_path", learned[head], "--validation_file", TRAIN,
                        "--version_2_with_negative", "--do_eval", "--calibrate", "--max_eval_samples",
                        CALIBRATION_QUESTIONS, *LEARNED_WINDOWS, "--per_device_eval_batch_size", 32,
                        "--output_dir", folders[head], "--report_to", "none", "--disable_tqdm", "true"]
                 for head in HEADS})
    return folders


@pytest.fixture(scope="module")
def questions():
    return questions_from_file(TRAIN).rows.select(range(CALIBRATION_QUESTIONS))


def evaluation_probabilities(folder):
    """Each question's probability of what evaluation answered, from its n-best file and the stored calibrator."""
    calibrator = Calibrator.from_dict(read_json(folder, "config.json")["qa_settings"]["calibrator"])
    predictions = read_json(folder, "eval_predictions.json")
    probabilities = {}
    for qid, answers in read_json(folder, "eval_nbest_predictions.json").items():
        spans = [a for a in answers if a["text"]]
        empty = next(a for a in answers if not a["text"])
        span, empty = calibrator.answer_probabilities([a["text"] for a in spans], [a["score"] for a in spans],
                                                      empty["score"])
        probabilities[qid] = empty if predictions[qid] == "" else span[0]
    return probabilities


@pytest.mark.parametrize("head", HEADS)
def test_the_pipeline_reports_the_probability_evaluation_measured(calibrated, questions, head):
    folder = calibrated[head]
    stored = read_json(folder, "config.json")["qa_settings"]["calibrator"]
    assert stored["questions"] == CALIBRATION_QUESTIONS and len(stored["span"]) == 3 and len(stored["empty"]) == 2
    items = [{"question": q, "context": c} for q, c in zip(questions["question"], questions["context"])]
    parameters = {"handle_impossible_answer": True, "align_to_words": False, "null_score_diff_threshold": 0.0}
    answers = pipeline("question-answering", model=str(folder), trust_remote_code=True)(items, batch_size=32,
                                                                                         **parameters)
    predictions = read_json(folder, "eval_predictions.json")
    assert [a["answer"] for a in answers] == [predictions[qid] for qid in questions["id"]]
    assert sum(a["answer"] == "" for a in answers) not in (0, len(answers))  # both kinds of answer are calibrated
    expected = evaluation_probabilities(folder)
    assert [a["probability"] for a in answers] == pytest.approx([expected[qid] for qid in questions["id"]], abs=1e-5)


def test_the_endpoint_reports_the_pipelines_probability(calibrated, questions, tmp_path):
    """Served from the folder in a fresh process, as an Inference Endpoint loads it (the span model: the handler
    passes on the pipeline's answers, whatever the head)."""
    items = [{"question": q, "context": c} for q, c in zip(questions["question"][:4], questions["context"][:4])]
    parameters = {"handle_impossible_answer": True, "align_to_words": False, "null_score_diff_threshold": 0.0}
    top = served(calibrated["span"], [{"inputs": items, "parameters": {**parameters, "top_k": 3}}], tmp_path)[0]
    assert all(0 < a["probability"] < 1 for answer in top for a in answer)
    expected = pipeline("question-answering", model=str(calibrated["span"]), trust_remote_code=True)(items, **parameters)
    assert [answer[0]["probability"] for answer in top] == pytest.approx([a["probability"] for a in expected],
                                                                        abs=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_the_raw_score_figures_re_compute_from_the_written_files(calibrated, questions, head):
    """The raw n-best probability's expected calibration error and Brier score, restated here: over 15 equal bins,
    sum |right - probability| / questions."""
    folder = calibrated[head]
    results, written = read_json(folder, "eval_results.json"), read_json(folder, "eval_calibration.json")
    nbest, predictions = read_json(folder, "eval_nbest_predictions.json"), read_json(folder, "eval_predictions.json")
    probability, right = [], []
    for qid, gold in zip(questions["id"], questions["answers"]):
        golds = gold_answers(gold["text"])
        answer = next(a for a in nbest[qid] if a["text"] == predictions[qid])
        probability.append(answer["probability"])
        right.append(golds == [""] if predictions[qid] == "" else best_score(exact_match, predictions[qid], golds))
    probability, right = np.array(probability), np.array(right, dtype=float)
    bins = np.minimum((probability * 15).astype(int), 14)
    ece = sum(abs(right[bins == b].sum() - probability[bins == b].sum()) for b in range(15)) / len(right)
    assert results["eval_raw_ece"] == pytest.approx(ece) and written["raw_ece"] == pytest.approx(ece)
    assert results["eval_raw_brier"] == pytest.approx(np.mean((probability - right) ** 2))
    assert results["eval_calibration_right"] == pytest.approx(right.mean())
    assert 0 <= results["eval_calibrated_ece"] < 1 and len(written["bins"]["calibrated"]) == 15
    card = (folder / "README.md").read_text()
    assert "`probability`" in card and f"calibration error {results['eval_calibrated_ece']:.3f}" in card


def test_without_a_calibrator_there_is_no_probability(learned, questions):
    answer = pipeline("question-answering", model=str(learned["span"]), trust_remote_code=True)(
        question=questions["question"][0], context=questions["context"][0])
    assert "probability" not in answer and answer["answer"]


@pytest.mark.parametrize("args, message", [
    (["--validation_file", DEV, "--version_2_with_negative", "--do_train", "--train_file", TRAIN],
     "needs --do_eval and SQuAD v2 data"),
    (["--validation_file", DEV, "--do_eval"], "needs --do_eval and SQuAD v2 data"),
    (["--validation_file", DEV, "--version_2_with_negative", "--do_eval"],
     f"{DEV}: --calibrate needs at least 100 evaluation questions.* it has 19"),
    (["--validation_file", TRAIN, "--version_2_with_negative", "--do_eval", "--max_eval_samples", "60"],
     "it has 60 \\(--max_eval_samples\\)"),
    (["--validation_file", "UNLABELLED", "--version_2_with_negative", "--do_eval"],
     "UNLABELLED: no column 'answers'"),  # the reader's check: evaluation questions carry answers
    (["--validation_file", "ONE_CONTEXT", "--version_2_with_negative", "--do_eval"],
     "ONE_CONTEXT: --calibrate needs .* folds of whole contexts .* it has 150 from 1 context\\(s\\), and the "
     "smallest fold would hold 0"),
])
def test_calibrate_without_enough_labelled_questions_is_refused_before_any_work(tiny_bert_dir, tmp_path, args,
                                                                                 message):
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text("".join(json.dumps({"id": f"q{i}", "question": "Who?", "context": "Ann and Bo."}) + "\n"
                                  for i in range(150)))
    one_context = tmp_path / "one-context.jsonl"
    one_context.write_text("".join(json.dumps({"id": f"q{i}", "question": "Who?", "context": "Ann and Bo.",
                                               "answers": {"text": ["Ann"], "answer_start": [0]}}) + "\n"
                                   for i in range(150)))
    files = {"UNLABELLED": str(unlabelled), "ONE_CONTEXT": str(one_context)}
    args = [files.get(a, str(a)) for a in args]
    for name, path in files.items():
        message = message.replace(name, re.escape(path))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as refused:
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(tiny_bert_dir), "--calibrate", *args, "--new_head",
                                   "--output_dir", str(out), "--report_to", "none"])
    assert re.search(message, str(refused.value)), str(refused.value)
    assert not out.exists() or not any(out.iterdir())
