"""MiniLM (a real pretrained encoder) fine-tuned for a few dozen steps on the real SQuAD v2 train subset and
evaluated on a slice of the real dev set, for both heads; the committed results re-scored independently. Skipped
where ../shared/data/squad_v2 (or ../shared/data/multispanqa) is absent."""

import json
import sys

import pytest

from qa_data import questions_from_file
from reader_data import collections_from_squad, read_squad
from tests.conftest import HEADS, ROOT, SHARED_MULTISPANQA, read_json, train_heads
from tests.independent_scorer import (independent_best_f1, independent_multispan_scores, independent_question_scores,
                                      independent_scores)

sys.path.insert(0, str(ROOT / "examples"))
from plot_results import applied_threshold  # noqa: E402

DEV_SLICE = 60


@pytest.fixture(scope="module")
def dev_slice(squad_dir):
    return questions_from_file(squad_dir / "dev-v2.0.json.gz").rows.select(range(DEV_SLICE))


@pytest.fixture(scope="module")
def real_runs(squad_dir, minilm_dir, tmp_path_factory):
    """{head: output folder} of MiniLM trained for 8 steps on 400 real training questions and evaluated on the dev
    slice, both heads in one process (128-token windows: what is tested here does not need longer ones)."""
    folders = {head: tmp_path_factory.mktemp(f"real-{head}") for head in HEADS}
    train_heads({head: ["--model_name_or_path", minilm_dir, "--train_file", squad_dir / "train-v2.0-subset.json.gz",
                        "--validation_file", squad_dir / "dev-v2.0.json.gz", "--version_2_with_negative",
                        "--max_train_samples", 400, "--max_eval_samples", DEV_SLICE, "--do_train", "--do_eval",
                        "--max_steps", 8, "--max_seq_length", 128, "--doc_stride", 48,
                        "--per_device_train_batch_size", 8, "--per_device_eval_batch_size", 32, "--learning_rate",
                        1e-4, "--logging_steps", 2, "--output_dir", folders[head], "--report_to", "none", "--seed", 42]
                 for head in HEADS})
    return folders


@pytest.mark.parametrize("head", HEADS)
def test_minilm_on_real_squad_v2(real_runs, head, dev_slice):
    folder = real_runs[head]
    predictions = read_json(folder, "eval_predictions.json")
    nbest = read_json(folder, "eval_nbest_predictions.json")
    odds = read_json(folder, "eval_null_odds.json")
    assert list(predictions) == dev_slice["id"] and set(nbest) == set(odds) == set(predictions)
    for qid, context in zip(dev_slice["id"], dev_slice["context"]):
        assert predictions[qid] == "" or predictions[qid] in context
        assert all(a["text"] == context[a["start"]:a["end"]] for a in nbest[qid])

    results = read_json(folder, "eval_results.json")
    exact, f1 = independent_scores(predictions, dev_slice)
    assert results["eval_exact"] == pytest.approx(exact) and results["eval_f1"] == pytest.approx(f1)
    assert results["eval_total"] == DEV_SLICE

    losses = [log["loss"] for log in read_json(folder, "trainer_state.json")["log_history"] if "loss" in log]
    assert losses[-1] < losses[0]


RUNS = sorted(path for path in (ROOT / "results").iterdir() if (path / "eval_span_predictions.json").exists())


@pytest.fixture(scope="module")
def full_dev(squad_dir):
    return questions_from_file(squad_dir / "dev-v2.0.json.gz").rows


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


CALIBRATED = sorted(path for path in (ROOT / "results").iterdir() if (path / "holdout_calibration.json").exists())


@pytest.mark.parametrize("run", CALIBRATED, ids=[run.name for run in CALIBRATED])
def test_committed_calibration_rescores_to_its_figures(run, full_dev):
    """results/<run>/holdout_calibration.json: the held-out half's answers, re-scored independently, give its
    expected calibration errors (15 equal bins: sum |right - probability| over a bin, over the questions) and Brier
    scores, of the calibrated probability and of the raw score (at most 1)."""
    measured = read_json(run, "holdout_calibration.json")
    gold = {qid: answers["text"] for qid, answers in zip(full_dev["id"], full_dev["answers"])}
    answers = measured["answers"]
    assert len(answers) == measured["questions"] and set(answers) <= set(gold)
    right = [independent_question_scores(a["answer"], gold[qid])[0] for qid, a in answers.items()]
    assert measured["right"] == pytest.approx(sum(right) / len(right))
    for kind, field in (("calibrated", "probability"), ("raw", "score")):
        probability = [min(a[field], 1.0) for a in answers.values()]
        bins = [min(int(p * 15), 14) for p in probability]
        ece = sum(abs(sum(r - p for r, p, b in zip(right, probability, bins) if b == k)) for k in range(15))
        assert measured[f"{kind}_ece"] == pytest.approx(ece / len(right))
        brier = sum((p - r) ** 2 for p, r in zip(probability, right)) / len(right)
        assert measured[f"{kind}_brier"] == pytest.approx(brier)


MULTISPAN_RUNS = sorted(path for path in (ROOT / "results").iterdir() if path.name.startswith("minilm-multispanqa"))


@pytest.fixture(scope="module")
def multispanqa_dev_golds():
    """{id: gold span texts} of MultiSpanQA's dev.json, read from its B/I/O labels here (not by qa_data), as its
    official evaluation reads them: the words of each B I* run joined by single spaces."""
    path = SHARED_MULTISPANQA / "dev.json"
    if not path.exists():
        pytest.skip(f"MultiSpanQA data not found at {SHARED_MULTISPANQA} (the ../shared folder of the project)")
    golds = {}
    for record in json.loads(path.read_text(encoding="utf-8"))["data"]:
        runs = []
        for word, tag in zip(record["context"], record["label"]):
            if tag == "B":
                runs.append([word])
            elif tag == "I":
                runs[-1].append(word)
        golds[record["id"]] = [" ".join(run) for run in runs]
    return golds


@pytest.mark.parametrize("run", MULTISPAN_RUNS, ids=[run.name for run in MULTISPAN_RUNS])
def test_committed_multispanqa_results_rescore_to_their_figures(run, multispanqa_dev_golds):
    """results/minilm-multispanqa-<head>/: the span lists score, by a restatement of MultiSpanQA's official metric,
    as eval_results.json and the results README say."""
    results = read_json(run, "eval_results.json")
    predictions = read_json(run, "eval_predictions.json")
    assert set(predictions) == set(multispanqa_dev_golds)
    official = independent_multispan_scores(predictions, multispanqa_dev_golds)
    for kind in ("em", "overlap"):
        assert (results[f"eval_{kind}_precision"], results[f"eval_{kind}_recall"],
                results[f"eval_{kind}_f1"]) == pytest.approx(official[kind])
    readme = (ROOT / "results" / "README.md").read_text(encoding="utf-8")
    assert f"{results['eval_em_f1']:.2f} | {results['eval_overlap_f1']:.2f}" in readme


READER_RUNS = sorted(path for path in (ROOT / "results").iterdir() if (path / "reader_predictions.json").exists())


@pytest.mark.parametrize("run", READER_RUNS, ids=[run.name for run in READER_RUNS])
def test_committed_reader_results_rescore_to_their_figures(run, squad_dir):
    """results/<run>/ of bench/bench_reader.py: each rule's answers to the benchmark's questions over passages
    (rebuilt here from the dev set) score, independently, the exact / F1 / best_f1 of its figures."""
    figures = read_json(run, "figures.json")
    questions = figures["benchmark"]
    records = collections_from_squad(read_squad(squad_dir / "dev-v2.0.json.gz"), questions["passages"])
    records = [r for r in records[: questions["max_questions"]] if questions["articles"] == "all" or r["article"] % 2]
    golds = {"id": [r["id"] for r in records], "answers": [r["answers"] for r in records]}
    for rule in figures["rules"]:
        predictions = read_json(run, rule["predictions"])
        assert list(predictions) == golds["id"]
        exact, f1 = independent_scores({qid: p["answer"] for qid, p in predictions.items()}, golds)
        assert (float(rule["exact"]), float(rule["f1"])) == pytest.approx((exact, f1), abs=0.005)
        if rule["best_f1"] != "-":
            best = independent_best_f1({qid: p["best_span"] for qid, p in predictions.items()},
                                       {qid: p["no_answer_score"] for qid, p in predictions.items()}, golds)
            assert float(rule["best_f1"]) == pytest.approx(best, abs=0.005)
