# coding=utf-8
"""Linear-chain CRF algorithms over BIO tags for extractive question answering, as `CrfForQuestionAnswering` runs
them: the forward and backward recursions, log Z, span-boundary marginals, path scores, and the constrained decoding of
the k best single-span paths, or of the k best paths with any number of spans, exactly.

Imports only `torch`: `modeling_crf.py` imports it relatively (`from .crf_decoding import ...`), so `save_pretrained`
copies it into every CRF model folder beside `modeling_crf.py`, and `trust_remote_code=True` loads it from there. It
therefore holds only what a loaded model uses; the reference computations that tests and benches check and time the
model against (tag marginals, the closed-form best-path search, ...) are in `tests/crf_reference.py`, which is not
saved with models.

Conventions (as in `modeling_crf.py`):

* `emissions` are `(batch, seq, 3)` per-token tag scores, `mask` is a `(batch, seq)` bool tensor.
* The mask must be a *length prefix* (right padding): the first `L` positions are real. Position 0 must be on.
"""

import torch


# The BIO tags, in the order of the emission columns: the CRF's transition matrix, the training labels
# (`utils_qa.span_tags`) and the config's `id2label` are indexed with these.
BIO_TAGS = ("O", "B", "I")
TAG_O, TAG_B, TAG_I = (BIO_TAGS.index(tag) for tag in ("O", "B", "I"))

# Score given to positions that must never be chosen (padding) in the boundary logits. It is finite so that
# adding a few of them (start + end, or a sum with real log-probabilities) neither overflows to -inf nor yields
# NaN, yet it is far below any real log-probability, so it cannot win a max.
MASKED_SCORE = torch.finfo(torch.float32).min / 8


# --------------------------------------------------------------------------------------------------------------------
# CRF algorithms (batched, float32 unless said otherwise; the forward/backward recursions loop over positions, log Z
# and decoding do not)
#
# All functions take the CRF parameters explicitly: `start` (K,), `end` (K,) and `trans` (K, K) where
# `trans[i, j]` scores a transition from tag i to tag j -- the layout of pytorch-crf. A path y of length L
# scores  start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1} trans[y_{t-1}, y_t] + end[y_{L-1}].
# --------------------------------------------------------------------------------------------------------------------


def crf_forward_alphas(emissions: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, trans: torch.Tensor):
    """
    Forward recursion in log space.

    Args:
        emissions: `(batch, seq, K)` float32.
        mask: `(batch, seq)` bool length prefix.
        start, trans: CRF parameters, `(K,)` and `(K, K)`.

    Returns:
        `(batch, seq, K)`: `alphas[b, t, j]` = log-sum of the scores of all prefixes `y_0..y_t` with `y_t = j`
        (transitions and emissions up to `t`, no end score). Past the end of a sequence the last real value is
        carried along, so `alphas[:, -1]` is each sequence's final alpha.
    """
    alpha = start + emissions[:, 0]
    alphas = [alpha]
    for t in range(1, emissions.shape[1]):
        # (batch, K_prev, 1) + (K_prev, K_next) -> reduce over the previous tag
        step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t, None], step, alpha)
        alphas.append(alpha)
    return torch.stack(alphas, dim=1)


def crf_backward_betas(emissions: torch.Tensor, mask: torch.Tensor, end: torch.Tensor, trans: torch.Tensor):
    """
    Backward recursion in log space.

    Args:
        emissions: `(batch, seq, K)` float32.
        mask: `(batch, seq)` bool length prefix.
        end, trans: CRF parameters, `(K,)` and `(K, K)`.

    Returns:
        `(batch, seq, K)`: `betas[b, t, i]` = log-sum of the scores of all suffixes after position `t` given
        `y_t = i` (transitions and emissions of `t+1..L-1`, plus the end score). At the last real position and
        beyond it equals `end`.
    """
    batch, seq, num_tags = emissions.shape
    beta = end.expand(batch, num_tags)
    betas = [beta]
    for t in range(seq - 2, -1, -1):
        # (K_prev, K_next) + (batch, 1, K_next) -> reduce over the next tag
        step = torch.logsumexp(trans + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
        # When t + 1 is padding, t is the last real token (or padding itself): only the end score follows.
        beta = torch.where(mask[:, t + 1, None], step, end)
        betas.append(beta)
    return torch.stack(betas[::-1], dim=1)


def crf_path_scores(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    mask: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    trans: torch.Tensor,
):
    """
    Unnormalised score of given tag paths.

    Args:
        emissions: `(batch, seq, K)` float32.
        tags: `(batch, seq)` long, valid tag ids everywhere (padding included; it is ignored).
        mask: `(batch, seq)` bool length prefix.

    Returns:
        `(batch,)` path scores.
    """
    maskf = mask.to(emissions.dtype)
    emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (batch, seq)
    moves = trans[tags[:, :-1], tags[:, 1:]]  # (batch, seq - 1)
    last = mask.long().sum(1) - 1
    last_tags = tags.gather(1, last.unsqueeze(1)).squeeze(1)
    return (
        start[tags[:, 0]]
        + (emitted * maskf).sum(1)
        + (moves * maskf[:, 1:]).sum(1)
        + end[last_tags]
    )


def crf_all_o_scores(emissions: torch.Tensor, mask: torch.Tensor, start, end, trans):
    """Score of the all-`O` path, `(batch,)` -- the "no answer" path. Same inputs as `crf_path_scores`."""
    maskf = mask.to(emissions.dtype)
    lengths = maskf.sum(1)
    return (
        start[TAG_O]
        + (emissions[:, :, TAG_O] * maskf).sum(1)
        + (lengths - 1) * trans[TAG_O, TAG_O]
        + end[TAG_O]
    )


def crf_single_span_tags(span_start: torch.Tensor, span_end: torch.Tensor, seq: int) -> torch.Tensor:
    """`(batch, seq)` tags of the path `O.. B I.. O..` with its span at `span_start..span_end` `(batch,)`, inclusive."""
    positions = torch.arange(seq, device=span_start.device)
    inside = (positions > span_start[:, None]) & (positions <= span_end[:, None])
    return torch.where(positions == span_start[:, None], TAG_B, torch.where(inside, TAG_I, TAG_O))


def crf_forward_backward(emissions, mask, start, end, trans):
    """`(alphas, betas, log_z)`: `(batch, seq, K)`, `(batch, seq, K)`, `(batch,)`."""
    alphas = crf_forward_alphas(emissions, mask, start, trans)
    betas = crf_backward_betas(emissions, mask, end, trans)
    log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)
    return alphas, betas, log_z


def crf_span_closings(emissions, mask, end, trans, betas):
    """
    `closings[b, j, l]`: the log-sum of the scores of everything after a span whose last token j has the tag
    `(B, I)[l]`, the span then closed: the next tag is O or B (transition, emission and backward score), or j is the
    last real token (the end score). Shared by the boundary logits and the span marginals.

    Args:
        emissions: `(batch, seq, 3)`; mask: `(batch, seq)` bool length prefix; end, trans: CRF parameters; betas:
            `crf_backward_betas` of those emissions; all in one dtype, which the result has.

    Returns:
        `(batch, seq, 2)`; past a sequence's end it holds finite values of no meaning.
    """
    batch, seq, _ = emissions.shape
    leaves = [TAG_O, TAG_B]
    following = torch.cat([emissions[:, 1:, leaves] + betas[:, 1:, leaves],
                           emissions.new_full((batch, 1, 2), float("-inf"))], dim=1)  # (batch, seq, 2)
    onward = torch.logsumexp(trans[[TAG_B, TAG_I]][:, leaves] + following.unsqueeze(2), dim=3)  # (batch, seq, 2)
    is_last = torch.arange(seq, device=mask.device) == mask.sum(1, keepdim=True) - 1
    return torch.where(is_last.unsqueeze(2), end[[TAG_B, TAG_I]], onward)


def crf_boundary_logits(emissions: torch.Tensor, mask: torch.Tensor, start, end, trans, forward_backward=None):
    """
    Span-boundary log-marginals by forward-backward.

    Args:
        emissions: `(batch, seq, 3)` float32 BIO emission scores.
        mask: `(batch, seq)` bool length prefix.
        forward_backward: `crf_forward_backward`'s `(alphas, betas, log_z)` when already computed.

    Returns:
        `(start_logits, end_logits, log_z)`: two `(batch, seq)` tensors and `(batch,)` log-partition.
        `start_logits[b, i] = log P(y_i = B)`,
        `end_logits[b, i] = log P(y_i in {B, I} and (i is last or y_{i+1} in {O, B}))`,
        position 0 of both holds `log P(all O)`, padding holds `MASKED_SCORE`.
    """
    alphas, betas, log_z = forward_backward or crf_forward_backward(emissions, mask, start, end, trans)
    start_logits = alphas[:, :, TAG_B] + betas[:, :, TAG_B] - log_z[:, None]  # log P(y_t = B)

    # A span ends at t with its last tag l (B or I): everything up to t (alphas) and everything after (closings).
    closings = crf_span_closings(emissions, mask, end, trans, betas)
    end_logits = torch.logsumexp(alphas[:, :, [TAG_B, TAG_I]] + closings, dim=2) - log_z[:, None]

    # [CLS] carries the null answer so that span-model post-processing (null = start[0] + end[0]) still works.
    null = (crf_all_o_scores(emissions, mask, start, end, trans) - log_z).unsqueeze(1)
    is_first = torch.zeros_like(mask)
    is_first[:, 0] = True
    masked = torch.full_like(start_logits, MASKED_SCORE)
    start_logits = torch.where(is_first, null, torch.where(mask, start_logits, masked))
    end_logits = torch.where(is_first, null, torch.where(mask, end_logits, masked))
    return start_logits, end_logits, log_z


def crf_log_partition(emissions: torch.Tensor, mask: torch.Tensor, start, end, trans):
    """
    Log-partition `log Z` by a tree reduction of per-position transfer matrices: `ceil(log2(seq))` batched steps
    instead of the `seq - 1` sequential steps of the forward recursion.

    Position 0 is the matrix `M_0[a, b] = start[b] + emissions[0, b]` (every row alike) and position `t >= 1` is
    `M_t[a, b] = trans[a, b] + emissions[t, b]`, so `log Z = logsumexp_b((M_0 * M_1 * ... * M_{L-1})[0, b] + end[b])`
    with `*` the log-semiring product `(P * Q)[a, c] = logsumexp_b(P[a, b] + Q[b, c])`. That product is associative,
    so neighbouring matrices can be multiplied pairwise, level after level. Padding positions are the identity (0 on
    the diagonal, a huge negative finite number elsewhere, so that no NaN arises even in gradients).

    Args:
        emissions: `(batch, seq, K)` float32.
        mask: `(batch, seq)` bool length prefix.
        start, end, trans: CRF parameters, `(K,)`, `(K,)` and `(K, K)`, finite (unlike the forward recursion, the
            shifted log-sum-exp below would turn an all -inf set of terms into NaN). Emissions may be anything on
            padding.

    Returns:
        `(batch,)`: `log Z`, equal up to float32 rounding to
        `logsumexp(crf_forward_alphas(emissions, mask, start, trans)[:, -1] + end)`.
    """
    batch, seq, num_tags = emissions.shape
    # The matrices are stored entry-major, `(K_from, K_to, batch, positions)`: every operation below then works on
    # long contiguous rows and broadcasts over leading dimensions only, several times faster on CPU than (.., K, K)
    # blocks.
    scores = emissions.permute(2, 0, 1).contiguous()  # (K, batch, seq)
    moves = torch.cat(
        [start.expand(num_tags, num_tags).unsqueeze(2), trans.unsqueeze(2).expand(num_tags, num_tags, seq - 1)], dim=2
    )  # (K, K, seq)
    identity = torch.full((num_tags, num_tags, 1, 1), MASKED_SCORE, dtype=emissions.dtype, device=emissions.device)
    identity[range(num_tags), range(num_tags)] = 0.0
    steps = torch.where(mask, moves.unsqueeze(2) + scores.unsqueeze(0), identity)  # (K, K, batch, seq)
    while steps.shape[3] > 1:
        if steps.shape[3] % 2:
            steps = torch.cat([steps, identity.expand(num_tags, num_tags, batch, 1)], dim=3)
        left, right = steps[..., 0::2], steps[..., 1::2]
        terms = left.transpose(0, 1).unsqueeze(2) + right.unsqueeze(1)  # [b, a, c] = left[a, b] + right[b, c]
        # logsumexp over b, shifted by the largest term (the result does not depend on the shift, hence `detach`).
        # Terms more than 64 below it are raised to e^-64 of it: a relative change under 1e-27, invisible in float32,
        # which keeps `exp` off its much slower underflow path.
        top = terms.detach().amax(dim=0)
        steps = top + torch.log(torch.exp((terms - top).clamp_min(-64.0)).sum(dim=0))
    # Every row of the product is the same (position 0 ignores the previous tag): take row 0.
    return torch.logsumexp(steps[0, :, :, 0].t() + end, dim=1)


def crf_single_span_terms(emissions, mask, context_mask, start, end, trans):
    """
    The score of every single-span path, split into a term of its first and a term of its last token.

    Under "one `B I*` span at i..j, `O` everywhere else" a path is fixed by (i, j), and its score is

        single[i]              for j = i  (the path O..O B O..O),
        opened[i] + closed[j]  for j > i  (the path O..O B I..I O..O),

    where `opened[i]` holds everything up to and including the `B` at i (start score, the `O` emissions and
    transitions before i, the transition into `B` and its emission) minus the running sum of the `I` run up to i,
    and `closed[j]` holds that running sum up to j (the `B -> I` and `I -> I` transitions and `I` emissions of the
    run, which telescope) plus everything after j (the transition out of `I`, the `O` emissions and transitions
    after j, the end score). A span is allowed when every token it covers is allowed.

    Args:
        emissions: `(batch, seq, 3)` BIO emission scores, any float dtype (the terms are computed in it).
        mask: `(batch, seq)` bool length prefix.
        context_mask: `(batch, seq)` bool, the tokens a span may cover (any pattern; intersected with `mask` here).
        start, end, trans: CRF parameters, `(3,)`, `(3,)` and `(3, 3)`, in the emissions' dtype.

    The parameters and the emissions of real tokens must be finite: the terms are differences of running sums,
    which an infinite term would turn into NaN. Padding may hold anything (it is never read into an allowed term).

    Returns:
        `(single, opened, closed, allowed)`: three `(batch, seq)` score tensors, `-inf` wherever the position is not
        allowed, and the `(batch, seq)` bool tensor of allowed positions.
    """
    # Why this is exact, piece by piece (n = sequence length, T = trans, x = emissions):
    #   before:  start[B] if i = 0, else  start[O] + sum_{u<i} (x[u,O] + T[O,O]) - T[O,O] + T[O,B]
    #   span:    x[i,B], and for j > i  + T[B,I] + sum_{i<u<=j} (x[u,I] + T[I,I]) - T[I,I]
    #   after:   end[l] if j = n - 1, else  T[l,O] + sum_{j<u<n} (x[u,O] + T[O,O]) - T[O,O] + end[O]
    # (l = B if j = i else I). With running sums of (x[:,O] + T[O,O]) and (x[:,I] + T[I,I]) every piece is a
    # difference of two running-sum entries, so for j > i the score splits as opened(i) + closed(j), and for j = i it
    # is single(i) (its last tag is B, not I: another transition out and another end score).
    batch, seq, _ = emissions.shape
    neg_inf = torch.tensor(float("-inf"), dtype=emissions.dtype, device=emissions.device)
    positions = torch.arange(seq, device=emissions.device)
    allowed = context_mask & mask
    lengths = mask.sum(1, keepdim=True)  # (batch, 1)
    is_last = positions == lengths - 1  # (batch, seq)

    # run_o[:, t] = sum_{u<t} (x[u,O] + T[O,O]) for t = 0..seq, run_i likewise. Entries past a sequence's end
    # (which may read padding) are only ever used at masked positions, which `allowed` discards.
    zero = emissions.new_zeros(batch, 1)
    run_o = torch.cat([zero, torch.cumsum(emissions[:, :, TAG_O] + trans[TAG_O, TAG_O], dim=1)], dim=1)
    run_i = torch.cat([zero, torch.cumsum(emissions[:, :, TAG_I] + trans[TAG_I, TAG_I], dim=1)], dim=1)

    # Score of everything up to and including the B at i: (batch, seq).
    before = torch.where(
        positions == 0, start[TAG_B], start[TAG_O] + run_o[:, :-1] - trans[TAG_O, TAG_O] + trans[TAG_O, TAG_B]
    )
    head = before + emissions[:, :, TAG_B]
    # Score after the span ends at j, but for the transition out of its last tag.
    rest_o = run_o.gather(1, lengths) - run_o[:, 1:] - trans[TAG_O, TAG_O] + end[TAG_O]
    after_b = torch.where(is_last, end[TAG_B], trans[TAG_B, TAG_O] + rest_o)
    after_i = torch.where(is_last, end[TAG_I], trans[TAG_I, TAG_O] + rest_o)

    single = torch.where(allowed, head + after_b, neg_inf)  # span i..i
    opened = torch.where(allowed, head + trans[TAG_B, TAG_I] - run_i[:, 1:] - trans[TAG_I, TAG_I], neg_inf)
    closed = torch.where(allowed, run_i[:, 1:] + after_i, neg_inf)
    return single, opened, closed, allowed


def _top_k_first(scores: torch.Tensor, k: int):
    """
    Each row's `k` largest scores, best first, equal scores in increasing index order (whatever `k`: the first of
    the k best is the best for every k). `scores`: `(rows, n)` without NaN, `1 <= k <= n`.

    Returns:
        `(values, indices)`, each `(rows, k)`.
    """
    kth = scores.topk(k, dim=1).values[:, -1:]  # the k-th largest value; which tied entry topk took does not matter
    above = scores > kth  # fewer than k entries per row
    tied = scores == kth  # enough of them to make k
    take = above | (tied & (torch.cumsum(tied, dim=1) <= k - above.sum(1, keepdim=True)))
    indices = take.nonzero()[:, 1].view(len(scores), k)  # exactly k per row, in increasing index order
    values = scores.gather(1, indices)
    order = values.sort(dim=1, descending=True, stable=True).indices  # stable: equal values keep index order
    return values.gather(1, order), indices.gather(1, order)


def _range_max(values: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """
    `max(values[b, first[b, m] .. last[b, m]])` for every `(b, m)`, `-inf` where the range is empty (`first > last`),
    with a sparse table (maxima of every power-of-two run): `log2(seq)` batched steps, exact in any dtype.

    Args:
        values: `(batch, seq)`.
        first, last: `(batch, m)` long, inclusive bounds inside `[0, seq)` wherever `first <= last`.
    """
    batch, seq = values.shape
    levels, run = [values], 1  # levels[l][b, i] = max(values[b, i : i + 2**l]) (-inf past the end)
    while 2 * run <= seq:
        shorter = levels[-1]
        shifted = torch.cat([shorter[:, run:], shorter.new_full((batch, run), float("-inf"))], dim=1)
        levels.append(torch.maximum(shorter, shifted))
        run *= 2
    table = torch.stack(levels)  # (levels, batch, seq)
    count = last - first + 1
    floor_log2 = torch.tensor([0] + [n.bit_length() - 1 for n in range(1, seq + 1)], device=values.device)
    level = floor_log2[count.clamp(0, seq)]
    rows = torch.arange(batch, device=values.device)[:, None]
    # Two runs of length 2**level, one from each end, cover the range.
    left = table[level, rows, first.clamp(0, seq - 1)]
    right = table[level, rows, (last - (1 << level) + 1).clamp(0, seq - 1)]
    return torch.where(count > 0, torch.maximum(left, right), float("-inf"))


def crf_kbest_single_spans(emissions, mask, context_mask, start, end, trans, k, max_length=None):
    """
    The `k` best tag paths with exactly one `B I*` span lying inside `context_mask`, exactly, best first.

    Every single-span path is a pair (i, j) scored `single[i]` (j = i) or `opened[i] + closed[j]` (j > i), see
    `crf_single_span_terms`; it is allowed when every token of i..j is allowed and it covers at most `max_length`
    tokens, i.e. when i lies in j's start range `[first(j), j]`. The k best pairs are among
      * the k best single-token spans;
      * for each of the k ends j with the best multi-token pair (`closed[j] + max(opened[first(j) .. j-1])`, range
        maxima by a sparse table), the pairs of its k best starts in that range,
    since any other pair is outscored by k pairs of that list (k other ends' best pairs, or k better starts for its
    own end). The search is therefore exact, at O(seq log seq + k * seq + k * k log k) work per sequence rather than
    the O(seq * seq) of scoring every pair. (The span head's top starts x top ends search in `span_decoding` is not exact
    here: the pair constraints can reject every pair of the top ones, and a single-token span scores `single[i]`, not
    `opened[i] + closed[i]`.) Equal scores are ordered by end, then start, so the first path is the same for every k.

    Args:
        emissions: `(batch, seq, 3)` BIO emission scores; the search runs in their dtype (the model passes float64).
        mask: `(batch, seq)` bool length prefix.
        context_mask: `(batch, seq)` bool, the tokens a span may cover (any pattern).
        start, end, trans: CRF parameters, `(3,)`, `(3,)` and `(3, 3)`, in the emissions' dtype.
        k: number of paths per sequence, at least 1.
        max_length: the most tokens a span may cover; `None` for no limit.

    Returns:
        `(span_start, span_end, path_score)`, each `(batch, k)`: inclusive token indices (long) and the unnormalised
        path scores (no gradient), best first. Where a sequence has fewer than `k` allowed spans the remaining
        entries are `span_start = span_end = 0` and `path_score = -inf`.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be at least 1 or None, got {max_length}")
    batch, seq, _ = emissions.shape
    device = emissions.device
    with torch.no_grad():
        single, opened, closed, allowed = crf_single_span_terms(
            emissions.detach(), mask, context_mask, start.detach(), end.detach(), trans.detach()
        )
        positions = torch.arange(seq, device=device)
        longest = seq if max_length is None else min(max_length, seq)
        # first[b, j]: the earliest start of a span ending at j -- just after the last disallowed position before j,
        # and at most `longest` tokens back.
        last_blocked = torch.where(allowed, -1, positions).cummax(dim=1).values
        first = torch.maximum(last_blocked + 1, positions - longest + 1)
        # Best multi-token pair ending at each j (-inf where j is disallowed or no start i < j is in range).
        pair_best = closed + _range_max(opened, first, positions.expand(batch, seq) - 1)

        top = min(k, seq)
        _, ends = _top_k_first(pair_best, top)  # (batch, top)
        starts_in_range = (positions >= first.gather(1, ends).unsqueeze(2)) & (positions < ends.unsqueeze(2))
        start_scores = torch.where(starts_in_range, opened.unsqueeze(1), float("-inf"))  # (batch, top, seq)
        start_values, starts = _top_k_first(start_scores.view(batch * top, seq), top)
        pair_scores = start_values.view(batch, top, top) + closed.gather(1, ends).unsqueeze(2)
        single_scores, single_at = _top_k_first(single, top)

        scores = torch.cat([single_scores, pair_scores.flatten(1)], dim=1)
        span_start = torch.cat([single_at, starts.view(batch, top * top)], dim=1)
        span_end = torch.cat([single_at, ends.unsqueeze(2).expand(batch, top, top).flatten(1)], dim=1)
        # Best first; equal scores by end, then start: sort by that key, then stably by score. (With k > seq the
        # candidates are every pair, so more than `top` of them may be kept.)
        kept = min(k, scores.shape[1])
        order = (span_end * seq + span_start).argsort(dim=1, stable=True)
        order = order.gather(1, scores.gather(1, order).sort(dim=1, descending=True, stable=True).indices)[:, :kept]
        scores, span_start, span_end = (values.gather(1, order) for values in (scores, span_start, span_end))
        found = torch.isfinite(scores)
        span_start = torch.where(found, span_start, 0)
        span_end = torch.where(found, span_end, 0)
        if kept < k:
            missing = k - kept
            span_start = torch.cat([span_start, span_start.new_zeros(batch, missing)], dim=1)
            span_end = torch.cat([span_end, span_end.new_zeros(batch, missing)], dim=1)
            scores = torch.cat([scores, scores.new_full((batch, missing), float("-inf"))], dim=1)
    return span_start, span_end, scores


def crf_decode_nbest_spans(emissions, mask, context_mask, start, end, trans, k, max_length=None, log_z=None):
    """
    The `k` best single-span paths inside `context_mask` with their exact log-probabilities, and the all-`O` path's.

    The spans are selected by `crf_kbest_single_spans` on float64 terms, then each kept path and the all-`O` path are
    rescored in float64 by `crf_path_scores` / `crf_all_o_scores` (the closed form's running sums reach ~1e4 on a
    confident window; a path's own float64 score keeps the null odds `null_score - span_score` exact). The scores
    are differentiable with respect to the emissions and the CRF parameters; the selection is not.

    Args:
        emissions: `(batch, seq, 3)` float32 BIO emission scores.
        mask: `(batch, seq)` bool length prefix.
        context_mask: `(batch, seq)` bool, the tokens a span may cover.
        start, end, trans: float32 CRF parameters.
        k: spans per sequence, at least 1.
        max_length: the most tokens a span may cover; `None` for no limit.
        log_z: `(batch,)` log-partition when already known (else computed by `crf_log_partition`).

    Returns:
        `(span_start, span_end, span_score, null_score)`: `(batch, k)` long, long and float32 `log P(path)`, best
        first (`-inf`, with `span_start = span_end = 0`, where fewer than `k` spans are allowed), and `(batch,)`
        float32 `log P(all O)`.
    """
    if log_z is None:
        log_z = crf_log_partition(emissions, mask, start, end, trans)
    emissions64, start64, end64, trans64 = (value.double() for value in (emissions, start, end, trans))
    span_start, span_end, best = crf_kbest_single_spans(
        emissions64, mask, context_mask, start64, end64, trans64, k, max_length
    )
    batch, seq, num_tags = emissions.shape
    tags = crf_single_span_tags(span_start.reshape(-1), span_end.reshape(-1), seq)  # (batch * k, seq)
    paths = crf_path_scores(
        emissions64.unsqueeze(1).expand(batch, k, seq, num_tags).reshape(batch * k, seq, num_tags),
        tags,
        mask.unsqueeze(1).expand(batch, k, seq).reshape(batch * k, seq),
        start64,
        end64,
        trans64,
    ).view(batch, k)
    span_score = torch.where(torch.isfinite(best), paths, float("-inf"))
    null_score = crf_all_o_scores(emissions64, mask, start64, end64, trans64)
    return span_start, span_end, *path_log_probabilities(span_score, null_score, log_z)


def path_log_probabilities(path_score, null_score, log_z):
    """`(batch, k)` and `(batch,)` float32 log P of paths scored `path_score` and of the all-O paths (`null_score`,
    float64), given `log_z` (`(batch,)`). log Z comes from float32 recursions (~1e-4 off on a confident window): a
    sure path can come out a hair above log-probability 0, which no probability exceeds."""
    log_z = log_z.double()
    return (path_score - log_z[:, None]).clamp_max(0.0).float(), (null_score - log_z).clamp_max(0.0).float()


# --------------------------------------------------------------------------------------------------------------------
# Multi-span decoding: the k best valid BIO paths with any number of spans
# --------------------------------------------------------------------------------------------------------------------


def crf_allowed_scores(emissions, mask, context_mask, trans):
    """
    `(emitted, moves)`: the emissions with `-inf` on the tags a position may not take (B and I outside
    `context_mask`; I at position 0, where no span is open) and 0 on padding, `(batch, seq, 3)`; the transitions with
    `-inf` from O to I (an I opens no span), `(3, 3)`.
    """
    span_tag = torch.tensor([False, True, True], device=emissions.device)
    allowed = (context_mask & mask).unsqueeze(2) | ~span_tag
    allowed[:, 0, TAG_I] = False
    emitted = torch.where(mask.unsqueeze(2), torch.where(allowed, emissions, float("-inf")), 0.0)
    moves = trans.clone()
    moves[TAG_O, TAG_I] = float("-inf")
    return emitted, moves


def crf_max_marginals(emitted, mask, start, end, moves):
    """
    The best score of a path through each tag at each position, by the Viterbi recursions forward and backward.

    Args:
        emitted, moves: `crf_allowed_scores`' `(batch, seq, 3)` and `(3, 3)`; mask: `(batch, seq)` bool length prefix;
        start, end: `(3,)`.

    Returns:
        `(batch, seq, 3)`, `-inf` on padding and on the tags no valid path takes.
    """
    batch, seq, num_tags = emitted.shape
    identity = torch.full((num_tags, num_tags, 1, 1), float("-inf"), dtype=emitted.dtype, device=emitted.device)
    identity[range(num_tags), range(num_tags)] = 0.0
    # Entry-major, as in `crf_log_partition`. steps[:, :, b, t - 1]: from each tag at t - 1 to each tag at t, the
    # emission at t included; padding is the (max, +) identity, so the forward scores stop at the last real token
    # and the end score reaches back to it.
    steps = torch.where(mask[:, 1:], moves[:, :, None, None] + emitted[:, 1:].permute(2, 0, 1).unsqueeze(0), identity)
    # Both recursions in one scan, the backward one on transposed steps from the end.
    both = torch.stack([steps, steps.flip(3).transpose(0, 1)], dim=2)  # (K, K, 2, batch, seq - 1)
    first = torch.stack([start + emitted[:, 0], end.expand(batch, num_tags)]).permute(2, 0, 1)  # (K, 2, batch)
    scores = _max_plus_scan(first, both, identity.squeeze(3))  # (K, 2, batch, seq)
    through = (scores[:, 0] + scores[:, 1].flip(2)).permute(1, 2, 0)
    return torch.where(mask.unsqueeze(2), through, float("-inf"))


def _max_plus(left, right):
    """Entry-major `(K, K, ...)` max-plus matrix products: `out[a, c] = max_b left[a, b] + right[b, c]`."""
    return (left.unsqueeze(2) + right.unsqueeze(0)).amax(dim=1)


def _max_plus_scan(first, steps, identity):
    """
    Every state of the recursion `state_0 = first`, `state_t[c] = max_a state_{t-1}[a] + steps[t - 1][a, c]`, in
    about `2 sqrt(n)` batched operations instead of `n`: the steps are cut into blocks, the products of each block's
    first steps are taken for all blocks at once, the state at each block's start follows from the one before by the
    block's whole product, and then every state inside a block from the state at its start.

    Args:
        first: `(K, ...)`; steps: `(K, K, ..., n)`, entry-major; identity: `(K, K, 1)`, 0 on the diagonal and `-inf`
        elsewhere.

    Returns:
        `(K, ..., n + 1)`.
    """
    n, num_tags = steps.shape[-1], steps.shape[0]
    size = max(1, round(n ** 0.5))
    blocks = -(-n // size)
    # grid[j][..., block]: step j of each block (the last block padded with the identity), contiguous for each j.
    grid = identity.view(num_tags, num_tags, *[1] * (steps.dim() - 2)).expand(*steps.shape[:-1], blocks * size).clone()
    grid[..., :n] = steps
    grid = grid.unflatten(-1, (blocks, size)).movedim(-1, 0).contiguous()
    products = [grid[0]]  # products[j]: each block's steps 0..j
    for j in range(1, size):
        products.append(_max_plus(products[-1], grid[j]))
    starts = [first]
    for block in range(blocks - 1):
        starts.append((starts[-1].unsqueeze(1) + products[-1][..., block]).amax(dim=0))
    starts = torch.stack(starts, dim=-1)  # (K, ..., blocks)
    inside = (starts.unsqueeze(1).unsqueeze(-1) + torch.stack(products, dim=-1)).amax(dim=0)  # (K, ..., blocks, size)
    return torch.cat([first.unsqueeze(-1), inside.flatten(-2)[..., :n]], dim=-1)


def _rounding_tolerance(emissions, mask, start, end, trans):
    """
    `(batch,)`: a bound, with room to spare, on how far rounding takes a path's computed score from its exact score,
    however its terms are summed: `(n - 1) eps` of the sum of their absolute values is the textbook bound for `n` terms.
    """
    terms = (emissions.abs().amax(dim=2) * mask).sum(1) + mask.sum(1) * trans.abs().max() + start.abs().max()
    return 8 * mask.shape[1] * torch.finfo(emissions.dtype).eps * (1 + terms + end.abs().max())


def _kth_best_bound(through, k, tolerance):
    """
    `(batch,)`: a lower bound on the score of the k-th best path (`-inf` when fewer than `k` paths are sure to exist).

    Every max-marginal is the score of a path (the best one through that tag), reached from each of its positions
    with different rounding. Sorted, values more than `2 * tolerance` apart come from different paths, so the k-th
    run of values closer than that to their neighbours holds the score of the k-th of `k` different paths.

    Args:
        through: `crf_max_marginals`' `(batch, seq, 3)`; tolerance: `(batch,)`, `_rounding_tolerance`.
    """
    batch = len(through)
    values = through.reshape(batch, -1).sort(dim=1, descending=True).values
    finite = torch.isfinite(values)
    apart = (values[:, :-1] - values[:, 1:] > 2 * tolerance[:, None]) & finite[:, 1:]
    runs = torch.cumsum(torch.cat([finite[:, :1], apart], dim=1), dim=1)  # the run each value is in, from 1
    last_of_kth = ((runs <= k) & finite).sum(1).clamp_min(1) - 1
    bound = values.gather(1, last_of_kth.unsqueeze(1)).squeeze(1) - tolerance
    return torch.where(runs[:, -1] >= k, bound, float("-inf"))


def _step_moves(moves, spine, at):
    """
    `(batch, width - 1, 3, 3)`: the score of going from each tag at step `s` (position `at[:, s]`) to each tag at step
    `s + 1`: the move between them when they are neighbours, else the moves into and out of the spine between them.
    The spine's own emissions and moves are left out: every path kept takes them (`_spine_score`).

    Args:
        moves: `crf_allowed_scores`' `(3, 3)`; spine: `(batch, seq)`, the tag every kept path takes where there is no
        choice; at: `(batch, width)` the steps' positions, in order (past a row's last step, any position).
    """
    seq = spine.shape[1]
    here, there = at[:, :-1], at[:, 1:]
    into = moves.t()[spine.gather(1, (here + 1).clamp_max(seq - 1))]  # [.., a] = moves[a, first spine tag]
    out_of = moves[spine.gather(1, (there - 1).clamp_min(0))]  # [.., c] = moves[last spine tag, c]
    apart = (there > here + 1)[..., None, None]
    return torch.where(apart, into.unsqueeze(3) + out_of.unsqueeze(2), moves)


def _spine_score(emitted, moves, spine, forced):
    """
    `(batch,)`: what the positions without a choice add to every path kept: the spine's emissions there, and its moves
    between two of them (a move from or to a step depends on the step's tag: `_step_moves` has it).
    """
    on_spine = emitted.gather(2, spine.unsqueeze(2)).squeeze(2)
    spine_moves = moves[spine[:, :-1], spine[:, 1:]]
    between_forced = forced[:, :-1] & forced[:, 1:]
    return torch.where(forced, on_spine, 0.0).sum(1) + torch.where(between_forced, spine_moves, 0.0).sum(1)


def crf_list_viterbi(first, steps, real, end, k):
    """
    The `k` best tag sequences through a chain of steps, by list Viterbi: each step keeps, for each tag, the `k` best
    prefixes ending in it (any of the `k` best paths is, up to each step, one of the `k` best prefixes ending in its
    tag there).

    Args:
        first: `(batch, K)` scores of the tags at step 0.
        steps: `(batch, n, K, K)`: `steps[b, s, i, j]` scores going from tag `i` at step `s` to tag `j` at step
            `s + 1`, everything on the way and at step `s + 1` included (`-inf`: not allowed).
        real: `(batch, n)` bool, False once a sequence has no more steps: every prefix then moves on unchanged, so the
            end score applies at its last real step.
        end: `(K,)` end scores.
        k: paths per sequence, at least 1.

    Returns:
        `(tags, path_score)`: `(batch, k, n + 1)` long and `(batch, k)`, best first; `-inf` past the last path with a
        finite score, whose tags mean nothing.
    """
    batch, n, num_tags, _ = steps.shape
    # moves[:, s, j, i * k + r]: one step scores every (previous tag, slot) into each tag
    moves = steps.transpose(2, 3).repeat_interleave(k, dim=3)
    # Past its last step a prefix keeps its tag and slot: it points at itself.
    stay = torch.arange(num_tags * k, device=steps.device).view(num_tags, k)
    padded = (~real).any(dim=0).tolist()
    scores = torch.full((batch, num_tags, k), float("-inf"), dtype=steps.dtype, device=steps.device)
    scores[:, :, 0] = first
    pointers = []
    for s in range(n):
        # The k kept prefixes of a tag need no order (a pointer names a slot, not a rank): unsorted is faster
        best, pointer = (scores.view(batch, 1, num_tags * k) + moves[:, s]).topk(k, dim=2, sorted=False)
        if padded[s]:
            keep = real[:, s, None, None]
            best, pointer = torch.where(keep, best, scores), torch.where(keep, pointer, stay)
        scores = best
        pointers.append(pointer)
    path_score, last = (scores + end.unsqueeze(1)).view(batch, num_tags * k).topk(k, dim=1)
    choice = [last]  # choice[s]: tag * k + slot of each path at step n - s
    for pointer in reversed(pointers):
        choice.append(pointer.view(batch, num_tags * k).gather(1, choice[-1]))
    return torch.stack(choice[::-1], dim=2) // k, path_score


def crf_kbest_paths(emissions, mask, context_mask, start, end, trans, k):
    """
    The `k` best valid BIO tag paths, exactly: every path with `B` and `I` only inside `context_mask`, and `I` only
    right after `B` or `I`, so with any number of `B I*` spans (none included).

    A list Viterbi (`crf_list_viterbi`) finds them, stepping only through the positions where they can differ. The
    Viterbi recursions give each tag's max-marginal (the best score of a path through it, `crf_max_marginals`); the
    k best paths all score at least a lower bound of the k-th best (`_kth_best_bound`), so none goes through a tag
    whose max-marginal is below it. Where one tag only is above the bound, every one of the k paths takes it (the
    best path's tag: the spine): the search steps from one position with a choice to the next, and what the spine's
    positions add, the same for every path, is summed once. That makes tens of steps instead of hundreds (for 21
    paths, 24 of 383 positions on average on random emissions; 18.6 of 248 real tokens on the dev windows of the
    MiniLM MultiSpanQA model in results/).

    Args:
        emissions: `(batch, seq, 3)` BIO emission scores; the search runs in their dtype (the model passes float64).
        mask: `(batch, seq)` bool length prefix.
        context_mask: `(batch, seq)` bool, the tokens a span may cover (any pattern).
        start, end, trans: CRF parameters, `(3,)`, `(3,)` and `(3, 3)`, in the emissions' dtype.
        k: paths per sequence, at least 1.

    Returns:
        `(tags, path_score)`: `(batch, k, seq)` long tag paths (`O` on padding) and `(batch, k)` their scores (sums of
        their terms, no differences), best first, `-inf` past the last valid path (fewer than `k` exist only for a
        sequence of very few context tokens).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    batch, seq, num_tags = emissions.shape
    with torch.no_grad():
        emissions, start, end, trans = (value.detach() for value in (emissions, start, end, trans))
        emitted, moves = crf_allowed_scores(emissions, mask, context_mask, trans)
        through = crf_max_marginals(emitted, mask, start, end, moves)
        tolerance = _rounding_tolerance(emissions, mask, start, end, trans)
        # A tag is alive when its max-marginal, less its own rounding, can reach the bound.
        floor = _kth_best_bound(through, k, tolerance) - tolerance
        alive = (through >= floor[:, None, None]) & torch.isfinite(through)
        # Where one tag only is alive, that tag (O where none is: padding); elsewhere not used.
        spine = torch.where(alive[:, :, TAG_I], TAG_I, torch.where(alive[:, :, TAG_B], TAG_B, TAG_O))
        positions = torch.arange(seq, device=emissions.device)
        last = mask.sum(1, keepdim=True) - 1
        # The first and last positions take the start and end scores: they are always steps.
        choice = ((alive.sum(2) > 1) | (positions == 0) | (positions == last)) & mask
        count = choice.sum(1)
        width = int(count.max())
        at = (~choice).to(torch.int8).argsort(dim=1, stable=True)[:, :width]  # the steps' positions, in order
        real = torch.arange(width, device=emissions.device) < count[:, None]
        options = torch.where(alive, emitted, float("-inf")).gather(1, at.unsqueeze(2).expand(batch, width, num_tags))
        steps = _step_moves(moves, spine, at) + options[:, 1:].unsqueeze(2)
        found, path_score = crf_list_viterbi(start + options[:, 0], steps, real[:, 1:], end, k)
        # Unused steps carried the last tag along: give them the spine's, so that writing them back changes nothing.
        found = torch.where(real.unsqueeze(1), found, spine.gather(1, at).unsqueeze(1))
        tags = spine.unsqueeze(1).expand(batch, k, seq).scatter(2, at.unsqueeze(1).expand(batch, k, width), found)
        missing = torch.isinf(path_score)
        if missing.any():  # fewer than k paths: the rest all O
            tags = torch.where(missing.unsqueeze(2), TAG_O, tags)
        path_score = path_score + _spine_score(emitted, moves, spine, mask & ~choice)[:, None]
    return tags, path_score


def crf_path_spans(tags):
    """
    The `B I*` spans of tag paths, in order.

    Args:
        tags: `(..., seq)` long BIO paths.

    Returns:
        `(*index, span_start, span_end)`: `(spans,)` long each, the leading indices of each span's path and its first
        and last tokens (inclusive), by path then position.
    """
    follows = torch.cat([tags[..., 1:], torch.full_like(tags[..., :1], TAG_O)], dim=-1)
    *index, span_start = (tags == TAG_B).nonzero(as_tuple=True)
    # Each span closes once, after it opens and before the next opens.
    span_end = ((tags != TAG_O) & (follows != TAG_I)).nonzero(as_tuple=True)[-1]
    return (*index, span_start, span_end)


def crf_span_log_marginals(emissions, mask, end, trans, alphas, betas, log_z, row, span_start, span_end):
    """
    `log P(tokens i..j form a whole span)`: `y_i = B`, `y_{i+1..j} = I` and `y_{j+1}` not `I` (or j last), for given
    spans, from the forward and backward recursions.

    A span's paths split into everything up to its `B` (`alphas[i, B]`), its run of `I`s (a difference of running
    sums), and everything after it given its last tag (`crf_span_closings`). Each splits into a term of its first
    token and a term of its last, tabulated for every position (for one-token spans, and for longer ones): two
    look-ups a span.

    Args:
        emissions: `(batch, seq, 3)`; mask: `(batch, seq)` bool length prefix; end, trans: CRF parameters (the start
            scores are in the alphas); all computed in float64 (float64 ones are used as they are).
        alphas, betas, log_z: `crf_forward_alphas`, `crf_backward_betas` and `log Z` of those emissions.
        row, span_start, span_end: `(spans,)` long, the sequence and inclusive tokens of each span.

    Returns:
        `(spans,)` float32 log-marginals, at most 0.
    """
    emissions64, end64, trans64 = (value.double() for value in (emissions, end, trans))
    seq = emissions.shape[1]
    closing = crf_span_closings(emissions64, mask, end64, trans64, betas.double())  # (batch, seq, 2): last B, I
    # The I run of tokens i+1..j, B -> I then I emissions and j - i - 1 moves I -> I, is B -> I + run_i[j] - run_i[i]
    # - (I -> I): run_i[t] sums the I emissions up to t and t moves I -> I.
    run_i = torch.cumsum(emissions64[:, :, TAG_I], dim=1) + torch.arange(seq, device=emissions.device) * trans64[
        TAG_I, TAG_I]
    opening = alphas[:, :, TAG_B].double() - log_z.double().unsqueeze(1)
    starts = torch.stack([opening, opening - run_i + trans64[TAG_B, TAG_I] - trans64[TAG_I, TAG_I]], dim=2)
    ends = torch.stack([closing[:, :, 0], closing[:, :, 1] + run_i], dim=2)
    longer = (span_end > span_start).long()
    marginal = starts.view(-1).take((row * seq + span_start) * 2 + longer) + ends.view(-1).take(
        (row * seq + span_end) * 2 + longer)
    # The recursions run in float32 (~1e-4 off on a confident window's log Z): a sure span can come out a hair
    # above probability 1.
    return marginal.clamp_max(0.0).float()


def crf_decode_multi_spans(emissions, mask, context_mask, start, end, trans, k, forward_backward):
    """
    The `k` most probable valid BIO paths with at least one span inside `context_mask` (any number of spans), exactly,
    with their exact log-probabilities, each span's marginal log-probability, and the all-`O` path's log-probability.

    The paths are found by `crf_kbest_paths` on float64 scores (the `k + 1` best, the all-`O` path among them
    dropped). Their scores need no rescoring: the search adds up each path's terms in float64 (the single-span
    decoder rescores because its closed form subtracts running sums, which loses precision), so log P(path) and the
    null odds are exact in float64 as the single-span decoder's are.

    Args:
        emissions: `(batch, seq, 3)` float32 BIO emission scores; mask: `(batch, seq)` bool length prefix;
        context_mask: `(batch, seq)` bool, the tokens a span may cover; start, end, trans: float32 CRF parameters.
        k: paths per sequence, at least 1.
        forward_backward: `crf_forward_backward`'s `(alphas, betas, log_z)` of these emissions.

    Returns:
        `(span_start, span_end, span_score, span_path, path_score, null_score)`, in the order of the model's outputs:
        the spans of each sequence's paths as `(batch, spans)` tensors, by path then position (the most any sequence
        has; padded with `span_path = -1`, `span_start = span_end = 0`, `span_score = -inf`): first and last token
        (long), `log P(the span is a whole span)` (float32) and the path they belong to (long, 0 = the most
        probable); `(batch, k)` float32 `log P(path)`, best first, `-inf` past the last path; `(batch,)` float32
        `log P(all O)`.
    """
    alphas, betas, log_z = forward_backward
    emissions64, start64, end64, trans64 = (value.double() for value in (emissions, start, end, trans))
    batch, seq, _ = emissions.shape
    tags, found = crf_kbest_paths(emissions64, mask, context_mask, start64, end64, trans64, k + 1)
    window, path, first, last = crf_path_spans(tags[:, :k])  # a missing path is all O: no spans
    # Leave out the all-O path, at most one of the k + 1, seldom among them (the (k + 1)-th goes then).
    spanless = (torch.bincount(window * k + path, minlength=batch * k).view(batch, k) == 0) & torch.isfinite(
        found[:, :k])
    if spanless.any():  # the paths after it move up one
        kept = torch.cat([spanless, spanless.new_zeros(batch, 1)], dim=1).long().argsort(dim=1, stable=True)[:, :k]
        window, path, first, last = crf_path_spans(tags.gather(1, kept.unsqueeze(2).expand(batch, k, seq)))
        found = found.gather(1, kept)
    path_score, null_score = path_log_probabilities(
        found[:, :k], crf_all_o_scores(emissions64, mask, start64, end64, trans64), log_z)
    marginal = crf_span_log_marginals(emissions64, mask, end64, trans64, alphas, betas, log_z, window, first, last)
    counts = torch.bincount(window, minlength=batch)
    slot = torch.arange(len(window), device=window.device) - (torch.cumsum(counts, 0) - counts)[window]
    width = max(int(counts.max()) if len(window) else 0, 1)
    spans = torch.zeros(3, batch, width, dtype=torch.long, device=tags.device)
    spans[2] = -1
    spans[:, window, slot] = torch.stack([first, last, path])
    span_start, span_end, span_path = spans
    span_score = torch.full((batch, width), float("-inf"), device=tags.device)
    span_score[window, slot] = marginal
    return span_start, span_end, span_score, span_path, path_score, null_score
