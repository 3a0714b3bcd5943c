#!/usr/bin/env python
"""Evaluation speed and memory: dynamic padding over length-sorted windows against static padding to max_seq_length.

Both variants evaluate the same model (MiniLM-L6-H384 by default, its QA head freshly initialised unless `--model`
names a fine-tuned folder) on the windows of the same dev questions (the full SQuAD v2 dev set, or
`--max_eval_samples`), max_seq_length 384, doc_stride 128, eval batch 32:

* dynamic (the package default): windows tokenized without padding and sorted by length, longest first
  (qa_runner's `utils_qa.longest_first`), `WindowCollator` pads each batch to its longest window;
* static: windows padded to 384 when tokenized (`--pad_to_max_length`), sorted the same way (sorting changes
  nothing when every window is 384 wide).

Evaluation is `trainer_qa.QuestionAnsweringTrainer.evaluate()` with what qa_runner passes: the collator, the same
post-processing (`padded_offsets` + the head's candidates + `question_predictions`), the offline SQuAD v2 metric,
and the prediction files (written to a temporary folder). The bench wraps the trainer's `evaluation_loop` (the
forward pass over every window, gathering the logits) to time it apart from the rest and to keep its output; the
rest of `evaluate()` is post-processing, metric and files.

Memory: before each evaluation the script collects garbage, returns free heap to the OS (`malloc_trim`) and resets
the peak RSS (VmHWM, Linux `/proc/self/clear_refs`); the peak after it is the peak of that whole evaluation
(forward + post-processing + metric + files). Where the peak cannot be reset (not Linux), ru_maxrss of the whole
process is reported instead.

Logits check (span head): the gathered `start_logits`/`end_logits` must be float32 arrays of (windows, widest batch)
-- one copy, i.e. at most windows x max length x 4 bytes x 2.

    python bench/bench_eval.py                                    # full dev set (heavy: many minutes of CPU)
    python bench/bench_eval.py --max_eval_samples 500
    python bench/bench_eval.py --tiny --repeats 1 --model TINY_MODEL_DIR --dev_file data/sample/dev-v2.0.json
"""

import argparse
import ctypes
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

import numpy as np  # noqa: E402

from bench_train import head_for, load_model, package_defaults  # noqa: E402


def release_free_memory():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def make_trainer(head, model, tokenizer, questions, windows, data_args, args, output_dir, bf16=False):
    """The trainer qa_runner builds for evaluating `questions` (a questions Dataset) over `windows` (with `bf16`, as
    `--bf16 --use_cpu` builds it: the forward pass under bf16 autocast)."""
    from transformers import PrinterCallback

    from qa_arguments import QATrainingArguments
    from qa_data import QuestionSet
    from qa_runner import qa_trainer

    training_args = QATrainingArguments(output_dir=output_dir, per_device_eval_batch_size=args.batch_size,
                                        report_to="none", disable_tqdm=True, seed=args.seed, **package_defaults(),
                                        **({"bf16": True, "use_cpu": True} if bf16 else {}))
    trainer = qa_trainer(head, model, tokenizer, data_args.qa_settings(head.name), {"validation": QuestionSet(questions)},
                         {"validation": windows}, None, data_args, training_args)
    trainer.remove_callback(PrinterCallback)
    return trainer


def warm_up(model, trainers, windows):
    """One untimed batch of each variant through the model, so that neither timed run pays the first-call costs."""
    import torch

    model.eval()
    for name, trainer in trainers.items():
        batch = next(iter(trainer.get_eval_dataloader(windows[name])))
        batch = trainer._prepare_inputs(batch)
        with torch.no_grad():
            model(**batch)


def evaluate_once(trainer, answers_out):
    """{forward, total seconds; rss before, peak; outputs} of one `trainer.evaluate()`."""
    captured = {}
    loop, post_process = trainer.evaluation_loop, trainer.post_process_function

    def timed_loop(*args, **kwargs):
        start = time.perf_counter()
        output = loop(*args, **kwargs)
        captured["forward"] = time.perf_counter() - start
        return output

    def capturing_post_process(questions, features, outputs):
        captured["predictions"] = outputs
        return post_process(questions, features, outputs)

    trainer.evaluation_loop, trainer.post_process_function = timed_loop, capturing_post_process
    release_free_memory()
    resettable = common.reset_peak_rss()
    before = common.rss_mib()
    start = time.perf_counter()
    try:
        metrics = trainer.evaluate()  # as qa_runner calls it
    finally:
        del trainer.evaluation_loop
        trainer.post_process_function = post_process
    total = time.perf_counter() - start
    peak = common.peak_rss_mib()
    with open(os.path.join(trainer.args.output_dir, "eval_predictions.json"), encoding="utf-8") as f:
        answers_out.append(f.read())
    return {"forward": captured["forward"], "total": total, "before": before, "peak": peak,
            "resettable": resettable, "predictions": captured["predictions"], "metrics": metrics}


def gathering_seconds(windows, batch_size, repeats):
    """{way: median seconds} of gathering (start, end) logits of these windows' batch shapes (sequential order, as
    the eval dataloader yields them) replayed with empty tensors and no model, the Trainer's way (EvalLoopContainer:
    each batch concatenated to everything gathered so far, padded to the widest batch, so the work grows with the
    square of the number of batches) and the package's (`WindowOutputs`: kept, put together once); the bytes the
    Trainer's concatenations write; the number of batches."""
    import torch
    from transformers.trainer_pt_utils import EvalLoopContainer

    from trainer_qa import WindowOutputs

    lengths = [len(ids) for ids in windows["input_ids"][:]]
    shapes = [(len(lengths[i : i + batch_size]), max(lengths[i : i + batch_size]))
              for i in range(0, len(lengths), batch_size)]
    written, rows, width = 0, 0, 0
    for n, w in shapes:
        rows, width = rows + n, max(width, w)
        written += 2 * rows * width * 4 if rows > n else 0

    def gathered(container):
        for n, w in shapes:
            container.add((torch.zeros(n, w), torch.zeros(n, w)))
        return container

    seconds, _ = common.interleaved([
        ("trainer", lambda: gathered(EvalLoopContainer(do_nested_concat=True, padding_index=-100)).get_arrays()),
        ("package", lambda: gathered(WindowOutputs()).arrays()),
    ], repeats)
    return {name: common.median(values) for name, values in seconds.items()}, written, len(shapes)


def logits_check(predictions, windows, head_name):
    """(held bytes, one-copy bytes, description) of the gathered model outputs."""
    arrays = [np.asarray(p) for p in (predictions if isinstance(predictions, (tuple, list)) else (predictions,))]
    held = sum(a.nbytes for a in arrays)
    width = max(len(ids) for ids in windows["input_ids"][:])
    shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in arrays)
    if head_name == "span":
        one_copy = len(windows) * width * 4 * 2
    else:  # span_start, span_end (int64), span_score (float32): n_best_size per window; null_score (float32)
        n_best = arrays[0].shape[1] if arrays[0].ndim == 2 else 1
        one_copy = len(windows) * (n_best * (8 + 8 + 4) + 4)
    return held, one_copy, shapes


def main(argv=None):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--model", default=None, help="encoder or QA checkpoint folder (default: MiniLM-L6-H384)")
    parser.add_argument("--head", choices=("span", "crf"), default="span", help="run_qa.py's model or run_qa_crf.py's")
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--batch_size", type=int, default=32, help="per-device eval batch size")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--tiny", action="store_true", help="smoke size: the first 40 questions")
    parser.add_argument("--package_only", action="store_true", help="time only the package default (no static "
                                                                     "padding baseline): its speed and memory")
    args = parser.parse_args(argv)
    variants = ("dynamic",) if args.package_only else ("dynamic", "static")
    common.set_threads(args)
    common.quiet_libraries()
    from transformers import AutoTokenizer, set_seed

    head = head_for(args.head)
    model_path = args.model or common.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    limit = 40 if args.tiny and args.max_eval_samples is None else args.max_eval_samples
    questions = common.load_questions(common.data_file(args, args.dev_file, common.DEV_NAME), limit)
    set_seed(args.seed)
    model = load_model(head, model_path)
    windows, trainers = {}, {}
    tmp = tempfile.TemporaryDirectory()
    for name, pad in (("dynamic", False), ("static", True))[: len(variants)]:
        data_args = common.qa_data_args(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride,
                                        pad_to_max_length=pad)
        windows[name] = common.build_windows(questions, tokenizer, data_args, "eval")
        trainers[name] = make_trainer(head, model, tokenizer, questions, windows[name], data_args, args,
                                      os.path.join(tmp.name, name))

    warm_up(model, trainers, windows)
    runs = {name: [] for name in windows}
    answers = {name: [] for name in windows}
    with tmp:
        for _ in range(args.repeats):
            for name in variants:
                runs[name].append(evaluate_once(trainers[name], answers[name]))

    def med(name, key):
        return common.median([run[key] for run in runs[name]])

    rate = {name: len(windows[name]) / med(name, "forward") for name in runs}
    rows, memory_rows, check_rows = [], [], []
    labels = {"dynamic": "dynamic padding, sorted by length (package default)",
              "static": f"static padding to {args.max_seq_length}"}
    for name in variants:
        forward = [run["forward"] for run in runs[name]]
        rows.append((labels[name], f"{med(name, 'forward'):.2f}", common.runs_text(forward, 2), f"{rate[name]:.1f}",
                     f"{common.ratio(rate[name], rate['static']):.2f}" if "static" in rate else "n/a",
                     f"{med(name, 'total') - med(name, 'forward'):.2f}", f"{med(name, 'total'):.2f}"))
        peak = max(run["peak"] for run in runs[name])
        before = runs[name][-1]["before"]
        memory_rows.append((labels[name], f"{before:.0f}" if before is not None else "n/a", f"{peak:.0f}",
                            f"{peak - before:.0f}" if before is not None else "n/a"))
        held, one_copy, shapes = logits_check(runs[name][-1]["predictions"], windows[name], args.head)
        verdict = "ok" if held <= one_copy else "MORE than one copy"
        check_rows.append((labels[name], shapes, f"{held / 2**20:.1f}", f"{one_copy / 2**20:.1f}", verdict))
    gather_rows = []
    for name in variants:
        seconds, written, batches = gathering_seconds(windows[name], args.batch_size, args.repeats)
        gather_rows.append((labels[name], batches, f"{seconds['trainer']:.3f}", f"{written / 2**30:.2f}",
                            f"{seconds['package']:.3f}"))
    same = answers["dynamic"][-1] == answers["static"][-1] if "static" in answers else None
    metrics = runs["dynamic"][-1]["metrics"]
    resettable = all(run["resettable"] for name in runs for run in runs[name])
    one_copy_label = ("windows x widest batch x 4 B x 2 (MiB)" if args.head == "span"
                      else "windows x (n_best x 20 B + 4 B) (MiB)")
    common.print_report(
        f"Evaluation ({args.head} head): dynamic vs static padding",
        [
            (f"{args.model or 'MiniLM-L6-H384'}, {len(questions)} questions, {len(windows['dynamic'])} windows, "
             f"batch {args.batch_size} (ratio = windows/s / static windows/s)",
             ("variant", "forward median s", "forward runs s", "windows/s", "ratio", "post-processing + metric + "
              "files s", "whole evaluate() s"), rows),
            ("Peak RSS of the whole evaluation (MiB)" + ("" if resettable else " -- peak not resettable: "
                                                          "ru_maxrss of the whole process"),
             ("variant", "RSS before", "peak", "peak - before"), memory_rows),
            ("Gathered model outputs", ("variant", "arrays", "held MiB", one_copy_label, "check"), check_rows),
            ("Gathering (start, end) logits, replayed with the same batch shapes and no model: the Trainer's "
             "EvalLoopContainer (one concatenation of everything so far per batch) against the package's "
             "WindowOutputs (put together once)",
             ("variant", "batches", "Trainer median s", "GiB the Trainer's concatenations write", "package median s"),
             gather_rows),
            ("Sanity", ("", ""), [
                ("eval_exact / eval_f1 (dynamic)", f"{metrics.get('eval_exact', float('nan')):.2f} / "
                                                   f"{metrics.get('eval_f1', float('nan')):.2f}"),
                ("eval_predictions.json identical (dynamic vs static, last run)",
                 {True: "yes", False: "no", None: "n/a"}[same]),
            ]),
        ],
        notes=["forward = the Trainer's evaluation_loop (collation, model, gathering the logits); windows/s counts "
               "windows over the forward time"],
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
