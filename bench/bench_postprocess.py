#!/usr/bin/env python
"""Post-processing: the package's exact, vectorised span search and answer decoding against the transformers
example's top-20 x top-20 search written as a plain per-candidate Python loop.

Both paths start from the same evaluation windows (the real dev set cut by `eval_features` with MiniLM's tokenizer,
or `--model`'s, max_seq_length 384, doc_stride 128, sorted by length as qa_runner does) and the same float32
start/end logits, shaped (windows, longest window) as the Trainer hands them over, and end with an answer per
question. The logits are random N(0, 1) (fixed seed), or with `--model FOLDER` those of a fine-tuned span QA model
run over the windows (batches of 32, longest windows first, each batch padded on the right to its longest window by
`qa_windows.WindowCollator`, `torch.inference_mode()`; -100 past each batch's width, as the Trainer pads them);
`--save_logits` / `--load_logits` keep them in a .npz so that the forward pass is not repeated.

* package: `padded_offsets` + `evaluation_candidates("span", ...)` + `question_predictions` (what qa_runner's
  post-processing runs), and separately the same + `write_prediction_files`. A window's candidates are its 20 best
  valid spans found exactly (`span_decoding.best_spans`: both ends context tokens, start <= end, at most 30
  tokens), scores in float32.
* reference: a loop written here in the manner of the transformers example `postprocess_qa_predictions`: per
  window, the top-20 start and top-20 end token indices by `np.argsort`, a Python double loop over the pairs that
  skips non-context tokens, end < start and spans longer than 30 tokens, score = start + end logit (as float64
  Python floats); windows grouped by question; n-best 20 by score; null = the lowest [CLS] start + end over the
  question's windows; answer "" when null - best > 0.0; softmax probabilities. With output files it writes the same
  three JSON files with `json.dump`. Two departures from the example: the top-20 starts and ends are taken among
  the window's context tokens (the example ranks all tokens and then drops the non-context ones, which leaves
  fewer than 20 context candidates), and a window none of whose top pairs is valid contributes its best
  single-token span (the example contributes nothing).

The reference searches 20 x 20 pairs per window, so it misses the best valid span when that span's start or end
ranks below the 20th (e.g. when the top ends lie before the top starts or more than 30 tokens after them); the
exact search cannot miss it. The script reports how many questions get a different best span and a different
answer (after the null threshold), and asserts for every question that the package's best span score is >= the
reference's (up to float32 rounding: 1e-4); it exits non-zero otherwise. It also times both paths and their
stages, and the peak memory the package's stages allocate (tracemalloc).

    python bench/bench_postprocess.py                 # full dev set (11,873 questions), random logits
    python bench/bench_postprocess.py --model MODEL --save_logits dev_logits.npz --repeats 1
    python bench/bench_postprocess.py --load_logits dev_logits.npz --tokenizer MODEL
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
    """(QuestionPredictions, WindowCandidates, offsets) from the package's functions, and {stage: seconds}.

    With `read_columns` the columns that `evaluation_candidates` and `question_predictions` read are first read
    whole (`dataset[name][:]`, inside the timing) and handed over as dicts of lists: the package's functions are
    unchanged, only the row-by-row reads of datasets Columns are avoided.
    """
    from outputs import write_prediction_files
    from qa_data import QuestionSet
    from utils_qa import evaluation_candidates, padded_offsets, question_predictions

    marks = [time.perf_counter()]
    offsets = padded_offsets(features)
    if read_columns:
        examples = {name: examples[name][:] for name in ("id", "context")}
        features = {name: features[name][:] for name in ("cls_index", "example_index")}
    marks.append(time.perf_counter())
    candidates = evaluation_candidates(data_args.qa_settings("span"), logits, features, offsets)
    marks.append(time.perf_counter())
    result = question_predictions(QuestionSet(examples), features, offsets, candidates, data_args.qa_settings("span"))
    marks.append(time.perf_counter())
    if output_dir is not None:
        write_prediction_files(result, output_dir, "eval")
        marks.append(time.perf_counter())
    names = ("padded_offsets", "evaluation_candidates", "question_predictions", "write_prediction_files")
    return (result, candidates, offsets), dict(zip(names, np.diff(marks)))


# ---- the reference loop --------------------------------------------------------------------------------------------


def top_indices(values, k):
    """Indices of the `k` largest values, best first, by a full argsort (as the transformers example does)."""
    return np.argsort(values)[-1 : -k - 1 : -1].tolist()


def reference_path(examples, features, logits, n_best=20, max_answer_length=30, threshold=0.0, output_dir=None):
    """(predictions, nbest, null_odds, best span) by a per-candidate Python loop, and {stage: seconds}; best span:
    {question id: (score, start char, end char)} of the best non-null span, for the questions that have one."""
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
    predictions, nbest, null_odds, best_span = {}, {}, {}, {}
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
        if spans:
            best_span[qid] = spans[0]
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
    return (predictions, nbest, null_odds, best_span), dict(zip(names, np.diff(marks)))


# ---- the comparison ------------------------------------------------------------------------------------------------


SCORE_TOLERANCE = 1e-4  # float32 sums (package) against float64 sums (reference) of the same float32 logits


def package_best_spans(examples, features, candidates, offsets):
    """{question id: (score, start char, end char)} of each question's best span among the package's candidates,
    ranked as `qa_decoding.ranked_answers` ranks them (by score, equal scores in window order, then as the window
    ranked them), for the questions that have one."""
    question = np.asarray(features["example_index"][:])[candidates.window]
    order = np.lexsort((-candidates.score, question))
    first = order[np.r_[True, question[order][1:] != question[order][:-1]]] if len(order) else order
    window, start, end = candidates.window[first], candidates.start[first], candidates.end[first]
    ids = examples["id"][:]
    return {ids[q]: (score, s, e) for q, score, s, e in zip(
        question[first].tolist(), candidates.score[first].tolist(), offsets[window, start, 0].tolist(),
        offsets[window, end, 1].tolist())}


def compare(examples, features, package_output, reference_result):
    """What differs between the package's answers and the reference's, and whether the package's best span always
    scores at least as high: a dict of counts and the questions whose answers differ."""
    result, candidates, offsets = package_output
    predictions, nbest, null_odds, reference_best = reference_result
    package_best = package_best_spans(examples, features, candidates, offsets)
    ids = examples["id"][:]
    stats = {"questions": len(ids), "same answers": 0, "same best span": 0, "higher score": 0, "same nbest": 0,
             "largest gain": 0.0, "largest rounding": 0.0, "largest odds rounding": 0.0, "worse": [], "changed": []}
    for qid in ids:
        package_span = package_best.get(qid, (-math.inf, None, None))
        reference_span = reference_best.get(qid, (-math.inf, None, None))
        if result.predictions[qid] == predictions[qid]:
            stats["same answers"] += 1
        else:
            stats["changed"].append((qid, result.predictions[qid], predictions[qid], package_span[0],
                                     reference_span[0]))
        if [a["text"] for a in result.nbest[qid]] == [a["text"] for a in nbest[qid]]:
            stats["same nbest"] += 1
        gap = package_span[0] - reference_span[0] if math.isfinite(reference_span[0]) else math.inf
        if package_span[1:] == reference_span[1:]:
            stats["same best span"] += 1
            if math.isfinite(reference_span[0]):
                stats["largest rounding"] = max(stats["largest rounding"], abs(gap))
                stats["largest odds rounding"] = max(stats["largest odds rounding"],
                                                     abs(result.null_odds[qid] - null_odds[qid]))
        elif gap > SCORE_TOLERANCE:
            stats["higher score"] += 1
            if math.isfinite(gap):
                stats["largest gain"] = max(stats["largest gain"], gap)
        if gap < -SCORE_TOLERANCE:
            stats["worse"].append((qid, package_span, reference_span))
    return stats


def median_stages(stage_runs, repeats):
    stage_runs = stage_runs[-repeats:]  # the timed runs, not the warm-up
    names = stage_runs[0].keys()
    return {name: common.median([run[name] for run in stage_runs]) for name in names}


def traced_peaks_mib(examples, features, logits, data_args):
    """Peak memory allocated above the start (Python objects and numpy buffers, by tracemalloc) during the package's
    numpy stages (padded_offsets + evaluation_candidates) and during question_predictions, in MiB."""
    from qa_data import QuestionSet
    from utils_qa import evaluation_candidates, padded_offsets, question_predictions

    tracemalloc.start()
    try:
        offsets = padded_offsets(features)
        candidates = evaluation_candidates(data_args.qa_settings("span"), logits, features, offsets)
        numpy_peak = tracemalloc.get_traced_memory()[1]
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        question_predictions(QuestionSet(examples), features, offsets, candidates, data_args.qa_settings("span"))
        answers_peak = tracemalloc.get_traced_memory()[1] - held
        return numpy_peak / 2**20, answers_peak / 2**20
    finally:
        tracemalloc.stop()


# ---- the logits ----------------------------------------------------------------------------------------------------

EVAL_BATCH = 32


def model_logits(model_dir, tokenizer, features, width, batch_size=EVAL_BATCH):
    """(start, end) float32 logits (windows, width) of a span QA model over `features` (sorted longest first):
    batches of `batch_size` in order, each padded on the right to its longest window by `WindowCollator`, the model
    inputs being the tokenizer's `model_input_names`; -100 past each batch's width, as the Trainer pads them."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    from model_folder.qa_windows import WindowCollator

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    model.eval()
    names = [name for name in tokenizer.model_input_names if name in features.column_names]
    rows = features.select_columns(names)
    collate = WindowCollator(tokenizer.pad_token_id)
    start_logits, end_logits = (np.full((len(rows), width), -100, dtype=np.float32) for _ in range(2))
    with torch.inference_mode():
        for first in range(0, len(rows), batch_size):
            columns = rows[first : first + batch_size]
            batch = collate([dict(zip(columns, values)) for values in zip(*columns.values())])
            output = model(**batch)
            size, batch_width = output.start_logits.shape
            start_logits[first : first + size, :batch_width] = output.start_logits.float().numpy()
            end_logits[first : first + size, :batch_width] = output.end_logits.float().numpy()
    return start_logits, end_logits


def load_logits(path, windows, width):
    with np.load(path) as saved:
        logits = (saved["start_logits"], saved["end_logits"])
        source = str(saved["source"]) if "source" in saved else "?"
    if any(array.shape != (windows, width) for array in logits):
        raise SystemExit(f"error: {path} holds logits of shape {logits[0].shape}, these windows need "
                         f"{(windows, width)} (same questions, tokenizer, max_seq_length 384, doc_stride 128?)")
    return tuple(array.astype(np.float32, copy=False) for array in logits), source


def get_logits(args, tokenizer, features, width):
    """(start, end) logits, seconds of the model's forward pass (None when not run), and what they are."""
    if args.load_logits:
        logits, source = load_logits(args.load_logits, len(features), width)
        return logits, None, f"logits of {source}, loaded from {args.load_logits}"
    if args.model:
        seconds, logits = common.timed(model_logits, args.model, tokenizer, features, width)
        source = f"the model {args.model}"
    else:
        rng = np.random.default_rng(args.seed)
        logits = tuple(rng.standard_normal((len(features), width), dtype=np.float32) for _ in range(2))
        seconds, source = None, f"random N(0, 1), seed {args.seed}"
    if args.save_logits:
        np.savez(args.save_logits, start_logits=logits[0], end_logits=logits[1], source=np.array(source))
    return logits, seconds, f"logits of {source}"


# ---- the bench -----------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--dev_file", default=None,
                        help="SQuAD v2 JSON of the questions (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--tiny", action="store_true", help="smoke size: the first 100 questions")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder (default: --model's, else MiniLM-L6-H384's)")
    parser.add_argument("--model", default=None,
                        help="a fine-tuned span QA model folder: its start/end logits over the windows instead of "
                             "random ones")
    parser.add_argument("--save_logits", default=None, help="write the logits used to this .npz")
    parser.add_argument("--load_logits", default=None,
                        help="read the logits from this .npz (from --save_logits on the same questions) instead of "
                             "running --model")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one package run")
    args = parser.parse_args(argv)
    common.set_threads(args)
    common.quiet_libraries()
    from transformers import AutoTokenizer

    limit = 100 if args.tiny and args.max_eval_samples is None else args.max_eval_samples
    examples = common.load_questions(common.data_file(args, args.dev_file, common.DEV_NAME), limit)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model or common.minilm_path())
    data_args = common.qa_data_args(max_seq_length=384, doc_stride=128, n_best_size=20, max_answer_length=30)
    setup_seconds, features = common.timed(common.build_windows, examples, tokenizer, data_args, "eval")
    width = max(features["length"][:])
    logits, forward_seconds, logits_source = get_logits(args, tokenizer, features, width)
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
        stats = compare(examples, features, results["package"], results["reference"])
        assert results["package, columns read whole"][0].predictions == results["package"][0].predictions
        files_same = all(
            Path(package_dir, f"eval_{name}.json").read_bytes() == Path(reference_dir, f"eval_{name}.json").read_bytes()
            for name in ("predictions",)
        )
        numpy_peak, answers_peak = traced_peaks_mib(examples, features, logits, data_args)

    total = stats["questions"]
    differ = total - stats["same best span"]
    med = {name: common.median(values) for name, values in seconds.items()}
    rows = [
        ("package: padded_offsets + evaluation_candidates + question_predictions", f"{med['package']:.3f}",
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
        ("questions whose best span differs (exact search vs top-20 x top-20)", f"{differ} / {total}"),
        ("... of which the package's best span scores higher", f"{stats['higher score']} / {differ}"),
        ("largest best-span score gain of the exact search", f"{stats['largest gain']:.4f}"),
        ("questions whose answer differs (after the null threshold 0.0)",
         f"{total - stats['same answers']} / {total}"),
        ("package best span score >= reference's (every question, tolerance 1e-4)",
         f"{total - len(stats['worse'])} / {total}"),
        ("identical n-best answer lists (texts, in order)", f"{stats['same nbest']} / {total}"),
        ("identical eval_predictions.json bytes", "yes" if files_same else "no"),
        ("largest best-score / null-odds difference where the best span is the same (float32 vs float64)",
         f"{stats['largest rounding']:.2e} / {stats['largest odds rounding']:.2e}"),
        ("logits (start + end, float32)", f"{logits_mib:.1f} MiB"),
        ("peak traced allocation: padded_offsets + evaluation_candidates (numpy)", f"{numpy_peak:.1f} MiB"),
        ("peak traced allocation: question_predictions (answer dicts)", f"{answers_peak:.1f} MiB"),
        ("window preparation (eval_features + sort, untimed above)", f"{setup_seconds:.1f} s"),
    ]
    if forward_seconds is not None:
        checks.append((f"model forward over the windows (batch {EVAL_BATCH}, untimed above)",
                       f"{forward_seconds:.1f} s"))
    changed_rows = [(qid, repr(package), repr(reference), f"{package_score:.4f}", f"{reference_score:.4f}")
                    for qid, package, reference, package_score, reference_score in stats["changed"][:5]]
    common.print_report(
        "Post-processing: exact vectorised package vs the example's top-20 x top-20 loop",
        [
            ("Seconds for all questions (ratio = time / the package's time above it)",
             ("path", "median s", "runs s", "ratio"), rows),
            ("Stages (median s, runs with output files)", ("stage", "median s"), stage_rows),
            ("Checks", ("check", "value"), checks),
            *([(f"Changed answers (the first {len(changed_rows)} of {len(stats['changed'])})",
                ("id", "package", "reference", "package best score", "reference best score"), changed_rows)]
              if changed_rows else []),
        ],
        notes=[f"{logits_source}; max_seq_length 384, doc_stride 128, n_best 20, max_answer_length 30, "
               "threshold 0.0",
               "each variant runs once untimed before the timed rounds"],
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
    if stats["worse"]:
        raise SystemExit(f"error: the package's best span scores below the reference's for {len(stats['worse'])} "
                         f"question(s), e.g. (id, (score, start, end) package, reference): {stats['worse'][:5]}")


if __name__ == "__main__":
    main()
