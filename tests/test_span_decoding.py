import numpy as np
import pytest

from span_decoding import best_per_group, null_scores, span_candidates


def loop_candidates(start_logits, end_logits, context_mask, top_k, max_answer_length):
    """Reference: the plain per-candidate loop over each window's top-k starts x top-k ends, keeping its k best."""
    found = set()
    for w in range(start_logits.shape[0]):
        starts = np.where(context_mask[w], start_logits[w], -np.inf)
        ends = np.where(context_mask[w], end_logits[w], -np.inf)
        pairs = []
        for i in np.argsort(-starts)[:top_k]:
            for j in np.argsort(-ends)[:top_k]:
                if context_mask[w, i] and context_mask[w, j] and 0 <= j - i < max_answer_length:
                    pairs.append((w, int(i), int(j), round(float(starts[i] + ends[j]), 4)))
        found.update(sorted(pairs, key=lambda p: -p[3])[:top_k])
    return found


def random_windows(rng, windows=6, length=40):
    start = rng.normal(size=(windows, length)).astype(np.float32)
    end = rng.normal(size=(windows, length)).astype(np.float32)
    mask = np.zeros((windows, length), dtype=bool)
    for w in range(windows):
        first = rng.integers(1, 10)
        mask[w, first : rng.integers(first + 1, length)] = True
    return start, end, mask


@pytest.mark.parametrize("rows_per_chunk", [1024, 2, 1])
def test_candidates_equal_the_loop(rows_per_chunk):
    """Also in chunks of a few windows, each cut to its own width, and with windows without context tokens."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        start, end, mask = random_windows(rng)
        mask[rng.integers(len(mask))] = False
        window, s, e, score = span_candidates(start, end, mask, top_k=5, max_answer_length=4,
                                              rows_per_chunk=rows_per_chunk)
        got = {(int(w), int(i), int(j), round(float(x), 4)) for w, i, j, x in zip(window, s, e, score)}
        reference = loop_candidates(start, end, mask, 5, 4)
        lonely = {w for w in range(len(mask))} - {c[0] for c in reference}
        assert {c for c in got if c[0] not in lonely} == reference


def test_every_window_with_context_gets_a_single_token_span_when_its_top_pairs_are_invalid():
    start = np.array([[0.0, 0.0, 1.0, 5.0, 0.0]], dtype=np.float32)
    end = np.array([[0.0, 4.0, 3.0, 0.0, 0.0]], dtype=np.float32)
    mask = np.array([[False, True, True, True, False]])
    # top-1 start is 3, top-1 end is 1: end before start, so the best single token (2: 1+3 = 4 vs 3: 5+0) is used
    window, s, e, score = span_candidates(start, end, mask, top_k=1, max_answer_length=30)
    assert (window.tolist(), s.tolist(), e.tolist(), score.tolist()) == ([0], [3], [3], [5.0])


def test_spans_stay_inside_the_context_and_within_max_length():
    rng = np.random.default_rng(1)
    start, end, mask = random_windows(rng, windows=50)
    window, s, e, _ = span_candidates(start, end, mask, top_k=20, max_answer_length=3)
    assert mask[window, s].all() and mask[window, e].all()
    assert ((e - s) >= 0).all() and ((e - s) < 3).all()


def test_null_scores_read_the_cls_token():
    start = np.arange(12, dtype=np.float32).reshape(3, 4)
    end = 10 * np.arange(12, dtype=np.float32).reshape(3, 4)
    assert null_scores(start, end, np.array([0, 0, 3])).tolist() == [0.0, 44.0, 121.0]


def test_best_per_group_keeps_the_n_best_of_each_group_best_first():
    group = np.array([1, 0, 1, 1, 0, 2])
    score = np.array([0.5, 3.0, 2.0, 1.0, -1.0, 0.0])
    assert best_per_group(group, score, 2).tolist() == [1, 4, 2, 3, 5]
