#!/usr/bin/env python
"""Where a training run's memory goes: the peak RSS of `run_qa.py --do_train` taken apart.

Each variant is a fresh process running the training command users run (`run_qa.py` or `run_qa_crf.py --do_train`
on the train subset, MiniLM-L6-H384 by default, batch 8, max_seq_length 384, doc_stride 128, the package's
defaults: each batch padded to its longest window rounded up to 32 tokens, length-grouped batches; `--max_steps`
steps, by default one epoch; nothing saved). While `Trainer.train` runs, a thread samples every 20 ms the RSS and
glibc's count of the bytes the C heap has handed out and not taken back (`mallinfo2`: `uordblks + hblkhd`, tensors
included: torch allocates CPU tensors with malloc).
The peak RSS is then split into:

* the process before training: libraries, windows, the model's weights (RSS when `train` starts);
* the optimizer's state (AdamW: two float32 tensors per parameter; read from the optimizer after training);
* the step at the peak: activations kept for the backward pass, gradients and temporaries (heap in use at the peak
  minus heap in use before training minus the optimizer's state);
* freed memory the allocator keeps: RSS at the peak minus heap in use at the peak minus the memory outside the heap
  before training (code, Python's own arenas), i.e. freed heap pages glibc has not handed back to the OS.

The parameters and gradients are printed for scale (the weights are part of "before training"; gradients, freed and
reallocated each step, part of the step). `--variant NAME=WORDS` adds a run with more run_qa.py flags (for example
`--variant "longest=--pad_to_multiple_of 1"`, each batch padded to its longest window); its words shaped
`NAME=value` set environment variables instead (`--variant arena2=MALLOC_ARENA_MAX=2`).

    python bench/bench_train_memory.py                   # one epoch of the train subset: about 9 minutes a variant
    python bench/bench_train_memory.py --max_steps 150
    python bench/bench_train_memory.py --tiny --repeats 1 --model TINY_MODEL_DIR --train_file data/sample/train-v2.0.json
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

from bench_eval_memory import SCRIPTS  # noqa: E402

BATCH = 8
MIB = 2**20
ENV_WORD = re.compile(r"[A-Z][A-Z0-9_]*=")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_in_use_function():
    """A function returning the C heap's bytes in use (glibc >= 2.33), or None where there is no mallinfo2."""
    mallinfo2 = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2", None) if os.name == "posix" else None
    if mallinfo2 is None:
        return None
    mallinfo2.restype = MallInfo2

    def in_use():
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


class MemorySampler:
    """Samples (RSS, heap in use) every `interval` s on a thread between `start` and `stop`."""

    def __init__(self, heap_in_use, interval=0.02):
        self.heap_in_use, self.interval = heap_in_use, interval
        self.samples, self.running = [], False

    def sample(self):
        return common.rss_mib() * MIB, self.heap_in_use() if self.heap_in_use else 0

    def start(self):
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while self.running:
            self.samples.append(self.sample())
            time.sleep(self.interval)

    def stop(self):
        self.running = False
        self.thread.join()
        self.samples.append(self.sample())  # at least one sample, however short the run


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def child(report_path, head_name, argv):
    """Run the training command in this process with the sampler around `Trainer.train`; write the figures."""
    from bench_train import head_for

    import qa_runner
    from trainer_qa import QuestionAnsweringTrainer

    sampler = MemorySampler(heap_in_use_function())
    figures = {}
    train = QuestionAnsweringTrainer.train

    def measured_train(trainer, *args, **kwargs):
        figures["rss_before"], figures["heap_before"] = sampler.sample()
        common.reset_peak_rss()
        started = time.perf_counter()
        sampler.start()
        try:
            return train(trainer, *args, **kwargs)
        finally:
            sampler.stop()
            figures["rss_after"] = sampler.samples[-1][0]
            figures["peak_rss"] = common.peak_rss_mib() * MIB
            params = list(trainer.model.parameters())
            figures["parameters"] = tensor_bytes(params)
            figures["gradients"] = tensor_bytes(p for p in params if p.requires_grad)
            figures["optimizer"] = tensor_bytes(value for state in trainer.optimizer.state.values()
                                                for value in state.values() if hasattr(value, "numel"))
            figures["steps"], figures["seconds"] = trainer.state.global_step, time.perf_counter() - started

    QuestionAnsweringTrainer.train = measured_train
    qa_runner.main(head_for(head_name), argv)
    rss, heap = max(sampler.samples)  # the sample with the highest RSS
    figures.update(sampled_peak_rss=rss, heap_at_peak=heap, heap_measured=sampler.heap_in_use is not None)
    Path(report_path).write_text(json.dumps(figures))


def training_command(args, head, extra_flags, output_dir, report):
    return [sys.executable, str(Path(__file__).resolve()), "--child_report", report, "--child_head", head, "--",
            "--model_name_or_path", args.model, "--train_file", args.train_file, "--version_2_with_negative",
            "--do_train", "--per_device_train_batch_size", str(BATCH), "--output_dir", output_dir, "--save_strategy", "no",
            "--report_to", "none", "--disable_tqdm", "true", "--seed", str(args.seed),
            *(["--max_steps", str(args.max_steps)] if args.max_steps else ["--num_train_epochs", "1"]), *extra_flags]


def run_variant(args, head, flags, env):
    """The child's figures (bytes) for one fresh training process."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        command = training_command(args, head, flags, os.path.join(tmp, "out"), report)
        threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
        done = subprocess.run(command, cwd=common.ROOT, env={**os.environ, **threads, **env}, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: {shlex.join(command)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        return json.loads(Path(report).read_text())


def breakdown_rows(figures):
    """(part, MiB) rows adding up to the peak RSS."""
    outside_heap = figures["rss_before"] - figures["heap_before"]
    step = figures["heap_at_peak"] - figures["heap_before"] - figures["optimizer"]
    kept = figures["sampled_peak_rss"] - figures["heap_at_peak"] - outside_heap
    rows = [("process before training (libraries, windows, weights)", figures["rss_before"]),
            ("optimizer state", figures["optimizer"])]
    if figures["heap_measured"]:
        rows += [("the step at the peak: activations, gradients, temporaries", step),
                 ("freed memory the allocator keeps", kept)]
    rows += [("peak RSS, sampled (the sum of the above)", figures["sampled_peak_rss"]),
             ("peak RSS, the kernel's high-water mark", figures["peak_rss"]),
             ("for scale: parameters / gradients", (figures["parameters"], figures["gradients"])),
             ("RSS when `train` has returned (what evaluation and saving start from)", figures["rss_after"])]
    return [(part, " / ".join(f"{v / MIB:.0f}" for v in value) if isinstance(value, tuple) else f"{value / MIB:.0f}")
            for part, value in rows]


def parse_variant(text):
    """`NAME=WORDS`: (name, run_qa.py flags, environment variables: the words shaped `NAME=value`)."""
    name, _, rest = text.partition("=")
    words = shlex.split(rest)
    env = dict(word.split("=", 1) for word in words if ENV_WORD.match(word))
    return name, [word for word in words if not ENV_WORD.match(word)], env


def variant_text(flags, env):
    return shlex.join([*(f"{key}={value}" for key, value in env.items()), *flags])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child_report":
        _, report, _, head, _, *run_args = argv
        return child(report, head, run_args)
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--model", default=None, help="encoder or QA checkpoint folder (default: MiniLM-L6-H384)")
    parser.add_argument("--head", choices=tuple(SCRIPTS), default="span")
    parser.add_argument("--train_file", default=None, help="SQuAD JSON (default: the train subset in --data_dir)")
    parser.add_argument("--max_steps", type=int, default=None, help="steps (default: one epoch)")
    parser.add_argument("--variant", action="append", default=[], type=parse_variant,
                        help="NAME=WORDS: another run with these run_qa.py flags and NAME=value variables")
    parser.add_argument("--tiny", action="store_true", help="smoke size: 4 steps")
    parser.set_defaults(repeats=1)  # a run is minutes, and a peak is no timing to take the median of
    args = parser.parse_args(argv)
    args.model = args.model or common.minilm_path()
    args.train_file = common.data_file(args, args.train_file, common.TRAIN_NAME)
    if args.tiny:
        args.max_steps = 4
    variants = [("package defaults", [], {}), *args.variant]
    results = {name: [] for name, _, _ in variants}
    for _ in range(args.repeats):  # variants alternate within each round, sharing the machine's conditions
        for name, flags, env in variants:
            results[name].append(run_variant(args, args.head, flags, env))

    def windows_per_s(figures):
        return figures["steps"] * BATCH / figures["seconds"]

    tables = [("Every run, in the order they ran", ("round", "variant", "windows/s", "peak RSS (MiB)"),
               [(str(round_ + 1), name, f"{windows_per_s(results[name][round_]):.2f}",
                 f"{results[name][round_]['peak_rss'] / MIB:.0f}")
                for round_ in range(args.repeats) for name, _, _ in variants])]
    for name, flags, env in variants:
        figures = min(results[name], key=lambda f: f["peak_rss"])  # the least noisy: the allocator only adds
        caption = (f"{SCRIPTS[args.head]} --do_train, {name}{': ' + variant_text(flags, env) if flags or env else ''}"
                   f" ({figures['steps']} steps of {BATCH} windows, {windows_per_s(figures):.2f} windows/s; MiB)")
        tables.append((caption, ("part", "MiB"), breakdown_rows(figures)))
    common.print_report(
        "Training memory", tables,
        notes=[f"model: {'MiniLM-L6-H384' if args.model == common.minilm_path() else args.model}; data: "
               f"{Path(args.train_file).name}",
               "heap in use from glibc's mallinfo2, sampled every 20 ms; peak RSS from VmHWM",
               f"of {args.repeats} run(s) per variant, the one with the lowest peak"],
    )


if __name__ == "__main__":
    main()
