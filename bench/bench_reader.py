#!/usr/bin/env python
"""One question over many passages: the reader against today's habit and Haystack's scoring, on the same passages.

The benchmark (`reader_data.collections_from_squad`): each question of a SQuAD v2 file asked of 10 paragraphs of
its article, its own and the 9 sharing the most words with the question. Every rule answers with the same model
folder (run with this tree's pipeline code), questions, passages and windows, the pipeline's defaults otherwise:
- (a) today's habit: the pipeline asked of each passage alone (`handle_impossible_answer=True`); the best non-empty
  answer by `score` (transformers 4's), "" only when every passage answers "";
- (b) Haystack's scoring, restated from its documentation, on the reader's spans: a span scores
  sigmoid(0.1 x (start logit + end logit)), the empty answer the product of (1 - score) over the top 20 answers,
  and the higher of the best span and the empty answer is the answer (span models: Haystack reads start / end
  logits, which a CRF model has not);
- (c) the reader, `qa(question=..., passages=[...], handle_impossible_answer=True)`: spans ranked across the
  passages, the collection's null score the lowest of all its windows', the folder's threshold.
Figures: exact, F1 and best_f1 (the SQuAD v2 metric; best_f1 over each rule's no-answer score: (b) no-answer
probability - best span score, (c) null odds; (a) has none), NoAns accuracy (unanswerable questions answered ""),
top answers from a passage holding a gold answer (its text contains one), and the expected calibration error of the
top answer's probability on the questions of odd-numbered articles ((a) its score, (b) its Haystack score, (c)
`probability`: the folder's calibrator, and each `--calibrator` folder's, such as one fitted by `run_qa.py
--calibrate` on a reader file of the even-numbered articles: `examples/build_reader_data.py`).
Speed, on the first `--speed_questions`: questions/s of the reader, of one pipeline call per passage, and of the
bare model forward over the reader's windows (sorted by length, the same batches). With `--bf16` every rule and the
bare forward run the encoder under bf16 autocast (the pipeline's `bf16=True`).

    python bench/bench_reader.py --model outputs/minilm-span-recipe-calibrated --max_questions 2000 \\
        --calibrator outputs/minilm-span-recipe-reader-calibrated --predictions results/reader
    python bench/bench_reader.py --tiny --repeats 1 --model MODEL_FOLDER --dev_file data/sample/dev-v2.0.json
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sets up paths and offline settings)

import numpy as np  # noqa: E402

from calibration_fitting import reliability  # noqa: E402
from metrics.squad_v2.compute_score import best_score, exact_match, gold_answers, squad_v2_scores  # noqa: E402
from model_folder import PIPELINE_FILES  # noqa: E402
from model_folder.qa_settings import QASettings  # noqa: E402
from reader_data import collections_from_squad, read_squad  # noqa: E402

HAYSTACK_TOP_K = 20  # Haystack's reader's default top_k: the answers whose scores make its no-answer probability


def with_this_code(folder):
    """A temporary copy of a model folder (its weights linked, not copied) carrying this tree's pipeline code."""
    copy = Path(tempfile.mkdtemp(prefix="reader-bench-"))
    for path in Path(folder).iterdir():
        if path.suffix != ".py" and path.is_file():
            (copy / path.name).symlink_to(path.resolve())
    crf = (Path(folder) / "modeling_crf.py").exists()
    for path in [*PIPELINE_FILES, *([common.ROOT / "model_folder" / "modeling_crf.py",
                                     common.ROOT / "model_folder" / "crf_decoding.py"] if crf else [])]:
        shutil.copy(path, copy / Path(path).name)
    return copy


def haystack_answer(answers):
    """(answer text, its score, no-answer probability - best span score) by Haystack's scoring of the collection's
    ranked spans (`answers`, each with its start + end logit as `rank`)."""
    scores = [1.0 / (1.0 + math.exp(-0.1 * a["rank"])) for a in answers[:HAYSTACK_TOP_K]]
    no_answer = math.prod(1.0 - s for s in scores)
    best = scores[0] if scores else 0.0
    return ("", no_answer, no_answer - best) if no_answer > best else (answers[0]["answer"], best, no_answer - best)


def habit_answer(per_passage):
    """(answer, its score, its passage) of today's habit from each passage's pipeline answer."""
    spans = [(a["score"], p, a["answer"]) for p, a in enumerate(per_passage) if a["answer"]]
    if spans:
        score, passage, text = max(spans)
        return text, score, passage
    return "", min(a["score"] for a in per_passage), None


def right(text, golds):
    return best_score(exact_match, text, golds) == 1


def holds_gold(passage_text, golds):
    return any(g and g in passage_text for g in golds)


def decoded(qa, records, batch_size, bf16):
    """Per record, what (b) and (c) answer from one pass of the reader's windows through the model (under bf16
    autocast with `bf16`), and the reader's evidence (ranked spans, null rank, the top span's passage) for answering
    with another folder's threshold and calibrator (`settings_answer`); with the seconds the pass took."""
    module = sys.modules[type(qa).__module__]
    items = [module.checked({"question": r["question"], "passages": r["passages"]}, f"record {i}")
             for i, r in enumerate(records)]
    start, rows = time.perf_counter(), []
    for windows in qa.length_sorted_outputs(iter(items), batch_size, {}, {"bf16": bf16}):
        answer = qa.postprocess(windows, top_k=1, handle_impossible_answer=True)
        spans, null_rank, _ = qa.ranked_spans(windows, HAYSTACK_TOP_K, qa.settings.max_answer_length, True)
        best_rank = spans[0]["rank"] if spans else -math.inf
        passage = answer["passage"] if answer["answer"] else None
        top = int(windows[0]["passages"].passage_of([spans[0]["start"]])[0]) if spans else None
        text, score, odds = haystack_answer(spans) if qa.head == "span" else ("", None, None)
        rows.append({"reader": (answer["answer"], answer.get("probability", answer["score"]), null_rank - best_rank,
                                passage),
                     "haystack": (text, score, odds, top if text else None),
                     "evidence": ([a["answer"] for a in spans], [a["rank"] for a in spans], null_rank, top)})
    return time.perf_counter() - start, rows


def settings_answer(settings, evidence):
    """(answer, probability, its passage) the pipeline returns for a question's reader evidence with the threshold
    and calibrator of `settings`."""
    texts, ranks, null_rank, passage = evidence
    spans, empty = settings.calibrator.answer_probabilities(texts, ranks, null_rank)
    if not texts or null_rank - ranks[0] > settings.null_score_diff_threshold:
        return "", empty, None
    return texts[0], spans[0], passage


def figures(name, answers, records, best_spans, no_answer_scores, probabilities, held_out):
    """A table row: exact and F1 of the `answers` ((text, passage) each), best_f1 of the `best_spans` over the
    `no_answer_scores` (where the rule has them), NoAns accuracy, top answers from a passage holding a gold answer,
    and the ECE of the answers' `probabilities` over the `held_out` questions."""
    references = {r["id"]: r["answers"]["text"] for r in records}
    scores = squad_v2_scores({r["id"]: (a[0], 0.0) for r, a in zip(records, answers)}, references, math.inf)
    best_f1 = "-"
    if no_answer_scores:
        best_f1 = f"{squad_v2_scores(dict(zip(references, zip(best_spans, no_answer_scores))), references)['best_f1']:.2f}"
    no_ans = [not a[0] for a, r in zip(answers, records) if not r["answers"]["text"]]
    from_gold = [a[1] is not None and holds_gold(r["passages"][a[1]]["text"], r["answers"]["text"])
                 for a, r in zip(answers, records) if a[0] and r["answers"]["text"]]
    held = [(a, r, p) for a, r, p, k in zip(answers, records, probabilities, held_out) if k]
    ece = reliability([p for _, _, p in held], [right(a[0], gold_answers(r["answers"]["text"])) for a, r, _ in held])
    return [name, f"{scores['exact']:.2f}", f"{scores['f1']:.2f}", best_f1,
            f"{100 * np.mean(no_ans):.1f}" if no_ans else "-", f"{100 * np.mean(from_gold):.1f}" if from_gold else "-",
            f"{ece['ece']:.4f}" if held else "-"]


def per_passage_answers(qa, records, batch_size):
    """(seconds, each record's per-passage pipeline answers): every (question, passage) pair in one batched call."""
    pairs = [{"question": r["question"], "context": p["text"]} for r in records for p in r["passages"]]
    seconds, flat = common.timed(qa, pairs, batch_size=batch_size, handle_impossible_answer=True)
    out, i = [], 0
    for r in records:
        out.append(flat[i : i + len(r["passages"])])
        i += len(r["passages"])
    return seconds, out


def speed(qa, records, batch_size, repeats, bf16):
    """{row: [seconds per run]} of the reader, one pipeline call per passage (both built with the pipeline's `bf16`),
    and the bare forward of the reader's windows in the reader's batches (under bf16 autocast with `bf16`); and the
    number of windows."""
    import torch

    from model_folder.qa_windows import WindowCollator

    module = sys.modules[type(qa).__module__]
    items = [module.checked({"question": r["question"], "passages": r["passages"]}, "record") for r in records]
    windows = [w for question in qa.question_windows(items) for w in question]
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]["offsets"]))
    collate = WindowCollator(qa.tokenizer.pad_token_id)
    inputs = [k for k in windows[0] if k not in module.EXTRAS and (k != "context_mask" or qa.head != "span")]
    batches = [collate([{k: windows[i][k][0] for k in inputs} for i in order[f : f + batch_size]])
               for f in range(0, len(order), batch_size)]

    def bare():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for batch in batches:
                qa.model(**batch)

    def one_call_per_passage():
        for r in records:
            for p in r["passages"]:
                qa(question=r["question"], context=p["text"], handle_impossible_answer=True, batch_size=batch_size)

    variants = [("reader", lambda: qa([{"question": r["question"], "passages": r["passages"]} for r in records],
                                      batch_size=batch_size, handle_impossible_answer=True)),
                ("one call per passage", one_call_per_passage), ("bare forward", bare)]
    seconds, _ = common.interleaved(variants, repeats, warmup=True)
    return seconds, len(windows)


def main():
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--model", required=True, help="a model folder saved by run_qa.py or run_qa_crf.py "
                                                       "(single-span)")
    parser.add_argument("--dev_file", help=f"SQuAD v2 file (default: --data_dir's {common.DEV_NAME})")
    parser.add_argument("--max_questions", type=int, default=2000)
    parser.add_argument("--passages", type=int, default=10)
    parser.add_argument("--articles", choices=("all", "odd"), default="all",
                        help="odd: only the questions of odd-numbered articles among the first --max_questions (held "
                             "out from a calibrator and threshold fitted on the even ones)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--speed_questions", type=int, default=50)
    parser.add_argument("--calibrator", action="append", default=[], metavar="FOLDER",
                        help="a row of (c) answering with the no-answer threshold and calibrator of this model "
                             "folder's config (such as `run_qa.py --calibrate` on a reader file stores); repeatable")
    parser.add_argument("--predictions", help="folder to write each rule's answers into (JSON, for re-scoring)")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: the first 8 questions, 4 for speed")
    parser.add_argument("--bf16", action="store_true", help="every rule and the bare forward under bf16 autocast")
    args = parser.parse_args()
    common.set_threads(args)
    common.quiet_libraries()
    if args.tiny:
        args.speed_questions = 4
    from transformers import AutoConfig, pipeline

    squad = read_squad(common.data_file(args, args.dev_file, common.DEV_NAME))
    records = collections_from_squad(squad, args.passages)[: args.max_questions]
    if args.articles == "odd":
        records = [r for r in records if r["article"] % 2 == 1]
    records = records[: 8 if args.tiny else None]
    qa = pipeline("question-answering", model=str(with_this_code(args.model)), trust_remote_code=True, bf16=args.bf16)
    threshold = qa.settings.null_score_diff_threshold
    reader_seconds, rows = decoded(qa, records, args.batch_size, args.bf16)
    habit_seconds, per_passage = per_passage_answers(qa, records, args.batch_size)
    habit = [habit_answer(answers) for answers in per_passage]
    odd = [r["article"] % 2 == 1 for r in records]
    odds = [o for _, _, o, _ in (row["reader"] for row in rows)]
    best_spans = [row["evidence"][0][0] if row["evidence"][0] else "" for row in rows]
    # (name, file stem, [(answer, passage)], no-answer scores or None, probabilities)
    rules = [("(a) the pipeline per passage, best `score`", "habit", [(a, p) for a, _, p in habit], None,
              [s for _, s, _ in habit]),
             *([("(b) Haystack's scoring", "haystack", [(a, p) for a, _, _, p in (row["haystack"] for row in rows)],
                 [o for _, _, o, _ in (row["haystack"] for row in rows)],
                 [s for _, s, _, _ in (r["haystack"] for r in rows)])] if qa.head == "span" else []),
             ("(c) the reader" + (", the folder's threshold and calibrator" if qa.settings.calibrator else
                                  " (`score`)"), "reader", [(a, p) for a, _, _, p in (row["reader"] for row in rows)],
              odds, [p for _, p, _, _ in (row["reader"] for row in rows)])]
    for folder in args.calibrator:
        settings = QASettings.from_config(AutoConfig.from_pretrained(folder))
        if settings.calibrator is None:
            raise SystemExit(f"error: {folder} stores no calibrator (fit one with run_qa.py --calibrate)")
        answers = [settings_answer(settings, row["evidence"]) for row in rows]
        rules.append((f"(c) the reader, the threshold ({settings.null_score_diff_threshold:.2f}) and calibrator of "
                      f"{Path(folder).name} ({settings.calibrator.questions} questions)", f"reader-{Path(folder).name}",
                      [(a, p) for a, _, p in answers], odds, [q for _, q, _ in answers]))
    table = [figures(name, answers, records, best_spans, no_answer_scores, probabilities, odd)
             for name, _, answers, no_answer_scores, probabilities in rules]
    speed_records = records[: args.speed_questions]
    seconds, windows = speed(qa, speed_records, args.batch_size, args.repeats, args.bf16)
    rate = {name: len(speed_records) / common.median(values) for name, values in seconds.items()}
    n, held = len(records), sum(odd)
    common.print_report(
        f"A question over {args.passages} passages: the reader against per-passage answers and Haystack's scoring",
        [(f"Answers: {'the odd-numbered articles of ' if args.articles == 'odd' else ''}the first "
          f"{args.max_questions} questions of {Path(args.dev_file or common.DEV_NAME).name} ({n} asked), each "
          f"over {args.passages} paragraphs of its article (ECE on the {held} questions of odd-numbered articles)",
          ("rule", "exact", "F1", "best_f1", "NoAns answered \"\" %", "top answer from a gold passage %",
           "ECE of the top answer's probability"), table),
         (f"Speed: the first {len(speed_records)} questions ({windows} windows), batch {args.batch_size}"
          f"{', bf16 autocast' if args.bf16 else ''}",
          ("", "seconds (runs)", "questions/s"),
          [(name, common.runs_text(values, 2), f"{rate[name]:.2f}") for name, values in seconds.items()] +
          [("reader / one call per passage", "", f"{common.ratio(rate['reader'], rate['one call per passage']):.2f}x"),
           ("reader time / bare forward time", "",
            f"{common.ratio(rate['bare forward'], rate['reader']):.2f}")])],
        notes=[f"accuracy pass: the reader's windows through the model once, {reader_seconds:.1f} s ((b) and (c) "
               f"decoded from them); (a) {habit_seconds:.1f} s in one batched call of every (question, passage)",
               f"(c): the folder's no-answer threshold {threshold:.4f}, or each --calibrator folder's"],
        repeats=args.repeats)
    if args.predictions:
        out = Path(args.predictions)
        out.mkdir(parents=True, exist_ok=True)
        for (_, stem, answers, no_answer_scores, _), row in zip(rules, table):
            predictions = {r["id"]: {"answer": a, **({"best_span": b, "no_answer_score": o} if no_answer_scores else {})}
                           for r, (a, _), b, o in zip(records, answers, best_spans, no_answer_scores or odds)}
            (out / f"{stem}_predictions.json").write_text(json.dumps(predictions, indent=1, ensure_ascii=False))
        header = ("exact", "f1", "best_f1", "noans_answered_empty", "top_from_gold_passage", "ece")
        (out / "figures.json").write_text(json.dumps(
            {"command": common.command_line(), "questions": len(records),
             "benchmark": {"passages": args.passages, "max_questions": args.max_questions, "articles": args.articles},
             "rules": [{"rule": row[0], "predictions": f"{rule[1]}_predictions.json", **dict(zip(header, row[1:]))}
                       for rule, row in zip(rules, table)]}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
