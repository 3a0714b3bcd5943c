"""From a model's window outputs to answers: each head's window decoding, and the answers per question.

Self-contained (numpy and the span search beside it): model folders carry it beside the question-answering
pipeline. Evaluation's post-processing and the pipeline both call `window_candidates`, so a question gets the same
candidates, scores and null score from either; `ranked_answers` then ranks them per question as evaluation reports
them.

The decoders, named by `QASettings.decoder` (`qa_settings.py`):
- "span": start/end logits; a window's candidates are its `n_best` best valid spans (`span_decoding.best_spans`,
  exact), scored start + end logit; its null score is the start + end logit of its [CLS] token.
- "crf": the model decodes in its forward pass (the exact n-best single-span tag paths of each window, at most
  `max_answer_length` tokens); a candidate scores log P(path), the null score is log P(all tags O).
- "multi_span": a CRF model trained on multi-span answers (config `multi_span`) decodes the n-best valid tag paths
  with any number of spans; a candidate is a path (`WindowPaths`), its answer the set of its spans, and
  `multi_span_answers` merges the spans of a question's windows.
"""

from dataclasses import dataclass

import numpy as np

from .span_decoding import best_spans, null_scores

# The model outputs each head's window decoding reads, in the order `window_candidates` takes them.
OUTPUT_FIELDS = {"span": ("start_logits", "end_logits"), "crf": ("span_start", "span_end", "span_score", "null_score"),
                 "multi_span": ("span_start", "span_end", "span_score", "span_path", "path_score", "null_score")}
# How the spans of a multi-span answer are joined into one `answer` string.
SPAN_SEPARATOR = "; "


@dataclass
class WindowCandidates:
    """Answer candidates of a set of windows, from either head.

    window, start, end: (candidates,) int arrays, the window and its token span, by window and best first within
    it; score: (candidates,) float32. window_null: (windows,) float32 no-answer score of each window.
    """

    window: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    window_null: np.ndarray


class ModelOutputError(ValueError):
    """The model's outputs cannot be decoded into answers: they are not numbers (NaN) or not finite."""


def check_decodable(finite, scores=()):
    """ModelOutputError unless every value of the arrays `finite` is finite and no value of the arrays `scores` is NaN
    or +inf (-inf marks the paths a CRF window does not have): the outputs of a model whose training diverged (an fp16
    overflow, a learning rate too high) are not numbers, and no answer can be read from them."""
    if all(np.isfinite(value).all() for value in finite) and \
            not any((np.isnan(value) | (value == np.inf)).any() for value in scores):
        return
    raise ModelOutputError("The model's outputs are not finite numbers (NaN or infinite scores), so no answer can be "
                           "read from them: its weights are broken, as a diverged training run leaves them (an fp16 "
                           "overflow, too high a learning rate); retrain it or load another checkpoint")


def window_candidates(head, outputs, context_mask, cls_index, n_best, max_answer_length):
    """Each window's `n_best` best answer candidates and its null score (`WindowCandidates`; `WindowPaths` for
    "multi_span").

    Args:
        head: "span", "crf" or "multi_span".
        outputs: the model's `OUTPUT_FIELDS[head]` as arrays, one row per window: span: start and end logits
            (windows, length), length at least the context's; crf: span_start, span_end, span_score (windows, n)
            (-inf scores past a window's last span; or (windows,), one span each) and null_score (windows,);
            multi_span: as `window_paths` reads them.
        context_mask: (windows, width) bool, True on the tokens an answer may cover.
        cls_index: (windows,) int, the [CLS] token of each window (span head).
        n_best: candidates kept per window; max_answer_length: the most tokens a span may cover (the CRF model
            applies it in its own decoding).
    """
    if head == "multi_span":
        check_decodable(finite=[np.asarray(outputs[5])], scores=[np.asarray(outputs[2]), np.asarray(outputs[4])])
        return window_paths(outputs, n_best)
    if head == "span":
        width = context_mask.shape[1]
        start_logits, end_logits = (np.asarray(o, dtype=np.float32)[:, :width] for o in outputs)
        read = context_mask.copy()
        read[np.arange(len(cls_index)), cls_index] = True  # the tokens whose logits make spans and null scores
        check_decodable(finite=[start_logits[read], end_logits[read]])
        window, start, end, score = best_spans(start_logits, end_logits, context_mask, n_best, max_answer_length)
        return WindowCandidates(window, start, end, score, null_scores(start_logits, end_logits, cls_index))
    check_decodable(finite=[np.asarray(outputs[3])], scores=[np.asarray(outputs[2])])
    null_score = np.asarray(outputs[3], dtype=np.float32).reshape(-1)
    span_start, span_end, span_score = (np.asarray(o).reshape(len(null_score), -1)[:, :n_best] for o in outputs[:3])
    window, slot = np.nonzero(np.isfinite(span_score))  # by window, then best first
    return WindowCandidates(window, span_start[window, slot], span_end[window, slot],
                            span_score[window, slot].astype(np.float32), null_score)


def question_nulls(window_question, window_null, questions):
    """(questions,) null score of each question: the lowest of its windows' (the window that sees the answer best,
    if any, decides); +inf for a question without windows."""
    null = np.full(questions, np.inf, dtype=np.float32)
    np.minimum.at(null, window_question, window_null)
    return null


def rank_within_groups(group, score):
    """Order of candidates sorted by group then descending score (equal scores keep their order), and each one's
    rank inside its group."""
    order = np.lexsort((-score, group))
    sorted_group = group[order]
    group_start = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    sizes = np.diff(np.r_[group_start, len(order)])
    rank = np.arange(len(order)) - np.repeat(group_start, sizes)
    return order, rank


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

    Each question keeps the `n_best` best spans over all its windows (equal scores in window order, then as the
    window ranked them), as `{"text", "start", "end", "score", "probability"}` with character offsets into its
    context; its null score is `question_nulls`'. With `with_null`, the empty answer with the null score joins
    the list (after spans of equal score). The probabilities are the softmax of the scores over the list.

    Args:
        contexts: the questions' contexts; window_question: (windows,) question index of each window.
        offsets: (windows, length, 2) character offsets of the tokens, -1 off the context.
        candidates: `WindowCandidates` of those windows.

    Returns:
        list, per question, of (answers, null score, best span or None).
    """
    question = window_question[candidates.window]
    order, rank = rank_within_groups(question, candidates.score)
    keep = order[rank < n_best]
    kept_question = question[keep]
    kept_score = candidates.score[keep]
    question_null = question_nulls(window_question, candidates.window_null, len(contexts))
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


@dataclass
class WindowPaths:
    """Multi-span candidates of a set of windows: each window's most probable tag paths and their spans.

    window, score: (paths,) the window of each path and its log P(path) (float32), by window and best first.
    span_path, start, end, span_score: (spans,) the path of each span (an index into `window`), its first and last
    tokens and its marginal log P (float32), by path then position. window_null: (windows,) log P(all tags O).
    """

    window: np.ndarray
    score: np.ndarray
    span_path: np.ndarray
    start: np.ndarray
    end: np.ndarray
    span_score: np.ndarray
    window_null: np.ndarray


def window_paths(outputs, n_best):
    """`WindowPaths` of the windows' `OUTPUT_FIELDS["multi_span"]` (as arrays, one row per window, padded with any
    negative `span_path`), their `n_best` best paths each."""
    null_score = np.asarray(outputs[5], dtype=np.float32).reshape(-1)
    windows = len(null_score)
    span_start, span_end, span_score, span_path = (np.asarray(o).reshape(windows, -1) for o in outputs[:4])
    path_score = np.asarray(outputs[4], dtype=np.float32).reshape(windows, -1)[:, :n_best]
    window, slot = np.nonzero(np.isfinite(path_score))  # by window, then best first
    path_index = np.full(path_score.shape, -1)
    path_index[window, slot] = np.arange(len(window))
    span_window, column = np.nonzero((span_path >= 0) & (span_path < path_score.shape[1]))
    path = path_index[span_window, span_path[span_window, column]]
    keep = path >= 0
    span_window, column, path = span_window[keep], column[keep], path[keep]
    return WindowPaths(window, path_score[window, slot], path, span_start[span_window, column],
                       span_end[span_window, column], span_score[span_window, column].astype(np.float32), null_score)


def without_overlaps(spans):
    """The spans (dicts with character `start`, `end`, `score` and `cut`), each context span once: of two that
    overlap, the one a window's edge does not cut, else the more probable, is kept (equal ones are one span), in
    context order."""
    kept = []
    for span in sorted(spans, key=lambda span: (span["cut"], -span["score"])):
        if not any(span["start"] < other["end"] and other["start"] < span["end"] for other in kept):
            kept.append(span)
    return sorted(kept, key=lambda span: span["start"])


def edge_cuts(offsets, window_question):
    """(first, last, cut_first, cut_last): each window's first and last context tokens, and whether its context goes
    on before the first (after the last) in another window of its question, so that a span there may be cut.

    offsets: (windows, length, 2) character offsets, -1 off the context; window_question: (windows,) question index.
    """
    context = offsets[..., 0] >= 0
    rows = np.arange(len(context))
    first, last = context.argmax(axis=1), context.shape[1] - 1 - context[:, ::-1].argmax(axis=1)
    first_char, last_char = offsets[rows, first, 0], offsets[rows, last, 1]
    questions = window_question.max(initial=-1) + 1
    question_first, question_last = np.full(questions, np.iinfo(np.int64).max), np.full(questions, -1)
    np.minimum.at(question_first, window_question, first_char)
    np.maximum.at(question_last, window_question, last_char)
    return first, last, first_char > question_first[window_question], last_char < question_last[window_question]


def spans_of_paths(offsets, window_question, paths):
    """Per path of `paths` (`WindowPaths`), its spans as `{"start", "end", "score", "cut"}`: character offsets (from
    the (windows, length, 2) `offsets`), log marginal probability, and whether it touches an edge of its window
    where the context goes on in another window of the question (`window_question`), so it may be a cut copy."""
    windows = paths.window[paths.span_path]
    char_start = offsets[windows, paths.start, 0].tolist()
    char_end = offsets[windows, paths.end, 1].tolist()
    first, last, cut_first, cut_last = edge_cuts(offsets, window_question)
    cut = (((paths.start == first[windows]) & cut_first[windows]) |
           ((paths.end == last[windows]) & cut_last[windows])).tolist()
    spans = [[] for _ in paths.window]
    for path, start, end, score, edge in zip(paths.span_path.tolist(), char_start, char_end,
                                             paths.span_score.tolist(), cut):
        spans[path].append({"start": start, "end": end, "score": score, "cut": edge})
    return spans


def multi_span_answers(contexts, window_question, offsets, paths, n_best, with_null, threshold):
    """Per question, its multi-span answer, its most probable paths and its null odds.

    Each window whose best path is more probable than its all-O path by at least the margin `threshold` allows
    (null score - path score <= threshold) contributes that path's spans; the answer is the spans of the question's
    contributing windows, each context span once (`without_overlaps`: a span in two overlapping windows is reported
    by its copy that no window edge cuts, else by its more probable copy), its score the best contributing path's. Where no
    window contributes, the answer is empty with `with_null` (SQuAD v2) and the most probable path's spans
    otherwise. The null odds are the least null score - best path score of the question's windows.

    Args:
        contexts: the questions' contexts; window_question: (windows,) question index of each window.
        offsets: (windows, length, 2) character offsets of the tokens, -1 off the context.
        paths: `WindowPaths` of those windows; n_best: paths listed per question.

    Returns:
        list, per question, of (answer, ranked, null odds): answer `{"text", "spans", "score"}` with `spans` dicts
        `{"text", "start", "end", "score"}` (score: log marginal probability) and `text` the spans joined by
        `SPAN_SEPARATOR`; ranked: the question's `n_best` most probable paths as answers, with "probability" (the
        softmax of the listed scores) and, with `with_null`, the empty answer at its rank.
    """
    path_spans = spans_of_paths(offsets, window_question, paths)
    question_windows, question_paths, window_best = [[] for _ in contexts], [[] for _ in contexts], {}
    for window, question in enumerate(window_question.tolist()):
        question_windows[question].append(window)
    for path, window in enumerate(paths.window.tolist()):  # by window, best first
        question_paths[window_question[window]].append(path)
        window_best.setdefault(window, path)

    def answer(context, spans, score):
        # each context span once: spans of overlapping windows, or of one path widened into one word by word-aligned
        # offsets (the pipeline's)
        spans = [{"text": context[s["start"]:s["end"]], "start": s["start"], "end": s["end"], "score": s["score"]}
                 for s in without_overlaps(spans)]
        return {"text": SPAN_SEPARATOR.join(s["text"] for s in spans), "spans": spans, "score": score}

    results = []
    for q, context in enumerate(contexts):
        best_paths = [window_best[w] for w in question_windows[q] if w in window_best]
        nulls = {w: float(paths.window_null[w]) for w in question_windows[q]}
        odds = [nulls[paths.window[p]] - float(paths.score[p]) for p in best_paths]
        chosen = [p for p, o in zip(best_paths, odds) if o <= threshold]
        ranked_paths = sorted(question_paths[q], key=lambda p: -paths.score[p])  # stable: equal scores in window order
        if not chosen and not with_null and ranked_paths:
            chosen = ranked_paths[:1]
        best = answer(context, [span for p in chosen for span in path_spans[p]],
                      max((float(paths.score[p]) for p in chosen), default=-np.inf))
        ranked = [answer(context, path_spans[p], float(paths.score[p])) for p in ranked_paths[:n_best]]
        null = min(nulls.values(), default=np.inf)
        if with_null:
            place = sum(a["score"] >= null for a in ranked)
            ranked.insert(place, {"text": "", "spans": [], "score": null})
        scores = np.array([a["score"] for a in ranked], dtype=np.float64)
        probabilities, _ = grouped_softmax(scores, np.zeros(len(scores), dtype=np.int64), 1)
        for a, p in zip(ranked, probabilities.tolist()):
            a["probability"] = p
        results.append((best, ranked, min(odds, default=np.inf)))
    return results
