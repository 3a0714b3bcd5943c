#!/usr/bin/env python
"""CRF costs: constrained span decoding against pytorch-crf's Viterbi, and a CRF training step against a span model's.

1. Decoding, batch 32 x 384, 3 tags, random N(0, 1) emissions (fixed seed), a full attention mask and a context
   mask covering positions 16..382 (a 14-token question between [CLS] and [SEP], the final [SEP] excluded):
   `CrfForQuestionAnswering.decode_nbest_spans` with n_best_size 20, what evaluation runs (the exact 20 best
   single-span paths, searched on float64 terms, each rescored in float64, plus a parallel-scan log Z and the all-O
   score), and `crf_reference.decode_best_spans` (the same for the best path only), against `model.crf.decode`
   (pytorch-crf's Viterbi, whose backtracking is a Python loop per sequence). The 20-best search alone
   (`crf_decoding.crf_kbest_single_spans`) and the closed-form best-path search
   (`crf_reference.crf_decode_single_span`, float32 prefix maxima) are timed too, and what the eval-mode forward
   runs after the forward-backward it shares with the boundary logits: the single-span decoding with log Z given,
   against a multi-span model's decoding (`crf_decoding.crf_decode_multi_spans`: the 20 most probable valid paths
   with any number of spans, with each span's marginal), and the same for 1 path; its search for the 21 best paths
   alone (`crf_decoding.crf_kbest_paths`, stepping only where they can differ) against the list Viterbi through every
   position (`crf_reference.crf_kbest_paths_every_position`).
2. Agreement where no constraint binds: emissions are built so that the unconstrained best path is one `B I*` span
   inside the context (strong emissions, +8 on the chosen tag of every token, over N(0, 0.5) noise); the script
   checks that `crf.decode` returns that path, that `decode_best_spans` returns its span, and that its `span_score`
   equals the log-likelihood of that path (up to float32 rounding: 1e-5 of the path's score, which sums ~seq
   emissions of about 8), and that `decode_nbest_spans`' 20 spans start with that span, with the same score, and
   are in order.
3. Training step (forward + backward, dropout on, no optimizer step) at batch 8 x 384 with MiniLM-L6-H384's config
   and random weights: `CrfForQuestionAnswering` (BIO labels, CRF negative log-likelihood) against
   `BertForQuestionAnswering` (start/end positions). The CRF head is also timed alone on the same emissions: the
   loss as `forward` computes it in training (forward-backward for the boundary marginals, then the gold path
   score) and the loss from the forward recursion alone (`crf_reference.log_likelihood`).

    python bench/bench_crf_decode.py
    python bench/bench_crf_decode.py --tiny --repeats 1
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

import torch  # noqa: E402

QUESTION_TOKENS = 14


def context_mask_for(batch, seq):
    """True on positions 2 + QUESTION_TOKENS .. seq - 2: [CLS] question [SEP] context [SEP]."""
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    first = min(2 + QUESTION_TOKENS, seq // 4)
    mask[:, first : seq - 1] = True
    return mask


def single_span_emissions(batch, seq, context_mask, generator, max_span=30, strength=8.0):
    """(emissions, tags, spans): emissions whose best path (small transitions) is `tags`, one B I* in the context."""
    emissions = 0.5 * torch.randn(batch, seq, 3, generator=generator)
    tags = torch.zeros(batch, seq, dtype=torch.long)
    spans = []
    for b in range(batch):
        allowed = torch.nonzero(context_mask[b]).flatten()
        first, last = int(allowed[0]), int(allowed[-1])
        length = int(torch.randint(1, min(max_span, last - first + 1) + 1, (1,), generator=generator))
        start = int(torch.randint(first, last - length + 2, (1,), generator=generator))
        end = start + length - 1
        tags[b, start] = 1
        tags[b, start + 1 : end + 1] = 2
        spans.append((start, end))
    emissions.scatter_add_(2, tags.unsqueeze(2), torch.full((batch, seq, 1), strength))
    return emissions, tags, spans


def agreement(model, batch, seq, seed):
    """Rows of the no-binding-constraint check."""
    from model_folder.crf_decoding import crf_path_scores
    from tests.crf_reference import decode_best_spans, log_likelihood

    generator = torch.Generator().manual_seed(seed + 1)
    context_mask = context_mask_for(batch, seq)
    attention_mask = torch.ones(batch, seq, dtype=torch.bool)
    emissions, tags, spans = single_span_emissions(batch, seq, context_mask, generator)
    with torch.no_grad():
        paths = model.crf.decode(emissions, attention_mask)
        span_start, span_end, span_score, _ = decode_best_spans(model, emissions, attention_mask, context_mask)
        nbest_start, nbest_end, nbest_score, _ = model.decode_nbest_spans(emissions, attention_mask, context_mask,
                                                                          n_best_size=20)
        likelihood = log_likelihood(model, emissions, tags, attention_mask)
        path_score = crf_path_scores(emissions, tags, attention_mask, *model._crf_parameters())
    same_path = sum(path == row.tolist() for path, row in zip(paths, tags))
    same_span = sum((int(s), int(e)) == span for s, e, span in zip(span_start, span_end, spans))
    same_first = sum((int(s), int(e)) == span for s, e, span in zip(nbest_start[:, 0], nbest_end[:, 0], spans))
    ordered = bool((nbest_score[:, 1:] <= nbest_score[:, :-1]).all()) and torch.equal(nbest_score[:, 0], span_score)
    # Both sides sum ~seq float32 terms in different orders: allow float32 rounding relative to the path's score.
    relative = float(((span_score - likelihood).abs() / path_score.abs()).max())
    if same_path != batch or same_span != batch or same_first != batch or not ordered or relative > 1e-5:
        raise SystemExit(f"error: decode_best_spans disagrees with crf.decode where no constraint binds "
                         f"(paths {same_path}/{batch}, spans {same_span}/{batch}, first of 20 {same_first}/{batch}, "
                         f"20 best in order with the best's score {ordered}, relative score diff {relative:.2e})")
    return [
        ("crf.decode path = the constructed single-span path", f"{same_path} / {batch}"),
        ("decode_best_spans span = that path's span", f"{same_span} / {batch}"),
        ("decode_nbest_spans (20) first span = that path's span", f"{same_first} / {batch}"),
        ("max abs(span_score - log-likelihood of that path) / abs(path score)", f"{relative:.1e}"),
    ]


def decode_timings(model, batch, seq, repeats, seed, n_best=20):
    from model_folder.crf_decoding import (crf_decode_multi_spans, crf_decode_nbest_spans, crf_forward_backward, crf_kbest_paths,
                              crf_kbest_single_spans)
    from tests.crf_reference import crf_decode_single_span, crf_kbest_paths_every_position, decode_best_spans

    generator = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, seq, 3, generator=generator)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    context_mask = context_mask_for(batch, seq)
    mask = attention_mask.bool()
    start, end, trans = model._crf_parameters()

    def decode_nbest():
        with torch.no_grad():
            return model.decode_nbest_spans(emissions, attention_mask, context_mask, n_best_size=n_best)

    def decode_best():
        with torch.no_grad():
            return decode_best_spans(model, emissions, attention_mask, context_mask)

    emissions64, start64, end64, trans64 = (value.double() for value in (emissions, start, end, trans))

    def kbest_only():
        with torch.no_grad():
            return crf_kbest_single_spans(emissions64, mask, context_mask, start64, end64, trans64, n_best)

    def viterbi_only():
        with torch.no_grad():
            return crf_decode_single_span(emissions, mask, context_mask, start, end, trans)

    def crf_decode():
        with torch.no_grad():
            return model.crf.decode(emissions, mask)

    # What the eval-mode forward runs after the forward-backward it shares with the boundary logits: the single-span
    # decoding given log Z, and a multi-span model's decoding given the recursions.
    with torch.no_grad():
        forward_backward = crf_forward_backward(emissions, mask, start, end, trans)

    def single_given():
        with torch.no_grad():
            return crf_decode_nbest_spans(emissions, mask, context_mask, start, end, trans, n_best,
                                          log_z=forward_backward[2])

    def multi_span(k):
        def decode():
            with torch.no_grad():
                return crf_decode_multi_spans(emissions, mask, context_mask, start, end, trans, k, forward_backward)
        return decode

    def paths_search(search):
        def decode():
            with torch.no_grad():
                return search(emissions64, mask, context_mask, start64, end64, trans64, n_best + 1)
        return decode

    variants = [("crf.decode", crf_decode), ("decode_nbest", decode_nbest), ("kbest", kbest_only),
                ("decode_best", decode_best), ("viterbi", viterbi_only), ("single_given", single_given),
                ("multi_nbest", multi_span(n_best)), ("multi_best", multi_span(1)),
                ("paths", paths_search(crf_kbest_paths)), ("paths_every", paths_search(crf_kbest_paths_every_position))]
    seconds, _ = common.interleaved(variants, repeats, warmup=True)
    med = {name: common.median(values) for name, values in seconds.items()}
    base = med["crf.decode"]

    def row(label, name):
        return (label, f"{1000 * med[name]:.1f}", common.runs_text([1000 * v for v in seconds[name]], 1),
                f"{med[name] / base:.2f}")

    return [
        row("pytorch-crf `model.crf.decode(emissions, mask)`", "crf.decode"),
        row(f"`model.decode_nbest_spans(emissions, attention_mask, context_mask, n_best_size={n_best})` (evaluation)",
            "decode_nbest"),
        row(f"  of which the {n_best}-best search (`crf_kbest_single_spans`, float64)", "kbest"),
        row("`crf_reference.decode_best_spans(model, emissions, attention_mask, context_mask)` (the best path only)",
            "decode_best"),
        row("closed-form best-path search alone (`crf_reference.crf_decode_single_span`, float32)", "viterbi"),
        row(f"single-span decoding as the eval forward runs it, log Z given (`crf_decode_nbest_spans`, {n_best} paths)",
            "single_given"),
        row(f"multi-span decoding as the eval forward runs it, recursions given (`crf_decode_multi_spans`, {n_best} "
            f"paths: x{med['multi_nbest'] / med['single_given']:.2f} the single-span row above)", "multi_nbest"),
        row(f"  the same, 1 path (the pipeline's default: x{med['multi_best'] / med['single_given']:.2f})",
            "multi_best"),
        row(f"  of the {n_best} paths, the search for the {n_best + 1} best (`crf_kbest_paths`, float64, stepping only "
            f"where they can differ)", "paths"),
        row(f"  the same search through every position (`crf_reference.crf_kbest_paths_every_position`: "
            f"x{med['paths_every'] / med['paths']:.2f} the row above)", "paths_every"),
    ]


def bert_config(args):
    from transformers import BertConfig

    if args.tiny:
        return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                          max_position_embeddings=512)
    return BertConfig.from_pretrained(args.config or common.minilm_path())


def training_batch(config, batch, seq, generator):
    """Random token ids with a question/context split; span labels and the matching BIO tags."""
    question = min(2 + QUESTION_TOKENS, seq // 4)
    lowest_id = 1000 if config.vocab_size > 2000 else 5  # past BERT's special and unused tokens
    input_ids = torch.randint(lowest_id, config.vocab_size, (batch, seq), generator=generator)
    token_type_ids = torch.zeros(batch, seq, dtype=torch.long)
    token_type_ids[:, question:] = 1
    starts = torch.randint(question, seq - 12, (batch,), generator=generator)
    ends = starts + torch.randint(0, 10, (batch,), generator=generator)
    tags = torch.zeros(batch, seq, dtype=torch.long)
    for b in range(batch):
        tags[b, starts[b]] = 1
        tags[b, starts[b] + 1 : ends[b] + 1] = 2
    common_inputs = {"input_ids": input_ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long),
                     "token_type_ids": token_type_ids}
    return common_inputs, {"start_positions": starts, "end_positions": ends}, {"labels": tags}


def training_timings(args, batch, seq):
    from transformers import BertForQuestionAnswering

    from model_folder.crf_decoding import crf_boundary_logits, crf_path_scores
    from tests.crf_reference import log_likelihood
    from modeling_crf import CrfForQuestionAnswering, CrfQAConfig

    config = bert_config(args)
    torch.manual_seed(args.seed)
    span_model = BertForQuestionAnswering(config).train()
    torch.manual_seed(args.seed)
    crf_model = CrfForQuestionAnswering(CrfQAConfig(encoder=config)).train()
    inputs, span_labels, bio_labels = training_batch(config, batch, seq, torch.Generator().manual_seed(args.seed))

    def step(model, labels):
        def run():
            model.zero_grad(set_to_none=True)
            loss = model(**inputs, **labels).loss
            loss.backward()
            return float(loss.detach())
        return run

    emissions = torch.randn(batch, seq, 3, generator=torch.Generator().manual_seed(args.seed), requires_grad=True)
    tags, mask = bio_labels["labels"], inputs["attention_mask"].bool()

    def head_as_forward():
        emissions.grad = None
        crf_model.zero_grad(set_to_none=True)
        start, end, trans = crf_model._crf_parameters()
        _, _, log_z = crf_boundary_logits(emissions, mask, start, end, trans)
        loss = -(crf_path_scores(emissions, tags, mask, start, end, trans) - log_z).mean()
        loss.backward()

    def head_likelihood_only():
        emissions.grad = None
        crf_model.zero_grad(set_to_none=True)
        loss = -log_likelihood(crf_model, emissions, tags, mask).mean()
        loss.backward()

    variants = [
        ("span", step(span_model, span_labels)),
        ("crf", step(crf_model, bio_labels)),
        ("head: as forward", head_as_forward),
        ("head: likelihood only", head_likelihood_only),
    ]
    seconds, _ = common.interleaved(variants, args.repeats, warmup=True)
    med = {name: common.median(values) for name, values in seconds.items()}
    base = med["span"]

    def row(label, name):
        return (label, f"{1000 * med[name]:.1f}", common.runs_text([1000 * v for v in seconds[name]], 1),
                f"{med[name] / base:.3f}")

    return [
        row("BertForQuestionAnswering (start/end loss)", "span"),
        row("CrfForQuestionAnswering (CRF NLL)", "crf"),
        row("  CRF head alone, as forward computes it (forward-backward marginals + gold score)", "head: as forward"),
        row("  CRF head alone, forward recursion only (`crf_reference.log_likelihood`)", "head: likelihood only"),
    ]


def main(argv=None):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]), data=False)
    parser.add_argument("--batch", type=int, default=None, help="decoding batch (default 32; --tiny: 4)")
    parser.add_argument("--seq", type=int, default=None, help="sequence length (default 384; --tiny: 64)")
    parser.add_argument("--train_batch", type=int, default=None, help="training-step batch (default 8; --tiny: 2)")
    parser.add_argument("--config", default=None, help="encoder config folder (default: MiniLM-L6-H384's)")
    parser.add_argument("--skip_training", action="store_true", help="only the decoding figures")
    parser.add_argument("--tiny", action="store_true", help="smoke size: batch 4 x 64, a 2-layer 32-wide encoder")
    args = parser.parse_args(argv)
    common.set_threads(args)
    common.quiet_libraries()
    from modeling_crf import CrfForQuestionAnswering, CrfQAConfig
    from transformers import BertConfig

    batch = args.batch or (4 if args.tiny else 32)
    seq = args.seq or (64 if args.tiny else 384)
    train_batch = args.train_batch or (2 if args.tiny else 8)
    torch.manual_seed(args.seed)
    # The decoding only reads the CRF parameters: a small encoder keeps the model cheap to build.
    decoder = CrfForQuestionAnswering(CrfQAConfig(encoder=BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=100,
        max_position_embeddings=max(512, seq)))).eval()

    tables = [
        (f"Decoding, batch {batch} x {seq}, 3 tags, random emissions (ratio = / crf.decode)",
         ("decoder", "median ms", "runs ms", "ratio"), decode_timings(decoder, batch, seq, args.repeats, args.seed)),
        (f"Agreement where no constraint binds ({batch} x {seq})", ("check", "value"),
         agreement(decoder, batch, seq, args.seed)),
    ]
    if not args.skip_training:
        name = "tiny BERT (2 x 32)" if args.tiny else "MiniLM-L6-H384 config"
        tables.append((f"Training step, forward + backward, batch {train_batch} x {seq}, {name}, random weights "
                       "(ratio = / span model)", ("model", "median ms", "runs ms", "ratio"),
                       training_timings(args, train_batch, seq)))
    common.print_report("CRF decoding and training-step cost", tables, repeats=args.repeats,
                        notes=["each variant runs once untimed before the timed rounds"])


if __name__ == "__main__":
    main()
