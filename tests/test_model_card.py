"""The model card of a model folder: metadata the Hub reads back, the run's data, settings and hyperparameters, and
a base model named by its Hub id, never by a local path."""

import json
import types

from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

import model_card
from model_folder.qa_settings import QASettings
from qa_arguments import QATrainingArguments
from qa_runner import card_facts

METRICS = {"eval_exact": 71.25, "eval_f1": 74.51234567, "eval_NoAns_exact": 80.0, "eval_questions": 11873}
SETTINGS = QASettings(null_score_diff_threshold=-1.8125, version_2_with_negative=True)


def args(**kwargs):
    return types.SimpleNamespace(**kwargs)


def data_args(**kwargs):
    defaults = dict(dataset_name=None, dataset_config_name=None, train_file=None, validation_file=None,
                    max_train_samples=None)
    return args(**{**defaults, **kwargs})


def card_of(tmp_path, base, data, widget=None, hub_model_id=None):
    training = QATrainingArguments(output_dir=str(tmp_path / "my-model"), do_train=True, learning_rate=3e-5,
                                   num_train_epochs=6, per_device_train_batch_size=8, report_to="none",
                                   hub_model_id=hub_model_id)
    facts = card_facts(args(model_name_or_path=base, token=None), data, training)
    return ModelCard(model_card.render(facts, SETTINGS, METRICS, widget))


def test_license_comes_from_a_local_card_a_known_model_or_is_unknown_offline(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n")
    assert model_card.base_model_license(str(tmp_path)) == "mit"
    assert model_card.base_model_license(str(tmp_path / "missing")) == "unknown"
    assert model_card.base_model_license("SpanBERT/spanbert-base-cased") == "cc-by-nc-4.0"
    assert model_card.base_model_license("someone/not-reachable-offline") == "unknown"


def test_hub_run_card_names_dataset_split_settings_and_parses_back(tmp_path):
    widget = {"text": "Who wrote it?", "context": "It was written by Ada."}
    card = card_of(tmp_path, "SpanBERT/spanbert-base-cased",
                   data_args(dataset_name="rajpurkar/squad_v2", max_train_samples=15000), widget, "me/spanbert-qa")
    data = card.data.to_dict()
    assert data["base_model"] == "SpanBERT/spanbert-base-cased" and data["license"] == "cc-by-nc-4.0"
    assert data["datasets"] == ["rajpurkar/squad_v2"] and data["widget"] == [widget]
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "spanbert-qa"
    assert {(r.dataset_type, r.dataset_name, r.dataset_split) for r in results} == {
        ("rajpurkar/squad_v2", "rajpurkar/squad_v2, validation split", "validation")}
    assert {r.metric_type: r.metric_value for r in results} == {"exact": 71.25, "f1": 74.51234567, "NoAns_exact": 80.0}
    assert "On rajpurkar/squad_v2, validation split (11873 questions" in card.text
    assert "| `null_score_diff_threshold`" in card.text and "| -1.8125 |" in card.text
    assert "| max_train_samples | 15000 |" in card.text and "| learning_rate | 3e-05 |" in card.text
    assert 'pipeline("question-answering", model="me/spanbert-qa", trust_remote_code=True)' in card.text
    assert "hosted inference widget and serverless inference run no custom code" in card.text
    assert "`handler.py`\n(`EndpointHandler`)" in card.text and '{"inputs": {"question": "..."' in card.text


def test_file_run_card_names_the_evaluation_file_not_the_training_file(tmp_path):
    card = card_of(tmp_path, "SpanBERT/spanbert-base-cased",
                   data_args(train_file="/data/train-v2.0.json", validation_file="/data/dev-v2.0.json"))
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert {(r.dataset_name, r.dataset_split) for r in results} == {("dev-v2.0.json", "validation")}
    assert "On dev-v2.0.json (11873 questions" in card.text and "on train-v2.0.json." in card.text
    assert "datasets" not in card.data.to_dict() and "/data/" not in card.content


def test_local_base_model_is_named_by_its_own_card_or_config_never_by_its_path(tmp_path, minilm_dir):
    minilm = card_of(tmp_path, minilm_dir, data_args(validation_file="dev.json")).data.to_dict()
    assert minilm["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and minilm["license"] == "apache-2.0"

    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "org/encoder"}))
    assert card_of(tmp_path, str(folder), data_args(validation_file="dev.json")).data.to_dict()["base_model"] == "org/encoder"
    (folder / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path)}))  # a path is not an id
    card = card_of(tmp_path, str(folder), data_args(validation_file="dev.json"))
    assert "base_model" not in card.data.to_dict() and str(folder) not in card.content
    assert "a local model folder (`base`) whose Hub id is not known" in card.text
