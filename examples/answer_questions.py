#!/usr/bin/env python
"""Answer the questions of a SQuAD JSON file with a saved model folder through pipeline("question-answering"),
printing each answer and its score beside the expected one, then how many were right (exact match after the
SQuAD normalisation; "no answer" is right on an unanswerable question).

    python examples/answer_questions.py outputs/quickstart data/sample/dev-v2.0.json
"""

import argparse
import json
import os
import sys

from transformers import pipeline

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from metrics.squad_v2.compute_score import best_score, exact_match, gold_answers  # noqa: E402


def squad_questions(path):
    """(question, context, gold answer texts) of every question of a SQuAD JSON file."""
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [(qa["question"], paragraph["context"], [a["text"] for a in qa["answers"]])
            for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model folder saved by run_qa.py or run_qa_crf.py (or a Hub repo id)")
    parser.add_argument("questions", help="SQuAD JSON file of the questions to ask, with their expected answers")
    args = parser.parse_args()
    qa = pipeline("question-answering", model=args.model, trust_remote_code=True)
    questions = squad_questions(args.questions)
    answers = qa([{"question": q, "context": c} for q, c, _ in questions], handle_impossible_answer=True)
    right = 0
    for (question, _, golds), answer in zip(questions, answers):
        correct = best_score(exact_match, answer["answer"], gold_answers(golds)) == 1
        right += correct
        expected = " | ".join(golds) or "(no answer)"
        print(f"{'right' if correct else 'wrong':5}  {question}\n       answer: {answer['answer'] or '(no answer)'} "
              f"(score {answer['score']:.2f})   expected: {expected}")
    print(f"{right} of {len(questions)} questions answered right")


if __name__ == "__main__":
    main()
