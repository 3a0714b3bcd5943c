"""MultiSpanQA scoring, following the definition of its official evaluation (Li et al., NAACL 2022).

A question's answer is a *set* of span strings. Predicted and gold spans are normalised as SQuAD normalises answers,
and each question's spans become a set of distinct normalised strings. Scores are micro-averaged over spans:

* exact match: a predicted span counts when it equals a gold span of its question; precision is the count over
  the predicted spans, recall over the gold spans;
* partial match: a predicted span earns the length of the longest common substring (of characters) it shares with
  its best gold span, divided by its own length; a gold span the same with its best predicted span, divided by the
  gold span's length; precision and recall are these sums over the predicted and the gold spans.

As officially, a question with no span on a side counts as one span there (so an empty prediction costs recall
and precision alike), and an empty prediction (no span, or the single empty string) matches a question without
gold spans fully on partial match. Scores are percentages.

The official script finds the longest common substring with `difflib.SequenceMatcher`, whose "popular character"
heuristic can shorten it for spans of 200 characters or more; this module computes it exactly.

Predictions and references are given as `{question_id: [span texts]}`; a question without a prediction is scored
as predicting no span, and reported once through a logged warning.
"""

import logging
from collections.abc import Iterable, Mapping

from ..squad_v2.compute_score import normalize_answer, warn_missing_predictions

logger = logging.getLogger(__name__)


def span_set(texts: Iterable[str]) -> set[str]:
    """The distinct normalised strings of a question's spans."""
    return {normalize_answer(text) for text in texts}


def longest_common_substring(first: str, second: str) -> int:
    """Length of the longest run of characters that occurs in both strings (0 when they share none)."""
    best, previous = 0, [0] * (len(second) + 1)
    for a in first:
        current = [0]
        for j, b in enumerate(second):
            current.append(previous[j] + 1 if a == b else 0)
        best = max(best, *current)
        previous = current
    return best


def partial_credit(golds: set[str], predictions: set[str]) -> tuple[float, float]:
    """(precision credit, recall credit) of one question: over its predicted spans, each one's best share of
    characters in common with a gold span; over its gold spans, each one's best share with a predicted span."""
    predicted_nothing = not predictions or predictions == {""}
    if not golds or predicted_nothing:
        return (1.0, 1.0) if not golds and predicted_nothing else (0.0, 0.0)
    common = {(gold, prediction): longest_common_substring(gold, prediction)
              for gold in golds for prediction in predictions}
    precision = sum(max(common[gold, prediction] / len(prediction) if common[gold, prediction] else 0.0
                        for gold in golds) for prediction in predictions)
    recall = sum(max(common[gold, prediction] / len(gold) if common[gold, prediction] else 0.0
                     for prediction in predictions) for gold in golds)
    return precision, recall


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def multispan_scores(predictions: Mapping[str, list[str]], references: Mapping[str, list[str]]) -> dict[str, float]:
    """MultiSpanQA's exact-match (`em_*`) and partial-match (`overlap_*`) precision, recall and F1 of the predicted
    span lists against the gold span lists of every referenced question, with the counts they are made of."""
    warn_missing_predictions(predictions, references)
    gold_count = predicted_count = exact = partial_precision = partial_recall = 0
    for qid, gold_texts in references.items():
        golds, predicted = span_set(gold_texts), span_set(predictions.get(qid, []))
        gold_count += max(len(golds), 1)
        predicted_count += max(len(predicted), 1)
        exact += len(golds & predicted)
        precision_credit, recall_credit = partial_credit(golds, predicted)
        partial_precision += precision_credit
        partial_recall += recall_credit
    scores = {}
    for kind, hits_p, hits_r in (("em", exact, exact), ("overlap", partial_precision, partial_recall)):
        precision = hits_p / predicted_count if predicted_count else 0.0
        recall = hits_r / gold_count if gold_count else 0.0
        scores.update({f"{kind}_precision": 100 * precision, f"{kind}_recall": 100 * recall,
                       f"{kind}_f1": 100 * f1(precision, recall)})
    return {**scores, "questions": len(references), "gold_spans": gold_count, "predicted_spans": predicted_count}
