# coding=utf-8
"""Reference CRF computations, used by the tests and benches to check and time the model's decoders: the
log-likelihood by the forward recursion alone, tag log-marginals, span-boundary logits and the encoder's emissions of
a `CrfForQuestionAnswering`, its best single-span path (the first of its n best), the closed-form best-path search
`crf_decode_single_span`, and the k best multi-span paths by the list Viterbi through every position.

Not saved with models: `save_pretrained` copies only `modeling_crf.py` and `crf_decoding.py`, which hold what a loaded
model runs. The functions taking a `model` read it (its encoder, emission layer and CRF parameters), never change it.

Conventions as in `model_folder/modeling_crf.py`: `emissions` are `(batch, seq, 3)` BIO tag scores, masks are
`(batch, seq)` length prefixes (right padding, position 0 on); the CRF arithmetic runs in float32 with autocast disabled.
"""

import torch

from model_folder.crf_decoding import (
    TAG_O,
    crf_allowed_scores,
    crf_boundary_logits,
    crf_forward_alphas,
    crf_forward_backward,
    crf_list_viterbi,
    crf_path_scores,
    crf_single_span_terms,
)


# --------------------------------------------------------------------------------------------------------------------
# Pure CRF algorithms (same parameter conventions as crf_decoding.py)
# --------------------------------------------------------------------------------------------------------------------


def crf_tag_log_marginals(emissions: torch.Tensor, mask: torch.Tensor, start, end, trans):
    """
    Per-position tag log-marginals.

    Args:
        emissions: `(batch, seq, K)` float32.
        mask: `(batch, seq)` bool length prefix.

    Returns:
        `(log_marginals, log_z)`: `(batch, seq, K)` with `log P(y_t = k)` (meaningless past the end of a sequence)
        and the `(batch,)` log-partition.
    """
    alphas, betas, log_z = crf_forward_backward(emissions, mask, start, end, trans)
    return alphas + betas - log_z[:, None, None], log_z


def _orderable_int(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 in `[0, 2**32)` with the same order (for non-NaN values; -0.0 sorts just below +0.0)."""
    bits = values.detach().contiguous().view(torch.int32)
    # Negative floats order backwards in their bit patterns: flip all but the sign bit.
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.long() + 2**31


def crf_decode_single_span(emissions, mask, context_mask, start, end, trans):
    """
    Best tag path with exactly one `B I*` span lying inside `context_mask`, in closed form (no loop over positions):
    O(seq) work, for the best path only and on float32 terms. The model decodes with
    `crf_decoding.crf_decode_nbest_spans` (the k best, selected on float64 terms); this one serves as a fast
    reference.

    Args:
        emissions: `(batch, seq, 3)` float32 BIO emission scores.
        mask: `(batch, seq)` bool length prefix.
        context_mask: `(batch, seq)` bool, the tokens the span may cover (any pattern: it is intersected with
            `mask` here, and the span must not cross a position where it is False).
        start, end, trans: CRF parameters, `(3,)`, `(3,)` and `(3, 3)`.

    The parameters and the emissions of real tokens must be finite (as trained pytorch-crf parameters and emission
    layers give): the closed form takes differences of running sums, which an infinite term would turn into NaN.
    Padding may hold anything.

    Returns:
        `(span_start, span_end, best_score)`: `(batch,)` long, long and float32. `best_score` is the unnormalised
        path score, `-inf` when no token is allowed (then `span_start = span_end = 0`).
    """
    # The score of the path with its span at i..j is opened[i] + closed[j] for j > i and single[i] for j = i (see
    # `crf_single_span_terms`). The best multi-token span is then max_j closed(j) + max_{i<j} opened(i), the inner max
    # running only over positions i with i..j inside the context: a prefix maximum that restarts after every
    # disallowed position.
    batch, seq, _ = emissions.shape
    neg_inf = torch.tensor(float("-inf"), dtype=emissions.dtype, device=emissions.device)
    positions = torch.arange(seq, device=emissions.device)
    single, opened, closed, allowed = crf_single_span_terms(emissions, mask, context_mask, start, end, trans)

    # Prefix argmax of `opened` restarting after each disallowed position, exactly: `gaps` (disallowed positions
    # up to and including t) is constant over a run of allowed positions and grows from run to run, and it is the
    # same at the disallowed position that precedes a run (where `opened` is -inf). Ordering by (gaps, opened)
    # packed into one int64 makes the running maximum at t-1 the best opening within t's own run (or that -inf
    # position when t opens its run), with no rounding: the float is only reinterpreted, never added to.
    gaps = torch.cumsum(~allowed, dim=1)
    _, best_open = torch.cummax((gaps << 32) + _orderable_int(opened), dim=1)
    open_at = torch.cat([torch.zeros_like(best_open[:, :1]), best_open[:, :-1]], dim=1)  # best i < j (j = 0: none)
    open_score = torch.where(positions > 0, opened.gather(1, open_at), neg_inf)
    pair = closed + open_score  # best span i..j with i < j, for each j

    # argmax + gather rather than `max(dim=...)`: the latter is oddly slow on small CPU tensors.
    pair_end = pair.argmax(dim=1, keepdim=True)
    pair_score = pair.gather(1, pair_end)
    single_at = single.argmax(dim=1, keepdim=True)
    single_score = single.gather(1, single_at)
    use_pair = pair_score > single_score
    span_start = torch.where(use_pair, open_at.gather(1, pair_end), single_at)
    span_end = torch.where(use_pair, pair_end, single_at)
    best_score = torch.maximum(pair_score, single_score)
    found = torch.isfinite(best_score)
    span_start = torch.where(found, span_start, 0).squeeze(1)
    span_end = torch.where(found, span_end, 0).squeeze(1)
    return span_start, span_end, best_score.squeeze(1)


def crf_kbest_paths_every_position(emissions, mask, context_mask, start, end, trans, k):
    """
    `crf_decoding.crf_kbest_paths` by the list Viterbi stepping through every position, without its pruning: the
    same inputs and outputs (paths of equal scores may come in another order, or be others of the same score).
    """
    emitted, moves = crf_allowed_scores(emissions, mask, context_mask, trans)
    tags, path_score = crf_list_viterbi(start + emitted[:, 0], moves + emitted[:, 1:].unsqueeze(2), mask[:, 1:], end, k)
    return torch.where(mask.unsqueeze(1) & torch.isfinite(path_score).unsqueeze(2), tags, TAG_O), path_score


# --------------------------------------------------------------------------------------------------------------------
# Computations on a CrfForQuestionAnswering
# --------------------------------------------------------------------------------------------------------------------


def emission_scores(model, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
    """
    Run `model`'s encoder and emission layer only (e.g. to time or re-run the CRF steps separately). Dropout applies
    as the model's mode says (put it in eval mode for the emissions its eval-mode forward uses).

    Args:
        model: a `CrfForQuestionAnswering`.
        input_ids, attention_mask, token_type_ids, kwargs: as for `model.forward`.

    Returns:
        `(batch, seq, 3)` float32 emission scores.
    """
    return model._encode(input_ids, attention_mask, token_type_ids, **kwargs)[0]


def log_likelihood(model, emissions: torch.Tensor, tags: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """
    CRF log-likelihood of tag paths by the forward recursion alone -- equal to pytorch-crf's
    `model.crf(emissions, tags, mask, reduction="none")`, and to minus the per-sequence loss `model.forward` computes
    (there with log Z from the forward-backward pass of its boundary logits).

    Args:
        model: a `CrfForQuestionAnswering`.
        emissions: `(batch, seq, 3)`.
        tags: `(batch, seq)` long BIO tags (valid ids at every position, padding included).
        attention_mask: `(batch, seq)` length-prefix mask, or `None` for full sequences.

    Returns:
        `(batch,)` float32 log-likelihoods.
    """
    emissions = emissions.float()
    mask = model._as_mask(attention_mask, emissions)
    start, end, trans = model._crf_parameters()
    with torch.autocast(emissions.device.type, enabled=False):
        alphas = crf_forward_alphas(emissions, mask, start, trans)
        log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)
        return crf_path_scores(emissions, tags, mask, start, end, trans) - log_z


def span_boundary_logits(model, emissions: torch.Tensor, attention_mask=None):
    """
    Span-boundary log-marginals of `model`'s CRF, as `model.forward` returns them (see
    `CrfQuestionAnsweringOutput.start_logits/end_logits`), from given emissions.

    Args:
        model: a `CrfForQuestionAnswering`.
        emissions: `(batch, seq, 3)`.
        attention_mask: `(batch, seq)` length-prefix mask, or `None`.

    Returns:
        `(start_logits, end_logits)`, each `(batch, seq)` float32.
    """
    emissions = emissions.float()
    mask = model._as_mask(attention_mask, emissions)
    with torch.autocast(emissions.device.type, enabled=False):
        start_logits, end_logits, _ = crf_boundary_logits(emissions, mask, *model._crf_parameters())
    return start_logits, end_logits


def tag_log_marginals(model, emissions: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """
    `log P(y_t = k)` under `model`'s CRF.

    Args:
        model: a `CrfForQuestionAnswering`.
        emissions: `(batch, seq, 3)`.
        attention_mask: `(batch, seq)` length-prefix mask, or `None`.

    Returns:
        `(batch, seq, 3)` float32; positions past a sequence's end hold no meaningful value.
    """
    emissions = emissions.float()
    mask = model._as_mask(attention_mask, emissions)
    with torch.autocast(emissions.device.type, enabled=False):
        return crf_tag_log_marginals(emissions, mask, *model._crf_parameters())[0]


def decode_best_spans(model, emissions: torch.Tensor, attention_mask=None, context_mask=None):
    """
    Constrained 1-best decoding: the most probable tag path under valid BIO with exactly one `B I*` span that lies
    entirely inside `context_mask` (and covers at most `model.config.max_answer_length` tokens, when set) -- the
    first of `model.decode_nbest_spans`'s spans.

    Args:
        model: a `CrfForQuestionAnswering`.
        emissions: `(batch, seq, 3)`.
        attention_mask: `(batch, seq)` length-prefix mask, or `None`.
        context_mask: `(batch, seq)` bool, True where the answer may be; `None` means every attended token
            but position 0.

    Returns:
        `(span_start, span_end, span_score, null_score)`, each `(batch,)`: inclusive token indices (long),
        `log P(best single-span path)` and `log P(all O)` (float32). Without any allowed token:
        `span_score = -inf` and `span_start = span_end = 0`.
    """
    span_start, span_end, span_score, null_score = model.decode_nbest_spans(
        emissions, attention_mask, context_mask, n_best_size=1
    )
    return span_start[:, 0], span_end[:, 0], span_score[:, 0], null_score
