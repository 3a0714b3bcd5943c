"""Fitting the calibrator that model folders apply (`model_folder/calibration.py`), and measuring it: `--calibrate`
fits it on the evaluated questions and reports its expected calibration error by cross-validation.

Not shipped in model folders: a folder only applies a fitted calibrator.
"""

from dataclasses import dataclass

import numpy as np

from metrics.squad_v2.compute_score import best_score, exact_match, gold_answers
from model_folder.calibration import Calibrator, answer_evidence, sigmoid

L2 = 1e-2  # on the weights (not the bias): keeps the fit finite when one margin separates right from wrong


def fitted_logistic(features, right, iterations=100):
    """[bias, weights...] of a logistic regression of `right` (n,) on `features` (n, d), by Newton's method with
    an L2 penalty on the weights."""
    x = np.hstack([np.ones((len(features), 1)), np.asarray(features, dtype=np.float64)])
    y = np.asarray(right, dtype=np.float64)
    penalty = np.diag([0.0] + [L2] * (x.shape[1] - 1))
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = sigmoid(x @ w)
        gradient = x.T @ (p - y) + penalty @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def reliability(probability, right, bins=15):
    """Expected calibration error over `bins` equal-width bins, Brier score, and each bin's
    (count, mean probability, fraction right) for a reliability diagram."""
    probability, right = np.asarray(probability, dtype=np.float64), np.asarray(right, dtype=np.float64)
    index = np.minimum((probability * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    confidence = np.bincount(index, weights=probability, minlength=bins)
    accuracy = np.bincount(index, weights=right, minlength=bins)
    ece = float(np.abs(accuracy - confidence).sum() / max(len(probability), 1))
    filled = count > 0
    mean_probability = np.where(filled, confidence / np.maximum(count, 1), np.nan)
    fraction_right = np.where(filled, accuracy / np.maximum(count, 1), np.nan)
    return {"ece": ece, "brier": float(np.mean((probability - right) ** 2)) if len(probability) else 0.0,
            "bins": [{"count": int(c), "probability": None if not f else float(p), "right": None if not f else float(r)}
                     for c, p, r, f in zip(count, mean_probability, fraction_right, filled)]}


# --calibrate measures its calibrator by cross-validation over CALIBRATION_FOLDS folds of whole contexts (a
# context's questions share evidence), each measuring MIN_FOLD_QUESTIONS questions or more.
CALIBRATION_FOLDS = 5
MIN_FOLD_QUESTIONS = 20
MIN_CALIBRATION_QUESTIONS = CALIBRATION_FOLDS * MIN_FOLD_QUESTIONS


def context_folds(contexts, folds=CALIBRATION_FOLDS):
    """(questions,) the fold of each question, its context's: contexts go to folds largest first, each to the fold
    holding the fewest questions so far, so that fold sizes differ by at most one context's questions."""
    _, index, sizes = np.unique(np.asarray(contexts, dtype=object), return_inverse=True, return_counts=True)
    fold_of_context, load = np.empty(len(sizes), dtype=np.int64), np.zeros(folds, dtype=np.int64)
    for context in np.argsort(-sizes, kind="stable"):
        fold_of_context[context] = np.argmin(load)
        load[fold_of_context[context]] += sizes[context]
    return fold_of_context[index.reshape(-1)]


@dataclass
class CalibrationEvidence:
    """Per evaluated question (SQuAD v2): its best span's margins and whether that span is right (exact match), its
    null odds and whether the empty answer is right (no gold answer), which of the two it returned, the n-best
    probability of what it returned (the uncalibrated score compared against), and its context (folds keep a
    context's questions together). Arrays of one row per question; a question without spans has NaN margins,
    left out of the span fit (it never returns a span)."""

    span_margins: np.ndarray
    span_right: np.ndarray
    null_odds: np.ndarray
    empty_right: np.ndarray
    returned_empty: np.ndarray
    raw_probability: np.ndarray
    context: np.ndarray

    def returned_right(self):
        return np.where(self.returned_empty, self.empty_right, self.span_right)

    def fit(self, rows):
        """The `Calibrator` fitted on the questions `rows` (a boolean mask)."""
        spans = rows & ~np.isnan(self.span_margins).any(axis=1)
        return Calibrator(tuple(fitted_logistic(self.span_margins[spans], self.span_right[spans]).tolist()),
                          tuple(fitted_logistic(self.null_odds[rows], self.empty_right[rows]).tolist()),
                          int(rows.sum()))

    def probabilities(self, calibrator, rows):
        """P(right) of what the questions `rows` returned."""
        span = calibrator.span_probability(np.nan_to_num(self.span_margins[rows]))
        return np.where(self.returned_empty[rows], calibrator.empty_probability(self.null_odds[rows]), span)


def calibration_evidence(result, references, contexts):
    """`CalibrationEvidence` of the evaluated questions (`result`: their `QuestionPredictions`; `references`: the
    metric's gold answers, in the same order; `contexts`: theirs)."""
    rows = []
    for reference, context in zip(references, contexts, strict=True):
        qid = reference["id"]
        answers = result.nbest[qid]
        spans = [a for a in answers if a["text"]]
        empty = next(a for a in answers if not a["text"])
        golds = gold_answers(reference["answers"]["text"])
        margins, null_odds = answer_evidence([a["text"] for a in spans], [a["score"] for a in spans], empty["score"])
        returned_empty = result.predictions[qid] == ""
        rows.append((margins[0] if spans else np.full(2, np.nan),
                     bool(spans) and best_score(exact_match, spans[0]["text"], golds) == 1,
                     null_odds, golds == [""], returned_empty,
                     empty["probability"] if returned_empty else spans[0]["probability"], context))
    columns = list(zip(*rows))
    return CalibrationEvidence(np.stack(columns[0]), np.array(columns[1], dtype=bool), np.stack(columns[2]),
                               np.array(columns[3], dtype=bool), np.array(columns[4], dtype=bool),
                               np.array(columns[5], dtype=np.float64), np.array(columns[6], dtype=object))


def calibration_report(evidence, folds=CALIBRATION_FOLDS):
    """(the calibrator fitted on every question, metrics, reliability bins): expected calibration error and Brier
    score of the calibrated probability of each returned answer, measured by `folds`-fold cross-validation (each
    question's probability from the calibrator fitted on the other folds; `context_folds`), and of the raw n-best
    probability."""
    fold = context_folds(evidence.context, folds)
    out_of_fold = np.empty(len(fold))
    for k in range(folds):
        held_out = fold == k
        out_of_fold[held_out] = evidence.probabilities(evidence.fit(~held_out), held_out)
    right = evidence.returned_right()
    calibrated, raw = reliability(out_of_fold, right), reliability(evidence.raw_probability, right)
    metrics = {"calibration_questions": len(right), "calibration_right": float(right.mean()),
               "calibrated_ece": calibrated["ece"], "calibrated_brier": calibrated["brier"],
               "raw_ece": raw["ece"], "raw_brier": raw["brier"]}
    return evidence.fit(np.ones(len(right), dtype=bool)), metrics, {"calibrated": calibrated["bins"],
                                                                     "raw": raw["bins"]}
