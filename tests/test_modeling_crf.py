"""Tests of modeling_crf (and of crf_reference, which the checks use): CRF math against pytorch-crf and brute force,
loading, saving, gradients.

Everything runs on tiny random BERT configs, offline.
"""

import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForQuestionAnswering,
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertModel,
)

from model_folder import crf_decoding, modeling_crf  # noqa: E402
from modeling_crf import CrfForQuestionAnswering, CrfQAConfig  # noqa: E402
from tests import crf_reference  # noqa: E402

O, B, I = 0, 1, 2


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


def tiny_bert_config(**overrides):
    values = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    values.update(overrides)
    return BertConfig(**values)


def tiny_model(seed=0, **config_kwargs):
    torch.manual_seed(seed)
    return CrfForQuestionAnswering(CrfQAConfig(encoder=tiny_bert_config(), **config_kwargs))


def randomize_crf(model, scale=1.0, seed=0):
    """Non-default transitions, large enough for the constraints to matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in (model.crf.start_transitions, model.crf.end_transitions, model.crf.transitions):
            param.copy_(torch.randn(param.shape, generator=generator) * scale)


def crf_params(model):
    return (
        model.crf.start_transitions.detach().double(),
        model.crf.end_transitions.detach().double(),
        model.crf.transitions.detach().double(),
    )


def length_mask(lengths, seq):
    return torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]


# ---- brute force ---------------------------------------------------------------------------------------------------


def path_score(emissions, tags, start, end, trans):
    """Exact score of one path over the first len(tags) positions (float64)."""
    score = start[tags[0]] + emissions[0, tags[0]]
    for t in range(1, len(tags)):
        score = score + trans[tags[t - 1], tags[t]] + emissions[t, tags[t]]
    return float(score + end[tags[-1]])


def brute_log_z(emissions, length, start, end, trans):
    """log Z over every path of `length` tags, each scored exactly as `path_score` scores one (all at once; torch
    tensors or numpy arrays)."""
    emissions, start, end, trans = (torch.as_tensor(v, dtype=torch.float64) for v in (emissions, start, end, trans))
    paths = torch.tensor(list(itertools.product(range(3), repeat=length)))  # (3 ** length, length)
    positions = torch.arange(length)
    scores = (start[paths[:, 0]] + emissions[positions, paths].sum(1) + trans[paths[:, :-1], paths[:, 1:]].sum(1)
              + end[paths[:, -1]])
    return float(torch.logsumexp(scores, 0))


def span_tags(length, i, j):
    tags = [O] * length
    tags[i] = B
    for k in range(i + 1, j + 1):
        tags[k] = I
    return tags


def brute_best_span(emissions, length, context, start, end, trans):
    """Best (i, j, score) over all single spans lying inside `context`; None if there is none."""
    best = None
    for i in range(length):
        for j in range(i, length):
            if not all(context[k] for k in range(i, j + 1)):
                continue
            score = path_score(emissions, span_tags(length, i, j), start, end, trans)
            if best is None or score > best[2]:
                best = (i, j, score)
    return best


def brute_boundary_probs(emissions, length, start, end, trans):
    """P(y_i = B), P(span ends at i) and P(all O) by enumerating every path."""
    p_start = [0.0] * length
    p_end = [0.0] * length
    log_z = brute_log_z(emissions, length, start, end, trans)
    for tags in itertools.product(range(3), repeat=length):
        p = math.exp(path_score(emissions, tags, start, end, trans) - log_z)
        for i in range(length):
            if tags[i] == B:
                p_start[i] += p
            last = i == length - 1
            if tags[i] in (B, I) and (last or tags[i + 1] in (O, B)):
                p_end[i] += p
    p_null = math.exp(path_score(emissions, [O] * length, start, end, trans) - log_z)
    return p_start, p_end, p_null


# ---- config ----------------------------------------------------------------------------------------------------------


def test_config_defaults_and_sub_config():
    config = CrfQAConfig(encoder=tiny_bert_config(hidden_dropout_prob=0.25).to_dict())
    assert config.model_type == "crf_qa"
    assert isinstance(config.encoder, BertConfig)
    assert config.hidden_size == 32
    assert config.num_tags == 3 and config.emission_relu is False
    assert config.classifier_dropout == 0.25  # follows the encoder
    assert config.id2label == {0: "O", 1: "B", 2: "I"}

    restored = CrfQAConfig.from_dict(config.to_dict())
    assert isinstance(restored.encoder, BertConfig) and restored.encoder.hidden_size == 32
    assert restored.classifier_dropout == 0.25
    assert AutoConfig.for_model("crf_qa").__class__ is CrfQAConfig


# ---- CRF likelihood ----------------------------------------------------------------------------------------------


def test_log_likelihood_and_loss_match_pytorch_crf():
    model = tiny_model()
    randomize_crf(model, seed=1)
    torch.manual_seed(1)
    batch, seq = 4, 9
    mask = length_mask([9, 5, 1, 7], seq)
    emissions = torch.randn(batch, seq, 3) * 2
    tags = torch.randint(0, 3, (batch, seq))

    ours = crf_reference.log_likelihood(model, emissions, tags, mask)
    reference = model.crf(emissions, tags, mask, reduction="none")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)

    # The forward's loss is the negative batch mean of the same quantity on its own emissions.
    input_ids = torch.randint(1, 100, (batch, seq))
    model.eval()  # no dropout: the emissions below are the forward's
    with torch.no_grad():
        out = model(input_ids, attention_mask=mask.long(), labels=tags)
        emissions = crf_reference.emission_scores(model, input_ids, attention_mask=mask.long())
    assert emissions.shape == (batch, seq, 3) and emissions.dtype == torch.float32
    expected = -model.crf(emissions, tags, mask, reduction="mean")
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)

    model.train()
    out = model(input_ids, attention_mask=mask.long(), labels=tags)
    assert out.loss.requires_grad and torch.isfinite(out.loss)
    assert out.span_start is None and out.span_score is None  # no decoding while training


# ---- constrained decoding -------------------------------------------------------------------------------------------


def test_decode_matches_brute_force():
    model = tiny_model()
    generator = torch.Generator().manual_seed(0)
    for trial in range(6):
        randomize_crf(model, scale=2.0, seed=100 + trial)
        batch, seq = 8, 7
        lengths = torch.randint(1, seq + 1, (batch,), generator=generator).tolist()
        lengths[0] = seq
        mask = length_mask(lengths, seq)
        emissions = torch.randn(batch, seq, 3, generator=generator) * 2
        context = (torch.rand(batch, seq, generator=generator) < 0.7) & mask
        context[1] = False  # no allowed token at all
        if lengths[2] > 2:
            context[2] = False
            context[2, lengths[2] - 1] = True  # a single allowed token, at the very end

        assert_decode_matches_brute_force(model, emissions, mask, context)


def test_decode_default_context_excludes_position_zero():
    model = tiny_model()
    emissions = torch.zeros(1, 4, 3)
    emissions[0, 0, B] = 50.0  # the CRF would love a span at [CLS]
    span_start, span_end, _, _ = crf_reference.decode_best_spans(model, emissions)
    assert span_start.item() >= 1 and span_end.item() >= span_start.item()


def test_decode_equals_unconstrained_viterbi_when_no_constraint_binds():
    model = tiny_model()
    randomize_crf(model, scale=0.5, seed=3)
    generator = torch.Generator().manual_seed(3)
    batch, seq = 6, 12
    lengths = [12, 10, 8, 12, 5, 9]
    mask = length_mask(lengths, seq)
    context = mask.clone()
    context[:, :3] = False  # "question" tokens
    emissions = torch.randn(batch, seq, 3, generator=generator) * 0.3
    gold = []
    for b, length in enumerate(lengths):
        i = int(torch.randint(3, length, (1,), generator=generator))
        j = int(torch.randint(i, length, (1,), generator=generator))
        tags = span_tags(length, i, j)
        for t, tag in enumerate(tags):
            emissions[b, t, tag] += 8.0
        gold.append((i, j, tags))

    unconstrained = model.crf.decode(emissions, mask)
    span_start, span_end, span_score, _ = crf_reference.decode_best_spans(model, emissions, mask, context)
    for b, (i, j, tags) in enumerate(gold):
        assert unconstrained[b] == tags  # the construction is what makes no constraint bind
        assert (span_start[b].item(), span_end[b].item()) == (i, j)
        # pytorch-crf's log-likelihood of that very path is log P(path).
        padded = torch.tensor([tags + [O] * (seq - len(tags))])
        log_p = model.crf(emissions[b : b + 1], padded, mask[b : b + 1]).item()
        assert span_score[b].item() == pytest.approx(log_p, abs=1e-4)


def assert_decode_matches_brute_force(model, emissions, mask, context):
    """`decode_best_spans` against every single-span path scored exactly; returns its (span_start, span_end)."""
    start, end, trans = crf_params(model)
    span_start, span_end, span_score, null_score = crf_reference.decode_best_spans(model, emissions, mask, context)
    for b, length in enumerate(mask.sum(1).tolist()):
        em = emissions[b].double()
        log_z = brute_log_z(em, length, start, end, trans)
        null = path_score(em, [O] * length, start, end, trans) - log_z
        assert null_score[b].item() == pytest.approx(null, abs=1e-4)
        best = brute_best_span(em, length, context[b].tolist(), start, end, trans)
        if best is None:
            assert span_score[b].item() == float("-inf")
            assert span_start[b].item() == 0 and span_end[b].item() == 0
        else:
            assert (span_start[b].item(), span_end[b].item()) == best[:2], b
            assert span_score[b].item() == pytest.approx(best[2] - log_z, abs=1e-4)
    return span_start.tolist(), span_end.tolist()


def test_decode_edge_cases_match_brute_force():
    """Contexts in several pieces, spans at the first and last real token, length-1 sequences, empty contexts."""
    seq = 8
    lengths = [8, 8, 8, 6, 1, 1, 5, 8, 7]
    mask = length_mask(lengths, seq)
    context = torch.zeros(len(lengths), seq, dtype=torch.bool)
    context[0, [1, 2, 4, 5, 6]] = True  # two pieces: the favoured span 1..6 crosses the gap at 3
    context[1, ::2] = True  # every other token: single-token spans only
    context[2, :] = True  # position 0 allowed: a span may start at the very first token
    context[3, 2:] = True  # up to the last real token (5), and on into the padding
    context[4, 0] = True  # length 1, its only token allowed
    # row 5: length 1, nothing allowed
    context[6, 5:] = True  # allowed on padding only: nothing allowed
    context[7, [0, 7]] = True  # the first and the last token, apart
    context[8, [1, 3, 4, 6]] = True  # three pieces

    def favour(emissions, row, first, last, strength=6.0):
        """Make O..O B I..I O..O (span first..last) the unconstrained best path of `row`."""
        for t, tag in enumerate(span_tags(seq, first, last)):
            emissions[row, t, tag] += strength

    generator = torch.Generator().manual_seed(11)
    emissions = torch.randn(len(lengths), seq, 3, generator=generator)
    favour(emissions, 0, 1, 6)
    favour(emissions, 2, 0, 2)
    favour(emissions, 3, 3, 5)
    favour(emissions, 7, 7, 7)
    favour(emissions, 8, 3, 4)

    # Default (small) CRF parameters: the favoured spans win wherever the context admits them.
    model = tiny_model()
    span_start, span_end = assert_decode_matches_brute_force(model, emissions, mask, context)
    assert (span_start[2], span_end[2]) == (0, 2)
    assert (span_start[3], span_end[3]) == (3, 5)
    assert (span_start[4], span_end[4]) == (0, 0)
    assert (span_start[7], span_end[7]) == (7, 7)
    assert (span_start[8], span_end[8]) == (3, 4)
    assert span_start[1] == span_end[1] and span_start[1] % 2 == 0
    assert span_end[0] <= 2 or span_start[0] >= 4

    # Large random transitions make the constraints and the boundary terms bind differently.
    for trial in range(4):
        randomize_crf(model, scale=2.0, seed=200 + trial)
        assert_decode_matches_brute_force(model, emissions, mask, context)


def exhaustive_best_spans(emissions, mask, context, start, end, trans):
    """Per row, (i, j, exact score) of the best span inside `context` by scoring every span in float64; or None."""
    batch, seq, _ = emissions.shape
    first, last = torch.triu_indices(seq, seq)  # every i <= j
    positions = torch.arange(seq)
    inside = (positions >= first[:, None]) & (positions <= last[:, None])
    tags = torch.where(inside, I, O)
    tags[torch.arange(len(first)), first] = B
    results = []
    for b in range(batch):
        outside = torch.cumsum((~context[b]).long(), 0)  # disallowed tokens up to and including t
        crossed = outside[last] - outside[first] + (~context[b][first]).long()
        valid = (crossed == 0) & (last < int(mask[b].sum()))
        count = len(first)
        scores = crf_decoding.crf_path_scores(
            emissions[b].double().expand(count, seq, 3), tags, mask[b].expand(count, seq), start, end, trans
        )
        scores = torch.where(valid, scores, float("-inf"))
        k = int(scores.argmax())
        results.append(None if not valid.any() else (int(first[k]), int(last[k]), float(scores[k])))
    return results


def random_qa_windows(generator, batch, seq, scale):
    """(mask, context, emissions) of `batch` random windows of up to `seq` tokens: random lengths (two full, one of
    2 tokens), context masks of many pieces (one a QA window, one the whole sequence), emissions of `scale` with
    fewer, longer spans."""
    lengths = torch.randint(1, seq + 1, (batch,), generator=generator).tolist()
    lengths[:3] = [seq, seq, 2]
    mask = length_mask(lengths, seq)
    context = torch.rand(batch, seq, generator=generator) < 0.85  # many pieces
    context[0] = False
    context[0, 16 : seq - 1] = True  # a QA window: [CLS] question [SEP] context [SEP]
    context[1] = True  # everything, position 0 included
    emissions = torch.randn(batch, seq, 3, generator=generator) * scale
    emissions[:, :, B] -= scale  # fewer, longer spans
    return mask, context & mask, emissions


def test_decode_long_sequences_match_exhaustive_float64():
    """Longer sequences than brute force allows: every single-span path scored in float64, log Z by the float64
    forward recursion; float32 scores within 1e-4 relative. Padding may hold anything (here NaN)."""
    model = tiny_model()
    generator = torch.Generator().manual_seed(12)
    batch, seq = 8, 48
    for trial, scale in enumerate((0.5, 2.0, 6.0)):
        randomize_crf(model, scale=scale, seed=300 + trial)
        start, end, trans = crf_params(model)
        mask, context, emissions = random_qa_windows(generator, batch, seq, scale)

        span_start, span_end, span_score, null_score = crf_reference.decode_best_spans(model, emissions, mask, context)
        alphas = crf_decoding.crf_forward_alphas(emissions.double(), mask, start, trans)
        log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)
        null = crf_decoding.crf_all_o_scores(emissions.double(), mask, start, end, trans) - log_z
        torch.testing.assert_close(null_score.double(), null, rtol=1e-4, atol=1e-4)
        params = model._crf_parameters()
        closed_start, closed_end, _ = crf_reference.crf_decode_single_span(emissions, mask, context, *params)
        for b, best in enumerate(exhaustive_best_spans(emissions, mask, context, start, end, trans)):
            if best is None:
                assert span_score[b].item() == float("-inf") and span_start[b] == span_end[b] == 0
                continue
            assert (span_start[b].item(), span_end[b].item()) == best[:2], (trial, b)
            # the closed-form best-path search (the reference the benches time) finds the same span
            assert (closed_start[b].item(), closed_end[b].item()) == best[:2], (trial, b)
            exact = best[2] - log_z[b].item()
            assert abs(span_score[b].item() - exact) <= 1e-4 * max(1.0, abs(exact)), (trial, b)

        # The decoding and log Z read nothing past each sequence's end.
        dirty = emissions.masked_fill(~mask.unsqueeze(2), float("nan"))
        for clean, messy in zip(
            crf_reference.crf_decode_single_span(emissions, mask, context, *params),
            crf_reference.crf_decode_single_span(dirty, mask, context, *params),
        ):
            assert torch.equal(clean, messy)
        assert torch.equal(
            crf_decoding.crf_log_partition(emissions, mask, *params),
            crf_decoding.crf_log_partition(dirty, mask, *params),
        )


def test_null_odds_are_exact_when_path_scores_are_large():
    """A confident model's windows score ~1e4 per path (here a strong `O` emission over 384 tokens), where float32
    keeps only ~1e-3; the null odds `null_score - span_score` (what the no-answer threshold reads) must still be the
    exact difference of the two paths' scores, or questions tie in the threshold search."""
    model = tiny_model()
    randomize_crf(model, scale=2.0, seed=21)
    start, end, trans = crf_params(model)
    generator = torch.Generator().manual_seed(21)
    batch, seq = 6, 384
    emissions = torch.randn(batch, seq, 3, generator=generator) * 2.0
    emissions[:, :, O] += 30.0
    mask = length_mask([seq, seq, 300, 200, 129, 2], seq)
    span_start, span_end, span_score, null_score = crf_reference.decode_best_spans(model, emissions, mask)
    for b, length in enumerate(mask.sum(1).tolist()):
        em = emissions[b].double()
        span = span_tags(length, span_start[b].item(), span_end[b].item())
        exact = path_score(em, [O] * length, start, end, trans) - path_score(em, span, start, end, trans)
        odds = (null_score[b] - span_score[b]).item()
        assert odds == pytest.approx(exact, rel=1e-6, abs=1e-5), b


# ---- n-best decoding ---------------------------------------------------------------------------------------------


def brute_nbest_spans(emissions, length, context, start, end, trans, max_length=None):
    """Every single-span path inside `context` (and of at most `max_length` tokens), scored exactly by enumeration:
    [(score, i, j), ...], best first, equal scores by end then start."""
    spans = []
    for i in range(length):
        for j in range(i, length):
            if not all(context[t] for t in range(i, j + 1)) or (max_length is not None and j - i + 1 > max_length):
                continue
            spans.append((path_score(emissions, span_tags(length, i, j), start, end, trans), i, j))
    return sorted(spans, key=lambda span: (-span[0], span[2], span[1]))


def test_nbest_matches_brute_force():
    """The k best single-span paths of small random CRFs are exactly the k best of every single-span path scored by
    enumeration (pieces of context, length limits, k above and below the number of spans), in order, each with its
    log-probability (also equal to pytorch-crf's log-likelihood of that path), then -inf with span 0..0."""
    model = tiny_model()
    generator = torch.Generator().manual_seed(30)
    batch, seq = 8, 7
    for trial in range(8):
        randomize_crf(model, scale=2.0, seed=400 + trial)
        start, end, trans = crf_params(model)
        lengths = torch.randint(1, seq + 1, (batch,), generator=generator).tolist()
        lengths[:2] = [seq, seq]
        mask = length_mask(lengths, seq)
        emissions = torch.randn(batch, seq, 3, generator=generator) * 2
        context = (torch.rand(batch, seq, generator=generator) < 0.75) & mask
        context[0] = mask[0]
        context[0, [0, seq - 1]] = False  # one piece, as in a QA window
        context[1] = False  # nothing allowed
        # numpy scalars: enumerating is several times faster than with torch ones
        parameters = [value.numpy() for value in (start, end, trans)]
        exact = []
        for b, length in enumerate(lengths):
            em = emissions[b].double().numpy()
            exact.append((brute_log_z(em, length, *parameters),
                          brute_nbest_spans(em, length, context[b].tolist(), *parameters),
                          path_score(em, [O] * length, *parameters)))
        for k, max_length in ((12, None), (3, None), (12, 1), (5, 2), (40, 3), (1, None)):
            span_start, span_end, span_score, null_score = model.decode_nbest_spans(
                emissions, mask, context, n_best_size=k, max_answer_length=max_length
            )
            assert span_start.shape == span_end.shape == span_score.shape == (batch, k)
            for b, length in enumerate(lengths):
                log_z, spans, null = exact[b]
                expected = [span for span in spans if max_length is None or span[2] - span[1] < max_length][:k]
                found = int(torch.isfinite(span_score[b]).sum())
                where = (trial, k, max_length, b)
                assert found == len(expected), where
                spans = list(zip(span_start[b, :found].tolist(), span_end[b, :found].tolist()))
                assert spans == [(i, j) for _, i, j in expected], where
                for (score, _, _), log_p in zip(expected, span_score[b, :found].tolist()):
                    assert log_p == pytest.approx(score - log_z, abs=1e-5), where
                if found:
                    tags = torch.tensor([span_tags(length, i, j) + [O] * (seq - length) for _, i, j in expected])
                    likelihood = model.crf(emissions[b : b + 1].expand(found, seq, 3), tags,
                                           mask[b : b + 1].expand(found, seq), reduction="none")
                    torch.testing.assert_close(span_score[b, :found], likelihood, rtol=1e-4, atol=1e-4)
                assert (span_score[b, found:] == float("-inf")).all(), where
                assert (span_start[b, found:] == 0).all() and (span_end[b, found:] == 0).all(), where
                assert null_score[b].item() == pytest.approx(null - log_z, abs=1e-5), where


def exhaustive_nbest_spans(emissions, mask, context, start, end, trans, k, max_length=None):
    """Per row, the k best [(i, j, exact score)] of every single-span path inside `context` (at most `max_length`
    tokens), each scored in float64 by `crf_path_scores`; best first, equal scores by end then start."""
    batch, seq, _ = emissions.shape
    first, last = torch.triu_indices(seq, seq)  # every i <= j
    positions = torch.arange(seq)
    tags = torch.where((positions >= first[:, None]) & (positions <= last[:, None]), I, O)
    tags[torch.arange(len(first)), first] = B
    results = []
    for b in range(batch):
        outside = torch.cumsum((~context[b]).long(), 0)
        crossed = outside[last] - outside[first] + (~context[b][first]).long()
        valid = (crossed == 0) & (last < int(mask[b].sum()))
        if max_length is not None:
            valid &= last - first < max_length
        count = len(first)
        scores = crf_decoding.crf_path_scores(
            emissions[b].double().expand(count, seq, 3), tags, mask[b].expand(count, seq), start, end, trans
        )
        ranked = sorted((-float(scores[n]), int(last[n]), int(first[n])) for n in torch.nonzero(valid).flatten())
        results.append([(i, j, -score) for score, j, i in ranked[:k]])
    return results


@pytest.mark.parametrize("max_length", [None, 5])
def test_nbest_long_sequences_match_exhaustive_float64(max_length):
    """Windows of 48 tokens: the 20 best against every single-span path scored in float64; log-probabilities within
    1e-4 relative. Padding may hold anything (here NaN)."""
    model = tiny_model()
    generator = torch.Generator().manual_seed(32)
    batch, seq, k = 8, 48, 20
    for trial, scale in enumerate((0.5, 2.0, 6.0)):
        randomize_crf(model, scale=scale, seed=500 + trial)
        start, end, trans = crf_params(model)
        mask, context, emissions = random_qa_windows(generator, batch, seq, scale)

        span_start, span_end, span_score, _ = model.decode_nbest_spans(
            emissions, mask, context, n_best_size=k, max_answer_length=max_length
        )
        alphas = crf_decoding.crf_forward_alphas(emissions.double(), mask, start, trans)
        log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)
        exhaustive = exhaustive_nbest_spans(emissions, mask, context, start, end, trans, k, max_length)
        for b, expected in enumerate(exhaustive):
            found = int(torch.isfinite(span_score[b]).sum())
            assert found == len(expected), (trial, b)
            assert list(zip(span_start[b, :found].tolist(), span_end[b, :found].tolist())) == [
                (i, j) for i, j, _ in expected], (trial, b)
            for (_, _, score), log_p in zip(expected, span_score[b, :found].tolist()):
                exact = score - log_z[b].item()
                assert abs(log_p - exact) <= 1e-4 * max(1.0, abs(exact)), (trial, b)

        # The search reads nothing past each sequence's end.
        dirty = emissions.masked_fill(~mask.unsqueeze(2), float("nan"))
        params = [p.double() for p in model._crf_parameters()]
        for clean, messy in zip(
            crf_decoding.crf_kbest_single_spans(emissions.double(), mask, context, *params, k, max_length),
            crf_decoding.crf_kbest_single_spans(dirty.double(), mask, context, *params, k, max_length),
        ):
            assert torch.equal(clean, messy)


def test_nbest_first_span_and_null_odds_do_not_depend_on_k():
    """Evaluation's best span per window, its score and the null score (so the null odds) are the same, bit for bit,
    whether a window keeps 1, 5, 20 or 64 spans, and the k best are the first k of the 64 best; on 384-token windows,
    confident ones included (path scores ~1e4). The best span is also the one the closed-form best-path search
    (`crf_decode_single_span`) finds."""
    model = tiny_model()
    randomize_crf(model, scale=2.0, seed=36)  # transitions that favour spans of a few tokens
    generator = torch.Generator().manual_seed(36)
    batch, seq = 16, 384
    emissions = torch.randn(batch, seq, 3, generator=generator) * 2.0
    emissions[: batch // 2, :, O] += 30.0
    for b in range(batch // 2):  # a confident answer of 1 to 6 tokens among confident O's
        first = int(torch.randint(20, 300, (1,), generator=generator))
        last = first + int(torch.randint(0, 6, (1,), generator=generator))
        emissions[b, first, B] += 31.0
        emissions[b, first + 1 : last + 1, I] += 31.0
    lengths = [seq] * 4 + torch.randint(20, seq, (batch - 4,), generator=generator).tolist()
    mask = length_mask(lengths, seq)
    positions = torch.arange(seq)
    context = (positions >= 16) & (positions < torch.tensor(lengths)[:, None] - 1)  # [CLS] question [SEP] ... [SEP]
    context[4:8] &= torch.rand(4, seq, generator=generator) < 0.9  # pieces
    runs = {k: model.decode_nbest_spans(emissions, mask, context, n_best_size=k) for k in (1, 5, 20, 64)}
    widest = runs[64]
    for k, (span_start, span_end, span_score, null_score) in runs.items():
        assert span_start.shape == (batch, k) and torch.isfinite(span_score).all()
        assert torch.equal(span_start, widest[0][:, :k]) and torch.equal(span_end, widest[1][:, :k])
        assert torch.equal(span_score, widest[2][:, :k]) and torch.equal(null_score, widest[3])
    best = crf_reference.decode_best_spans(model, emissions, mask, context)
    for ours, first in zip(best, (runs[1][0][:, 0], runs[1][1][:, 0], runs[1][2][:, 0], runs[1][3])):
        assert torch.equal(ours, first)
    closed_form = crf_reference.crf_decode_single_span(emissions, mask, context, *model._crf_parameters())
    assert torch.equal(closed_form[0], best[0]) and torch.equal(closed_form[1], best[1])
    assert (best[1] > best[0]).sum() >= batch // 2  # the multi-token spans' search is what is checked


def test_nbest_ties_are_ordered_by_end_then_start_for_every_k():
    """All-zero emissions and transitions: every single-span path scores the same. The order is fixed (by end, then
    start), so the first span is the same for every k."""
    model = tiny_model()
    with torch.no_grad():
        for param in (model.crf.start_transitions, model.crf.end_transitions, model.crf.transitions):
            param.zero_()
    emissions = torch.zeros(2, 6, 3)
    mask = length_mask([6, 5], 6)
    context = mask.clone()
    context[:, 0] = False
    expected = [(1, 1), (1, 2), (2, 2), (1, 3), (2, 3), (3, 3), (1, 4), (2, 4)]
    for k in (1, 3, 8):
        span_start, span_end, span_score, _ = model.decode_nbest_spans(emissions, mask, context, n_best_size=k)
        for b in range(2):
            assert list(zip(span_start[b].tolist(), span_end[b].tolist())) == expected[:k]
            assert len(set(span_score[b].tolist())) == 1


@pytest.mark.parametrize("seq", [1, 2, 3, 5, 8, 13, 64, 100])
def test_log_partition_matches_forward_recursion(seq):
    generator = torch.Generator().manual_seed(seq)
    for scale in (0.5, 3.0, 20.0):
        start, end = torch.randn(3, generator=generator) * scale, torch.randn(3, generator=generator) * scale
        trans = torch.randn(3, 3, generator=generator) * scale
        lengths = torch.randint(1, seq + 1, (6,), generator=generator).tolist()
        lengths[:2] = [seq, 1]
        mask = length_mask(lengths, seq)
        emissions = (torch.randn(6, seq, 3, generator=generator) * scale).requires_grad_()
        ours = crf_decoding.crf_log_partition(emissions, mask, start, end, trans)
        assert ours.dtype == torch.float32 and ours.shape == (6,)
        reference = torch.logsumexp(
            crf_decoding.crf_forward_alphas(emissions.double(), mask, start.double(), trans.double())[:, -1]
            + end.double(),
            dim=1,
        )
        torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5)
        # Its gradient is the tag marginals (zero on padding), as the forward recursion's.
        (grad,) = torch.autograd.grad(ours.sum(), emissions)
        (expected,) = torch.autograd.grad(reference.sum(), emissions)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


def test_decode_scores_are_differentiable():
    model = tiny_model()
    randomize_crf(model, seed=13)
    mask = length_mask([9, 4, 2], 9)
    emissions = torch.randn(3, 9, 3, generator=torch.Generator().manual_seed(13), requires_grad=True)
    span_start, span_end, span_score, null_score = crf_reference.decode_best_spans(model, emissions, mask)
    assert torch.isfinite(span_score).all()
    (span_score.sum() + null_score.sum()).backward()
    assert torch.isfinite(emissions.grad).all()
    assert (emissions.grad[~mask] == 0).all()


# ---- marginals ---------------------------------------------------------------------------------------------------


def test_tag_marginals_sum_to_one():
    model = tiny_model()
    randomize_crf(model, seed=4)
    torch.manual_seed(4)
    mask = length_mask([10, 6, 1], 10)
    log_marginals = crf_reference.tag_log_marginals(model, torch.randn(3, 10, 3) * 3, mask)
    totals = log_marginals.exp().sum(-1)
    torch.testing.assert_close(totals[mask], torch.ones(int(mask.sum())), rtol=1e-5, atol=1e-5)


def test_boundary_logits_match_brute_force():
    model = tiny_model()
    randomize_crf(model, scale=1.5, seed=5)
    start, end, trans = crf_params(model)
    torch.manual_seed(5)
    lengths = [6, 4, 2, 1]
    seq = 6
    mask = length_mask(lengths, seq)
    emissions = torch.randn(len(lengths), seq, 3) * 1.5
    start_logits, end_logits = crf_reference.span_boundary_logits(model, emissions, mask)
    assert start_logits.dtype == torch.float32 and start_logits.shape == (len(lengths), seq)

    for b, length in enumerate(lengths):
        p_start, p_end, p_null = brute_boundary_probs(emissions[b].double(), length, start, end, trans)
        for i in range(1, length):
            assert start_logits[b, i].exp().item() == pytest.approx(p_start[i], abs=1e-5)
            assert end_logits[b, i].exp().item() == pytest.approx(p_end[i], abs=1e-5)
        # [CLS] holds the null answer in both.
        assert start_logits[b, 0].exp().item() == pytest.approx(p_null, abs=1e-5)
        assert end_logits[b, 0].exp().item() == pytest.approx(p_null, abs=1e-5)
        # Padding: hugely negative, finite, and safe to add.
        if length < seq:
            pad = start_logits[b, length:] + end_logits[b, length:]
            assert torch.isfinite(pad).all() and (pad < -1e30).all()


def test_forward_eval_outputs_and_tuple_mode():
    model = tiny_model()
    randomize_crf(model, seed=6)
    model.eval()
    torch.manual_seed(6)
    input_ids = torch.randint(1, 100, (3, 8))
    attention_mask = length_mask([8, 6, 4], 8).long()
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 3:] = 1
    context_mask = token_type_ids.bool() & attention_mask.bool()
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, context_mask=context_mask)
    assert model.config.n_best_size == 20
    for name in ("span_start", "span_end", "span_score"):
        assert getattr(out, name).shape == (3, 20)  # the config's n_best_size spans per window
    assert out.null_score.shape == (3,)
    assert out.start_logits.shape == out.end_logits.shape == (3, 8)
    # 5 + 3 + 1 context tokens: 15, 6 and 1 spans; -inf and 0..0 past them
    found = torch.isfinite(out.span_score)
    assert found.sum(1).tolist() == [15, 6, 1]
    assert (out.span_score[:, 1:] <= out.span_score[:, :-1]).all()
    assert ((out.span_start >= 3) & (out.span_end >= out.span_start))[found].all()
    assert (out.span_end < attention_mask.sum(1, keepdim=True))[found].all()
    assert (out.span_start[~found] == 0).all() and (out.span_end[~found] == 0).all()

    with torch.no_grad():
        emissions = crf_reference.emission_scores(model, input_ids, attention_mask, token_type_ids)
    nbest = model.decode_nbest_spans(emissions, attention_mask, context_mask)
    for ours, theirs in zip(nbest, (out.span_start, out.span_end, out.span_score, out.null_score)):
        torch.testing.assert_close(ours, theirs)
    best = crf_reference.decode_best_spans(model, emissions, attention_mask, context_mask)
    for ours, theirs in zip(best, (out.span_start[:, 0], out.span_end[:, 0], out.span_score[:, 0], out.null_score)):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(out.null_score, out.start_logits[:, 0])

    # n_best_size and max_answer_length per call
    with torch.no_grad():
        short = model(input_ids, attention_mask, token_type_ids, context_mask=context_mask, n_best_size=4,
                      max_answer_length=2)
    assert short.span_start.shape == (3, 4)
    assert (short.span_end - short.span_start < 2).all()

    with torch.no_grad():
        as_tuple = model(input_ids, attention_mask, token_type_ids, context_mask=context_mask, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.start_logits)


@pytest.mark.parametrize("mask", [[[0, 1, 1, 1], [1, 1, 0, 0]],  # left padding: the first position off
                                  [[1, 1, 1, 1], [1, 0, 1, 0]]])  # a hole: not a length prefix
def test_a_mask_that_is_not_a_length_prefix_is_refused(mask):
    model = tiny_model().eval()
    input_ids = torch.randint(1, 100, (2, 4))
    with pytest.raises(ValueError, match=r"padding on the right.*rows \[\d\]"):
        model(input_ids, attention_mask=torch.tensor(mask))
    with pytest.raises(ValueError, match="padding on the right"):
        model.decode_nbest_spans(torch.zeros(2, 4, 3), torch.tensor(mask))


def test_crf_math_is_float32_under_bf16_autocast():
    model = tiny_model()
    model.eval()
    input_ids = torch.randint(1, 100, (2, 6))
    labels = torch.zeros(2, 6, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = model(input_ids, labels=labels)
    assert out.start_logits.dtype == out.end_logits.dtype == out.span_score.dtype == torch.float32
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


# ---- initialisation and loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_class", [BertModel, BertForPreTraining, BertForQuestionAnswering])
def test_from_plain_encoder_checkpoint(tmp_path, source_class):
    torch.manual_seed(7)
    source = source_class(tiny_bert_config())
    source.save_pretrained(tmp_path / "plain")
    encoder_reference = source if source_class is BertModel else source.bert

    model = CrfForQuestionAnswering.from_pretrained(tmp_path / "plain", emission_relu=True, classifier_dropout=0.3)
    assert isinstance(model.config, CrfQAConfig)
    assert model.config.emission_relu is True and model.config.classifier_dropout == 0.3
    assert model.dropout.p == 0.3
    assert not model.training

    reference = encoder_reference.state_dict()
    loaded = model.encoder.state_dict()
    assert not any(key.startswith("pooler.") for key in loaded)
    for key, value in loaded.items():
        assert torch.equal(value, reference[key]), key

    # The head and the CRF were initialised, not left as whatever memory the meta-device build handed out.
    for param in (model.crf.start_transitions, model.crf.end_transitions, model.crf.transitions):
        assert torch.isfinite(param).all()
        assert param.abs().max() <= 0.1 and param.abs().max() > 0
    assert torch.isfinite(model.emissions.weight).all() and 0 < model.emissions.weight.std() < 0.1
    assert torch.equal(model.emissions.bias, torch.zeros(3))


def test_from_crf_checkpoint_restores_exactly_and_applies_config_kwargs(tmp_path):
    model = tiny_model(seed=8)
    randomize_crf(model, seed=8)
    model.save_pretrained(tmp_path / "crf")

    restored = CrfForQuestionAnswering.from_pretrained(tmp_path / "crf")
    original = model.state_dict()
    assert restored.state_dict().keys() == original.keys()
    for key, value in restored.state_dict().items():
        assert torch.equal(value, original[key]), key

    relu = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "crf", emission_relu=True)
    assert isinstance(relu, CrfForQuestionAnswering) and relu.config.emission_relu is True
    assert torch.equal(relu.crf.transitions, model.crf.transitions)

    half = CrfForQuestionAnswering.from_pretrained(tmp_path / "crf", dtype=torch.bfloat16)
    assert half.encoder.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert half.crf.transitions.dtype == torch.float32  # kept in float32
    assert torch.equal(half.crf.transitions, model.crf.transitions)

    model.to(torch.bfloat16)  # as the Trainer casts for --bf16_full_eval: the CRF's scores keep every bit
    assert model.encoder.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    for name, value in model.crf.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, restored.state_dict()[f"crf.{name}"]), name


def test_save_and_load_in_fresh_process_with_remote_code(tmp_path):
    model = tiny_model(seed=9, emission_relu=True)
    randomize_crf(model, seed=9)
    model.eval()
    folder = tmp_path / "saved"
    model.save_pretrained(folder)

    assert (folder / "model.safetensors").exists()
    assert (folder / "modeling_crf.py").exists()
    # the CRF algorithms: copied because modeling_crf.py imports them relatively
    assert (folder / "crf_decoding.py").read_text() == (ROOT / "model_folder" / "crf_decoding.py").read_text()
    assert not (folder / "crf_reference.py").exists()  # tests' and benches' helpers, not the model's
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "crf_qa"
    assert config["auto_map"] == {
        "AutoConfig": "modeling_crf.CrfQAConfig",
        "AutoModelForQuestionAnswering": "modeling_crf.CrfForQuestionAnswering",
    }
    saved = load_file(folder / "model.safetensors")
    assert {"crf.transitions", "crf.start_transitions", "crf.end_transitions"} <= saved.keys()

    input_ids = torch.randint(1, 100, (2, 7), generator=torch.Generator().manual_seed(9))
    torch.save(input_ids, tmp_path / "input_ids.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import torch
            from safetensors.torch import save_file
            from transformers import AutoConfig, AutoModelForQuestionAnswering

            folder = {str(folder)!r}
            config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
            assert type(config).__name__ == "CrfQAConfig", type(config)
            model = AutoModelForQuestionAnswering.from_pretrained(folder, trust_remote_code=True)
            assert type(model).__name__ == "CrfForQuestionAnswering", type(model)
            # The class must come from the saved folder, not from the project.
            assert "modeling_crf" not in sys.modules, "project module leaked into the subprocess"
            assert "crf_decoding" not in sys.modules, "project module leaked into the subprocess"
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            decoding = sys.modules[type(model).__module__.rsplit(".", 1)[0] + ".crf_decoding"]
            assert decoding.__file__.startswith(sys.modules[type(model).__module__].__file__.rsplit("/", 1)[0])
            state = {{key: value.contiguous() for key, value in model.state_dict().items()}}
            with torch.no_grad():
                out = model(torch.load({str(tmp_path / "input_ids.pt")!r}))
            state["__start_logits"] = out.start_logits
            state["__span_score"] = out.span_score
            state["__span_start"] = out.span_start
            save_file(state, {str(tmp_path / "reloaded.safetensors")!r})
            """
        )
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]

    reloaded = load_file(tmp_path / "reloaded.safetensors")
    original = model.state_dict()
    assert {key for key in reloaded if not key.startswith("__")} == set(original)
    for key, value in original.items():
        assert torch.equal(reloaded[key], value), key
    with torch.no_grad():
        out = model(input_ids)
    torch.testing.assert_close(reloaded["__start_logits"], out.start_logits)
    torch.testing.assert_close(reloaded["__span_score"], out.span_score)
    assert torch.equal(reloaded["__span_start"], out.span_start) and out.span_start.shape == (2, 20)


# ---- gradients -----------------------------------------------------------------------------------------------------


def test_backward_reaches_crf_and_encoder():
    model = tiny_model(seed=10)
    model.train()
    torch.manual_seed(10)
    input_ids = torch.randint(1, 100, (3, 8))
    attention_mask = length_mask([8, 7, 5], 8).long()
    labels = torch.zeros(3, 8, dtype=torch.long)
    labels[:, 4] = B
    labels[:, 5] = I
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    out.loss.backward()
    for name in ("crf.transitions", "crf.start_transitions", "crf.end_transitions", "emissions.weight",
                 "encoder.embeddings.word_embeddings.weight", "encoder.encoder.layer.0.attention.self.query.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def imported_modules(path):
    imported = set()
    for line in Path(path).read_text().splitlines():
        words = line.split()
        if words[:1] == ["import"] or (words[:1] == ["from"] and "import" in words):
            imported.add(words[1] if words[1].startswith(".") else words[1].split(".")[0])
    return imported


def test_module_is_self_contained():
    # crf_decoding relatively only: in a model folder and in the project alike
    assert imported_modules(modeling_crf.__file__) == {
        "copy", "dataclasses", "torch", "torchcrf", "transformers", ".crf_decoding"}
    assert imported_modules(crf_decoding.__file__) == {"torch"}
    from transformers.dynamic_module_utils import get_imports, get_relative_imports

    assert get_relative_imports(modeling_crf.__file__) == ["crf_decoding"]
    assert "crf_decoding" not in get_imports(modeling_crf.__file__)


# --- multi-span decoding ---------------------------------------------------------------------------------------------


def valid_bio_paths(length, context):
    """Every BIO path of `length` tags with B and I only where `context` allows and I only after B or I."""
    for tags in itertools.product((O, B, I), repeat=length):
        if all(t == O or context[i] for i, t in enumerate(tags)) and all(
                t != I or (i and tags[i - 1] != O) for i, t in enumerate(tags)):
            yield list(tags)


def whole_span(tags, i, j):
    """Whether tokens i..j are one whole span of `tags`: B, then I up to j, and no I after j."""
    return tags[i] == B and all(t == I for t in tags[i + 1 : j + 1]) and (j + 1 == len(tags) or tags[j + 1] != I)


def multi_span_case(trial, batch=6, seq=7):
    """(model, emissions, mask, context, lengths) of a small random CRF with pieces of context and padding."""
    model = tiny_model()
    randomize_crf(model, scale=2.0, seed=700 + trial)
    generator = torch.Generator().manual_seed(trial)
    lengths = torch.randint(1, seq + 1, (batch,), generator=generator).tolist()
    lengths[0] = seq
    mask = length_mask(lengths, seq)
    emissions = torch.randn(batch, seq, 3, generator=generator) * 2
    context = (torch.rand(batch, seq, generator=generator) < 0.75) & mask
    context[:, 0] = False
    return model, emissions, mask, context, lengths


def test_kbest_paths_are_the_k_best_valid_bio_paths_by_enumeration():
    """The k best paths with any number of spans are exactly the k best valid BIO paths of an enumeration, in order,
    with their float64 scores (k above and below the number of valid paths: -inf and all O past them)."""
    for trial in range(4):
        model, emissions, mask, context, lengths = multi_span_case(trial)
        parameters = [value.double() for value in crf_params(model)]
        for k in (1, 4, 30):
            tags, scores = crf_decoding.crf_kbest_paths(emissions.double(), mask, context, *parameters, k)
            assert tags.shape == (len(lengths), k, emissions.shape[1]) and scores.shape == (len(lengths), k)
            for b, length in enumerate(lengths):
                em = emissions[b].double().numpy()
                numpy_parameters = [value.numpy() for value in parameters]
                exact = sorted((path_score(em, path, *numpy_parameters) for path in
                                valid_bio_paths(length, context[b].tolist())), reverse=True)[:k]
                found = int(torch.isfinite(scores[b]).sum())
                assert found == len(exact), (trial, k, b)
                assert scores[b, :found].tolist() == pytest.approx(exact, abs=1e-9)
                for path, score in zip(tags[b, :found], scores[b, :found]):
                    assert path[length:].eq(O).all()
                    assert path_score(em, path[:length].tolist(), *numpy_parameters) == pytest.approx(float(score))
                assert tags[b, found:].eq(O).all()


def test_kbest_paths_skip_no_path_the_list_viterbi_over_every_position_finds():
    """On windows too long to enumerate, the search that steps only where the k best paths can differ finds what the
    list Viterbi through every position finds: random emissions (paths differing anywhere), a trained model's kind
    (O far ahead, a few span-like stretches), integer ones (many paths of equal score: the same scores, any of the
    tied paths), padding, and k from 1 to more than the paths a short window has."""
    generator = torch.Generator().manual_seed(11)
    for trial in range(6):
        batch, seq = 6, (384, 160, 40, 12, 384, 60)[trial]
        emissions = torch.randn(batch, seq, 3, generator=generator, dtype=torch.float64)
        if trial == 1:
            emissions[:, :, O] += 6.0
            emissions[:, 50:54, B] += 9.0
            emissions[:, 51:60, I] += 9.0
        if trial in (2, 3):
            emissions = emissions.round()
        lengths = torch.randint(1, seq + 1, (batch,), generator=generator)
        lengths[0] = seq
        mask = length_mask(lengths.tolist(), seq)
        context = (torch.rand(batch, seq, generator=generator) < 0.8) & mask
        context[:, :3] = False
        parameters = [torch.randn(shape, generator=generator, dtype=torch.float64).round(decimals=trial % 2)
                      for shape in ((3,), (3,), (3, 3))]
        for k in (1, 5, 21):
            tags, scores = crf_decoding.crf_kbest_paths(emissions, mask, context, *parameters, k)
            every_tags, every_scores = crf_reference.crf_kbest_paths_every_position(
                emissions, mask, context, *parameters, k)
            assert torch.equal(torch.isfinite(scores), torch.isfinite(every_scores)), (trial, k)
            found = torch.isfinite(scores)
            assert scores[found].tolist() == pytest.approx(every_scores[found].tolist(), abs=1e-9), (trial, k)
            rescored = crf_decoding.crf_path_scores(emissions.repeat_interleave(k, 0), tags.view(-1, seq),
                                                    mask.repeat_interleave(k, 0), *parameters).view(batch, k)
            assert rescored[found].tolist() == pytest.approx(scores[found].tolist(), rel=1e-12)
            for b in range(batch):  # k different valid paths
                paths = {tuple(path) for path in tags[b, found[b]].tolist()}
                assert len(paths) == int(found[b].sum())
                assert all(t == O or (context[b, i] and (t == B or path[i - 1] != O))
                           for path in paths for i, t in enumerate(path))
            if trial not in (2, 3):
                assert torch.equal(tags[found], every_tags[found]), (trial, k)


def test_multi_span_decoding_gives_paths_with_spans_their_probabilities_and_span_marginals():
    """`crf_decode_multi_spans`: the k most probable valid paths with at least one span (the all-O path left out, its
    log-probability the null score), log P(path) against log Z by enumeration, each span listed under its path with
    its marginal P(whole span) over every path."""
    model, emissions, mask, context, lengths = multi_span_case(9)
    start, end, trans = crf_params(model)
    forward_backward = crf_decoding.crf_forward_backward(emissions, mask, start, end, trans)
    k = 5
    span_start, span_end, span_score, span_path, path_scores, null_score = crf_decoding.crf_decode_multi_spans(
        emissions, mask, context, start, end, trans, k, forward_backward)
    parameters = [value.double().numpy() for value in (start, end, trans)]
    for b, length in enumerate(lengths):
        em = emissions[b].double().numpy()
        log_z = brute_log_z(em, length, *parameters)
        every_path = list(itertools.product((O, B, I), repeat=length))
        scored = sorted(((path_score(em, list(p), *parameters), list(p)) for p in
                         valid_bio_paths(length, context[b].tolist()) if any(p)), key=lambda x: -x[0])[:k]
        found = int(torch.isfinite(path_scores[b]).sum())
        assert found == len(scored)
        assert path_scores[b, :found].tolist() == pytest.approx([s - log_z for s, _ in scored], abs=1e-4)
        assert float(null_score[b]) == pytest.approx(path_score(em, [O] * length, *parameters) - log_z, abs=1e-4)
        listed = span_path[b] >= 0
        for p, (_, tags) in enumerate(scored):
            mine = listed & (span_path[b] == p)
            spans = list(zip(span_start[b, mine].tolist(), span_end[b, mine].tolist()))
            assert spans == [(i, j) for i in range(length) for j in range(i, length) if whole_span(tags, i, j)]
            for (i, j), log_marginal in zip(spans, span_score[b, mine].tolist()):
                having = [path_score(em, list(q), *parameters) for q in every_path if whole_span(q, i, j)]
                assert log_marginal == pytest.approx(float(torch.tensor(having).logsumexp(0)) - log_z, abs=1e-4)
        assert (span_path[b, ~listed] == -1).all() and torch.isinf(span_score[b, ~listed]).all()


def test_a_multi_span_model_decodes_in_eval_mode_and_keeps_the_setting_when_saved(tmp_path):
    model = tiny_model(multi_span=True, n_best_size=3)
    randomize_crf(model, seed=8)
    model.eval()
    input_ids = torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(8))
    attention_mask = length_mask([9, 7], 9).long()
    context_mask = torch.zeros(2, 9, dtype=torch.bool)
    context_mask[:, 3:8] = True
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, context_mask=context_mask)
    assert out.path_score.shape == (2, 3) and out.null_score.shape == (2,)
    listed = out.span_path >= 0
    inside = (out.span_start >= 3) & (out.span_end < 8) & (out.span_end < attention_mask.sum(1, keepdim=True))
    assert inside[listed].all()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path, trust_remote_code=True).multi_span is True


def test_a_path_log_probability_never_exceeds_zero():
    """log Z from float32 recursions can fall a hair below a sure path's float64 score: log P is cut at 0."""
    scores = torch.tensor([[1.00004, -2.0, float("-inf")]], dtype=torch.float64)
    paths, null = crf_decoding.path_log_probabilities(scores, torch.tensor([-3.0], dtype=torch.float64),
                                                      torch.tensor([1.0]))
    assert paths.tolist() == [[0.0, -3.0, float("-inf")]] and null.tolist() == [-4.0]
