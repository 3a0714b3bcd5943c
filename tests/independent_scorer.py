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


def independent_multispan_scores(predictions, golds):
    """MultiSpanQA's official exact- and partial-match precision, recall and F1 (percent), restated from its
    definition independently of metrics/multispanqa: `predictions` and `golds` map ids to lists of span texts."""
    import difflib

    def normalized(texts):
        return {" ".join(normalized_tokens(text)) for text in texts}

    gold_total = predicted_total = exact = credit_p = credit_r = 0
    for qid, gold_texts in golds.items():
        gold, predicted = normalized(gold_texts), normalized(predictions.get(qid, []))
        gold_total += max(len(gold), 1)
        predicted_total += max(len(predicted), 1)
        exact += len(gold & predicted)
        nothing = not predicted or predicted == {""}
        if not gold or nothing:
            credit_p += float(not gold and nothing)
            credit_r += float(not gold and nothing)
            continue
        longest = {(g, p): difflib.SequenceMatcher(None, g, p, autojunk=False).find_longest_match(
            0, len(g), 0, len(p)).size for g in gold for p in predicted}
        credit_p += sum(max(longest[g, p] / len(p) if longest[g, p] else 0 for g in gold) for p in predicted)
        credit_r += sum(max(longest[g, p] / len(g) if longest[g, p] else 0 for p in predicted) for g in gold)

    def prf(hits_p, hits_r):
        p, r = hits_p / predicted_total, hits_r / gold_total
        return 100 * p, 100 * r, 100 * (2 * p * r / (p + r) if p + r else 0.0)

    return {"em": prf(exact, exact), "overlap": prf(credit_p, credit_r)}
