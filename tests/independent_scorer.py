"""The official SQuAD v2.0 scoring, written independently of metrics/squad_v2 so that tests can cross-check the
package's metric and its thresholds against it."""

import collections
import re
import string


def normalized_tokens(text):
    """The official SQuAD normalisation, written independently of metrics/squad_v2 to cross-check it."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def independent_question_scores(prediction, gold_texts):
    """(exact, f1) in [0, 1] of one predicted text against a question's gold answer texts ([] if it has none)."""
    golds = [g for g in gold_texts if normalized_tokens(g)] or [""]
    predicted = normalized_tokens(prediction)
    exact = float(max(predicted == normalized_tokens(g) for g in golds))
    f1 = 0.0
    for gold in map(normalized_tokens, golds):
        if not gold or not predicted:
            f1 = max(f1, float(gold == predicted))
            continue
        common = sum((collections.Counter(gold) & collections.Counter(predicted)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return exact, f1


def independent_scores(predictions, questions):
    """(exact, f1) in percent of `predictions` {id: text} against the questions' gold answers."""
    scores = [independent_question_scores(predictions[qid], answers["text"])
              for qid, answers in zip(questions["id"], questions["answers"])]
    return tuple(100 * sum(column) / len(scores) for column in zip(*scores))


def independent_best_f1(spans, null_odds, questions):
    """The official script's best F1 over no-answer thresholds: from abstaining everywhere, questions are answered
    in increasing null odds; an answerable one gains its F1, an unanswerable one loses its point for any non-empty
    text, even one that normalises to nothing (such as "a"), which its plain F1 counts as right."""
    score = best = sum(not answers["text"] for answers in questions["answers"])
    for qid, answers in sorted(zip(questions["id"], questions["answers"]), key=lambda pair: null_odds[pair[0]]):
        if answers["text"]:
            score += independent_question_scores(spans[qid], answers["text"])[1]
        else:
            score -= float(bool(spans[qid]))
        best = max(best, score)
    return 100 * best / len(questions["id"])
