"""The span head's window decoding: start/end logits -> each window's best answer spans, exactly, and its no-answer
score.

Self-contained (numpy only): it is copied into saved model folders beside the question-answering pipeline, so
evaluation and inference find answers with this one implementation.

A span (i, j) of a window is valid when both ends are context tokens, i <= j and it covers at most
`max_answer_length` tokens; it scores start_logits[i] + end_logits[j]. Equal scores are ordered by start, then end,
so the best span is the same whatever number of spans is asked for.
"""

import numpy as np


def top_first(scores, k):
    """(rows, k) column indices of each row's `k` largest scores, best first, equal scores by increasing index (so
    the first `m` of the `k` best are the `m` best for every m <= k). scores: (rows, n) float, no NaN; k <= n."""
    kth = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k, None]
    above = scores > kth
    tied = scores == kth
    take = above | (tied & (np.cumsum(tied, axis=1) <= k - above.sum(axis=1, keepdims=True)))
    indices = np.nonzero(take)[1].reshape(len(scores), k)  # exactly k a row, in increasing index order
    order = np.argsort(-np.take_along_axis(scores, indices, 1), axis=1, kind="stable")
    return np.take_along_axis(indices, order, 1)


def forward_max(values, span):
    """(rows, n) maximum of each row's `values[i : i + span]` (fewer past the end), by doubling runs:
    log2(span) vectorised steps."""
    pad = np.full((len(values), span), -np.inf, dtype=values.dtype)
    run, best = 1, values
    while 2 * run <= span:
        shifted = np.concatenate([best[:, run:], pad[:, :run]], axis=1)
        best = np.maximum(best, shifted)
        run *= 2
    if run == span:
        return best
    rest = span - run  # two runs of length `run`, from each end of the span, cover it
    return np.maximum(best, np.concatenate([best[:, rest:], pad[:, :rest]], axis=1))


def best_spans(start_logits, end_logits, context_mask, n_best, max_answer_length, rows_per_chunk=1024):
    """The `n_best` best valid spans of every window, exactly, best first.

    The best span starting at i scores start_logits[i] + the best end logit of the `max_answer_length` tokens from
    i on. The n best spans start at the n starts whose best spans score highest (any other start is outscored by
    n spans of those starts, or tied and later), so only those starts' spans are scored. Windows are processed
    `rows_per_chunk` at a time, each chunk cut to its last context token: evaluation sorts windows by length, so a
    chunk is about as wide as its windows rather than as the widest one.

    Args:
        start_logits, end_logits: (windows, length) float32 arrays.
        context_mask: (windows, length) bool array, True on the tokens an answer may cover.
        n_best: spans per window (fewer where a window has fewer valid spans).
        max_answer_length: the most tokens a span may cover.

    Returns:
        window, start, end: (spans,) int arrays (by window, best first within it); score: (spans,) float32.
    """
    chunks = []
    for first in range(0, len(context_mask), rows_per_chunk):
        rows = slice(first, first + rows_per_chunk)
        columns = np.flatnonzero(context_mask[rows].any(axis=0))
        if columns.size:
            width = columns[-1] + 1
            window, start, end, score = chunk_best_spans(
                start_logits[rows, :width], end_logits[rows, :width], context_mask[rows, :width], n_best,
                max_answer_length)
            chunks.append((window + first, start, end, score))
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


def chunk_best_spans(start_logits, end_logits, context_mask, n_best, max_answer_length):
    """`best_spans` of one chunk of windows."""
    rows, width = context_mask.shape
    starts = np.where(context_mask, start_logits, np.float32(-np.inf)).astype(np.float32)
    ends = np.where(context_mask, end_logits, np.float32(-np.inf)).astype(np.float32)
    span = min(max_answer_length, width)
    best_from = starts + forward_max(ends, span)  # best span starting at each token
    top = top_first(best_from, min(n_best, width))
    top.sort(axis=1)  # by start, so that the flattened (start, end) order below breaks ties
    end = top[:, :, None] + np.arange(span)  # (rows, starts, span)
    inside = end < width
    end = np.where(inside, end, 0)
    row = np.arange(rows)[:, None, None]
    score = np.where(inside, starts[row, top[:, :, None]] + ends[row, end], np.float32(-np.inf)).reshape(rows, -1)
    best = top_first(score, min(n_best, score.shape[1]))
    best_score = np.take_along_axis(score, best, 1)
    window, slot = np.nonzero(np.isfinite(best_score))
    pair = best[window, slot]
    start = top[window, pair // span]
    return window, start, end.reshape(rows, -1)[window, pair], best_score[window, slot]


def null_scores(start_logits, end_logits, cls_index):
    """(windows,) no-answer score of each window: start + end logit of its [CLS] token at `cls_index`."""
    rows = np.arange(len(cls_index))
    return (start_logits[rows, cls_index] + end_logits[rows, cls_index]).astype(np.float32)
