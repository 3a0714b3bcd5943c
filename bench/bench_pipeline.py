#!/usr/bin/env python
"""Answering with the pipeline against evaluation: the same saved model, the same questions and windows.

* evaluation: `QuestionAnsweringTrainer.evaluate()` as qa_runner runs it (dynamic padding over length-sorted
  windows, post-processing, metric, files), eval batch 32;
* pipeline: the model folder's own `pipeline("question-answering")` (trust_remote_code) fed the questions as a
  generator, streamed with `batch_size=32` (windows per forward pass), answers read as they come.

Both are timed end to end, alternately, and reported as windows per second (the windows of the model's saved
max_seq_length / doc_stride); the ratio is pipeline / evaluation. The pipeline's answers (no word alignment, the
empty answer allowed at the threshold evaluation applied) are checked against evaluation's predictions.

    python bench/bench_pipeline.py --model outputs/minilm-span --max_eval_samples 2000
    python bench/bench_pipeline.py --tiny --repeats 1 --model MODEL_FOLDER --dev_file data/sample/dev-v2.0.json
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

from bench_eval import evaluate_once, make_trainer, warm_up  # noqa: E402
from bench_train import head_for, load_model  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder saved by run_qa.py or run_qa_crf.py")
    parser.add_argument("--head", choices=("span", "crf"), default="span")
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=2000, help="use only the first N questions")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="smoke size: the first 40 questions")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    common.set_threads(args)
    common.quiet_libraries()
    from transformers import AutoTokenizer, pipeline

    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
        settings = json.load(f)["qa_settings"]
    limit = 40 if args.tiny else args.max_eval_samples
    questions = common.load_questions(common.data_file(args, args.dev_file, common.DEV_NAME), limit)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = load_model(head_for(args.head), args.model)
    data_args = common.qa_data_args(max_seq_length=settings["max_seq_length"], doc_stride=settings["doc_stride"])
    windows = common.build_windows(questions, tokenizer, data_args, "eval")
    qa = pipeline("question-answering", model=args.model, trust_remote_code=True)
    inputs = [{"question": q, "context": c} for q, c in zip(questions["question"], questions["context"])]

    def answer_all():
        stream = qa((item for item in inputs), batch_size=args.batch_size, align_to_words=False,
                    handle_impossible_answer=True, null_score_diff_threshold=data_args.null_score_diff_threshold)
        return [answer["answer"] for answer in stream]

    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(head_for(args.head), model, tokenizer, questions, windows, data_args, args, tmp)
        warm_up(model, {"evaluation": trainer}, {"evaluation": windows})
        answer_all()  # warm-up
        seconds = {"evaluation": [], "pipeline": []}
        evaluated = []
        for _ in range(args.repeats):
            seconds["evaluation"].append(evaluate_once(trainer, evaluated)["total"])
            elapsed, answers = common.timed(answer_all)
            seconds["pipeline"].append(elapsed)
    predictions = json.loads(evaluated[-1])
    same = sum(predictions[qid] == answer for qid, answer in zip(questions["id"], answers))
    rate = {name: len(windows) / common.median(runs) for name, runs in seconds.items()}
    rows = [(name, common.runs_text(seconds[name], 2), f"{rate[name]:.1f}") for name in ("evaluation", "pipeline")]
    common.print_report(
        f"Pipeline against evaluation ({args.head} head)",
        [(f"{args.model}, {len(questions)} questions, {len(windows)} windows, batch {args.batch_size}",
          ("variant", "runs s", "windows/s"), rows),
         ("Ratio and agreement", ("", ""), [
             ("pipeline windows/s / evaluation windows/s", f"{common.ratio(rate['pipeline'], rate['evaluation']):.2f}"),
             ("pipeline answers equal to eval_predictions.json", f"{same} of {len(questions)}")])],
        notes=["evaluation = the whole evaluate() (forward, post-processing, metric, files); pipeline = the whole "
               "streamed call (windows, forward, decoding)"],
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
