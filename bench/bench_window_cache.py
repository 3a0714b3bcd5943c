#!/usr/bin/env python
"""Time to the first training step, first run and rerun: what the window cache saves.

The training data is the train subset repeated `--copies` times (20 by default: 94,380 questions), each copy with
new ids, written by this script to a temporary folder (never kept). `run_qa.py --do_train --max_steps 1` runs on it
twice in fresh processes with one empty cache folder (`--cache_dir`): the first run tokenizes and writes the
windows, the rerun reads them. Each run reports the seconds from the process's start to its first training step and
its peak RSS up to that step (the libraries, the questions, the windows and the model: what preprocessing costs),
taken in the process by a wrapper around `QuestionAnsweringTrainer.training_step`. `--code_dir` runs the scripts of
another checkout (a `git worktree` of an older commit) for comparison.

    python bench/bench_window_cache.py                       # 94,380 questions: a few minutes
    python bench/bench_window_cache.py --tiny --repeats 1    # the sample data, twice
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

# Runs run_qa.py as `python run_qa.py ...` would, printing when the first training step starts and the peak RSS so far.
FIRST_STEP = """
import resource, runpy, sys, time
start = time.perf_counter()
sys.path.insert(0, ".")
import trainer_qa
step = trainer_qa.QuestionAnsweringTrainer.training_step

def first_step(self, *args, **kwargs):
    if not getattr(first_step, "seen", False):
        first_step.seen = True
        print("FIRST_STEP", time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
    return step(self, *args, **kwargs)

trainer_qa.QuestionAnsweringTrainer.training_step = first_step
sys.argv = ["run_qa.py", *sys.argv[1:]]
runpy.run_path("run_qa.py", run_name="__main__")
"""


def repeated_questions(source, copies, path):
    """Write `copies` copies of the SQuAD JSON `source`, each question with a new id; returns the question count."""
    from qa_data import read_json_file

    data = read_json_file(source)["data"]
    articles = []
    for copy in range(copies):
        for article in data:
            paragraphs = [{"context": p["context"], "qas": [{**qa, "id": f"{qa['id']}-{copy}"} for qa in p["qas"]]}
                          for p in article["paragraphs"]]
            articles.append({"title": article["title"], "paragraphs": paragraphs})
    Path(path).write_text(json.dumps({"version": "v2.0", "data": articles}), encoding="utf-8")
    return sum(len(p["qas"]) for a in articles for p in a["paragraphs"])


def first_step(args, train_file, cache_dir, output_dir):
    """(seconds to the first training step, peak RSS MiB until then) of one run in a fresh process."""
    command = [sys.executable, "-c", FIRST_STEP, "--model_name_or_path", args.model, "--train_file", train_file,
               "--version_2_with_negative", "--do_train", "--max_steps", "1", "--per_device_train_batch_size", "8",
               "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--output_dir", output_dir,
               "--cache_dir", cache_dir]
    result = subprocess.run(command, cwd=args.code_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("FIRST_STEP")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"error: {' '.join(command[3:])} failed:\n{result.stdout[-3000:]}")
    return float(lines[0][1]), int(lines[0][2]) / 1024


def main(argv=None):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--model", default=None, help="encoder folder (default: MiniLM-L6-H384)")
    parser.add_argument("--train_file", default=None, help="SQuAD v2 JSON to repeat (default: the train subset)")
    parser.add_argument("--copies", type=int, default=20, help="copies of the training questions, each with new ids")
    parser.add_argument("--code_dir", default=str(common.ROOT), help="checkout whose run_qa.py is measured")
    parser.add_argument("--tiny", action="store_true", help="smoke size: the sample training questions, twice")
    args = parser.parse_args(argv)
    args.model = args.model or common.minilm_path()
    if args.tiny:
        args.train_file, args.copies = str(common.ROOT / "data" / "sample" / "train-v2.0.json"), 2
    source = common.data_file(args, args.train_file, common.TRAIN_NAME)
    runs = {"first run": [], "rerun": []}
    with tempfile.TemporaryDirectory() as tmp:
        train_file = os.path.join(tmp, "train-repeated.json")
        questions = repeated_questions(source, args.copies, train_file)
        for repeat in range(args.repeats):
            cache_dir = os.path.join(tmp, f"cache-{repeat}")  # empty for each first run
            for name, result in runs.items():
                result.append(first_step(args, train_file, cache_dir, os.path.join(tmp, f"out-{repeat}-{name}")))
    rows = [(name, f"{common.median([s for s, _ in result]):.1f}", f"{common.median([m for _, m in result]):.0f}",
             common.runs_text([s for s, _ in result], 1)) for name, result in runs.items()]
    seconds = {name: common.median([s for s, _ in result]) for name, result in runs.items()}
    common.print_report(
        "Time to the first training step, first run and rerun",
        [(f"`run_qa.py --do_train --max_steps 1` on {questions:,} questions ({Path(source).name} x {args.copies}, new "
          f"ids), MiniLM-L6-H384",
          ("run", "seconds to the first step", "peak RSS until then, MiB", "runs, seconds"), rows)],
        notes=[f"rerun / first run: {common.ratio(seconds['rerun'], seconds['first run']):.2f}",
               f"scripts from {args.code_dir}", "each run a fresh process; each first run with an empty cache folder"],
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
