import numpy as np
import pytest

from model_folder.span_decoding import best_spans, forward_max, null_scores, top_first


def every_span(start_logits, end_logits, context_mask, n_best, max_answer_length):
    """Reference: every valid span of every window scored one by one, each window's `n_best` best kept, equal scores
    by start, then end."""
    found = []
    for w in range(start_logits.shape[0]):
        length = start_logits.shape[1]
        spans = [(-(start_logits[w, i] + end_logits[w, j]), i, j)
                 for i in range(length) for j in range(i, min(i + max_answer_length, length))
                 if context_mask[w, i] and context_mask[w, j]]
        found += [(w, i, j, -score) for score, i, j in sorted(spans)[:n_best]]
    return found


def random_windows(rng, windows=6, length=40, levels=None):
    """Random logits (drawn from `levels` values when given, so that many scores tie) and context masks, one window
    without context."""
    def draw():
        return (rng.choice(levels, size=(windows, length)) if levels else rng.normal(size=(windows, length))).astype(
            np.float32)

    start, end = draw(), draw()
    mask = np.zeros((windows, length), dtype=bool)
    for w in range(windows):
        first = rng.integers(1, 10)
        mask[w, first : rng.integers(first + 1, length)] = True
    mask[rng.integers(windows)] = False
    return start, end, mask


@pytest.mark.parametrize("levels", [None, [0.0, 1.0, 2.0]])
@pytest.mark.parametrize("rows_per_chunk", [1024, 2, 1])
def test_the_n_best_spans_are_every_spans_n_best_in_order(rows_per_chunk, levels):
    """Exactly the spans and order of scoring every span (ties by start, then end), also in chunks of a few windows,
    each cut to its own width, and where a window's best starts and best ends make no valid pair."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        start, end, mask = random_windows(rng, levels=levels)
        if trial % 3 == 0:  # the best starts after the best ends: the top starts x top ends pairs are all invalid
            start[:, 25:] += 10.0
            end[:, :20] += 10.0
        for n_best, max_answer_length in ((1, 30), (5, 4), (20, 3), (200, 50)):
            window, s, e, score = best_spans(start, end, mask, n_best, max_answer_length, rows_per_chunk=rows_per_chunk)
            got = list(zip(window.tolist(), s.tolist(), e.tolist(), score.tolist()))
            assert got == every_span(start, end, mask, n_best, max_answer_length), (trial, n_best)


def test_the_best_span_is_the_same_for_any_number_of_spans():
    rng = np.random.default_rng(3)
    start, end, mask = random_windows(rng, windows=40, levels=[0.0, 0.5])
    best = {}
    for n_best in (1, 2, 20):
        window, s, e, score = best_spans(start, end, mask, n_best, 30)
        first = np.r_[True, window[1:] != window[:-1]]
        best[n_best] = list(zip(window[first].tolist(), s[first].tolist(), e[first].tolist(), score[first].tolist()))
    assert best[1] == best[2] == best[20]


def test_forward_max_is_the_maximum_of_each_run():
    values = np.random.default_rng(2).normal(size=(3, 17))
    for span in range(1, 20):
        expected = [[values[r, i : i + span].max() for i in range(17)] for r in range(3)]
        assert forward_max(values, span).tolist() == expected, span


def test_top_first_breaks_ties_by_index():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [-np.inf, 0.0, -np.inf, -np.inf, 0.0]])
    assert top_first(scores, 2).tolist() == [[1, 2], [1, 4]]
    assert top_first(scores, 4).tolist() == [[1, 2, 4, 3], [1, 4, 0, 2]]


def test_null_scores_read_the_cls_token():
    start = np.arange(12, dtype=np.float32).reshape(3, 4)
    end = 10 * np.arange(12, dtype=np.float32).reshape(3, 4)
    assert null_scores(start, end, np.array([0, 0, 3])).tolist() == [0.0, 44.0, 121.0]
