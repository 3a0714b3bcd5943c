"""Smoke tests of the bench/ scripts: each runs on a tiny input, exits 0 and prints its tables (no timing asserted)."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLE, SCRIPT_ENV, run_script, shell_env

TRAIN, DEV = str(SAMPLE / "train-v2.0.json"), str(SAMPLE / "dev-v2.0.json")


def run_bench(script, *args, site=None):
    """stdout of `python bench/<script> --tiny --repeats 1 ...` from the repository root, `site` (a side installation)
    on its path; fails on a non-zero exit."""
    env = {**SCRIPT_ENV, **({"PYTHONPATH": str(site)} if site else {})}
    command = [sys.executable, str(ROOT / "bench" / script), "--tiny", "--repeats", "1", *map(str, args)]
    result = run_script(command, env=env, stderr=subprocess.PIPE)
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
    assert "| questions whose answer differs (after the null threshold 0.0) |" in output
    assert "| package best span score >= reference's (every question, tolerance 1e-4) | 19 / 19 |" in output


def test_bench_flops(tiny_bert_dir):
    output = run_bench("bench_flops.py", "--model", tiny_bert_dir, "--dev_file", DEV)
    assert_report(output, "The forward pass against the machine's matrix product", "| float32 | ", "| bf16 | ",
                  "windows (8 questions, batches of 32", "The attention kernel alone")


def test_bench_crf_decode():
    output = run_bench("bench_crf_decode.py")
    assert_report(output, "CRF decoding", "| pytorch-crf `model.crf.decode(emissions, mask)` |",
                  "| CrfForQuestionAnswering (CRF NLL) |")
    assert "| decode_best_spans span = that path's span | 4 / 4 |" in output


@pytest.mark.parametrize("head, bf16", [("span", True), ("crf", False)])
def test_bench_train(tiny_bert_dir, head, bf16):
    output = run_bench("bench_train.py", "--model", tiny_bert_dir, "--train_file", TRAIN, "--head", head,
                       "--steps", 2, *(["--bf16"] if bf16 else []))
    assert_report(output, f"Training throughput ({head} head)",
                  "| dynamic padding (to 32) + group_by_length (package default) | 2 |",
                  "| static padding to 384 + random sampling | 2 | 384 |")
    assert ("| the same in bf16 autocast (`--bf16`) | 2 |" in output) == bf16


@pytest.mark.parametrize("head", ["span", "crf"])
def test_bench_eval(tiny_bert_dir, head):
    output = run_bench("bench_eval.py", "--model", tiny_bert_dir, "--dev_file", DEV, "--head", head)
    assert_report(output, f"Evaluation ({head} head)", "| dynamic padding, sorted by length (package default) |",
                  "Peak RSS of the whole evaluation")
    assert "MORE than one copy" not in output


def test_bench_eval_memory(tiny_bert_dir):
    output = run_bench("bench_eval_memory.py", "--model", tiny_bert_dir, "--dev_file", DEV, "--heads", "crf")
    assert_report(output, "Peak RSS of an evaluation run", "| run_qa_crf.py |",
                  "`--do_eval` on 2 and on 19 questions of dev-v2.0.json")


def test_bench_window_cache(tiny_bert_dir):
    output = run_bench("bench_window_cache.py", "--model", tiny_bert_dir)
    assert_report(output, "Time to the first training step, first run and rerun", "| first run |", "| rerun |",
                  "on 466 questions (train-v2.0.json x 2, new ids)", "rerun / first run: ")


def test_bench_train_memory(tiny_bert_dir):
    output = run_bench("bench_train_memory.py", "--model", tiny_bert_dir, "--train_file", TRAIN, "--head", "crf",
                       "--variant", "arena1=MALLOC_ARENA_MAX=1 --pad_to_max_length")
    assert_report(output, "Training memory", "run_qa_crf.py --do_train, package defaults (4 steps of 8 windows",
                  "run_qa_crf.py --do_train, arena1: MALLOC_ARENA_MAX=1 --pad_to_max_length (4 steps",
                  "| the step at the peak: activations, gradients, temporaries |", "| freed memory the allocator keeps |",
                  "**Every run, in the order they ran**", "| 1 | package defaults |", "| 1 | arena1 |")
    # the parts add up to the sampled peak, which the kernel's high-water mark bounds
    for table in output.split("**run_qa_crf.py")[1:]:
        mib = {part: value for part, value in re.findall(r"^\| (.+?) \| ([\d /-]+) \|$", table, re.M)}
        parts = ("process before training (libraries, windows, weights)", "optimizer state",
                 "the step at the peak: activations, gradients, temporaries", "freed memory the allocator keeps")
        sampled = int(mib["peak RSS, sampled (the sum of the above)"])
        assert abs(sum(int(mib[part]) for part in parts) - sampled) <= 2
        assert sampled <= int(mib["peak RSS, the kernel's high-water mark"]) + 1
        assert int(mib["optimizer state"]) >= 2 * int(mib["for scale: parameters / gradients"].split(" / ")[0]) - 1


def test_bench_loop(tiny_bert_dir):
    output = run_bench("bench_loop.py", "--model", tiny_bert_dir, "--train_file", TRAIN, "--dev_file", DEV, "--bf16")
    assert_report(output, "The package's training and evaluation against a bare PyTorch loop",
                  "**Training: 3 batches of 8 (24 windows) spread over one epoch of",
                  "| package | bf16 autocast |", "| bare | float32 |", "**Evaluation forward: 19 windows")


def test_bench_gpu_dry_run(tmp_path):
    """bench/gpu.sh --dry_run: every part of the GPU script at toy sizes on the CPU (tiny encoders, 2 steps, 8
    questions), with a dev file that is missing so that the sample one stands in."""
    env = shell_env()
    env.pop("OUT", None)
    command = ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry_run", "--out", str(tmp_path), "--train_file", TRAIN,
               "--dev_file", str(tmp_path / "missing.json")]
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout[-8000:]
    report = (tmp_path / "gpu_report.md").read_text()
    assert report.startswith("## GPU checks (dry run on the CPU)") and report in result.stdout
    assert result.stdout in (tmp_path / "gpu.log").read_text()
    for table in ("**Training throughput and peak GPU memory", "**Evaluation in this process against the CPU",
                  "**`accelerate launch` (one process)**", "**Parts", "**GPU**", "**Machine**", "**Command**"):
        assert table in report, table
    for model in ("tiny BERT, MiniLM's tokenizer (dry run)",
                  "SpanBERT-base-sized BERT, random weights (dry run: tiny, vocab 28,996)"):
        for head in ("span", "crf"):
            for precision in ("fp32", "bf16"):
                assert f"| {model} | {head} | {precision} | 2 |" in report, (model, head, precision)
    assert "| answers agreeing | 8 / 8 |" in report
    assert "| max abs difference of start / end logits |" in report
    assert "| exit status | 0 (ran) |" in report and "| processes / device (run_qa.py's log) | 1 / cpu |" in report
    assert "| training: steps / questions / windows / loss / train_runtime s | 2 / 4 / " in report
    assert "FAILED" not in report and "skipped" not in report
    for part in ("training", "accelerate", "evaluation"):
        assert re.search(rf"\| {part} \| \d+ \| [\d.]+ \| ok \|", report), part
    assert f"dev file `{tmp_path / 'missing.json'}` not found: used `data/sample/dev-v2.0.json` instead" in report
    assert "python bench/bench_gpu.py" in report and "--dry_run" in report
    assert (tmp_path / "accelerate_run.log").exists()


def test_bench_pipeline(learned, transformers_4):
    # the training questions (the first 40), which the model answers
    output = run_bench("bench_pipeline.py", "--model", learned["span"], "--dev_file", TRAIN,
                       "--transformers4", transformers_4)
    assert_report(output, "Pipeline against evaluation (span head)", "| evaluation |",
                  "| evaluation from its questions |", "| pipeline |",
                  "| pipeline windows/s / evaluation from its questions windows/s |",
                  "**Against transformers 4.51.3's pipeline", "| transformers 4.51.3's pipeline: questions/s | ")
    assert "| pipeline answers equal to eval_predictions.json | 40 of 40 |" in output
    # both pipelines answer alike where they answer (their no-answer rules differ)
    same = re.search(r"\| top answers equal \(each pipeline's own no-answer rule\) \| \d+ of 40 \((\d+) not empty\) \|",
                     output)
    assert same and int(same.group(1)) >= 15, output


def test_bench_bf16(learned):
    output = run_bench("bench_bf16.py", "--model", learned["crf"], "--dev_file", DEV)
    assert_report(output, "Evaluation in bf16 against float32 (crf head)", "| float32 |",
                  "| bf16 autocast (--bf16) |", "19 questions of dev-v2.0.json")
    assert re.search(r"\| float32 \|( [0-9.]+ \|){4} 19 of 19 \|", output), output


def test_bench_int8(learned):
    site = ROOT / ".cache" / "torchao"  # where bench/bench_int8.py's docstring installs it
    if not (site / "torchao").is_dir():
        pytest.skip(f"torchao is not installed in {site} (int8 is measured, not adopted: bench/bench_int8.py)")
    output = run_bench("bench_int8.py", "--model", learned["span"], "--dev_file", DEV, site=site)
    assert_report(output, "The pipeline in float32 against torchao's dynamic int8", "| float32 | ", "| int8 | ",
                  "first 8 questions, batch 32", "| int8 answers equal to float32's | ")


@pytest.mark.parametrize("head, bf16", [("span", False), ("crf", False), ("span", True)])
def test_bench_reader(learned, head, bf16):
    output = run_bench("bench_reader.py", "--model", learned[head], "--dev_file", DEV, *(["--bf16"] if bf16 else []))
    assert_report(output, "A question over 10 passages: the reader against per-passage answers and Haystack's scoring",
                  "| (a) the pipeline per passage, best `score` |", "| (c) the reader (`score`) |",
                  "| reader / one call per passage |", "| bare forward |", "questions of dev-v2.0.json (8 asked)")
    assert ("| (b) Haystack's scoring |" in output) == (head == "span")  # Haystack reads start / end logits
    assert ("windows), batch 32, bf16 autocast**" in output) == bf16
