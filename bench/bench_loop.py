#!/usr/bin/env python
"""The package's training and evaluation paths against a bare PyTorch loop over the same windows in the same order.

Training: windows of the train subset (`utils_qa.train_features`, max_seq_length 384, doc_stride 128), batches of 8
in the order the package's sampler gives one epoch (`EpochSeededLengthGroupedSampler`, seed 42). That order starts
with its longest batch, so `--batches` batches are taken evenly spread over the whole epoch (every k-th batch): a
sample with the epoch's mix of widths. Both variants train MiniLM's QA model from the same weights on exactly these
batches, padded by the package's `WindowCollator` as qa_runner pads training batches (to the longest window rounded
up to `qa_arguments.TRAIN_PAD_MULTIPLE` tokens), with the Trainer's default optimizer and schedule (fused AdamW,
lr 5e-5, no weight decay, linear decay to 0 over the steps, gradients clipped to norm 1):

* package: `QuestionAnsweringTrainer.train()` with qa_runner's `TrainingArguments` defaults, the batches given in
  order (the sampler's own cost, once per epoch, is timed by bench_train.py);
* bare: `for batch in batches: loss = model(**batch).loss; loss.backward(); clip; step; schedule; zero_grad`.

Evaluation: the windows of the first `--eval_questions` dev questions sorted by length (as qa_runner sorts them),
batches of 32: the package's evaluation loop (`Trainer.evaluation_loop` with the package's gathering,
`WindowOutputs`) against `torch.inference_mode()` over the same collated batches, outputs kept and put together once.

Variants alternate within each round; each first runs 2 batches untimed. Time runs from the first step's start to
the last step's end (model loading excluded); windows/s = windows / that time; ratio = package / bare. `--bf16`
adds both in bf16 autocast (`--bf16 --use_cpu` for the Trainer on a CPU). `--profile` prints the Trainer's training
run under cProfile (its own costs: functions outside the model's forward and backward).

    python bench/bench_loop.py --bf16                          # heavy: about ten minutes of CPU
    python bench/bench_loop.py --tiny --repeats 1 --model TINY_MODEL_DIR --train_file data/sample/train-v2.0.json \
        --dev_file data/sample/dev-v2.0.json
"""

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

from bench_train import head_for, load_model, package_defaults  # noqa: E402

BATCH, EVAL_BATCH = 8, 32


def epoch_sample(windows, batches, seed):
    """Window indices of `batches` batches of BATCH taken evenly from one epoch of the package's sampler."""
    from trainer_qa import EpochSeededLengthGroupedSampler

    order = list(EpochSeededLengthGroupedSampler(BATCH, windows["length"][:], seed))
    epoch = [order[i : i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]
    step = max(1, len(epoch) // batches)
    return [index for batch in epoch[::step][:batches] for index in batch], len(epoch)


def autocast(bf16):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class StepClock:
    """Seconds from the first step's start to the last step's end (a Trainer callback, or called by hand)."""

    def __init__(self):
        self.first = self.last = None

    def begin(self):
        if self.first is None:
            self.first = time.perf_counter()

    def end(self):
        self.last = time.perf_counter()

    def seconds(self):
        return self.last - self.first


def training_collator(tokenizer):
    """The collator qa_runner gives training batches by default."""
    from qa_arguments import TRAIN_PAD_MULTIPLE
    from model_folder.qa_windows import WindowCollator

    return WindowCollator(tokenizer.pad_token_id, TRAIN_PAD_MULTIPLE)


def train_package(args, head, tokenizer, windows, bf16, steps, output_dir):
    """Seconds of `steps` Trainer steps over `windows` in order."""
    import torch
    from transformers import PrinterCallback, TrainerCallback, set_seed

    from qa_arguments import QATrainingArguments
    from trainer_qa import QuestionAnsweringTrainer

    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            clock.begin()

        def on_step_end(self, *a, **k):
            clock.end()

    set_seed(args.seed)
    training_args = QATrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=BATCH, max_steps=steps, seed=args.seed, report_to="none",
        save_strategy="no", disable_tqdm=True, **package_defaults(train_sampling_strategy="sequential"),
        **({"bf16": True, "use_cpu": not torch.cuda.is_available()} if bf16 else {}),
    )
    trainer = QuestionAnsweringTrainer(
        model=load_model(head, args.model), args=training_args, train_dataset=windows, processing_class=tokenizer,
        data_collator=training_collator(tokenizer), callbacks=[Clock()],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return clock.seconds()


def train_bare(args, head, tokenizer, windows, bf16, steps, output_dir=None):
    """Seconds of `steps` plain PyTorch steps over `windows` in order, with the Trainer's default optimizer."""
    import torch
    from transformers import get_linear_schedule_with_warmup, set_seed

    set_seed(args.seed)
    model = load_model(head, args.model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0, fused=True)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, steps)
    collate = training_collator(tokenizer)
    columns = [name for name in windows.column_names if name in ("input_ids", "token_type_ids", "attention_mask",
                                                                  "start_positions", "end_positions", "labels")]
    rows = windows.select_columns(columns)
    clock = StepClock()
    for step in range(steps):
        clock.begin()
        batch = collate([rows[i] for i in range(step * BATCH, (step + 1) * BATCH)])
        with autocast(bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        clock.end()
    return clock.seconds()


def evaluation_trainer(args, head, tokenizer, bf16, output_dir):
    import torch
    from transformers import PrinterCallback

    from qa_arguments import QATrainingArguments
    from trainer_qa import QuestionAnsweringTrainer
    from model_folder.qa_windows import WindowCollator

    training_args = QATrainingArguments(
        output_dir=output_dir, per_device_eval_batch_size=EVAL_BATCH, report_to="none", disable_tqdm=True,
        **package_defaults(), **({"bf16": True, "use_cpu": not torch.cuda.is_available()} if bf16 else {}),
    )
    trainer = QuestionAnsweringTrainer(model=load_model(head, args.model), args=training_args,
                                       processing_class=tokenizer,
                                       data_collator=WindowCollator(tokenizer.pad_token_id))
    trainer.remove_callback(PrinterCallback)
    return trainer


def evaluate_package(trainer, windows, bf16):
    """Seconds of the package's evaluation loop over `windows` (forward and gathering)."""
    from trainer_qa import WindowOutputs

    trainer.window_outputs = WindowOutputs()
    start = time.perf_counter()
    trainer.evaluation_loop(trainer.get_eval_dataloader(windows), "Evaluation", prediction_loss_only=False)
    trainer.window_outputs.arrays()
    seconds = time.perf_counter() - start
    trainer.window_outputs = None
    return seconds


def evaluate_bare(trainer, windows, bf16):
    """Seconds of `torch.inference_mode()` over the same collated batches, outputs kept and put together once (the
    package's `WindowOutputs` stacking, plain numpy)."""
    import torch

    from trainer_qa import WindowOutputs

    model = trainer.model
    model.eval()
    columns = [name for name in ("input_ids", "token_type_ids", "attention_mask") if name in windows.column_names]
    rows = windows.select_columns(columns)
    start = time.perf_counter()
    outputs = WindowOutputs()
    with torch.inference_mode(), autocast(bf16):
        for first in range(0, len(rows), EVAL_BATCH):
            batch = trainer.data_collator([rows[i] for i in range(first, min(first + EVAL_BATCH, len(rows)))])
            out = model(**batch)
            outputs.add((out.start_logits, out.end_logits))
    outputs.arrays()
    return time.perf_counter() - start


def profile_text(function, top=25):
    profile = cProfile.Profile()
    profile.runcall(function)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main(argv=None):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--model", default=None, help="encoder folder (default: MiniLM-L6-H384)")
    parser.add_argument("--train_file", default=None, help="SQuAD v2 JSON (default: the train subset in --data_dir)")
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir)")
    parser.add_argument("--batches", type=int, default=None, help="training batches, spread over the epoch (48)")
    parser.add_argument("--eval_questions", type=int, default=None, help="first N dev questions (default 600)")
    parser.add_argument("--bf16", action="store_true", help="also both paths in bf16 autocast")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one package training run")
    parser.add_argument("--tiny", action="store_true", help="smoke size: 3 batches, 20 dev questions")
    args = parser.parse_args(argv)
    args.batches = args.batches or (3 if args.tiny else 48)
    args.eval_questions = args.eval_questions or (20 if args.tiny else 600)
    args.model = args.model or common.minilm_path()
    common.set_threads(args)
    common.quiet_libraries()
    from transformers import AutoTokenizer

    head = head_for("span")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data_args = common.qa_data_args(max_seq_length=384, doc_stride=128)
    train_questions = common.load_questions(common.data_file(args, args.train_file, common.TRAIN_NAME),
                                            50 if args.tiny else None)
    all_windows = common.build_windows(train_questions, tokenizer, data_args, "train", head.label_scheme)
    chosen, epoch_batches = epoch_sample(all_windows, args.batches, args.seed)
    train_windows = all_windows.select(chosen)
    eval_questions = common.load_questions(common.data_file(args, args.dev_file, common.DEV_NAME), args.eval_questions)
    eval_windows = common.build_windows(eval_questions, tokenizer, data_args, "eval")

    precisions = (False, True) if args.bf16 else (False,)
    steps = len(chosen) // BATCH
    train_seconds = {(path, bf16): [] for bf16 in precisions for path in ("package", "bare")}
    eval_seconds = {(path, bf16): [] for bf16 in precisions for path in ("package", "bare")}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {bf16: evaluation_trainer(args, head, tokenizer, bf16, tmp) for bf16 in precisions}
        train = {"package": train_package, "bare": train_bare}
        evaluate = {"package": evaluate_package, "bare": evaluate_bare}
        warm = eval_windows.select(range(min(2 * EVAL_BATCH, len(eval_windows))))
        for path, bf16 in train_seconds:  # untimed warm-up of every code path
            train[path](args, head, tokenizer, train_windows.select(range(2 * BATCH)), bf16, 2, tmp)
            evaluate[path](trainers[bf16], warm, bf16)
        for _ in range(args.repeats):
            for path, bf16 in train_seconds:
                train_seconds[path, bf16].append(train[path](args, head, tokenizer, train_windows, bf16, steps, tmp))
            for path, bf16 in eval_seconds:
                eval_seconds[path, bf16].append(evaluate[path](trainers[bf16], eval_windows, bf16))
        profile = profile_text(lambda: train_package(args, head, tokenizer, train_windows, False, steps, tmp)) \
            if args.profile else None

    def rows(seconds, windows):
        out = []
        for bf16 in precisions:
            rate = {path: windows / common.median(seconds[path, bf16]) for path in ("package", "bare")}
            for path in ("package", "bare"):
                out.append((path, "bf16 autocast" if bf16 else "float32", common.runs_text(seconds[path, bf16], 2),
                            f"{rate[path]:.2f}", f"{rate[path] / rate['bare']:.3f}"))
        return out

    header = ("path", "precision", "runs s", "windows/s", "ratio to bare")
    common.print_report(
        "The package's training and evaluation against a bare PyTorch loop",
        [
            (f"Training: {steps} batches of {BATCH} ({len(chosen)} windows) spread over one epoch of "
             f"{epoch_batches} batches ({len(all_windows)} windows of {len(train_questions)} questions)",
             header, rows(train_seconds, len(chosen))),
            (f"Evaluation forward: {len(eval_windows)} windows of {len(eval_questions)} dev questions, sorted by "
             f"length, batches of {EVAL_BATCH}", header, rows(eval_seconds, len(eval_windows))),
        ],
        notes=[f"model {'MiniLM-L6-H384' if args.model == common.minilm_path() else args.model}, span head; mean "
               f"window length {sum(train_windows['length'][:]) / len(train_windows):.0f} tokens (training sample), "
               f"{sum(all_windows['length'][:]) / len(all_windows):.0f} (whole epoch)"],
        repeats=args.repeats,
    )
    if profile:
        print("\n**cProfile of one package training run (by own time)**\n\n```\n" + profile + "```")


if __name__ == "__main__":
    main()
