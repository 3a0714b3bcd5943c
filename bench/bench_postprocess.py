#!/usr/bin/env python
"""Post-processing speed: the package's vectorised answer decoding against a plain per-candidate Python loop.

Both paths start from the same evaluation windows (the real dev set cut by `eval_features` with MiniLM's tokenizer,
max_seq_length 384, doc_stride 128, sorted by length as qa_runner does) and the same random float32 start/end
logits (fixed seed), shaped (windows, longest window) as the Trainer hands them over, and end with an answer per
question:

* package: `padded_offsets` + `span_head_candidates` + `question_predictions` (what qa_runner's post-processing
  runs), and separately the same + `write_prediction_files`;
* reference: a loop written here in the manner of the transformers example `postprocess_qa_predictions`: per
  window, the top-20 start and top-20 end token indices by `np.argsort`, a Python double loop over the pairs that
  skips non-context tokens, end < start and spans longer than 30 tokens, score = start + end logit (as float64
  Python floats); windows grouped by question; n-best 20 by score; null = the lowest [CLS] start + end over the
  question's windows; answer "" when null - best > 0.0; softmax probabilities. With output files it writes the same
  three JSON files with `json.dump`.

Two choices make the reference decode the package's definition rather than the example's, so that the answers
can be compared one for one: the top-20 starts and ends are taken among the window's context tokens (the example
ranks all tokens and then drops the non-context ones, which leaves fewer than 20 context candidates), and a window
none of whose top pairs is valid contributes its best single-token span (`span_decoding.span_candidates`).

The script asserts that both paths give the same answer for every question (and prints the count); scores differ
only by float32 vs float64 rounding, reported as the largest null-odds difference.

    python bench/bench_postprocess.py                 # full dev set (11,873 questions)
    python bench/bench_postprocess.py --tiny --repeats 1
"""

import argparse
import cProfile
import json
import math
import os
import pstats
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

import numpy as np  # noqa: E402


# ---- the package's path --------------------------------------------------------------------------------------------


def package_path(examples, features, logits, data_args, output_dir=None, read_columns=False):
    """QuestionPredictions from the package's functions, and {stage: seconds}.

    With `read_columns` the columns that `span_head_candidates` and `question_predictions` read are first read
    whole (`dataset[name][:]`, inside the timing) and handed over as dicts of lists: the package's functions are
    unchanged, only the row-by-row reads of datasets Columns are avoided.
    """
    from utils_qa import padded_offsets, question_predictions, span_head_candidates, write_prediction_files

    marks = [time.perf_counter()]
    offsets = padded_offsets(features)
    if read_columns:
        examples = {name: examples[name][:] for name in ("id", "context")}
        features = {name: features[name][:] for name in ("cls_index", "example_index")}
    marks.append(time.perf_counter())
    candidates = span_head_candidates(logits, features, offsets, data_args)
    marks.append(time.perf_counter())
    result = question_predictions(examples, features, offsets, candidates, data_args)
    marks.append(time.perf_counter())
    if output_dir is not None:
        write_prediction_files(result, output_dir, "eval")
        marks.append(time.perf_counter())
    names = ("padded_offsets", "span_head_candidates", "question_predictions", "write_prediction_files")
    return result, dict(zip(names, np.diff(marks)))


# ---- the reference loop --------------------------------------------------------------------------------------------


def top_indices(values, k):
    """Indices of the `k` largest values, best first, by a full argsort (as the transformers example does)."""
    return np.argsort(values)[-1 : -k - 1 : -1].tolist()


def reference_path(examples, features, logits, n_best=20, max_answer_length=30, threshold=0.0, output_dir=None):
    """(predictions, nbest, null_odds) by a per-candidate Python loop, and {stage: seconds}."""
    marks = [time.perf_counter()]
    # Each column read once into a Python list (`[:]`): a datasets Column read row by row costs far more.
    offset_rows = features["offset_mapping"][:]
    example_index = features["example_index"][:]
    cls_index = features["cls_index"][:]
    ids, contexts = examples["id"][:], examples["context"][:]
    marks.append(time.perf_counter())

    all_start, all_end = logits
    windows_of = defaultdict(list)
    for w, q in enumerate(example_index):
        windows_of[q].append(w)
    predictions, nbest, null_odds = {}, {}, {}
    for q, (qid, context) in enumerate(zip(ids, contexts)):
        min_null = None
        spans = []  # (score, start char, end char)
        for w in windows_of[q]:
            offsets = offset_rows[w]
            length = len(offsets)
            start_logits = all_start[w, :length].astype(np.float64)
            end_logits = all_end[w, :length].astype(np.float64)
            cls = cls_index[w]
            null = float(start_logits[cls] + end_logits[cls])
            if min_null is None or null < min_null:
                min_null = null
            is_context = np.array([o[0] >= 0 for o in offsets])
            if not is_context.any():
                continue
            context_start = np.where(is_context, start_logits, -np.inf)
            context_end = np.where(is_context, end_logits, -np.inf)
            starts, ends = start_logits.tolist(), end_logits.tolist()
            found = False
            for s in top_indices(context_start, n_best):
                if offsets[s][0] < 0:
                    continue
                for e in top_indices(context_end, n_best):
                    if offsets[e][0] < 0 or e < s or e - s + 1 > max_answer_length:
                        continue
                    spans.append((starts[s] + ends[e], offsets[s][0], offsets[e][1]))
                    found = True
            if not found:  # no valid pair among the top ones: the best single-token span
                token = int(np.argmax(context_start + context_end))
                spans.append((starts[token] + ends[token], offsets[token][0], offsets[token][1]))
        spans.sort(key=lambda span: -span[0])
        answers = [{"text": context[s:e], "start": s, "end": e, "score": score} for score, s, e in spans[:n_best]]
        best_score = answers[0]["score"] if answers else -math.inf
        best_text = answers[0]["text"] if answers else ""
        answers.append({"text": "", "start": 0, "end": 0, "score": min_null})
        answers.sort(key=lambda answer: -answer["score"])
        top = answers[0]["score"]
        exps = [math.exp(answer["score"] - top) for answer in answers]
        total = sum(exps)
        for answer, value in zip(answers, exps):
            answer["probability"] = value / total
        null_odds[qid] = min_null - best_score
        predictions[qid] = "" if null_odds[qid] > threshold else best_text
        nbest[qid] = answers
    marks.append(time.perf_counter())
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        for name, payload in (("predictions", predictions), ("nbest_predictions", nbest), ("null_odds", null_odds)):
            with open(os.path.join(output_dir, f"eval_{name}.json"), "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=2, ensure_ascii=False)
                f.write("\n")
        marks.append(time.perf_counter())
    names = ("read columns", "loop", "write files")
    return (predictions, nbest, null_odds), dict(zip(names, np.diff(marks)))


# ---- the bench -----------------------------------------------------------------------------------------------------


def compare(package_result, reference_result):
    """(identical answers, questions, identical n-best texts, largest |null odds difference|, first mismatches)."""
    predictions, nbest, null_odds = reference_result
    same = [qid for qid in predictions if package_result.predictions.get(qid) == predictions[qid]]
    mismatches = [(qid, package_result.predictions.get(qid), predictions[qid])
                  for qid in predictions if package_result.predictions.get(qid) != predictions[qid]]
    same_nbest = sum(
        [a["text"] for a in package_result.nbest[qid]] == [a["text"] for a in nbest[qid]] for qid in nbest
    )
    finite = [abs(package_result.null_odds[qid] - null_odds[qid]) for qid in null_odds if math.isfinite(null_odds[qid])]
    return len(same), len(predictions), same_nbest, max(finite, default=0.0), mismatches[:5]


def median_stages(stage_runs, repeats):
    stage_runs = stage_runs[-repeats:]  # the timed runs, not the warm-up
    names = stage_runs[0].keys()
    return {name: common.median([run[name] for run in stage_runs]) for name in names}


def traced_peaks_mib(examples, features, logits, data_args):
    """Peak memory allocated above the start (Python objects and numpy buffers, by tracemalloc) during the package's
    numpy stages (padded_offsets + span_head_candidates) and during question_predictions, in MiB."""
    from utils_qa import padded_offsets, question_predictions, span_head_candidates

    tracemalloc.start()
    try:
        offsets = padded_offsets(features)
        candidates = span_head_candidates(logits, features, offsets, data_args)
        numpy_peak = tracemalloc.get_traced_memory()[1]
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        question_predictions(examples, features, offsets, candidates, data_args)
        answers_peak = tracemalloc.get_traced_memory()[1] - held
        return numpy_peak / 2**20, answers_peak / 2**20
    finally:
        tracemalloc.stop()


def main(argv=None):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--dev_file", default=None,
                        help="SQuAD v2 JSON of the questions (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--tiny", action="store_true", help="smoke size: the first 100 questions")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: MiniLM-L6-H384's)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one package run")
    args = parser.parse_args(argv)
    common.set_threads(args)
    common.quiet_libraries()
    from transformers import AutoTokenizer

    limit = 100 if args.tiny and args.max_eval_samples is None else args.max_eval_samples
    examples = common.load_questions(common.data_file(args, args.dev_file, common.DEV_NAME), limit)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or common.minilm_path())
    data_args = common.qa_data_args(max_seq_length=384, doc_stride=128, n_best_size=20, max_answer_length=30)
    setup_seconds, features = common.timed(common.build_windows, examples, tokenizer, data_args, "eval")
    width = max(features["length"][:])
    rng = np.random.default_rng(args.seed)
    logits = tuple(rng.standard_normal((len(features), width), dtype=np.float32) for _ in range(2))
    logits_mib = sum(a.nbytes for a in logits) / 2**20

    with tempfile.TemporaryDirectory() as tmp:
        package_dir, reference_dir = os.path.join(tmp, "package"), os.path.join(tmp, "reference")
        stages = defaultdict(list)

        def run(name, function):
            def call():
                result, stage_seconds = function()
                stages[name].append(stage_seconds)
                return result
            return name, call

        variants = [
            run("package", lambda: package_path(examples, features, logits, data_args)),
            run("reference", lambda: reference_path(examples, features, logits)),
            run("package, columns read whole", lambda: package_path(examples, features, logits, data_args,
                                                                    read_columns=True)),
            run("package + files", lambda: package_path(examples, features, logits, data_args, package_dir)),
            run("reference + files", lambda: reference_path(examples, features, logits, output_dir=reference_dir)),
        ]
        seconds, results = common.interleaved(variants, args.repeats, warmup=True)
        same, total, same_nbest, odds_diff, mismatches = compare(results["package"], results["reference"])
        assert results["package, columns read whole"].predictions == results["package"].predictions
        files_same = all(
            Path(package_dir, f"eval_{name}.json").read_bytes() == Path(reference_dir, f"eval_{name}.json").read_bytes()
            for name in ("predictions",)
        )
        numpy_peak, answers_peak = traced_peaks_mib(examples, features, logits, data_args)

    med = {name: common.median(values) for name, values in seconds.items()}
    rows = [
        ("package: padded_offsets + span_head_candidates + question_predictions", f"{med['package']:.3f}",
         common.runs_text(seconds["package"]), "1.00"),
        ("reference: per-candidate Python loop", f"{med['reference']:.3f}", common.runs_text(seconds["reference"]),
         f"{common.ratio(med['reference'], med['package']):.2f}"),
        ("package, the datasets columns read whole first (`column[:]`; same functions)",
         f"{med['package, columns read whole']:.3f}", common.runs_text(seconds["package, columns read whole"]),
         f"{common.ratio(med['package, columns read whole'], med['package']):.2f}"),
        ("package + write_prediction_files", f"{med['package + files']:.3f}",
         common.runs_text(seconds["package + files"]), "1.00"),
        ("reference + json.dump of the same files", f"{med['reference + files']:.3f}",
         common.runs_text(seconds["reference + files"]),
         f"{common.ratio(med['reference + files'], med['package + files']):.2f}"),
    ]
    stage_rows = [(f"{path}: {name}", f"{value:.3f}") for path in ("package", "reference")
                  for name, value in median_stages(stages[f"{path} + files"], args.repeats).items()]
    checks = [
        ("questions / windows / longest window", f"{total} / {len(features)} / {width}"),
        ("identical answers (package vs reference)", f"{same} / {total}"),
        ("identical n-best answer lists (texts, in order)", f"{same_nbest} / {total}"),
        ("identical eval_predictions.json bytes", "yes" if files_same else "no"),
        ("largest null-odds difference (float32 vs float64 scores)", f"{odds_diff:.2e}"),
        ("logits (start + end, float32)", f"{logits_mib:.1f} MiB"),
        ("peak traced allocation: padded_offsets + span_head_candidates (numpy)", f"{numpy_peak:.1f} MiB"),
        ("peak traced allocation: question_predictions (answer dicts)", f"{answers_peak:.1f} MiB"),
        ("window preparation (eval_features + sort, untimed above)", f"{setup_seconds:.1f} s"),
    ]
    common.print_report(
        "Post-processing: vectorised package vs per-candidate loop",
        [
            ("Seconds for all questions (ratio = time / the package's time above it)",
             ("path", "median s", "runs s", "ratio"), rows),
            ("Stages (median s, runs with output files)", ("stage", "median s"), stage_rows),
            ("Checks", ("check", "value"), checks),
        ],
        notes=["each variant runs once untimed before the timed rounds",
               "random N(0, 1) float32 logits, seed "
               f"{args.seed}; max_seq_length 384, doc_stride 128, n_best 20, max_answer_length 30, threshold 0.0"],
        repeats=args.repeats,
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        package_path(examples, features, logits, data_args)
        profiler.disable()
        print("\n**cProfile of one package run (top 15 by own time)**\n\n```")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
        print("```")
    if same != total:
        raise SystemExit(f"error: {total - same} answer(s) differ between the package and the reference, e.g. "
                         f"{mismatches}")


if __name__ == "__main__":
    main()
