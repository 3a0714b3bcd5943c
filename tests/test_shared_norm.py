"""Shared normalisation (`shared_norm.py`): the loss against a per-question reference written out plainly, the batches
of whole questions, the trainer that uses both, and run_qa.py training with them over distractor paragraphs."""

import json

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import qa_runner
from run_qa import SPAN_HEAD
from run_qa_crf import CRF_HEAD
from shared_norm import QuestionBatchSampler, questions_per_batch, shared_norm_loss, shared_side_loss
from tests.conftest import DEV, SAMPLE, TRAIN, read_json
from tests.test_trainer_qa import trainer

# Seven windows of three questions: question 3 has three windows, its answer in two of them (a copy in the overlap);
# question 5 two, neither holding an answer (unanswerable); question 9 two, its answer in the second. Padding from
# token 10 of the windows that are shorter.
QUESTIONS = torch.tensor([3, 3, 5, 5, 3, 9, 9])
STARTS = torch.tensor([4, 0, 0, 0, 2, 0, 11])
ENDS = torch.tensor([5, 0, 0, 0, 3, 0, 12])
LENGTHS = [14, 14, 10, 14, 10, 14, 14]


def reference_side(logits, positions, mask, questions, cls=0):
    """The loss written out one question at a time: -log of the gold's share of one softmax over every unpadded
    token of all the question's windows; the gold the answer's tokens, or every window's [CLS] in equal shares."""
    losses = []
    for q in questions.unique():
        rows = (questions == q).nonzero().flatten()
        scores = torch.cat([logits[r][mask[r].bool()] for r in rows])
        log_p = F.log_softmax(scores, dim=0)
        place = np.cumsum([0] + [int(mask[r].sum()) for r in rows])[:-1]  # where each window's tokens begin
        holding = [i for i, r in enumerate(rows) if positions[r] != cls]
        if holding:
            losses.append(-torch.logsumexp(torch.stack([log_p[place[i] + positions[rows[i]]] for i in holding]), 0))
        else:
            losses.append(-torch.stack([log_p[place[i] + cls] for i in range(len(rows))]).mean())
    return torch.stack(losses).mean()


def mask_of(lengths, width=14):
    return (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()


def test_the_loss_is_one_softmax_over_all_the_windows_of_each_question():
    torch.manual_seed(0)
    start, end = torch.randn(7, 14) * 3, torch.randn(7, 14) * 3
    mask, cls = mask_of(LENGTHS), torch.zeros(7, dtype=torch.long)
    loss = shared_norm_loss(start, end, STARTS, ENDS, cls, mask, QUESTIONS)
    expected = (reference_side(start, STARTS, mask, QUESTIONS) + reference_side(end, ENDS, mask, QUESTIONS)) / 2
    torch.testing.assert_close(loss, expected)
    # a per-window softmax (what a span model trains with) is another number: the windows of a question compete
    per_window = (F.cross_entropy(start.masked_fill(mask == 0, -1e9), STARTS)
                  + F.cross_entropy(end.masked_fill(mask == 0, -1e9), ENDS)) / 2
    assert abs(float(loss) - float(per_window)) > 0.1


def test_questions_of_one_window_each_train_as_a_span_model_does():
    torch.manual_seed(1)
    start, end = torch.randn(5, 9), torch.randn(5, 9)
    positions, cls = torch.tensor([3, 0, 8, 1, 0]), torch.zeros(5, dtype=torch.long)
    loss = shared_norm_loss(start, end, positions, positions, cls, torch.ones(5, 9), torch.arange(5))
    torch.testing.assert_close(loss, (F.cross_entropy(start, positions) + F.cross_entropy(end, positions)) / 2)


def test_an_unanswerable_question_raises_the_null_score_of_every_window_and_the_cls_index_is_read_per_window():
    logits = torch.zeros(2, 6, requires_grad=True)
    cls = torch.tensor([5, 0])  # [CLS] last in the first window (as XLNet's tokenizers put it), first in the other
    loss = shared_side_loss(logits, cls, cls, torch.ones(2, 6), torch.tensor([1, 1]))
    loss.backward()
    assert logits.grad[0, 5] < 0 and logits.grad[1, 0] < 0  # descending the gradient raises both nulls
    assert (logits.grad[0, :5] > 0).all() and (logits.grad[1, 1:] > 0).all()


def test_a_window_without_the_answer_is_pushed_below_the_window_that_holds_it():
    logits = torch.zeros(2, 6, requires_grad=True)
    shared_side_loss(logits, torch.tensor([3, 0]), torch.zeros(2, dtype=torch.long), torch.ones(2, 6),
                     torch.tensor([4, 4])).backward()
    assert logits.grad[0, 3] < 0 and (logits.grad[1] > 0).all()  # the other window's null competes with the answer


def test_batches_hold_whole_questions_and_every_window_once_in_an_order_of_the_seed_and_epoch():
    rng = np.random.default_rng(0)
    question_of_window = np.repeat(rng.permutation(40), rng.integers(1, 5, 40))
    lengths = rng.integers(20, 300, len(question_of_window))
    sampler = QuestionBatchSampler(question_of_window, lengths, 3, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 14
    assert sorted(i for batch in batches for i in batch) == list(range(len(question_of_window)))
    for batch in batches:
        asked = set(question_of_window[batch])
        assert len(asked) <= 3 and sorted(batch) == sorted(np.flatnonzero(np.isin(question_of_window, list(asked))))
    assert list(QuestionBatchSampler(question_of_window, lengths, 3, seed=7)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_a_batch_holds_as_many_questions_as_make_the_batch_size_in_windows_on_average():
    assert questions_per_batch([0, 0, 1, 1, 2, 2, 3, 3], 16) == 8
    assert questions_per_batch([0, 0, 0, 0, 1, 1, 1, 1], 2) == 1
    assert questions_per_batch([5, 6, 7], 1) == 1


def question_windows(tokens=12):
    """Training windows of three questions (2, 1 and 3 windows), as `utils_qa.train_features` writes them."""
    rng = np.random.default_rng(0)
    questions = [0, 0, 1, 2, 2, 2]
    return datasets.Dataset.from_dict({
        "input_ids": [rng.integers(1000, 2000, tokens).tolist() for _ in questions],
        "attention_mask": [[1] * tokens] * len(questions), "token_type_ids": [[0] * tokens] * len(questions),
        "context_mask": [[True] * tokens] * len(questions), "length": [tokens] * len(questions),
        "example_index": questions, "cls_index": [0] * len(questions),
        "start_positions": [3, 0, 0, 0, 0, 5], "end_positions": [4, 0, 0, 0, 0, 6],
    })


@pytest.mark.parametrize("batch_size", [2, 4])
def test_the_trainer_batches_whole_questions_and_trains_on_their_shared_loss(tiny_bert_dir, tmp_path, batch_size):
    dataset = question_windows()
    qa_trainer = trainer(tiny_bert_dir, tmp_path, train_dataset=dataset,
                         arguments={"shared_norm": True, "per_device_train_batch_size": batch_size})
    batches = list(qa_trainer.get_train_dataloader())
    assert len(batches) == -(-3 // questions_per_batch(dataset["example_index"], batch_size))
    for batch in batches:
        windows = [i for i, q in enumerate(dataset["example_index"]) if q in batch["example_index"].tolist()]
        assert len(batch["input_ids"]) == len(windows)  # every window of the batch's questions, and no other
        assert "context_mask" not in batch  # the span model's inputs, and what the loss reads
        loss, outputs = qa_trainer.compute_loss(qa_trainer.model, dict(batch), return_outputs=True)
        torch.testing.assert_close(loss, shared_norm_loss(
            outputs.start_logits, outputs.end_logits, batch["start_positions"], batch["end_positions"],
            batch["cls_index"], batch["attention_mask"], batch["example_index"]))


def grouped_sample(path, per_article=4):
    """The sample training file with every `per_article` one-paragraph articles under one title: articles of several
    paragraphs, which distractors are drawn from."""
    squad = read_json(SAMPLE, "train-v2.0.json")
    for i, article in enumerate(squad["data"]):
        article["title"] = f"article {i // per_article}"
    path.write_text(json.dumps(squad))
    return str(path)


def test_run_qa_trains_a_span_model_with_shared_normalisation_over_distractor_paragraphs(tiny_bert_dir, tmp_path):
    train = grouped_sample(tmp_path / "train.json")
    out = tmp_path / "out"
    metrics = qa_runner.main(SPAN_HEAD, list(map(str, [
        "--model_name_or_path", tiny_bert_dir, "--train_file", train, "--validation_file", DEV, "--do_train",
        "--do_eval", "--version_2_with_negative", "--max_train_samples", 24, "--max_eval_samples", 8,
        "--max_seq_length", 64, "--doc_stride", 16, "--shared_norm", "--distractor_passages", 2, "--max_steps", 2,
        "--per_device_train_batch_size", 8, "--output_dir", out, "--report_to", "none", "--save_strategy", "no"])))
    own_windows = qa_runner.main(SPAN_HEAD, list(map(str, [
        "--model_name_or_path", tiny_bert_dir, "--train_file", train, "--do_train", "--version_2_with_negative",
        "--max_train_samples", 24,
        "--max_seq_length", 64, "--doc_stride", 16, "--max_steps", 1, "--output_dir", tmp_path / "alone",
        "--report_to", "none", "--save_strategy", "no"])))["train"]["train_windows"]
    assert metrics["train"]["train_questions"] == 24 and metrics["train"]["train_windows"] > 2.5 * own_windows
    assert np.isfinite(metrics["train"]["train_loss"]) and metrics["eval"]["eval_questions"] == 8
    assert (out / "model.safetensors").exists()


def test_a_crf_is_not_trained_with_shared_normalisation(tiny_bert_dir, tmp_path):
    with pytest.raises(SystemExit, match="--shared_norm normalises a span model's start / end scores"):
        qa_runner.main(CRF_HEAD, ["--model_name_or_path", tiny_bert_dir, "--train_file", TRAIN, "--do_train",
                                  "--shared_norm", "--output_dir", str(tmp_path)])
