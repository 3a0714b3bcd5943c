"""run_qa_crf.py end to end: the same command line, outputs and model folder conventions as run_qa.py."""

import json
import subprocess
import sys

import pytest

from tests.conftest import OUTSIDE_ENV, read_json, run_qa, run_script
from tests.test_run_qa import tiny_args


@pytest.fixture(scope="module")
def trained_crf(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("crf")
    run_qa(*tiny_args(tiny_bert_dir, out, "--do_train", "--do_eval", "--max_steps", 8, "--save_steps", 4,
                      "--logging_steps", 1, "--eval_strategy", "steps", "--eval_steps", 4), script="run_qa_crf.py")
    return out


def test_same_output_files_as_run_qa(trained_crf):
    for name in ("eval_predictions.json", "eval_nbest_predictions.json", "eval_null_odds.json", "eval_results.json",
                 "all_results.json", "train_results.json", "trainer_state.json", "model.safetensors", "config.json",
                 "modeling_crf.py", "crf_decoding.py", "qa_pipeline.py", "README.md"):
        assert (trained_crf / name).exists(), name
    predictions = read_json(trained_crf, "eval_predictions.json")
    assert len(predictions) == 19
    results = read_json(trained_crf, "eval_results.json")
    assert {"eval_exact", "eval_f1", "eval_best_f1", "eval_HasAns_f1", "eval_NoAns_exact"} <= set(results)
    config = read_json(trained_crf, "config.json")
    assert config["model_type"] == "crf_qa" and config["auto_map"]["AutoModelForQuestionAnswering"].startswith("modeling_crf")
    assert "crf" in (trained_crf / "README.md").read_text()


def test_crf_nbest_lists_hold_the_n_best_paths_and_the_null_answer(trained_crf):
    """Each window contributes its n_best_size most probable single-span paths (not one), so a question's list holds
    up to n_best_size spans, best first, and the null answer."""
    config = read_json(trained_crf, "config.json")
    assert config.get("n_best_size", 20) == config["qa_settings"]["n_best_size"] == 20  # 20: the default, not saved
    nbest = read_json(trained_crf, "eval_nbest_predictions.json")
    odds = read_json(trained_crf, "eval_null_odds.json")
    lengths = []
    for qid, answers in nbest.items():
        texts = [a["text"] for a in answers]
        assert texts.count("") == 1
        spans = [a for a in answers if a["text"]]
        assert 1 < len(spans) <= 20
        lengths.append(len(spans))
        assert [a["score"] for a in spans] == sorted((a["score"] for a in spans), reverse=True)
        null = next(a["score"] for a in answers if a["text"] == "")
        assert odds[qid] == pytest.approx(null - spans[0]["score"], abs=1e-4)
    assert max(lengths) == 20


def test_the_output_folder_loads_in_a_fresh_process_through_the_auto_class(trained_crf, tmp_path):
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForQuestionAnswering, AutoTokenizer\n"
        "model = AutoModelForQuestionAnswering.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "batch = tok('Who?', 'Margaret Hollis kept the light.', return_tensors='pt')\n"
        "out = model(**batch)\n"
        "print(json.dumps({'cls': type(model).__name__, 'transitions': model.crf.transitions.tolist(),\n"
        "                  'start': list(out.span_start.shape), 'end_logits': list(out.end_logits.shape)}))\n"
    )
    result = run_script([sys.executable, "-c", script, str(trained_crf)], cwd=tmp_path, env=OUTSIDE_ENV,
                        stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    from safetensors.torch import load_file

    saved = load_file(str(trained_crf / "model.safetensors"))
    assert loaded["cls"] == "CrfForQuestionAnswering"
    assert loaded["transitions"] == saved["crf.transitions"].tolist()
    assert loaded["end_logits"][0] == 1
    assert loaded["start"] == [1, 20]  # the config's n_best_size spans


def test_training_lowers_the_crf_loss(trained_crf):
    losses = [log["loss"] for log in read_json(trained_crf, "trainer_state.json")["log_history"] if "loss" in log]
    assert len(losses) == 8 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_evaluation_during_training_decodes_with_viterbi_as_the_final_one(trained_crf):
    evaluations = [log for log in read_json(trained_crf, "trainer_state.json")["log_history"] if "eval_f1" in log]
    assert [log["step"] for log in evaluations] == [4, 8]
    assert evaluations[-1]["eval_f1"] == read_json(trained_crf, "eval_results.json")["eval_f1"]


def test_max_answer_length_bounds_crf_answers_and_config_name_is_honoured(tiny_bert_dir, tmp_path):
    """An untrained CRF decodes long spans: --max_answer_length 2 must bound them in evaluation, in the saved
    config and in the pipeline; --config_name's encoder settings are those of the model that is built."""
    from transformers import AutoConfig, AutoTokenizer, pipeline

    from qa_data import questions_from_file
    from tests.conftest import DEV

    config_dir = tmp_path / "config"
    AutoConfig.from_pretrained(tiny_bert_dir, hidden_dropout_prob=0.25).save_pretrained(config_dir)
    out = tmp_path / "out"
    run_qa(*tiny_args(tiny_bert_dir, out, "--do_train", "--do_eval", "--max_steps", 1, "--save_strategy", "no",
                      "--max_answer_length", 2, "--config_name", config_dir), script="run_qa_crf.py")
    config = read_json(out, "config.json")
    assert config["encoder"]["hidden_dropout_prob"] == 0.25
    assert config["max_answer_length"] == config["qa_settings"]["max_answer_length"] == 2
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    dev = questions_from_file(DEV).rows
    contexts = dict(zip(dev["id"], dev["context"]))

    def tokens(context, start, end):
        offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return sum(start <= s and e <= end for s, e in offsets)

    spans = [(contexts[qid], a["start"], a["end"]) for qid, answers in read_json(out, "eval_nbest_predictions.json").items()
             for a in answers if a["text"]]
    assert len(spans) > 100 and all(1 <= tokens(*span) <= 2 for span in spans)
    qa = pipeline("question-answering", model=str(out), trust_remote_code=True)
    for row in dev.select(range(5)):
        for answer in qa(question=row["question"], context=row["context"], top_k=5, align_to_words=False):
            assert 1 <= tokens(row["context"], answer["start"], answer["end"]) <= 2
        for answer in qa(question=row["question"], context=row["context"], top_k=5, align_to_words=False,
                         max_answer_len=1):
            assert tokens(row["context"], answer["start"], answer["end"]) == 1


def test_a_crf_checkpoints_emission_relu_is_kept_unless_the_flag_says_otherwise(tiny_bert_dir, tmp_path):
    from modeling_crf import CrfForQuestionAnswering
    from qa_arguments import DataTrainingArguments, ModelArguments
    from run_qa_crf import load_crf_model

    CrfForQuestionAnswering.from_pretrained(tiny_bert_dir, emission_relu=True).save_pretrained(tmp_path / "relu")
    data_args = DataTrainingArguments(validation_file="dev.json", n_best_size=7, max_answer_length=5)
    hub_kwargs = {"cache_dir": None, "revision": "main", "token": None, "trust_remote_code": False}
    for flag, expected in ((None, True), (False, False), (True, True)):
        model_args = ModelArguments(model_name_or_path=str(tmp_path / "relu"), emission_relu=flag)
        config = load_crf_model(model_args, data_args, hub_kwargs)[0].config
        assert (config.emission_relu, config.n_best_size, config.max_answer_length) == (expected, 7, 5), flag
    fresh, _ = load_crf_model(ModelArguments(model_name_or_path=tiny_bert_dir), data_args, hub_kwargs)
    assert fresh.config.emission_relu is False


def test_run_qa_refuses_a_crf_folder_whose_remote_code_it_would_decode_as_a_span_model(learned, tmp_path):
    """`run_qa.py --trust_remote_code true` on a CRF folder: the Auto class loads the CRF model, whose boundary logits
    the span decoder would read as start/end logits. Refused before any data is read, naming the script to run."""
    import qa_runner
    from run_qa import SPAN_HEAD

    missing = tmp_path / "no-such-file.json"  # never read
    with pytest.raises(SystemExit) as refused:
        qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(learned["crf"]), "--trust_remote_code", "true",
                                   "--validation_file", str(missing), "--version_2_with_negative", "--do_eval",
                                   "--output_dir", str(tmp_path / "out"), "--report_to", "none"])
    assert (f"{learned['crf']}: the head 'span', but the model is a CRF model (crf_qa), whose outputs only the 'crf' "
            "decoding reads: run run_qa_crf.py") in str(refused.value)
