"""QuestionAnsweringTrainer: evaluation over windows in the dataset's order, post-processed, scored and written;
the head's learning rates; the training order and heap."""

import datasets
import numpy as np
import pytest
from torch.utils.data import SequentialSampler
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from model_folder.qa_windows import WindowCollator
from qa_arguments import QATrainingArguments
from trainer_qa import QuestionAnsweringTrainer
from utils_qa import QuestionPredictions


def trainer(tiny_bert_dir, tmp_path, arguments=(), **kwargs):
    """A QuestionAnsweringTrainer of a fresh span model on the tiny encoder; `arguments`: (name, value) pairs of
    QATrainingArguments beyond the test defaults."""
    args = QATrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_eval_batch_size=2,
                               train_sampling_strategy="group_by_length", **dict(arguments))
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

    def post_process(questions, features, outputs):
        seen.update(outputs=outputs, features=features, questions=questions)
        return QuestionPredictions({"q": ""}, {}, {}, [{"id": "q", "prediction_text": ""}])

    qa_trainer = trainer(
        tiny_bert_dir, tmp_path, eval_dataset=windows(lengths), eval_examples=[{"id": "q"}],
        post_process_function=post_process, write_function=lambda result, prefix: written.append(prefix),
        score_function=lambda questions, predictions: {"exact": 42.0 + len(predictions.predictions)},
    )
    metrics = qa_trainer.evaluate()
    start_logits, end_logits = seen["outputs"]
    assert start_logits.shape == end_logits.shape == (5, 7)
    # rows keep the dataset order: batches (7, 3), (5, 4), (6) are padded to 7, 5 and 6 tokens, and batch
    # concatenation fills the rest of each row with -100
    widths = [7, 7, 5, 5, 6]
    for row, width in enumerate(widths):
        assert (start_logits[row, width:] == -100).all() and (start_logits[row, :width] != -100).all()
    assert seen["questions"] == [{"id": "q"}] and written == ["eval"]
    assert metrics["eval_exact"] == 43.0 and metrics["eval_questions"] == 1 and "eval_runtime" in metrics
    predictions, predict_metrics = qa_trainer.predict(windows(lengths), [{"id": "q"}])
    assert predictions.predictions == {"q": ""}
    assert predict_metrics["predict_exact"] == 43.0 and written == ["eval", "predict"]


def test_evaluation_and_prediction_batches_come_from_the_eval_collator(tiny_bert_dir, tmp_path):
    data = windows([7, 3, 5, 4, 6]).remove_columns(["example_index"])
    args = QATrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=2,
                               per_device_eval_batch_size=2)
    qa_trainer = QuestionAnsweringTrainer(
        model=AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir), args=args, train_dataset=data,
        data_collator=WindowCollator(0, pad_to_multiple_of=32), eval_data_collator=WindowCollator(0))

    def widths(dataloader):
        return sorted(batch["input_ids"].shape[1] for batch in dataloader)

    assert widths(qa_trainer.get_train_dataloader()) == [32] * 3
    assert widths(qa_trainer.get_eval_dataloader(data)) == widths(qa_trainer.get_test_dataloader(data)) == [5, 6, 7]
    assert widths(qa_trainer.get_train_dataloader()) == [32] * 3  # the training collator is back in place


def test_window_outputs_equal_the_trainers_padded_concatenation():
    """Span logits of batches of growing width, bf16 ones, CRF-like (batch, k) ints and (batch,) scores: the same
    arrays as the Trainer's own container gives by concatenating at each batch."""
    import torch
    from transformers.trainer_pt_utils import EvalLoopContainer

    from trainer_qa import WindowOutputs

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(size, width, generator=generator), torch.randn(size, width, generator=generator).bfloat16(),
                torch.randint(0, 50, (size, 4), generator=generator), torch.randn(size, generator=generator))
               for size, width in ((4, 5), (4, 9), (3, 7), (2, 12))]
    ours, trainers = WindowOutputs(), EvalLoopContainer(do_nested_concat=True, padding_index=-100)
    for batch in batches:
        ours.add(batch)
        trainers.add(batch)
    expected, got = trainers.get_arrays(), ours.arrays()
    assert [a.shape for a in got] == [(13, 12), (13, 12), (13, 4), (13,)]
    for mine, theirs in zip(got, expected):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)


def test_the_head_gets_its_own_learning_rate_and_the_schedule_scales_both(tiny_bert_dir, tmp_path):
    args = QATrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, learning_rate=1e-4,
                               head_learning_rate=1e-2, weight_decay=0.1, warmup_steps=2)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    qa_trainer = QuestionAnsweringTrainer(model=model, args=args)
    qa_trainer.create_optimizer_and_scheduler(num_training_steps=10)
    head = {id(p) for p in model.qa_outputs.parameters()}
    groups = qa_trainer.optimizer.param_groups
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for group in groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["initial_lr"] == (1e-2 if in_head.pop() else 1e-4)
    assert {(g["initial_lr"], g["weight_decay"]) for g in groups} == {(1e-2, 0.1), (1e-2, 0.0), (1e-4, 0.1), (1e-4, 0.0)}
    qa_trainer.optimizer.step()
    qa_trainer.lr_scheduler.step()  # warmup: half of each group's rate
    assert sorted(g["lr"] for g in groups) == sorted(g["initial_lr"] / 2 for g in groups)


@pytest.mark.parametrize("head_learning_rate", [1e-2, None])
def test_a_crfs_transition_scores_get_their_own_learning_rate(tiny_bert_dir, tmp_path, head_learning_rate):
    """--crf_learning_rate: the CRF's start, end and transition scores at their rate, the emission layer at the
    head's (--learning_rate when that is not given), the encoder at --learning_rate."""
    from modeling_crf import CrfForQuestionAnswering
    from run_qa_crf import CRF_HEAD

    args = QATrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, learning_rate=1e-4,
                               head_learning_rate=head_learning_rate, crf_learning_rate=5e-2)
    model = CrfForQuestionAnswering.from_pretrained(tiny_bert_dir)
    qa_trainer = QuestionAnsweringTrainer(model=model, args=args, parameter_groups=CRF_HEAD.parameter_groups)
    qa_trainer.create_optimizer()
    rate = {id(p): g["lr"] for g in qa_trainer.optimizer.param_groups for p in g["params"]}
    assert len(rate) == len(list(model.parameters()))
    assert {rate[id(p)] for p in model.crf.parameters()} == {5e-2}
    assert {rate[id(p)] for p in model.emissions.parameters()} == {head_learning_rate or 1e-4}
    assert {rate[id(p)] for p in model.base_model.parameters()} == {1e-4}


def test_without_a_head_learning_rate_the_optimizer_is_the_trainers(tiny_bert_dir, tmp_path):
    qa_trainer = trainer(tiny_bert_dir, tmp_path)
    qa_trainer.create_optimizer()
    assert {g["lr"] for g in qa_trainer.optimizer.param_groups} == {qa_trainer.args.learning_rate}


def test_training_hands_the_freed_heap_back_once_at_its_end_not_per_step(tiny_bert_dir, tmp_path, monkeypatch):
    import trainer_qa

    lengths = [5, 9, 3, 8, 2, 7]
    data = windows(lengths).add_column("start_positions", [1] * 6).add_column("end_positions", [2] * 6)
    qa_trainer = trainer(tiny_bert_dir, tmp_path, train_dataset=data.remove_columns(["example_index"]))
    qa_trainer.args.max_steps, qa_trainer.args.per_device_train_batch_size = 3, 2
    trims = []
    monkeypatch.setattr(trainer_qa, "MALLOC_TRIM", lambda pad: trims.append(qa_trainer.state.global_step))
    qa_trainer.train()
    assert trims == [3]


def test_the_training_order_depends_on_the_seed_and_epoch_only(tiny_bert_dir, tmp_path):
    import torch

    lengths = [5, 9, 3, 8, 2, 7, 4, 6, 1, 10] * 3
    qa_trainer = trainer(tiny_bert_dir, tmp_path, train_dataset=windows(lengths))
    sampler, again = qa_trainer._get_train_sampler(), qa_trainer._get_train_sampler()
    first_epoch = list(sampler)
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(again) == first_epoch and sorted(first_epoch) == list(range(len(lengths)))
    again.set_epoch(1)
    assert list(again) != first_epoch
