#!/usr/bin/env python
"""Compare this package's question-answering pipeline with transformers 4's own, on the same span model.

Runs transformers 4's `pipeline("question-answering")` in another Python (a venv with `transformers==4.*`, given by
--python4) on a copy of the model folder without `custom_pipelines` (which transformers 4 refuses), and this
package's pipeline here, on the first N questions of a SQuAD file, at equal settings: no word alignment, the same
window, stride, question and answer lengths, the empty answer allowed (threshold 0 here: transformers 4 answers ""
when the [CLS] probability beats the best span's). Prints how many top answers agree and how the scores of the
agreeing ones differ.

    python examples/compare_pipeline_v4.py outputs/minilm-span ../shared/data/squad_v2/dev-v2.0.json.gz \\
        --python4 /path/to/venv-v4/bin/python --questions 300
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from transformers import pipeline

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from qa_data import questions_from_file  # noqa: E402

RUN_V4 = """
import json, sys
from transformers import pipeline
model, inputs, settings, output = sys.argv[1:]
qa = pipeline("question-answering", model=model, tokenizer=model)
with open(inputs) as f:
    questions = json.load(f)
answers = [qa(question=q["question"], context=q["context"], **json.loads(settings)) for q in questions]
with open(output, "w") as f:
    json.dump(answers, f)
"""


def library_copy(model, folder):
    """A copy of the model folder that transformers 4 loads: its config without `custom_pipelines`."""
    shutil.copytree(model, folder, ignore=shutil.ignore_patterns("checkpoint-*", "*.py"))
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config.pop("custom_pipelines", None)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a span model folder saved by run_qa.py")
    parser.add_argument("questions", help="SQuAD file (JSON, .json.gz or flat) of the questions to ask")
    parser.add_argument("--python4", required=True, help="a Python with transformers 4.x installed")
    parser.add_argument("--questions_count", "--questions", dest="count", type=int, default=300)
    args = parser.parse_args()

    questions = questions_from_file(args.questions).rows.select(range(args.count))
    inputs = [{"question": q, "context": c} for q, c in zip(questions["question"], questions["context"])]
    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
        settings = json.load(f).get("qa_settings", {})
    common = {"align_to_words": False, "handle_impossible_answer": True, "max_seq_len": settings.get("max_seq_length", 384),
              "doc_stride": settings.get("doc_stride", 128), "max_answer_len": settings.get("max_answer_length", 30),
              "max_question_len": 64}

    with tempfile.TemporaryDirectory() as scratch:
        model4 = library_copy(args.model, os.path.join(scratch, "model"))
        with open(os.path.join(scratch, "inputs.json"), "w", encoding="utf-8") as f:
            json.dump(inputs, f)
        output = os.path.join(scratch, "answers.json")
        subprocess.run([args.python4, "-c", RUN_V4, model4, f.name, json.dumps(common), output], check=True,
                       cwd=scratch, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        with open(output, encoding="utf-8") as f:
            library = json.load(f)

    qa = pipeline("question-answering", model=args.model, trust_remote_code=True)
    package = [qa(question=q["question"], context=q["context"], null_score_diff_threshold=0.0, **common)
               for q in inputs]
    same = [(p, l) for p, l in zip(package, library) if p["answer"] == l["answer"]]
    differences = np.array([abs(p["score"] - l["score"]) for p, l in same])
    print(f"questions: {len(inputs)}; same top answer: {len(same)} ({100 * len(same) / len(inputs):.1f}%), "
          f"of which no answer: {sum(not p['answer'] for p, _ in same)}")
    print(f"score difference where the answers agree: max {differences.max():.2e}, mean {differences.mean():.2e}, "
          f"above 1e-5: {int((differences > 1e-5).sum())}")
    for p, l in [(p, l) for p, l in zip(package, library) if p["answer"] != l["answer"]][:10]:
        print(f"  differs: package {p['answer']!r} ({p['score']:.4f}) / transformers 4 {l['answer']!r} ({l['score']:.4f})")


if __name__ == "__main__":
    main()
