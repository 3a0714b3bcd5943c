"""Question + context -> token windows and their features: the one tokenization of training, evaluation and the
pipeline, and the collator that pads their batches.

Self-contained (a tokenizer, numpy and torch are all it needs): it is copied into saved model folders beside the
question-answering pipeline, so inference cuts windows exactly as evaluation does.

Every window is `[CLS] question [SEP] context [SEP]` (in the tokenizer's own special tokens), a context is cut into
windows from its start and batches are padded on the right, whatever the tokenizer's `truncation_side` and
`padding_side` say: the answer's token positions, the logits read at them and the CRF's length-prefix masks then
mean the same thing for every tokenizer.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)


def max_question_tokens(tokenizer, max_seq_length, doc_stride):
    """Longest question (in tokens) that still leaves the context more room than the stride."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    return max_seq_length - doc_stride - specials - 1


def capped_questions(questions, ids, tokenizer, max_tokens):
    """Questions cut to `max_tokens` tokens, warning (with a count and examples) for each one cut."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    capped, cut = [], []
    for qid, question, offsets in zip(ids, questions, encoded["offset_mapping"]):
        if len(offsets) > max_tokens:
            question = question[: offsets[max_tokens - 1][1]]
            cut.append(qid)
        capped.append(question)
    if cut:
        logger.warning(
            f"{len(cut)} question(s) are longer than {max_tokens} tokens and were truncated to fit a window "
            f"(ids: {', '.join(map(str, cut[:5]))}{' ...' if len(cut) > 5 else ''})"
        )
    return capped


def tokenized_windows(questions, contexts, ids, tokenizer, max_seq_length=384, doc_stride=128, pad_to_max_length=False,
                      max_question_len=None):
    """Tokenizer output with one row per window of `max_seq_length` tokens, `doc_stride` tokens of overlap between
    consecutive windows of a context, with character offsets and `overflow_to_sample_mapping` (window -> question).

    The question comes first, cut to `max_question_len` tokens or to what leaves the context more room than the
    stride; only the context is split.
    """
    max_tokens = max_question_tokens(tokenizer, max_seq_length, doc_stride)
    if max_question_len is not None:
        max_tokens = min(max_tokens, max_question_len)
    questions = capped_questions([q.lstrip() for q in questions], ids, tokenizer, max_tokens)
    # Windows follow the context from its start whatever side the tokenizer truncates on (a call cannot say, so its
    # setting is set for the call and restored)
    side, tokenizer.truncation_side = tokenizer.truncation_side, "right"
    try:
        return tokenizer(
            questions,
            contexts,
            truncation="only_second",
            max_length=max_seq_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length" if pad_to_max_length else False,
            padding_side="right",
        )
    finally:
        tokenizer.truncation_side = side


def context_offsets(encoded):
    """Per window: (length, 2) int array of character offsets into the context, [-1, -1] on every other token."""
    windows = []
    for w, offsets in enumerate(encoded["offset_mapping"]):
        is_context = np.array([s == 1 for s in encoded.sequence_ids(w)])
        windows.append(np.where(is_context[:, None], np.array(offsets, dtype=np.int64).reshape(-1, 2), -1))
    return windows


def cls_indices(encoded, tokenizer):
    """Per window: position of the [CLS] token, where the no-answer score is read (0 if there is none)."""
    cls_id = tokenizer.cls_token_id
    return [ids.index(cls_id) if cls_id in ids else 0 for ids in encoded["input_ids"]]


def window_features(questions, contexts, ids, tokenizer, max_seq_length=384, doc_stride=128, pad_to_max_length=False,
                    max_question_len=None):
    """The windows of questions about contexts, as columns (one entry per window):

    - the tokenizer's model inputs (`input_ids`, `attention_mask`, and `token_type_ids` where it makes them);
    - `window_question`: index of the window's question in `questions`;
    - `offsets`: (length, 2) int array of character offsets into the context, [-1, -1] off the context;
    - `context_mask`: list of bools, True on context tokens (where an answer may be);
    - `cls_index`: position of the [CLS] token (the no-answer score's); `length`: the tokens attended.
    """
    encoded = tokenized_windows(questions, contexts, ids, tokenizer, max_seq_length, doc_stride, pad_to_max_length,
                                max_question_len)
    offsets = context_offsets(encoded)
    columns = {name: encoded[name] for name in tokenizer.model_input_names if name in encoded}
    columns["window_question"] = list(encoded["overflow_to_sample_mapping"])
    columns["offsets"] = offsets
    columns["context_mask"] = [(o[:, 0] >= 0).tolist() for o in offsets]
    columns["cls_index"] = cls_indices(encoded, tokenizer)
    columns["length"] = [int(np.sum(m)) for m in encoded["attention_mask"]]
    return columns


@dataclass
class WindowCollator:
    """Pads every per-token feature of a batch on the right to its longest window (rounded up to a multiple of
    `pad_to_multiple_of` tokens when given): `input_ids` with the tokenizer's pad id, everything else with 0
    (False for `context_mask`). Other features become one tensor each."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features):
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if not isinstance(values[0], (list, tuple, np.ndarray, torch.Tensor)):
                batch[key] = torch.tensor(values)
                continue
            pad = self.pad_token_id if key == "input_ids" else 0
            dtype = torch.bool if key == "context_mask" else torch.long
            padded = torch.full((len(values), width), pad, dtype=dtype)
            for row, value in enumerate(values):
                value = torch.as_tensor(value, dtype=dtype).reshape(-1)
                padded[row, : len(value)] = value
            batch[key] = padded
        return batch
