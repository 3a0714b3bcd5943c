#!/usr/bin/env python
"""Evaluation in bf16 against float32: the same saved model, questions and no-answer threshold.

Runs the model folder's own script (`run_qa.py`, or `run_qa_crf.py` for a CRF folder) with `--do_eval` three ways,
each a fresh process: float32; `--bf16 --use_cpu` (the encoder under bf16 autocast, as the pipeline's `bf16=True`);
`--bf16_full_eval --use_cpu` (the weights cast to bf16, as `pipeline(..., dtype=torch.bfloat16)`). The CRF and the
decoding stay in float32 / float64 in all three. It reports each run's exact / F1 / best_f1 and evaluation time
(the run's own `eval_runtime`: forward, post-processing and metric) and how many answers of each bf16 run equal
float32's. On a CPU without bf16 instructions (no avx512_bf16 / amx_bf16 in /proc/cpuinfo) torch emulates them: the
accuracy figures hold, the times do not say what a bf16 CPU would do.

    python bench/bench_bf16.py --model outputs/minilm-span-recipe                 # the full dev set
    python bench/bench_bf16.py --model MODEL --dev_file data/sample/dev-v2.0.json --max_eval_samples 19
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

WAYS = {"float32": (), "bf16 autocast (--bf16)": ("--bf16", "--use_cpu"),
        "bf16 weights (--bf16_full_eval)": ("--bf16_full_eval", "--use_cpu")}


def evaluation(model, script, dev_file, threshold, flags, limit, out):
    """eval_results.json and eval_predictions.json of one `--do_eval` run of `script` in a fresh process."""
    command = [sys.executable, str(common.ROOT / script), "--model_name_or_path", model, "--validation_file", dev_file,
               "--do_eval", "--version_2_with_negative", "--null_score_diff_threshold", repr(threshold),
               "--per_device_eval_batch_size", "64", "--report_to", "none", "--output_dir", out, *flags,
               *(["--max_eval_samples", str(limit)] if limit else [])]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return tuple(json.loads((Path(out) / name).read_text()) for name in ("eval_results.json", "eval_predictions.json"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder saved by run_qa.py or run_qa_crf.py")
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--tiny", action="store_true", help="smoke size: the first 19 questions, float32 and --bf16")
    common.add_common_arguments(parser)
    parser.set_defaults(repeats=1)  # each run is a whole evaluation
    args = parser.parse_args(argv)
    from transformers import AutoConfig

    from model_folder.qa_settings import QASettings

    settings = QASettings.from_config(AutoConfig.from_pretrained(args.model, trust_remote_code=True))
    script = "run_qa.py" if settings.head == "span" else "run_qa_crf.py"
    dev_file = common.data_file(args, args.dev_file, common.DEV_NAME)
    limit = 19 if args.tiny else args.max_eval_samples
    ways = dict(list(WAYS.items())[:2]) if args.tiny else WAYS
    runs, seconds = {}, {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for way, (name, flags) in enumerate(ways.items()):
                runs[name] = evaluation(args.model, script, dev_file, settings.null_score_diff_threshold, flags,
                                        limit, str(Path(tmp) / f"{round_}-{way}"))
                seconds[name].append(runs[name][0]["eval_runtime"])
    _, reference = runs["float32"]
    rows = []
    for name, (results, predictions) in runs.items():
        same = sum(predictions[qid] == answer for qid, answer in reference.items())
        rows.append((name, *(f"{results[f'eval_{key}']:.2f}" for key in ("exact", "f1", "best_f1")),
                     common.runs_text(seconds[name], 1), f"{same} of {len(reference)}"))
    common.print_report(
        f"Evaluation in bf16 against float32 ({settings.head} head)",
        [(f"{args.model}, {len(reference)} questions of {Path(dev_file).name}, threshold "
          f"{settings.null_score_diff_threshold:.4f}, eval batch 64",
          ("run", "exact", "F1", "best_f1", "evaluation s", "answers equal to float32's"), rows)],
        notes=["each run a fresh process of the folder's script; evaluation s is its eval_runtime"],
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
