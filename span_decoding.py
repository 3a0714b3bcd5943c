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


def top_indices(scores, k):
    """(rows, k) indices of each row's `k` largest scores, in no particular order."""
    return np.argpartition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k :]


def span_candidates(start_logits, end_logits, context_mask, top_k=20, max_answer_length=30, rows_per_chunk=1024):
    """The `top_k` best valid answer spans of every window, among its `top_k` starts x `top_k` ends.

    A span is valid when both ends are context tokens, end >= start and it covers at most `max_answer_length`
    tokens; its score is start logit + end logit. Keeping each window's `top_k` best loses nothing: a question
    keeps at most `top_k` answers over all its windows. A window whose top pairs are all invalid gets its best
    valid single-token span instead, so every window with a context token yields a candidate.

    Windows are processed `rows_per_chunk` at a time, each chunk cut to its last context token: evaluation sorts
    windows by length, so a chunk is about as wide as its windows rather than as the widest one.

    Args:
        start_logits, end_logits: (windows, length) float arrays.
        context_mask: (windows, length) bool array, True on the tokens an answer may cover.

    Returns:
        window, start, end: (candidates,) int arrays; score: (candidates,) float32 array.
    """
    chunks = []
    for first in range(0, len(context_mask), rows_per_chunk):
        rows = slice(first, first + rows_per_chunk)
        columns = np.flatnonzero(context_mask[rows].any(axis=0))
        if columns.size:
            width = columns[-1] + 1
            window, start, end, score = chunk_candidates(
                start_logits[rows, :width], end_logits[rows, :width], context_mask[rows, :width], top_k,
                max_answer_length)
            chunks.append((window + first, start, end, score))
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


def chunk_candidates(start_logits, end_logits, context_mask, top_k, max_answer_length):
    """`span_candidates` of one chunk of windows."""
    starts = np.where(context_mask, start_logits, np.float32(-np.inf))
    ends = np.where(context_mask, end_logits, np.float32(-np.inf))
    k = min(top_k, starts.shape[1])
    top_starts = top_indices(starts, k)
    top_ends = top_indices(ends, k)
    pair_scores = np.take_along_axis(starts, top_starts, 1)[:, :, None] + np.take_along_axis(ends, top_ends, 1)[:, None, :]
    lengths = top_ends[:, None, :] - top_starts[:, :, None]
    valid = np.isfinite(pair_scores) & (lengths >= 0) & (lengths < max_answer_length)
    pair_scores = np.where(valid, pair_scores, np.float32(-np.inf)).reshape(len(starts), k * k)
    best_pairs = top_indices(pair_scores, k)
    best_scores = np.take_along_axis(pair_scores, best_pairs, 1)
    window, slot = np.nonzero(np.isfinite(best_scores))
    i, j = np.divmod(best_pairs[window, slot], k)
    start, end, score = top_starts[window, i], top_ends[window, j], best_scores[window, slot]

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


def grouped_softmax(score, group, groups, extra=None):
    """Softmax of `score` within each group (`group` sorted, in [0, groups)), with an optional extra score per
    group in the normalisation. Returns (probabilities of `score`, probabilities of `extra` or None)."""
    score = score.astype(np.float64)
    top = np.full(groups, -np.inf)
    np.maximum.at(top, group, score)
    if extra is not None:
        top = np.maximum(top, extra)
    top[~np.isfinite(top)] = 0.0
    exp = np.exp(score - top[group])
    total = np.bincount(group, weights=exp, minlength=groups)
    extra_exp = None if extra is None else np.exp(extra - top)
    if extra_exp is not None:
        total = total + extra_exp
    return exp / total[group], None if extra is None else extra_exp / total


def ranked_answers(contexts, window_question, offsets, candidates, n_best, with_null):
    """Per question, its answers best first and its null score.

    Each question keeps the `n_best` best spans over all its windows, as
    `{"text", "start", "end", "score", "probability"}` with character offsets into its context; its null score
    is the lowest null score of its windows (the window that sees the answer best, if any, decides). With
    `with_null`, the empty answer with the null score joins the list (after spans of equal score). The
    probabilities are the softmax of the scores over the list.

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
    kept_score = candidates.score[keep]
    question_null = np.full(len(contexts), np.inf, dtype=np.float32)
    np.minimum.at(question_null, window_question, candidates.window_null)
    probability, null_probability = grouped_softmax(
        kept_score, kept_question, len(contexts), question_null.astype(np.float64) if with_null else None
    )
    null_rank = np.bincount(kept_question, weights=kept_score >= question_null[kept_question], minlength=len(contexts))
    bounds = np.searchsorted(kept_question, np.arange(len(contexts) + 1)).tolist()
    # Python numbers for the loops below: converting numpy scalars one by one is their main cost
    char_start = offsets[candidates.window[keep], candidates.start[keep], 0].tolist()
    char_end = offsets[candidates.window[keep], candidates.end[keep], 1].tolist()
    spans = [
        {"text": contexts[q][s:e], "start": s, "end": e, "score": sc, "probability": p}
        for q, s, e, sc, p in zip(kept_question.tolist(), char_start, char_end, kept_score.tolist(), probability.tolist())
    ]
    nulls, null_rank = question_null.tolist(), null_rank.astype(int).tolist()
    null_probability = null_probability.tolist() if with_null else None

    ranked = []
    for q in range(len(contexts)):
        answers = spans[bounds[q]:bounds[q + 1]]
        best = answers[0] if answers else None
        if with_null:
            answers.insert(null_rank[q], {"text": "", "start": 0, "end": 0, "score": nulls[q],
                                          "probability": null_probability[q]})
        ranked.append((answers, nulls[q], best))
    return ranked
