"""MiniLM (a real pretrained encoder) fine-tuned for a few dozen steps on the real SQuAD v2 train subset and
evaluated on a slice of the real dev set, for both heads. Skipped where ../shared/data/squad_v2 is absent."""

import collections
import re
import string
import sys

import pytest

from qa_data import questions_from_file
from tests.conftest import ROOT
from tests.test_run_qa import read_json, run_qa

sys.path.insert(0, str(ROOT / "examples"))
from plot_results import applied_threshold  # noqa: E402

DEV_SLICE = 200


def normalized_tokens(text):
    """The official SQuAD normalisation, written independently of metrics/squad_v2 to cross-check it."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def independent_question_scores(prediction, gold_texts):
    """(exact, f1) in [0, 1] of one predicted text against a question's gold answer texts ([] if it has none)."""
    golds = [g for g in gold_texts if normalized_tokens(g)] or [""]
    predicted = normalized_tokens(prediction)
    exact = float(max(predicted == normalized_tokens(g) for g in golds))
    f1 = 0.0
    for gold in map(normalized_tokens, golds):
        if not gold or not predicted:
            f1 = max(f1, float(gold == predicted))
            continue
        common = sum((collections.Counter(gold) & collections.Counter(predicted)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return exact, f1


def independent_scores(predictions, questions):
    """(exact, f1) in percent of `predictions` {id: text} against the questions' gold answers."""
    scores = [independent_question_scores(predictions[qid], answers["text"])
              for qid, answers in zip(questions["id"], questions["answers"])]
    return tuple(100 * sum(column) / len(scores) for column in zip(*scores))


def independent_best_f1(spans, null_odds, questions):
    """The official script's best F1 over no-answer thresholds: from abstaining everywhere, questions are answered
    in increasing null odds; an answerable one gains its F1, an unanswerable one loses its point for any non-empty
    text, even one that normalises to nothing (such as "a"), which its plain F1 counts as right."""
    score = best = sum(not answers["text"] for answers in questions["answers"])
    for qid, answers in sorted(zip(questions["id"], questions["answers"]), key=lambda pair: null_odds[pair[0]]):
        if answers["text"]:
            score += independent_question_scores(spans[qid], answers["text"])[1]
        else:
            score -= float(bool(spans[qid]))
        best = max(best, score)
    return 100 * best / len(questions["id"])


@pytest.fixture(scope="module")
def dev_slice(squad_dir):
    return questions_from_file(squad_dir / "dev-v2.0.json.gz").select(range(DEV_SLICE))


@pytest.mark.parametrize("script", ["run_qa.py", "run_qa_crf.py"])
def test_minilm_on_real_squad_v2(script, squad_dir, minilm_dir, dev_slice, tmp_path):
    run_qa("--model_name_or_path", minilm_dir, "--train_file", squad_dir / "train-v2.0-subset.json.gz",
           "--validation_file", squad_dir / "dev-v2.0.json.gz", "--version_2_with_negative",
           "--max_train_samples", 400, "--max_eval_samples", DEV_SLICE, "--do_train", "--do_eval",
           "--max_steps", 24, "--max_seq_length", 256, "--doc_stride", 96, "--per_device_train_batch_size", 8, "--per_device_eval_batch_size", 32,
           "--learning_rate", 1e-4, "--logging_steps", 4, "--output_dir", tmp_path, "--report_to", "none",
           "--seed", 42, script=script)
    predictions = read_json(tmp_path, "eval_predictions.json")
    nbest = read_json(tmp_path, "eval_nbest_predictions.json")
    odds = read_json(tmp_path, "eval_null_odds.json")
    assert list(predictions) == dev_slice["id"] and set(nbest) == set(odds) == set(predictions)
    for qid, context in zip(dev_slice["id"], dev_slice["context"]):
        assert predictions[qid] == "" or predictions[qid] in context
        assert all(a["text"] == context[a["start"]:a["end"]] for a in nbest[qid])

    results = read_json(tmp_path, "eval_results.json")
    exact, f1 = independent_scores(predictions, dev_slice)
    assert results["eval_exact"] == pytest.approx(exact) and results["eval_f1"] == pytest.approx(f1)
    assert results["eval_total"] == DEV_SLICE

    losses = [log["loss"] for log in read_json(tmp_path, "trainer_state.json")["log_history"] if "loss" in log]
    assert losses[-1] < losses[0]


RUNS = sorted(path for path in (ROOT / "results").iterdir() if (path / "eval_results.json").exists())


@pytest.fixture(scope="module")
def full_dev(squad_dir):
    return questions_from_file(squad_dir / "dev-v2.0.json.gz")


@pytest.mark.parametrize("run", RUNS, ids=[run.name for run in RUNS])
def test_committed_results_rescore_to_their_figures(run, full_dev):
    """results/<run>/: the predictions score (independently) as eval_results.json says, and the best non-empty
    answers with the null odds give the same exact/f1 at the applied threshold and the same best_f1."""
    results = read_json(run, "eval_results.json")
    predictions = read_json(run, "eval_predictions.json")
    assert list(predictions) == full_dev["id"]
    exact, f1 = independent_scores(predictions, full_dev)
    assert (results["eval_exact"], results["eval_f1"]) == pytest.approx((exact, f1))

    spans, odds = read_json(run, "eval_span_predictions.json"), read_json(run, "eval_null_odds.json")
    threshold = applied_threshold(run)
    assert predictions == {qid: "" if odds[qid] > threshold else spans[qid] for qid in predictions}
    assert independent_best_f1(spans, odds, full_dev) == pytest.approx(results["eval_best_f1"])
