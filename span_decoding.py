"""Span decoding: from window scores to ranked answers per question.

Self-contained (numpy only): it is copied into saved model folders beside the question-answering pipeline, so
evaluation and inference decode answers with this one implementation.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class WindowCandidates:
    """Answer candidates of a set of windows, from either head.

    window, start, end: (candidates,) int arrays, the window and its token span; score: (candidates,) float32.
    window_null: (windows,) float32 no-answer score of each window.
    """

    window: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    window_null: np.ndarray


def span_candidates(start_logits, end_logits, context_mask, top_k=20, max_answer_length=30):
    """Valid answer spans of every window among its `top_k` starts x `top_k` ends.

    A span is valid when both ends are context tokens, end >= start and it covers at most `max_answer_length`
    tokens; its score is start logit + end logit. A window whose top pairs are all invalid gets its best valid
    single-token span instead, so every window with a context token yields a candidate.

    Args:
        start_logits, end_logits: (windows, length) float arrays.
        context_mask: (windows, length) bool array, True on the tokens an answer may cover.

    Returns:
        window, start, end: (candidates,) int arrays; score: (candidates,) float32 array.
    """
    starts = np.where(context_mask, start_logits, -np.inf).astype(np.float32)
    ends = np.where(context_mask, end_logits, -np.inf).astype(np.float32)
    k = min(top_k, starts.shape[1])
    top_starts = np.argpartition(-starts, k - 1, axis=1)[:, :k]
    top_ends = np.argpartition(-ends, k - 1, axis=1)[:, :k]
    pair_scores = np.take_along_axis(starts, top_starts, 1)[:, :, None] + np.take_along_axis(ends, top_ends, 1)[:, None, :]
    lengths = top_ends[:, None, :] - top_starts[:, :, None]
    valid = np.isfinite(pair_scores) & (lengths >= 0) & (lengths < max_answer_length)
    window, i, j = np.nonzero(valid)
    start, end, score = top_starts[window, i], top_ends[window, j], pair_scores[window, i, j]

    lonely = np.flatnonzero(~valid.any(axis=(1, 2)) & context_mask.any(axis=1))
    if lonely.size:
        token_scores = starts[lonely] + ends[lonely]
        best = token_scores.argmax(axis=1)
        window = np.concatenate([window, lonely])
        start = np.concatenate([start, best])
        end = np.concatenate([end, best])
        score = np.concatenate([score, token_scores[np.arange(lonely.size), best]])
    return window, start, end, score


def null_scores(start_logits, end_logits, cls_index):
    """(windows,) no-answer score of each window: start + end logit of its [CLS] token at `cls_index`."""
    rows = np.arange(len(cls_index))
    return (start_logits[rows, cls_index] + end_logits[rows, cls_index]).astype(np.float32)


def rank_within_groups(group, score):
    """Order of candidates sorted by group then descending score, and each one's rank inside its group."""
    order = np.lexsort((-score, group))
    sorted_group = group[order]
    group_start = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    sizes = np.diff(np.r_[group_start, len(order)])
    rank = np.arange(len(order)) - np.repeat(group_start, sizes)
    return order, rank


def best_per_group(group, score, n_best):
    """Indices of each group's `n_best` highest-scoring candidates, grouped, best first."""
    order, rank = rank_within_groups(group, score)
    return order[rank < n_best]


def softmax(scores):
    """Probabilities from scores (an empty array for no scores)."""
    if scores.size == 0:
        return scores
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


def ranked_answers(contexts, window_question, offsets, candidates, n_best, with_null):
    """Per question, its answers best first and its null score.

    Each question keeps the `n_best` best spans over all its windows, as
    `{"text", "start", "end", "score"}` with character offsets into its context; its null score is the lowest
    null score of its windows (the window that sees the answer best, if any, decides). With `with_null`, the
    empty answer with the null score joins the list. Each answer gets a "probability": the softmax of the
    scores over the list.

    Args:
        contexts: the questions' contexts; window_question: (windows,) question index of each window.
        offsets: (windows, length, 2) character offsets of the tokens, -1 off the context.
        candidates: `WindowCandidates` of those windows.

    Returns:
        list, per question, of (answers, null score, best span or None).
    """
    question = window_question[candidates.window]
    keep = best_per_group(question, candidates.score, n_best)
    kept_question = question[keep]
    char_start = offsets[candidates.window[keep], candidates.start[keep], 0]
    char_end = offsets[candidates.window[keep], candidates.end[keep], 1]
    kept_score = candidates.score[keep]
    bounds = np.searchsorted(kept_question, np.arange(len(contexts) + 1))
    question_null = np.full(len(contexts), np.inf, dtype=np.float32)
    np.minimum.at(question_null, window_question, candidates.window_null)

    ranked = []
    for q, context in enumerate(contexts):
        span = slice(bounds[q], bounds[q + 1])
        answers = [
            {"text": context[s:e], "start": int(s), "end": int(e), "score": float(sc)}
            for s, e, sc in zip(char_start[span], char_end[span], kept_score[span])
        ]
        best = answers[0] if answers else None
        null = float(question_null[q])
        if with_null:
            answers = sorted(answers + [{"text": "", "start": 0, "end": 0, "score": null}], key=lambda a: -a["score"])
        for answer, probability in zip(answers, softmax(np.array([a["score"] for a in answers]))):
            answer["probability"] = float(probability)
        ranked.append((answers, null, best))
    return ranked
