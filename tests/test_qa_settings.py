"""`QASettings`, what a model folder needs to answer as evaluation did: read from configs (those folders saved before
it existed carry too), written back with the same keys, and refused, naming the file and the key, where a value
cannot serve."""

import json
import math
import shutil

import pytest
from transformers import AutoConfig, BertConfig, pipeline

import modeling_crf  # noqa: F401  (registers the crf_qa model type)
from model_folder.calibration import Calibrator
from model_folder.qa_settings import QASettings, SettingsError
from qa_arguments import parse_args
from tests.conftest import ROOT

# config.json files of folders saved before QASettings existed (commit e06701a: a span and a CRF model trained on the
# sample questions, a calibrated span model, a multi-span CRF model), as the Hub holds such folders.
SAVED_BEFORE = ROOT / "tests" / "fixtures" / "configs-before-settings"
SAVED_FOLDERS = sorted(path.name for path in SAVED_BEFORE.iterdir())


def stored_settings(folder):
    return json.loads((SAVED_BEFORE / folder / "config.json").read_text())["qa_settings"]


@pytest.mark.parametrize("folder", SAVED_FOLDERS)
def test_a_config_saved_before_reads_and_writes_back_the_same_keys_and_values(folder):
    config = AutoConfig.from_pretrained(SAVED_BEFORE / folder)
    settings = QASettings.from_config(config)
    assert settings.to_config() == stored_settings(folder)
    assert settings.head == ("crf" if config.model_type == "crf_qa" else "span")
    assert settings.multi_span == (folder == "multispan-crf") and settings.decoder == (
        "multi_span" if settings.multi_span else settings.head)
    assert (settings.calibrator is not None) == ("calibrator" in stored_settings(folder))


def test_the_calibrator_applies_as_stored():
    stored = stored_settings("calibrated-span")["calibrator"]
    calibrator = QASettings.from_config(AutoConfig.from_pretrained(SAVED_BEFORE / "calibrated-span")).calibrator
    margins = [[2.0, 1.0]]
    expected = 1 / (1 + math.exp(-(stored["span"][0] + 2.0 * stored["span"][1] + 1.0 * stored["span"][2])))
    assert calibrator.span_probability(margins)[0] == pytest.approx(expected)
    assert calibrator.to_dict() == stored and calibrator.questions == stored["questions"]


def test_a_checkpoint_without_settings_gets_the_defaults_and_its_models_head():
    assert QASettings.from_config(BertConfig()) == QASettings()
    crf = modeling_crf.CrfQAConfig(encoder=BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1))
    assert QASettings.from_config(crf).head == "crf" and not QASettings.from_config(crf).multi_span
    crf.multi_span = True
    assert QASettings.from_config(crf).decoder == "multi_span"


def config_with(folder, **changes):
    """The span config saved before, with `changes` to its settings (None removes a key)."""
    stored = {**stored_settings(folder), **changes}
    config = AutoConfig.from_pretrained(SAVED_BEFORE / folder)
    config.qa_settings = {key: value for key, value in stored.items() if value is not None}
    return config


@pytest.mark.parametrize("folder, changes, problem", [
    ("span", {"null_score_diff_threshold": float("nan")}, "null_score_diff_threshold: must be a finite number, got nan"),
    ("span", {"null_score_diff_threshold": "0.5"}, "null_score_diff_threshold: must be a finite number, got '0.5'"),
    ("span", {"max_seq_length": 0}, "max_seq_length: must be an integer >= 1, got 0"),
    ("span", {"doc_stride": -1}, "doc_stride: must be an integer >= 0, got -1"),
    ("span", {"doc_stride": 40}, "doc_stride: must be less than half of max_seq_length 64, got 40"),
    ("span", {"max_answer_length": -3}, "max_answer_length: must be an integer >= 1, got -3"),
    ("span", {"n_best_size": 2.5}, "n_best_size: must be an integer >= 1, got 2.5"),
    ("span", {"n_best_size": True}, "n_best_size: must be an integer >= 1, got True"),
    ("span", {"version_2_with_negative": "yes"}, "version_2_with_negative: must be true or false, got 'yes'"),
    ("span", {"head": "tags"}, "head: must be one of 'span', 'crf', got 'tags'"),
    ("span", {"head": "crf"}, "head: 'crf', but the model (bert) has no CRF"),
    ("crf", {"head": "span"}, "head: 'span', but the model is a CRF model (crf_qa)"),
    ("span", {"null_threshold": 0.0}, "null_threshold: not a setting"),
    ("calibrated-span", {"calibrator": {"span": [1.0, float("inf"), 0.0], "empty": [0.0, 1.0], "questions": 120}},
     "calibrator: span: must be a list of 3 finite numbers"),
    ("calibrated-span", {"calibrator": {"span": [1.0, 2.0], "empty": [0.0, 1.0], "questions": 120}},
     "calibrator: span: must be a list of 3 finite numbers"),
    ("calibrated-span", {"calibrator": {"span": [1.0, 2.0, 3.0], "empty": [0.0, 1.0]}}, "calibrator: must be {"),
    ("calibrated-span", {"calibrator": {"span": [1.0, 2.0, 3.0], "empty": [0.0, 1.0], "questions": 0}},
     "calibrator: questions: must be a positive integer, got 0"),
])
def test_a_setting_that_cannot_serve_is_refused_naming_the_file_and_key(folder, changes, problem):
    with pytest.raises(SettingsError) as refused:
        QASettings.from_config(config_with(folder, **changes))
    message = str(refused.value)
    assert message.startswith(f"{SAVED_BEFORE / folder / 'config.json'}: qa_settings.") and problem in message


def test_the_settings_object_refuses_what_cannot_serve_however_it_is_built():
    with pytest.raises(SettingsError, match="null_score_diff_threshold: must be a finite number, got inf"):
        QASettings(null_score_diff_threshold=math.inf)
    with pytest.raises(SettingsError, match="multi_span: only a CRF model decodes several spans"):
        QASettings(multi_span=True)
    with pytest.raises(SettingsError, match="calibrator: must be a Calibrator"):
        QASettings(calibrator={"span": [0, 0, 0]})
    assert QASettings(head="crf", calibrator=Calibrator((0.0, 1.0, 1.0), (0.0, 1.0), 100)).calibrator.questions == 100


@pytest.mark.parametrize("args, message", [
    (["--null_score_diff_threshold", "nan"], "--null_score_diff_threshold: must be a finite number, got nan"),
    (["--max_answer_length", "0"], "--max_answer_length: must be an integer >= 1, got 0"),
    (["--n_best_size", "-2"], "--n_best_size: must be an integer >= 1, got -2"),
    (["--doc_stride", "200"], "--doc_stride: must be less than half of max_seq_length 384, got 200"),
])
def test_the_run_refuses_settings_a_folder_could_not_serve_before_anything_is_read(args, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        parse_args(["--model_name_or_path", "m", "--output_dir", str(tmp_path), *args])


def test_the_run_builds_the_settings_from_its_arguments(tmp_path):
    _, data_args, _ = parse_args(["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--max_seq_length", "256",
                                  "--doc_stride", "64", "--version_2_with_negative", "--null_score_diff_threshold",
                                  "-1.5", "--n_best_size", "5", "--max_answer_length", "12"])
    assert data_args.qa_settings("crf") == QASettings(head="crf", max_seq_length=256, doc_stride=64, max_answer_length=12,
                                                      n_best_size=5, null_score_diff_threshold=-1.5,
                                                      version_2_with_negative=True)


def test_a_pipeline_is_refused_when_its_folder_config_cannot_serve(learned, tmp_path):
    """Checked once, when the pipeline is built (a hand-edited NaN threshold would otherwise answer "" every time)."""
    folder = tmp_path / "edited"
    shutil.copytree(learned["span"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["qa_settings"]["null_score_diff_threshold"] = float("nan")
    (folder / "config.json").write_text(json.dumps(config))
    # the folder's own module raises it: a ValueError, not this project's SettingsError class
    with pytest.raises(ValueError, match=r"edited/config.json: qa_settings.null_score_diff_threshold: must be a "
                                         r"finite number, got nan"):
        pipeline("question-answering", model=str(folder), trust_remote_code=True)
