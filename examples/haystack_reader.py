#!/usr/bin/env python
"""A model folder as Haystack's reader (transformers-haystack's `TransformersExtractiveReader`) against the folder's
own pipeline, on the same questions: what each of the reader's three differences costs.

    pip install --target .cache/haystack haystack-ai==3.4.1      # beside the venv's transformers 5 and torch
    pip install --target .cache/haystack --no-deps transformers-haystack==2.0.0
    rm -rf .cache/haystack/numpy*                               # keep the venv's numpy
    PYTHONPATH=.cache/haystack python examples/haystack_reader.py MODEL DEV_FILE --questions 300

The reader loads a span folder as it is, and a CRF folder with `model_kwargs={"trust_remote_code": True}`; it cuts the
same windows when given the folder's `max_seq_length` and `doc_stride` (done here), and then
1. calls the model without `token_type_ids`, so a BERT-family model reads the question and the context as one
   segment (the script also runs it with them, passed as the model was trained);
2. takes any span of a window, of any length (the pipeline: at most the folder's `max_answer_length` tokens);
3. scores a span sigmoid(0.1 x (start + end logit)) and the empty answer as the product of (1 - score) over its top
   answers, ignoring the model's own no-answer score and the threshold its folder stores.
Each question's top answer from each is scored with the SQuAD v2 metric; the report says how many agree with the
pipeline's, how many are longer than the pipeline allows, and how often each answers "".
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metrics.squad_v2.compute_score import squad_v2_scores  # noqa: E402
from qa_data import questions_from_file  # noqa: E402


def pipeline_answers(folder, questions):
    """The folder's pipeline's answer to each question, "" allowed at the folder's threshold."""
    from transformers import pipeline

    qa = pipeline("question-answering", model=folder, trust_remote_code=True)
    asked = [{"question": q["question"], "context": q["context"]} for q in questions]
    return [a["answer"] for a in qa(asked, handle_impossible_answer=True, batch_size=16)], qa


def haystack_reader(folder, settings, token_types):
    """transformers-haystack's reader of the folder at its windows; with `token_types`, the model is also given the
    windows' token type ids, which the reader leaves out."""
    from haystack_integrations.components.readers.transformers import TransformersExtractiveReader

    class WithTokenTypes(TransformersExtractiveReader):
        """The reader, its model given each window's token type ids beside the inputs the reader passes."""

        def warm_up(self):
            if self.model is not None:  # run() warms up every time
                return
            super().warm_up()
            model, reader = self.model, self

            def with_token_types(input_ids, attention_mask):  # the reader feeds the windows in order
                import torch

                rows = reader.token_types[reader.fed:reader.fed + len(input_ids)]
                reader.fed += len(input_ids)
                return model(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=torch.tensor(rows, device=input_ids.device))

            self.model = with_token_types

        def _preprocess(self, **kwargs):
            batch = super()._preprocess(**kwargs)
            self.token_types, self.fed = [encoding.type_ids for encoding in batch[3]], 0
            return batch

    reader_class = WithTokenTypes if token_types else TransformersExtractiveReader
    reader = reader_class(model=folder, max_seq_length=settings["max_seq_length"], stride=settings["doc_stride"],
                          model_kwargs={"trust_remote_code": True})
    reader.warm_up()
    return reader


def haystack_ranked(reader, questions):
    """The reader's answers to each question, best first ("" for its no-answer)."""
    from haystack import Document

    return [["" if answer.data is None else answer.data
             for answer in reader.run(query=q["question"], documents=[Document(content=q["context"])])["answers"]]
            for q in questions]


def token_counts(tokenizer, texts):
    return [len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0 for text in texts]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model folder saved by run_qa.py or run_qa_crf.py")
    parser.add_argument("dev_file", help="SQuAD v2 questions (the official dev set)")
    parser.add_argument("--questions", type=int, default=300, help="the first N questions of the file")
    parser.add_argument("--out", help="JSON file of every answer and the figures")
    args = parser.parse_args()

    questions = questions_from_file(args.dev_file).rows.select(range(args.questions))
    settings = json.loads((Path(args.model) / "config.json").read_text())["qa_settings"]
    golds = {qid: answers["text"] for qid, answers in zip(questions["id"], questions["answers"])}
    # the reader first: the pipeline's process would have registered a CRF folder's model class for it
    plain = haystack_ranked(haystack_reader(args.model, settings, token_types=False), questions)
    ranked = haystack_ranked(haystack_reader(args.model, settings, token_types=True), questions)
    ours, qa = pipeline_answers(args.model, questions)
    longest = settings["max_answer_length"]
    within = [next((a for a in answers if a and token_counts(qa.tokenizer, [a])[0] <= longest), "")
              for answers in ranked]
    runs = {  # each row one difference fewer than the one before
        "haystack (as is)": [answers[0] for answers in plain],
        "+ token type ids": [answers[0] for answers in ranked],
        f"+ answers of at most {longest} tokens": [a[0] if not a[0] else w for a, w in zip(ranked, within)],
        "+ the folder's no-answer score and threshold": [w if o else "" for w, o in zip(within, ours)],
        "pipeline": ours,
    }
    rows = []
    for name, answers in runs.items():
        scores = squad_v2_scores({qid: (a, 0.0) for qid, a in zip(golds, answers)}, golds, 0.5)
        lengths = token_counts(qa.tokenizer, answers)
        rows.append({"reader": name, "exact": scores["exact"], "f1": scores["f1"],
                     "same answer as the pipeline": sum(a == b for a, b in zip(answers, ours)),
                     "answered \"\"": sum(not a for a in answers),
                     f"longer than {longest} tokens": sum(n > longest for n in lengths)})
    print(f"## {Path(args.model).name}: Haystack's reader against the pipeline, first {args.questions} questions of "
          f"{Path(args.dev_file).name}\n")
    print("| " + " | ".join(rows[0]) + " |\n|" + " --- |" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"figures": rows, "answers": runs, "ids": list(golds)}, indent=1))


if __name__ == "__main__":
    main()
