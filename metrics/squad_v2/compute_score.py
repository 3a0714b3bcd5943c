"""SQuAD v1.1 and v2.0 scoring, following the official evaluation definition.

Answers are compared after normalisation, by exact match and by token F1,
taking the best score over a question's gold answers. SQuAD v2.0 adds
unanswerable questions, whose only gold answer is the empty string, and a
no-answer score per prediction (historically a probability; any real number
where higher means "more likely unanswerable", such as null odds) that a
threshold turns into abstaining: a question abstains when its score is above
the threshold.

Questions are identified by id. References are given as
``{question_id: [gold answer texts]}``; a reference without a prediction
scores 0, as a wrong answer, and is reported once through a logged warning.
"""

import logging
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction

logger = logging.getLogger(__name__)

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Return ``text`` in the form answers are compared in.

    Lower-cased, without punctuation characters, without the articles
    "a", "an", "the" as whole words, and with runs of whitespace collapsed
    to single spaces (no leading or trailing space).
    """
    without_punctuation = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", without_punctuation).split())


def answer_tokens(text: str) -> list[str]:
    """Return the whitespace tokens of the normalised ``text``."""
    return normalize_answer(text).split()


def exact_match(prediction: str, gold: str) -> int:
    """Return 1 if ``prediction`` and ``gold`` normalise to the same string, else 0."""
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Return the F1 (0 to 1) of the normalised tokens of ``prediction`` against ``gold``.

    Tokens are counted as a multiset, so a repeated token matches at most as
    often as it occurs on the other side. When either side has no tokens the
    score is 1 if both are empty (a correct "no answer") and 0 otherwise.
    """
    predicted, expected = answer_tokens(prediction), answer_tokens(gold)
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def gold_answers(texts: Iterable[str]) -> list[str]:
    """Return the gold answers to score against for one question.

    Answers that normalise to nothing are dropped; a question left with none
    has the single gold answer "" (so abstaining scores 1 on it).
    """
    return [text for text in texts if normalize_answer(text)] or [""]


def is_answerable(texts: Iterable[str]) -> bool:
    """Return whether a question's raw gold answer list (before normalising) holds any answer, as officially."""
    return len(list(texts)) > 0


def best_score(score: Callable[[str, str], float], prediction: str, golds: list[str]) -> float:
    """Return the highest ``score(prediction, gold)`` over ``golds``."""
    return max(score(prediction, gold) for gold in golds)


def raw_scores(
    predictions: Mapping[str, str], golds: Mapping[str, list[str]]
) -> tuple[dict[str, float], dict[str, float]]:
    """Return per-question (exact, f1) scores, each ``{question_id: 0 to 1}``.

    ``predictions`` maps question ids to predicted texts, ``golds`` maps every
    question id to its :func:`gold_answers`. Questions without a prediction score 0.
    """
    exact, f1 = {}, {}
    for qid, answers in golds.items():
        if qid in predictions:
            exact[qid] = float(best_score(exact_match, predictions[qid], answers))
            f1[qid] = best_score(token_f1, predictions[qid], answers)
        else:
            exact[qid] = f1[qid] = 0.0
    return exact, f1


def warn_missing_predictions(predicted_ids: Iterable[str], reference_ids: Iterable[str]) -> None:
    """Log a warning saying how many references have no prediction, if any."""
    references = set(reference_ids)
    missing = len(references - set(predicted_ids))
    if missing:
        logger.warning(
            "%d of %d references have no prediction; they are scored as wrong answers",
            missing,
            len(references),
        )


def percent(scores: Mapping[str, float], qids: list[str]) -> float:
    """Return the mean of ``scores`` over ``qids`` as a percentage.

    The sum is correctly rounded (``math.fsum``), so it does not depend on the order of ``qids`` and equals
    the exact total :func:`best_threshold` keeps, rounded once.
    """
    return 100.0 * math.fsum(scores[qid] for qid in qids) / len(qids)


def abstention_scores(answerable: Mapping[str, bool], predicted_ids: Iterable[str]) -> dict[str, float]:
    """Return ``{question_id: score}`` that each question gets when the prediction is "no answer".

    Abstaining is right (1) on unanswerable questions only; a question
    without any prediction stays wrong (0) either way.
    """
    predicted = set(predicted_ids)
    return {qid: float(qid in predicted and not has_answer) for qid, has_answer in answerable.items()}


def apply_no_answer_threshold(
    scores: Mapping[str, float],
    abstentions: Mapping[str, float],
    no_answer_probabilities: Mapping[str, float],
    threshold: float,
) -> dict[str, float]:
    """Return ``scores`` with abstention scores where the no-answer probability (score) exceeds ``threshold``.

    ``abstentions`` comes from :func:`abstention_scores`; a question missing
    from ``no_answer_probabilities`` keeps its score.
    """
    return {
        qid: abstentions[qid] if no_answer_probabilities.get(qid, 0.0) > threshold else score
        for qid, score in scores.items()
    }


def best_threshold(
    scores: Mapping[str, float],
    answerable: Mapping[str, bool],
    texts: Mapping[str, str],
    no_answer_probabilities: Mapping[str, float],
) -> tuple[float, float]:
    """Return (best score in percent, threshold reaching it) over all no-answer thresholds.

    The official SQuAD v2.0 search (``find_best_thresh``), made exact for any real no-answer scores (a
    probability, or null odds of any size): starts from abstaining on every question (right on the
    unanswerable ones), then answers the questions in increasing no-answer score: an answerable question
    gains its score, an unanswerable one loses its point if the predicted text is not empty. Questions
    sharing a score are answered together (the rule "abstain when score > threshold" cannot separate them),
    so a total is a candidate only once its whole block of tied scores is answered; the first strict maximum
    wins. Totals are kept exactly (fractions), and the score returned is their value rounded once.

    The threshold is the score of the last block answered, or, when abstaining everywhere is never beaten,
    :func:`threshold_below` the smallest score (the smallest score minus 1; the official script reports 0.0,
    right for probabilities above 0 only; 0.0 here too when no question has a prediction). Applied with
    :func:`apply_no_answer_threshold` it gives back the best score exactly, with one exception kept from the
    official script: an unanswerable question answered with a non-empty text that normalises to nothing
    ("the", ".") loses its point here but is scored 1 there. Without tied scores the result is the official
    one, except that the official script sums floats as it goes: where its running total rounds, its best
    can differ from this exact one in the last bits, and a total that only rounding makes larger than an
    earlier equal one can move its threshold.

    A score of -inf can never abstain, so abstaining everywhere is then not a candidate and the threshold
    may be -inf; +inf is returned where the best needs the questions scored +inf answered (the scripts give
    +inf to a question without any non-empty candidate, whose empty answer rarely gains). NaN is refused.
    """
    probabilities = no_answer_probabilities
    for qid, value in probabilities.items():
        if math.isnan(value):
            raise ValueError(f"the no-answer probability of question {qid!r} is NaN")
    order = sorted(probabilities, key=probabilities.__getitem__)
    # a question without a prediction cannot abstain either: it is wrong at every threshold
    total = Fraction(sum(not answerable[qid] for qid in probabilities))
    if order and probabilities[order[0]] == -math.inf:
        best, threshold = None, -math.inf  # some questions are answered at every threshold
    else:
        best, threshold = total, threshold_below(probabilities[order[0]]) if order else 0.0
    for i, qid in enumerate(order):
        total += Fraction(scores[qid]) if answerable[qid] else -int(bool(texts[qid]))
        value = probabilities[qid]
        if i + 1 < len(order) and probabilities[order[i + 1]] == value:
            continue  # the rest of this block of tied scores is answered at the same threshold
        if best is None or total > best:
            best, threshold = total, value
    return 100.0 * float(best) / len(scores), threshold


def threshold_below(value: float) -> float:
    """Return the threshold at which a question scored ``value`` (and every higher one) abstains.

    ``value - 1``, or the next float below ``value`` where subtracting 1 does not change it (``|value|`` of
    2**53 or more, or +inf: the largest finite float).
    """
    below = value - 1.0
    return below if below < value else math.nextafter(value, -math.inf)


def breakdown(
    prefix: str, exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str]
) -> dict[str, float]:
    """Return ``{prefix}exact``, ``{prefix}f1`` (percent) and ``{prefix}total`` over ``qids``."""
    return {
        f"{prefix}exact": percent(exact, qids),
        f"{prefix}f1": percent(f1, qids),
        f"{prefix}total": len(qids),
    }


def squad_v2_scores(
    predictions: Mapping[str, tuple[str, float]],
    references: Mapping[str, Iterable[str]],
    no_answer_threshold: float = 1.0,
) -> dict[str, float]:
    """Return the SQuAD v2.0 summary for ``predictions`` against ``references``.

    Args:
        predictions: ``{question_id: (predicted text, no-answer probability)}``;
            the "probability" may be any real score where higher means more
            likely unanswerable (the scripts pass null odds). Ids absent from
            ``references`` are ignored.
        references: ``{question_id: [gold answer texts]}``, with no (or only
            empty) texts for an unanswerable question.
        no_answer_threshold: predictions whose no-answer probability is above
            it count as "no answer" (in the units of the probabilities).

    Returns:
        ``exact``, ``f1`` (percent) and ``total`` over all references;
        ``HasAns_*`` and ``NoAns_*`` the same over answerable and unanswerable
        questions, each present only when there are such questions;
        ``best_exact``, ``best_f1`` (percent) with ``best_exact_thresh``,
        ``best_f1_thresh``, the scores at the best no-answer threshold and
        that threshold, in the units of the probabilities: given back as
        ``no_answer_threshold``, it scores ``exact``/``f1`` equal to
        ``best_exact``/``best_f1`` (see :func:`best_threshold`).
    """
    if not references:
        raise ValueError("no references to score")
    warn_missing_predictions(predictions, references)
    golds = {qid: gold_answers(texts) for qid, texts in references.items()}
    answerable = {qid: is_answerable(texts) for qid, texts in references.items()}
    texts = {qid: text for qid, (text, _) in predictions.items()}
    probabilities = {qid: p for qid, (_, p) in predictions.items() if qid in golds}
    exact_raw, f1_raw = raw_scores(texts, golds)
    abstentions = abstention_scores(answerable, probabilities)
    exact = apply_no_answer_threshold(exact_raw, abstentions, probabilities, no_answer_threshold)
    f1 = apply_no_answer_threshold(f1_raw, abstentions, probabilities, no_answer_threshold)

    summary = breakdown("", exact, f1, list(golds))
    has_answer = [qid for qid in golds if answerable[qid]]
    no_answer = [qid for qid in golds if not answerable[qid]]
    if has_answer:
        summary.update(breakdown("HasAns_", exact, f1, has_answer))
    if no_answer:
        summary.update(breakdown("NoAns_", exact, f1, no_answer))
    summary["best_exact"], summary["best_exact_thresh"] = best_threshold(exact_raw, answerable, texts, probabilities)
    summary["best_f1"], summary["best_f1_thresh"] = best_threshold(f1_raw, answerable, texts, probabilities)
    return summary


def squad_v1_scores(
    predictions: Mapping[str, str], references: Mapping[str, Iterable[str]]
) -> dict[str, float]:
    """Return the SQuAD v1.1 summary for ``predictions`` against ``references``.

    Args:
        predictions: ``{question_id: predicted text}``; ids absent from
            ``references`` are ignored.
        references: ``{question_id: [gold answer texts]}``.

    Returns:
        ``exact_match`` and ``f1``, in percent over all references.
    """
    if not references:
        raise ValueError("no references to score")
    warn_missing_predictions(predictions, references)
    golds = {qid: gold_answers(texts) for qid, texts in references.items()}
    exact, f1 = raw_scores(predictions, golds)
    return {"exact_match": percent(exact, list(golds)), "f1": percent(f1, list(golds))}
