"""A probability that an answer is right: the decoder's evidence for it, mapped by a small fitted calibrator.

Self-contained (numpy only): it is copied into saved model folders beside the question-answering pipeline, which
reports `probability` with every answer from the calibrator stored in the model's config
(`qa_settings["calibrator"]`); `run_qa.py --calibrate` fits it on the evaluation questions
(`calibration_fitting.py`, which is not shipped).

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

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

# Margins beyond this many logits say no more than this: it bounds a missing runner-up (a question with a
# single distinct span) and the null odds of a question without spans.
MARGIN_CLIP = 30.0


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


@dataclass(frozen=True)
class Calibrator:
    """P(right) of span answers and of the empty answer from their margins (see the module docstring).

    span: (bias, weight of the margin over no answer, weight of the margin over the runner-up);
    empty: (bias, weight of the null odds); questions: how many questions fitted them.
    """

    span: tuple[float, float, float]
    empty: tuple[float, float]
    questions: int

    @classmethod
    def from_dict(cls, stored):
        """The calibrator `to_dict` stored; ValueError naming the key and the problem when it is not one."""
        if not isinstance(stored, dict) or set(stored) != {"span", "empty", "questions"}:
            raise ValueError(f"must be {{'span': [3 numbers], 'empty': [2 numbers], 'questions': count}}, got "
                             f"{stored!r:.200}")
        for key, size in (("span", 3), ("empty", 2)):
            values = stored[key]
            if not (isinstance(values, list) and len(values) == size and all(finite_number(v) for v in values)):
                raise ValueError(f"{key}: must be a list of {size} finite numbers, got {values!r:.200}")
        questions = stored["questions"]
        if not isinstance(questions, int) or isinstance(questions, bool) or questions < 1:
            raise ValueError(f"questions: must be a positive integer, got {questions!r}")
        return cls(tuple(stored["span"]), tuple(stored["empty"]), questions)

    def to_dict(self):
        """What a model's config stores under `qa_settings["calibrator"]`."""
        return {"span": list(self.span), "empty": list(self.empty), "questions": self.questions}

    def span_probability(self, margins):
        margins = np.asarray(margins, dtype=np.float64).reshape(-1, 2)
        span = np.asarray(self.span, dtype=np.float64)
        return sigmoid(span[0] + margins @ span[1:])

    def empty_probability(self, null_odds):
        return sigmoid(self.empty[0] + np.asarray(null_odds, dtype=np.float64).reshape(-1) * self.empty[1])

    def answer_probabilities(self, texts, scores, null_score):
        """(probability of each span, probability of the empty answer) of one question's ranked spans."""
        margins, null_odds = answer_evidence(texts, scores, null_score)
        return self.span_probability(margins).tolist(), float(self.empty_probability(null_odds)[0])


def finite_number(value):
    """Whether `value` is a real number (not a bool) and finite."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
