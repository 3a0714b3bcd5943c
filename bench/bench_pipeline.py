#!/usr/bin/env python
"""Answering with the pipeline against evaluation: the same saved model, the same questions and windows.

* evaluation: `QuestionAnsweringTrainer.evaluate()` as qa_runner runs it (dynamic padding over length-sorted
  windows, post-processing, metric, files), eval batch 32, over windows made beforehand (as a rerun of run_qa.py
  reads them from its window cache), and from its questions (the windows cut inside the timing, as a first run cuts
  them);
* pipeline: the model folder's own `pipeline("question-answering")` (trust_remote_code) fed the questions as a
  generator, streamed with `batch_size=32` (windows per forward pass), answers read as they come.

With `--bf16` both run the encoder under bf16 autocast (evaluation as `--bf16 --use_cpu` runs it, the pipeline
with `bf16=True`). With `--torch_compile` a second pipeline, built with `torch_compile=True` (its encoder compiled,
the compilation paid in the untimed warm-up), is timed beside the first; evaluation stays as run_qa.py runs it by
default. All are timed end to end, alternately, and reported as windows per second (the windows of the model's saved
max_seq_length / doc_stride); the ratios are pipeline / evaluation. The pipelines' answers (no word alignment, the
empty answer allowed at the threshold evaluation applied) are checked against evaluation's predictions.

With `--transformers4 SITE` (a folder holding transformers 4, `pip install --target SITE "transformers==4.55.*"`,
run beside this venv's torch), transformers 4's own `pipeline("question-answering")` is timed too, in a process of
its own (in float32), alternately with the others: on a copy of the span model folder without `custom_pipelines`
(which transformers 4 refuses), fed the same generator with the same batch size, window, stride and answer length,
no word alignment, the empty answer allowed (by its own rule: "" when the [CLS] probability beats the best span's).
Its speed is reported in questions/s beside this pipeline's (its windows are cut by its own rules).

    python bench/bench_pipeline.py --model outputs/minilm-span --max_eval_samples 2000
    python bench/bench_pipeline.py --model outputs/minilm-span --transformers4 .cache/transformers-4.55
    python bench/bench_pipeline.py --tiny --repeats 1 --model MODEL_FOLDER --dev_file data/sample/dev-v2.0.json
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

from bench_eval import evaluate_once, make_trainer, warm_up  # noqa: E402
from bench_train import head_for, load_model  # noqa: E402

sys.path.insert(0, str(common.ROOT / "examples"))
from compare_pipeline_v4 import library_copy  # noqa: E402

# transformers 4's pipeline in a process of its own: answers every question (untimed, a warm-up), then for each line
# read times one streamed call and prints {"seconds", "answers"}.
TRANSFORMERS_4 = """
import json, sys, time
# this venv's `kernels` needs huggingface_hub 1.x, which transformers 4 cannot use: hidden (an optional dependency)
sys.modules["kernels"] = None
import torch, transformers
from transformers import pipeline
model, inputs, settings, threads = sys.argv[1:]
if int(threads):
    torch.set_num_threads(int(threads))
transformers.utils.logging.set_verbosity_error()
qa = pipeline("question-answering", model=model, tokenizer=model)
with open(inputs, encoding="utf-8") as f:
    questions = json.load(f)
settings = json.loads(settings)
def answer_all():
    return [answer["answer"] for answer in qa((q for q in questions), **settings)]
answer_all()
print(json.dumps({"version": transformers.__version__}), flush=True)
for _ in sys.stdin:
    start = time.perf_counter()
    answers = answer_all()
    print(json.dumps({"seconds": time.perf_counter() - start, "answers": answers}), flush=True)
"""


class Transformers4Pipeline:
    """transformers 4's question-answering pipeline over `inputs`, served by a process of its own (its package
    folder `site` on the path): built and warmed up at construction; each call times one streamed run of every
    question and returns its answers (the time in `seconds`)."""

    def __init__(self, site, model, inputs, settings, threads, scratch):
        path = os.path.join(scratch, "inputs.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(inputs, f)
        env = {**os.environ, "PYTHONPATH": str(Path(site).resolve())}
        self.process = subprocess.Popen(
            [sys.executable, "-c", TRANSFORMERS_4, library_copy(model, os.path.join(scratch, "model-4")), path,
             json.dumps(settings), str(threads or 0)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env, cwd=scratch)
        self.version = self.reply()["version"]
        self.seconds = []

    def reply(self):
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"error: transformers 4's pipeline process ended (exit status {self.process.wait()})")
        return json.loads(line)

    def __call__(self):
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        reply = self.reply()
        self.seconds.append(reply["seconds"])
        return reply["answers"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder saved by run_qa.py or run_qa_crf.py")
    parser.add_argument("--head", choices=("span", "crf"), default="span")
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=2000, help="use only the first N questions")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="smoke size: the first 40 questions")
    parser.add_argument("--transformers4", metavar="SITE", default=None,
                        help="a folder holding transformers 4 (pip install --target): time its pipeline too")
    parser.add_argument("--bf16", action="store_true", help="evaluation and this pipeline under bf16 autocast")
    parser.add_argument("--torch_compile", action="store_true", help="this pipeline built with torch_compile=True")
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
    # this pipeline, and with --torch_compile a second one whose encoder is compiled (the last is set beside
    # transformers 4's)
    pipelines = {"pipeline": pipeline("question-answering", model=args.model, trust_remote_code=True)}
    if args.torch_compile:
        pipelines["pipeline, compiled"] = pipeline("question-answering", model=args.model, trust_remote_code=True,
                                                   torch_compile=True)
    inputs = [{"question": q, "context": c} for q, c in zip(questions["question"], questions["context"])]
    call = {"batch_size": args.batch_size, "align_to_words": False, "handle_impossible_answer": True}

    def answer_all(qa):
        stream = qa((item for item in inputs), null_score_diff_threshold=data_args.null_score_diff_threshold,
                    bf16=args.bf16, **call)
        return [answer["answer"] for answer in stream]

    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(head_for(args.head), model, tokenizer, questions, windows, data_args, args, tmp,
                               bf16=args.bf16)
        warm_up(model, {"evaluation": trainer}, {"evaluation": windows})
        for qa in pipelines.values():
            answer_all(qa)  # warm-up (and a compiled encoder's compilation)
        library = args.transformers4 and Transformers4Pipeline(
            args.transformers4, args.model, inputs, {**call, "max_seq_len": settings["max_seq_length"],
                                                     "doc_stride": settings["doc_stride"],
                                                     "max_answer_len": settings["max_answer_length"]},
            args.threads, tmp)
        seconds = {"evaluation": [], "evaluation from its questions": [], **{name: [] for name in pipelines}}
        evaluated, answers = [], {}
        for _ in range(args.repeats):
            cutting, _ = common.timed(common.build_windows, questions, tokenizer, data_args, "eval")
            seconds["evaluation"].append(evaluate_once(trainer, evaluated)["total"])
            seconds["evaluation from its questions"].append(cutting + seconds["evaluation"][-1])
            for name, qa in pipelines.items():
                elapsed, answers[name] = common.timed(answer_all, qa)
                seconds[name].append(elapsed)
            library_answers = library and library()
        if library:
            library.close()
    predictions = [json.loads(evaluated[-1])[qid] for qid in questions["id"]]
    rate = {name: len(windows) / common.median(runs) for name, runs in seconds.items()}
    rows = [(name, common.runs_text(runs, 2), f"{rate[name]:.1f}") for name, runs in seconds.items()]
    evaluations = [name for name in seconds if name not in pipelines]
    tables = [(f"{args.model}, {len(questions)} questions, {len(windows)} windows, batch {args.batch_size}",
               ("variant", "runs s", "windows/s"), rows),
              ("Ratio and agreement", ("", ""), [
                  *((f"{name} windows/s / {e} windows/s", f"{common.ratio(rate[name], rate[e]):.2f}")
                    for name in pipelines for e in evaluations),
                  *((f"{name} answers equal to eval_predictions.json",
                     f"{sum(map(str.__eq__, predictions, answers[name]))} of {len(questions)}")
                    for name in pipelines)])]
    if library:
        last = list(pipelines)[-1]
        tables.append(library_table(library, library_answers, common.median(seconds[last]), answers[last], last))
    common.print_report(
        f"Pipeline against evaluation ({args.head} head{', bf16 autocast' if args.bf16 else ''}"
        f"{', and compiled' if args.torch_compile else ''})", tables,
        notes=["evaluation = the whole evaluate() (forward, post-processing, metric, files); from its questions = "
               "the same, plus cutting the questions' windows (timed apart in the same round); pipeline = the whole "
               "streamed call (windows, forward, decoding)"],
        repeats=args.repeats,
    )


def library_table(library, library_answers, seconds, answers, this):
    """The report's table of this pipeline (named `this`) against transformers 4's (questions/s, ratio, equal
    answers)."""
    count = len(answers)
    name = f"transformers {library.version}'s pipeline"
    rate, library_rate = count / seconds, count / common.median(library.seconds)
    same = [a for a, b in zip(answers, library_answers) if a == b]
    return (f"Against {name} (same questions, batch, window, stride, answer length)", ("", ""), [
        (f"{name}: runs s", common.runs_text(library.seconds, 2)),
        (f"{name}: questions/s", f"{library_rate:.1f}"),
        (f"this {this}: questions/s", f"{rate:.1f}"),
        (f"this {this} / {name}", f"{common.ratio(rate, library_rate):.2f}"),
        ("top answers equal (each pipeline's own no-answer rule)",
         f"{len(same)} of {count} ({sum(map(bool, same))} not empty)")])


if __name__ == "__main__":
    main()
