import types

import model_card


def args(**kwargs):
    return types.SimpleNamespace(**kwargs)


def test_license_comes_from_a_local_card_a_known_model_or_is_unknown_offline(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n")
    assert model_card.base_model_license(str(tmp_path)) == "mit"
    assert model_card.base_model_license("SpanBERT/spanbert-base-cased") == "cc-by-nc-4.0"
    assert model_card.base_model_license("someone/not-reachable-offline") == "unknown"


def test_card_lists_dataset_metrics_hyperparameters_and_license(tmp_path):
    from transformers import TrainingArguments

    training = TrainingArguments(output_dir=str(tmp_path / "my-model"), learning_rate=3e-5, num_train_epochs=6,
                                 per_device_train_batch_size=8, report_to="none")
    data = args(dataset_name="rajpurkar/squad_v2", train_file=None, validation_file=None, max_seq_length=384,
                doc_stride=128, max_answer_length=30, n_best_size=20, null_score_diff_threshold=0.0,
                version_2_with_negative=True, max_train_samples=15000)
    model = args(model_name_or_path="SpanBERT/spanbert-base-cased", token=None)
    card = model_card.render("span", model, data, training, {"eval": {"eval_exact": 71.25, "eval_f1": 74.5,
                                                                      "eval_questions": 11873}})
    assert "license: cc-by-nc-4.0" in card and "base_model: SpanBERT/spanbert-base-cased" in card
    assert "- rajpurkar/squad_v2" in card and "| learning_rate | 3e-05 |" in card and "| max_train_samples | 15000 |" in card
    assert "| exact | 71.25 |" in card and "value: 74.5" in card and "11873 questions" in card
    assert 'pipeline("question-answering", model="my-model", trust_remote_code=True)' in card
