#!/usr/bin/env python
"""A saved span model folder's pipeline in float32 against the same pipeline with its linear layers quantized by
torchao's dynamic int8 (`quantize_(model, Int8DynamicActivationInt8WeightConfig())`: int8 weights, activations
quantized per token at run time), the torch ecosystem's maintained int8 path for CPUs without bf16.

Both answer the first `--max_eval_samples` dev questions (streamed, `--batch_size` windows per forward pass, the
empty answer allowed at the folder's threshold), alternately; the report gives seconds, questions/s, exact / F1 of
each and how many answers agree. torchao is not a dependency of the package: install it beside the venv.

    pip install --target .cache/torchao --no-deps torchao==0.18.0
    PYTHONPATH=.cache/torchao python bench/bench_int8.py --model outputs/minilm-span-recipe --max_eval_samples 600
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a span model folder saved by run_qa.py")
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=600, help="use only the first N questions")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="smoke size: the first 8 questions")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    common.set_threads(args)
    common.quiet_libraries()
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    from transformers import pipeline

    from metrics.squad_v2.compute_score import squad_v2_scores

    questions = common.load_questions(common.data_file(args, args.dev_file, common.DEV_NAME),
                                      8 if args.tiny else args.max_eval_samples)
    inputs = [{"question": q, "context": c} for q, c in zip(questions["question"], questions["context"])]
    golds = {qid: answers["text"] for qid, answers in zip(questions["id"], questions["answers"])}
    pipes = {name: pipeline("question-answering", model=args.model, trust_remote_code=True)
             for name in ("float32", "int8")}
    quantize_(pipes["int8"].model, Int8DynamicActivationInt8WeightConfig())
    answers = {}

    def answer_all(name):
        answers[name] = [a["answer"] for a in pipes[name]((item for item in inputs), batch_size=args.batch_size,
                                                           handle_impossible_answer=True)]

    seconds, _ = common.interleaved([(name, lambda name=name: answer_all(name)) for name in pipes], args.repeats,
                                    warmup=True)
    rows = []
    for name in pipes:
        scores = squad_v2_scores({qid: (a, 0.0) for qid, a in zip(golds, answers[name])}, golds, 0.5)
        rows.append((name, common.runs_text(seconds[name], 1), f"{len(inputs) / common.median(seconds[name]):.1f}",
                     f"{scores['exact']:.2f}", f"{scores['f1']:.2f}"))
    same = sum(a == b for a, b in zip(answers["float32"], answers["int8"]))
    common.print_report(
        "The pipeline in float32 against torchao's dynamic int8",
        [(f"{args.model}, first {len(inputs)} questions, batch {args.batch_size}",
          ("variant", "runs s", "questions/s", "exact", "F1"), rows),
         ("Agreement", ("", ""), [("int8 answers equal to float32's", f"{same} of {len(inputs)}"),
                                  ("int8 questions/s / float32's",
                                   f"{common.median(seconds['float32']) / common.median(seconds['int8']):.2f}")])],
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
