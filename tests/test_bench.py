"""Smoke tests of the bench/ scripts: each runs on a tiny input, exits 0 and prints its tables (no timing asserted)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLE

TRAIN, DEV = str(SAMPLE / "train-v2.0.json"), str(SAMPLE / "dev-v2.0.json")


def run_bench(script, *args):
    """stdout of `python bench/<script> --tiny --repeats 1 ...` from the repository root; fails on a non-zero exit."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "bench" / script), "--tiny", "--repeats", "1", *map(str, args)]
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def assert_report(output, title, *rows):
    assert output.startswith(f"## {title}"), output[:500]
    assert "| --- |" in output
    for row in rows:
        assert row in output, f"{row!r} missing from:\n{output}"
    assert "**Machine**" in output and "| torch threads | 1 |" in output
    assert "python bench/" in output and "--tiny --repeats 1" in output


def test_bench_postprocess():
    output = run_bench("bench_postprocess.py", "--dev_file", DEV)
    assert_report(output, "Post-processing", "| reference: per-candidate Python loop |",
                  "| package + write_prediction_files |")
    assert "| identical answers (package vs reference) | 19 / 19 |" in output


def test_bench_crf_decode():
    output = run_bench("bench_crf_decode.py")
    assert_report(output, "CRF decoding", "| pytorch-crf `model.crf.decode(emissions, mask)` |",
                  "| CrfForQuestionAnswering (CRF NLL) |")
    assert "| decode_spans span = that path's span | 4 / 4 |" in output


@pytest.mark.parametrize("head, bf16", [("span", True), ("crf", False)])
def test_bench_train(tiny_bert_dir, head, bf16):
    output = run_bench("bench_train.py", "--model", tiny_bert_dir, "--train_file", TRAIN, "--head", head,
                       "--steps", 2, *(["--bf16"] if bf16 else []))
    assert_report(output, f"Training throughput ({head} head)",
                  "| dynamic padding + group_by_length (package default) | 2 |",
                  "| static padding to 384 + random sampling | 2 | 384 |")
    assert ("| the same in bf16 autocast (`--bf16`) | 2 |" in output) == bf16


@pytest.mark.parametrize("head", ["span", "crf"])
def test_bench_eval(tiny_bert_dir, head):
    output = run_bench("bench_eval.py", "--model", tiny_bert_dir, "--dev_file", DEV, "--head", head)
    assert_report(output, f"Evaluation ({head} head)", "| dynamic padding, sorted by length (package default) |",
                  "Peak RSS of the whole evaluation")
    assert "MORE than one copy" not in output


def test_bench_pipeline(learned):
    output = run_bench("bench_pipeline.py", "--model", learned["span"], "--dev_file", DEV)
    assert_report(output, "Pipeline against evaluation (span head)", "| evaluation |", "| pipeline |")
    assert "| pipeline answers equal to eval_predictions.json | 19 of 19 |" in output
