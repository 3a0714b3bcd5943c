"""run_qa.py end to end (and run_qa_crf.py where the sequence is shared): a tiny random encoder for output files,
refusals and resume; MiniLM fine-tuned until it answers (the `learned` fixture) wherever predictions are compared."""

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer, pipeline

import qa_runner
from model_folder import PIPELINE_ENTRY, PIPELINE_FILES, qa_windows
from qa_arguments import TRAINING_DEFAULTS, parse_args
from qa_data import questions_from_file
from run_qa import SPAN_HEAD
from run_qa_crf import CRF_HEAD
from tests.conftest import (DEV, HEADS, LEARNED_PADDING, LEARNED_QUESTIONS, LEARNED_WINDOWS, ROOT, SCRIPT_ENV,
                            SCRIPTS, TRAIN, read_json, run_qa, run_script)
from tests.independent_scorer import independent_best_f1, independent_scores


def tiny_args(model, output_dir, *extra):
    return ["--model_name_or_path", model, "--train_file", TRAIN, "--validation_file", DEV,
            "--version_2_with_negative", "--output_dir", output_dir, "--per_device_train_batch_size", 8,
            "--per_device_eval_batch_size", 8, "--report_to", "none", "--seed", 42, "--learning_rate", 1e-3, *extra]


@pytest.fixture(scope="module")
def licensed_tiny_bert(tiny_bert_dir):
    """The tiny encoder with a model card naming a license, as SpanBERT's (CC BY-NC 4.0) does."""
    with open(os.path.join(tiny_bert_dir, "README.md"), "w") as f:
        f.write("---\nlicense: cc-by-nc-4.0\n---\n# tiny\n")
    return tiny_bert_dir


@pytest.fixture(scope="module")
def trained_span(licensed_tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("span")
    run_qa(*tiny_args(licensed_tiny_bert, out, "--do_train", "--do_eval", "--do_predict", "--test_file", DEV,
                      "--max_steps", 6, "--save_steps", 3))
    return out


def test_every_output_file_and_a_prediction_for_every_question(trained_span):
    dev = questions_from_file(DEV).rows
    for prefix in ("eval", "predict"):
        predictions = read_json(trained_span, f"{prefix}_predictions.json")
        nbest = read_json(trained_span, f"{prefix}_nbest_predictions.json")
        odds = read_json(trained_span, f"{prefix}_null_odds.json")
        assert set(predictions) == set(nbest) == set(odds) == set(dev["id"])
        for qid, context in zip(dev["id"], dev["context"]):
            assert all(a["text"] == context[a["start"]:a["end"]] for a in nbest[qid] if a["text"])
            assert predictions[qid] == "" or predictions[qid] in context
    results = read_json(trained_span, "all_results.json")
    for key in ("train_loss", "eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_exact", "eval_best_f1",
                "eval_best_f1_thresh", "predict_exact", "eval_questions"):
        assert key in results
    assert results["eval_questions"] == len(dev)


@pytest.mark.parametrize("head", HEADS)
def test_fine_tuning_answers_the_questions_it_learned(learned, head):
    """MiniLM fine-tuned on a couple of dozen questions, answerable and not, answers them (span 100 and CRF 91.7
    exact when measured)."""
    results = read_json(learned[head], "eval_results.json")
    assert results["eval_total"] == LEARNED_QUESTIONS
    assert results["eval_exact"] >= {"span": 95, "crf": 80}[head]
    assert results["eval_HasAns_exact"] >= 75 and results["eval_NoAns_exact"] >= 75


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("prefix", ["eval", "predict"])
def test_metrics_equal_an_independent_scorer_and_the_best_threshold_reproduces_best_f1(learned, learned_questions,
                                                                                       head, prefix):
    """On the learned questions ("eval") and the held-out ones ("predict"): exact/f1 re-scored from the written
    predictions; best_f1 re-searched from each question's best non-empty answer and its null odds; and the reported
    best threshold, applied as evaluation applies thresholds, scores best_f1 itself."""
    folder = learned[head]
    questions = learned_questions if prefix == "eval" else questions_from_file(DEV).rows
    results = read_json(folder, f"{prefix}_results.json")
    predictions = read_json(folder, f"{prefix}_predictions.json")
    odds = read_json(folder, f"{prefix}_null_odds.json")
    spans = {qid: next((a["text"] for a in answers if a["text"]), "")
             for qid, answers in read_json(folder, f"{prefix}_nbest_predictions.json").items()}
    assert results[f"{prefix}_HasAns_f1"] > 0 and any(predictions.values())
    exact, f1 = independent_scores(predictions, questions)
    assert (results[f"{prefix}_exact"], results[f"{prefix}_f1"]) == pytest.approx((exact, f1))
    assert independent_best_f1(spans, odds, questions) == pytest.approx(results[f"{prefix}_best_f1"])
    threshold = results[f"{prefix}_best_f1_thresh"]
    at_threshold = {qid: "" if odds[qid] > threshold else spans[qid] for qid in spans}
    assert independent_scores(at_threshold, questions)[1] == pytest.approx(results[f"{prefix}_best_f1"])


def test_model_folder_is_hub_format_with_pipeline_and_card(trained_span):
    files = set(os.listdir(trained_span))
    assert {"model.safetensors", "config.json", "tokenizer.json", "qa_pipeline.py", "qa_settings.py", "qa_windows.py",
            "qa_decoding.py", "span_decoding.py", "calibration.py", "handler.py", "README.md"} <= files
    assert "modeling_crf.py" not in files and "__init__.py" not in files  # a span folder carries the pipeline only
    assert not any(name.endswith(".bin") and name != "training_args.bin" for name in files)
    config = read_json(trained_span, "config.json")
    assert config["custom_pipelines"]["question-answering"]["impl"] == "qa_pipeline.QuestionAnsweringPipeline"
    assert config["qa_settings"]["max_seq_length"] == 384
    # No threshold given: the pipeline gets the one evaluation found best.
    tuned = read_json(trained_span, "eval_results.json")["eval_best_f1_null_score_diff_threshold"]
    assert config["qa_settings"]["null_score_diff_threshold"] == tuned != 0.0
    card = (trained_span / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "learning_rate | 0.001" in card and "train-v2.0.json" in card
    assert "name: f1" in card and "| exact |" in card


def test_a_json_config_file_is_the_sole_argument_and_a_given_threshold_is_kept(licensed_tiny_bert, tmp_path):
    """The threshold given is the one evaluation applies and the one training saves for the pipeline (not the
    F1-best one, as without it)."""
    config = {"model_name_or_path": licensed_tiny_bert, "train_file": TRAIN, "validation_file": DEV,
              "version_2_with_negative": True, "do_train": True, "do_eval": True, "output_dir": str(tmp_path),
              "max_steps": 1, "max_train_samples": 7, "max_eval_samples": 5, "report_to": "none",
              "null_score_diff_threshold": 1.5}
    (tmp_path / "config.json.in").write_text(json.dumps(config))
    os.rename(tmp_path / "config.json.in", tmp_path / "args.json")
    run_qa(tmp_path / "args.json")
    assert read_json(tmp_path, "train_results.json")["train_questions"] == 7
    predictions, odds = read_json(tmp_path, "eval_predictions.json"), read_json(tmp_path, "eval_null_odds.json")
    assert len(predictions) == 5
    assert {qid for qid, text in predictions.items() if text == ""} == {qid for qid in odds if odds[qid] > 1.5}
    assert read_json(tmp_path, "config.json")["qa_settings"]["null_score_diff_threshold"] == 1.5


# Each package default that differs from TrainingArguments': its value where nothing is given, and a user's value in
# every spelling the parser accepts, and in a JSON config.
USER_VALUES = {
    "train_sampling_strategy": ("random", [["--train_sampling_strategy", "random"], ["--train-sampling-strategy", "random"],
                                           ["--train_sampling_strategy=random"], ["--train-sampling-strategy=random"]]),
    "dataloader_pin_memory": (True, [["--dataloader_pin_memory", "true"], ["--dataloader-pin-memory", "true"],
                                     ["--dataloader_pin_memory"], ["--dataloader-pin-memory=True"]]),
}


@pytest.mark.parametrize("name", sorted(TRAINING_DEFAULTS))
def test_a_package_default_applies_only_where_the_user_gave_nothing(tmp_path, name):
    common = {"model_name_or_path": "m", "train_file": TRAIN, "output_dir": str(tmp_path)}
    argv = [f"--{key}={value}" for key, value in common.items()]
    assert getattr(parse_args(argv)[2], name) == TRAINING_DEFAULTS[name]
    value, spellings = USER_VALUES[name]
    assert value != TRAINING_DEFAULTS[name]
    for spelling in spellings:
        assert getattr(parse_args(argv + spelling)[2], name) == value, spelling
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**common, name: value}))
    assert getattr(parse_args([str(config)])[2], name) == value
    config.write_text(json.dumps(common))
    assert getattr(parse_args([str(config)])[2], name) == TRAINING_DEFAULTS[name]


def test_squad_v2_data_without_the_flag_is_refused_with_a_clear_message(licensed_tiny_bert, tmp_path):
    args = [a for a in tiny_args(licensed_tiny_bert, tmp_path, "--do_train", "--do_eval")
            if a != "--version_2_with_negative"]
    result = run_script([sys.executable, str(ROOT / "run_qa.py"), *map(str, args)])
    assert result.returncode != 0
    assert "version_2_with_negative" in result.stdout and "train-v2.0.json: 50 question(s) have no answer" in result.stdout
    assert "Traceback" not in result.stdout


def test_a_malformed_file_ends_the_run_with_its_name_and_position(licensed_tiny_bert, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [}')
    args = tiny_args(licensed_tiny_bert, tmp_path / "out", "--do_train", "--do_eval")
    args[args.index(DEV)] = str(bad)
    result = run_script([sys.executable, str(ROOT / "run_qa.py"), *map(str, args)])
    assert result.returncode != 0 and "bad.json: malformed JSON at line 1" in result.stdout
    assert "Traceback" not in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--unanswerable_cuts", 0.3], "they need --version_2_with_negative"),
    (["--version_2_with_negative", "--unanswerable_cuts", 0.7, "--unanswerable_pairs", 0.5], "together at most 1"),
    (["--version_2_with_negative", "--unanswerable_edits", -0.1], "each at least 0"),
    (["--version_2_with_negative", "--doc_stride", 200], "--doc_stride: must be less than half of max_seq_length 384"),
    (["--pad_to_multiple_of", 0], "--pad_to_multiple_of 0 must be a positive number of tokens"),
])
def test_inconsistent_arguments_end_the_run_with_a_message(licensed_tiny_bert, tmp_path, args, message):
    """In process (the refusal comes before any model or data is read); the subprocess tests above show that such a
    SystemExit reaches the user as its message alone."""
    argv = ["--model_name_or_path", licensed_tiny_bert, "--train_file", TRAIN, "--do_train", "--output_dir",
            str(tmp_path), *map(str, args)]
    with pytest.raises(SystemExit) as refusal:
        qa_runner.main(SPAN_HEAD, argv)
    assert message in str(refusal.value)


@pytest.mark.parametrize("args,message", [
    (["--crf_learning_rate", 0.05], "--crf_learning_rate: run_qa_crf.py's flags; a span model has no CRF"),
    (["--emission_relu", "true"], "--emission_relu: run_qa_crf.py's flags"),
])
def test_the_crfs_flags_are_refused_for_a_span_model(licensed_tiny_bert, tmp_path, args, message):
    argv = ["--model_name_or_path", licensed_tiny_bert, "--train_file", TRAIN, "--do_train", "--output_dir",
            str(tmp_path / "out"), *map(str, args)]
    with pytest.raises(SystemExit) as refusal:
        qa_runner.main(SPAN_HEAD, argv)
    assert message in str(refusal.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_run_sets_the_level_of_every_project_logger_and_of_no_other_name():
    modules = [path for pattern in ("*.py", "model_folder/*.py", "metrics/*/*.py") for path in ROOT.glob(pattern)]
    logging = {".".join(path.relative_to(ROOT).with_suffix("").parts) for path in modules
               if "getLogger(__name__)" in path.read_text()}
    assert set(qa_runner.PROJECT_LOGGERS) == logging


HEAD_OF = {"span": SPAN_HEAD, "crf": CRF_HEAD}


def recorded_batches(monkeypatch):
    """A list that every WindowCollator batch from now on adds (training batch?, width, its longest window) to."""
    batches = []
    pad = qa_windows.WindowCollator.__call__

    def recording_pad(collator, features):
        batch = pad(collator, features)
        batches.append(("start_positions" in batch or "labels" in batch, batch["input_ids"].shape[1],
                        int(batch["attention_mask"].sum(dim=1).max())))
        return batch

    monkeypatch.setattr(qa_windows.WindowCollator, "__call__", recording_pad)
    return batches


def test_training_batches_are_padded_to_a_multiple_of_32_and_evaluation_batches_to_their_longest(
        licensed_tiny_bert, tmp_path, monkeypatch):
    batches = recorded_batches(monkeypatch)
    qa_runner.main(SPAN_HEAD, list(map(str, tiny_args(licensed_tiny_bert, tmp_path, "--do_train", "--do_eval",
                                                      "--max_steps", 3, "--max_eval_samples", 24))))
    training = [(width, longest) for is_training, width, longest in batches if is_training]
    evaluation = [(width, longest) for is_training, width, longest in batches if not is_training]
    assert len(training) >= 3 and all(width % 32 == 0 and width - 32 < longest <= width for width, longest in training)
    assert len(evaluation) >= 3 and all(width == longest for width, longest in evaluation)
    assert any(width % 32 for width, _ in evaluation)


@pytest.mark.parametrize("head", HEADS)
def test_pad_to_multiple_of_pads_every_batch_and_changes_no_answer(learned, tmp_path, monkeypatch, head):
    batches = recorded_batches(monkeypatch)
    qa_runner.main(HEAD_OF[head], [
        "--model_name_or_path", str(learned[head]), "--validation_file", TRAIN, "--version_2_with_negative",
        "--max_eval_samples", str(LEARNED_QUESTIONS), *map(str, LEARNED_WINDOWS), "--do_eval",
        "--pad_to_multiple_of", "100", "--output_dir", str(tmp_path), "--per_device_eval_batch_size", "8",
        "--report_to", "none"])
    assert batches and {width for _, width, _ in batches} == {100}  # the learned model's windows: at most 64 tokens
    padded, unpadded = (read_json(folder, "eval_nbest_predictions.json") for folder in (tmp_path, learned[head]))
    assert padded.keys() == unpadded.keys()
    for qid, answers in unpadded.items():
        assert [a["text"] for a in padded[qid]] == [a["text"] for a in answers]
        assert [a["score"] for a in padded[qid]] == pytest.approx([a["score"] for a in answers], abs=1e-3)
    assert sum(bool(read_json(learned[head], "eval_predictions.json")[qid]) for qid in unpadded) >= 12


def test_evaluation_and_test_data_of_unanswerable_questions_only_are_scored(learned, tmp_path):
    unanswerable = questions_from_file(TRAIN).rows.filter(lambda q: not q["answers"]["text"]).select(range(12))
    path = tmp_path / "unanswerable.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in unanswerable))
    out = tmp_path / "out"
    qa_runner.main(SPAN_HEAD, [
        "--model_name_or_path", str(learned["span"]), "--validation_file", str(path), "--test_file", str(path),
        "--version_2_with_negative", *map(str, LEARNED_WINDOWS), "--do_eval", "--do_predict", "--output_dir", str(out),
        "--report_to", "none"])
    results = read_json(out, "all_results.json")
    for prefix in ("eval", "predict"):
        empty = sum(text == "" for text in read_json(out, f"{prefix}_predictions.json").values())
        assert 0 < empty  # the learned model says "no answer" to questions it was trained on as unanswerable
        assert results[f"{prefix}_exact"] == results[f"{prefix}_NoAns_exact"] == pytest.approx(100 * empty / 12)
        assert f"{prefix}_f1" in results and f"{prefix}_best_f1" in results


def test_a_failed_write_ends_the_run_with_the_files_name_and_leaves_earlier_outputs_complete(trained_span, tmp_path,
                                                                                              monkeypatch):
    import errno

    replace = os.replace

    def disk_full_for_the_nbest_file(source, target):
        if str(target).endswith("eval_nbest_predictions.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return replace(source, target)

    monkeypatch.setattr(os, "replace", disk_full_for_the_nbest_file)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as ended:
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(trained_span / "checkpoint-6"), "--validation_file", DEV,
                                   "--version_2_with_negative", "--do_eval", "--output_dir", str(out),
                                   "--report_to", "none"])
    assert f"Cannot write {out / 'eval_nbest_predictions.json'}: No space left on device" in str(ended.value)
    assert sorted(os.listdir(out)) == ["eval_predictions.json"]  # written before it, complete; no temporary file
    assert len(read_json(out, "eval_predictions.json")) == 19


TORCHRUN = ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
ACCELERATE = ["-m", "accelerate.commands.launch", "--num_processes", "1"]
ACCELERATE_TWO = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]


def learned_config(model, output_dir, **settings):
    """A JSON config (as a dict) that trains on and evaluates the learned models' questions with their windows."""
    return {"model_name_or_path": str(model), "train_file": TRAIN, "validation_file": TRAIN,
            "version_2_with_negative": True, "max_train_samples": LEARNED_QUESTIONS,
            "max_eval_samples": LEARNED_QUESTIONS, "max_seq_length": LEARNED_WINDOWS[1],
            "doc_stride": LEARNED_WINDOWS[3], "pad_to_multiple_of": LEARNED_PADDING[1], "output_dir": str(output_dir),
            "report_to": "none", "seed": 42, "use_cpu": True, **settings}


@pytest.mark.parametrize("head,launcher,metric", [("span", ACCELERATE, "exact"), ("crf", ACCELERATE_TWO, "f1")],
                         ids=["span-accelerate-one-process", "crf-accelerate-two-processes"])
def test_load_best_model_at_end_keeps_the_best_checkpoint(learned, tmp_path, head, launcher, metric):
    """Training on from a learned model at a learning rate that moves it around: the evaluations at steps 2, 4
    and 6 differ and the best is not the last (measured: span exact 91.7, 95.8, 95.8; CRF f1 66.7, 79.2, 75.0
    over two processes). A JSON config file is the sole argument under `accelerate launch`."""
    processes = int(launcher[-1])
    config = learned_config(learned[head], tmp_path, do_train=True, do_eval=True, max_steps=6, learning_rate=3e-4,
                            per_device_train_batch_size=8 // processes, per_device_eval_batch_size=4,
                            eval_strategy="steps", eval_steps=2, save_steps=2, load_best_model_at_end=True,
                            metric_for_best_model=metric)
    (tmp_path / "args.json").write_text(json.dumps(config))
    result = run_qa(tmp_path / "args.json", script=SCRIPTS[head], launcher=[sys.executable, *launcher])
    assert f"Process rank {processes - 1} of world size {processes}" in result.stdout
    state = read_json(tmp_path, "trainer_state.json")
    steps, values = zip(*[(log["step"], log[f"eval_{metric}"]) for log in state["log_history"] if f"eval_{metric}" in log])
    assert steps == (2, 4, 6) and len(set(values)) > 1
    best = steps[values.index(max(values))]
    assert best != 6, "the last checkpoint is the best: keeping the last would pass too"
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best}") and state["best_metric"] == max(values)
    assert read_json(tmp_path, "eval_results.json")[f"eval_{metric}"] == max(values)
    final = load_file(tmp_path / "model.safetensors")
    assert_same_weights(final, load_file(tmp_path / f"checkpoint-{best}" / "model.safetensors"))
    last = load_file(tmp_path / "checkpoint-6" / "model.safetensors")
    assert any(not torch.equal(final[name], last[name]) for name in last)


@pytest.mark.parametrize("head,launcher", [("span", TORCHRUN), ("crf", ACCELERATE_TWO)],
                         ids=["span-torchrun", "crf-accelerate"])
def test_two_cpu_processes_evaluate_as_one(learned, tmp_path, head, launcher):
    """The learned model evaluated by two processes in batches of 4 (its 51 windows do not divide by 8) answers as
    its one-process evaluation after training did."""
    one = learned[head]
    result = run_qa("--model_name_or_path", one, "--validation_file", TRAIN, "--version_2_with_negative", "--do_eval",
                    "--max_eval_samples", LEARNED_QUESTIONS, *LEARNED_WINDOWS, "--per_device_eval_batch_size", 4,
                    "--null_score_diff_threshold", 0.0, "--report_to", "none", "--use_cpu", "--output_dir", tmp_path,
                    script=SCRIPTS[head], launcher=[sys.executable, *launcher])
    assert "Process rank 0 of world size 2" in result.stdout and "Process rank 1 of world size 2" in result.stdout
    predictions = read_json(tmp_path, "eval_predictions.json")
    assert predictions == read_json(one, "eval_predictions.json")
    assert sum(text != "" for text in predictions.values()) >= LEARNED_QUESTIONS // 2
    assert read_json(tmp_path, "eval_null_odds.json") == pytest.approx(read_json(one, "eval_null_odds.json"), abs=1e-3)
    two_results, one_results = read_json(tmp_path, "eval_results.json"), read_json(one, "eval_results.json")
    for key in ("eval_exact", "eval_f1", "eval_best_f1", "eval_questions"):
        assert two_results[key] == one_results[key], key


# Long enough (two epochs of the sample data) that the run is still training when it is stopped.
RESUMABLE = ("--do_train", "--do_eval", "--max_steps", 60, "--save_steps", 10, "--logging_steps", 5)


@pytest.fixture(scope="module")
def uninterrupted(licensed_tiny_bert, tmp_path_factory):
    """{script: output_dir} of runs with RESUMABLE's arguments that nothing interrupts (made once per script)."""
    runs = {}

    def run(script):
        if script not in runs:
            runs[script] = tmp_path_factory.mktemp(script.removesuffix(".py"))
            run_qa(*tiny_args(licensed_tiny_bert, runs[script], *RESUMABLE), script=script)
        return runs[script]

    return run


def stopped_after_checkpoint(command, output_dir, step, sig):
    """Return code of `command`, sent `sig` as soon as its checkpoint-`step` is complete (trainer state saved)."""
    process = subprocess.Popen(command, cwd=ROOT, env=SCRIPT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = output_dir / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not saved.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(sig)
    return process.wait()


def assert_same_weights(weights, expected):
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)


def assert_same_run(folder, reference):
    """Same weights, bit for bit, same metrics and same predictions."""
    assert_same_weights(load_file(folder / "model.safetensors"), load_file(reference / "model.safetensors"))
    results, expected_results = read_json(folder, "eval_results.json"), read_json(reference, "eval_results.json")
    for key in ("eval_exact", "eval_f1", "eval_best_f1", "eval_best_f1_thresh", "eval_HasAns_f1", "eval_NoAns_exact"):
        assert results[key] == expected_results[key], key
    assert read_json(folder, "eval_predictions.json") == read_json(reference, "eval_predictions.json")
    assert read_json(folder, "eval_null_odds.json") == read_json(reference, "eval_null_odds.json")


def printed_losses(stdout):
    """The training losses a run printed, in order (the Trainer prints each log as a dict, floats as '%.4g')."""
    return [ast.literal_eval(line)["loss"] for line in stdout.splitlines() if line.startswith("{'loss'")]


def losses_logged_after(folder, step):
    """The losses in `folder`'s log history logged after `step`, as the Trainer prints them."""
    history = read_json(folder, "trainer_state.json")["log_history"]
    return [f"{log['loss']:.4g}" for log in history if "loss" in log and log["step"] > step]


# Each script, signal and way to restart once (the suite's time: each case is two processes, and the uninterrupted
# run a third)
@pytest.mark.parametrize("script,sig,restart", [
    ("run_qa.py", signal.SIGTERM, "rerun"),
    ("run_qa_crf.py", signal.SIGKILL, "resume_from_checkpoint"),
])
def test_a_stopped_run_restarted_ends_as_an_uninterrupted_one(licensed_tiny_bert, uninterrupted, tmp_path, script,
                                                               sig, restart):
    """Stopped mid-epoch, right after its checkpoint at step 10 of 60; restarted by rerunning the same command
    (which resumes from the last complete checkpoint in output_dir: here a checkpoint-15 that a kill left without its
    trainer state is skipped) or with --resume_from_checkpoint. The restart trains steps 11 to 60 only: it prints the
    losses the uninterrupted run logged after step 10 and no others. And two runs with the same seed are identical:
    the stopped run trained steps 1 to 10 from the seed as the uninterrupted one did, or the two would not end
    alike."""
    args = tiny_args(licensed_tiny_bert, tmp_path, *RESUMABLE)
    returncode = stopped_after_checkpoint([sys.executable, str(ROOT / script), *map(str, args)], tmp_path, 10, sig)
    assert returncode == -sig, "the run ended before it could be stopped"
    assert not (tmp_path / "eval_results.json").exists()
    incomplete = tmp_path / "checkpoint-15"
    if restart == "resume_from_checkpoint":
        args += ["--resume_from_checkpoint", tmp_path / "checkpoint-10"]
    else:
        incomplete.mkdir()
        (incomplete / "model.safetensors").write_bytes(b"half")
    result = run_qa(*args, script=script)
    if restart == "rerun":
        assert f"Ignoring {incomplete}" in result.stdout
        assert f"Resuming from {tmp_path}/checkpoint-10" in result.stdout
    reference = uninterrupted(script)
    assert len(losses_logged_after(reference, 0)) == 12
    assert printed_losses(result.stdout) == losses_logged_after(reference, 10)
    assert_same_run(tmp_path, reference)


def test_hostile_but_valid_questions_all_get_answers_taken_from_their_context(trained_span, tmp_path):
    """A 100,000-character context, a question longer than the window, and text whose offsets are easy to get
    wrong (CJK, combining marks, emoji, right-to-left): every question is answered, every n-best answer is
    `context[start:end]`."""
    mixed = "東京は日本の首都です。 Café ﻿naïve e\u0301le\u0300ve 👩‍👩‍👧 family. שלום עולם مرحبا بالعالم. "
    tail = " The treasure is in Lisbon."
    long_context = (mixed * (100_000 // len(mixed) + 1))[:100_000 - len(tail)] + tail
    questions = [
        ("long-context", long_context, "Where is the treasure?", "Lisbon"),
        ("long-question", "The meeting is on Tuesday in Oslo.", "When is the meeting " + "really " * 400 + "?", "Tuesday"),
        ("mixed-text", mixed * 3, "What is the capital of Japan?", "東京"),
    ]
    squad = {"version": "v2.0", "data": [{"title": "hostile", "paragraphs": [
        {"context": context, "qas": [{"id": qid, "question": question, "is_impossible": False,
                                      "answers": [{"text": answer, "answer_start": context.index(answer)}]}]}
        for qid, context, question, answer in questions]}]}
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    result = run_qa("--model_name_or_path", trained_span / "checkpoint-6", "--validation_file", path,
                    "--version_2_with_negative", "--do_eval", "--max_seq_length", 128, "--doc_stride", 32,
                    "--report_to", "none", "--output_dir", tmp_path / "out", "--overwrite_cache")
    assert "1 question(s) are longer than" in result.stdout  # said when the windows are tokenized, not read back
    assert len(long_context) == 100_000
    predictions = read_json(tmp_path / "out", "eval_predictions.json")
    nbest = read_json(tmp_path / "out", "eval_nbest_predictions.json")
    assert set(predictions) == set(nbest) == {qid for qid, *_ in questions}
    contexts = {qid: context for qid, context, *_ in questions}
    for qid, answers in nbest.items():
        assert answers and all(a["text"] == contexts[qid][a["start"]:a["end"]] for a in answers)
        assert predictions[qid] in {a["text"] for a in answers}


def squad_file(path, questions, version, with_answers=True):
    """Write `questions` as official SQuAD JSON (one paragraph per question) and return the path."""
    paragraphs = [{"context": q["context"], "qas": [{
        "id": q["id"], "question": q["question"],
        "answers": [{"text": t, "answer_start": s} for t, s in zip(q["answers"]["text"], q["answers"]["answer_start"])]
        if with_answers else []}]} for q in questions]
    path.write_text(json.dumps({"version": version, "data": [{"title": "sample", "paragraphs": paragraphs}]}))
    return path


def test_squad_v1_end_to_end_and_predictions_for_a_file_without_answers(learned, learned_questions, tmp_path):
    """The learned span model trained on (two small steps) and evaluated as SQuAD v1.1 on its answerable questions,
    then asked the same questions from a file that has no answers: v1.1's metrics, always an answer, no null odds,
    and the unlabelled questions answered as the labelled ones."""
    answerable = learned_questions.filter(lambda q: bool(q["answers"]["text"]))
    v1 = squad_file(tmp_path / "v1.json", answerable, "1.1")
    unlabelled = squad_file(tmp_path / "unlabelled.json", answerable, "1.1", with_answers=False)
    run_qa("--model_name_or_path", learned["span"], "--train_file", v1, "--validation_file", v1, "--test_file",
           unlabelled, "--do_train", "--do_eval", "--do_predict", "--max_steps", 2, "--learning_rate", 1e-5,
           *LEARNED_WINDOWS, "--output_dir", tmp_path / "out", "--report_to", "none", "--seed", 42)
    out = tmp_path / "out"
    results = read_json(out, "eval_results.json")
    predictions = read_json(out, "eval_predictions.json")
    assert len(predictions) == len(answerable) and all(predictions.values())
    assert not any("HasAns" in key or "best_f1" in key for key in results)
    exact, f1 = independent_scores(predictions, answerable)
    assert (results["eval_exact_match"], results["eval_f1"]) == pytest.approx((exact, f1)) and exact >= 80
    assert not (out / "eval_null_odds.json").exists() and not (out / "predict_null_odds.json").exists()
    assert read_json(out, "predict_predictions.json") == predictions
    assert not any("exact" in key for key in read_json(out, "predict_results.json"))
    assert read_json(out, "config.json")["qa_settings"]["version_2_with_negative"] is False


def test_evaluating_a_bare_encoder_without_training_needs_new_head_and_warns_that_its_head_is_random(
        tiny_bert_dir, learned, tmp_path, caplog):
    args = ["--validation_file", DEV, "--version_2_with_negative", "--do_eval", "--max_eval_samples", "2",
            "--report_to", "none"]
    with pytest.raises(SystemExit) as refused:
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(tiny_bert_dir), *args, "--output_dir",
                                   str(tmp_path / "refused")])
    assert (f"{tiny_bert_dir}: its weights have no QA head: qa_outputs.bias, qa_outputs.weight, which would start "
            "random. Pass --new_head if a fresh head is meant (and --do_train to train it)") in str(refused.value)
    for model, warned in ((tiny_bert_dir, True), (learned["span"], False)):
        caplog.clear()
        out = tmp_path / ("bare" if warned else "qa")
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(model), *args, "--output_dir", str(out), "--new_head"])
        assert ("has no question-answering head" in caplog.text) == warned, model
        assert ("freshly initialised, random" in caplog.text) == warned
        assert (out / "model.safetensors").exists() != warned  # no model folder of a random head
        assert (out / "eval_predictions.json").exists()


# --- a QA checkpoint written as a model folder, without training ---------------------------------------------

def transformers_checkpoint(folder, model_dir, weights):
    """`model_dir`'s span model as transformers itself saves a QA checkpoint: BertForQuestionAnswering's weights
    (in `weights`: model.safetensors, or pytorch_model.bin only, as many Hub models have), config without this
    package's settings and pipeline entry, and tokenizer; no file of this package."""
    config = AutoConfig.from_pretrained(model_dir)
    del config.qa_settings, config.custom_pipelines
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir, config=config)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    if weights == "pytorch_model.bin":  # as transformers 4 wrote it without safetensors
        torch.save(model.state_dict(), folder / weights)
        (folder / "model.safetensors").unlink()
    assert not list(folder.glob("*.py")) and "qa_settings" not in read_json(folder, "config.json")
    return folder


def checkpoint_tensors(path):
    return load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


def assert_model_folder_of(checkpoint, weights, out, head, threshold):
    """`out` is a complete model folder of `checkpoint`: its tensors bit for bit, its tokenizer, the pipeline's
    code, and a config with the pipeline's settings and `threshold`."""
    saved, original = load_file(out / "model.safetensors"), checkpoint_tensors(checkpoint / weights)
    assert saved.keys() == original.keys()
    for name, tensor in original.items():
        assert saved[name].dtype == tensor.dtype and torch.equal(saved[name], tensor), name
    question = ("Who designed it?", "Gustave Eiffel's company designed and built the tower.")
    assert AutoTokenizer.from_pretrained(out)(*question)["input_ids"] == \
        AutoTokenizer.from_pretrained(checkpoint)(*question)["input_ids"]
    assert all((out / os.path.basename(path)).exists() for path in PIPELINE_FILES)
    config = read_json(out, "config.json")
    assert config["custom_pipelines"] == PIPELINE_ENTRY
    assert config["qa_settings"]["head"] == head and config["qa_settings"]["max_seq_length"] == 64
    assert config["qa_settings"]["null_score_diff_threshold"] == threshold


def test_evaluating_a_qa_checkpoint_saved_by_transformers_writes_it_as_a_model_folder(learned, learned_questions,
                                                                                      tmp_path):
    """An evaluation-only run gives any QA checkpoint the pipeline, the F1-best threshold and a card; its pipeline
    answers as the evaluation did."""
    weights = "model.safetensors"
    checkpoint = transformers_checkpoint(tmp_path / "checkpoint", learned["span"], weights)
    out = tmp_path / "out"
    qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(checkpoint), "--validation_file", str(TRAIN),
                               "--version_2_with_negative", "--do_eval", "--max_eval_samples", str(LEARNED_QUESTIONS),
                               *map(str, LEARNED_WINDOWS), "--per_device_eval_batch_size", "8",
                               "--output_dir", str(out), "--report_to", "none"])
    results = read_json(out, "eval_results.json")
    assert results["eval_exact"] >= 95  # the checkpoint really answers
    assert_model_folder_of(checkpoint, weights, out, "span", results["eval_best_f1_null_score_diff_threshold"])
    card = (out / "README.md").read_text()
    assert "not fine-tuned here: spanbert-qa evaluated it" in card and "Training hyperparameters" not in card
    assert f"| f1 | {round(results['eval_f1'], 2)} |" in card
    pipe = pipeline("question-answering", model=str(out), trust_remote_code=True)
    answers = pipe([{"question": q, "context": c} for q, c in zip(learned_questions["question"],
                                                                  learned_questions["context"])],
                   handle_impossible_answer=True, align_to_words=False, null_score_diff_threshold=0.0)
    assert dict(zip(learned_questions["id"], (a["answer"] for a in answers))) == read_json(out, "eval_predictions.json")


@pytest.mark.parametrize("head", HEADS)
def test_a_qa_checkpoint_without_evaluation_data_becomes_a_model_folder_at_the_threshold_given(learned, tmp_path,
                                                                                                head):
    """The packaging command: no data, no --do_* flag; a span checkpoint saved by transformers with only
    pytorch_model.bin (as many Hub models are), a CRF folder."""
    weights = "pytorch_model.bin" if head == "span" else "model.safetensors"
    checkpoint = (transformers_checkpoint(tmp_path / "checkpoint", learned["span"], weights) if head == "span"
                  else learned["crf"])
    out = tmp_path / "out"
    qa_runner.main({"span": SPAN_HEAD, "crf": CRF_HEAD}[head], [
        "--model_name_or_path", str(checkpoint), "--version_2_with_negative", "--null_score_diff_threshold", "-1.25",
        *map(str, LEARNED_WINDOWS), "--output_dir", str(out), "--report_to", "none"])
    assert_model_folder_of(checkpoint, weights, out, head, -1.25)
    assert not list(out.glob("*_results.json"))
    card = (out / "README.md").read_text()
    assert "not fine-tuned here: spanbert-qa added the pipeline" in card and "No evaluation results yet." in card
    context = "The Eiffel Tower in Paris was completed in 1889."
    answer = pipeline("question-answering", model=str(out), trust_remote_code=True)(
        question="When was the tower completed?", context=context)
    assert answer["answer"] == context[answer["start"]:answer["end"]] and answer["answer"]


def test_packaging_a_bare_encoder_is_refused(tiny_bert_dir, tmp_path):
    with pytest.raises(SystemExit) as refused:
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(tmp_path / "out")])
    assert f"{tiny_bert_dir}: its weights have no QA head" in str(refused.value)
    with pytest.raises(SystemExit) as refused:  # a fresh head meant, but nothing trains it
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(tmp_path / "out"),
                                   "--new_head"])
    assert f"{tiny_bert_dir} has no question-answering head" in str(refused.value)
    assert "there is no model to write" in str(refused.value) and not (tmp_path / "out" / "model.safetensors").exists()


def bad_checkpoint(folder, tiny_bert_dir, tokenizer=True, weights="model.safetensors", config=None):
    """A copy of the tiny encoder, with or without its tokenizer files, its weights renamed or removed, or another
    config."""
    import shutil

    shutil.copytree(tiny_bert_dir, folder)
    if not tokenizer:
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)
    if weights != "model.safetensors":
        (folder / "model.safetensors").rename(folder / weights)
    if config is not None:
        config.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case, message", [
    ("no-tokenizer", r"no tokenizer files \(tokenizer\.json, vocab\.txt, \.\.\.\): .* 5 special tokens"),
    ("onnx-only", "cannot load it as a span QA model: .* It holds only ONNX weights"),
    ("not-qa", "cannot load it as a span QA model: .*CTRLConfig"),
])
def test_a_checkpoint_that_cannot_serve_is_refused_before_any_work_with_its_name(tiny_bert_dir, tmp_path, case,
                                                                                 message):
    from transformers import CTRLConfig

    options = {"no-tokenizer": {"tokenizer": False}, "onnx-only": {"weights": "model.onnx"},
               "not-qa": {"config": CTRLConfig(n_layer=1, n_embd=32, n_head=2)}}[case]
    folder = bad_checkpoint(tmp_path / case, tiny_bert_dir, **options)
    missing = tmp_path / "no-such-file.json"  # never read: the checkpoint is refused first
    with pytest.raises(SystemExit) as refused:
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(folder), "--validation_file", str(missing),
                                   "--version_2_with_negative", "--do_eval", "--output_dir", str(tmp_path / "out")])
    assert re.search(f"{re.escape(str(folder))}: {message}", str(refused.value)), str(refused.value)[:500]


@pytest.fixture(scope="module")
def tiny_qa_checkpoint(tiny_bert_dir, tmp_path_factory):
    """A QA checkpoint as transformers saves one: the tiny encoder with a QA head, and its tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-qa")
    AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


def broken_checkpoint(checkpoint, folder, case):
    """A copy of `checkpoint` whose weights do not fit what its config describes, as `case` says."""
    import shutil

    from safetensors.torch import save_file
    from transformers import BertConfig, BertForQuestionAnswering

    shutil.copytree(checkpoint, folder)
    weights = load_file(folder / "model.safetensors")
    if case == "no-qa-outputs":
        weights = {name: tensor for name, tensor in weights.items() if not name.startswith("qa_outputs.")}
    elif case == "a-layer-missing":
        weights = {name: tensor for name, tensor in weights.items() if ".layer.1." not in name}
    elif case == "wrong-shaped-head":
        weights["qa_outputs.weight"] = torch.zeros(3, weights["qa_outputs.weight"].shape[1])
    elif case == "model-type-edited":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    elif case == "fewer-embeddings":  # a consistent model of 1,000 rows beside a 30,522-token tokenizer
        config = BertConfig.from_pretrained(folder, vocab_size=1000)
        weights = BertForQuestionAnswering(config).state_dict()
        config.save_pretrained(folder)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, folder / "model.safetensors")
    return folder


@pytest.mark.parametrize("case, message", [
    ("no-qa-outputs", r"its config names a QA model \(BertForQuestionAnswering\) but its weights lack qa_outputs.bias, "
                      r"qa_outputs.weight, which would start random. Pass --new_head"),
    ("a-layer-missing", r"its weights lack 16 tensor\(s\) of its bert encoder \(bert.encoder.layer.1.\S+, .* and 11 "
                        r"more\), which would start random: weights and config do not fit"),
    ("model-type-edited", r"its weights lack \d+ tensor\(s\) of its roberta encoder \(roberta\."),
    ("wrong-shaped-head", r"its config names a QA model \(BertForQuestionAnswering\) but its weights lack "
                          r"qa_outputs.weight \(its shape \(3, 32\), the model's \(2, 32\)\)"),
    ("fewer-embeddings", r"its tokenizer has 30522 tokens but the model's embeddings 1000 rows, so ids from 1000 on "
                         r"have no embedding"),
])
@pytest.mark.parametrize("trains", [False, True])
def test_weights_that_do_not_fit_the_model_are_refused_naming_the_tensors(tiny_qa_checkpoint, tmp_path, case,
                                                                           message, trains):
    """Whether the run packages, evaluates or trains the checkpoint: each of these would answer from random
    tensors, or not at all."""
    folder = broken_checkpoint(tiny_qa_checkpoint, tmp_path / case, case)
    missing = tmp_path / "no-such-file.json"  # never read: the checkpoint is refused first
    flags = ["--do_train", "--train_file", str(missing)] if trains else ["--do_eval", "--validation_file", str(missing)]
    with pytest.raises(SystemExit) as refused:
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(folder), *flags, "--version_2_with_negative",
                                   "--output_dir", str(tmp_path / "out"), "--report_to", "none"])
    assert re.search(f"{re.escape(str(folder))}: {message}", str(refused.value)), str(refused.value)[:800]
    assert not (tmp_path / "out" / "model.safetensors").exists()
