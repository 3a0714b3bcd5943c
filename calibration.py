"""A probability that an answer is right: the decoder's evidence for it, mapped by a small fitted calibrator.

Self-contained (numpy only): it is copied into saved model folders beside the question-answering pipeline, which
reports `probability` with every answer from the calibrator stored in the model's config
(`qa_settings["calibrator"]`); `run_qa.py --calibrate` fits it on the evaluation questions.

The evidence is what either head's decoder already ranks answers by (`qa_decoding`): a span's score (span head:
start + end logit; CRF: log P(tag path)) and the question's null score (no answer: [CLS] logits, or log P(all O)).
- a span: its margin over no answer (score - null score) and over the best span with another text (score - that
  span's score; for the top span the gap to the runner-up, for the others below zero): how much the model
  prefers it to answering nothing, and to answering something else;
- the empty answer: the null odds (null score - best span score).
Margins, not scores: they are what the decision between answers turns on, they do not depend on the
`null_score_diff_threshold` a user picks, and their scale is the head's own, which a logistic fit absorbs.
A question's answers are ranked as evaluation ranks them, so the pipeline (with `align_to_words=False`) gives
the probabilities evaluation measured.

Two logistic regressions: P(span right | its two margins), right = exact match after SQuAD's normalisation; and
P(empty answer right | null odds), right = the question has no answer. Fitted on each question's best span and its
empty answer.
"""

import numpy as np

# Margins beyond this many logits say no more than this: it bounds a missing runner-up (a question with a
# single distinct span) and the null odds of a question without spans.
MARGIN_CLIP = 30.0
L2 = 1e-2  # on the weights (not the bias): keeps the fit finite when one margin separates right from wrong


def span_margins(texts, scores, null_score):
    """(spans, 2) margins of each span of a question over no answer and over the best span with another text.

    texts, scores: the question's spans best first (scores descending); null_score: the question's null score.
    Texts are compared ignoring case, as the pipeline merges answers.
    """
    scores = np.asarray(scores, dtype=np.float64)
    keys = [text.lower() for text in texts]
    runner_up = np.full(len(scores), -np.inf)
    if len(scores):
        top_key = keys[0]
        others = [i for i, key in enumerate(keys) if key != top_key]
        runner_up[:] = scores[0]  # every span that is not the top text competes with the top span
        runner_up[[i for i, key in enumerate(keys) if key == top_key]] = scores[others[0]] if others else -np.inf
    margins = np.stack([scores - null_score, scores - runner_up], axis=-1) if len(scores) else np.zeros((0, 2))
    return np.clip(margins, -MARGIN_CLIP, MARGIN_CLIP)


def null_odds_feature(best_span_score, null_score):
    """(1,) the empty answer's evidence: null score - best span score (clipped; no span at all: the clip)."""
    return np.clip(np.array([null_score - best_span_score], dtype=np.float64), -MARGIN_CLIP, MARGIN_CLIP)


def answer_evidence(texts, scores, null_score):
    """(span margins (spans, 2), the empty answer's null odds (1,)) of one question's spans, best first."""
    best = scores[0] if len(scores) else -np.inf
    return span_margins(texts, scores, null_score), null_odds_feature(best, null_score)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


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


class Calibrator:
    """P(right) of span answers and of the empty answer from their margins (see the module docstring).

    span: [bias, weight of the margin over no answer, weight of the margin over the runner-up];
    empty: [bias, weight of the null odds].
    """

    def __init__(self, span, empty):
        self.span, self.empty = np.asarray(span, dtype=np.float64), np.asarray(empty, dtype=np.float64)

    @classmethod
    def fit(cls, span_features, span_right, empty_features, empty_right):
        return cls(fitted_logistic(span_features, span_right), fitted_logistic(empty_features, empty_right))

    @classmethod
    def from_settings(cls, qa_settings):
        """The calibrator stored in a model's `qa_settings`, or None."""
        stored = (qa_settings or {}).get("calibrator")
        return None if stored is None else cls(stored["span"], stored["empty"])

    def to_settings(self, questions):
        """What `qa_settings["calibrator"]` stores: the coefficients and how many questions fitted them."""
        return {"span": self.span.tolist(), "empty": self.empty.tolist(), "questions": int(questions)}

    def span_probability(self, margins):
        margins = np.asarray(margins, dtype=np.float64).reshape(-1, 2)
        return sigmoid(self.span[0] + margins @ self.span[1:])

    def empty_probability(self, null_odds):
        return sigmoid(self.empty[0] + np.asarray(null_odds, dtype=np.float64).reshape(-1) * self.empty[1])

    def answer_probabilities(self, texts, scores, null_score):
        """(probability of each span, probability of the empty answer) of one question's ranked spans."""
        margins, null_odds = answer_evidence(texts, scores, null_score)
        return self.span_probability(margins).tolist(), float(self.empty_probability(null_odds)[0])


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
