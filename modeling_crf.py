# coding=utf-8
"""SpanBERT + CRF for extractive question answering.

The model tags every token of a (question, context) window with one of three BIO tags
(``O`` = 0, ``B`` = 1, ``I`` = 2) and scores whole tag sequences with a linear-chain CRF
(pytorch-crf). An answer is the single ``B I*`` run of the best admissible tag path.

This file is deliberately self-contained (it imports only ``torch``, ``torchcrf``, ``transformers`` and the
standard library): ``save_pretrained`` copies it next to the weights, and ``trust_remote_code=True`` imports it
from there in processes that know nothing about the project it came from.

Conventions used throughout:

* ``emissions`` are ``(batch, seq, 3)`` per-token tag scores, ``mask`` is a ``(batch, seq)`` bool tensor.
* The mask must be a *length prefix* (right padding): pytorch-crf, and the recursions below, read it as
  "the first ``L`` positions are real". Position 0 must always be on. Left-padded batches are not supported.
* All CRF arithmetic runs in float32 with autocast disabled, whatever dtype the encoder runs in.
"""

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torchcrf import CRF

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput


# Tag ids of the BIO scheme. The CRF's transition matrix is indexed with these.
TAG_O, TAG_B, TAG_I = 0, 1, 2
BIO_TAGS = ("O", "B", "I")

# Score given to positions that must never be chosen (padding) in the boundary logits. It is finite so that
# adding a few of them (start + end, or a sum with real log-probabilities) neither overflows to -inf nor yields
# NaN, yet it is far below any real log-probability, so it cannot win a max.
MASKED_SCORE = torch.finfo(torch.float32).min / 8

# Hub/download arguments of `from_pretrained` that are needed to read a config file.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------


class CrfQAConfig(PreTrainedConfig):
    r"""
    Configuration of [`CrfForQuestionAnswering`]: a BERT-family encoder (stored whole as the `encoder` sub-config),
    a dropout, a linear layer producing `num_tags` emission scores per token and a linear-chain CRF over BIO tags.

    Args:
        encoder (`dict` or `PreTrainedConfig`, *optional*):
            Configuration of the backbone. A dict must carry the backbone's `model_type` (e.g. `"bert"`); it is
            turned into the matching config class. Defaults to a default `BertConfig`.
        num_tags (`int`, *optional*, defaults to 3):
            Number of CRF tags. The question-answering decoding assumes the BIO scheme `O=0, B=1, I=2`, so it
            must be 3.
        classifier_dropout (`float`, *optional*):
            Dropout applied to the encoder output before the emission layer. Defaults to the encoder's
            `hidden_dropout_prob`, or 0.1 when the encoder has none.
        emission_relu (`bool`, *optional*, defaults to `False`):
            Apply a ReLU to the emission scores (as the original notebook did).

    Example:

    ```python
    >>> from transformers import BertConfig
    >>> config = CrfQAConfig(encoder=BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2))
    >>> model = CrfForQuestionAnswering(config)
    ```
    """

    model_type = "crf_qa"
    # The Trainer gathers every other output: evaluation decodes with the constrained best spans, and the marginal
    # start/end logits (for span-model code) would only cost memory there.
    keys_to_ignore_at_inference = ["start_logits", "end_logits"]
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: dict | PreTrainedConfig | None = None
    num_tags: int = 3
    classifier_dropout: float | None = None
    emission_relu: bool = False

    def __post_init__(self, **kwargs):
        # Name the tags unless the caller did: `id2label` documents the meaning of the emission columns.
        if self.id2label is None and "num_labels" not in kwargs:
            self.id2label = {i: BIO_TAGS[i] if self.num_tags == 3 else f"TAG_{i}" for i in range(self.num_tags)}
            self.label2id = {name: i for i, name in self.id2label.items()}
        super().__post_init__(**kwargs)
        if self.classifier_dropout is None:
            dropout = getattr(self.encoder, "hidden_dropout_prob", None)
            self.classifier_dropout = 0.1 if dropout is None else dropout

    # Read-only views of the backbone's sizes, for code that expects them on the top-level config.
    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size

    @property
    def num_hidden_layers(self) -> int:
        return self.encoder.num_hidden_layers

    @property
    def num_attention_heads(self) -> int:
        return self.encoder.num_attention_heads


def _crf_config_fields() -> set[str]:
    """Names of the fields `CrfQAConfig` adds on top of `PreTrainedConfig` (used to route `from_pretrained` kwargs)."""
    base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    return {f.name for f in dataclasses.fields(CrfQAConfig)} - base - {"encoder"}


# --------------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class CrfQuestionAnsweringOutput(ModelOutput):
    r"""
    Output of [`CrfForQuestionAnswering`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Negative CRF log-likelihood of the gold BIO tags, averaged over the batch.
        start_logits (`torch.FloatTensor` of shape `(batch, seq)`):
            `log P(y_i = B)` from the CRF marginals. Position 0 holds `log P(all tags O)` (the null answer),
            padding holds a large negative finite number.
        end_logits (`torch.FloatTensor` of shape `(batch, seq)`):
            `log P(a span ends at i)`, i.e. `y_i` is `B` or `I` and `y_{i+1}` is `O` or `B` (or `i` is the last
            real token). Position 0 and padding as for `start_logits`.
        span_start (`torch.LongTensor` of shape `(batch,)`, *optional*, eval mode only):
            First token of the answer span of the best path with exactly one span inside `context_mask`.
        span_end (`torch.LongTensor` of shape `(batch,)`, *optional*, eval mode only):
            Last token (inclusive) of that span.
        span_score (`torch.FloatTensor` of shape `(batch,)`, *optional*, eval mode only):
            `log P(that path)`; `-inf` (with `span_start = span_end = 0`) when no token may be covered.
        null_score (`torch.FloatTensor` of shape `(batch,)`, *optional*, eval mode only):
            `log P(all tags O)`.
        hidden_states, attentions:
            The encoder's, when requested with `output_hidden_states` / `output_attentions`.
    """

    loss: torch.FloatTensor | None = None
    start_logits: torch.FloatTensor | None = None
    end_logits: torch.FloatTensor | None = None
    span_start: torch.LongTensor | None = None
    span_end: torch.LongTensor | None = None
    span_score: torch.FloatTensor | None = None
    null_score: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# --------------------------------------------------------------------------------------------------------------------
# CRF algorithms (batched, float32; the forward/backward recursions loop over positions, log Z and decoding do not)
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


def _forward_backward(emissions, mask, start, end, trans):
    """`(alphas, betas, log_z)`: `(batch, seq, K)`, `(batch, seq, K)`, `(batch,)`."""
    alphas = crf_forward_alphas(emissions, mask, start, trans)
    betas = crf_backward_betas(emissions, mask, end, trans)
    log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)
    return alphas, betas, log_z


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
    alphas, betas, log_z = _forward_backward(emissions, mask, start, end, trans)
    return alphas + betas - log_z[:, None, None], log_z


def crf_boundary_logits(emissions: torch.Tensor, mask: torch.Tensor, start, end, trans):
    """
    Span-boundary log-marginals by forward-backward.

    Args:
        emissions: `(batch, seq, 3)` float32 BIO emission scores.
        mask: `(batch, seq)` bool length prefix.

    Returns:
        `(start_logits, end_logits, log_z)`: two `(batch, seq)` tensors and `(batch,)` log-partition.
        `start_logits[b, i] = log P(y_i = B)`,
        `end_logits[b, i] = log P(y_i in {B, I} and (i is last or y_{i+1} in {O, B}))`,
        position 0 of both holds `log P(all O)`, padding holds `MASKED_SCORE`.
    """
    alphas, betas, log_z = _forward_backward(emissions, mask, start, end, trans)
    unary = alphas + betas - log_z[:, None, None]  # log P(y_t = k), (batch, seq, 3)

    start_logits = unary[:, :, TAG_B]

    # log P(y_t = i, y_{t+1} = j) for t < seq - 1, restricted to the pairs that close a span: i in {B, I},
    # j in {O, B}.  alphas[t, i] + trans[i, j] + emissions[t+1, j] + betas[t+1, j] - log Z.
    inside, after = [TAG_B, TAG_I], [TAG_O, TAG_B]
    pair = (
        alphas[:, :-1, inside, None]
        + trans[inside][:, after]
        + (emissions[:, 1:, after] + betas[:, 1:, after])[:, :, None, :]
        - log_z[:, None, None, None]
    )
    closes_next = torch.logsumexp(pair.flatten(2), dim=2)  # (batch, seq - 1)
    # At the last real token any span still open ends there: P(y_t in {B, I}).
    closes_last = torch.logsumexp(unary[:, :, inside], dim=2)  # (batch, seq)
    has_next = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    end_logits = torch.where(has_next, torch.cat([closes_next, closes_last[:, -1:]], dim=1), closes_last)

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


def _orderable_int(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 in `[0, 2**32)` with the same order (for non-NaN values; -0.0 sorts just below +0.0)."""
    bits = values.detach().contiguous().view(torch.int32)
    # Negative floats order backwards in their bit patterns: flip all but the sign bit.
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.long() + 2**31


def crf_decode_single_span(emissions, mask, context_mask, start, end, trans):
    """
    Best tag path with exactly one `B I*` span lying inside `context_mask`, in closed form (no loop over positions).

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
    # Why this is exact: a path with one span (i..j) and O everywhere else is fixed by (i, j), and its score is a
    # sum of three independent pieces (n = sequence length, T = trans, x = emissions):
    #   before:  start[B] if i = 0, else  start[O] + sum_{u<i} (x[u,O] + T[O,O]) - T[O,O] + T[O,B]
    #   span:    x[i,B], and for j > i  + T[B,I] + sum_{i<u<=j} (x[u,I] + T[I,I]) - T[I,I]
    #   after:   end[l] if j = n - 1, else  T[l,O] + sum_{j<u<n} (x[u,O] + T[O,O]) - T[O,O] + end[O]
    # (l = B if j = i else I). With running sums of (x[:,O] + T[O,O]) and (x[:,I] + T[I,I]) every piece is a
    # difference of two running-sum entries, so for j > i the score splits as open(i) + close(j), and for j = i it is
    # single(i). The best multi-token span is then max_j close(j) + max_{i<j} open(i), the inner max running only over
    # positions i with i..j inside the context: a prefix maximum that restarts after every disallowed position.
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


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


def _encoder_from(factory, *args, **kwargs):
    """
    Call an `AutoModel` factory without the pooling layer when the backbone supports dropping it.

    BERT-like models take `add_pooling_layer`; others (DistilBERT, ...) reject it, and only the model class can
    tell, so try and fall back.
    """
    try:
        return factory(*args, add_pooling_layer=False, **kwargs)
    except TypeError as error:
        if "add_pooling_layer" not in str(error):
            raise
        return factory(*args, **kwargs)


class CrfPreTrainedModel(PreTrainedModel):
    config_class = CrfQAConfig
    config: CrfQAConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    # Attention is entirely the encoder's business; it checks its own support when it is built.
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The CRF parameters are tiny and their log-sum-exps are precision sensitive: keep them in float32 when the
    # model is loaded in half precision.
    _keep_in_fp32_modules_strict = ["crf"]
    # The loss is a per-sequence mean and ignores `num_items_in_batch`: let the Trainer scale it for accumulation.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        """Initialise the head. The encoder is a `PreTrainedModel` and is dispatched to its own `_init_weights`."""
        # The `init` helpers skip tensors flagged as loaded from a checkpoint, so this never overwrites weights.
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=getattr(self.config.encoder, "initializer_range", 0.02))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, CRF):
            # pytorch-crf's own `reset_parameters` distribution. It must be repeated here: `from_pretrained`
            # builds the model on the meta device, where the constructor's initialisation never happened.
            init.uniform_(module.start_transitions, -0.1, 0.1)
            init.uniform_(module.end_transitions, -0.1, 0.1)
            init.uniform_(module.transitions, -0.1, 0.1)


class CrfForQuestionAnswering(CrfPreTrainedModel):
    """
    Encoder -> dropout -> linear (3 BIO emission scores per token) -> [ReLU] -> linear-chain CRF.

    Training minimises the CRF negative log-likelihood of gold BIO tags. Every forward returns span-boundary
    log-marginals shaped like a span model's `start_logits` / `end_logits`; in eval mode it also decodes, per
    sequence, the best path with exactly one answer span inside the context.
    """

    def __init__(self, config: CrfQAConfig, encoder: PreTrainedModel | None = None):
        """
        Args:
            config: the model configuration.
            encoder: an already built (typically pretrained) backbone to use instead of a freshly initialised one.
        """
        super().__init__(config)
        if config.num_tags != 3:
            raise ValueError(f"CrfForQuestionAnswering uses BIO tags and needs num_tags=3, got {config.num_tags}.")
        self.encoder = encoder if encoder is not None else _encoder_from(AutoModel.from_config, config.encoder)
        # One config object for the backbone, so that what is saved is what the encoder runs with.
        self.config.encoder = self.encoder.config
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.emissions = nn.Linear(self.encoder.config.hidden_size, config.num_tags)
        self.crf = CRF(config.num_tags, batch_first=True)
        self.post_init()

    # ---- loading -----------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """
        Load a saved `CrfForQuestionAnswering`, or start one from a plain encoder checkpoint.

        * A folder/repo whose config has `model_type="crf_qa"` is restored exactly (standard loading).
        * Any other checkpoint (a `BertModel`, or a `BertForPreTraining`/`BertForQuestionAnswering` whose keys carry
          a `bert.` prefix, ...) is loaded as the encoder with `AutoModel.from_pretrained`, which resolves the key
          prefixes; the emission layer and the CRF start freshly initialised.

        Keyword arguments naming `CrfQAConfig` fields (`classifier_dropout`, `emission_relu`, `num_tags`) update the
        CRF config; all others (`cache_dir`, `revision`, `token`, `dtype`, `device_map`, `attn_implementation`,
        encoder config overrides, ...) are passed on to the loader.
        """
        crf_kwargs = {key: kwargs.pop(key) for key in _crf_config_fields() if key in kwargs}
        if isinstance(config, PreTrainedConfig):
            is_crf = config.model_type == CrfQAConfig.model_type
        else:
            hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
            probe = config if config is not None else pretrained_model_name_or_path
            config_dict, _ = PreTrainedConfig.get_config_dict(probe, **hub_kwargs)
            is_crf = config_dict.get("model_type") == CrfQAConfig.model_type

        if not is_crf:
            return cls._from_encoder_checkpoint(
                pretrained_model_name_or_path, *model_args, config=config, crf_kwargs=crf_kwargs, **kwargs
            )
        if isinstance(config, PreTrainedConfig) and crf_kwargs:
            # With an explicit config, `from_pretrained` would hand these kwargs to `__init__`: apply them here.
            config = copy.deepcopy(config)
            for key, value in crf_kwargs.items():
                setattr(config, key, value)
        else:
            kwargs.update(crf_kwargs)  # the config loader applies them
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)

    @classmethod
    def _from_encoder_checkpoint(cls, pretrained_model_name_or_path, *model_args, config, crf_kwargs, **kwargs):
        """Build the model around a pretrained plain encoder; see `from_pretrained`."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        encoder = _encoder_from(
            AutoModel.from_pretrained,
            pretrained_model_name_or_path,
            *model_args,
            config=config,
            output_loading_info=output_loading_info,
            **kwargs,
        )
        if output_loading_info:
            encoder, loading_info = encoder

        # A copy: building a composite config resets the attention implementation of the sub-config it is given
        # (transformers 5 dispatches `attn_implementation=None` recursively), and the live encoder must keep its
        # own. `__init__` then points the new config back at `encoder.config`.
        config = CrfQAConfig(encoder=copy.deepcopy(encoder.config), **crf_kwargs)
        # The loaded encoder's parameters carry the "already initialised" flags, so `post_init` only
        # initialises the head and the CRF.
        model = cls(config, encoder=encoder)
        model.config.name_or_path = str(pretrained_model_name_or_path)
        # The new head follows the encoder's device and dtype, except the CRF which stays float32.
        model.emissions.to(device=encoder.device, dtype=encoder.dtype)
        model.crf.to(device=encoder.device)
        model.eval()  # like `from_pretrained`

        if output_loading_info:
            prefixed = {
                name: {f"{cls.base_model_prefix}.{key}" if isinstance(key, str) else key for key in keys}
                for name, keys in loading_info.items()
                if name != "error_msgs"
            }
            head = {name for name, _ in model.named_parameters() if not name.startswith(cls.base_model_prefix + ".")}
            prefixed["missing_keys"] = set(prefixed.get("missing_keys", ())) | head
            prefixed["error_msgs"] = loading_info.get("error_msgs", [])
            return model, prefixed
        return model

    # ---- heads ---------------------------------------------------------------------------------------------------

    def _crf_parameters(self):
        """The CRF's (start, end, transitions) as float32, whatever the module's storage dtype."""
        return (
            self.crf.start_transitions.float(),
            self.crf.end_transitions.float(),
            self.crf.transitions.float(),
        )

    def compute_emissions(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """`(batch, seq, hidden)` encoder states -> `(batch, seq, num_tags)` float32 emission scores."""
        emissions = self.emissions(self.dropout(sequence_output))
        if self.config.emission_relu:
            emissions = torch.relu(emissions)
        return emissions.float()

    def emission_scores(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """
        Run the encoder and the emission layer only (e.g. to time or re-run the CRF steps separately).

        Args:
            input_ids, attention_mask, token_type_ids, kwargs: as for `forward`.

        Returns:
            `(batch, seq, 3)` float32 emission scores.
        """
        return self._encode(input_ids, attention_mask, token_type_ids, **kwargs)[0]

    def _encode(self, input_ids, attention_mask, token_type_ids, **kwargs):
        # Only pass segment ids when given: some backbones (DistilBERT, ...) take none.
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        encoded = self.encoder(input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return self.compute_emissions(encoded.last_hidden_state), encoded

    @staticmethod
    def _as_mask(attention_mask: torch.Tensor | None, emissions: torch.Tensor) -> torch.Tensor:
        if attention_mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        return attention_mask.bool()

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """
        CRF log-likelihood of tag paths -- equal to pytorch-crf's `crf(emissions, tags, mask, reduction="none")`.

        Args:
            emissions: `(batch, seq, 3)`.
            tags: `(batch, seq)` long BIO tags (valid ids at every position, padding included).
            attention_mask: `(batch, seq)` length-prefix mask, or `None` for full sequences.

        Returns:
            `(batch,)` float32 log-likelihoods.
        """
        emissions = emissions.float()
        mask = self._as_mask(attention_mask, emissions)
        start, end, trans = self._crf_parameters()
        with torch.autocast(emissions.device.type, enabled=False):
            alphas = crf_forward_alphas(emissions, mask, start, trans)
            log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)
            return crf_path_scores(emissions, tags, mask, start, end, trans) - log_z

    def span_boundary_logits(self, emissions: torch.Tensor, attention_mask=None):
        """
        Span-boundary log-marginals (see `CrfQuestionAnsweringOutput.start_logits/end_logits`).

        Args:
            emissions: `(batch, seq, 3)`.
            attention_mask: `(batch, seq)` length-prefix mask, or `None`.

        Returns:
            `(start_logits, end_logits)`, each `(batch, seq)` float32.
        """
        emissions = emissions.float()
        mask = self._as_mask(attention_mask, emissions)
        with torch.autocast(emissions.device.type, enabled=False):
            start_logits, end_logits, _ = crf_boundary_logits(emissions, mask, *self._crf_parameters())
        return start_logits, end_logits

    def tag_log_marginals(self, emissions: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """
        `log P(y_t = k)` under the CRF.

        Args:
            emissions: `(batch, seq, 3)`.
            attention_mask: `(batch, seq)` length-prefix mask, or `None`.

        Returns:
            `(batch, seq, 3)` float32; positions past a sequence's end hold no meaningful value.
        """
        emissions = emissions.float()
        mask = self._as_mask(attention_mask, emissions)
        with torch.autocast(emissions.device.type, enabled=False):
            return crf_tag_log_marginals(emissions, mask, *self._crf_parameters())[0]

    def decode_spans(self, emissions: torch.Tensor, attention_mask=None, context_mask=None):
        """
        Constrained decoding: the most probable tag path under valid BIO with exactly one `B I*` span that lies
        entirely inside `context_mask`.

        Args:
            emissions: `(batch, seq, 3)`.
            attention_mask: `(batch, seq)` length-prefix mask, or `None`.
            context_mask: `(batch, seq)` bool, True where the answer may be; `None` means every attended token
                but position 0.

        Returns:
            `(span_start, span_end, span_score, null_score)`, each `(batch,)`: inclusive token indices (long),
            `log P(best single-span path)` and `log P(all O)` (float32). Without any allowed token:
            `span_score = -inf` and `span_start = span_end = 0`.
        """
        emissions = emissions.float()
        mask = self._as_mask(attention_mask, emissions)
        with torch.autocast(emissions.device.type, enabled=False):
            return self._decode_spans(emissions, mask, context_mask)

    def _decode_spans(self, emissions, mask, context_mask, log_z=None):
        """`decode_spans` on float32 emissions and a bool mask, reusing `log_z` `(batch,)` when already known."""
        if context_mask is None:
            context_mask = mask.clone()
            context_mask[:, 0] = False
        else:
            context_mask = context_mask.bool() & mask
        start, end, trans = self._crf_parameters()
        if log_z is None:
            log_z = crf_log_partition(emissions, mask, start, end, trans)
        span_start, span_end, best = crf_decode_single_span(emissions, mask, context_mask, start, end, trans)
        # The closed form's running sums reach ~1e4 on a confident window, where float32 keeps ~1e-3: good enough to
        # pick the span, not for the null odds (null_score - span_score), which would tie across questions. The two
        # paths are rescored in float64, where that difference is exact (log Z is common to both).
        emissions64, *parameters64 = (value.double() for value in (emissions, start, end, trans))
        span_tags = crf_single_span_tags(span_start, span_end, emissions.shape[1])
        span_path = crf_path_scores(emissions64, span_tags, mask, *parameters64)
        span_score = torch.where(torch.isfinite(best), span_path, float("-inf"))
        null_score = crf_all_o_scores(emissions64, mask, *parameters64)
        return span_start, span_end, (span_score - log_z).float(), (null_score - log_z).float()

    # ---- forward -------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CrfQuestionAnsweringOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq)`):
                Token ids of `[CLS] question [SEP] context [SEP] [PAD]...`.
            attention_mask (`torch.Tensor` of shape `(batch, seq)`, *optional*):
                1 on real tokens, 0 on padding. Must be a length prefix (right padding); also used as the CRF mask.
            token_type_ids (`torch.LongTensor` of shape `(batch, seq)`, *optional*):
                Segment ids, passed to the encoder when given.
            labels (`torch.LongTensor` of shape `(batch, seq)`, *optional*):
                Gold BIO tags (O=0, B=1, I=2) at every position -- never -100: question, special and padding
                tokens are O.
            context_mask (`torch.BoolTensor` of shape `(batch, seq)`, *optional*):
                True on the tokens the answer may cover (the window's context tokens). Used by the eval-mode
                decoding only; defaults to every attended token but position 0.
            return_dict (`bool`, *optional*):
                Return a `CrfQuestionAnsweringOutput` (default: `config.return_dict`) or a tuple.
            kwargs:
                Passed to the encoder (`position_ids`, `inputs_embeds`, `output_hidden_states`, ...).

        Returns:
            [`CrfQuestionAnsweringOutput`]: `loss` when `labels` are given, `start_logits`/`end_logits`
            `(batch, seq)` always, and in eval mode `span_start`, `span_end`, `span_score`, `null_score` `(batch,)`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        kwargs.pop("num_items_in_batch", None)  # a Trainer loss kwarg, meaningless to the encoder
        emissions, encoded = self._encode(input_ids, attention_mask, token_type_ids, **kwargs)
        mask = self._as_mask(attention_mask, emissions)
        start, end, trans = self._crf_parameters()
        with torch.autocast(emissions.device.type, enabled=False):
            # One forward-backward serves the marginals and the likelihood's log Z.
            start_logits, end_logits, log_z = crf_boundary_logits(emissions, mask, start, end, trans)
            loss = None
            if labels is not None:
                gold = crf_path_scores(emissions, labels.long(), mask, start, end, trans)
                loss = -(gold - log_z).mean()

            span_start = span_end = span_score = null_score = None
            if not self.training:
                # The constrained decode serves inference only; training skips it.
                span_start, span_end, span_score, null_score = self._decode_spans(
                    emissions, mask, context_mask, log_z=log_z
                )

        output = CrfQuestionAnsweringOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            span_start=span_start,
            span_end=span_end,
            span_score=span_score,
            null_score=null_score,
            hidden_states=getattr(encoded, "hidden_states", None),
            attentions=getattr(encoded, "attentions", None),
        )
        return output if return_dict else output.to_tuple()


# --------------------------------------------------------------------------------------------------------------------
# Registration: Auto classes resolve "crf_qa", and `save_pretrained` ships this file with an `auto_map`.
# `exist_ok` because this module is imported twice in a process that also loads a saved copy with
# `trust_remote_code=True`.
# --------------------------------------------------------------------------------------------------------------------

AutoConfig.register(CrfQAConfig.model_type, CrfQAConfig, exist_ok=True)
AutoModelForQuestionAnswering.register(CrfQAConfig, CrfForQuestionAnswering, exist_ok=True)
CrfQAConfig.register_for_auto_class("AutoConfig")
CrfForQuestionAnswering.register_for_auto_class("AutoModelForQuestionAnswering")

__all__ = ["CrfQAConfig", "CrfForQuestionAnswering", "CrfPreTrainedModel", "CrfQuestionAnsweringOutput"]
