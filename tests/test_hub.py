"""Sharing on the Hub end to end, against the project's loopback Hub (tests/hub_server.py): both scripts push with
--push_to_hub, every commit holds what its config names, a fresh process loads the model and its pipeline by repo
id, and a push that fails loses nothing. Every process here may reach 127.0.0.1 only (tests/loopback)."""

import json
import re
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from tests.conftest import LEARNED_QUESTIONS, LEARNED_WINDOWS, ROOT, SCRIPT_ENV, TRAIN, read_json, run_script, train_heads
from tests.hub_server import HubServer

TOKEN, USER = "hf_write_token_of_qa_user", "qa-user"
LOOPBACK = str(ROOT / "tests" / "loopback")
# Per head: how training pushes (end of training always; every save, or every save plus the last checkpoint in a
# subfolder) and whether the repo is private.
PUSHES = {"span": ("--hub_strategy", "every_save"), "crf": ("--hub_strategy", "checkpoint", "--hub_private_repo", "true")}


def hub_env(endpoint, tmp_path, **extra):
    """The environment of a process that talks to the Hub at `endpoint` only: no offline switch for the Hub, a
    fresh cache, LFS uploads (the test Hub has no Xet storage) and the loopback guard."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in SCRIPT_ENV.items() if not k.startswith(("HF_", "TRANSFORMERS_OFFLINE", "PYTHONPATH"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1",
               PYTHONPATH=LOOPBACK, LOOPBACK_LOG=str(tmp_path / "non-loopback.log"), **extra)
    return env


def assert_loopback_only(tmp_path):
    log = tmp_path / "non-loopback.log"
    assert not log.exists(), log.read_text()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub"), {TOKEN: USER}) as server:
        yield server
        assert not server.errors, server.errors


def push_args(model, out, repo, *extra):
    """A short continued training (lr 1e-6: the model keeps answering) that saves at steps 2 and 4 and pushes."""
    return ["--model_name_or_path", model, "--train_file", TRAIN, "--validation_file", TRAIN,
            "--version_2_with_negative", "--max_train_samples", LEARNED_QUESTIONS, "--max_eval_samples",
            LEARNED_QUESTIONS, "--do_train", "--do_eval", *LEARNED_WINDOWS, "--max_steps", 4, "--learning_rate", 1e-6,
            "--per_device_train_batch_size", 8, "--save_strategy", "steps", "--save_steps", 2,
            "--output_dir", out, "--report_to", "none", "--disable_tqdm", "true", "--seed", 42,
            "--push_to_hub", "--hub_model_id", repo, "--hub_token", TOKEN, *extra]


@pytest.fixture(scope="module")
def pushed(hub, learned, tmp_path_factory):
    """{head: (repo id, local output folder)} after each script continued its learned model and pushed it (both
    heads in one process, as the scripts would run them)."""
    tmp = tmp_path_factory.mktemp("push")
    runs = {head: (f"{USER}/{head}-qa", tmp / head) for head in PUSHES}
    train_heads({head: push_args(learned[head], out, repo, *PUSHES[head], "--hub_always_push")
                 for head, (repo, out) in runs.items()}, env=hub_env(hub.endpoint, tmp))
    assert_loopback_only(tmp)
    return runs


def missing_files(files):
    """What each config.json of a commit names (custom_pipelines and auto_map modules, the modules they import
    relatively, weights, tokenizer, card) that the commit lacks, as "folder: file" strings."""
    missing = []
    for config_path in (path for path in files if path.rsplit("/", 1)[-1] == "config.json"):
        folder = config_path[: -len("config.json")]
        config = json.loads(files[config_path])
        modules = [entry["impl"] for entry in config.get("custom_pipelines", {}).values()]
        modules += list(config.get("auto_map", {}).values())
        code = [f"{module.rsplit('.', 1)[0]}.py" for module in modules]
        for name in code:  # grows while relative imports are found
            source = files.get(folder + name, b"").decode()
            code += [f"{m}.py" for m in re.findall(r"^\s*from \.(\w+) import", source, re.MULTILINE) if f"{m}.py" not in code]
        needed = [*code, "model.safetensors", "tokenizer.json", "tokenizer_config.json"] + (["README.md"] if not folder else [])
        missing += [f"{folder or '/'}: {name}" for name in needed if folder + name not in files]
    return missing


@pytest.mark.parametrize("head", PUSHES)
def test_every_commit_holds_what_its_config_names(hub, pushed, head):
    repo, out = pushed[head]
    commits = hub.hub.commits(repo)[1:]  # after the .gitattributes the Hub creates a repo with
    messages = [commit["message"] for commit in commits]
    progress = [m for m in messages if m.startswith("Training in progress")]
    assert messages[-1] == "End of training" and len(progress) == (4 if head == "crf" else 2), messages
    for index in range(1, len(commits) + 1):
        files = hub.hub.files(repo, index)
        assert "config.json" in files or head == "crf", messages[index - 1]  # a checkpoint commit may come first
        assert not missing_files(files), (messages[index - 1], missing_files(files))
    final = hub.hub.files(repo)
    for name in ("model.safetensors", "config.json", "qa_pipeline.py", "README.md", "eval_predictions.json"):
        assert final[name] == (out / name).read_bytes(), name
    if head == "crf":
        assert {"modeling_crf.py", "crf_decoding.py", "last-checkpoint/model.safetensors"} <= set(final)


def test_a_checkpoint_packaged_without_training_is_pushed_as_a_model_folder(hub, learned, tmp_path):
    repo = f"{USER}/packaged-qa"
    result = run_script([sys.executable, str(ROOT / "run_qa.py"), "--model_name_or_path", str(learned["span"]),
                         "--version_2_with_negative", "--null_score_diff_threshold", "0.5", "--output_dir",
                         str(tmp_path / "out"), "--report_to", "none", "--push_to_hub", "--hub_model_id", repo,
                         "--hub_token", TOKEN], env=hub_env(hub.endpoint, tmp_path))
    assert result.returncode == 0, result.stdout[-5000:]
    assert_loopback_only(tmp_path)
    files = hub.hub.files(repo)
    assert not missing_files(files) and {"model.safetensors", "handler.py", "README.md"} <= set(files)
    assert json.loads(files["config.json"])["qa_settings"]["null_score_diff_threshold"] == 0.5
    assert "not fine-tuned here" in files["README.md"].decode()


def test_a_commit_missing_code_is_caught(hub, pushed):
    """The check above can fail: the final commit without one module its pipeline imports."""
    files = hub.hub.files(pushed["crf"][0])
    del files["span_decoding.py"]
    assert missing_files(files) == ["/: span_decoding.py"]


def test_private_flag_is_sent(hub, pushed):
    assert hub.hub.repo(pushed["crf"][0])["private"] and not hub.hub.repo(pushed["span"][0])["private"]


def test_card_the_hub_reads(hub, pushed, learned):
    """The pushed card: evaluation data named by its file, no base model path, a widget example from the evaluation
    data, and a model-index that huggingface_hub parses back to the run's figures."""
    repo, out = pushed["span"]
    card = ModelCard(hub.hub.files(repo)["README.md"].decode())
    data = card.data.to_dict()
    assert "base_model" not in data and str(learned["span"]) not in card.content  # learned: a local folder
    assert "whose Hub id is not known" in card.text
    assert data["widget"][0]["text"] == read_json(ROOT / "data" / "sample", "train-v2.0.json")["data"][0]["paragraphs"][0]["qas"][0]["question"]
    name, results = model_index_to_eval_results(data["model-index"])
    metrics = read_json(out, "eval_results.json")
    assert name == "span-qa" and {r.dataset_name for r in results} == {"train-v2.0.json"}
    assert {r.metric_type: r.metric_value for r in results} == {
        key[len("eval_"):]: value for key, value in metrics.items()
        if key[len("eval_"):] in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1")}
    threshold = read_json(out, "config.json")["qa_settings"]["null_score_diff_threshold"]
    assert f"| {threshold} |" in card.text and f'model="{repo}"' in card.text


# A fresh process with nothing of this project: for each source in argv[1] (repo ids or folders), the model's
# outputs on the questions in argv[2] and the pipeline's answers to them.
LOAD = """
import json, sys, torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline
questions = json.loads(sys.argv[2])
results = []
for source in json.loads(sys.argv[1]):
    model = AutoModelForQuestionAnswering.from_pretrained(source, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    inputs = tokenizer([q["question"] for q in questions], [q["context"] for q in questions],
                       truncation="only_second", max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    qa = pipeline("question-answering", model=source, trust_remote_code=True)
    answers = qa(question=[q["question"] for q in questions], context=[q["context"] for q in questions])
    results.append({"outputs": {k: v.tolist() for k, v in outputs.items() if torch.is_tensor(v)}, "answers": answers})
print(json.dumps(results))
"""


def load(sources, questions, env, cwd):
    """CompletedProcess of LOAD in a fresh process started in `cwd`."""
    return run_script([sys.executable, "-c", LOAD, json.dumps(list(map(str, sources))), json.dumps(questions)],
                      cwd=cwd, env=env)


@pytest.mark.parametrize("head", PUSHES)
def test_fresh_process_loads_model_and_pipeline_by_repo_id(hub, pushed, learned_questions, head, tmp_path):
    """By repo id (from a folder without the project's code), the same outputs and answers as the local folder."""
    repo, out = pushed[head]
    questions = [{"question": q["question"], "context": q["context"]} for q in learned_questions]
    token = {"HF_TOKEN": TOKEN} if head == "crf" else {}  # the CRF repo is private
    result = load([repo, out], questions, hub_env(hub.endpoint, tmp_path, **token), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-5000:]
    by_id, local = json.loads(result.stdout.strip().splitlines()[-1])
    assert by_id == local
    assert sum(bool(a["answer"]) for a in by_id["answers"]) >= LEARNED_QUESTIONS // 2  # a model that answers
    assert_loopback_only(tmp_path)
    if head == "crf":
        anonymous = load([repo], [], hub_env(hub.endpoint, tmp_path / "anonymous"), cwd=tmp_path)
        assert anonymous.returncode != 0 and "Repository Not Found" in anonymous.stdout


def tiny_push(model, out, *extra):
    return [sys.executable, str(ROOT / "run_qa.py"), "--model_name_or_path", model, "--train_file", TRAIN,
            "--validation_file", TRAIN, "--version_2_with_negative", "--max_train_samples", "8", "--max_eval_samples",
            "8", "--do_train", "--do_eval", "--max_steps", "2", "--max_seq_length", "64", "--doc_stride", "16",
            "--save_strategy", "no", "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true",
            "--push_to_hub", "--hub_model_id", f"{USER}/tiny", *extra]


@pytest.mark.parametrize("failure", ["wrong token", "unreachable Hub"])
def test_failed_push_ends_with_a_clear_message_and_loses_nothing(hub, tiny_bert_dir, tmp_path, failure):
    out = tmp_path / "out"
    if failure == "wrong token":
        command, endpoint = tiny_push(tiny_bert_dir, out, "--hub_token", "not-a-token"), hub.endpoint
    else:
        with HubServer(tmp_path / "gone", {}) as gone:  # a port that was just free and is closed again
            endpoint = gone.endpoint
        command = tiny_push(tiny_bert_dir, out, "--hub_token", TOKEN)
    result = run_script(command, env=hub_env(endpoint, tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stdout, result.stdout[-3000:]
    assert f"Could not push to the Hub repo {USER}/tiny at {endpoint}" in result.stdout
    assert f"Nothing is lost: the model and every output of the run are in {out}" in result.stdout
    for name in ("model.safetensors", "config.json", "qa_pipeline.py", "README.md", "eval_results.json",
                 "eval_predictions.json"):
        assert (out / name).exists(), name
    assert not (Path(hub.hub.root) / "repos" / USER / "tiny.json").exists()
    assert_loopback_only(tmp_path)


@pytest.mark.parametrize("repo_id", ["user/name/extra", "user/bad name", "user/-name--"])
def test_malformed_repo_id_is_refused_before_training(tiny_bert_dir, tmp_path, repo_id):
    from qa_runner import main
    from run_qa import SPAN_HEAD

    argv = tiny_push(tiny_bert_dir, tmp_path / "out")[2:]
    argv[argv.index("--hub_model_id") + 1] = repo_id
    with pytest.raises(SystemExit, match=f"--hub_model_id '{repo_id}' is not a Hub repo id"):
        main(SPAN_HEAD, argv)
    assert not (tmp_path / "out").exists()
