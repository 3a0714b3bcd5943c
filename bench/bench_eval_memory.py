#!/usr/bin/env python
"""Peak memory of an evaluation run as users start it: `run_qa.py --do_eval` (and `run_qa_crf.py`) on the first
`--max_eval_samples` dev questions against the same command on 10 questions.

Each run is a fresh process (`python run_qa.py ... --do_eval`, MiniLM-L6-H384 by default, its QA head freshly
initialised: memory does not depend on the weights' values; max_seq_length 384, doc_stride 128, eval batch 32); its
peak RSS is the kernel's `ru_maxrss` of that process (`os.wait4`). Both commands read the whole dev file, so their
difference is what evaluating the extra questions costs: windows, the model's gathered outputs, post-processing,
metric and files. `--code_dir` runs the scripts of another checkout (e.g. a `git worktree` of an older commit) to
measure a change.

    python bench/bench_eval_memory.py --max_eval_samples 2000      # both heads (minutes of CPU)
    python bench/bench_eval_memory.py --tiny --repeats 1 --model TINY_MODEL_DIR --dev_file data/sample/dev-v2.0.json
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

SCRIPTS = {"span": "run_qa.py", "crf": "run_qa_crf.py"}


def peak_rss_mib(command, cwd):
    """Peak RSS (MiB) of `command` run to its end in a fresh process; exits with its output if it fails."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            log.seek(0)
            raise SystemExit(f"error: {' '.join(command)} failed:\n{log.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def eval_command(args, head, questions, output_dir):
    # a fresh QA head on an encoder is asked for (--new_head) where the checkout has the flag: older ones do not
    arguments = Path(args.code_dir) / "qa_arguments.py"
    new_head = ["--new_head"] if arguments.exists() and "new_head" in arguments.read_text() else []
    return [sys.executable, str(Path(args.code_dir) / SCRIPTS[head]), "--model_name_or_path", args.model,
            "--validation_file", args.dev_file, "--version_2_with_negative", "--do_eval",
            "--max_eval_samples", str(questions), "--per_device_eval_batch_size", "32", "--output_dir", output_dir,
            "--report_to", "none", "--disable_tqdm", "true", *new_head]


def main(argv=None):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--model", default=None, help="encoder or QA checkpoint folder (default: MiniLM-L6-H384)")
    parser.add_argument("--heads", nargs="+", choices=tuple(SCRIPTS), default=list(SCRIPTS))
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=2000, help="questions of the large run")
    parser.add_argument("--small", type=int, default=10, help="questions of the small run")
    parser.add_argument("--code_dir", default=str(common.ROOT), help="checkout whose run scripts are measured")
    parser.add_argument("--tiny", action="store_true", help="smoke size: 2 against 19 questions")
    args = parser.parse_args(argv)
    args.model = args.model or common.minilm_path()
    args.dev_file = common.data_file(args, args.dev_file, common.DEV_NAME)
    sizes = (2, 19) if args.tiny else (args.small, args.max_eval_samples)
    peaks = {(head, n): [] for head in args.heads for n in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for head, n in peaks:
                peaks[head, n].append(peak_rss_mib(eval_command(args, head, n, os.path.join(tmp, f"{head}-{n}")),
                                                   cwd=args.code_dir))
    rows = []
    for head in args.heads:
        small, large = (common.median(peaks[head, n]) for n in sizes)
        rows.append((SCRIPTS[head], f"{small:.0f}", f"{large:.0f}", f"{large - small:.0f}",
                     common.runs_text(peaks[head, sizes[1]], 0)))
    common.print_report(
        "Peak RSS of an evaluation run",
        [(f"`--do_eval` on {sizes[0]} and on {sizes[1]} questions of {Path(args.dev_file).name} "
          f"({'MiniLM-L6-H384' if args.model == common.minilm_path() else args.model}, batch 32; MiB)",
          ("script", f"peak, {sizes[0]} questions", f"peak, {sizes[1]} questions", "difference",
           f"runs, {sizes[1]} questions"), rows)],
        notes=[f"scripts from {args.code_dir}", "each run a fresh process; peak = its ru_maxrss"],
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
