#!/usr/bin/env python
"""Training throughput: dynamic padding with length-grouped batches against static padding to max_seq_length.

Both variants train the same model (MiniLM-L6-H384 by default, max_seq_length 384, doc_stride 128, batch 8) for the
same number of optimizer steps (`--steps`) on windows of the real SQuAD v2 train subset, from the same weights and
seed:

* dynamic (the package default): windows tokenized without padding, `WindowCollator` pads each batch to its longest
  window rounded up to a multiple of 32 tokens (`qa_arguments.TRAIN_PAD_MULTIPLE`),
  `train_sampling_strategy="group_by_length"` (the Trainer's `LengthGroupedSampler` over the windows' `length`
  column) so that a batch holds windows of similar length;
* static: windows padded to 384 when tokenized (`--pad_to_max_length`), random sampling;
* with `--bf16`, also dynamic in bf16 autocast (`--bf16`, with `--use_cpu` on a machine without a GPU), which CPUs
  with AMX or AVX512-BF16 run faster than float32.

Both take the TrainingArguments defaults qa_runner applies (`qa_arguments.TRAINING_DEFAULTS`), the static variant with
`train_sampling_strategy="random"` instead.

It is driven through the package's own pieces rather than a hand-written loop: the windows come from
`utils_qa.train_features`, the model from the run script's `Head.load_model`, and training is
`trainer_qa.QuestionAnsweringTrainer.train()` with the collator and `TrainingArguments` that qa_runner passes
(defaults of run_qa.py: AdamW, lr 5e-5, linear schedule). So the figures include everything a real run pays per
step (sampler, collator, optimizer, scheduler, the Trainer's bookkeeping), not only forward + backward; a thin loop
would miss exactly the overheads a user sees. Nothing is saved or logged during the timed steps. A callback takes
the time from the start of the first step to the end of the last; windows/s = steps x batch / that time. A thin
subclass of the collator records each batch's padded width (a shape read, nothing else).

Also timed: one epoch's index order from the Trainer's `LengthGroupedSampler` as the Trainer builds it (lengths =
`dataset["length"]`, a lazy datasets Column read one row at a time) against the same sampler given a plain list.

    python bench/bench_train.py                         # 30 steps on the train subset (heavy: minutes of CPU)
    python bench/bench_train.py --tiny --repeats 1 --model TINY_MODEL_DIR --train_file data/sample/train-v2.0.json
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)


def head_for(name):
    if name == "crf":
        from run_qa_crf import CRF_HEAD

        return CRF_HEAD
    from run_qa import SPAN_HEAD

    return SPAN_HEAD


def package_defaults(**overrides):
    """The TrainingArguments defaults qa_runner sets where the command line leaves them (group_by_length, ...)."""
    from qa_arguments import TRAINING_DEFAULTS

    return {**TRAINING_DEFAULTS, **overrides}


def load_model(head, model_path):
    from qa_arguments import ModelArguments

    hub_kwargs = {"cache_dir": None, "revision": "main", "token": None, "trust_remote_code": False}
    # run_qa.py's default data arguments: the head decodes as evaluation does by default
    model, _ = head.load_model(ModelArguments(model_name_or_path=model_path), common.qa_data_args(), hub_kwargs)
    return model


def make_trainer_parts():
    """A timing callback and a width-recording WindowCollator subclass (defined here: transformers imports late)."""
    from transformers import TrainerCallback

    from model_folder.qa_windows import WindowCollator

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.first = self.last = None
            self.steps = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.first is None:
                self.first = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.last = time.perf_counter()
            self.steps += 1

    class WidthRecordingCollator(WindowCollator):
        widths: list

        def __call__(self, features):
            batch = super().__call__(features)
            self.widths.append(batch["input_ids"].shape[1])
            return batch

    return StepTimer, WidthRecordingCollator


def train_once(head, model_path, tokenizer, windows, sampling, bf16, args, output_dir, steps=None):
    """(seconds of the steps, steps run, padded widths of the batches) of one training run."""
    import torch
    from transformers import PrinterCallback, set_seed

    from qa_arguments import TRAIN_PAD_MULTIPLE, QATrainingArguments
    from trainer_qa import QuestionAnsweringTrainer

    StepTimer, WidthRecordingCollator = make_trainer_parts()
    set_seed(args.seed)
    model = load_model(head, model_path)
    training_args = QATrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch, max_steps=steps or args.steps, seed=args.seed,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        **package_defaults(train_sampling_strategy=sampling),
        **({"bf16": True, "use_cpu": not torch.cuda.is_available()} if bf16 else {}),
    )
    collator = WidthRecordingCollator(tokenizer.pad_token_id, TRAIN_PAD_MULTIPLE)
    collator.widths = []
    timer = StepTimer()
    trainer = QuestionAnsweringTrainer(
        model=model, args=training_args, train_dataset=windows, processing_class=tokenizer, data_collator=collator,
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)  # disable_tqdm's printer would print the final metrics dict
    trainer.train()
    return timer.last - timer.first, timer.steps, collator.widths


def sampler_timings(windows, batch, repeats, seed):
    """Median seconds of one epoch's order from LengthGroupedSampler with the Column the Trainer passes vs a list."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    def order(lengths):
        def run():
            return list(LengthGroupedSampler(batch, lengths=lengths, generator=torch.Generator().manual_seed(seed)))
        return run

    column = windows["length"]
    variants = [("column", order(column)), ("list", order(column[:]))]
    seconds, results = common.interleaved(variants, repeats)
    assert results["column"] == results["list"]
    return {name: common.median(values) for name, values in seconds.items()}


def main(argv=None):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--model", default=None, help="encoder or QA checkpoint folder (default: MiniLM-L6-H384)")
    parser.add_argument("--head", choices=("span", "crf"), default="span", help="run_qa.py's model or run_qa_crf.py's")
    parser.add_argument("--train_file", default=None, help="SQuAD v2 JSON (default: the train subset in --data_dir)")
    parser.add_argument("--max_train_samples", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 30; --tiny: 3)")
    parser.add_argument("--batch", type=int, default=8, help="per-device train batch size")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--tiny", action="store_true", help="smoke size: 3 steps on the first 50 questions")
    parser.add_argument("--bf16", action="store_true", help="also time the dynamic variant in bf16 autocast")
    args = parser.parse_args(argv)
    args.steps = args.steps or (3 if args.tiny else 30)
    common.set_threads(args)
    common.quiet_libraries()
    from transformers import AutoTokenizer

    head = head_for(args.head)
    model_path = args.model or common.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    limit = 50 if args.tiny and args.max_train_samples is None else args.max_train_samples
    questions = common.load_questions(common.data_file(args, args.train_file, common.TRAIN_NAME), limit)
    windows = {}
    for name, pad in (("dynamic", False), ("static", True)):
        data_args = common.qa_data_args(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride,
                                        pad_to_max_length=pad)
        windows[name] = common.build_windows(questions, tokenizer, data_args, "train", head.label_scheme)

    # variant: (windows, sampling, bf16, label)
    variants = {
        "dynamic": ("dynamic", "group_by_length", False, "dynamic padding (to 32) + group_by_length (package default)"),
        "bf16": ("dynamic", "group_by_length", True, "the same in bf16 autocast (`--bf16`)"),
        "static": ("static", "random", False, f"static padding to {args.max_seq_length} + random sampling"),
    }
    if not args.bf16:
        del variants["bf16"]
    seconds = {name: [] for name in variants}
    widths, steps = {}, {}

    def train_variant(name, output_dir, **kwargs):
        windows_name, sampling, bf16, _ = variants[name]
        return train_once(head, model_path, tokenizer, windows[windows_name], sampling, bf16, args, output_dir, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:  # untimed warm-up: first-call costs of the process
            train_variant(name, os.path.join(tmp, name), steps=min(2, args.steps))
        for _ in range(args.repeats):
            for name in variants:
                elapsed, steps[name], widths[name] = train_variant(name, os.path.join(tmp, name))
                seconds[name].append(elapsed)
    sampler = sampler_timings(windows["dynamic"], args.batch, args.repeats, args.seed)

    med = {name: common.median(values) for name, values in seconds.items()}
    rate = {name: steps[name] * args.batch / med[name] for name in med}
    real_length = sum(windows["dynamic"]["length"][:]) / len(windows["dynamic"])
    rows = []
    for name, (_, _, _, label) in variants.items():
        mean_width = sum(widths[name]) / len(widths[name])
        rows.append((label, steps[name], f"{mean_width:.0f}", f"{med[name]:.2f}", common.runs_text(seconds[name], 2),
                     f"{rate[name]:.2f}", f"{common.ratio(rate[name], rate['static']):.2f}"))
    model_name = "MiniLM-L6-H384" if args.model is None else args.model
    common.print_report(
        f"Training throughput ({args.head} head)",
        [
            (f"{model_name}, batch {args.batch}, max_seq_length {args.max_seq_length} "
             "(ratio = windows/s / static windows/s)",
             ("variant", "steps", "mean batch width", "median s", "runs s", "windows/s", "ratio"), rows),
            ("Data", ("", ""), [
                ("questions / training windows", f"{len(questions)} / {len(windows['dynamic'])}"),
                ("mean real window length (tokens)", f"{real_length:.0f}"),
            ]),
            ("One epoch's order from LengthGroupedSampler (median s)", ("lengths given as", "s"), [
                ("datasets Column, as the Trainer passes `dataset['length']`", f"{sampler['column']:.4f}"),
                ("list (`dataset['length'][:]`)", f"{sampler['list']:.4f}"),
            ]),
        ],
        notes=["time from the start of the first step to the end of the last (model load and Trainer setup "
               "excluded); each variant first trains 2 steps untimed to warm the process up",
               f"each run starts from the same weights and seed {args.seed}; mean batch width is the padded width the "
               "collator produced"],
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
