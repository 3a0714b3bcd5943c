"""Windows and their features (one function for training, evaluation and the pipeline), and the batch collator."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from model_folder.qa_windows import WindowCollator, window_features

CONTEXT = " ".join(f"word{i}" for i in range(300)) + " The answer is Zanzibar."


@pytest.fixture(scope="module")
def tokenizers(minilm_dir):
    return {side: AutoTokenizer.from_pretrained(minilm_dir, padding_side=side) for side in ("right", "left")}


def features(tokenizer, pad_to_max_length=False):
    return window_features(["What is the answer?", "Where?"], [CONTEXT, "Short context here."], ["a", "b"], tokenizer,
                           max_seq_length=128, doc_stride=32, pad_to_max_length=pad_to_max_length)


def test_windows_put_the_question_first_and_cover_the_context_with_overlap(tokenizers):
    tokenizer = tokenizers["right"]
    columns = features(tokenizer)
    assert columns["window_question"] == [0] * (len(columns["cls_index"]) - 1) + [1]
    assert len(columns["cls_index"]) > 3
    for w, question in enumerate(columns["window_question"]):
        text = tokenizer.decode(columns["input_ids"][w])
        assert text.startswith("[CLS] " + ("what is the answer?" if question == 0 else "where?") + " [SEP]")
        offsets, mask = columns["offsets"][w], np.array(columns["context_mask"][w])
        assert ((offsets[:, 0] >= 0) == mask).all() and columns["length"][w] == len(columns["input_ids"][w])
        assert columns["cls_index"][w] == 0
    # consecutive windows of the first context overlap by the stride
    first, second = (columns["offsets"][w][np.array(columns["context_mask"][w])] for w in (0, 1))
    assert second[0, 0] < first[-1, 1]


@pytest.mark.parametrize("pad_to_max_length", [False, True])
def test_a_left_padding_tokenizer_gives_the_same_windows_as_a_right_padding_one(tokenizers, pad_to_max_length):
    right, left = (features(tokenizers[side], pad_to_max_length) for side in ("right", "left"))
    assert right.keys() == left.keys()
    for name in right:
        assert [np.asarray(v).tolist() for v in right[name]] == [np.asarray(v).tolist() for v in left[name]], name
    if pad_to_max_length:  # padded on the right: attention on a prefix, as the CRF's masks need
        assert all(len(ids) == 128 for ids in right["input_ids"])
        assert all(mask[0] == 1 and mask[-1] == 0 for mask in right["attention_mask"][-1:])


def test_collator_pads_every_token_feature_on_the_right():
    windows = [{"input_ids": [5, 6, 7], "context_mask": [False, True, True], "labels": [0, 1, 2], "cls_index": 0},
               {"input_ids": [5], "context_mask": [False], "labels": [0], "cls_index": 0}]
    batch = WindowCollator(pad_token_id=9)(windows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 9, 9]]
    assert batch["context_mask"].dtype == torch.bool and batch["context_mask"].tolist()[1] == [False, False, False]
    assert batch["labels"].tolist()[1] == [0, 0, 0] and batch["cls_index"].tolist() == [0, 0]
    assert WindowCollator(pad_token_id=9, pad_to_multiple_of=4)(windows)["input_ids"].tolist()[1] == [5, 9, 9, 9]


def test_a_tokenizer_that_truncates_on_the_left_cuts_the_same_windows(minilm_dir, tokenizers):
    """A context is cut into windows from its start whatever the tokenizer's `truncation_side` (left would make the
    first window its end), and the tokenizer keeps its setting."""
    left = AutoTokenizer.from_pretrained(minilm_dir, truncation_side="left")
    expected, got = features(tokenizers["right"]), features(left)
    assert got["input_ids"] == expected["input_ids"] and len(expected["input_ids"]) > 3
    assert all((a == b).all() for a, b in zip(got["offsets"], expected["offsets"]))
    assert left.truncation_side == "left"
