#!/usr/bin/env python
"""Measure a calibrated model on questions it was not calibrated on, as a user would meet it: through the pipeline.

    python examples/calibration_holdout.py split DEV.json.gz HALF_A.json HALF_B.json
    python run_qa.py --model_name_or_path MODEL --validation_file HALF_A.json --version_2_with_negative --do_eval \\
        --calibrate --output_dir CALIBRATED
    python examples/calibration_holdout.py measure CALIBRATED HALF_B.json --out CALIBRATED/holdout_calibration.json
    python examples/calibration_holdout.py measure CALIBRATED HALF_B.json --bf16 --out BF16.json   # under bf16

`split` puts a SQuAD file's articles alternately into two halves (even-numbered articles first), so no paragraph
of one half is in the other. `measure` asks every question of a file through the model folder's pipeline (the
empty answer allowed, at the no-answer threshold its config stores, answers at token offsets as evaluation gives
them) and compares each top answer with the gold ones (exact match after SQuAD's normalisation; "" is right for an
unanswerable question): expected calibration error over 15 equal-width bins and Brier score of its `probability`
("calibrated") and of its `score` ("raw"), with the bins of each for `plot_results.py reliability` and each
question's answer, probability and score (for re-scoring).
"""

import argparse
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from calibration_fitting import reliability  # noqa: E402
from metrics.squad_v2.compute_score import best_score, exact_match, gold_answers  # noqa: E402
from qa_data import questions_from_file  # noqa: E402


def read_squad(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def split(path, out_a, out_b):
    squad = read_squad(path)
    for out, articles in ((out_a, squad["data"][0::2]), (out_b, squad["data"][1::2])):
        with open(out, "w", encoding="utf-8") as f:
            json.dump({**squad, "data": articles}, f, ensure_ascii=False)
        questions = sum(len(p["qas"]) for a in articles for p in a["paragraphs"])
        print(f"{out}: {len(articles)} articles, {questions} questions")


def measure(model, path, batch_size, bf16=False):
    from transformers import pipeline

    questions = questions_from_file(path).rows
    qa = pipeline("question-answering", model=model, trust_remote_code=True)
    inputs = [{"question": q, "context": c} for q, c in zip(questions["question"], questions["context"])]
    answers = qa(inputs, handle_impossible_answer=True, align_to_words=False, batch_size=batch_size, bf16=bf16)
    if "probability" not in answers[0]:
        raise SystemExit(f"error: {model} stores no calibrator: run_qa.py --do_eval --calibrate writes one")
    right = [best_score(exact_match, a["answer"], gold_answers(gold["text"]))  # "" is right where no gold is
             for a, gold in zip(answers, questions["answers"])]
    # a span model's score adds up equal answers of several windows, as transformers 4's does: at most 1 here
    figures = {kind: reliability([min(a[field], 1.0) for a in answers], right)
               for kind, field in (("calibrated", "probability"), ("raw", "score"))}
    return {"model": os.path.basename(os.path.normpath(model)), "questions_file": os.path.basename(path), "bf16": bf16,
            "questions": len(answers), "right": sum(right) / len(right),
            "calibrated": "the pipeline's probability", "raw": "its score",
            **{f"{kind}_{stat}": figures[kind][stat] for kind in figures for stat in ("ece", "brier")},
            "bins": {kind: figures[kind]["bins"] for kind in figures},
            "answers": {qid: {field: a[field] for field in ("answer", "probability", "score")}
                        for qid, a in zip(questions["id"], answers)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    halves = commands.add_parser("split", help="a SQuAD file's articles, alternately into two files")
    halves.add_argument("squad")
    halves.add_argument("half_a")
    halves.add_argument("half_b")
    held_out = commands.add_parser("measure", help="calibration of the pipeline's probability and score")
    held_out.add_argument("model")
    held_out.add_argument("questions")
    held_out.add_argument("--out", required=True)
    held_out.add_argument("--batch_size", type=int, default=32)
    held_out.add_argument("--bf16", action="store_true", help="the pipeline's encoder under bf16 autocast")
    args = parser.parse_args()
    if args.command == "split":
        return split(args.squad, args.half_a, args.half_b)
    result = measure(args.model, args.questions, args.batch_size, args.bf16)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k not in ("bins", "answers")}, indent=2))


if __name__ == "__main__":
    main()
