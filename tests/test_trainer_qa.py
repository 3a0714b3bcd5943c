import datasets
import numpy as np
from torch.utils.data import SequentialSampler
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, TrainingArguments

from trainer_qa import QuestionAnsweringTrainer
from utils_qa import QuestionPredictions, WindowCollator


def trainer(tiny_bert_dir, tmp_path, **kwargs):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_eval_batch_size=2,
                             train_sampling_strategy="group_by_length")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    return QuestionAnsweringTrainer(model=model, args=args, processing_class=tokenizer,
                                    data_collator=WindowCollator(tokenizer.pad_token_id), **kwargs)


def windows(lengths):
    rng = np.random.default_rng(0)
    return datasets.Dataset.from_dict({
        "input_ids": [rng.integers(1000, 2000, n).tolist() for n in lengths],
        "attention_mask": [[1] * n for n in lengths], "length": lengths, "example_index": list(range(len(lengths))),
    })


def test_evaluation_keeps_the_dataset_order_even_when_training_groups_by_length(tiny_bert_dir, tmp_path):
    qa_trainer = trainer(tiny_bert_dir, tmp_path)
    assert isinstance(qa_trainer._get_eval_sampler(windows([5, 9, 3])), SequentialSampler)


def test_evaluate_post_processes_questions_scores_them_and_writes_files(tiny_bert_dir, tmp_path):
    seen, written = {}, []
    lengths = [7, 3, 5, 4, 6]

    def post_process(examples, features, outputs, prefix):
        seen.update(outputs=outputs, prefix=prefix, features=features)
        return QuestionPredictions({"q": ""}, {}, {}, [{"id": "q", "prediction_text": ""}]), [{"id": "q"}]

    qa_trainer = trainer(
        tiny_bert_dir, tmp_path, eval_dataset=windows(lengths), eval_examples=[{"id": "q"}],
        post_process_function=post_process, write_function=lambda result, prefix: written.append(prefix),
        compute_metrics=lambda predictions, references: {"exact": 42.0},
    )
    metrics = qa_trainer.evaluate()
    start_logits, end_logits = seen["outputs"]
    assert start_logits.shape == end_logits.shape == (5, 7)
    # rows keep the dataset order: batches (7, 3), (5, 4), (6) are padded to 7, 5 and 6 tokens, and batch
    # concatenation fills the rest of each row with -100
    widths = [7, 7, 5, 5, 6]
    for row, width in enumerate(widths):
        assert (start_logits[row, width:] == -100).all() and (start_logits[row, :width] != -100).all()
    assert seen["prefix"] == "eval" and written == ["eval"]
    assert metrics["eval_exact"] == 42.0 and metrics["eval_questions"] == 1 and "eval_runtime" in metrics
    _, predict_metrics = qa_trainer.predict(windows(lengths), [{"id": "q"}])
    assert predict_metrics["predict_exact"] == 42.0 and written == ["eval", "predict"]
