"""The example scripts: the held-out article split, the results figures, the MiniLM script's runs and the
calibration measured on held-out articles."""

import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from metrics.squad_v2.compute_score import squad_v2_scores
from qa_data import questions_from_file
from tests.conftest import (DEV, HEADS, LEARNED_QUESTIONS, ROOT, SCRIPT_ENV, TRAIN, read_json, run_script, shell_env,
                            side_installation)
from tests.test_multi_span import multi_span_records

sys.path.insert(0, str(ROOT / "examples"))
from plot_results import applied_threshold, best_spans, plot_reliability, threshold_curve  # noqa: E402


def squad(*titles):
    return {"version": "v2.0", "data": [
        {"title": title, "paragraphs": [{"context": f"{title} text.", "qas": [
            {"id": f"{title}-q", "question": "What?", "is_impossible": False,
             "answers": [{"text": title, "answer_start": 0}]}]}]} for title in titles]}


def test_holdout_article_splits_by_title(tmp_path):
    source = tmp_path / "train.json.gz"
    with gzip.open(source, "wt", encoding="utf-8") as f:
        json.dump(squad("A", "B", "C"), f)
    train, holdout = tmp_path / "train.json", tmp_path / "holdout.json"
    subprocess.run([sys.executable, ROOT / "examples" / "holdout_article.py", source, "B", train, holdout], check=True)
    assert [a["title"] for a in json.loads(train.read_text())["data"]] == ["A", "C"]
    assert json.loads(holdout.read_text()) == squad("B")


def test_holdout_article_names_the_titles_when_the_one_asked_for_is_missing(tmp_path):
    source = tmp_path / "train.json"
    source.write_text(json.dumps(squad("A", "B")))
    result = subprocess.run([sys.executable, ROOT / "examples" / "holdout_article.py", source, "Z", tmp_path / "t.json",
                             tmp_path / "h.json"], capture_output=True, text=True)
    assert result.returncode != 0 and "no article titled 'Z' (titles: A, B)" in result.stderr


def test_best_spans_skip_the_empty_answer():
    nbest = {"a": [{"text": ""}, {"text": "Paris"}, {"text": "France"}], "b": [{"text": ""}], "c": [{"text": "x"}]}
    assert best_spans(nbest) == {"a": "Paris", "b": "", "c": "x"}


def test_threshold_curve_agrees_with_the_metric_at_every_threshold():
    rng = np.random.default_rng(0)
    words = ["paris", "france", "the river", "1905", "blue"]
    answers, spans, odds = {}, {}, {}
    for i in range(60):
        qid = f"q{i}"
        answers[qid] = [] if i % 3 == 0 else [str(rng.choice(words))]
        spans[qid] = str(rng.choice(words)) if i % 7 else ""
        odds[qid] = float(rng.normal())
    thresholds, exact, f1 = threshold_curve(spans, odds, answers)
    # the metric, told the no-answer probability is the odds themselves, abstains where odds > threshold
    predictions = {qid: (spans[qid], odds[qid]) for qid in answers}
    for k in (0, 17, 31, len(thresholds) - 1):
        scores = squad_v2_scores(predictions, answers, no_answer_threshold=thresholds[k])
        assert (exact[k], f1[k]) == pytest.approx((scores["exact"], scores["f1"]))
    assert f1.max() == pytest.approx(scores["best_f1"]) and exact.max() == pytest.approx(scores["best_exact"])


def test_plot_renders_both_figures_from_run_folders(tmp_path):
    from qa_data import questions_from_file
    from tests.conftest import SAMPLE

    dev = SAMPLE / "dev-v2.0.json"
    ids = questions_from_file(str(dev)).rows["id"]
    rng = np.random.default_rng(0)
    runs = []
    for name, holdout in (("span", {"eval_best_f1_null_score_diff_threshold": -1.5}), ("crf", None)):
        run = tmp_path / name
        run.mkdir()
        (run / "trainer_state.json").write_text(json.dumps(
            {"log_history": [{"step": s, "loss": 5.0 / s} for s in range(1, 6)] + [{"step": 5, "train_loss": 2.0}]}))
        (run / "eval_span_predictions.json").write_text(json.dumps({qid: "some text" for qid in ids}))
        (run / "eval_null_odds.json").write_text(json.dumps({qid: float(rng.normal()) for qid in ids}))
        if holdout:
            (run / "holdout_results.json").write_text(json.dumps(holdout))
        runs.append(run)
    subprocess.run([sys.executable, ROOT / "examples" / "plot_results.py", "plot", "--dev", dev,
                    "--out", tmp_path / "plots", *runs], check=True, capture_output=True)
    for name in ("training_loss.png", "no_answer_threshold.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def results_status():
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "results"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def test_minilm_cpu_script_recipe_then_recipe_all_at_its_threshold(tiny_bert_dir, tmp_path):
    """examples/minilm_squad_v2_cpu.sh recipe span, then recipe-all span, at toy sizes (the tiny random encoder, the
    sample data, 2 steps) from another folder: each run's files land in RESULTS (never in the repository's
    results/), and each run's predictions are its best spans cut at the threshold the recipe chose on the held-out
    article."""
    data = tmp_path / "data"
    data.mkdir()
    train = json.loads(open(TRAIN, encoding="utf-8").read())
    held_out = train["data"][0]  # Lighthouses: 8 questions, 2 unanswerable
    assert any(qa["is_impossible"] for paragraph in held_out["paragraphs"] for qa in paragraph["qas"])
    held_out["title"] = "The_Legend_of_Zelda:_Twilight_Princess"
    with gzip.open(data / "train-v2.0-subset.json.gz", "wt", encoding="utf-8") as f:
        json.dump(train, f)
    with gzip.open(data / "dev-v2.0.json.gz", "wt", encoding="utf-8") as f:
        f.write(open(DEV, encoding="utf-8").read())
    dev_ids = [qa["id"] for article in json.loads(open(DEV, encoding="utf-8").read())["data"]
               for paragraph in article["paragraphs"] for qa in paragraph["qas"]]

    results = tmp_path / "results"
    env = shell_env(DATA=str(data), OUT=str(tmp_path / "outputs"), RESULTS=str(results), MODEL=tiny_bert_dir,
                    MAX_STEPS="2", MAX_SEQ_LENGTH="128", DOC_STRIDE="32")
    before = results_status()
    recipes = ("recipe", "recipe-all")
    for recipe in recipes:
        result = run_script(["bash", str(ROOT / "examples" / "minilm_squad_v2_cpu.sh"), recipe, "span"],
                            cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stdout[-5000:]
    assert results_status() == before

    runs = {recipe: results / f"minilm-span-{recipe}" for recipe in recipes}
    for run in runs.values():
        assert sorted(path.name for path in run.iterdir()) == sorted(
            ["eval_predictions.json", "eval_null_odds.json", "eval_results.json", "eval_span_predictions.json",
             "train_results.json", "trainer_state.json", "holdout_results.json"])
        assert read_json(run, "trainer_state.json")["global_step"] == 2
        predictions, odds = read_json(run, "eval_predictions.json"), read_json(run, "eval_null_odds.json")
        spans, threshold = read_json(run, "eval_span_predictions.json"), applied_threshold(run)
        assert list(predictions) == dev_ids and set(odds) == set(spans) == set(dev_ids)
        assert predictions == {qid: "" if odds[qid] > threshold else spans[qid] for qid in dev_ids}
        assert read_json(run, "eval_results.json")["eval_total"] == len(dev_ids)
    assert read_json(runs["recipe-all"], "holdout_results.json") == read_json(runs["recipe"], "holdout_results.json")
    # the held-out article's evaluation, not the dev set's
    assert read_json(runs["recipe"], "holdout_results.json")["eval_total"] == 8


def test_minilm_cpu_script_calibrates_on_half_the_dev_articles_and_measures_on_the_other(learned, tmp_path):
    """examples/minilm_squad_v2_cpu.sh calibrate span, the learned MiniLM standing in for the recipe's model and the
    sample training file (233 questions) for the dev set: its articles split in two halves, the model calibrated on
    one at the recipe's threshold (a calibrated model folder) and measured through its pipeline on the other."""
    data, out, results = tmp_path / "data", tmp_path / "outputs", tmp_path / "results"
    data.mkdir()
    with gzip.open(data / "dev-v2.0.json.gz", "wt", encoding="utf-8") as f:
        f.write(open(TRAIN, encoding="utf-8").read())
    shutil.copytree(learned["span"], out / "minilm-span-recipe")
    (results / "minilm-span-recipe").mkdir(parents=True)
    (results / "minilm-span-recipe" / "holdout_results.json").write_text(
        json.dumps({"eval_best_f1_null_score_diff_threshold": 1.5}))
    env = shell_env(DATA=str(data), OUT=str(out), RESULTS=str(results), MAX_SEQ_LENGTH="64", DOC_STRIDE="16")
    result = run_script(["bash", str(ROOT / "examples" / "minilm_squad_v2_cpu.sh"), "calibrate", "span"],
                        cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-5000:]

    halves = [questions_from_file(out / "data" / f"dev-half-{half}.json").rows for half in "ab"]
    assert not set(halves[0]["title"]) & set(halves[1]["title"])
    assert len(halves[0]) + len(halves[1]) == len(questions_from_file(TRAIN).rows)
    settings = read_json(out / "minilm-span-recipe-calibrated", "config.json")["qa_settings"]
    assert settings["null_score_diff_threshold"] == 1.5 and settings["calibrator"]["questions"] == len(halves[0])
    run = results / "minilm-span-recipe"
    assert read_json(run, "eval_calibration.json")["calibration_questions"] == len(halves[0])
    measured = read_json(run, "holdout_calibration.json")
    assert measured["questions"] == len(halves[1]) == sum(b["count"] for b in measured["bins"]["calibrated"])
    assert 0 <= measured["calibrated_ece"] <= 1 and 0 < measured["right"] < 1
    plot_reliability([run / "eval_calibration.json", run / "holdout_calibration.json"], tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 10_000


def test_minilm_multispanqa_script_trains_and_scores_both_heads(tiny_bert_dir, tmp_path):
    """examples/minilm_multispanqa_cpu.sh at toy sizes (the tiny random encoder, this suite's multi-span questions in
    MultiSpanQA's format, 2 steps): each head's metrics and span-list predictions land in RESULTS; CRF_LEARNING_RATE
    reaches the CRF run only; with SQUAD_MODELS each head starts from its SQuAD model."""
    data = tmp_path / "data"
    data.mkdir()
    records = multi_span_records(12)
    for name, part in (("train.json", records[:8]), ("dev.json", records[8:])):
        (data / name).write_text(json.dumps({"version": 1.0, "data": part}), encoding="utf-8")
    results = tmp_path / "results"
    env = shell_env(DATA=str(data), OUT=str(tmp_path / "outputs"), RESULTS=str(results), MODEL=tiny_bert_dir,
                    MAX_STEPS="2", MAX_SEQ_LENGTH="64", DOC_STRIDE="16", CRF_LEARNING_RATE="0.05")
    result = run_script(["bash", str(ROOT / "examples" / "minilm_multispanqa_cpu.sh")], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-5000:]
    for head in ("span", "crf"):
        run = results / f"minilm-multispanqa-{head}"
        predictions = read_json(run, "eval_predictions.json")
        assert sorted(predictions) == sorted(r["id"] for r in records[8:])
        assert all(isinstance(spans, list) for spans in predictions.values())
        if head == "span":  # one span per question, or none
            assert all(len(spans) <= 1 for spans in predictions.values())
        assert {"eval_em_f1", "eval_overlap_f1"} <= set(read_json(run, "eval_results.json"))
        assert read_json(run, "trainer_state.json")["global_step"] == 2
        card = (tmp_path / "outputs" / f"minilm-multispanqa-{head}" / "README.md").read_text()
        assert ("| crf_learning_rate | 0.05 |" in card) == (head == "crf"), card

    # SQuAD first: the CRF run starts from SQUAD_MODELS/minilm-crf-recipe (here the CRF model just trained) and is
    # named for it
    squad_models = tmp_path / "squad-models"
    squad_models.mkdir()
    (squad_models / "minilm-crf-recipe").symlink_to(tmp_path / "outputs" / "minilm-multispanqa-crf")
    result = run_script(["bash", str(ROOT / "examples" / "minilm_multispanqa_cpu.sh"), "crf"], cwd=tmp_path,
                        env={**env, "SQUAD_MODELS": str(squad_models)})
    assert result.returncode == 0, result.stdout[-5000:]
    assert sorted(read_json(results / "minilm-multispanqa-squad-first-crf", "eval_predictions.json")) == sorted(
        r["id"] for r in records[8:])
    card = (tmp_path / "outputs" / "minilm-multispanqa-squad-first-crf" / "README.md").read_text()
    assert "fine-tuned from a local model folder (`minilm-crf-recipe`)" in card, card


def test_haystack_reads_both_folders_and_with_the_pipelines_three_behaviours_gives_its_answers(learned, tmp_path):
    """docs/haystack.md: Haystack's reader (installed beside the venv) loads a span folder as it is and a CRF folder
    with trust_remote_code; given token type ids, the length limit and the folder's no-answer, its answers are the
    span pipeline's."""
    site = side_installation("haystack-ai-3.4.1", ["haystack-ai==3.4.1"],
                             ["--no-deps", "transformers-haystack==2.0.0"], drop=["numpy", "numpy-*", "numpy.libs"])
    figures = {}
    for head in HEADS:
        out = tmp_path / f"{head}.json"
        result = run_script([sys.executable, str(ROOT / "examples" / "haystack_reader.py"), str(learned[head]), TRAIN,
                             "--questions", str(LEARNED_QUESTIONS), "--out", str(out)],
                            env={**SCRIPT_ENV, "PYTHONPATH": str(site)})
        assert result.returncode == 0, result.stdout[-5000:]
        assert "Haystack's reader against the pipeline" in result.stdout
        figures[head] = {row["reader"]: row for row in json.loads(out.read_text())["figures"]}
    span = figures["span"]
    assert span["pipeline"]["f1"] >= 80  # the model answers
    assert span["+ the folder's no-answer score and threshold"]["same answer as the pipeline"] == LEARNED_QUESTIONS
    assert span["haystack (as is)"]["answered \"\""] < span["pipeline"]["answered \"\""]
    assert figures["crf"]["haystack (as is)"]["f1"] >= 50  # the CRF folder's boundary scores, read as a span model's
